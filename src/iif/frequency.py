"""Class frequencies: the one object every other part of ``iif`` reads its counts from.

Image frequency ``IF(c)`` (paper Eq. 10) is the number of training images that contain class ``c``;
object frequency ``OF(c)`` (the paper's IOF) is the number of instances. For classification they are
equal. See SPEC section 1 for the normaliser ``K``.

Sources (all constructors return a :class:`ClassFrequency`):

* ``from_labels`` / ``from_dataset``: one integer label per image (any dataset exposing ``targets``).
* ``from_folder``: an ImageFolder tree (one sub-directory per class, classes sorted by name).
* ``from_list_file``: ImageNet-LT / Places-LT / iNaturalist list files (``relative/path.jpg label``).
* ``from_coco``: COCO, LVIS (and other COCO-format, e.g. iNaturalist) annotation json.
* ``from_csv``: the official per-variant weight table written by :meth:`ClassFrequency.to_csv`
  (or by the authors' ``get_idf.py``).
* ``load``: our own JSON written by :meth:`ClassFrequency.save`.
* ``from_source``: picks one of the above from the path.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from .errors import IIFError
from .outputs import atomic_write_text
from .weights import VARIANTS, iif_weights, weights_from_counts

__all__ = ["ClassFrequency", "IMG_EXTENSIONS", "LVIS_GROUP_BOUNDS", "MAX_CLASSES", "MAX_COUNT", "lvis_group_letters"]

PathLike = Union[str, os.PathLike]

# The extensions torchvision's ImageFolder accepts (tests check the two lists agree). Written out rather
# than imported so that ``import iif`` does not pay for importing torchvision (seconds on a busy machine).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# LVIS frequency groups by training image count: rare 1-10, common 11-100, frequent > 100.
LVIS_GROUP_BOUNDS = (10, 100)

# Marker written into our own JSON so ``from_source`` can tell it from a COCO file.
_FORMAT = "iif.ClassFrequency"
_FORMAT_VERSION = 1
_TASKS = ("classification", "detection")

# Bounds checked before anything is allocated. A label is a class index, so a counter over labels allocates
# one slot per index up to the largest: a label of 5e9 would ask for 40 GB. Ten million classes (80 MB of
# counts) is ~500x more than the largest public label sets (ImageNet-21k: 21,841; iNat2021: 10,000), so
# anything above is a corrupt file or raw ids that need remapping, not a real class count.
MAX_CLASSES = 10_000_000
# Per-class counts (and K) above 2**53 are no longer exact in float64, which the weights are computed in;
# no dataset comes near (all of LAION-5B is < 2**33 images).
MAX_COUNT = 2**53

_REMAP_HINT = ("class labels must be indices 0..C-1 with C <= 10,000,000; remap raw ids first, e.g. "
               "numpy.unique(labels, return_inverse=True)")


def lvis_group_letters(image_counts: Sequence[int] | np.ndarray) -> list[str]:
    """LVIS ``r``/``c``/``f`` letter per class from training image counts (r <= 10 < c <= 100 < f).

    A class with zero images gets ``r`` (it is rarer than any rare class).
    """
    n = np.asarray(image_counts, dtype=np.int64)
    rare, common = LVIS_GROUP_BOUNDS
    return np.where(n <= rare, "r", np.where(n <= common, "c", "f")).tolist()


def _whole_counts(values: Any, what: str) -> np.ndarray:
    """Validate a 1-D array of non-negative whole numbers and return it as int64."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
        if arr.dtype.kind not in "biuf":
            raise TypeError(arr.dtype)
        arr_f = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise IIFError(f"{what} must be whole numbers, one per class; got {values!r:.80}.") from exc
    if arr_f.ndim != 1:
        raise IIFError(f"{what} must be 1-D with one entry per class; got shape {arr_f.shape}.")
    bad = np.flatnonzero(~np.isfinite(arr_f) | (arr_f < 0) | (arr_f != np.round(arr_f)))
    if bad.size:
        raise IIFError(
            f"{what} must be non-negative whole numbers; class {int(bad[0])} has {arr_f[bad[0]]!r}. "
            "Pass the number of images (or instances) per class."
        )
    if arr_f.shape[0] > MAX_CLASSES:
        raise IIFError(f"{what} has {arr_f.shape[0]} entries; at most {MAX_CLASSES:,} classes are supported.")
    big = np.flatnonzero(arr_f > MAX_COUNT)
    if big.size or (arr_f.size and float(arr_f.sum()) > 2.0**62):
        i = int(big[0]) if big.size else int(np.argmax(arr_f))
        raise IIFError(f"{what}: class {i} has {arr_f[i]:.6g}, more than {MAX_COUNT} (2**53, exact in float64); "
                       "pass real per-class counts.")
    return arr_f.astype(np.int64) if arr.dtype.kind == "f" else arr.astype(np.int64)


