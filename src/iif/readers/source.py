"""Picking the reader by what a path is: :func:`read_source`."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import IIFError
from .common import SAVED_FORMAT, _SOURCE_KINDS, Counts, PathLike, _content_lines, read_json, read_text_lines
from .coco import read_coco
from .folders import read_folder, train_split_of
from .labels import read_label_lines, read_list_file, read_npy_labels
from .tables import read_counts_list, read_csv, read_saved


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
