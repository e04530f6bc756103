"""Files iif writes itself: weight tables (:func:`read_csv`), ``ClassFrequency.save`` files, lists of counts."""

from __future__ import annotations

import csv
import math
from typing import Any, Mapping

import numpy as np

from ..errors import IIFError
from .common import (MAX_CLASSES, MAX_COUNT, SAVED_FORMAT, SAVED_FORMAT_VERSION, Counts, PathLike,
                     lvis_group_letters, read_text_lines)


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
