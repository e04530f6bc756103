"""Inverse Image Frequency weights (paper Eq. 10-12 and Table III), and the one table of their formulas.

Every variant maps a class count ``n_c`` and a normaliser ``K`` (so that ``p_c = n_c / K``, Eq. 11) to
one multiplicative weight ``w_c`` that is later applied to the class logit, ``z'_c = w_c * z_c``
(Eq. 13). :data:`VARIANT_TABLE` holds each formula once; the weights, the online IIF loss, the post-hoc
adjusters, the bench, detection and ``ClassFrequency.weight_table`` all evaluate it from here. The
formulas are the ones the authors' code computes (docs/method.md); the paper prints ``Phi^-1(K / IF)``
for normit, which is undefined for ``K / IF > 1``, so we use ``-Phi^-1(p)`` as the code does.

The arithmetic runs in float64; :func:`iif_weights` returns float32 unless asked for another dtype.
Each formula is written once and runs on whatever it is given: torch tensors (on any device: the online
loss) or numpy arrays. The library's results (:func:`iif_weights`, :func:`weights_from_counts`) are
evaluated by torch, as they always were; :func:`iif_weights_array` gives the same float32 values with
numpy alone, so ``iif weights`` starts without importing torch (issue 16, Performance).
"""

from __future__ import annotations

import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence, Union

import numpy as np

from .errors import IIFError

if TYPE_CHECKING:  # torch is imported where a tensor is made (about 2 s on a 2-core machine)
    import torch

__all__ = [
    "VARIANTS",
    "VARIANT_TABLE",
    "Variant",
    "iif_weights",
    "iif_weights_array",
    "weights_from_counts",
    "variant_formula",
    "as_counts",
    "as_weight_vector",
    "refuse_zero_counts",
    "canonical_variant",
]

Number = Union[float, "torch.Tensor"]
Array = Any  # a float64 torch.Tensor or numpy.ndarray: the formulas run on either


class Variant(NamedTuple):
    """One row of Table III: the formula as text, as a function of float64 ``(n, K)`` (tensors or numpy
    arrays, see :func:`_ops`), and whether it is finite for a class with ``n = 0``."""

    formula: str
    weight: Callable[[Array, Number], Array]
    finite_at_zero: bool


