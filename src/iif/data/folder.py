"""``folder``: any ImageFolder tree (``root/<class>/<image>``), optionally made long-tailed.

Layouts (docs/datasets.md, "Your own images"): ``root/train/<class>/...`` with optional ``root/val/`` and
``root/test/`` (same class folder names; without ``test/``, ``test_fraction`` of each class is held out as in
the one-tree layout); or a single tree ``root/<class>/...`` split per class
deterministically into train/val/test by ``val_fraction`` / ``test_fraction``, minimums first (train keeps 1
image, then validation gets 1, then test 1: :func:`iif.data.longtail.held_out_counts`), with one warning naming
every class left without validation or test images. Class indices follow sorted
folder names of the train tree. A ``train/`` tree without ``val/`` gets a validation split carved per class
from its training images (:func:`carve_counts`), so validation-based choices always have data.

The image size is read from the images when not given (:func:`native_image_size`): trees of small images
(side <= 64 px) train at their own size with pad-and-crop augmentation, larger ones are resized to at most
224 px; the choice is printed as one line. Small images (up to 512 MB decoded) are decoded once into uint8
tensors, resized to ``image_size`` x ``image_size``, so training augments whole batches; larger trees are read
from disk per sample.
"""

from __future__ import annotations

import os

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from ..errors import IIFError
from ..readers import special_files_message, walk_image_files
from .lists import FileListDataset
from .longtail import held_out_counts, longtail_counts, missing_split_classes, select_longtail
from .splits import DatasetSplits, finish_splits
from .transforms import NORMALIZE, SMALL_IMAGE_MAX, build_transform

__all__ = ["build_folder", "carve_counts", "native_image_size", "MAX_AUTO_IMAGE_SIZE"]

#: Largest side an automatically chosen image size may have; bigger images are resized to it.
MAX_AUTO_IMAGE_SIZE = 224
#: Trees of small images (<= 64 px) up to this many decoded bytes are held in memory as uint8 tensors.
MAX_RESIDENT_BYTES = 512 * 2**20
#: How many train images (evenly spread over the sorted list) are opened to read the image size.
_SIZE_PROBES = 64


def _scan(tree: str, class_to_idx: dict[str, int], special: list | None = None) -> list[tuple[str, int]]:
    """``(path, class)`` samples of ``tree``, as torchvision's ``make_dataset`` lists them (classes in name order,
    files by folder and name), walked by :func:`iif.readers.walk_image_files`: links followed, each real folder
    and file once per class, never opening a FIFO, socket or device (appended to ``special`` instead)."""
    extra = sorted(set(find_classes(tree)[0]) - set(class_to_idx))
    if extra:
        raise IIFError(f"{tree} has class folder(s) {', '.join(extra[:10])} that the train tree lacks; use the same "
                       "class folder names in train/, val/ and test/.")
    out: list[tuple[str, int]] = []
    for name in sorted(class_to_idx):
        folder = os.path.join(tree, name)
        if os.path.isdir(folder):
            walk = walk_image_files(folder, IMG_EXTENSIONS)
            out += [(f, class_to_idx[name]) for f in walk.files]
            if special is not None:
                special += walk.special
    return out


def native_image_size(paths: list[str]) -> tuple[int, str]:
    """``(size, description)``: the median shorter side of up to 64 of ``paths`` (image headers only),
    capped at :data:`MAX_AUTO_IMAGE_SIZE`; the description names the sizes seen, e.g. ``"32x32"``."""
    from PIL import Image

    if not paths:
        return MAX_AUTO_IMAGE_SIZE, "no images"
    pick = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), _SIZE_PROBES)).round().astype(int))
    sizes = []
    for i in pick:
        try:
            with Image.open(paths[i]) as im:
                sizes.append(im.size)  # (width, height)
        except (OSError, ValueError):
            continue  # unreadable files are reported by the image check before training
    if not sizes:
        return MAX_AUTO_IMAGE_SIZE, "unreadable images"
    short = int(np.median([min(w, h) for w, h in sizes]))
    distinct = sorted(set(sizes))
    seen = (f"{distinct[0][0]}x{distinct[0][1]}" if len(distinct) == 1
            else f"{len(distinct)} sizes, median shorter side {short} px")
    return max(1, min(short, MAX_AUTO_IMAGE_SIZE)), seen


