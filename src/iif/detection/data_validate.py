"""The checks of a COCO/LVIS instances json before training (:func:`validate_annotations`), one function per
section, run in a fixed order so that the problem lines (and the first of them) come in the same order.

Moved out of :mod:`iif.detection.data` (issue 16), which re-exports :func:`validate_annotations`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import IIFError
from .data_checks import (
    _SHOW,
    POLYGON_SLACK,
    PathLike,
    _duplicates,
    _field,
    _image_header_sizes,
    _int_ids,
    _is_int,
    _is_num,
    _is_size,
    _missing_files,
    _Problems,
    _rle_list_counts_ok,
    image_paths,
    rle_string_counts_ok,
)

__all__ = ["validate_annotations"]


def validate_annotations(ann: Mapping[str, Any], image_root: PathLike | None = None, *,
                         source: str = "annotations", masks: bool = False, headers: bool = True) -> None:
    """Check a COCO/LVIS instances json before training; raise one :class:`IIFError` listing every problem.

    Each kind of problem is one part of the message with its count, the first ids and the fix:

    * wrong JSON types: ``images``/``annotations``/``categories`` not lists of objects, ids that are not
      integers, image ``width``/``height`` that are not positive whole numbers, a ``bbox`` that is not four finite
      numbers, a ``segmentation`` that is neither polygons (lists of an even number, >= 6, of numbers) nor an
      RLE dict with ``size`` and ``counts``;
    * duplicate image, annotation or category ids;
    * annotations whose ``category_id`` is not in ``categories`` or whose ``image_id`` is not in ``images``;
    * ``iscrowd`` other than 0 or 1 (absent counts as 0): pycocotools and the training targets treat any truthy
      value (``"no"``) as a crowd region, which silently drops the object;
    * boxes with width or height <= 0, boxes not finite in float32 (``1e39`` is finite in float64 but inf in the
      detectors' float32, where it crashes ``roi_align``), and boxes reaching outside ``[0, width] x [0, height]``
      by more than :data:`POLYGON_SLACK` (2%) of that side (at least 1 px);
    * segmentations: with ``masks`` (a model with a mask branch) every annotation needs one (missing, ``null``,
      ``[]`` or an RLE of size 0 are refused); polygon coordinates must be finite (also in float32), a polygon
      vertex may lie outside the image by at most :data:`POLYGON_SLACK`; an RLE's ``size`` must be the image's
      ``[height, width]`` and its ``counts`` (a compressed string or an uncompressed list) must decode to
      non-negative runs summing to height * width (:func:`rle_string_counts_ok`);
    * with ``image_root``: images that name no file (neither ``file_name`` nor ``coco_url``) or whose file is
      missing (see :func:`image_paths`; one directory listing per folder, so 100k images take a fraction of a
      second), and with ``headers`` each file's header: not an image, more pixels than PIL's decompression-bomb
      limit (``PIL.Image.MAX_IMAGE_PIXELS``), or a size other than the json's width/height (PNG headers are
      read directly, other formats with ``PIL.Image.open``, which decodes nothing).

    ``source`` names the json in the message. Measured cost: docs/detection-training.md ("What is checked").
    """
    problems = _Problems(source)
    problems = _Problems(source)
    images, anns, cats = _check_sections(ann, source, problems)
    ids = _check_ids(images, anns, cats, problems)
    _check_references(ids, problems)
    _check_crowd(anns, ids, problems)
    geo = _image_size_per_annotation(ids)
    _check_boxes(anns, ids, geo, problems)
    _check_segmentations(anns, ids, geo, masks, problems)
    if image_root is not None:
        _check_files(images, ids, geo.size_by_id, image_root, headers, problems)
    problems.raise_if_any()


def _check_sections(ann: Any, source: str, problems: _Problems) -> tuple[list[dict], list[dict], list[dict]]:
    """The top level: an object with the three lists (raised at once when not), then the entries that are
    JSON objects of each list (the others are a problem line)."""
    if not isinstance(ann, Mapping):
        raise IIFError(f"{source}: top level is a {type(ann).__name__}, expected a COCO/LVIS object with "
                       "'images', 'annotations' and 'categories'.")
    for key in ("images", "annotations", "categories"):
        if key not in ann:
            problems.lines.append(f"no {key!r} list: a COCO/LVIS instances json needs 'images', 'annotations' and "
                                  "'categories'")
        elif not isinstance(ann[key], list):
            problems.lines.append(f"{key!r} is a {type(ann[key]).__name__}, not a list: fix the json")
    problems.raise_if_any()

    sections: dict[str, list[dict]] = {}
    for key in ("images", "annotations", "categories"):
        items = ann[key]
        not_dict = [i for i, it in enumerate(items) if not isinstance(it, dict)]
        problems.add(not_dict, f"entries of {key!r} are not JSON objects", "every entry must be an object",
                     label="positions")
        sections[key] = [it for it in items if isinstance(it, dict)] if not_dict else items
    return sections["images"], sections["annotations"], sections["categories"]


@dataclass
class _Ids:
    """The id arrays of the three lists (``bad_*``: where an id is not an integer) and the images' sizes."""

    cat_ids: np.ndarray
    img_ids: np.ndarray
    bad_img: np.ndarray
    widths: list[Any]
    heights: list[Any]
    ann_ids: np.ndarray
    bad_ann: np.ndarray
    ann_cat: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bad_c: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    ann_img: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bad_i: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def shown_ann(self, mask_or_positions) -> list[Any]:
        """Annotation ids to name (``annotations[k]`` where the id itself is bad)."""
        pos = np.asarray(mask_or_positions)
        pos = np.flatnonzero(pos) if pos.dtype == bool else pos.astype(np.int64)
        return [f"annotations[{k}]" if self.bad_ann[k] else int(self.ann_ids[k]) for k in pos.tolist()]