class _NumpyOps:
    """The functions the formulas call, for numpy arrays (``ndtri`` is scipy's, imported on first use)."""

    log, log2, log10, log1p = np.log, np.log2, np.log10, np.log1p

    @staticmethod
    def ndtri(p: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri

        return ndtri(p)


class _TorchOps:
    """The same functions for torch tensors (made once, when the first tensor arrives)."""

    def __init__(self, torch) -> None:
        self.log, self.log2, self.log10, self.log1p = torch.log, torch.log2, torch.log10, torch.log1p
        self.ndtri = torch.special.ndtri


_TORCH_OPS: list[_TorchOps] = []


def _ops(n: Array):
    """The namespace the formulas take ``log``/``log2``/``log10``/``log1p``/``ndtri`` from: torch's for a tensor
    (any device, any caller: the online loss, :func:`iif_weights`), numpy's otherwise."""
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported
    if torch is not None and isinstance(n, torch.Tensor):
        if not _TORCH_OPS:
            _TORCH_OPS.append(_TorchOps(torch))
        return _TORCH_OPS[0]
    return _NumpyOps


def _raw(n: Array, k: Number) -> Array:
    return _ops(n).log(k / n)


def _smooth(n: Array, k: Number) -> Array:
    return _ops(n).log((k + 1.0) / (n + 1.0)) + 1.0


def _relative(n: Array, k: Number) -> Array:
    return _ops(n).log((k - n) / n)


def _base2(n: Array, k: Number) -> Array:
    return _ops(n).log2(k / n)


def _base10(n: Array, k: Number) -> Array:
    return _ops(n).log10(k / n)


def _gombit(n: Array, k: Number) -> Array:
    xp = _ops(n)
    return -xp.log(-xp.log1p(-(n / k)))


def _normit(n: Array, k: Number) -> Array:
    return -_ops(n).ndtri(n / k)


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

CountsLike = Union[Sequence[float], np.ndarray, "torch.Tensor"]


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
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(counts, torch.Tensor):
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


def variant_formula(variant: str) -> Callable[[Array, Number], Array]:
    """The Table III formula of ``variant`` (aliases accepted) as a function of float64 tensors ``(n, K)``;
    no validation, so ``n = 0`` gives ``inf`` where the formula does (used on device by the online loss)."""
    return VARIANT_TABLE[canonical_variant(variant)].weight


def weights_from_counts(counts: np.ndarray, variant: str, total: float) -> np.ndarray:
    """The bare Table III formulas on float64 arrays, without validation (see :func:`iif_weights`).

    Evaluated by torch (imported here), so the float64 values are the ones this function always gave
    (numpy's ``k / n`` and ``log1p``/``ndtri`` may differ from torch's in the last bit).
    """
    import torch

    n = torch.from_numpy(np.array(counts, dtype=np.float64))
    return variant_formula(variant)(n, float(total)).numpy()


def _numpy_weights_from_counts(counts: np.ndarray, variant: str, total: float) -> np.ndarray:
    """:func:`weights_from_counts` evaluated by numpy (no torch): equal to it within a few float64 ulps."""
    with np.errstate(all="ignore"):  # n = 0 or n = K give inf/nan, refused by the caller, as torch does silently
        return np.asarray(variant_formula(variant)(np.array(counts, dtype=np.float64), float(total)), dtype=np.float64)


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
    import torch

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
    dtype: torch.dtype | None = None,
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
        dtype: of the result, ``torch.float32`` when None; computed in float64 either way (pass
            ``torch.float64`` to keep every digit, e.g. for float64 logits).

    Returns:
        tensor of shape ``(C,)``, or ``(C + 1,)`` with a background entry.
    """
    import torch

    w, _ = _weights64(weights_from_counts, counts, variant, total, background, background_weight, norm, allow_negative)
    return torch.as_tensor(w, dtype=torch.float32 if dtype is None else dtype)


def iif_weights_array(
    counts: CountsLike,
    variant: str = "smooth",
    total: float | None = None,
    background: str | None = None,
    background_weight: float = 1.0,
    norm: float | str | None = None,
    allow_negative: bool = False,
) -> np.ndarray:
    """The float32 weights :func:`iif_weights` returns (same arguments, same errors), as a numpy array and
    without importing torch where that gives the very same float32 values (``iif weights`` uses it).

    The formulas are evaluated by numpy, whose float64 results may differ from torch's in the last bits
    (torch computes ``K / n`` as ``(1 / n) * K``; ``log1p``, ``ndtri`` are other implementations). Rounded
    to float32 they are the same unless a weight lies within a hair (thousands of float64 ulps) of a point
    where float32 rounding changes; then, and for ``allow_negative`` (whose weights may
    cancel in a norm), torch evaluates them, so the values always equal ``iif_weights(...).numpy()``
    (:func:`_float32_is_certain` states the bound).
    """
    weigh = weights_from_counts if allow_negative else _numpy_weights_from_counts
    w, formula = _weights64(weigh, counts, variant, total, background, background_weight, norm, allow_negative)
    if weigh is _numpy_weights_from_counts and not _float32_is_certain(w, formula):
        w, _ = _weights64(weights_from_counts, counts, variant, total, background, background_weight, norm, allow_negative)
    return w.astype(np.float32)


def _float32_is_certain(w: np.ndarray, formula: np.ndarray) -> bool:
    """Whether torch's evaluation of the weights ``w`` (numpy's, positive) surely rounds to the same float32.

    Bound on how far torch's value of each formula output ``f`` may be from numpy's: ``2**-41 * |f|`` (4,096
    ulps; the libraries' logs, log1p and ndtri are accurate to a few) plus ``2**-48`` (the outer log of gombit
    near 0 turns a relative error of its argument into an absolute one). A mean or p-norm of positive weights
    adds at most the largest relative error again, so every ``w`` gets twice the largest relative bound; the
    answer is yes when the float64 interval ``w * (1 +- bound)`` holds a single float32.
    """
    if not (np.all(np.isfinite(w)) and np.all(formula > 0)):
        return False
    bound = 2.0 * float(np.max(2.0**-41 + 2.0**-48 / formula))
    margin = bound * np.abs(w)
    return bool(np.array_equal((w - margin).astype(np.float32), (w + margin).astype(np.float32)))


def _weights64(weigh: Callable[[np.ndarray, str, float], np.ndarray], counts: CountsLike, variant: str,
               total: float | None, background: str | None, background_weight: float, norm: float | str | None,
               allow_negative: bool) -> tuple[np.ndarray, np.ndarray]:
    """:func:`iif_weights` in float64 with the Table III formulas evaluated by ``weigh`` (torch's
    :func:`weights_from_counts` or numpy's): validation, formula, sign check, norm, background entry.
    Returns the weights and the formula's outputs (before norm and background)."""
    name = canonical_variant(variant)
    n = as_counts(counts)
    k = _checked_total(n, total)
    if not VARIANT_TABLE[name].finite_at_zero:
        refuse_zero_counts(
            n, f"Variant {name!r} is infinite", "use variant='smooth', which is finite for unseen classes, or drop those classes"
        )
    formula = weigh(n, name, k)
    _check_weights(formula, name, k, allow_negative)
    w = _normalised(formula, norm)
    if background is not None:
        w = _with_background(w, background, background_weight)
    return w, formula


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
        warnings.warn(msg + "using them because allow_negative=True.", stacklevel=4)  # the caller of iif_weights


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
