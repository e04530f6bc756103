"""``build_loss(name, freq, variant=..., **options)``: every loss by name, built from a ClassFrequency or counts.

The IIF losses take their weights through named, typed parameters (``variant``, ``total``, ``by``,
``norm``, ``allow_negative``, ``background``, ``background_weight``), the same ones :func:`iif.iif_weights`
takes, so ``iif train``'s ``loss.variant`` reaches the multiply of Eq. 13/15 by name, never through an
untyped dict.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional, Union

import numpy as np
import torch

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..logit_transforms import resolve
from ..methods import Method, all_methods, canonical_method, spelling
from ..weights import canonical_variant, iif_weights
from .base import CrossEntropyLoss, LossBase
from .iif_loss import IIFLoss
from .margin import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss
from .reweighting import ClassBalancedLoss, FocalLoss, IIFCostSensitiveLoss
from .seesaw import SeesawLoss
from .transform import transform_loss

__all__ = ["LOSSES", "VARIANT_LOSSES", "build_loss"]

FreqLike = Union[ClassFrequency, np.ndarray, torch.Tensor, list, tuple, None]
Total = Union[float, str, None]
Norm = Union[float, str, None]

#: Losses whose weights are IIF weights of a Table III variant (they take ``variant=``).
VARIANT_LOSSES: tuple[str, ...] = ("iif", "iif_csl")


def _counts(freq: FreqLike, name: str, by: str) -> np.ndarray:
    if freq is None:
        raise IIFError(f"loss {name!r} needs the training class counts: pass a ClassFrequency or a counts array as freq.")
    if isinstance(freq, ClassFrequency):
        return freq.counts(by)
    return np.asarray(freq.detach().cpu().numpy() if isinstance(freq, torch.Tensor) else freq)


def _iif_weight_vector(
    freq: FreqLike, name: str, variant: str, total: Total, by: str, norm: Norm, allow_negative: bool
) -> torch.Tensor:
    if isinstance(freq, ClassFrequency):
        return freq.weights(variant, by=by, total=total, norm=norm, allow_negative=allow_negative)
    return iif_weights(_counts(freq, name, by), variant, total=total, norm=norm, allow_negative=allow_negative)


def _build_iif(
    freq: FreqLike,
    *,
    variant: str = "smooth",
    total: Total = None,
    by: str = "image",
    norm: Norm = None,
    allow_negative: bool = False,
    online: bool = False,
    num_classes: Optional[int] = None,
    background: Optional[str] = None,
    background_weight: float = 1.0,
    **options: Any,
) -> LossBase:
    """:class:`IIFLoss` with the ``variant`` weights of ``freq`` (:func:`iif.iif_weights`), or the online form."""
    if online:
        if num_classes is None:
            num_classes = freq.num_classes if isinstance(freq, ClassFrequency) else (
                len(_counts(freq, "iif", by)) if freq is not None else None)
        return IIFLoss(online=True, variant=variant, num_classes=num_classes, background=background, **options)
    if background_weight != 1.0:
        raise IIFError(f"background_weight={background_weight!r}: the IIF loss keeps the background logit's weight at 1 "
                       "(paper section IV-A.3); pass weights that include a background entry to change it.")
    w = _iif_weight_vector(freq, "iif", variant, total, by, norm, allow_negative)
    return IIFLoss(w, num_classes=num_classes, background=background, **options)


def _build_iif_csl(
    freq: FreqLike,
    *,
    variant: str = "smooth",
    total: Total = None,
    by: str = "image",
    norm: Norm = None,
    allow_negative: bool = False,
    **options: Any,
) -> LossBase:
    """:class:`IIFCostSensitiveLoss` with the ``variant`` weights of ``freq``."""
    return IIFCostSensitiveLoss(_iif_weight_vector(freq, "iif_csl", variant, total, by, norm, allow_negative), **options)


def _counts_builder(cls, name: str, **fixed) -> Callable[..., LossBase]:
    def build(freq, *, by: str = "image", **kw) -> LossBase:
        return cls(_counts(freq, name, by), **fixed, **kw)

    build.__name__ = f"build_{name}"
    return build


def _build_ce(freq, **kw) -> LossBase:
    kw.pop("by", None)
    return CrossEntropyLoss(**kw)


def _build_seesaw(freq, *, by: str = "image", num_classes: Optional[int] = None, **kw) -> LossBase:
    """:class:`SeesawLoss`: its counts accumulate during training, so ``freq`` only gives the number of classes."""
    if num_classes is None:
        num_classes = len(_counts(freq, "seesaw", by))
    return SeesawLoss(num_classes, **kw)


def _build_focal(freq, **kw) -> LossBase:
    kw.pop("by", None)
    return FocalLoss(**kw)


_build_balanced_softmax = _counts_builder(BalancedSoftmaxLoss, "balanced_softmax")
_build_logit_adjusted = _counts_builder(LogitAdjustedLoss, "logit_adjusted")
_build_ldam = _counts_builder(LDAMLoss, "ldam")
_build_cb_softmax = _counts_builder(ClassBalancedLoss, "cb_softmax", loss="softmax")
_build_cb_sigmoid = _counts_builder(ClassBalancedLoss, "cb_sigmoid", loss="sigmoid")
_build_cb_focal = _counts_builder(ClassBalancedLoss, "cb_focal", loss="focal")
_build_cb_softmax_focal = _counts_builder(ClassBalancedLoss, "cb_softmax_focal", loss="softmax_focal")


def _transform_builder(method: Method) -> Callable[..., LossBase]:
    """The generic loss of a method with a ``train`` transform and no loss ``impl``: :class:`TransformLoss`; the
    options named like the method's parameters (or a ``params`` dict) go to its transform, the rest to the loss."""
    names = {p.name for p in method.params}

    def build(freq, *, by: str = "image", params: Optional[dict] = None, **options) -> LossBase:
        mine = {k: options.pop(k) for k in list(options) if k in names}
        mine.update(params or {})
        return transform_loss(method, _counts(freq, method.name, by), mine, **options)

    build.__name__ = f"build_{method.name}"
    return build


