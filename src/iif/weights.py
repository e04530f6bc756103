"""Inverse Image Frequency weights (paper Eq. 10-12 and Table III), and the one table of their formulas.

Every variant maps a class count ``n_c`` and a normaliser ``K`` (so that ``p_c = n_c / K``, Eq. 11) to
one multiplicative weight ``w_c`` that is later applied to the class logit, ``z'_c = w_c * z_c``
(Eq. 13). :data:`VARIANT_TABLE` holds each formula once; the weights, the online IIF loss, the post-hoc
adjusters, the bench, detection and ``ClassFrequency.weight_table`` all evaluate it from here. The
formulas are the ones the authors' code computes (docs/method.md); the paper prints ``Phi^-1(K / IF)``
for normit, which is undefined for ``K / IF > 1``, so we use ``-Phi^-1(p)`` as the code does.

The arithmetic runs in float64; :func:`iif_weights` returns float32 unless asked for another dtype.
"""

from __future__ import annotations

import warnings
from typing import Callable, NamedTuple, Sequence, Union

import numpy as np
import torch

from .errors import IIFError

__all__ = [
    "VARIANTS",
    "VARIANT_TABLE",
    "Variant",
    "iif_weights",
    "weights_from_counts",
    "variant_formula",
    "as_counts",
    "as_weight_vector",
    "refuse_zero_counts",
    "canonical_variant",
]

Number = Union[float, torch.Tensor]


class Variant(NamedTuple):
    """One row of Table III: the formula as text, as a function of float64 ``(n, K)`` tensors, and whether
    it is finite for a class with ``n = 0``."""

    formula: str
    weight: Callable[[torch.Tensor, Number], torch.Tensor]
    finite_at_zero: bool


def _raw(n: torch.Tensor, k: Number) -> torch.Tensor:
    return torch.log(k / n)


def _smooth(n: torch.Tensor, k: Number) -> torch.Tensor:
    return torch.log((k + 1.0) / (n + 1.0)) + 1.0


def _relative(n: torch.Tensor, k: Number) -> torch.Tensor:
    return torch.log((k - n) / n)


def _base2(n: torch.Tensor, k: Number) -> torch.Tensor:
    return torch.log2(k / n)


def _base10(n: torch.Tensor, k: Number) -> torch.Tensor:
    return torch.log10(k / n)


def _gombit(n: torch.Tensor, k: Number) -> torch.Tensor:
    return -torch.log(-torch.log1p(-(n / k)))


def _normit(n: torch.Tensor, k: Number) -> torch.Tensor:
    return -torch.special.ndtri(n / k)


#: Table III, one entry per variant (in the paper's order): ``VARIANT_TABLE[name].weight(n, K)``.
VARIANT_TABLE: dict[str, Variant] = {
    "raw": Variant("ln(K / n)", _raw, False),
    "smooth": Variant("ln((K + 1) / (n + 1)) + 1", _smooth, True),
    "relative": Variant("ln((K - n) / n)", _relative, False),
    "base2": Variant("log2(K / n)", _base2, False),
    "base10": Variant("log10(K / n)", _base10, False),
    "gombit": Variant("-ln(-ln(1 - n / K))", _gombit, False),
    "normit": Variant("-Phi^-1(n / K)", _normit, False),
}

VARIANTS: tuple[str, ...] = tuple(VARIANT_TABLE)

# Aliases used by the authors' code: ``rel`` (classification) and ``prob`` (detection tables).
_ALIASES = {"rel": "relative", "prob": "relative"}

CountsLike = Union[Sequence[float], np.ndarray, torch.Tensor]


def canonical_variant(variant: str) -> str:
    """Return the canonical name of ``variant`` (accepting the official aliases) or raise."""
    name = _ALIASES.get(str(variant).lower(), str(variant).lower())
    if name not in VARIANT_TABLE:
        raise IIFError(f"Unknown IIF variant {variant!r}, expected one of {VARIANTS} (or the aliases 'rel', 'prob').")
    return name


