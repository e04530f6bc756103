"""``imagenet-lt``, ``places-lt``, ``inat2018``: ``path label`` list files over an image root, streamed from disk.

Standard releases (OLTR / decoupling splits) ship one text file per split, each line
``relative/path/to/image.jpg <label>``; paths are relative to the image root. The lines are read by
:func:`iif.readers.parse_list_file`, the one list-file parser of ``iif`` (``iif weights``, ``iif stats`` and
``ClassFrequency.from_list_file`` use it too): path and label separated by spaces or tabs, the label
last, blank lines and ``#`` comments skipped. Expected names:

==============  =================================  ===============================  ==============================
dataset         train                              val                              test
==============  =================================  ===============================  ==============================
imagenet-lt     ImageNet_LT_train.txt              ImageNet_LT_val.txt              ImageNet_LT_test.txt
places-lt       Places_LT_train.txt                Places_LT_val.txt                Places_LT_test.txt
inat2018        iNaturalist18_train.txt            (none)                           iNaturalist18_val.txt
==============  =================================  ===============================  ==============================

Images are opened with PIL one at a time in ``__getitem__`` (nothing is loaded up front).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

from ..errors import IIFError
from ..readers import list_file_error, parse_list_file
from .splits import DatasetSplits, finish_splits
from .transforms import NORMALIZE, build_transform

__all__ = ["FileListDataset", "validate_list", "inside_root", "build_list_dataset", "LIST_DATASETS",
           "build_imagenet_lt", "build_places_lt", "build_inat2018"]

# name -> (num_classes, train list, val list or None, test list)
LIST_DATASETS = {
    "imagenet-lt": (1000, "ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"),
    "places-lt": (365, "Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"),
    "inat2018": (8142, "iNaturalist18_train.txt", None, "iNaturalist18_val.txt"),
}


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


class FileListDataset(Dataset):
    """``(path, label)`` samples read lazily with PIL; ``dataset[i] = (transform(image), label)``."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.targets = [y for _, y in self.samples]
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = pil_loader(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def __repr__(self) -> str:
        return f"FileListDataset(n={len(self)})"


def inside_root(path: str, root: str) -> bool:
    """True when ``path`` (relative, as written in a list file) stays inside ``root`` lexically: not absolute,
    and no ``..`` climbs above it. Symbolic links inside ``root`` are the owner's choice and are followed."""
    if os.path.isabs(path) or os.path.splitdrive(path)[0]:
        return False
    norm = os.path.normpath(path)
    return norm != ".." and not norm.startswith(".." + os.sep)


def validate_list(list_path: str, root: str, num_classes: int | None = None, check_files: bool = True,
                  show: int = 5, allow_outside_root: bool = False) -> list[tuple[str, int]]:
    """Check a ``path label`` list before training; return its ``(absolute path, label)`` samples.

    The lines are parsed by :func:`iif.readers.parse_list_file` (the rules of every list file in ``iif``).
    Reports, with line numbers, lines that are not ``path label``, labels that are not integers in
    ``[0, num_classes)``, paths that are absolute or climb out of ``root`` with ``..`` (unless
    ``allow_outside_root``) and (``check_files``) images missing under ``root``. Raises one IIFError listing
    the first ``show`` problems and how many there are in all.
    """
    if not os.path.isfile(list_path):
        raise IIFError(f"list file {list_path} not found; put the standard split files there or pass "
                       "list_root= the folder holding them.")
    entries, problems = parse_list_file(list_path, num_classes)
    samples = []
    for n, path, y in entries:
        if not allow_outside_root and not inside_root(path, root):
            problems.append((n, f"line {n}: path {path!r} leaves the image root (absolute or '..'; set "
                                "data.allow_outside_root=true to allow)"))
            continue
        full = os.path.join(root, path)
        if check_files and not os.path.isfile(full):
            # a FIFO, socket, device or folder is never opened (a FIFO would block the image check)
            what = "not a regular file" if os.path.exists(full) else "missing file"
            problems.append((n, f"line {n}: {what} {full}"))
            continue
        samples.append((full, y))
    if problems:
        raise list_file_error(list_path, problems, f"Fix the list or the image root (root={root}), or pass "
                              "num_classes= if the label range differs.", show)
    if not samples:
        raise IIFError(f"{list_path} lists no images; check that it is a 'path label' list file.")
    return samples


def build_list_dataset(name: str, root=None, augment: str = "none", *, list_root: str | None = None,
                       num_classes: int | None = None, image_size: int = 224, validate: bool = True,
                       allow_outside_root: bool = False,
                       class_names: Sequence[str] | None = None, train_list: str | None = None,
                       val_list: str | None = None, test_list: str | None = None, **tf_kw) -> DatasetSplits:
    """Splits of a list-file dataset. ``root``: image root; ``list_root``: where the list files live
    (default ``root``); ``num_classes`` defaults to the dataset's (1000 / 365 / 8142); ``*_list`` override the
    file names. ``validate=False`` skips the per-file existence check (labels are always checked).
    ``allow_outside_root`` accepts list paths that are absolute or contain ``..`` above ``root``."""
    if root is None:
        raise IIFError(f"{name} needs root= the image folder its list files refer to (see docs/datasets.md).")
    default_c, tr_name, va_name, te_name = LIST_DATASETS[name]
    c = int(num_classes) if num_classes is not None else default_c
    root = os.path.expanduser(str(root))
    lroot = os.path.expanduser(str(list_root)) if list_root is not None else root
    mean, std = NORMALIZE[name]
    extra = {k: tf_kw.pop(k) for k in ("policy", "randaugment_n", "randaugment_m", "cutout") if k in tf_kw}
    if tf_kw:
        raise IIFError(f"dataset {name!r} does not take option(s) {', '.join(sorted(tf_kw))}.")
    train_tf = build_transform(augment, mean, std, train=True, image_size=image_size, kind="pil", **extra)
    eval_tf = build_transform("none", mean, std, train=False, image_size=image_size, kind="pil")
    names = list(class_names) if class_names is not None else None

    def make(fname, tf):
        if fname is None:
            return None
        return FileListDataset(validate_list(os.path.join(lroot, fname), root, c, check_files=validate,
                                             allow_outside_root=allow_outside_root), tf, names)

    train = make(train_list or tr_name, train_tf)
    val = make(val_list or va_name, eval_tf)
    test = make(test_list or te_name, eval_tf)
    return finish_splits(name, train, val, test, c, 3, image_size, names, mean, std)


def _list_builder(name: str):
    def build(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
              **kw) -> DatasetSplits:
        # The released splits are already long-tailed and come with their own val/test lists, so
        # imbalance_ratio/profile/seed/val_per_class are ignored (use 'folder' to subsample a tree yourself).
        return build_list_dataset(name, root, augment, **kw)

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = f"{name} from its standard list files; see :func:`build_list_dataset` for options."
    return build


build_imagenet_lt = _list_builder("imagenet-lt")
build_places_lt = _list_builder("places-lt")
build_inat2018 = _list_builder("inat2018")