def carve_counts(class_counts, val_per_class: int | None, val_fraction: float) -> np.ndarray:
    """Validation images to take from each class's training images when the tree has no ``val/``.

    With ``val_per_class=k``: ``min(k, n_c - 1)`` per class; otherwise ``round(val_fraction * n_c)``, at
    least 1. Either way every class keeps at least one training image (a class with one image gives none).
    """
    n = np.asarray(class_counts, dtype=np.int64)
    if val_per_class is not None:
        want = np.full_like(n, int(val_per_class))
    else:
        want = np.maximum(np.rint(float(val_fraction) * n).astype(np.int64), 1)
    return np.clip(np.minimum(want, n - 1), 0, None)


def build_folder(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
                 *, image_size: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.2, **tf_kw
                 ) -> DatasetSplits:
    """Splits of an ImageFolder tree.

    ``imbalance_ratio`` (None: keep the tree as it is) subsamples the train split to an exp/step long tail
    with ``n_max`` = the largest train class and class 0 (first folder name) the head; a class that has fewer
    images than its target count keeps all of them. Validation: ``val/`` when the tree has one; in the
    single-tree layout ``val_per_class`` images per class (default ``val_fraction`` of each class); with
    ``train/`` but no ``val/``, ``val_per_class`` per class from the train images the long tail left out
    when there are such images, else carved from the training images (:func:`carve_counts`).
    ``val_per_class=0``: no validation split. ``image_size`` None: read from the images
    (:func:`native_image_size`). Splits use numpy seed ``seed``.

    Steps: check the arguments (:func:`_folder_options`), scan the train tree, hold out test (and validation)
    per layout (:func:`_split_tree_layout` / :func:`_one_tree_layout`), draw the long tail, carve validation
    from train in the split-tree layout (:func:`_carve_validation`), then build the datasets
    (:func:`_folder_datasets`). One ``RandomState(seed)`` is drawn from in that order.
    """
    root, extra = _folder_options(root, tf_kw, val_fraction, test_fraction, image_size)
    split_tree = os.path.isdir(os.path.join(root, "train"))
    train_root = os.path.join(root, "train") if split_tree else root
    try:
        names, class_to_idx = find_classes(train_root)
    except FileNotFoundError as e:
        raise IIFError(f"{train_root} has no class sub-folders ({e}); lay it out as <class>/<image>.") from None
    c = len(names)
    special: list = []  # FIFOs, sockets, devices named like images: skipped with one warning
    samples = _scan(train_root, class_to_idx, special)
    targets = np.array([y for _, y in samples], dtype=np.int64)
    rng = np.random.RandomState(int(seed))
    has_val_tree = split_tree and os.path.isdir(os.path.join(root, "val"))
    if split_tree:
        train_idx, val_s, test_s = _split_tree_layout(root, samples, targets, c, class_to_idx, special, rng,
                                                      has_val_tree, val_per_class, test_fraction)
    else:
        train_idx, val_s, test_s = _one_tree_layout(samples, targets, c, rng, val_per_class, val_fraction,
                                                    test_fraction)
    pool = train_idx
    if imbalance_ratio is not None:
        n_per = np.bincount(targets[pool], minlength=c)
        counts = longtail_counts(int(n_per.max()) if n_per.size else 1, c, imbalance_ratio, profile)
        chosen = select_longtail(targets[pool], counts, seed)
        train_idx = pool[chosen]
    if split_tree and not has_val_tree and val_per_class != 0:
        train_idx, val_s = _carve_validation(samples, targets, c, rng, pool, train_idx, val_per_class, val_fraction)
    notes = []
    skipped = special_files_message(special, f"folder {root}")
    if skipped:
        notes.append(f"warning: {skipped}")
    # a split that is absent altogether (not asked for, or no val/ tree and val_per_class=0) is not a gap
    gap = missing_split_classes(names, [y for _, y in val_s] if val_s else None,
                                [y for _, y in test_s] if test_s else None,
                                np.bincount(targets, minlength=c) if c else None)
    if gap:
        notes.append(f"warning: folder {root}: {gap}")
    return _folder_datasets(root, samples, train_idx, val_s, test_s, names, image_size, augment, extra, notes)


