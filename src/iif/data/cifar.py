"""``cifar10-lt`` / ``cifar100-lt``: LDAM-DRW long-tailed CIFAR (docs/method.md#datasets-and-splits).

Validation holds every class: the head class uses all of its class's training images in the published
draw (5,000 of CIFAR-10's 5,000; 500 of CIFAR-100's 500), so its validation images come off the end of
its draw (:func:`iif.data.longtail.longtail_train_val`). With the defaults that costs the published train
split 100 (CIFAR-10-LT) or 20 (CIFAR-100-LT) head-class images: 12,306 / 10,827 training images instead of
12,406 / 10,847. ``val_per_class=0`` keeps the published split exactly and builds no validation set.

On disk: CIFAR's python release as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``:
``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``root/cifar-100-python/{train, test, meta}``, each a pickled dict with ``data`` (uint8 ``(N, 3072)``, CHW
order), ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). ``download=True`` fetches and md5-checks the
archive through ``torchvision.datasets.CIFAR10/100``. We then read the pickles ourselves: torchvision's
classes refuse any file whose md5 differs from the official one, which would rule out testing the
construction on small fixtures written in the same format.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import IIFError
from .restricted_unpickle import load_data_pickle
from ._small import check_kwargs, longtail_tensor_splits
from ._small import download as download_dataset
from .splits import DatasetSplits

__all__ = ["read_cifar", "build_cifar10_lt", "build_cifar100_lt", "CIFAR_DEFAULTS"]

# n_max and validation images per class (from the training images the LT draw left out; the head class,
# which has none left, gives its validation images from the end of its draw).
CIFAR_DEFAULTS = {10: {"n_max": 5000, "val_per_class": 100}, 100: {"n_max": 500, "val_per_class": 20}}
_LAYOUT = {
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
         "labels", "label_names"),
    100: ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def _unpickle(path: str) -> dict:
    with open(path, "rb") as f:
        d = load_data_pickle(f, path)
    if not isinstance(d, dict):
        raise IIFError(f"{path} holds a {type(d).__name__}, not CIFAR's dict of data and labels; re-download it.")
    # Keys are str under latin1 decoding; accept bytes keys too (files re-pickled by other tools).
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def read_cifar(root: str, num_classes: int = 10):
    """``(train_images (N, 3, 32, 32) uint8, train_labels, test_images, test_labels, class_names)``.

    ``root`` is the folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (or that folder itself).
    """
    if num_classes not in _LAYOUT:
        raise IIFError(f"CIFAR has 10 or 100 classes; got num_classes={num_classes}.")
    folder, train_files, test_files, meta, label_key, names_key = _LAYOUT[num_classes]
    root = os.path.expanduser(str(root))
    base = root if os.path.basename(os.path.normpath(root)) == folder else os.path.join(root, folder)
    missing = [f for f in train_files + test_files + [meta] if not os.path.isfile(os.path.join(base, f))]
    if missing:
        raise IIFError(f"CIFAR-{num_classes} not found: {base} lacks {', '.join(missing)}. Set data.options.download=true (download=True in Python) "
                       f"(when online) or data.root= the folder where the extracted {folder}/ lives "
                       f"(from https://www.cs.toronto.edu/~kriz/cifar.html).")

    def load(files):
        imgs, labs = [], []
        for f in files:
            d = _unpickle(os.path.join(base, f))
            if "data" not in d or label_key not in d:
                raise IIFError(f"{os.path.join(base, f)} lacks 'data' or '{label_key}'; it is not a CIFAR-{num_classes} "
                               "python batch. Re-download the python version of the dataset.")
            imgs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labs.append(np.asarray(d[label_key], dtype=np.int64))
        return np.concatenate(imgs), np.concatenate(labs)

    tr_img, tr_lab = load(train_files)
    te_img, te_lab = load(test_files)
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in _unpickle(os.path.join(base, meta)).get(names_key, range(num_classes))]
    return tr_img, tr_lab, te_img, te_lab, names


def _build(num_classes: int, root, imbalance_ratio, profile, seed, augment, val_per_class, kw) -> DatasetSplits:
    name = f"cifar{num_classes}-lt"
    check_kwargs(name, kw, ("n_max", "download"))
    d = CIFAR_DEFAULTS[num_classes]
    n_max = int(kw.pop("n_max", d["n_max"]))
    download = bool(kw.pop("download", False))
    root = os.path.expanduser(str(root)) if root is not None else os.path.expanduser("~/.cache/iif")
    if download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
        # fetches + verifies md5; a no-op when already there
        download_dataset(name, root, lambda: cls(root, train=True, download=True))
    tr_img, tr_lab, te_img, te_lab, names = read_cifar(root, num_classes)
    return longtail_tensor_splits(
        name, torch.from_numpy(tr_img), tr_lab, torch.from_numpy(te_img), te_lab, num_classes=num_classes,
        n_max=n_max, imbalance_ratio=100.0 if imbalance_ratio is None else imbalance_ratio, profile=profile,
        seed=seed, val_per_class=d["val_per_class"] if val_per_class is None else int(val_per_class),
        augment=augment, class_names=names, flip=True, padding=4, kw=kw)


def build_cifar10_lt(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
                     **kw) -> DatasetSplits:
    """CIFAR-10-LT: n_max 5000, ratio 100; 100 val/class (the head class's 100 from its draw, leaving 12,306
    train images; ``val_per_class=0``: the published 12,406 and no val), 10k test."""
    return _build(10, root, imbalance_ratio, profile, seed, augment, val_per_class, kw)


def build_cifar100_lt(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
                      **kw) -> DatasetSplits:
    """CIFAR-100-LT: n_max 500, ratio 100; 20 val/class (the head class's 20 from its draw, leaving 10,827
    train images; ``val_per_class=0``: the published 10,847 and no val), 10k test."""
    return _build(100, root, imbalance_ratio, profile, seed, augment, val_per_class, kw)
