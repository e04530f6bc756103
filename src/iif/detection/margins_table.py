"""The method table of :func:`iif.detection.use_margin`: the methods, the phases (``when``) each accepts, and
the small checks every part of the switch shares. The methods and their ``when`` values come from the one
method table, :mod:`iif.methods`.

Moved out of :mod:`iif.detection.margins` (issue 16), which re-exports :data:`METHODS` and :data:`WHEN`.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..methods import METHODS as _TABLE
from ..methods import WHEN as _WHEN
from ..methods import canonical_method, method_names
from ..weights import as_counts

__all__ = ["METHODS", "WHEN"]

# The methods and their phases are stated once, in the method table of :mod:`iif.methods` (issue 16, part 2).
METHODS: tuple[str, ...] = method_names("detection")
WHEN: tuple[str, ...] = _WHEN

_BY = ("image", "object")
# The ``when`` values each method accepts (iif.methods says why).
_ALLOWED_WHEN = {m.name: m.when for m in _TABLE if "detection" in m.tasks}
_ADDITIVE = ("balanced_softmax", "logit_adjustment")

FreqLike = Union[ClassFrequency, Sequence[float], np.ndarray, torch.Tensor]


def _check_choice(value: Any, choices: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise IIFError(f"Unknown {what} {value!r}; expected one of {tuple(choices)}.")
    return value


def _check_method(value: Any) -> str:
    """The canonical name of a detection margin method; its aliases (``la``, ``logit_adjusted``, ``ce``) resolve
    through :func:`iif.methods.canonical_method`, which refuses the rest in one line."""
    return canonical_method(value, "detection")


def _counts(freq: FreqLike, by: str) -> np.ndarray:
    if isinstance(freq, ClassFrequency):
        return freq.counts(by).astype(np.float64)
    return as_counts(freq, "freq (per-class counts)")
