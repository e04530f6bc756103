"""COCO / LVIS annotation json: :func:`read_coco` and :func:`check_lvis_fields`."""

from __future__ import annotations

import os
from operator import itemgetter
from typing import Any, Mapping

import numpy as np

from ..errors import IIFError
from .common import Counts, PathLike, _warn_empty, format_list, lvis_group_letters, read_json


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


def _coco_lists(data: Any, name: str) -> tuple[list, list, list]:
    """``categories``, ``annotations`` and ``images`` of a COCO/LVIS object, each checked to be a list."""
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
    if not data["categories"]:
        raise IIFError(f"{name}: 'categories' is empty; there are no classes to count.")
    return data["categories"], data["annotations"], data["images"]


def _refuse_duplicates(sorted_ids: np.ndarray, what: str, name: str) -> None:
    """Refuse repeated ids among ``sorted_ids`` (``what``: "category" or "image")."""
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise IIFError(f"{name}: duplicate {what} ids {format_list(np.unique(dup).tolist())}; ids must be unique.")


def _positions(name: str, known: np.ndarray, ids: np.ndarray, field_name: str, section: str) -> np.ndarray:
    """Index of each annotation's ``field_name`` among the sorted ``known`` ids; unknown ids refused."""
    pos, missing = index_of(known, ids)
    if missing.any():
        bad = np.flatnonzero(missing)
        raise IIFError(
            f"{name}: {bad.size} annotations point at unknown {field_name.replace('_', ' ')}s "
            f"{format_list(np.unique(ids[bad]).tolist())} (first is annotations[{int(bad[0])}]); "
            f"every {field_name} must appear in '{section}'."
        )
    return pos


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
    cats, anns, images = _coco_lists(data, name)
    cat_ids = int_column(cats, "id", "categories", name)
    order = np.argsort(cat_ids, kind="stable")
    sorted_cat = cat_ids[order]
    _refuse_duplicates(sorted_cat, "category", name)
    img_ids = np.sort(int_column(images, "id", "images", name))
    _refuse_duplicates(img_ids, "image", name)

    ann_cat = int_column(anns, "category_id", "annotations", name)
    ann_img = int_column(anns, "image_id", "annotations", name)
    ci = _positions(name, sorted_cat, ann_cat, "category_id", "categories")
    ii = _positions(name, img_ids, ann_img, "image_id", "images")
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
