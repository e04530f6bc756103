"""Readers of per-class counts: one plain function per kind of source, each returning :class:`Counts`.

:class:`iif.ClassFrequency` is the data (counts, names, groups) plus the weights; this module is how
the data gets read. Every reader returns a :class:`Counts` (the fields of a ``ClassFrequency``, not yet
validated); ``ClassFrequency.from_*`` are one-line delegations to these functions.

=====================  ==========================================================================
reader                 source
=====================  ==========================================================================
``count_labels``       one integer label per image (list, numpy array, tensor)
``read_dataset``       any dataset exposing ``targets`` (names from ``classes``), or a ``Subset``
``read_folder``        an ImageFolder tree ``root/<class>/**/<image>``
``read_list_file``     a ``path label`` list file (ImageNet-LT, Places-LT, iNaturalist-LT)
``read_label_lines``   a text file with one integer label per line
``read_npy_labels``    a ``.npy`` array of integer labels
``read_coco``          COCO / LVIS annotation json (``task = "detection"``)
``read_csv``           a per-variant weight table (``ClassFrequency.to_csv`` or the authors' ``idf.csv``)
``read_saved``         counts written by ``ClassFrequency.save``
``read_counts_list``   a plain JSON list of per-class counts, e.g. ``[500, 50, 5]``
``read_source``        picks one of the above from a path
=====================  ==========================================================================

List files have ONE parser, :func:`parse_list_file`, used by the counting readers here and by the
list-file datasets of :mod:`iif.data.lists` (``iif train``), so a list is read the same way everywhere:

* one ``path label`` entry per line; the label is the last field, separated from the path by any run of
  spaces or tabs; the path is the rest of the line with surrounding whitespace removed, so a path may
  contain spaces inside it (not at its start or end);
* blank lines and lines whose first non-blank character is ``#`` are skipped;
* the label is a non-negative integer written in ASCII digits (below ``num_classes`` when it is given);
* the file is UTF-8 (a byte-order mark is ignored), with ``\\n`` or ``\\r\\n`` line ends.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence, Union

import numpy as np

from .errors import IIFError

__all__ = [
    "Counts", "ListEntry", "IMG_EXTENSIONS", "LVIS_GROUP_BOUNDS", "MAX_CLASSES", "MAX_COUNT", "SAVED_FORMAT",
    "SAVED_FORMAT_VERSION", "SPLIT_NAMES", "lvis_group_letters", "read_json", "read_text_lines", "parse_list_file",
    "list_file_error", "count_labels", "read_dataset", "read_folder", "walk_image_files", "FolderWalk",
    "special_files_message", "train_split_of", "read_list_file",
    "read_label_lines", "read_npy_labels", "read_coco", "check_lvis_fields", "read_csv", "read_saved",
    "read_counts_list", "read_source", "int_column", "index_of", "format_list",
]

PathLike = Union[str, os.PathLike]

# The extensions torchvision's ImageFolder accepts (tests check the two lists agree). Written out rather
# than imported so that ``import iif`` does not pay for importing torchvision (seconds on a busy machine).
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# LVIS frequency groups by training image count: rare 1-10, common 11-100, frequent > 100.
LVIS_GROUP_BOUNDS = (10, 100)

#: Marker written into ``ClassFrequency.save`` files so :func:`read_source` can tell them from COCO json.
SAVED_FORMAT = "iif.ClassFrequency"
SAVED_FORMAT_VERSION = 1

#: Sub-folder names of a dataset root split into train/val/test trees (as ``iif train folder`` reads it).
SPLIT_NAMES = ("train", "val", "test")

# Bounds checked before anything is allocated. A label is a class index, so a counter over labels allocates
# one slot per index up to the largest: a label of 5e9 would ask for 40 GB. Ten million classes (80 MB of
# counts) is ~500x more than the largest public label sets (ImageNet-21k: 21,841; iNat2021: 10,000), so
# anything above is a corrupt file or raw ids that need remapping, not a real class count.
MAX_CLASSES = 10_000_000
# Per-class counts (and K) above 2**53 are no longer exact in float64, which the weights are computed in;
# no dataset comes near (all of LAION-5B is < 2**33 images).
MAX_COUNT = 2**53

REMAP_HINT = ("class labels must be indices 0..C-1 with C <= 10,000,000; remap raw ids first, e.g. "
              "numpy.unique(labels, return_inverse=True)")

_SOURCE_KINDS = ("a dataset folder, a COCO/LVIS json, a list file, a labels .txt/.npy, a weight-table .csv, "
                 "saved counts .json or a JSON list of counts")


@dataclass
class Counts:
    """What a reader found: the fields of a :class:`iif.ClassFrequency` (validated when one is built).

    ``image_counts``/``object_counts``: images containing / instances of each class (paper Eq. 10);
    ``num_images``/``num_instances``: the detection normalisers K; ``class_names``/``class_ids``: empty
    for the defaults (``"0".."C-1"`` and ``0..C-1``); ``groups``: LVIS ``r``/``c``/``f`` letters or None.
    """

    image_counts: Any
    object_counts: Any
    num_images: Any
    num_instances: Any
    class_names: list = field(default_factory=list)
    class_ids: list = field(default_factory=list)
    groups: list | None = None
    task: str = "classification"

    @classmethod
    def of_classes(cls, counts: np.ndarray, class_names: Sequence[str] | None = None) -> "Counts":
        """Classification counts (one label per image): image = object counts, K = their sum."""
        counts = np.asarray(counts, dtype=np.int64)
        total = int(counts.sum())
        return cls(counts, counts.copy(), total, total, list(class_names) if class_names is not None else [])


class ListEntry(NamedTuple):
    """One entry of a list file: its 1-based line number, the path as written and the label."""

    line: int
    path: str
    label: int


def lvis_group_letters(image_counts: Sequence[int] | np.ndarray) -> list[str]:
    """LVIS ``r``/``c``/``f`` letter per class from training image counts (r <= 10 < c <= 100 < f).

    A class with zero images gets ``r`` (it is rarer than any rare class).
    """
    n = np.asarray(image_counts, dtype=np.int64)
    rare, common = LVIS_GROUP_BOUNDS
    return np.where(n <= rare, "r", np.where(n <= common, "c", "f")).tolist()


def format_list(items: Iterable[Any], limit: int = 10) -> str:
    """``[a, b, ...] (N in all)``: the first ``limit`` items of a list for an error message."""
    items = list(items)
    shown = ", ".join(str(x) for x in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)} in all)"


def _warn_empty(counts: Counts, source: str) -> None:
    empty = np.flatnonzero(np.asarray(counts.image_counts) == 0).tolist()
    if empty:
        names = [counts.class_names[i] if counts.class_names else str(i) for i in empty]
        warnings.warn(
            f"{source}: {len(empty)} classes have no training images {format_list(names)}; the "
            "raw/relative/base2/base10/gombit/normit variants are infinite for them, use variant='smooth'.",
            stacklevel=4,
        )


# ----------------------------------------------------------------------------------------------- files


def read_json(path: PathLike) -> Any:
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


def read_text_lines(path: PathLike) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark ignored); errors as one-line :class:`IIFError`."""
    path = Path(path)
    if not path.is_file():
        raise IIFError(f"{path}: no such file; check the path.")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise IIFError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected a text file.") from None