def _atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` atomically; a missing folder is an :class:`IIFError` (see :mod:`iif.outputs`)."""
    atomic_write_text(path, text)


def _read_json(path: PathLike) -> Any:
    """``json.load`` with every failure turned into an :class:`IIFError` naming file and position."""
    path = Path(path)
    if not path.is_file():
        raise IIFError(f"{path}: no such file; check the path to the annotation json.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise IIFError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}; "
            "the file is truncated or corrupt, re-download or re-export it."
        ) from None
    except UnicodeDecodeError as exc:
        raise IIFError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); is this really a json file?") from None
    except RecursionError:
        raise IIFError(f"{path}: JSON nested too deeply to read; the file is corrupt or not an annotation/counts file.") from None


def _read_text_lines(path: PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise IIFError(f"{path}: no such file; check the path.")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise IIFError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected a text file.") from None


def _int_column(items: list, key: str, what: str, source: str) -> np.ndarray:
    """One integer field of every dict in ``items`` as int64: one C-level pass (no per-item Python code)."""
    try:
        values = list(map(itemgetter(key), items))
    except (KeyError, TypeError):
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or key not in item:
                raise IIFError(
                    f"{source}: {what}[{i}] has no {key!r} field ({item!r:.100}); "
                    f"every entry of {what!r} needs an integer {key!r}."
                ) from None
        raise
    arr = np.array(values) if values else np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        for i, v in enumerate(values):
            if not (isinstance(v, int) and not isinstance(v, bool)):
                raise IIFError(
                    f"{source}: {what}[{i}][{key!r}] is {v!r:.60}, not an integer id; fix the annotation file."
                )
            if not -(2**63) <= v < 2**63:
                raise IIFError(f"{source}: {what}[{i}][{key!r}] is {v:.6g}, too large for a 64-bit id; fix the annotation file.")
    return arr.astype(np.int64, copy=False)


def _index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each of ``ids`` in ``sorted_ids`` and a mask of the ids that are not there."""
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=np.int64), np.ones(ids.shape, dtype=bool)
    lo, hi = int(sorted_ids[0]), int(sorted_ids[-1])
    if lo >= 0 and hi < 4 * sorted_ids.size + (1 << 20):
        # Dense ids (COCO, LVIS): a lookup table gather is several times faster than searchsorted.
        lut = np.full(hi + 1, -1, dtype=np.int64)
        lut[sorted_ids] = np.arange(sorted_ids.size)
        inside = (ids >= 0) & (ids <= hi)
        pos = np.where(inside, lut[np.clip(ids, 0, hi)], -1)
        missing = pos < 0
        return np.where(missing, 0, pos), missing
    pos = np.searchsorted(sorted_ids, ids)
    pos_c = np.minimum(pos, sorted_ids.size - 1)
    missing = sorted_ids[pos_c] != ids
    return pos_c, missing


def _fmt_list(items: Iterable[Any], limit: int = 10) -> str:
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


@dataclass(eq=False)
class ClassFrequency:
    """Per-class image and object counts of a training set.

    Attributes:
        image_counts: int64 array ``(C,)``, images containing each class (IF).
        object_counts: int64 array ``(C,)``, instances of each class (OF).
        num_images: number of training images (the detection ``K`` for IIF).
        num_instances: number of instances (the detection ``K`` for IOF).
        class_names: one name per class.
        class_ids: the dataset's own id per class (e.g. COCO category ids); ``0..C-1`` by default.
        groups: LVIS-style ``r``/``c``/``f`` letter per class, or None.
        task: ``"classification"`` (default K = sum of counts, paper Eq. 11) or ``"detection"``
            (default K = num_images / num_instances, the official detection tables).
    """

    image_counts: np.ndarray
    object_counts: np.ndarray
    num_images: int
    num_instances: int
    class_names: list[str] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    groups: list[str] | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        self.image_counts = _whole_counts(self.image_counts, "image_counts")
        self.object_counts = _whole_counts(self.object_counts, "object_counts")
        c = self.image_counts.shape[0]
        if self.object_counts.shape != (c,):
            raise IIFError(f"object_counts has shape {self.object_counts.shape}, expected ({c},).")
        if self.task not in _TASKS:
            raise IIFError(f"task must be one of {_TASKS}; got {self.task!r}.")
        for name in ("num_images", "num_instances"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) \
                    or not math.isfinite(value) or value != int(value) or not 0 <= value <= MAX_COUNT:
                raise IIFError(f"{name} must be a whole number in [0, 2**53]; got {value!r:.60}.")
            setattr(self, name, int(value))
        if not self.class_names:
            self.class_names = [str(i) for i in range(c)]
        else:
            self.class_names = [str(n) for n in self.class_names]
        if not self.class_ids:
            self.class_ids = list(range(c))
        else:
            self.class_ids = [int(i) for i in self.class_ids]
        for what, seq in (("class_names", self.class_names), ("class_ids", self.class_ids), ("groups", self.groups)):
            if seq is not None and len(seq) != c:
                raise IIFError(f"{what} has {len(seq)} entries but there are {c} classes; give one per class.")
        if self.groups is not None:
            self.groups = [str(g) for g in self.groups]

    # ------------------------------------------------------------------ basics
    @property
    def num_classes(self) -> int:
        return int(self.image_counts.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClassFrequency):
            return NotImplemented
        return (
            np.array_equal(self.image_counts, other.image_counts)
            and np.array_equal(self.object_counts, other.object_counts)
            and self.num_images == other.num_images
            and self.num_instances == other.num_instances
            and self.class_names == other.class_names
            and self.class_ids == other.class_ids
            and self.groups == other.groups
            and self.task == other.task
        )

    __hash__ = None  # mutable, like any dataclass with eq

    def counts(self, by: str = "image") -> np.ndarray:
        if by == "image":
            return self.image_counts
        if by == "object":
            return self.object_counts
        raise IIFError(f"by must be 'image' or 'object'; got {by!r}.")

    def default_total(self, by: str = "image") -> float:
        """K used when none is given: sum of counts (classification) or images/instances (detection)."""
        if self.task == "detection":
            self.counts(by)  # validates ``by``
            return float(self.num_images if by == "image" else self.num_instances)
        return float(self.counts(by).sum())

    def resolve_total(self, total: float | str | None = None, by: str = "image") -> float:
        """The number K for ``total`` given as None (task default), a number, ``"sum"``, ``"images"``
        or ``"instances"`` (SPEC section 1)."""
        counts = self.counts(by)
        if total is None:
            return self.default_total(by)
        if isinstance(total, str):
            key = total.strip().lower()
            if key == "sum":
                return float(counts.sum())
            if key == "images":
                return float(self.num_images)
            if key == "instances":
                return float(self.num_instances)
            try:
                return float(key)
            except ValueError:
                raise IIFError(
                    f"total must be a number, 'sum', 'images' or 'instances'; got {total!r}."
                ) from None
        return float(total)

    def weights(self, variant: str = "smooth", by: str = "image", total=None, **kwargs) -> torch.Tensor:
        """IIF weights for these counts; see :func:`iif.iif_weights` for ``variant`` and ``kwargs``.

        ``total`` is K: a number, ``"sum"`` (paper Eq. 11), ``"images"`` or ``"instances"``; by default
        the convention of the task (SPEC section 1).
        """
        counts = self.counts(by)
        try:
            return iif_weights(counts, variant, total=self.resolve_total(total, by), **kwargs)
        except IIFError as exc:
            zero = np.flatnonzero(counts == 0)
            if zero.size and "zero count" in str(exc):  # name the classes, not just their indices
                names = _fmt_list([self.class_names[i] for i in zero])
                raise IIFError(f"{exc} The empty classes are {names}.") from None
            raise

    @property
    def empty_classes(self) -> list[int]:
        """Indices of classes with no training image (the inf-variants refuse these; use ``smooth``)."""
        return np.flatnonzero(self.image_counts == 0).tolist()

    @property
    def imbalance_factor(self) -> float:
        """``n_max / n_min`` over classes with a non-zero image count (paper Table I); nan if none."""
        return self.imbalance(by="image")

    def imbalance(self, by: str = "image") -> float:
        """Imbalance factor ``n_max / n_min`` of image (or object) counts, ignoring empty classes."""
        n = self.counts(by)
        n = n[n > 0]
        return float(n.max() / n.min()) if n.size else float("nan")

    def shot_groups(self, many: int = 100, few: int = 20, by: str = "image") -> np.ndarray:
        """``"many"`` (count > ``many``), ``"few"`` (count < ``few``) or ``"medium"`` per class (SPEC §5)."""
        if few > many:
            raise IIFError(f"few ({few}) must not exceed many ({many}); the defaults are many=100, few=20.")
        n = self.counts(by)
        return np.where(n > many, "many", np.where(n < few, "few", "medium"))

    def lvis_groups(self) -> list[str]:
        """The LVIS ``r``/``c``/``f`` letters: ``groups`` if known, else derived from image counts."""
        return list(self.groups) if self.groups is not None else lvis_group_letters(self.image_counts)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_labels(cls, labels, num_classes: int | None = None, class_names: Sequence[str] | None = None) -> "ClassFrequency":
        """Counts from one integer label per image (array, list or tensor)."""
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        try:
            arr = np.asarray(labels)
        except (TypeError, ValueError) as exc:
            raise IIFError(f"labels must be integer class indices; got {labels!r:.80}.") from exc
        if arr.ndim != 1:
            raise IIFError(f"labels must be 1-D (one label per image); got shape {arr.shape}.")
        if arr.size and arr.dtype.kind not in "biuf":
            raise IIFError(f"labels must be integer class indices; got values of type {arr.dtype} (e.g. {arr[0]!r}).")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise IIFError("labels must be whole class indices; found non-integer values.")
        if arr.size and arr.max() >= MAX_CLASSES:
            raise IIFError(f"labels: found label {float(arr.max()):.6g}; {_REMAP_HINT}.")
        if num_classes is not None and not 0 < int(num_classes) <= MAX_CLASSES:
            raise IIFError(f"num_classes must be in 1..{MAX_CLASSES:,}; got {num_classes}.")
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise IIFError(f"labels must be >= 0; found {int(arr.min())}.")
        c = int(arr.max()) + 1 if arr.size else 0
        if num_classes is None:
            num_classes = len(class_names) if class_names is not None else c
        num_classes = int(num_classes)
        if num_classes <= 0:
            raise IIFError("No classes: labels are empty and neither num_classes nor class_names was given.")
        if c > num_classes:
            raise IIFError(f"label {c - 1} is out of range for num_classes={num_classes}; labels must be 0..{num_classes - 1}.")
        counts = np.bincount(arr, minlength=num_classes)
        return cls(counts, counts.copy(), int(arr.size), int(arr.size),
                   class_names=list(class_names) if class_names is not None else [])

    @classmethod
    def from_dataset(cls, dataset: Any, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from any dataset exposing ``targets`` (names from ``classes`` when present).

        A ``torch.utils.data.Subset`` of such a dataset is counted over its ``indices``.
        """
        names = getattr(dataset, "classes", None)
        targets = getattr(dataset, "targets", None)
        if targets is None and hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
            base = dataset.dataset
            base_targets = getattr(base, "targets", None)
            if base_targets is not None:
                if isinstance(base_targets, torch.Tensor):
                    base_targets = base_targets.cpu().numpy()
                targets = np.asarray(base_targets)[np.asarray(dataset.indices, dtype=np.int64)]
                names = names if names is not None else getattr(base, "classes", None)
        if targets is None:
            raise IIFError(
                f"{type(dataset).__name__} has no 'targets' attribute; pass the labels to "
                "ClassFrequency.from_labels(labels) instead."
            )
        if names is not None:
            names = [str(n) for n in names]
        return cls.from_labels(targets, num_classes=num_classes, class_names=names)

    @classmethod
    def from_folder(cls, root: PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> "ClassFrequency":
        """Counts from an ImageFolder tree: ``root/<class>/**/<image>``; classes sorted by name.

        Files count when their extension (case-insensitive) is one of ``extensions`` (torchvision's
        ``IMG_EXTENSIONS`` by default), searched recursively as torchvision's ``ImageFolder`` does.
        Classes without images are kept with count 0 and reported with a warning.
        """
        root = Path(root)
        if not root.is_dir():
            raise IIFError(f"{root}: not a directory; from_folder expects one sub-directory per class.")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if not classes:
            raise IIFError(
                f"{root}: no class sub-directories; lay the images out as {root}/<class_name>/<image>.jpg."
            )
        exts = tuple(e.lower() for e in extensions)
        counts = np.zeros(len(classes), dtype=np.int64)
        for i, name in enumerate(classes):
            n = 0
            for _dir, _sub, files in os.walk(root / name, followlinks=True):
                n += sum(1 for f in files if f.lower().endswith(exts))
            counts[i] = n
        freq = cls(counts, counts.copy(), int(counts.sum()), int(counts.sum()), class_names=classes)
        freq._warn_empty(str(root))
        return freq

    @classmethod
    def from_list_file(cls, path: PathLike, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from a list file with one ``relative/path.jpg label`` per line.

        This is the format of the ImageNet-LT, Places-LT and iNaturalist-LT split files. Blank lines
        are skipped; the label is the last whitespace-separated field (so paths may contain spaces).
        """
        labels = []
        for lineno, line in enumerate(_read_text_lines(path), start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not _is_int(parts[1]) or int(parts[1]) < 0:
                raise IIFError(
                    f"{path}: line {lineno} is {line!r:.120}; expected 'relative/path.jpg label' with a "
                    "non-negative integer label."
                )
            if len(parts[1]) > 9 and int(parts[1]) >= MAX_CLASSES:
                raise IIFError(f"{path}: line {lineno} has label {parts[1]:.30}; {_REMAP_HINT}.")
            labels.append(int(parts[1]))
        if not labels:
            raise IIFError(f"{path}: no entries; expected lines of 'relative/path.jpg label'.")
        return cls.from_labels(np.asarray(labels, dtype=np.int64), num_classes=num_classes)

    @classmethod
    def from_label_lines(cls, path: PathLike, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from a text file holding one integer label per line (blank lines skipped)."""
        labels = []
        for lineno, line in enumerate(_read_text_lines(path), start=1):
            text = line.strip()
            if not text:
                continue
            if not _is_int(text) or int(text) < 0:
                raise IIFError(f"{path}: line {lineno} is {line!r:.120}; expected one non-negative integer label per line.")
            if len(text) > 9 and int(text) >= MAX_CLASSES:
                raise IIFError(f"{path}: line {lineno} has label {text:.30}; {_REMAP_HINT}.")
            labels.append(int(text))
        if not labels:
            raise IIFError(f"{path}: no labels; expected one integer label per line.")
        return cls.from_labels(np.asarray(labels, dtype=np.int64), num_classes=num_classes)

    @classmethod
    def from_coco(
        cls, source: PathLike | Mapping[str, Any], check_lvis: bool = False, *, name: str | None = None
    ) -> "ClassFrequency":
        """Image and instance counts from a COCO or LVIS annotation json (a path or the loaded dict).

        Class order is the categories sorted by id (``class_ids`` keeps the ids). The image count of a
        class is the number of distinct images with at least one of its annotations; the instance count
        is its number of annotations; ``num_images = len(images)`` (images without annotations count,
        as in the official tables) and ``num_instances = len(annotations)``. ``task`` is ``"detection"``.

        ``groups`` holds LVIS's ``frequency`` letters when every category has one, else letters derived
        from the counted image counts (r: <= 10, c: 11-100, f: > 100).

        Categories without annotations are kept (count 0) and reported with a warning; the
        inf-variants then refuse them (use ``smooth``). LVIS ``image_count``/``instance_count`` fields
        are NOT compared by default, since LVIS val files carry the train counts; pass
        ``check_lvis=True`` (or call :meth:`check_against_lvis_fields`) to require they match.
        ``name`` labels the data in error messages when a dict is passed.

        The annotations are read in one pass extracting two ints each; the rest is numpy, so counting
        costs little beyond ``json.load`` (see ``benchmarks/bench_count_coco.py``).
        """
        if isinstance(source, (str, os.PathLike)):
            data, name = _read_json(source), name or str(source)
        else:
            data, name = source, name or "annotation dict"
        if not isinstance(data, Mapping):
            raise IIFError(f"{name}: top level is a {type(data).__name__}, expected a COCO/LVIS object with "
                           "'images', 'annotations' and 'categories'.")
        for key in ("annotations", "categories", "images"):
            if key not in data:
                raise IIFError(
                    f"{name}: no {key!r} list; a COCO/LVIS training json needs 'images', 'annotations' and "
                    "'categories' (test-set 'image_info' files have no annotations to count)."
                )
            if not isinstance(data[key], list):
                raise IIFError(f"{name}: {key!r} is a {type(data[key]).__name__}, expected a list.")
        cats, anns, images = data["categories"], data["annotations"], data["images"]
        if not cats:
            raise IIFError(f"{name}: 'categories' is empty; there are no classes to count.")

        cat_ids = _int_column(cats, "id", "categories", name)
        order = np.argsort(cat_ids, kind="stable")
        sorted_cat = cat_ids[order]
        dup = sorted_cat[1:][sorted_cat[1:] == sorted_cat[:-1]]
        if dup.size:
            raise IIFError(f"{name}: duplicate category ids {_fmt_list(np.unique(dup).tolist())}; ids must be unique.")
        img_ids = np.sort(_int_column(images, "id", "images", name))
        dup = img_ids[1:][img_ids[1:] == img_ids[:-1]]
        if dup.size:
            raise IIFError(f"{name}: duplicate image ids {_fmt_list(np.unique(dup).tolist())}; ids must be unique.")

        ann_cat = _int_column(anns, "category_id", "annotations", name)
        ann_img = _int_column(anns, "image_id", "annotations", name)
        def positions(known: np.ndarray, ids: np.ndarray, field: str, section: str) -> np.ndarray:
            pos, missing = _index_of(known, ids)
            if missing.any():
                bad = np.flatnonzero(missing)
                raise IIFError(
                    f"{name}: {bad.size} annotations point at unknown {field.replace('_', ' ')}s "
                    f"{_fmt_list(np.unique(ids[bad]).tolist())} (first is annotations[{int(bad[0])}]); "
                    f"every {field} must appear in '{section}'."
                )
            return pos

        ci = positions(sorted_cat, ann_cat, "category_id", "categories")
        ii = positions(img_ids, ann_img, "image_id", "images")
        c, n_img = sorted_cat.size, max(img_ids.size, 1)
        object_counts = np.bincount(ci, minlength=c)
        # One key per (class, image) pair; its distinct values are the images containing each class.
        # Sort + neighbour compare rather than np.unique: numpy 2.4's hash-based unique is ~50x slower
        # on 1.27M int64 keys (2.9 s against 0.05 s measured here).
        keys = np.sort(ci * n_img + ii)
        first = np.ones(keys.size, dtype=bool)
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        image_counts = np.bincount(keys[first] // n_img, minlength=c)

        sorted_cats = [cats[int(j)] for j in order]
        names = [str(cat.get("name", cat_id)) for cat, cat_id in zip(sorted_cats, sorted_cat.tolist())]
        letters = [cat.get("frequency") for cat in sorted_cats]
        if all(isinstance(g, str) and g in ("r", "c", "f") for g in letters):
            groups = letters
        else:
            groups = lvis_group_letters(image_counts)
        freq = cls(image_counts, object_counts, len(images), len(anns), class_names=names,
                   class_ids=sorted_cat.tolist(), groups=groups, task="detection")
        if check_lvis:
            freq.check_against_lvis_fields(data)
        freq._warn_empty(name)
        return freq

    def check_against_lvis_fields(self, source: PathLike | Mapping[str, Any]) -> int:
        """Check our counts reproduce the LVIS ``image_count``/``instance_count`` (and ``frequency``).

        Returns the number of categories that carry those fields (0: nothing to check). Raises
        :class:`IIFError` listing the mismatching categories. Use it on a *train* json: LVIS val
        files carry the train counts.
        """
        data = source if isinstance(source, Mapping) else _read_json(source)
        name = "annotation dict" if isinstance(source, Mapping) else str(source)
        index = {cid: i for i, cid in enumerate(self.class_ids)}
        checked, wrong = 0, []
        for cat in data.get("categories", []):
            if "image_count" not in cat and "instance_count" not in cat:
                continue
            i = index.get(cat.get("id"))
            if i is None:
                raise IIFError(f"{name}: category id {cat.get('id')!r} is not one of these counts' classes.")
            checked += 1
            ours = {"image_count": int(self.image_counts[i]), "instance_count": int(self.object_counts[i])}
            if self.groups is not None:
                ours["frequency"] = lvis_group_letters([self.image_counts[i]])[0]
            for key, value in ours.items():
                if key in cat and cat[key] != value:
                    wrong.append(f"{self.class_names[i]} (id {self.class_ids[i]}) {key} {cat[key]} != counted {value}")
        if wrong:
            raise IIFError(
                f"{name}: counting the annotations does not reproduce the LVIS category fields for "
                f"{len(wrong)} entries: {_fmt_list(wrong, 5)}; is this the train json these fields describe?"
            )
        return checked

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "task": self.task,
            "num_images": self.num_images,
            "num_instances": self.num_instances,
            "class_ids": list(self.class_ids),
            "class_names": list(self.class_names),
            "groups": None if self.groups is None else list(self.groups),
            "image_counts": self.image_counts.tolist(),
            "object_counts": self.object_counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dict") -> "ClassFrequency":
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise IIFError(
                f"{source}: not a ClassFrequency file (no \"format\": \"{_FORMAT}\"); for COCO/LVIS json use "
                "ClassFrequency.from_coco, or ClassFrequency.from_source to detect the kind."
            )
        version = data.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, int):
            raise IIFError(f"{source}: \"version\" is {version!r:.40}, not an integer; re-save it with ClassFrequency.save.")
        if version > _FORMAT_VERSION:
            raise IIFError(f"{source}: written by a newer iif (version {data['version']}); upgrade iif to read it.")
        for key, kinds in (("class_names", (list,)), ("class_ids", (list,)), ("groups", (list, type(None))),
                           ("task", (str,))):
            if key in data and not isinstance(data[key], kinds):
                raise IIFError(f"{source}: field {key!r} is a {type(data[key]).__name__}, expected "
                               f"{' or '.join('null' if k is type(None) else k.__name__ for k in kinds)}; "
                               "re-save it with ClassFrequency.save.")
        try:
            return cls(
                data["image_counts"], data["object_counts"], data["num_images"], data["num_instances"],
                class_names=data.get("class_names") or [], class_ids=data.get("class_ids") or [],
                groups=data.get("groups"), task=data.get("task", "classification"),
            )
        except KeyError as exc:
            raise IIFError(f"{source}: missing field {exc.args[0]!r}; re-save it with ClassFrequency.save.") from None
        except IIFError as exc:
            raise IIFError(f"{source}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise IIFError(f"{source}: a field has the wrong type ({exc}); re-save it with ClassFrequency.save.") from None

    def save(self, path: PathLike) -> None:
        """Write these counts as JSON (atomically); :meth:`load` reads them back exactly."""
        _atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "ClassFrequency":
        """Read counts written by :meth:`save`."""
        return cls.from_dict(_read_json(path), source=str(path))

    def weight_table(self, total: float | str | None = None) -> dict[str, np.ndarray]:
        """Every variant for image (``<variant>``) and object (``<variant>_obj``) counts, as computed.

        These are the bare Table III formulas (:func:`iif.weights.weights_from_counts`), so classes with
        zero count give ``inf`` and large classes may give negative values, exactly as in the official
        tables; use :meth:`weights` to get validated weights. ``total`` as in :meth:`weights`, resolved
        separately for image and object counts (default: the task's K for each).
        """
        table: dict[str, np.ndarray] = {}
        for by, suffix in (("image", ""), ("object", "_obj")):
            n, k = self.counts(by), self.resolve_total(total, by)
            for variant in VARIANTS:
                table[variant + suffix] = weights_from_counts(n, variant, k)
        return table

    def to_csv(self, path: PathLike, total: float | str | None = None) -> None:
        """Write the per-variant weight table (the authors' ``idf.csv`` layout, our variant names).

        Columns: ``category`` (class id), ``name``, ``img_freq``, ``instance_freq``, one column per
        variant of :data:`iif.VARIANTS` for image counts, then ``<variant>_obj`` for object counts.
        Values are written as computed (``inf``/negative allowed, full float precision); see
        :meth:`weight_table`. Written atomically.
        """
        table = self.weight_table(total)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = list(table)
        writer.writerow(["category", "name", "img_freq", "instance_freq", *cols])
        for i in range(self.num_classes):
            writer.writerow([self.class_ids[i], self.class_names[i], int(self.image_counts[i]),
                             int(self.object_counts[i]), *(repr(float(table[c][i])) for c in cols)])
        _atomic_write_text(path, buf.getvalue())

    @classmethod
    def from_csv(cls, path: PathLike) -> "ClassFrequency":
        """Read ``img_freq``/``instance_freq`` back from a weight table (ours or the official ``idf.csv``).

        ``category``/``name`` columns are used when present. K is recovered from the ``raw`` and
        ``raw_obj`` columns (``K = n * exp(raw)``) as ``num_images``/``num_instances``; without them
        the sums of the counts are used. ``task`` is ``"detection"`` when image and instance counts
        differ or K differs from the sum of counts, else ``"classification"``; detection tables get
        ``groups`` derived from the image counts (r <= 10 < c <= 100 < f), as :meth:`from_coco` does
        when the json has no LVIS ``frequency``.
        """
        lines = _read_text_lines(path)
        rows = list(csv.reader(lines))
        if not rows:
            raise IIFError(f"{path}: empty file; expected a header with 'img_freq' and 'instance_freq'.")
        header = [h.strip() for h in rows[0]]
        for key in ("img_freq", "instance_freq"):
            if key not in header:
                raise IIFError(f"{path}: no {key!r} column (header {header}); expected a weight table written by to_csv.")
        col = {h: j for j, h in enumerate(header)}
        body = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(x.strip() for x in r)]
        if not body:
            raise IIFError(f"{path}: no rows; the table has a header but no classes.")

        def column(key: str, conv):
            out = []
            for lineno, r in body:
                try:
                    out.append(conv(r[col[key]].strip()))
                except (IndexError, ValueError):
                    raise IIFError(f"{path}: line {lineno}, column {key!r}: bad value in {','.join(r)!r}.") from None
            return out

        img = np.asarray(column("img_freq", _parse_count), dtype=np.int64)
        obj = np.asarray(column("instance_freq", _parse_count), dtype=np.int64)
        ids = column("category", int) if "category" in col else []
        names = column("name", str) if "name" in col else []
        k_img = _recover_total(img, column("raw", float)) if "raw" in col else None
        k_obj = _recover_total(obj, column("raw_obj", float)) if "raw_obj" in col else None
        k_img = int(img.sum()) if k_img is None else k_img
        k_obj = int(obj.sum()) if k_obj is None else k_obj
        classification = np.array_equal(img, obj) and k_img == img.sum() and k_obj == obj.sum()
        # Detection counts get r/c/f letters derived from the image counts, as from_coco does.
        return cls(img, obj, k_img, k_obj, class_names=names, class_ids=ids,
                   groups=None if classification else lvis_group_letters(img),
                   task="classification" if classification else "detection")

    @classmethod
    def from_source(cls, source: PathLike, num_classes: int | None = None) -> "ClassFrequency":
        """Counts from a path, picking the reader by what it is.

        * a directory: :meth:`from_folder`;
        * ``.json``: COCO/LVIS annotations (:meth:`from_coco`) or our own saved counts (:meth:`load`);
        * ``.csv``: a weight table (:meth:`from_csv`);
        * ``.npy``: a 1-D array of integer labels, one per image;
        * any other text file (``.txt``, ``.lst``, ...): a list file ``path label`` per line
          (:meth:`from_list_file`) or, when lines hold a single field, one integer label per line.
        """
        path = Path(source)
        if path.is_dir():
            return cls.from_folder(path)
        if not path.exists():
            raise IIFError(f"{path}: no such file or directory; give a dataset folder, a COCO/LVIS json, a "
                           "list file, a .npy of labels or a weight-table .csv.")
        suffix = path.suffix.lower()
        if suffix == ".json":
            data = _read_json(path)
            if isinstance(data, Mapping) and data.get("format") == _FORMAT:
                return cls.from_dict(data, source=str(path))
            if isinstance(data, Mapping) and ("annotations" in data or "categories" in data):
                return cls.from_coco(data, name=str(path))
            raise IIFError(f"{path}: json is neither COCO/LVIS annotations (no 'annotations'/'categories') "
                           f"nor counts saved by ClassFrequency.save (no \"format\": \"{_FORMAT}\").")
        if suffix == ".csv":
            return cls.from_csv(path)
        if suffix == ".npy":
            try:
                labels = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise IIFError(f"{path}: not a readable .npy array ({exc}); save the labels with numpy.save.") from None
            return cls.from_labels(labels, num_classes=num_classes)
        lines = _read_text_lines(path)
        first = next((ln.split() for ln in lines if ln.strip()), None)
        if first is None:
            raise IIFError(f"{path}: empty file; expected 'path label' lines or one label per line.")
        if len(first) == 1:
            return cls.from_label_lines(path, num_classes=num_classes)
        return cls.from_list_file(path, num_classes=num_classes)

    # ----------------------------------------------------------------- helpers
    def _warn_empty(self, source: str) -> None:
        empty = self.empty_classes
        if empty:
            warnings.warn(
                f"{source}: {len(empty)} classes have no training images "
                f"{_fmt_list([self.class_names[i] for i in empty])}; the raw/relative/base2/base10/gombit/normit "
                "variants are infinite for them, use variant='smooth'.",
                stacklevel=3,
            )

    def summary(self, many: int = 100, few: int = 20, by: str = "image", top: int = 5) -> dict[str, Any]:
        """An imbalance report (used by ``iif stats``): sizes, counts, shot groups, head and tail classes."""
        n = self.counts(by)
        shots = self.shot_groups(many, few, by)
        nonzero = n[n > 0]
        order = np.argsort(-n, kind="stable")
        top = max(0, min(int(top), self.num_classes))

        def row(i: int) -> dict[str, Any]:
            return {"index": int(i), "id": self.class_ids[i], "name": self.class_names[i],
                    "images": int(self.image_counts[i]), "instances": int(self.object_counts[i])}

        imb = self.imbalance(by)
        report: dict[str, Any] = {
            "task": self.task,
            "by": by,
            "num_classes": self.num_classes,
            "num_images": self.num_images,
            "num_instances": self.num_instances,
            "min_count": int(n.min()),
            "max_count": int(n.max()),
            "min_nonzero_count": int(nonzero.min()) if nonzero.size else None,
            "imbalance_factor": None if math.isnan(imb) else imb,
            "empty_classes": len(self.empty_classes),
            "shot_thresholds": {"many": many, "few": few},
            "shot_groups": {g: int(np.sum(shots == g)) for g in ("many", "medium", "few")},
            "lvis_groups": None,
            "head": [row(i) for i in order[:top]],
            "tail": [row(i) for i in order[::-1][:top][::-1]] if top else [],
        }
        if self.groups is not None:
            g = np.asarray(self.groups)
            report["lvis_groups"] = {k: int(np.sum(g == k)) for k in ("r", "c", "f")}
        return report


def _is_int(text: str) -> bool:
    t = text[1:] if text[:1] in "+-" else text
    return t.isdigit() and t.isascii()


def _parse_count(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value < 0 or value != round(value) or value > MAX_COUNT:
        raise ValueError(text)
    return int(round(value))


def _recover_total(counts: np.ndarray, raw: list[float]) -> int | None:
    """K from ``raw = ln(K / n)`` of the largest finite-weight class (exact after rounding)."""
    raw_arr = np.asarray(raw, dtype=np.float64)
    ok = (counts > 0) & np.isfinite(raw_arr)
    if not ok.any():
        return None
    i = int(np.flatnonzero(ok)[np.argmax(counts[ok])])
    try:
        k = float(counts[i]) * math.exp(raw_arr[i])
    except OverflowError:
        k = math.inf
    if not math.isfinite(k) or k > MAX_COUNT:
        raise IIFError(f"the raw weight {float(raw_arr[i])!r} of a class with {int(counts[i])} images implies K = n * exp(raw) "
                       f"above 2**53; the table is corrupt, re-export it with ClassFrequency.to_csv.")
    return int(round(k))
