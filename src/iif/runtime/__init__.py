"""The runtime both tasks train on (issue 16, "one house"): one of each piece that classification
(:mod:`iif.train`) and detection (:mod:`iif.detection.engine`, :mod:`iif.detection.runs`) used to write twice.

* :class:`WarmupSchedule` (:mod:`iif.runtime.schedule`): linear warm-up, then multistep / cosine / constant,
  per iteration;
* :func:`autocast`, :class:`NonFiniteLoss`, :func:`check_finite_loss`, :func:`optimizer_step`
  (:mod:`iif.runtime.step`): mixed precision, the non-finite-loss stop, backward + clipping + optimizer and LR
  steps;
* :func:`resolve_device` (:mod:`iif.runtime.device`);
* checkpoints (:mod:`iif.runtime.checkpoint`): safe loading, RNG states, :func:`training_state` /
  :func:`restore_training_state`, and the one resume rule, :func:`settings_hash` + :func:`check_same_settings`;
* DDP (:mod:`iif.runtime.distributed`): :func:`join_process_group` (device, process group, this rank's GPU),
  :func:`on_main_rank` (a run folder rank 0 prepares, or its error, on every rank), :func:`rank_share` (a
  sampler's per-rank share), the collectives.

This package imports nothing of ``iif`` but ``errors``; both tasks import it.
"""

from .checkpoint import (check_same_settings, load_checkpoint, restore_training_state, safe_load, settings_hash,
                         training_state)
from .device import resolve_device
from .distributed import DistInfo, join_process_group, on_main_rank, rank_share
from .schedule import SCHEDULES, WarmupSchedule
from .step import AMP, NonFiniteLoss, autocast, check_finite_loss, optimizer_step

__all__ = ["WarmupSchedule", "SCHEDULES", "autocast", "AMP", "NonFiniteLoss", "check_finite_loss", "optimizer_step",
           "resolve_device", "load_checkpoint", "safe_load", "training_state", "restore_training_state",
           "settings_hash", "check_same_settings", "DistInfo", "join_process_group", "on_main_rank", "rank_share"]
