"""``build_loss(name, freq, **kwargs)``: every loss by name, built from a ClassFrequency or counts."""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..weights import iif_weights
from .base import CrossEntropyLoss, LossBase
from .iif_loss import IIFLoss
from .margin import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss
from .reweighting import ClassBalancedLoss, FocalLoss, IIFCostSensitiveLoss

__all__ = ["LOSSES", "build_loss"]

FreqLike = Union[ClassFrequency, np.ndarray, torch.Tensor, list, tuple, None]

# Keyword arguments that choose the IIF weights rather than configure the loss.
_WEIGHT_KWARGS = ("norm", "allow_negative", "background_weight")


def _counts(freq: FreqLike, name: str, by: str) -> np.ndarray:
    if freq is None:
        raise IIFError(f"loss {name!r} needs the training class counts: pass a ClassFrequency or a counts array as freq.")
    if isinstance(freq, ClassFrequency):
        return freq.counts(by)
    return np.asarray(freq.detach().cpu().numpy() if isinstance(freq, torch.Tensor) else freq)


def _iif_weight_vector(freq: FreqLike, name: str, variant: str, total, by: str, wkw: dict) -> torch.Tensor:
    if isinstance(freq, ClassFrequency):
        return freq.weights(variant, by=by, total=total, **wkw)
    return iif_weights(_counts(freq, name, by), variant, total=total, **wkw)


def _split(kwargs: dict) -> tuple[dict, dict]:
    wkw = {k: kwargs.pop(k) for k in _WEIGHT_KWARGS if k in kwargs}
    return wkw, kwargs


def _build_iif(freq, *, variant: str = "smooth", total=None, by: str = "image", online: bool = False, **kw) -> LossBase:
    wkw, kw = _split(kw)
    if online:
        c = freq.num_classes if isinstance(freq, ClassFrequency) else (len(_counts(freq, "iif", by)) if freq is not None else kw.pop("num_classes", None))
        kw.setdefault("num_classes", c)
        return IIFLoss(online=True, variant=variant, **kw)
    return IIFLoss(_iif_weight_vector(freq, "iif", variant, total, by, wkw), **kw)


def _build_iif_csl(freq, *, variant: str = "smooth", total=None, by: str = "image", **kw) -> LossBase:
    wkw, kw = _split(kw)
    return IIFCostSensitiveLoss(_iif_weight_vector(freq, "iif_csl", variant, total, by, wkw), **kw)


def _counts_builder(cls, name: str, **fixed) -> Callable[..., LossBase]:
    def build(freq, *, by: str = "image", **kw) -> LossBase:
        return cls(_counts(freq, name, by), **fixed, **kw)

    build.__name__ = f"build_{name}"
    return build


def _build_ce(freq, **kw) -> LossBase:
    kw.pop("by", None)
    return CrossEntropyLoss(**kw)


def _build_focal(freq, **kw) -> LossBase:
    kw.pop("by", None)
    return FocalLoss(**kw)


LOSSES: dict[str, Callable[..., LossBase]] = {
    "ce": _build_ce,
    "iif": _build_iif,
    "iif_csl": _build_iif_csl,
    "balanced_softmax": _counts_builder(BalancedSoftmaxLoss, "balanced_softmax"),
    "logit_adjusted": _counts_builder(LogitAdjustedLoss, "logit_adjusted"),
    "ldam": _counts_builder(LDAMLoss, "ldam"),
    "cb_softmax": _counts_builder(ClassBalancedLoss, "cb_softmax", loss="softmax"),
    "cb_focal": _counts_builder(ClassBalancedLoss, "cb_focal", loss="focal"),
    "focal": _build_focal,
}


def build_loss(name: str, freq: FreqLike = None, **kwargs) -> LossBase:
    """Build a loss by name.

    Args:
        name: one of ``ce``, ``iif``, ``iif_csl``, ``balanced_softmax``, ``logit_adjusted``, ``ldam``,
            ``cb_softmax``, ``cb_focal``, ``focal``.
        freq: the training set's :class:`iif.ClassFrequency` or a per-class counts array (not needed for
            ``ce`` and ``focal``).
        **kwargs: options of the loss class (``weight``, ``reduction``, ``label_smoothing``,
            ``ignore_index``, ``check_finite``, ... and e.g. ``tau``, ``beta``, ``gamma``, ``drw_epoch``).
            ``iif``/``iif_csl`` also take ``variant="smooth"``, ``total=None`` (K; ``"sum"``, ``"images"``,
            ``"instances"`` or a number for a ClassFrequency), ``norm``, ``allow_negative``, ``online``,
            ``background``; count-based losses take ``by="image"|"object"``.
    """
    key = str(name).lower()
    if key not in LOSSES:
        raise IIFError(f"Unknown loss {name!r}; known losses: {', '.join(LOSSES)}.")
    try:
        return LOSSES[key](freq, **kwargs)
    except TypeError as exc:  # an option the loss does not take
        raise IIFError(f"bad options for loss {name!r}: {exc}. See help(iif.losses.build_loss).") from None