def _folder_options(root, tf_kw: dict, val_fraction: float, test_fraction: float, image_size) -> tuple[str, dict]:
    """``root`` (``~`` expanded) and the augment options of ``tf_kw``; refuses a missing root, an unknown
    option, fractions outside [0, 1) or summing to 1 or more, and a non-positive ``image_size``."""
    if root is None or not os.path.isdir(os.path.expanduser(str(root))):
        raise IIFError(f"dataset 'folder' needs data.root= (root= in Python) an existing image folder of "
                       f"<class>/<image> or train/<class>/<image>; got {root!r}.")
    root = os.path.expanduser(str(root))
    extra = {k: tf_kw.pop(k) for k in ("policy", "randaugment_n", "randaugment_m", "cutout") if k in tf_kw}
    if tf_kw:
        raise IIFError(f"dataset 'folder' does not take option(s) {', '.join(sorted(tf_kw))}; it takes image_size, "
                       "val_fraction, test_fraction, cutout, policy, randaugment_n, randaugment_m.")
    if not 0 <= float(val_fraction) < 1 or not 0 <= float(test_fraction) < 1 or val_fraction + test_fraction >= 1:
        raise IIFError(f"folder val_fraction and test_fraction must be in [0, 1) with a sum below 1; got "
                       f"{val_fraction} and {test_fraction}.")
    if image_size is not None and int(image_size) < 1:
        raise IIFError(f"folder image_size must be a positive number of pixels or null (read from the images); "
                       f"got {image_size}.")
    return root, extra


def _split_tree_layout(root: str, samples, targets, c: int, class_to_idx, special: list, rng, has_val_tree: bool,
                       val_per_class, test_fraction: float):
    """``(train_idx, val_s, test_s)`` of a ``train/`` (``val/``, ``test/``) tree: ``val/`` and ``test/`` scanned
    when present; without ``test/``, ``test_fraction`` of each class's train images held out."""
    val_s = test_s = None
    if has_val_tree:
        val_s = _scan(os.path.join(root, "val"), class_to_idx, special)
    train_idx = np.arange(len(samples))
    if os.path.isdir(os.path.join(root, "test")):
        test_s = _scan(os.path.join(root, "test"), class_to_idx, special)
    elif c:  # no test/: test_fraction of each class's images, as in the one-tree layout
        keep, te = [], []
        carve = not has_val_tree and val_per_class != 0  # validation carved from train later: leave it room
        for k in range(c):
            idx = np.where(targets == k)[0]
            rng.shuffle(idx)
            n_te = held_out_counts(len(idx), 0, int(len(idx) * test_fraction), val=carve,
                                   test=test_fraction > 0)[2]
            te.append(idx[:n_te]), keep.append(idx[n_te:])
        train_idx = np.sort(np.concatenate(keep))
        test_s = [samples[i] for i in np.concatenate(te)]
    return train_idx, val_s, test_s


def _one_tree_layout(samples, targets, c: int, rng, val_per_class, val_fraction: float, test_fraction: float):
    """``(train_idx, val_s, test_s)`` of a single ``<class>/<image>`` tree: per class, test then validation held
    out (train keeps 1, then validation gets 1, then test 1, then the fractions; docs/datasets.md)."""
    train_idx, va, te = [], [], []
    for k in range(c):
        idx = np.where(targets == k)[0]
        rng.shuffle(idx)
        want_va = int(val_per_class) if val_per_class is not None else int(len(idx) * val_fraction)
        # train keeps 1, then validation gets 1, then test 1, then the fractions (docs/datasets.md)
        _, n_va, n_te = held_out_counts(len(idx), want_va, int(len(idx) * test_fraction),
                                        val=want_va > 0 or (val_per_class is None and val_fraction > 0),
                                        test=test_fraction > 0)
        te.append(idx[:n_te]), va.append(idx[n_te:n_te + n_va]), train_idx.append(idx[n_te + n_va:])
    train_idx = np.concatenate(train_idx) if c else np.zeros(0, np.int64)
    test_s = [samples[i] for i in np.concatenate(te)]
    val_s = [samples[i] for i in np.concatenate(va)]
    return train_idx, val_s, test_s