def _check_ids(images: list[dict], anns: list[dict], cats: list[dict], problems: _Problems) -> _Ids:
    """Integer, unique ids of categories, images and annotations; each image's positive whole-number size."""
    cat_ids, bad = _int_ids(_field(cats, "id"))
    problems.add(np.flatnonzero(bad).tolist(), "categories have no integer 'id'", "give every category an integer id",
                 label="positions")
    cat_ids = cat_ids[~bad]
    problems.add(_duplicates(cat_ids), "category ids are duplicated", "category ids must be unique")
    if not cats:
        problems.lines.append("'categories' is empty: list the classes the annotations use")

    img_ids, bad_img = _int_ids(_field(images, "id"))
    problems.add(np.flatnonzero(bad_img).tolist(), "images have no integer 'id'", "give every image an integer id",
                 label="positions")
    problems.add(_duplicates(img_ids[~bad_img]), "image ids are duplicated", "image ids must be unique")
    widths, heights = _field(images, "width"), _field(images, "height")
    bad_size = [int(i) for i, w, h, b in zip(img_ids, widths, heights, bad_img)
                if not b and not (_is_size(w) and _is_size(h))] if images else []
    problems.add(bad_size, "images have no positive whole-number 'width'/'height'",
                 "write each image's pixel size into the json")

    ann_ids, bad_ann = _int_ids(_field(anns, "id"))
    problems.add(np.flatnonzero(bad_ann).tolist(), "annotations have no integer 'id'",
                 "give every annotation an integer id", label="positions")
    problems.add(_duplicates(ann_ids[~bad_ann]), "annotation ids are duplicated", "annotation ids must be unique")
    ids = _Ids(cat_ids, img_ids, bad_img, widths, heights, ann_ids, bad_ann)
    ids.ann_cat, ids.bad_c = _int_ids(_field(anns, "category_id"))
    ids.ann_img, ids.bad_i = _int_ids(_field(anns, "image_id"))
    return ids