def as_counts(counts: CountsLike, what: str = "counts") -> np.ndarray:
    """Validate per-class counts and return them as a 1-D float64 array.

    Counts must be finite, non-negative whole numbers; anything else is a bad input with a message
    naming the offending classes.
    """
    if isinstance(counts, torch.Tensor):
        arr = counts.detach().cpu().double().numpy()
    else:
        try:
            arr = np.asarray(counts, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise IIFError(f"{what} must be numbers, one per class; got {counts!r:.80}") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise IIFError(f"{what} must be a non-empty 1-D sequence with one entry per class; got shape {arr.shape}.")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise IIFError(f"{what} contain NaN or inf at classes {_fmt_idx(bad)}; counts must be finite.")
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        raise IIFError(f"{what} are negative at classes {_fmt_idx(bad)}; counts must be >= 0.")
    bad = np.flatnonzero(arr != np.round(arr))
    if bad.size:
        raise IIFError(
            f"{what} are not whole numbers at classes {_fmt_idx(bad)} (e.g. {arr[bad[0]]}); "
            "pass the number of images (or instances) per class."
        )
    bad = np.flatnonzero(arr > 2.0**53)
    if bad.size:
        raise IIFError(f"{what} are above 2**53 at classes {_fmt_idx(bad)} (e.g. {arr[bad[0]]:.6g}); counts that large "
                       "are not exact in float64 and no dataset has them: pass the number of images per class.")
    return arr


def _fmt_idx(idx: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return f"[{shown}{', ...' if idx.size > limit else ''}] ({idx.size} in all)"


def variant_formula(variant: str) -> Callable[[torch.Tensor, Number], torch.Tensor]:
    """The Table III formula of ``variant`` (aliases accepted) as a function of float64 tensors ``(n, K)``;
    no validation, so ``n = 0`` gives ``inf`` where the formula does (used on device by the online loss)."""
    return VARIANT_TABLE[canonical_variant(variant)].weight


def weights_from_counts(counts: np.ndarray, variant: str, total: float) -> np.ndarray:
    """The bare Table III formulas on float64 arrays, without validation (see :func:`iif_weights`)."""
    n = torch.from_numpy(np.array(counts, dtype=np.float64))
    return variant_formula(variant)(n, float(total)).numpy()


def refuse_zero_counts(counts: np.ndarray, why: str, fix: str = "drop the unseen classes or add 1 to every count") -> None:
    """Raise :class:`IIFError` naming the classes whose count is 0, for quantities infinite there.

    ``why`` says what is infinite (e.g. ``"ln(n) is -inf"``); the message reads
    ``"<why> for classes with zero count [i, ...] (k in all); <fix>."``
    """
    zero = np.flatnonzero(np.asarray(counts) == 0)
    if zero.size:
        raise IIFError(f"{why} for classes with zero count {_fmt_idx(zero)}; {fix}.")


def as_weight_vector(values, what: str = "weights") -> torch.Tensor:
    """A non-empty 1-D tensor of finite per-class values that keeps float64 (other dtypes become float32)."""
    t = torch.as_tensor(values).detach()
    if t.dim() != 1 or t.numel() == 0:
        raise IIFError(f"{what} must be a non-empty 1-D vector with one entry per class; got shape {tuple(t.shape)}.")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    bad = torch.nonzero(~torch.isfinite(t)).flatten()
    if bad.numel():
        raise IIFError(f"{what} contain NaN or inf at classes {_fmt_idx(bad.cpu().numpy())}; pass finite values.")
    return t


def iif_weights(
    counts: CountsLike,
    variant: str = "smooth",
    total: float | None = None,
    background: str | None = None,
    background_weight: float = 1.0,
    norm: float | str | None = None,
    allow_negative: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-class IIF weights ``w_c`` (paper Eq. 12 and Table III, formulas in :data:`VARIANT_TABLE`).

    Args:
        counts: per-class image frequencies ``IF_c`` (or object frequencies for IOF), length ``C``.
        variant: one of :data:`VARIANTS`: ``raw`` ln(K/n), ``smooth`` ln((K+1)/(n+1)) + 1,
            ``relative`` ln((K-n)/n), ``base2`` log2(K/n), ``base10`` log10(K/n),
            ``gombit`` -ln(-ln(1-p)), ``normit`` -Phi^-1(p), with ``p = n / K``.
        total: the normaliser ``K``. Default: ``sum(counts)`` (paper Eq. 11, the classification code).
            The official detection tables use the number of training images (IIF) or instances (IOF).
        background: ``None`` for a plain classifier, or ``"first"`` / ``"last"`` to insert the
            background class's weight at index 0 (torchvision) or ``C`` (mmdetection).
        background_weight: weight of the background logit, 1.0 keeps it unaltered (paper section IV-A.3).
        norm: ``"mean"`` divides the foreground weights by their mean (unit mean: the recommended form for
            end-to-end training, docs/method.md#iif-loss); a number ``p`` divides them by their p-norm
            (the authors' ``--iif_norm p``); ``None`` (default) keeps the paper's weights.
        allow_negative: negative weights flip the sign of a logit, so they are refused unless this
            is True (relative/normit/gombit give them when a class holds a large share of ``K``).
        dtype: of the result; computed in float64 either way (pass ``torch.float64`` to keep every digit,
            e.g. for float64 logits).

    Returns:
        tensor of shape ``(C,)``, or ``(C + 1,)`` with a background entry.
    """
    name = canonical_variant(variant)
    n = as_counts(counts)
    k = _checked_total(n, total)
    if not VARIANT_TABLE[name].finite_at_zero:
        refuse_zero_counts(
            n, f"Variant {name!r} is infinite", "use variant='smooth', which is finite for unseen classes, or drop those classes"
        )
    w = weights_from_counts(n, name, k)
    _check_weights(w, name, k, allow_negative)
    w = _normalised(w, norm)
    if background is not None:
        w = _with_background(w, background, background_weight)
    return torch.as_tensor(w, dtype=dtype)


def _checked_total(n: np.ndarray, total: float | None) -> float:
    """The normaliser K of :func:`iif_weights` (paper Eq. 11): ``total``, or ``sum(n)``; refused when it is not
    a positive finite number or is below a class count."""
    if total is None:
        k = float(n.sum())
    else:
        try:
            k = float(total)
        except (TypeError, ValueError):
            raise IIFError(f"total (K) must be a positive number; got {total!r}.") from None
        if not np.isfinite(k) or k <= 0:
            raise IIFError(f"total (K) must be a positive finite number; got {total!r}.")
    if k <= 0:
        raise IIFError("All class counts are zero: there is nothing to compute weights from.")
    over = np.flatnonzero(n > k)
    if over.size:
        raise IIFError(
            f"total K={k:g} is smaller than the count of classes {_fmt_idx(over)}; "
            "K must be at least the largest class count (e.g. the number of training images)."
        )
    return k


def _check_weights(w: np.ndarray, name: str, k: float, allow_negative: bool) -> None:
    """Refuse non-finite weights, and non-positive ones (which flip a logit's sign) unless ``allow_negative``,
    which warns instead (the warning points at the caller of :func:`iif_weights`)."""
    bad = np.flatnonzero(~np.isfinite(w))
    if bad.size:
        raise IIFError(
            f"Variant {name!r} gives non-finite weights for classes {_fmt_idx(bad)} "
            f"(a class count equal to K={k:g}); use variant='smooth' or a larger total."
        )
    neg = np.flatnonzero(w <= 0) if name != "smooth" else np.empty(0, dtype=np.int64)
    if neg.size:
        msg = (
            f"Variant {name!r} gives non-positive weights for classes {_fmt_idx(neg)}, which would flip or "
            f"zero the sign of their logits (classes holding a large share of K={k:g}); "
        )
        if not allow_negative:
            raise IIFError(msg + "use 'smooth' or 'raw', or pass allow_negative=True if you mean it.")
        warnings.warn(msg + "using them because allow_negative=True.", stacklevel=3)


def _normalised(w: np.ndarray, norm: float | str | None) -> np.ndarray:
    """``w`` with unit mean (``norm="mean"``), unit p-norm (a number ``p``) or as it is (None)."""
    if isinstance(norm, str) and norm == "mean":
        # Unit mean: the loss keeps the model's logit scale and Eq. 16's gradient scale on average
        # (docs/method.md#iif-loss); the ratios w_c / w_c', all that IIF's argmax depends on, are unchanged.
        return w / w.mean()
    if norm is not None:
        try:
            p = float(norm)
        except (TypeError, ValueError):
            p = float("nan")
        if not p > 0:
            raise IIFError(f"norm must be 'mean' (unit-mean weights) or a positive number (the p of the p-norm); got {norm!r}.")
        return w / np.linalg.norm(w, ord=p)
    return w


def _with_background(w: np.ndarray, background: str, background_weight: float) -> np.ndarray:
    """``w`` with the background class's weight inserted first (torchvision) or last (mmdetection)
    (paper section IV-A.3: 1.0 keeps the background logit unaltered)."""
    try:
        bw = np.array([float(background_weight)])
    except (TypeError, ValueError):
        bw = np.array([np.nan])
    if not np.isfinite(bw[0]):
        raise IIFError(f"background_weight must be a finite number (1.0 keeps the background logit); got {background_weight!r}.")
    if background == "first":
        return np.concatenate([bw, w])
    if background == "last":
        return np.concatenate([w, bw])
    raise IIFError(f"background must be None, 'first' or 'last'; got {background!r}.")