class _LossTable(Mapping[str, Callable[..., LossBase]]):
    """The losses by the loss task's own spelling (``ce``, ``logit_adjusted``, ...), read from the method
    definitions (:mod:`iif.methods`) on every use: a method's loss ``impl`` when it has one, else the
    :class:`TransformLoss` of its ``train`` transform. A method added with :func:`iif.register_method` appears here."""

    def _methods(self) -> dict[str, Method]:
        return {m.spelling("loss"): m for m in all_methods() if "loss" in m.tasks}

    def __getitem__(self, key: str) -> Callable[..., LossBase]:
        method = self._methods()[key]
        impl = method.implementation("loss")
        return resolve(impl) if impl is not None else _transform_builder(method)

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods())

    def __len__(self) -> int:
        return len(self._methods())

    def __repr__(self) -> str:
        return f"LOSSES({', '.join(self)})"


#: Every loss by name (a live view of the method definitions, :class:`_LossTable`).
LOSSES: Mapping[str, Callable[..., LossBase]] = _LossTable()


def build_loss(name: str, freq: FreqLike = None, *, variant: Optional[str] = None, **options: Any) -> LossBase:
    """Build a loss by name.

    Args:
        name: a name of :data:`LOSSES` or any alias of it in :mod:`iif.methods` (``softmax`` for ``ce``,
            ``logit_adjustment`` and ``la`` for ``logit_adjusted``); one of ``ce``, ``iif``, ``iif_csl``, ``balanced_softmax``, ``logit_adjusted``, ``ldam``,
            ``cb_softmax``, ``cb_sigmoid``, ``cb_focal`` (Cui et al.'s sigmoid focal loss),
            ``cb_softmax_focal``, ``focal`` (softmax focal), ``seesaw`` (Wang et al.; ``p``, ``q``, ``eps``,
            ``background``; ``freq`` or ``num_classes`` gives C), or a method added with
            :func:`iif.register_method` (its ``train`` transform inside the cross-entropy, :class:`TransformLoss`;
            its parameters as options or ``params={...}``). Dispatch follows :mod:`iif.methods`: a method's loss
            ``impl`` when it has one, else its ``train`` transform.
        freq: the training set's :class:`iif.ClassFrequency` or a per-class counts array (not needed for
            ``ce`` and ``focal``).
        variant: the IIF weight variant (Table III) of :data:`VARIANT_LOSSES`; default ``"smooth"``;
            refused by the other losses.
        **options: options of the loss class (``weight``, ``reduction``, ``label_smoothing``,
            ``ignore_index``, ``check_finite``, ... and e.g. ``tau``, ``beta``, ``gamma``, ``drw_epoch``).
            ``iif``/``iif_csl`` also take ``total=None`` (K; ``"sum"``, ``"images"``, ``"instances"`` or a
            number for a ClassFrequency), ``by="image"|"object"``, ``norm`` (``"mean"`` or a p-norm),
            ``allow_negative``; ``iif`` also ``online``, ``num_classes``, ``background``, ``fused``;
            count-based losses take ``by="image"|"object"``.
    """
    key = str(name).lower()
    if key not in LOSSES:  # an alias of the one method vocabulary (iif.methods), e.g. softmax, la, logit_adjustment
        key = spelling(canonical_method(key, "loss", what="loss"), "loss")
    if variant is not None:
        if key not in VARIANT_LOSSES:
            raise IIFError(f"loss {name!r} has no IIF variant (variant={variant!r}); only {', '.join(VARIANT_LOSSES)} take one.")
        options["variant"] = canonical_variant(variant)
    try:
        return LOSSES[key](freq, **options)
    except TypeError as exc:  # an option the loss does not take
        raise IIFError(f"bad options for loss {name!r}: {exc}. See help(iif.losses.build_loss).") from None
