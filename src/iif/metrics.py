"""Long-tail metrics: top-1, class-average and shot-group accuracy, calibration (ECE/MCE), NLL.

Everything here works on plain logits, so the same code scores a trained model, a post-processed
(``w * z``, paper Eq. 13-14) output or logits a user already has. Inputs may be torch tensors or numpy
arrays; arithmetic runs in float64 numpy.

Conventions (docs/method.md, "Metrics"):

* Shot groups come from the *training* count of each class: many-shot ``n > many``, few-shot
  ``n < few``, medium-shot otherwise (``few <= n <= many``). The thresholds come from one rule,
  :func:`shot_thresholds`, used by ``iif train``, ``iif eval``, ``iif bench`` and ``iif stats``: 100 and 20
  (the OLTR/decoupling convention of the paper's Tables V-X), or 50 and 15 when no class has more than 100
  training images (a small dataset such as digits-LT, where "> 100" would leave the many-shot group empty).
* A group's accuracy is the mean of the per-class accuracies of its classes that have test samples
  (the OLTR/decoupling convention; on a balanced test set it equals the sample average). ``None`` when
  no class of the group has a test sample.
* ECE / MCE use ``bins`` equal-width bins on the softmax max-probability (confidence). Bin ``b`` holds
  confidences in ``(b/B, (b+1)/B]``; a confidence of exactly 0 goes to the first bin.
  ``ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``, ``MCE = max_b |acc(B_b) - conf(B_b)|`` over
  non-empty bins (Guo et al. 2017).
* Accuracies, ECE and MCE are in percent; NLL is the mean negative log-likelihood in nats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence, Union

import sys

import numpy as np

from .errors import IIFError

if TYPE_CHECKING:
    import torch

__all__ = [
    "SHOT_GROUPS",
    "SHOT_THRESHOLDS",
    "SMALL_SHOT_THRESHOLDS",
    "shot_thresholds",
    "check_logits_labels",
    "accuracy",
    "per_class_accuracy",
    "shot_groups",
    "shot_group_accuracy",
    "reliability_bins",
    "calibration_errors",
    "nll",
    "evaluate_logits",
]

SHOT_GROUPS: tuple[str, ...] = ("many", "medium", "few")
#: ``(many, few)``: many-shot ``n > 100``, few-shot ``n < 20`` training images (paper Tables V-X).
SHOT_THRESHOLDS: tuple[int, int] = (100, 20)
#: ``(many, few)`` when no class has more than 100 training images (otherwise the many-shot group is empty).
SMALL_SHOT_THRESHOLDS: tuple[int, int] = (50, 15)

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence]


def _to_numpy(x: ArrayLike, dtype=None) -> np.ndarray:
    # torch is not imported here (``iif stats`` needs only numpy; importing torch costs about 2 s): a tensor
    # can only exist once torch is imported, so sys.modules tells whether ``x`` may be one.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def check_logits_labels(logits: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``logits (N, C)`` and ``labels (N,)``; return them as float64 / int64 numpy arrays.

    Raises :class:`IIFError` for a wrong shape, mismatched lengths, NaN/inf logits, non-integer labels
    or labels outside ``[0, C)``, and (when given) a class count that differs from ``num_classes``.
    """
    try:
        z = _to_numpy(logits, np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise IIFError(f"logits must be numbers (float array of shape (samples, classes)); cannot convert them ({exc}).") from None
    try:
        y = _to_numpy(labels)
    except (TypeError, ValueError) as exc:
        raise IIFError(f"labels must be integer class indices; cannot convert them ({exc}).") from None
    if y.dtype.kind not in "biuf":
        raise IIFError(f"labels must be integer class indices; got values of type {y.dtype}. Save them as an integer array.")
    if z.ndim != 2:
        raise IIFError(f"logits must be a 2-D array (samples, classes); got shape {z.shape}. Save one row of class scores per sample.")
    if y.ndim != 1:
        raise IIFError(f"labels must be a 1-D array with one class index per sample; got shape {y.shape}.")
    if z.shape[0] != y.shape[0]:
        raise IIFError(f"logits have {z.shape[0]} rows but labels have {y.shape[0]} entries; pass one label per logit row.")
    if z.shape[0] == 0:
        raise IIFError("logits and labels are empty; pass at least one sample.")
    bad = np.flatnonzero(~np.isfinite(z).all(axis=1))
    if bad.size:
        raise IIFError(f"logits contain NaN or inf in {bad.size} rows (first row {int(bad[0])}); fix or drop those samples.")
    if not np.issubdtype(y.dtype, np.integer):
        yf = y.astype(np.float64)
        if not np.all(np.isfinite(yf)) or np.any(yf != np.round(yf)):
            raise IIFError("labels must be whole class indices; found non-integer values.")
    if y.size and (y.max() > np.iinfo(np.int64).max // 2 or y.min() < -(2**62)):
        raise IIFError(f"labels must be class indices; found {float(y.max() if y.max() > 0 else y.min()):.6g}.")
    y = y.astype(np.int64)
    c = z.shape[1]
    if num_classes is not None and c != num_classes:
        raise IIFError(f"logits have {c} classes but the training counts have {num_classes}; pass counts with one entry per logit column.")
    out = np.flatnonzero((y < 0) | (y >= c))
    if out.size:
        raise IIFError(f"labels must be in [0, {c - 1}] for {c} classes; found {int(y[out[0]])} ({out.size} out of range).")
    return z, y


def accuracy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy in percent: share of samples whose arg-max logit is the label."""
    z, y = check_logits_labels(logits, labels)
    return float(100.0 * np.mean(z.argmax(axis=1) == y))


def per_class_accuracy(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per-class top-1 accuracy in percent, shape ``(C,)``; NaN for a class with no sample."""
    z, y = check_logits_labels(logits, labels)
    c = z.shape[1]
    correct = np.bincount(y, weights=(z.argmax(axis=1) == y).astype(np.float64), minlength=c)
    total = np.bincount(y, minlength=c).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 100.0 * correct / np.maximum(total, 1.0), np.nan)


def shot_thresholds(train_counts: ArrayLike, many: int | None = None, few: int | None = None) -> tuple[int, int]:
    """The shot-group thresholds ``(many, few)`` for these training counts: the one rule of the library.

    :data:`SHOT_THRESHOLDS` (100, 20), or :data:`SMALL_SHOT_THRESHOLDS` (50, 15) when no class has more
    than 100 training images. A threshold given explicitly (not None) replaces the rule's value for it.
    Raises :class:`IIFError` for counts that are not a non-empty 1-D list, a negative threshold, or
    ``few > many``.
    """
    n = _to_numpy(train_counts, np.float64)
    if n.ndim != 1 or n.size == 0:
        raise IIFError(f"train_counts must be a non-empty 1-D list with one count per class; got shape {n.shape}.")
    rule = SMALL_SHOT_THRESHOLDS if float(np.nanmax(n)) <= SHOT_THRESHOLDS[0] else SHOT_THRESHOLDS
    many = rule[0] if many is None else many
    few = rule[1] if few is None else few
    for name, value in (("many", many), ("few", few)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise IIFError(f"the {name}-shot threshold must be a whole number >= 0; got {value!r}.")
    if few > many:
        raise IIFError(f"shot-group thresholds: few ({few}) must not exceed many ({many}); leave them unset for "
                       "the default rule (100 and 20, or 50 and 15 when no class has more than 100 images).")
    return int(many), int(few)


def shot_groups(train_counts: ArrayLike, many: int | None = None, few: int | None = None) -> dict[str, np.ndarray]:
    """Class indices of each shot group by training count: many ``> many``, few ``< few``, medium otherwise.

    ``many`` / ``few`` default to :func:`shot_thresholds`' rule for these counts.
    """
    many, few = shot_thresholds(train_counts, many, few)
    n = _to_numpy(train_counts, np.float64)
    return {
        "many": np.flatnonzero(n > many),
        "medium": np.flatnonzero((n >= few) & (n <= many)),
        "few": np.flatnonzero(n < few),
    }


def shot_group_accuracy(per_class: ArrayLike, train_counts: ArrayLike, many: int | None = None,
                        few: int | None = None) -> dict[str, float | None]:
    """Mean per-class accuracy of each shot group; ``None`` when the group has no class with test samples."""
    acc = _to_numpy(per_class, np.float64)
    groups = shot_groups(train_counts, many, few)
    if acc.shape[0] != _to_numpy(train_counts).shape[0]:
        raise IIFError(f"per-class accuracy has {acc.shape[0]} classes but train_counts has {_to_numpy(train_counts).shape[0]}.")
    out: dict[str, float | None] = {}
    for name, idx in groups.items():
        vals = acc[idx]
        vals = vals[np.isfinite(vals)]
        out[name] = float(vals.mean()) if vals.size else None
    return out


def _confidence_correct(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import log_softmax

    logp = log_softmax(logits, axis=1)
    conf = np.exp(logp.max(axis=1))
    correct = (logits.argmax(axis=1) == labels).astype(np.float64)
    return conf, correct


def reliability_bins(logits: ArrayLike, labels: ArrayLike, bins: int = 10) -> dict[str, np.ndarray]:
    """Per-bin statistics of a reliability diagram on ``bins`` equal-width confidence bins.

    Returns ``edges`` (``bins + 1``), ``count`` (samples per bin), ``accuracy`` and ``confidence``
    (fractions in [0, 1], NaN for an empty bin).
    """
    if int(bins) < 1:
        raise IIFError(f"bins must be a positive integer; got {bins!r}.")
    z, y = check_logits_labels(logits, labels)
    conf, correct = _confidence_correct(z, y)
    bins = int(bins)
    # Right-closed bins (b/B, (b+1)/B]: ceil(conf * B) - 1, with conf == 0 sent to bin 0.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=correct, minlength=bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "accuracy": acc, "confidence": mean_conf}


def calibration_errors(logits: ArrayLike, labels: ArrayLike, bins: int = 10) -> tuple[float, float]:
    """Expected and maximum calibration error ``(ECE, MCE)`` in percent (Guo et al. 2017)."""
    rb = reliability_bins(logits, labels, bins)
    filled = rb["count"] > 0
    gap = np.abs(rb["accuracy"][filled] - rb["confidence"][filled])
    weight = rb["count"][filled] / rb["count"].sum()
    return float(100.0 * np.sum(weight * gap)), float(100.0 * gap.max())


def nll(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood (cross-entropy of the softmax) in nats."""
    z, y = check_logits_labels(logits, labels)
    from scipy.special import log_softmax

    return float(-np.mean(log_softmax(z, axis=1)[np.arange(y.size), y]))


def evaluate_logits(
    logits: ArrayLike,
    labels: ArrayLike,
    train_counts: ArrayLike,
    many: int | None = None,
    few: int | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """All long-tail metrics of one set of logits.

    Args:
        logits: ``(N, C)`` class scores (torch or numpy), already adjusted if a method adjusts them.
        labels: ``(N,)`` true class indices.
        train_counts: ``(C,)`` training images per class; defines the shot groups.
        many, few: shot-group thresholds (many ``> many``, few ``< few``); None: :func:`shot_thresholds`' rule.
        bins: number of equal-width confidence bins for ECE / MCE.

    Returns:
        dict with ``top1``, ``class_avg``, ``many``, ``medium``, ``few`` (percent; a group is ``None``
        when empty), ``per_class`` (list of percent, ``None`` for a class without test samples),
        ``ece``, ``mce`` (percent) and ``nll`` (nats).
    """
    counts = _to_numpy(train_counts, np.float64)
    if counts.ndim != 1:
        raise IIFError(f"train_counts must be a 1-D list with one count per class; got shape {counts.shape}.")
    z, y = check_logits_labels(logits, labels, num_classes=counts.shape[0])
    pc = per_class_accuracy(z, y)
    groups = shot_group_accuracy(pc, counts, many, few)
    ece, mce = calibration_errors(z, y, bins)
    present = np.isfinite(pc)
    return {
        "top1": accuracy(z, y),
        "class_avg": float(pc[present].mean()),
        "many": groups["many"],
        "medium": groups["medium"],
        "few": groups["few"],
        "per_class": [float(v) if np.isfinite(v) else None for v in pc],
        "ece": ece,
        "mce": mce,
        "nll": nll(z, y),
    }