def _is_int(text: str) -> bool:
    t = text[1:] if text[:1] in "+-" else text
    return t.isdigit() and t.isascii()


def _content_lines(lines: list[str]) -> Iterable[tuple[int, str]]:
    """``(line number, stripped text)`` of the lines that are neither blank nor ``#`` comments."""
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield lineno, text


# ----------------------------------------------------------------------------------------------- list files


def parse_list_file(path: PathLike, num_classes: int | None = None) -> tuple[list[ListEntry], list[tuple[int, str]]]:
    """Read a ``path label`` list file: its entries and its problems (the module docstring has the rules).

    Returns ``(entries, problems)``; ``problems`` are ``(line number, message)`` for lines that are not
    ``path label`` or whose label is not an integer in ``[0, num_classes)`` (``[0, 10,000,000)`` when
    ``num_classes`` is None). Those lines are left out of ``entries``. A missing or non-UTF-8 file raises.
    """
    entries: list[ListEntry] = []
    problems: list[tuple[int, str]] = []
    limit = MAX_CLASSES if num_classes is None else int(num_classes)
    for lineno, text in _content_lines(read_text_lines(path)):
        parts = text.rsplit(None, 1)
        if len(parts) != 2:
            problems.append((lineno, f"line {lineno}: expected 'path label', got {text!r:.120}"))
            continue
        rel, label = parts[0].strip(), parts[1]
        if not _is_int(label):
            problems.append((lineno, f"line {lineno}: label {label!r:.40} is not an integer ({text!r:.120})"))
            continue
        y = int(label) if len(label) < 20 else MAX_CLASSES
        if not 0 <= y < limit:
            where = (f"outside [0, {num_classes})" if num_classes is not None else
                     "is negative" if y < 0 else f"is too large ({REMAP_HINT})")
            problems.append((lineno, f"line {lineno}: label {label:.30} {where} ({text!r:.120})"))
            continue
        entries.append(ListEntry(lineno, rel, y))
    return entries, problems


