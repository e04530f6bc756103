"""The generic loss of a method defined by its transforms (:mod:`iif.methods`): ``CE(train(z), y)``.

:func:`iif.losses.build_loss` builds a :class:`TransformLoss` (:func:`transform_loss`) for a method that has a ``train`` transform and no
special loss implementation (e.g. one added with :func:`iif.register_method`). It predicts with the method's
``infer`` transform (``adjust_logits``) when the method takes ``when="train_and_test"`` (it keeps its meaning in
both phases, as IIF's ``w * z`` does, paper Eq. 13-15), else with ``z`` (a prior correction added in the loss
is not subtracted again, as the Balanced Softmax and logit-adjusted losses predict with ``z``).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from ..logit_transforms import TransformAdjuster
from ..methods import Method, get_method
from ..weights import CountsLike
from ._common import is_soft
from .base import LossBase

__all__ = ["TransformLoss", "InferTransformLoss", "transform_loss"]


class TransformLoss(LossBase):
    """``CE(train(z, n, **params), y)`` for a method's ``train`` transform, with :class:`LossBase`'s options.

    Args:
        method: a method name (any spelling) or a :class:`~iif.methods.Method` with a ``train`` transform.
        counts: the ``C`` per-class training counts.
        params: the method's parameters (the rest take their defaults).
        **kwargs: :class:`LossBase` options (``weight``, ``reduction``, ``ignore_index``, ``label_smoothing``, ...).
    """

    def __init__(self, method: Union[str, Method], counts: CountsLike, params: Optional[Mapping[str, Any]] = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        m = method if isinstance(method, Method) else get_method(method)
        self.method = m.name
        self.train_logits = TransformAdjuster(m, counts, params, phase="train")

    def expected_classes(self) -> Optional[int]:
        return int(self.train_logits.counts.shape[0])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._validate(logits, target)
        out = F.cross_entropy(
            self.train_logits(logits), target.to(logits.dtype) if is_soft(target) else target,
            weight=self._weight(logits), reduction=self.reduction, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
        return self._finite(out, logits, target)

    def extra_repr(self) -> str:
        return f"method={self.method!r}, {super().extra_repr()}"


class InferTransformLoss(TransformLoss):
    """A :class:`TransformLoss` that predicts with the method's ``infer`` transform (``adjust_logits``): the loss
    of a method that takes ``when="train_and_test"`` (as the IIF loss predicts with ``w * z``, Eq. 13-15)."""

    def __init__(self, method: Union[str, Method], counts: CountsLike, params: Optional[Mapping[str, Any]] = None,
                 **kwargs: Any) -> None:
        super().__init__(method, counts, params, **kwargs)
        self.predict_logits = TransformAdjuster(self.method, counts, params, phase="infer")

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The method's ``infer`` transform of ``logits``."""
        return self.predict_logits(logits)


def transform_loss(method: Union[str, Method], counts: CountsLike, params: Optional[Mapping[str, Any]] = None,
                   **kwargs: Any) -> TransformLoss:
    """The generic loss of ``method``: :class:`InferTransformLoss` when it takes ``train_and_test`` and has an
    ``infer`` transform, else :class:`TransformLoss` (predicts with ``z``, no ``adjusted`` scores in ``iif train``)."""
    m = method if isinstance(method, Method) else get_method(method)
    both = m.infer is not None and "train_and_test" in m.when
    return (InferTransformLoss if both else TransformLoss)(m, counts, params, **kwargs)
