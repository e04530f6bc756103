"""The runtime both tasks train on (issue 16, "one house"): one of each piece that classification
(:mod:`iif.train`) and detection (:mod:`iif.detection.engine`) used to write twice.

* :class:`WarmupSchedule` (:mod:`iif.runtime.schedule`): linear warm-up, then multistep / cosine / constant,
  per iteration;
* :func:`autocast`, :class:`NonFiniteLoss`, :func:`check_finite_loss`, :func:`optimizer_step`
  (:mod:`iif.runtime.step`): mixed precision, the non-finite-loss stop, backward + clipping + optimizer and LR
  steps;
* :func:`resolve_device` (:mod:`iif.runtime.device`).

This package imports nothing of ``iif.train`` or ``iif.detection``; both import it.
"""

from .device import resolve_device
from .schedule import SCHEDULES, WarmupSchedule
from .step import AMP, NonFiniteLoss, autocast, check_finite_loss, optimizer_step

__all__ = ["WarmupSchedule", "SCHEDULES", "autocast", "AMP", "NonFiniteLoss", "check_finite_loss", "optimizer_step",
           "resolve_device"]