def _check_references(ids: _Ids, problems: _Problems) -> None:
    """Each annotation's ``category_id`` and ``image_id``: integers naming a listed category and image."""
    ann_cat, bad_c, ann_img, bad_i = ids.ann_cat, ids.bad_c, ids.ann_img, ids.bad_i
    problems.add(ids.shown_ann(bad_c | bad_i), "annotations have no integer 'category_id'/'image_id'",
                 "every annotation needs both")
    unknown_cat = ~bad_c & ~np.isin(ann_cat, ids.cat_ids)
    problems.add(ids.shown_ann(unknown_cat),
                 f"annotations have a category_id missing from 'categories' (category ids "
                 f"{', '.join(map(str, np.unique(ann_cat[unknown_cat])[:_SHOW].tolist()))})",
                 "add those categories or remove the annotations", label="annotation ids")
    good_img_ids = ids.img_ids[~ids.bad_img]
    unknown_img = ~bad_i & ~np.isin(ann_img, good_img_ids)
    problems.add(ids.shown_ann(unknown_img),
                 f"annotations point at image ids missing from 'images' (image ids "
                 f"{', '.join(map(str, np.unique(ann_img[unknown_img])[:_SHOW].tolist()))})",
                 "add those images or remove the annotations", label="annotation ids")


def _check_crowd(anns: list[dict], ids: _Ids, problems: _Problems) -> None:
    """``iscrowd`` 0, 1 or absent: pycocotools and the training targets treat any truthy value as a crowd region."""
    crowd_flags = _field(anns, "iscrowd")
    bad_crowd = [k for k, v in enumerate(crowd_flags) if not (v is None or (type(v) in (int, bool) and v in (0, 1)))]
    problems.add(ids.shown_ann(bad_crowd), "annotations have an 'iscrowd' other than 0 or 1",
                 "write \"iscrowd\": 0 for an object, 1 for a crowd region (or leave the key out)",
                 label="annotation ids")


@dataclass
class _Geometry:
    """``size_by_id``: image id -> (height, width) of the images with a good id and size; ``hw_of_ann``: (N, 2)
    height, width of each annotation's image (NaN where the image or its size is unknown; reported already);
    ``slack``: (N, 2) y, x slack of :data:`POLYGON_SLACK`, at least 1 px."""

    size_by_id: dict[int, tuple[int, int]]
    hw_of_ann: np.ndarray
    slack: np.ndarray


def _image_size_per_annotation(ids: _Ids) -> _Geometry:
    size_by_id: dict[int, tuple[int, int]] = {}
    for i, w, h, b in zip(ids.img_ids.tolist(), ids.widths, ids.heights, ids.bad_img.tolist()):
        if not b and _is_size(w) and _is_size(h):
            size_by_id[i] = (int(h), int(w))
    ann_img_list: list[Any] = ids.ann_img.tolist()
    if ids.bad_i.any():
        ann_img_list = [None if b else v for v, b in zip(ann_img_list, ids.bad_i.tolist())]
    hw_of_ann = np.array([size_by_id.get(i, (np.nan, np.nan)) for i in ann_img_list],
                         dtype=np.float64).reshape(-1, 2)
    slack = np.maximum(1.0, POLYGON_SLACK * hw_of_ann)  # (N, 2): y slack, x slack
    return _Geometry(size_by_id, hw_of_ann, slack)


