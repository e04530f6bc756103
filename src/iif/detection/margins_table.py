"""The method table of :func:`iif.detection.use_margin`: the methods, the phases (``when``) each accepts, and
the small checks every part of the switch shares.

Moved out of :mod:`iif.detection.margins` (issue 16), which re-exports :data:`METHODS` and :data:`WHEN`.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..weights import as_counts

__all__ = ["METHODS", "WHEN"]

METHODS: tuple[str, ...] = ("softmax", "iif", "balanced_softmax", "logit_adjustment", "norcal", "seesaw")
WHEN: tuple[str, ...] = ("train_and_test", "train", "test")

_BY = ("image", "object")
# The ``when`` values each method accepts (see the module docstring for why).
_ALLOWED_WHEN = {
    "softmax": WHEN,
    "iif": WHEN,
    "balanced_softmax": ("train",),
    "logit_adjustment": ("train", "test"),
    "norcal": ("test",),
    "seesaw": ("train",),
}
_ADDITIVE = ("balanced_softmax", "logit_adjustment")

FreqLike = Union[ClassFrequency, Sequence[float], np.ndarray, torch.Tensor]


def _check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise IIFError(f"Unknown {what} {value!r}; expected one of {tuple(choices)}.")
    return value


def _counts(freq: FreqLike, by: str) -> np.ndarray:
    if isinstance(freq, ClassFrequency):
        return freq.counts(by).astype(np.float64)
    return as_counts(freq, "freq (per-class counts)")
