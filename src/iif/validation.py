"""The config checks every config section uses: one message form for a bad value.

``iif.train.config.validate_config`` (classification) and ``iif.detection.config.validate_detection_config``
(detection) both check their keys with these, so a bad value reads the same in ``iif train`` and
``iif det-train``::

    config key 'optim.lr' must be a positive finite number; got -1. Set e.g. optim.lr=0.1.

This module sits low in the layering (it imports nothing of ``iif`` but :mod:`iif.errors`), so both config
modules can import it without importing each other (docs/ARCHITECTURE.md, "Layering rules").
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

from .errors import IIFError

__all__ = ["MAX_SEED", "check", "is_finite", "positive", "nonnegative", "at_least", "one_of", "momentum", "suggest"]

#: The largest seed numpy and torch accept (``seed`` keys must be in ``[0, MAX_SEED]``).
MAX_SEED = 2**32 - 1


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` to a misspelt ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def check(ok: bool, key: str, value: Any, need: str, example: str) -> None:
    """Raise the one config-check :class:`IIFError` (key, what it must be, the value, a fix) unless ``ok``."""
    if not ok:
        raise IIFError(f"config key {key!r} must be {need}; got {value!r}. Set e.g. {key}={example}.")


def is_finite(v: Any) -> bool:
    """True for a finite int or float (a bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(key: str, v: Any, example: str) -> None:
    """``key`` must be a finite number > 0."""
    check(is_finite(v) and v > 0, key, v, "a positive finite number", example)


def nonnegative(key: str, v: Any, example: str) -> None:
    """``key`` must be a finite number >= 0."""
    check(is_finite(v) and v >= 0, key, v, "a finite number >= 0", example)


def at_least(key: str, v: Any, low: int, example: str, high: int | None = None) -> None:
    """``key`` must be a whole number (not a bool) in ``[low, high]`` (no upper bound when ``high`` is None)."""
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
    need = f"a whole number >= {low}" + (f" and <= {high}" if high is not None else "")
    check(ok, key, v, need, example)


def one_of(key: str, v: Any, choices: Iterable[str], example: str | None = None) -> None:
    """``key`` must be one of ``choices``; the message lists them and suggests the closest."""
    choices = list(choices)
    if v not in choices:
        raise IIFError(f"config key {key!r} is {v!r}; use one of {', '.join(choices)}.{suggest(str(v), choices)}")


def momentum(key: str, v: Any) -> None:
    """SGD momentum in ``[0, 1)``: with m >= 1 the velocity never forgets a gradient and training diverges."""
    check(is_finite(v) and 0 <= v < 1, key, v, "in [0, 1) (SGD momentum; 0.9 is usual)", "0.9")


def method_spelling(value: Any, task: str) -> Any:
    """A config's method name as ``task``'s own table spells it (:func:`iif.methods.spelling`): the canonical
    name and every alias are accepted in config keys as on the command line (``loss.name: logit_adjustment`` or
    ``la`` is the loss registry's ``logit_adjusted``; ``margin.method: la`` is ``logit_adjustment``). A name the
    method table does not know comes back as given, for the key's own check to refuse in one line."""
    from .errors import IIFError
    from .methods import canonical_method, spelling

    if not isinstance(value, str):
        return value
    try:
        return spelling(canonical_method(value.strip().lower(), task), task)
    except IIFError:
        return value
