"""``folder``: any ImageFolder tree (``root/<class>/<image>``), optionally made long-tailed.

Layouts: ``root/train/<class>/...`` with optional ``root/val/`` and ``root/test/`` (same class folder names);
or a single tree ``root/<class>/...`` split per class deterministically into train/val/test by
``val_fraction`` / ``test_fraction``. Class indices follow sorted folder names of the train tree.
"""

from __future__ import annotations

import os

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from ..errors import IIFError
from .lists import FileListDataset
from .longtail import longtail_counts, select_longtail
from .splits import DatasetSplits, finish_splits
from .transforms import NORMALIZE, build_transform

__all__ = ["build_folder"]


def _scan(tree: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    extra = sorted(set(find_classes(tree)[0]) - set(class_to_idx))
    if extra:
        raise IIFError(f"{tree} has class folder(s) {', '.join(extra[:10])} that the train tree lacks; use the same "
                       "class folder names in train/, val/ and test/.")
    return make_dataset(tree, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)


def build_folder(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
                 *, image_size: int = 224, val_fraction: float = 0.1, test_fraction: float = 0.2, **tf_kw
                 ) -> DatasetSplits:
    """Splits of an ImageFolder tree.

    ``imbalance_ratio`` (None: keep the tree as it is) subsamples the train split to an exp/step long tail
    with ``n_max`` = the largest train class and class 0 (first folder name) the head; a class that has fewer
    images than its target count keeps all of them. ``val_per_class``: in the single-tree layout, that many
    images per class go to val instead of ``val_fraction``; with ``train/`` but no ``val/``, val takes that
    many per class from the train images the long tail left out. Splits use numpy seed ``seed``.
    """
    if root is None or not os.path.isdir(os.path.expanduser(str(root))):
        raise IIFError(f"dataset 'folder' needs root= an existing image folder; got {root!r}.")
    root = os.path.expanduser(str(root))
    extra = {k: tf_kw.pop(k) for k in ("policy", "randaugment_n", "randaugment_m", "cutout") if k in tf_kw}
    if tf_kw:
        raise IIFError(f"dataset 'folder' does not take option(s) {', '.join(sorted(tf_kw))}.")
    split_tree = os.path.isdir(os.path.join(root, "train"))
    train_root = os.path.join(root, "train") if split_tree else root
    try:
        names, class_to_idx = find_classes(train_root)
    except FileNotFoundError as e:
        raise IIFError(f"{train_root} has no class sub-folders ({e}); lay it out as <class>/<image>.") from None
    c = len(names)
    samples = _scan(train_root, class_to_idx)
    targets = np.array([y for _, y in samples], dtype=np.int64)
    rng = np.random.RandomState(int(seed))
    val_s = test_s = None
    if split_tree:
        if os.path.isdir(os.path.join(root, "val")):
            val_s = _scan(os.path.join(root, "val"), class_to_idx)
        if os.path.isdir(os.path.join(root, "test")):
            test_s = _scan(os.path.join(root, "test"), class_to_idx)
        train_idx = np.arange(len(samples))
    else:
        train_idx, va, te = [], [], []
        for k in range(c):
            idx = np.where(targets == k)[0]
            rng.shuffle(idx)
            n_te = int(len(idx) * test_fraction)
            n_va = int(val_per_class) if val_per_class is not None else int(len(idx) * val_fraction)
            te.append(idx[:n_te]), va.append(idx[n_te:n_te + n_va]), train_idx.append(idx[n_te + n_va:])
        train_idx = np.concatenate(train_idx) if c else np.zeros(0, np.int64)
        test_s = [samples[i] for i in np.concatenate(te)]
        val_s = [samples[i] for i in np.concatenate(va)]
    pool = train_idx
    if imbalance_ratio is not None:
        n_per = np.bincount(targets[pool], minlength=c)
        counts = longtail_counts(int(n_per.max()) if n_per.size else 1, c, imbalance_ratio, profile)
        chosen = select_longtail(targets[pool], counts, seed)
        train_idx = pool[chosen]
    if val_per_class is not None and val_s is None:
        left = np.setdiff1d(pool, train_idx)
        va = []
        for k in range(c):
            idx = left[targets[left] == k]
            rng.shuffle(idx)
            va.append(idx[: int(val_per_class)])
        val_s = [samples[i] for i in np.concatenate(va)] if c else []
    mean, std = NORMALIZE["folder"]
    train_tf = build_transform(augment, mean, std, train=True, image_size=image_size, kind="pil", **extra)
    eval_tf = build_transform("none", mean, std, train=False, image_size=image_size, kind="pil")
    train = FileListDataset([samples[i] for i in train_idx], train_tf, names)
    val = FileListDataset(val_s, eval_tf, names) if val_s else None
    test = FileListDataset(test_s, eval_tf, names) if test_s else None
    return finish_splits("folder", train, val, test, c, 3, image_size, names, mean, std)
