"""List files (the one parser, :func:`parse_list_file`), label files and label arrays, datasets with ``targets``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import IIFError
from .common import MAX_CLASSES, REMAP_HINT, Counts, ListEntry, PathLike, _content_lines, _is_int, read_text_lines


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
