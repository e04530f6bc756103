"""Additive-margin losses of the paper's Table IV: Balanced Softmax, Logit-Adjusted loss, LDAM(-DRW).

| loss | training logits | paper |
|---|---|---|
| :class:`BalancedSoftmaxLoss` | ``z + ln n`` | Table IV, Ren et al. 2020 |
| :class:`LogitAdjustedLoss` | ``z + tau ln p`` | Table IV "Log. Adj. Loss", Menon et al. 2021 |
| :class:`LDAMLoss` | ``s (z - m_y 1[c = y])``, ``m_c ∝ n_c^(-1/4)`` | Table IV "LDAM", Cao et al. 2019 |

All three predict with the plain logits ``z`` at inference (``adjust_logits`` is the identity): the
offset is what makes the training loss balanced.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..adjusters import log_counts, log_prior
from ..errors import IIFError
from ..weights import CountsLike, as_counts, refuse_zero_counts
from ._common import finite_number, is_soft
from .base import LossBase
from .reweighting import class_balanced_weights

__all__ = ["BalancedSoftmaxLoss", "LogitAdjustedLoss", "LDAMLoss", "ldam_margins"]


class _OffsetLoss(LossBase):
    """``CE(z + offset, y)`` for a fixed per-class additive offset."""

    def __init__(self, offset: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("offset", torch.as_tensor(offset, dtype=torch.float32))

    def expected_classes(self) -> Optional[int]:
        return int(self.offset.shape[0])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._validate(logits, target)
        out = F.cross_entropy(
            logits + self.offset.to(logits.dtype), target.to(logits.dtype) if is_soft(target) else target,
            weight=self._weight(logits), reduction=self.reduction, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
        return self._finite(out, logits, target)


class BalancedSoftmaxLoss(_OffsetLoss):
    """Balanced Softmax (Ren et al. 2020, Table IV): ``CE(z + ln n, y)``; predict with ``z``."""

    def __init__(self, counts: CountsLike, **kwargs) -> None:
        super().__init__(log_counts(counts), **kwargs)


class LogitAdjustedLoss(_OffsetLoss):
    """Logit-adjusted loss (Menon et al. 2021, Table IV): ``CE(z + tau ln p, y)``, ``p = n / sum n``; predict with ``z``."""

    def __init__(self, counts: CountsLike, tau: float = 1.0, **kwargs) -> None:
        tau = finite_number(tau, "tau")
        super().__init__(tau * log_prior(counts), **kwargs)
        self.tau = tau


def ldam_margins(counts: CountsLike, max_margin: float = 0.5) -> torch.Tensor:
    """LDAM margins (Cao et al. 2019): ``m_c ∝ n_c^(-1/4)``, scaled so the largest (rarest class) is ``max_margin``."""
    n = as_counts(counts)
    refuse_zero_counts(n, "LDAM margins n^(-1/4) are infinite")
    m = n ** -0.25
    return torch.as_tensor(m * (max_margin / m.max()), dtype=torch.float32)


class LDAMLoss(LossBase):
    """LDAM loss with optional deferred re-weighting (Cao et al. 2019, Table IV).

    ``loss = CE(s * (z - m_y e_y), y)``: the target logit is lowered by its class margin
    ``m_y ∝ n_y^(-1/4)`` (largest ``max_margin``) and the logits are scaled by ``scale``. With
    ``drw_epoch`` set, from that epoch on (see :meth:`set_epoch`) the class ``weight`` becomes the
    class-balanced weights with ``drw_beta`` (times any ``weight`` given). Soft targets subtract the
    expected margin ``t_c m_c`` from every logit.
    """

    def __init__(
        self,
        counts: CountsLike,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_epoch: Optional[int] = None,
        drw_beta: float = 0.9999,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.max_margin = finite_number(max_margin, "max_margin", nonneg=True)
        self.scale = finite_number(scale, "scale", positive=True)
        if drw_epoch is not None and (int(drw_epoch) != drw_epoch or drw_epoch < 0):
            raise IIFError(f"drw_epoch must be a non-negative integer epoch (or None to disable DRW); got {drw_epoch!r}.")
        self.drw_epoch = None if drw_epoch is None else int(drw_epoch)
        self.drw_beta = float(drw_beta)
        self.register_buffer("margins", ldam_margins(counts, self.max_margin))
        self.register_buffer("drw_weights", class_balanced_weights(counts, drw_beta))

    def expected_classes(self) -> Optional[int]:
        return int(self.margins.shape[0])

    @property
    def drw_active(self) -> bool:
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def current_weight(self) -> Optional[torch.Tensor]:
        """The class weight in use this epoch (DRW weights once ``epoch >= drw_epoch``)."""
        if not self.drw_active:
            return self.weight
        return self.drw_weights if self.weight is None else self.drw_weights * self.weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft, _ = self._validate(logits, target)
        m = self.margins.to(logits.dtype)
        if soft:
            t = target.to(logits.dtype)
            shifted = logits - t * m
        else:
            valid = target != self.ignore_index
            safe = target.masked_fill(~valid, 0)
            shifted = logits.scatter_add(1, safe[:, None], -(m[safe] * valid)[:, None])
            t = target
        w = self.current_weight()
        out = F.cross_entropy(
            self.scale * shifted, t, weight=None if w is None else w.to(logits.dtype), reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
        )
        return self._finite(out, logits, target)

    def extra_repr(self) -> str:
        return (
            f"max_margin={self.max_margin}, scale={self.scale}, drw_epoch={self.drw_epoch}, "
            f"drw_beta={self.drw_beta}, {super().extra_repr()}"
        )