def _box_array(boxes: list[Any], ids: _Ids, problems: _Problems) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes as an (N, 4) float64 array, mask of those that are not 4 finite numbers)``; the bad ones are a
    problem line and stand as ``[0, 0, 1, 1]`` in the array."""
    box_arr = None
    try:
        box_arr = np.array(boxes, dtype=np.float64) if boxes else np.zeros((0, 4))
        if box_arr.ndim != 2 or box_arr.shape[1] != 4:
            box_arr = None
    except (ValueError, TypeError, OverflowError):
        box_arr = None
    if box_arr is not None and not np.isfinite(box_arr).all():
        box_arr = None
    bad_box = np.zeros(len(boxes), dtype=bool)
    if box_arr is None:
        bad_box = np.array([not (isinstance(b, (list, tuple)) and len(b) == 4 and all(_is_num(v) for v in b))
                            for b in boxes], dtype=bool)
        box_arr = np.array([b if not bb else [0.0, 0.0, 1.0, 1.0] for b, bb in zip(boxes, bad_box)],
                           dtype=np.float64).reshape(-1, 4)
        problems.add(ids.shown_ann(bad_box), "annotations have a 'bbox' that is not 4 finite numbers",
                     "write boxes as [x, y, width, height]", label="annotation ids")
    return box_arr, bad_box


def _check_boxes(anns: list[dict], ids: _Ids, geo: _Geometry, problems: _Problems) -> None:
    """Boxes: 4 finite numbers, finite in float32, positive width and height, inside their image (with slack)."""
    box_arr, bad_box = _box_array(_field(anns, "bbox"), ids, problems)
    # The detectors compute in float32: a box finite in float64 but not in float32 (1e39) becomes inf there.
    with np.errstate(over="ignore", invalid="ignore"):
        b32 = box_arr.astype(np.float32)
        corners32 = np.concatenate([b32, b32[:, :2] + b32[:, 2:]], axis=1)
    not32 = ~np.isfinite(corners32).all(axis=1) & ~bad_box
    problems.add(ids.shown_ann(not32), "boxes do not fit in float32 (a coordinate or x + width beyond ±3.4e38)",
                 "fix their [x, y, width, height]: they lie far outside any image", label="annotation ids")
    nonpos = ((box_arr[:, 2] <= 0) | (box_arr[:, 3] <= 0)) & ~bad_box
    problems.add(ids.shown_ann(nonpos), "boxes have width or height <= 0",
                 "drop these annotations or fix their [x, y, width, height]", label="annotation ids")
    hw_of_ann, slack = geo.hw_of_ann, geo.slack
    known = ~np.isnan(hw_of_ann[:, 0]) & ~bad_box & ~not32 & ~nonpos
    with np.errstate(invalid="ignore"):
        outside_box = known & ((box_arr[:, 0] < -slack[:, 1]) | (box_arr[:, 1] < -slack[:, 0])
                               | (box_arr[:, 0] + box_arr[:, 2] > hw_of_ann[:, 1] + slack[:, 1])
                               | (box_arr[:, 1] + box_arr[:, 3] > hw_of_ann[:, 0] + slack[:, 0]))
    problems.add(ids.shown_ann(outside_box), f"boxes reach outside their image (by more than {POLYGON_SLACK:.0%} "
                 "of its side, or 1 px)", "check the images' width/height and the boxes' [x, y, width, height]",
                 label="annotation ids")


@dataclass
class _Segs:
    """What one pass over the segmentations found: annotation positions per kind of problem, the polygons
    flattened (``poly_offsets``: start of each polygon in ``poly_flat``; ``poly_ann``: its annotation) and the
    compressed RLE strings with their annotations."""

    bad_seg_type: list[int] = field(default_factory=list)
    no_mask: list[int] = field(default_factory=list)
    empty_mask: list[int] = field(default_factory=list)
    rle_size: list[int] = field(default_factory=list)
    rle_bad: list[int] = field(default_factory=list)
    poly_flat: list[Any] = field(default_factory=list)
    poly_offsets: list[int] = field(default_factory=list)
    poly_ann: list[int] = field(default_factory=list)
    rle_strings: list[str] = field(default_factory=list)
    rle_string_ann: list[int] = field(default_factory=list)


def _sort_segmentations(anns: list[dict], hw_of_ann: np.ndarray, masks: bool) -> _Segs:
    """Sort each annotation's ``segmentation`` into polygons, RLE strings, or a kind of problem."""
    s = _Segs()
    for k, a in enumerate(anns):
        seg = a.get("segmentation")
        if seg is None:
            if masks:
                s.no_mask.append(k)
            continue
        if type(seg) is list:
            if not seg:
                if masks:
                    s.empty_mask.append(k)
                continue
            if not all(type(poly) is list and len(poly) >= 6 and not len(poly) % 2 for poly in seg):
                s.bad_seg_type.append(k)
                continue
            for poly in seg:
                s.poly_offsets.append(len(s.poly_flat))
                s.poly_ann.append(k)
                s.poly_flat.extend(poly)
        elif type(seg) is dict:
            _sort_rle(k, seg, hw_of_ann[k], masks, s)
        else:
            s.bad_seg_type.append(k)
    return s


