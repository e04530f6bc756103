"""Long-tailed subsets of balanced datasets (SPEC section 5, the LDAM-DRW construction).

``longtail_counts`` gives the number of training images per class and ``select_longtail`` picks which
images, exactly as the LDAM-DRW code (Cao et al., 2019) that the paper's CIFAR-LT numbers build on:
``np.random.seed(seed)``, then for each class in order ``np.where(targets == c)``, shuffle, keep the first
``n_c``. We use a private ``np.random.RandomState(seed)``, which draws the same stream as the seeded
global generator without touching global state.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import IIFError

__all__ = ["PROFILES", "longtail_counts", "select_longtail", "split_per_class", "check_nonempty"]

PROFILES = ("exp", "step")


def longtail_counts(n_max: int, num_classes: int, ratio: float, profile: str = "exp") -> list[int]:
    """Images per class of a long-tailed split, class 0 the largest.

    ``exp``: ``n_i = int(n_max * ratio ** (-i / (C - 1)))`` (SPEC section 5); CIFAR-10-LT (5000, 10, 100)
    totals 12,406 and CIFAR-100-LT (500, 100, 100) totals 10,847.
    ``step``: the first ``C // 2`` classes get ``n_max``, the rest ``int(n_max / ratio)`` (Cui et al.).
    ``ratio`` is ``n_max / n_min`` (the imbalance ratio); ``ratio == 1`` gives a balanced split.
    """
    if int(num_classes) < 1:
        raise IIFError(f"num_classes must be >= 1; got {num_classes}.")
    if int(n_max) < 1:
        raise IIFError(f"n_max must be >= 1 image per class; got {n_max}.")
    if not np.isfinite(ratio) or ratio < 1:
        raise IIFError(f"imbalance ratio must be a number >= 1 (n_max / n_min); got {ratio!r}.")
    c = int(num_classes)
    if profile == "exp":
        if c == 1:
            return [int(n_max)]
        # Same float expression as the LDAM-DRW code so int() truncates identically.
        return [int(n_max * (1.0 / ratio) ** (i / (c - 1.0))) for i in range(c)]
    if profile == "step":
        head = c // 2
        return [int(n_max)] * head + [int(n_max / ratio)] * (c - head)
    raise IIFError(f"unknown long-tail profile {profile!r}; use one of {', '.join(PROFILES)}.")


def select_longtail(targets, counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of a long-tailed subset: ``counts[c]`` images of class ``c``, picked with numpy ``seed``.

    Follows the LDAM-DRW construction (seed once, then per class: ``where``, shuffle, take the first
    ``n``), so CIFAR-LT subsets match the published ones. Classes with fewer images than asked for give
    all they have. Returns int64 indices grouped by class, in the drawn order.
    """
    t = np.asarray(targets).astype(np.int64, copy=False)
    if t.ndim != 1:
        raise IIFError(f"targets must be 1-D; got shape {t.shape}.")
    rng = np.random.RandomState(int(seed))
    picked = []
    for c, n in enumerate(counts):
        if int(n) < 0:
            raise IIFError(f"count for class {c} is negative ({n}); counts must be >= 0.")
        idx = np.where(t == c)[0]
        rng.shuffle(idx)
        picked.append(idx[: int(n)])
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def split_per_class(targets, per_class: int, seed: int, exclude=None, num_classes: int | None = None) -> np.ndarray:
    """Up to ``per_class`` indices of each class, drawn with ``seed`` from the indices not in ``exclude``.

    Used for balanced validation splits taken from the training images a long-tailed subset left out,
    so validation never overlaps training.
    """
    t = np.asarray(targets).astype(np.int64, copy=False)
    mask = np.ones(t.shape[0], dtype=bool)
    if exclude is not None and len(exclude):
        mask[np.asarray(exclude, dtype=np.int64)] = False
    c = int(num_classes) if num_classes is not None else (int(t.max()) + 1 if t.size else 0)
    rng = np.random.RandomState(int(seed))
    out = []
    for k in range(c):
        idx = np.where((t == k) & mask)[0]
        rng.shuffle(idx)
        out.append(idx[: int(per_class)])
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def check_nonempty(targets, num_classes: int, class_names: Sequence[str] | None = None, split: str = "train") -> None:
    """Raise IIFError naming every class with zero images in ``split`` (weights like IIF need n_c > 0)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
    empty = np.where(counts[:num_classes] == 0)[0]
    if empty.size:
        names = [class_names[i] if class_names else str(i) for i in empty]
        shown = ", ".join(f"{i} ({n})" for i, n in zip(empty[:20].tolist(), names[:20]))
        more = f" and {empty.size - 20} more" if empty.size > 20 else ""
        raise IIFError(
            f"the {split} split has no images for {empty.size} class(es): {shown}{more}. Every class needs at "
            "least one training image: add images for these classes, lower the imbalance ratio, or drop them "
            "from the label set.")
