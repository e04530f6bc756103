"""Losses that re-weight samples or terms rather than logits: IIF_CSL, class-balanced, focal.

- :class:`IIFCostSensitiveLoss` (IIF_CSL, paper Table V and Eq. 17): ``w_y * CE(z, y)``. Unlike IIF
  (Eq. 16), every gradient entry of a sample is scaled by the target's weight ``w_y``.
- :class:`ClassBalancedLoss` (Cui et al., CVPR 2019): per-sample weight ``(1 - beta) / (1 - beta^n_y)``
  (the inverse effective number of samples), normalised so the ``C`` class weights sum to ``C``, applied
  to one of Cui et al.'s three losses: softmax CE, sigmoid CE or the sigmoid focal loss (their
  ``--loss_type softmax|sigmoid|focal``), or to the softmax focal loss (a variant they do not use).
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
from ..weights import CountsLike, as_counts, as_weight_vector, refuse_zero_counts
from ._common import ce_from_terms, finite_number, hard_or_soft_gather, is_soft, reduce_per_sample
from .base import LossBase

__all__ = [
    "class_balanced_weights",
    "IIFCostSensitiveLoss",
    "ClassBalancedLoss",
    "CB_LOSSES",
    "FocalLoss",
    "focal_loss",
    "sigmoid_focal_loss",
]

#: The losses :class:`ClassBalancedLoss` weights: Cui et al.'s ``softmax``, ``sigmoid`` and ``focal`` (sigmoid
#: focal), and ``softmax_focal``.
CB_LOSSES: tuple[str, ...] = ("softmax", "sigmoid", "focal", "softmax_focal")


def class_balanced_weights(counts: CountsLike, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al. 2019): ``(1 - beta) / (1 - beta^n_c)``, rescaled to sum to ``C``.

    ``1 - beta^n`` over ``1 - beta`` is the effective number of samples of a class; ``beta = 0`` gives
    equal weights, ``beta -> 1`` inverse class frequency.
    """
    n = as_counts(counts)
    b = finite_number(beta, "beta", nonneg=True)
    if b >= 1.0:
        raise IIFError(f"beta must lie in [0, 1) (typical 0.9, 0.99, 0.999, 0.9999); got {beta!r}.")
    refuse_zero_counts(n, "class-balanced weights (1 - beta) / (1 - beta^n) are infinite")
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


def _sigmoid_focal_terms(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-logit sigmoid focal terms ``m * BCE(z, t)`` with Cui et al.'s stable modulator
    ``m = exp(-gamma t z - gamma ln(1 + e^-z))``: ``(1 - p)^gamma`` for ``t = 1``, ``p^gamma`` for ``t = 0``, ``p = sigmoid(z)``."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma == 0.0:
        return bce
    return torch.exp(-gamma * targets * logits - gamma * F.softplus(-logits)) * bce


def sigmoid_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One-vs-all sigmoid focal loss as Cui et al. (2019) train it: per sample ``sum_c m_c BCE(z_c, t_c)``.

    ``t`` is the one-hot label (soft targets as given; label smoothing ``t (1 - eps) + eps / C``), ``m`` the
    focal modulator (``gamma = 0`` gives plain sigmoid cross-entropy). ``sample_scale`` multiplies each
    sample's sum (the class-balanced weight ``w_y``). ``mean`` divides by the number of positive labels,
    i.e. the non-ignored samples (``sum weight[y]`` with a class ``weight``, as ``F.cross_entropy``).
    """
    n, c = logits.shape
    if is_soft(target):
        t = target.to(logits.dtype)
    else:
        valid = target != ignore_index
        t = F.one_hot(target.masked_fill(~valid, 0), c).to(logits.dtype)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / c
    per = _sigmoid_focal_terms(logits, t, gamma).sum(1)
    if not is_soft(target):
        per = per.masked_fill(~valid, 0.0)
    wt = weight.to(device=logits.device, dtype=logits.dtype) if weight is not None else None
    if wt is not None:
        per = per * hard_or_soft_gather(wt, target, ignore_index)
    if sample_scale is not None:
        per = per * sample_scale
    return reduce_per_sample(per, target, wt, reduction, ignore_index)


class IIFCostSensitiveLoss(LossBase):
    """IIF_CSL (paper Table V, Eq. 17): plain ``CE(z, y)`` scaled per sample by the IIF weight ``w_y``.

    Soft targets use the expected weight ``sum_c t_c w_c``. Inference uses the plain logits.
    """

    def __init__(self, weights, background: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        w = as_weight_vector(weights, "IIF weights")  # float64 stays float64, as in IIFLoss
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
    """Class-balanced loss (Cui et al., CVPR 2019): the loss of each sample scaled by ``w_y``, the normalised
    inverse effective number ``(1 - beta) / (1 - beta^n_y)`` (:func:`class_balanced_weights`, sum ``C``).

    Args:
        counts: per-class training counts ``n_c``.
        beta: effective-number hyper-parameter in ``[0, 1)``.
        loss: one of :data:`CB_LOSSES`: ``"softmax"`` (softmax CE), ``"sigmoid"`` (one-vs-all sigmoid CE),
            ``"focal"`` (Cui et al.'s sigmoid focal loss, ``"cb_focal"`` in :func:`iif.losses.build_loss`) or
            ``"softmax_focal"`` (``-(1 - q_y)^gamma log q_y``, softmax; not one of Cui et al.'s losses).
        gamma: focal exponent (the focal losses only).

    The sigmoid forms sum the ``C`` binary terms of a sample and divide the batch total by the number of
    labels, as Cui et al.'s code does. Their sigmoid models also start the classifier bias at
    ``-ln((1 - pi) / pi)`` with ``pi = 0.1`` and exclude it from weight decay; that is a model choice left to
    the caller. Prediction uses ``argmax z`` for every form (the sigmoid is monotonic).
    """

    def __init__(self, counts: CountsLike, beta: float = 0.9999, loss: str = "softmax", gamma: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if loss not in CB_LOSSES:
            raise IIFError(f"loss must be one of {CB_LOSSES} (Cui et al.'s 'focal' is the sigmoid focal loss); got {loss!r}.")
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
        gamma = self.gamma if self.loss in ("focal", "softmax_focal") else 0.0
        fn = focal_loss if self.loss in ("softmax", "softmax_focal") else sigmoid_focal_loss
        out = fn(logits, target, gamma, weight, self.reduction, self.ignore_index, self.label_smoothing, sample_scale=scale)
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
