"""What every reader shares: the bounds and constants, :class:`Counts` and :class:`ListEntry`, JSON and
text files read with one-line errors."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence, Union

import numpy as np

from ..errors import IIFError


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
