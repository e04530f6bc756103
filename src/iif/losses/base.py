"""The common loss interface and plain softmax cross-entropy.

Every loss in :mod:`iif.losses` is a :class:`LossBase`: ``forward(logits (N, C), target)`` with
``F.cross_entropy``'s options, ``adjust_logits(logits)`` (the logits inference should use: IIF returns
``w * z``, the others ``z``) and ``set_epoch(epoch)`` (used by LDAM-DRW, a no-op elsewhere), so a
training loop can treat all of them alike.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_label_smoothing, check_loss_finite, check_reduction, class_weight, validate_inputs

__all__ = ["LossBase", "CrossEntropyLoss"]


class LossBase(nn.Module):
    """Shared options and checks (see :func:`torch.nn.functional.cross_entropy` for the first four).

    Args:
        weight: per-class rescaling weight ``(C,)`` as in ``F.cross_entropy``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: hard label to skip (contributes 0 and is left out of the mean).
        label_smoothing: in ``[0, 1]``.
        check_finite: raise :class:`iif.IIFError` when NaN/inf logits reach the loss (the loss value is
            the screen, so this costs one small sum and, on a GPU, one host sync per call; a ``-inf``
            logit that contributes exactly 0, a mask, is allowed). Set False in tuned GPU loops.
        check_labels: raise when a hard label is out of range (one small min/max; a host sync on GPU).
    """

    def __init__(
        self,
        weight=None,
        reduction: str = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        check_finite: bool = True,
        check_labels: bool = True,
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.check_finite = bool(check_finite)
        self.check_labels = bool(check_labels)
        self.register_buffer("weight", class_weight(weight))
        self.epoch = 0

    # Expected size of the logits' class dimension (None: any).
    def expected_classes(self) -> Optional[int]:
        return None

    def _validate(self, logits: torch.Tensor, target: torch.Tensor, want_ignored: bool = False):
        return validate_inputs(
            logits, target, self.expected_classes(), self.ignore_index, self.check_labels, want_ignored,
        )

    def _finite(self, out: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``out``, after raising if NaN/inf logits reached it (when ``check_finite``)."""
        return check_loss_finite(out, logits, target) if self.check_finite else out

    def _weight(self, logits: torch.Tensor) -> Optional[torch.Tensor]:
        w = self.weight
        if w is not None and w.shape[0] != logits.shape[-1]:
            from ..errors import IIFError

            raise IIFError(
                f"weight has {w.shape[0]} entries but the logits have {logits.shape[-1]} classes; "
                "pass one weight per logit column."
            )
        return w.to(dtype=logits.dtype) if w is not None else None

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits to use at inference for this loss's decision rule (identity unless overridden)."""
        return logits

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of each epoch; epoch-dependent losses override it."""
        self.epoch = int(epoch)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


class CrossEntropyLoss(LossBase):
    """Plain softmax cross-entropy (the paper's "Softmax" baseline) with the shared loss interface."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._validate(logits, target)
        out = F.cross_entropy(
            logits, target, weight=self._weight(logits), reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing,
        )
        return self._finite(out, logits, target)