def list_file_error(path: PathLike, problems: Sequence[tuple[int, str]], fix: str, show: int = 5) -> IIFError:
    """One :class:`IIFError` listing the first ``show`` problems (by line) of a list file and their number."""
    problems = sorted(problems)
    shown = "; ".join(msg for _, msg in problems[:show])
    more = f" (and {len(problems) - show} more)" if len(problems) > show else ""
    return IIFError(f"{path}: {len(problems)} bad line(s): {shown}{more}. {fix}")


def read_list_file(path: PathLike, num_classes: int | None = None) -> Counts:
    """Counts of a ``path label`` list file (ImageNet-LT, Places-LT, iNaturalist-LT split files)."""
    entries, problems = parse_list_file(path, num_classes)
    if problems:
        raise list_file_error(path, problems, "Each line must be 'relative/path.jpg label' with a non-negative "
                              "integer label (blank lines and '#' comments are skipped).")
    if not entries:
        raise IIFError(f"{path}: no entries; expected lines of 'relative/path.jpg label'.")
    return count_labels(np.fromiter((e.label for e in entries), dtype=np.int64, count=len(entries)), num_classes)


def read_label_lines(path: PathLike, num_classes: int | None = None) -> Counts:
    """Counts of a text file holding one integer label per line (blank lines and ``#`` comments skipped)."""
    labels = []
    for lineno, text in _content_lines(read_text_lines(path)):
        if not _is_int(text) or int(text) < 0:
            raise IIFError(f"{path}: line {lineno} is {text!r:.120}; expected one non-negative integer label per line.")
        if len(text) > 9 and int(text) >= MAX_CLASSES:
            raise IIFError(f"{path}: line {lineno} has label {text:.30}; {REMAP_HINT}.")
        labels.append(int(text))
    if not labels:
        raise IIFError(f"{path}: no labels; expected one integer label per line.")
    return count_labels(np.asarray(labels, dtype=np.int64), num_classes)


