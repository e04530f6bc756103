"""The one learning-rate schedule of both tasks: a linear warm-up, then multistep, cosine or constant decay,
stepped once per iteration through ``torch.optim.lr_scheduler.LambdaLR``.

Classification (:mod:`iif.train.engine`) counts its warm-up in epochs and lets the warm-up replace the decay
while it lasts; detection (:mod:`iif.detection.engine`, torchvision's references) counts it in iterations and
multiplies the warm-up factor with the step decay (``warmup_decays=True``). Both are this one class::

    WarmupSchedule(iters, epochs, "multistep", [360, 380], 0.01, warmup_epochs=5, warmup_start_factor=0.1)
    WarmupSchedule.detection(iters, warmup_iters=1000, milestones=(8, 11), gamma=0.1, warmup_factor=1e-3)
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import IIFError

__all__ = ["WarmupSchedule", "SCHEDULES"]

#: The decay shapes after the warm-up.
SCHEDULES = ("multistep", "cosine", "constant")


class WarmupSchedule:
    """Learning-rate factor per iteration ``step`` (the lr is ``base_lr * factor(step)``).

    Warm-up, for ``step < W`` (``W = warmup_iters``, or ``round(warmup_epochs * iters_per_epoch)``):
    ``w(step) = s + (1 - s) * step / W`` with ``s = warmup_start_factor``; ``w = 1`` afterwards.

    Decay ``d(step)``: ``multistep`` is ``gamma ** #{m in milestones : step // iters_per_epoch >= m}``
    (``milestones`` are epochs; paper §V-B1: 360 and 380 of 400 for CIFAR-LT); ``cosine`` is
    ``(1 + cos(pi * t)) / 2`` with ``t = min((step - W) / max(T - W, 1), 1)`` over ``T = epochs *
    iters_per_epoch`` iterations; ``constant`` is 1.

    The factor is ``w(step)`` during the warm-up and ``d(step)`` after it (classification), or
    ``w(step) * d(step)`` throughout with ``warmup_decays=True`` (detection: torchvision's references chain
    the warm-up and the step decay, so a milestone inside the warm-up already lowers the rate).

    A plain object, so ``LambdaLR.state_dict()`` stores its numbers and resume needs nothing else.
    """

    def __init__(self, iters_per_epoch: int, epochs: int = 1, name: str = "multistep", milestones: Sequence = (),
                 gamma: float = 0.1, warmup_epochs: float = 0.0, warmup_start_factor: float = 0.1, *,
                 warmup_iters: int | None = None, warmup_decays: bool = False) -> None:
        if name not in SCHEDULES:
            raise IIFError(f"unknown schedule {name!r}; use multistep, cosine or constant.")
        self.iters_per_epoch = max(int(iters_per_epoch), 1)
        self.total = self.iters_per_epoch * max(int(epochs), 1)
        self.name = name
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        if warmup_iters is None:
            self.warmup_iters = int(round(float(warmup_epochs) * self.iters_per_epoch))
        else:
            self.warmup_iters = max(int(warmup_iters), 0)
        self.warmup_factor = float(warmup_start_factor)
        self.warmup_decays = bool(warmup_decays)

    @classmethod
    def detection(cls, iters_per_epoch: int, warmup_iters: int, milestones: Sequence[int] = (), gamma: float = 0.1,
                  warmup_factor: float = 1e-3, epochs: int = 1) -> "WarmupSchedule":
        """The detection set-up (torchvision references: ``warmup_factor`` 1e-3, warm-up in iterations,
        multistep decay at epoch ``milestones`` multiplying the warm-up factor)."""
        return cls(iters_per_epoch, epochs, "multistep", milestones, gamma, warmup_start_factor=warmup_factor,
                   warmup_iters=warmup_iters, warmup_decays=True)

    def __call__(self, step: int) -> float:
        factor = 1.0
        if step < self.warmup_iters:
            factor = self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_iters
            if not self.warmup_decays:
                return factor
        return factor * self._decay(step)

    def _decay(self, step: int) -> float:
        if self.name == "multistep":
            epoch = step // self.iters_per_epoch
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.name == "cosine":
            t = max(step - self.warmup_iters, 0) / max(self.total - self.warmup_iters, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        return 1.0
