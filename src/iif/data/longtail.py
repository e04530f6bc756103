"""Long-tailed subsets of balanced datasets (the LDAM-DRW construction; docs/method.md#datasets-and-splits).

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

__all__ = ["PROFILES", "longtail_counts", "select_longtail", "split_per_class", "longtail_train_val",
           "check_nonempty", "held_out_counts", "missing_split_classes"]

PROFILES = ("exp", "step")


def longtail_counts(n_max: int, num_classes: int, ratio: float, profile: str = "exp") -> list[int]:
    """Images per class of a long-tailed split, class 0 the largest.

    ``exp``: ``n_i = int(n_max * ratio ** (-i / (C - 1)))`` (Cao et al. 2019); CIFAR-10-LT (5000, 10, 100)
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


def longtail_train_val(targets, counts: Sequence[int], seed: int, val_per_class: int,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Long-tailed train indices and a balanced validation set that holds every class, disjoint from train.

    Train: :func:`select_longtail` (``seed``), the LDAM-DRW draw. Validation: ``val_per_class`` images per
    class from the images that draw left out (:func:`split_per_class`, seed ``seed + 1``). A class with fewer
    images left than ``val_per_class`` (CIFAR-10/100-LT's head class takes every training image of its
    class) gives its missing validation images from the END of its own draw, so they leave the train split
    and the rest of the draw is unchanged; a class always keeps at least one training image.
    Returns ``(train_idx, val_idx or None, moved)`` where ``moved[c]`` counts the images class ``c`` gave
    up from its long-tailed draw (all zeros when ``val_per_class == 0``: the published split, untouched).
    """
    t = np.asarray(targets).astype(np.int64, copy=False)
    train_idx = select_longtail(t, counts, seed)
    moved = np.zeros(int(num_classes), dtype=np.int64)
    if not val_per_class:
        return train_idx, None, moved
    if int(val_per_class) < 0:
        raise IIFError(f"val_per_class must be >= 0 images per class; got {val_per_class}.")
    val_idx = split_per_class(t, val_per_class, seed + 1, exclude=train_idx, num_classes=num_classes)
    have = np.bincount(t[val_idx], minlength=num_classes)[:num_classes]
    drawn = np.bincount(t[train_idx], minlength=num_classes)[:num_classes]
    moved = np.clip(np.minimum(int(val_per_class) - have, drawn - 1), 0, None).astype(np.int64)
    if moved.any():
        keep = np.ones(train_idx.shape[0], dtype=bool)
        taken = []
        for c in np.nonzero(moved)[0]:
            # train_idx is grouped by class in drawn order: the class's last draws are its last positions.
            pos = np.nonzero(t[train_idx] == c)[0][-int(moved[c]):]
            keep[pos] = False
            taken.append(train_idx[pos])
        train_idx = train_idx[keep]
        val_idx = _merge_by_class(t, val_idx, taken)
    return train_idx, val_idx, moved


def _merge_by_class(targets: np.ndarray, val_idx: np.ndarray, extra: list[np.ndarray]) -> np.ndarray:
    """Validation indices grouped by class (stable within each class), with ``extra`` appended to theirs."""
    merged = np.concatenate([val_idx, *extra]).astype(np.int64)
    return merged[np.argsort(targets[merged], kind="stable")]


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


def held_out_counts(n: int, val_want: int, test_want: int, val: bool = True, test: bool = True) -> tuple[int, int, int]:
    """``(train, val, test)`` image counts of one class of ``n`` images split per class (docs/datasets.md,
    "How a single tree is split").

    Minimums first, in this order: train keeps 1 image; then validation gets 1 (when ``val`` and ``n >= 2``);
    then test gets 1 (when ``test`` and there is an image left beyond those two). Then test takes
    ``test_want`` (its fraction, at least its minimum) from what train and validation's minimum leave, and
    validation takes ``val_want`` (at least its minimum) from the rest; train keeps everything else. So
    ``n = 1, 2, 3, 4, 10`` with fractions 0.1 / 0.2 give ``(1,0,0), (1,1,0), (1,1,1), (2,1,1), (7,1,2)``;
    a class with 10 or more images (and those fractions) is split exactly by its fractions.
    """
    n = int(n)
    if n < 0 or int(val_want) < 0 or int(test_want) < 0:
        raise IIFError(f"held_out_counts needs counts >= 0; got n={n}, val_want={val_want}, test_want={test_want}.")
    if n == 0:
        return 0, 0, 0
    m_va = 1 if val and n >= 2 else 0
    m_te = 1 if test and n >= 2 + m_va else 0
    n_te = min(max(int(test_want), m_te), n - 1 - m_va) if test else 0
    n_va = min(max(int(val_want), m_va), n - 1 - n_te) if val else 0
    return n - n_va - n_te, n_va, n_te


def missing_split_classes(class_names: Sequence[str], val_targets=None, test_targets=None,
                          image_counts=None) -> str | None:
    """One line naming every class with no validation image (when ``val_targets`` is given) or no test
    image (when ``test_targets`` is given), or None when every class has both. ``image_counts``: the
    images each class has in all (shown beside its name)."""
    c = len(class_names)

    def empty(t):
        if t is None:
            return []
        return np.where(np.bincount(np.asarray(t, dtype=np.int64), minlength=c)[:c] == 0)[0].tolist()

    def named(idx):
        if image_counts is None:
            return ", ".join(str(class_names[i]) for i in idx)
        return ", ".join(f"{class_names[i]} ({int(image_counts[i])} image{'s' if int(image_counts[i]) != 1 else ''})"
                         for i in idx)

    no_val, no_test = empty(val_targets), empty(test_targets)
    if not no_val and not no_test:
        return None
    parts = []
    if no_val:
        parts.append(f"{len(no_val)} of {c} classes have no validation images: {named(no_val)}")
    if no_test:
        parts.append(f"{len(no_test)} of {c} classes have no test images: {named(no_test)}")
    return ("; ".join(parts) + ". Class-average accuracy on a split (and the bench's validation ranking) leaves such a "
            "class out: add images (a class of 3 or more images gets at least one in train, validation and test) or "
            "give val/ and test/ folders that hold every class.")