def read_npy_labels(path: PathLike, num_classes: int | None = None) -> Counts:
    """Counts of a ``.npy`` array of integer labels, one per image (read without pickle)."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise IIFError(f"{path}: not a readable .npy array ({exc}); save the labels with numpy.save.") from None
    return count_labels(labels, num_classes)


# ----------------------------------------------------------------------------------------------- labels


def count_labels(labels: Any, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None) -> Counts:
    """Counts of one integer label per image (array, list or tensor); ``num_classes`` pads empty classes."""
    if hasattr(labels, "detach"):  # a torch tensor
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
        raise IIFError(f"labels: found label {float(arr.max()):.6g}; {REMAP_HINT}.")
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
    return Counts.of_classes(np.bincount(arr, minlength=num_classes), class_names)


def read_dataset(dataset: Any, num_classes: int | None = None) -> Counts:
    """Counts of any dataset exposing ``targets`` (names from ``classes`` when present).

    A ``torch.utils.data.Subset`` of such a dataset is counted over its ``indices``.
    """
    names = getattr(dataset, "classes", None)
    targets = getattr(dataset, "targets", None)
    if targets is None and hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        base = dataset.dataset
        base_targets = getattr(base, "targets", None)
        if base_targets is not None:
            if hasattr(base_targets, "detach"):
                base_targets = base_targets.detach().cpu().numpy()
            targets = np.asarray(base_targets)[np.asarray(dataset.indices, dtype=np.int64)]
            names = names if names is not None else getattr(base, "classes", None)
    if targets is None:
        raise IIFError(
            f"{type(dataset).__name__} has no 'targets' attribute; pass the labels to "
            "ClassFrequency.from_labels(labels) instead."
        )
    if names is not None:
        names = [str(n) for n in names]
    return count_labels(targets, num_classes=num_classes, class_names=names)


# ----------------------------------------------------------------------------------------------- folders


def train_split_of(root: PathLike) -> Path | None:
    """``root/train`` when ``root`` is a dataset split into ``train/`` (``val/``, ``test/``) trees, else None.

    The rule of ``iif train folder``: a root holding a ``train`` folder is a split root, and its classes
    are the class folders of ``train/``.
    """
    train = Path(root) / SPLIT_NAMES[0]
    return train if train.is_dir() else None


class FolderWalk(NamedTuple):
    """What :func:`walk_image_files` found under one folder."""

    #: image files (regular files, each real file once), in torchvision ``make_dataset``'s order
    files: list[str]
    #: ``(path, kind)`` of entries named like images that are FIFOs, sockets or devices (never opened)
    special: list[tuple[str, str]]


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def walk_image_files(top: PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> FolderWalk:
    """Image files under ``top`` (recursively, following symlinks), each real directory and file once.

    The walk of every user folder (``iif stats``, ``iif train folder``, ``iif predict DIR``): ``os.scandir``
    plus one ``stat`` per image-named entry, no file opened. A directory is entered once per real identity
    ``(st_dev, st_ino)``, and ``top`` and its ancestors count as entered, so a link to itself, to a parent or to
    ``/`` ends the walk instead of repeating it (``os.walk(followlinks=True)``, as torchvision's ImageFolder
    walks, grows without end on two self-links). A file reached twice (through links, or a hard link) is listed
    once, under the path met first (directories are walked in name order). Names match ``extensions``
    case-insensitively. FIFOs, sockets and devices with such names go to ``special`` (opening a FIFO would
    block); a dangling link with such a name is listed, so the image check names it. Unreadable sub-folders
    are skipped, as ``os.walk`` does. ``files`` is sorted by (folder, name), torchvision's order, so a tree
    without links gives exactly the samples and splits ``ImageFolder`` would.
    """
    exts = tuple(e.lower() for e in extensions)
    top = os.fspath(top)
    seen_dirs: set[tuple[int, int]] = set()
    real = os.path.realpath(top)
    while True:  # top and every ancestor: entering one of them again would only loop
        try:
            st = os.stat(real)
            seen_dirs.add((st.st_dev, st.st_ino))
        except OSError:
            pass
        parent = os.path.dirname(real)
        if parent == real:
            break
        real = parent
    seen_files: set[tuple[int, int]] = set()
    found: list[tuple[str, str]] = []
    special: list[tuple[str, str]] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            is_image = e.name.lower().endswith(exts)
            try:
                if not is_image and not e.is_dir():  # other files: no stat needed
                    continue
                st = e.stat()  # follows links
            except OSError:  # a dangling link (or a file gone meanwhile)
                if is_image:
                    found.append((folder, e.name))
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if key not in seen_dirs:
                    seen_dirs.add(key)
                    subdirs.append(e.path)
            elif not is_image:
                continue
            elif not stat.S_ISREG(st.st_mode):
                special.append((e.path, _special_kind(st.st_mode)))
            elif key not in seen_files:
                seen_files.add(key)
                found.append((folder, e.name))
        stack.extend(reversed(subdirs))  # depth first, in name order
    found.sort()
    return FolderWalk([os.path.join(d, n) for d, n in found], special)


def special_files_message(special: Sequence[tuple[str, str]], where: str) -> str | None:
    """The one warning for the ``special`` entries of one or more walks (None when there are none)."""
    if not special:
        return None
    path, kind = special[0]
    return (f"{where}: skipped {len(special)} file(s) named like images that are not regular files (FIFOs, "
            f"sockets or devices), e.g. {path} ({kind}); remove them or replace them with the image files")


def read_folder(root: PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> Counts:
    """Counts of an ImageFolder tree ``root/<class>/**/<image>``; classes sorted by name.

    Files count when their extension (case-insensitive) is one of ``extensions`` (torchvision's
    ``IMG_EXTENSIONS`` by default), searched recursively through links as torchvision's ``ImageFolder`` does,
    but each real folder and file once per class (:func:`walk_image_files`); FIFOs, sockets and devices
    named like images are skipped with one warning.
    Classes without images are kept with count 0 and reported with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise IIFError(f"{root}: not a directory; from_folder expects one sub-directory per class.")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise IIFError(f"{root}: no class sub-directories; lay the images out as {root}/<class_name>/<image>.jpg.")
    counts = np.zeros(len(classes), dtype=np.int64)
    special: list[tuple[str, str]] = []
    for i, name in enumerate(classes):
        walk = walk_image_files(root / name, extensions)
        counts[i] = len(walk.files)
        special += walk.special
    message = special_files_message(special, str(root))
    if message:
        warnings.warn(message, stacklevel=3)
    out = Counts.of_classes(counts, classes)
    _warn_empty(out, str(root))
    return out


