"""Losses that re-weight samples or terms rather than logits: IIF_CSL, class-balanced, focal.

- :class:`IIFCostSensitiveLoss` (IIF_CSL, paper Table V and Eq. 17): ``w_y * CE(z, y)``. Unlike IIF
  (Eq. 16), every gradient entry of a sample is scaled by the target's weight ``w_y``.
- :class:`ClassBalancedLoss` (Cui et al. 2019): per-sample weight ``(1 - beta) / (1 - beta^n_y)``
  (the inverse effective number of samples), normalised so the ``C`` class weights sum to ``C``, applied
  to softmax CE or to the focal loss.
- :class:`FocalLoss` (Lin et al. 2017), softmax form: ``-(1 - q_y)^gamma log q_y``.

Per-sample scales do not change the ``mean`` denominator: ``mean`` is ``sum_i s_i l_i / N`` (``N`` =
non-ignored samples, or ``sum weight[y]`` with a class ``weight``, as in ``F.cross_entropy``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..adjusters import check_background, expand_class_vector
from ..errors import IIFError
from ..weights import CountsLike, as_counts
from ._common import ce_from_terms, finite_number, hard_or_soft_gather, reduce_per_sample
from .base import LossBase

__all__ = ["class_balanced_weights", "IIFCostSensitiveLoss", "ClassBalancedLoss", "FocalLoss", "focal_loss"]


def class_balanced_weights(counts: CountsLike, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): ``(1 - beta) / (1 - beta^n_c)``, rescaled to sum to ``C``.

    ``1 - beta^n`` over ``1 - beta`` is the effective number of samples of a class; ``beta = 0`` gives
    equal weights, ``beta -> 1`` inverse class frequency.
    """
    n = as_counts(counts)
    b = finite_number(beta, "beta", nonneg=True)
    if b >= 1.0:
        raise IIFError(f"beta must lie in [0, 1) (typical 0.9, 0.99, 0.999, 0.9999); got {beta!r}.")
    zero = np.flatnonzero(n == 0)
    if zero.size:
        raise IIFError(
            f"class-balanced weights are infinite for classes with zero count {zero[:10].tolist()}; "
            "drop the unseen classes or add 1 to every count."
        )
    eff = -np.expm1(n * np.log(b)) if b > 0 else np.ones_like(n)  # 1 - beta^n, accurate near beta = 1
    w = (1.0 - b) / eff if b > 0 else np.ones_like(n)
    w = w / w.sum() * n.size
    return torch.as_tensor(w, dtype=torch.float32)


def _focal_terms(logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-class focal terms ``-(1 - q_c)^gamma log q_c`` with ``q = softmax(z)``."""
    logp = torch.log_softmax(logits, dim=1)
    if gamma == 0.0:
        return -logp
    # clamp: (1 - q)^gamma has an infinite slope at q = 1 for gamma < 1; keep the base off exact zero.
    base = (-torch.expm1(logp)).clamp_min(torch.finfo(logp.dtype).tiny)
    return -base.pow(gamma) * logp


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017): ``-(1 - q_y)^gamma log q_y``; ``gamma = 0`` is cross-entropy.

    Soft targets / label smoothing use ``sum_c t_c (1 - q_c)^gamma (-log q_c)``; the options reduce as in
    ``F.cross_entropy``.
    """
    return ce_from_terms(
        _focal_terms(logits, gamma), target, weight, reduction, ignore_index, label_smoothing, sample_scale
    )


class IIFCostSensitiveLoss(LossBase):
    """IIF_CSL (paper Table V, Eq. 17): plain ``CE(z, y)`` scaled per sample by the IIF weight ``w_y``.

    Soft targets use the expected weight ``sum_c t_c w_c``. Inference uses the plain logits.
    """

    def __init__(self, weights, background: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        w = torch.as_tensor(weights).detach().to(torch.float32)
        if w.dim() != 1 or w.numel() == 0 or not bool(torch.isfinite(w).all()):
            raise IIFError("weights must be a finite 1-D vector with one IIF weight per class.")
        self.background = check_background(background)
        self.register_buffer("iif_weights", w)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_logits = logits.shape[-1] if isinstance(logits, torch.Tensor) and logits.dim() else 0
        w_full = expand_class_vector(self.iif_weights, num_logits, self.background, 1.0, "IIF weights")
        self._validate(logits, target)
        weight = self._weight(logits)
        per = F.cross_entropy(
            logits, target.to(logits.dtype) if target.is_floating_point() else target, weight=weight,
            reduction="none", ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
        )
        per = per * hard_or_soft_gather(w_full.to(per.dtype), target, self.ignore_index)
        return self._finite(reduce_per_sample(per, target, weight, self.reduction, self.ignore_index), logits, target)


class ClassBalancedLoss(LossBase):
    """Class-balanced loss (Cui et al. 2019) on softmax CE (``loss="softmax"``) or softmax focal (``"focal"``).

    Args:
        counts: per-class training counts ``n_c``.
        beta: effective-number hyper-parameter in ``[0, 1)``.
        loss: ``"softmax"`` or ``"focal"``.
        gamma: focal exponent (``loss="focal"`` only).
    """

    def __init__(self, counts: CountsLike, beta: float = 0.9999, loss: str = "softmax", gamma: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if loss not in ("softmax", "focal"):
            raise IIFError(f"loss must be 'softmax' or 'focal'; got {loss!r}.")
        self.loss = loss
        self.beta = float(beta)
        self.gamma = finite_number(gamma, "gamma", nonneg=True)
        self.register_buffer("cb_weights", class_balanced_weights(counts, beta))

    def expected_classes(self) -> Optional[int]:
        return int(self.cb_weights.shape[0])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._validate(logits, target)
        weight = self._weight(logits)
        scale = hard_or_soft_gather(self.cb_weights.to(logits.dtype), target, self.ignore_index)
        gamma = self.gamma if self.loss == "focal" else 0.0
        out = focal_loss(
            logits, target, gamma, weight, self.reduction, self.ignore_index, self.label_smoothing, sample_scale=scale
        )
        return self._finite(out, logits, target)

    def extra_repr(self) -> str:
        return f"loss={self.loss!r}, beta={self.beta}, gamma={self.gamma}, {super().extra_repr()}"


class FocalLoss(LossBase):
    """Softmax focal loss (Lin et al. 2017) with the shared loss interface; ``gamma = 0`` is plain CE."""

    def __init__(self, gamma: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gamma = finite_number(gamma, "gamma", nonneg=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._validate(logits, target)
        out = focal_loss(
            logits, target, self.gamma, self._weight(logits), self.reduction, self.ignore_index, self.label_smoothing
        )
        return self._finite(out, logits, target)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, {super().extra_repr()}"