def _sort_rle(k: int, seg: dict, hw: np.ndarray, masks: bool, s: _Segs) -> None:
    """One RLE dict (annotation position ``k``, its image's height and width ``hw``) into ``s``."""
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)) or not \
            isinstance(counts, (str, list)):
        s.bad_seg_type.append(k)
        return
    hh, ww = hw
    if not np.isnan(hh) and (size[0] != hh or size[1] != ww):
        s.rle_size.append(k)
        return
    if size[0] * size[1] == 0:
        if masks:
            s.empty_mask.append(k)
        return
    if isinstance(counts, str):
        s.rle_strings.append(counts)
        s.rle_string_ann.append(k)
    elif not _rle_list_counts_ok(counts, size[0] * size[1]):
        s.rle_bad.append(k)


def _check_polygons(s: _Segs, geo: _Geometry) -> tuple[list[int], list[int]]:
    """``(annotations with a polygon coordinate not finite in float64 or float32, annotations with a finite
    polygon reaching outside the image by more than the slack)``."""
    if not s.poly_flat:
        return [], []
    try:
        coords = np.array(s.poly_flat, dtype=np.float64)
        if coords.ndim != 1:
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        coords = np.array([float(v) if _is_num(v) or (isinstance(v, float)) else np.nan for v in s.poly_flat],
                          dtype=np.float64)
    offs = np.asarray(s.poly_offsets, dtype=np.int64)
    pann = np.asarray(s.poly_ann, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(coords) & np.isfinite(coords.astype(np.float32))
    poly_ok = np.logical_and.reduceat(finite, offs)
    nonfinite_poly = np.unique(pann[~poly_ok]).tolist()
    safe = np.where(finite, coords, 0.0)
    xs, ys = safe[0::2], safe[1::2]
    half = offs // 2
    lo_x, hi_x = np.minimum.reduceat(xs, half), np.maximum.reduceat(xs, half)
    lo_y, hi_y = np.minimum.reduceat(ys, half), np.maximum.reduceat(ys, half)
    hh, ww = geo.hw_of_ann[pann, 0], geo.hw_of_ann[pann, 1]
    sy, sx = geo.slack[pann, 0], geo.slack[pann, 1]
    with np.errstate(invalid="ignore"):
        out_poly = poly_ok & ~np.isnan(hh) & ((lo_x < -sx) | (lo_y < -sy) | (hi_x > ww + sx) | (hi_y > hh + sy))
    return nonfinite_poly, np.unique(pann[out_poly]).tolist()


def _check_segmentations(anns: list[dict], ids: _Ids, geo: _Geometry, masks: bool, problems: _Problems) -> None:
    """Segmentations: their shape, finite coordinates, fit to their image, RLE that decodes at the image size."""
    s = _sort_segmentations(anns, geo.hw_of_ann, masks)
    if s.rle_strings:
        sizes = [anns[k]["segmentation"]["size"][0] * anns[k]["segmentation"]["size"][1] for k in s.rle_string_ann]
        good = rle_string_counts_ok(s.rle_strings, sizes)
        s.rle_bad += [k for k, g in zip(s.rle_string_ann, good.tolist()) if not g]
        s.rle_bad.sort()
    nonfinite_poly, outside = _check_polygons(s, geo)
    shown = ids.shown_ann
    problems.add(shown(s.bad_seg_type), "annotations have a 'segmentation' that is neither polygons nor an RLE dict",
                 "write polygons as [[x1, y1, x2, y2, x3, y3, ...], ...] (an even number, >= 6, of coordinates) or "
                 "RLE as {'size': [h, w], 'counts': ...}", label="annotation ids")
    mask_fix = ("add a mask to each, or train boxes only (a fasterrcnn_* arch, or data.masks=false with a "
                "maskrcnn_* arch)")
    problems.add(shown(s.no_mask), "annotations have no 'segmentation' (the model has a mask branch)", mask_fix,
                 label="annotation ids")
    problems.add(shown(s.empty_mask), "annotations have an empty 'segmentation' ([] or an RLE of size 0)",
                 mask_fix if masks else "remove the empty masks or give each object its mask", label="annotation ids")
    problems.add(shown(nonfinite_poly), "polygons have coordinates that are not finite numbers (NaN, inf, text "
                 "or beyond float32)", "fix or remove these polygons", label="annotation ids")
    problems.add(shown(outside), f"polygons have points outside their image (by more than {POLYGON_SLACK:.0%} of "
                 "its side, or 1 px)", "check the images' width/height and the polygons' coordinates",
                 label="annotation ids")
    problems.add(shown(s.rle_size), "RLE masks have a 'size' other than their image's [height, width]",
                 "re-encode the masks at the image size or fix the image's width/height", label="annotation ids")
    problems.add(shown(s.rle_bad), "RLE masks do not decode (counts that are not pycocotools' format, negative "
                 "runs, or runs not summing to height * width)",
                 "re-encode them with pycocotools.mask.encode at the image size", label="annotation ids")


def _check_files(images: list[dict], ids: _Ids, size_by_id: dict[int, tuple[int, int]], image_root: PathLike,
                 headers: bool, problems: _Problems) -> None:
    """Each image with a good id names a file that exists under ``image_root``; with ``headers``, the file's
    header (size and decompression-bomb limit, read without decoding the pixels)."""
    if not os.path.isdir(image_root):
        problems.lines.append(f"image root {os.fspath(image_root)} is not a directory: give the folder the json's "
                              "file names are relative to")
        return
    good = [im for im, b in zip(images, ids.bad_img) if not b]
    paths = image_paths(good, image_root)
    no_name = [int(im["id"]) for im, p in zip(good, paths) if p is None]
    problems.add(no_name, "images name no file (neither 'file_name' nor 'coco_url')",
                 "add 'file_name' relative to the image root", label="image ids")
    named = [(im, p) for im, p in zip(good, paths) if p is not None]
    missing = _missing_files([p for _, p in named])
    if missing.any():
        first = named[int(np.flatnonzero(missing)[0])][1]
        problems.add([int(named[i][0]["id"]) for i in np.flatnonzero(missing)],
                     f"images are missing on disk (first: {first})",
                     f"check the image root {os.fspath(image_root)} or remove these images from the json",
                     label="image ids")
    if headers:
        present = [(im, p) for (im, p), miss in zip(named, missing.tolist()) if not miss]
        _check_headers(present, size_by_id, problems)


def _check_headers(present: list[tuple[dict, str]], size_by_id: dict[int, tuple[int, int]],
                   problems: _Problems) -> None:
    """The header of each present file: a readable image, within PIL's pixel limit, of the json's size."""
    found = _image_header_sizes([p for _, p in present])
    unreadable, bomb, wrong = [], [], []
    first_wrong = ""
    for (im, p), got in zip(present, found):
        if got == "unreadable":
            unreadable.append(int(im["id"]))
        elif got == "bomb":
            bomb.append(int(im["id"]))
        elif int(im["id"]) in size_by_id and size_by_id[int(im["id"])] != (got[1], got[0]):
            if not wrong:
                first_wrong = (f"first: {p} is {got[0]}x{got[1]}, the json says "
                               f"{size_by_id[int(im['id'])][1]}x{size_by_id[int(im['id'])][0]}")
            wrong.append(int(im["id"]))
    problems.add(unreadable, "image files are not readable images (no PNG/JPEG/... header)",
                 "re-download or re-export them, or remove them from the json", label="image ids")
    from PIL import Image

    problems.add(bomb, f"image files hold more than {Image.MAX_IMAGE_PIXELS} pixels (PIL's "
                 "decompression-bomb limit)", "resize them or remove them from the json",
                 label="image ids")
    problems.add(wrong, f"image files differ in size from the json's width/height ({first_wrong})",
                 "write each image's real width/height into the json, or replace the files",
                 label="image ids")