# ----------------------------------------------------------------------------------------------- COCO / LVIS


def int_column(items: list, key: str, what: str, source: str) -> np.ndarray:
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


def index_of(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def read_coco(source: PathLike | Mapping[str, Any], check_lvis: bool = False, *, name: str | None = None) -> Counts:
    """Image and instance counts of a COCO or LVIS annotation json (a path or the loaded dict).

    Class order is the categories sorted by id (``class_ids`` keeps the ids). The image count of a
    class is the number of distinct images with at least one of its annotations; the instance count
    is its number of annotations; ``num_images = len(images)`` (images without annotations count,
    as in the official tables) and ``num_instances = len(annotations)``. ``task`` is ``"detection"``.
    ``groups`` holds LVIS's ``frequency`` letters when every category has one, else letters derived
    from the counted image counts (r: <= 10, c: 11-100, f: > 100). Categories without annotations are
    kept (count 0) and reported with a warning. ``check_lvis``: see :func:`check_lvis_fields`.

    The annotations are read in one pass extracting two ints each; the rest is numpy, so counting
    costs little beyond ``json.load`` (see ``benchmarks/bench_count_coco.py``).
    """
    if isinstance(source, (str, os.PathLike)):
        data, name = read_json(source), name or str(source)
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

    cat_ids = int_column(cats, "id", "categories", name)
    order = np.argsort(cat_ids, kind="stable")
    sorted_cat = cat_ids[order]
    dup = sorted_cat[1:][sorted_cat[1:] == sorted_cat[:-1]]
    if dup.size:
        raise IIFError(f"{name}: duplicate category ids {format_list(np.unique(dup).tolist())}; ids must be unique.")
    img_ids = np.sort(int_column(images, "id", "images", name))
    dup = img_ids[1:][img_ids[1:] == img_ids[:-1]]
    if dup.size:
        raise IIFError(f"{name}: duplicate image ids {format_list(np.unique(dup).tolist())}; ids must be unique.")

    ann_cat = int_column(anns, "category_id", "annotations", name)
    ann_img = int_column(anns, "image_id", "annotations", name)

    def positions(known: np.ndarray, ids: np.ndarray, field_name: str, section: str) -> np.ndarray:
        pos, missing = index_of(known, ids)
        if missing.any():
            bad = np.flatnonzero(missing)
            raise IIFError(
                f"{name}: {bad.size} annotations point at unknown {field_name.replace('_', ' ')}s "
                f"{format_list(np.unique(ids[bad]).tolist())} (first is annotations[{int(bad[0])}]); "
                f"every {field_name} must appear in '{section}'."
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
    out = Counts(image_counts, object_counts, len(images), len(anns), class_names=names,
                 class_ids=sorted_cat.tolist(), groups=groups, task="detection")
    if check_lvis:
        check_lvis_fields(out, data, name=name)
    _warn_empty(out, name)
    return out


def check_lvis_fields(counts: Any, source: PathLike | Mapping[str, Any], *, name: str | None = None) -> int:
    """Check that ``counts`` (a :class:`Counts` or ``ClassFrequency``) reproduce the LVIS category fields.

    Compares ``image_count``, ``instance_count`` (and ``frequency`` when ``counts`` has groups) of every
    category carrying them; returns how many categories carry them (0: nothing to check) and raises
    :class:`IIFError` listing the mismatches. Use it on a *train* json: LVIS val files carry the train counts.
    """
    data = source if isinstance(source, Mapping) else read_json(source)
    name = name or ("annotation dict" if isinstance(source, Mapping) else str(source))
    image_counts, object_counts = np.asarray(counts.image_counts), np.asarray(counts.object_counts)
    ids = list(counts.class_ids) or list(range(image_counts.size))
    names = list(counts.class_names) or [str(i) for i in range(image_counts.size)]
    index = {cid: i for i, cid in enumerate(ids)}
    checked, wrong = 0, []
    for cat in data.get("categories", []):
        if "image_count" not in cat and "instance_count" not in cat:
            continue
        i = index.get(cat.get("id"))
        if i is None:
            raise IIFError(f"{name}: category id {cat.get('id')!r} is not one of these counts' classes.")
        checked += 1
        ours = {"image_count": int(image_counts[i]), "instance_count": int(object_counts[i])}
        if counts.groups is not None:
            ours["frequency"] = lvis_group_letters([image_counts[i]])[0]
        for key, value in ours.items():
            if key in cat and cat[key] != value:
                wrong.append(f"{names[i]} (id {ids[i]}) {key} {cat[key]} != counted {value}")
    if wrong:
        raise IIFError(
            f"{name}: counting the annotations does not reproduce the LVIS category fields for "
            f"{len(wrong)} entries: {format_list(wrong, 5)}; is this the train json these fields describe?"
        )
    return checked


# ----------------------------------------------------------------------------------------------- our own files


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


def read_csv(path: PathLike) -> Counts:
    """Read ``img_freq``/``instance_freq`` back from a weight table (ours or the official ``idf.csv``).

    ``category``/``name`` columns are used when present. K is recovered from the ``raw`` and
    ``raw_obj`` columns (``K = n * exp(raw)``) as ``num_images``/``num_instances``; without them
    the sums of the counts are used. ``task`` is ``"detection"`` when image and instance counts
    differ or K differs from the sum of counts, else ``"classification"``; detection tables get
    ``groups`` derived from the image counts (r <= 10 < c <= 100 < f), as :func:`read_coco` does
    when the json has no LVIS ``frequency``.
    """
    rows = list(csv.reader(read_text_lines(path)))
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
    return Counts(img, obj, k_img, k_obj, class_names=names, class_ids=ids,
                  groups=None if classification else lvis_group_letters(img),
                  task="classification" if classification else "detection")


def read_saved(data: Any, source: str = "dict") -> Counts:
    """The fields of a ``ClassFrequency.to_dict()`` / ``save`` file, format and field types checked."""
    if not isinstance(data, Mapping) or data.get("format") != SAVED_FORMAT:
        raise IIFError(
            f"{source}: not a ClassFrequency file (no \"format\": \"{SAVED_FORMAT}\"); for COCO/LVIS json use "
            "ClassFrequency.from_coco, or ClassFrequency.from_source to detect the kind."
        )
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise IIFError(f"{source}: \"version\" is {version!r:.40}, not an integer; re-save it with ClassFrequency.save.")
    if version > SAVED_FORMAT_VERSION:
        raise IIFError(f"{source}: written by a newer iif (version {data['version']}); upgrade iif to read it.")
    for key, kinds in (("class_names", (list,)), ("class_ids", (list,)), ("groups", (list, type(None))),
                       ("task", (str,))):
        if key in data and not isinstance(data[key], kinds):
            raise IIFError(f"{source}: field {key!r} is a {type(data[key]).__name__}, expected "
                           f"{' or '.join('null' if k is type(None) else k.__name__ for k in kinds)}; "
                           "re-save it with ClassFrequency.save.")
    try:
        return Counts(data["image_counts"], data["object_counts"], data["num_images"], data["num_instances"],
                      class_names=data.get("class_names") or [], class_ids=data.get("class_ids") or [],
                      groups=data.get("groups"), task=data.get("task", "classification"))
    except KeyError as exc:
        raise IIFError(f"{source}: missing field {exc.args[0]!r}; re-save it with ClassFrequency.save.") from None


def read_counts_list(data: Any, source: str = "list") -> Counts:
    """Classification counts from a plain list of per-class counts, e.g. ``[500, 50, 5]`` (K = their sum)."""
    if not isinstance(data, (list, tuple)) or not data:
        raise IIFError(f"{source}: expected a non-empty JSON list of per-class counts, e.g. [500, 50, 5].")
    bad = next((i for i, v in enumerate(data)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or v < 0 or v != int(v) or v > MAX_COUNT), None)
    if bad is not None:
        raise IIFError(f"{source}: entry {bad} is {data[bad]!r:.40}; every entry must be a whole number of images "
                       "(>= 0), one per class, e.g. [500, 50, 5].")
    if len(data) > MAX_CLASSES:
        raise IIFError(f"{source}: {len(data)} entries; at most {MAX_CLASSES:,} classes are supported.")
    return Counts.of_classes(np.asarray([int(v) for v in data], dtype=np.int64))


# ----------------------------------------------------------------------------------------------- dispatch


def read_source(source: PathLike, num_classes: int | None = None) -> Counts:
    """Counts from a path, picking the reader by what it is.

    * a directory: :func:`read_folder`; a root holding a ``train/`` folder (a dataset split into
      ``train/ val/ test/`` trees, as ``iif train folder`` reads it) counts ``train/``;
    * ``.json``: counts saved by ``ClassFrequency.save`` (:func:`read_saved`), COCO/LVIS annotations
      (:func:`read_coco`) or a plain list of per-class counts (:func:`read_counts_list`);
    * ``.csv``: a weight table (:func:`read_csv`);
    * ``.npy``: a 1-D array of integer labels, one per image;
    * any other text file (``.txt``, ``.lst``, ...): a ``path label`` list file (:func:`read_list_file`)
      or, when the first entry holds a single field, one integer label per line (:func:`read_label_lines`).

    ``num_classes`` pads the label-based sources (list file, label lines, ``.npy``) with empty classes.
    """
    path = Path(source)
    if path.is_dir():
        return read_folder(train_split_of(path) or path)
    if not path.exists():
        raise IIFError(f"{path}: no such file or directory; give {_SOURCE_KINDS}.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = read_json(path)
        if isinstance(data, Mapping) and data.get("format") == SAVED_FORMAT:
            return read_saved(data, source=str(path))
        if isinstance(data, Mapping) and ("annotations" in data or "categories" in data):
            return read_coco(data, name=str(path))
        if isinstance(data, list):
            return read_counts_list(data, source=str(path))
        raise IIFError(f"{path}: json is neither COCO/LVIS annotations (no 'annotations'/'categories'), "
                       f"counts saved by ClassFrequency.save (no \"format\": \"{SAVED_FORMAT}\") nor a list of "
                       "per-class counts such as [500, 50, 5].")
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".npy":
        return read_npy_labels(path, num_classes)
    first = next((text.split() for _, text in _content_lines(read_text_lines(path))), None)
    if first is None:
        raise IIFError(f"{path}: empty file; expected 'path label' lines or one label per line.")
    if len(first) == 1:
        return read_label_lines(path, num_classes)
    return read_list_file(path, num_classes)