def _carve_validation(samples, targets, c: int, rng, pool, train_idx, val_per_class, val_fraction: float):
    """``(train_idx, val_s)`` of a ``train/`` tree without ``val/``: ``val_per_class`` per class from the images
    the long tail left out of ``pool`` when there are such, else carved out of the training images."""
    left = np.setdiff1d(pool, train_idx)
    if val_per_class is not None and left.size:  # the long tail left images out: validate on those
        va = []
        for k in range(c):
            idx = left[targets[left] == k]
            rng.shuffle(idx)
            va.append(idx[: int(val_per_class)])
    else:  # carve a per-class validation split out of the training images
        take = carve_counts(np.bincount(targets[train_idx], minlength=c), val_per_class, val_fraction)
        va, keep = [], []
        for k in range(c):
            idx = np.sort(train_idx[targets[train_idx] == k])
            rng.shuffle(idx)
            va.append(idx[: take[k]]), keep.append(idx[take[k]:])
        train_idx = np.sort(np.concatenate(keep)) if c else train_idx
    val_s = [samples[i] for i in np.concatenate(va)] if c else []
    return train_idx, val_s


def _folder_datasets(root: str, samples, train_idx, val_s, test_s, names, image_size, augment: str, extra: dict,
                     notes: list[str]) -> DatasetSplits:
    """The splits' datasets: decoded once into memory when small enough, else files decoded per batch;
    ``image_size`` None is read from the training images (:func:`native_image_size`)."""
    c = len(names)
    note = None
    if image_size is None:
        image_size, seen = native_image_size([samples[i][0] for i in train_idx])
        how = "their own size" if seen == f"{image_size}x{image_size}" else "resized"
        note = (f"folder {root}: images are {seen}; training at {image_size} px ({how}; set "
                "data.options.image_size to change)")
    image_size = int(image_size)
    mean, std = NORMALIZE["folder"]
    train_s = [samples[i] for i in train_idx]
    n_all = len(train_s) + len(val_s or []) + len(test_s or [])
    if image_size <= SMALL_IMAGE_MAX and n_all * 3 * image_size ** 2 <= MAX_RESIDENT_BYTES:
        resident = _decode_splits((train_s, val_s, test_s), image_size, augment, mean, std, names, extra)
        if resident is not None:
            return _noted(finish_splits("folder", *resident, c, 3, image_size, names, mean, std), note, notes)
    train_tf = build_transform(augment, mean, std, train=True, image_size=image_size, kind="pil", **extra)
    eval_tf = build_transform("none", mean, std, train=False, image_size=image_size, kind="pil")
    train = FileListDataset(train_s, train_tf, names)
    val = FileListDataset(val_s, eval_tf, names) if val_s else None
    test = FileListDataset(test_s, eval_tf, names) if test_s else None
    return _noted(finish_splits("folder", train, val, test, c, 3, image_size, names, mean, std), note, notes)


def _noted(splits: DatasetSplits, note: str | None, warnings: list[str] = ()) -> DatasetSplits:
    """Attach the one-line image-size note and the warnings (e.g. classes without validation or test images,
    each ``warning: ...``); the trainer prints them once the images have been checked
    (:func:`iif.train.advice.check_config_advice`), so an error stays the only line on stderr."""
    splits.train.notes = ([note] if note else []) + list(warnings)
    return splits


def _decode_splits(split_samples, size: int, augment: str, mean, std, names, extra):
    """Small images decoded once into uint8 :class:`TensorImageDataset` s (each image resized to
    ``size`` x ``size``), so training augments whole batches (:func:`iif.data.batch_augment`); None when a
    file does not decode (the file-backed path then runs and the image check names every bad file)."""
    import torch
    from PIL import Image

    from .tensor_dataset import TensorImageDataset

    out = []
    for k, ss in enumerate(split_samples):
        if not ss:
            out.append(None)
            continue
        arr = np.empty((len(ss), size, size, 3), dtype=np.uint8)
        for j, (path, _) in enumerate(ss):
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
                    arr[j] = np.asarray(im)
            except (OSError, ValueError, Image.DecompressionBombError):
                return None
        train = k == 0
        tf = build_transform(augment if train else "none", mean, std, train=train, image_size=size, kind="tensor",
                             padding=max(1, size // 8), **(extra if train else {}))
        ds = TensorImageDataset(torch.from_numpy(arr).permute(0, 3, 1, 2), [y for _, y in ss], tf,
                                class_names=names, mean=mean, std=std, flip=True)
        ds.samples = list(ss)  # the files behind the rows (for iif eval --save-logits, and the image check)
        out.append(ds)
    return tuple(out)
