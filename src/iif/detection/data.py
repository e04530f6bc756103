"""COCO and LVIS v1 instance data for torchvision detectors, checked before training.

* :func:`load_detection_dataset` / :class:`DetectionDataset` — the user's annotation json and image root read
  through torchvision's ``CocoDetection`` and ``wrap_dataset_for_transforms_v2`` with transforms v2. ``ds[i]``
  is ``(image, target)``: ``image`` float32 ``(3, H, W)`` in [0, 1]; ``target`` holds ``boxes`` float32
  ``(N, 4)`` as ``x1, y1, x2, y2`` pixels, ``labels`` int64 ``(N,)`` contiguous 1..C, ``masks`` uint8
  ``(N, H, W)`` (with masks) and ``image_id`` (the json id, an int). Contiguous label ``k`` is the k-th
  category of ``categories`` sorted by id (``category_ids[k - 1]``), the class order of
  :meth:`iif.ClassFrequency.from_coco`, so a detector's logit column ``k`` (torchvision's background is 0)
  lines up with the k-th entry of the IIF weights.
* :func:`validate_annotations` — every problem of an annotation json at once (unknown category or image ids,
  non-positive boxes, masks that do not fit their image, duplicate ids, wrong JSON types, images missing on
  disk), one line per kind of problem with the first ids, raised as one :class:`~iif.errors.IIFError`.
* :func:`collate`, :func:`detections_to_results` — batching for the detectors, and their outputs as LVIS/COCO
  result dicts.
* :func:`resolve_detection_data` — the four paths of a ``--data`` folder in one of the accepted layouts.

Image paths: a COCO image has ``file_name`` (relative to ``image_root``). A LVIS v1 image has no
``file_name``, only ``coco_url`` (``http://images.cocodataset.org/train2017/000000391895.jpg``); as in
detectron2's and mmdetection's LVIS loaders, its path is the last two parts of the url relative to the COCO
root (``image_root/train2017/000000391895.jpg``, LVIS v1 val draws on both COCO folders). When
``image_root`` has no such sub-folder, the file is looked up directly in ``image_root`` (the layout the
``lvis`` API's ``download`` writes).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..readers import read_json as _read_json

__all__ = [
    "DetectionDataset",
    "covering_subset",
    "restrict_annotations",
    "load_detection_dataset",
    "validate_annotations",
    "rle_string_counts_ok",
    "collate",
    "detections_to_results",
    "resolve_detection_data",
    "image_paths",
]

PathLike = str | os.PathLike

# A polygon point may lie up to this far outside the image (fraction of the image side, at least 1 px) before
# the mask counts as not fitting it: polygons touch the border at x = width, annotation tools leave vertices a
# pixel or two past it, and pycocotools clips them when rasterising. A mask drawn for another image size
# (the error this check is for) misses by far more.
POLYGON_SLACK = 0.02
_SHOW = 5  # ids named per problem


# -------------------------------------------------------------------------------------------- messages


def _ids_text(ids: Sequence[Any], what: str = "ids") -> str:
    """``"ids 3, 7, 9 and 12 more (15 in all)"`` for a problem line."""
    ids = list(ids)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in ids[:_SHOW])
    more = f" and {len(ids) - _SHOW} more ({len(ids)} in all)" if len(ids) > _SHOW else ""
    return f"{what} {shown}{more}"


class _Problems:
    """Collects problem lines; :meth:`raise_if_any` joins them into one IIFError message."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, ids: Sequence[Any], what: str, fix: str, *, label: str = "ids") -> None:
        if len(ids):
            self.lines.append(f"{len(ids)} {what} ({_ids_text(ids, label)}): {fix}")

    def raise_if_any(self) -> None:
        if self.lines:
            n = len(self.lines)
            raise IIFError(f"{self.source}: {n} kind{'s' if n > 1 else ''} of problem{'s' if n > 1 else ''} found "
                           "before training: " + " | ".join(self.lines))


# ------------------------------------------------------------------------------------------ validation


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int of hundreds of digits (JSON allows it): no float holds it
        return False


def _is_size(v: Any) -> bool:
    """A positive whole number of pixels (``640`` or ``640.0``, as some converters write)."""
    return _is_num(v) and v > 0 and float(v).is_integer()


def _field(items: list[dict], key: str) -> list[Any]:
    """``item.get(key)`` for every item in one C-level pass when every item has it."""
    try:
        return list(map(itemgetter(key), items))
    except KeyError:
        return [item.get(key) for item in items]


def _int_ids(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 array with -1 where a value is not an int, mask of those bad values)."""
    if not values:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False), np.zeros(len(values), dtype=bool)
    bad = np.array([not _is_int(v) for v in values], dtype=bool)
    out = np.array([int(v) if ok else -1 for v, ok in zip(values, ~bad)], dtype=np.int64)
    return out, bad


def _duplicates(ids: np.ndarray) -> list[int]:
    s = np.sort(ids)
    return np.unique(s[1:][s[1:] == s[:-1]]).tolist()


def image_paths(images: Sequence[Mapping[str, Any]], image_root: PathLike) -> list[str | None]:
    """The file of each json image under ``image_root`` (None where the image names no file).

    ``file_name`` when present (COCO), else the last two parts of ``coco_url`` (LVIS v1:
    ``image_root/train2017/000000391895.jpg``), or just its file name when ``image_root`` has no folder of
    that name. Only the url's folders are checked (one ``isdir`` per distinct folder), not the files.
    """
    root = os.fspath(image_root)
    is_dir: dict[str, bool] = {}
    out: list[str | None] = []
    for im in images:
        name = im.get("file_name") if isinstance(im, Mapping) else None
        if isinstance(name, str) and name:
            out.append(os.path.join(root, name))
            continue
        url = im.get("coco_url") if isinstance(im, Mapping) else None
        if not isinstance(url, str) or not url.strip("/"):
            out.append(None)
            continue
        parts = url.rstrip("/").rsplit("/", 2)
        base = parts[-1]
        folder = parts[-2] if len(parts) >= 2 and "://" not in parts[-2] and parts[-2] else ""
        if folder:
            if folder not in is_dir:
                is_dir[folder] = os.path.isdir(os.path.join(root, folder))
            if is_dir[folder]:
                out.append(os.path.join(root, folder, base))
                continue
        out.append(os.path.join(root, base))
    return out


def _decode_rle_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run lengths of compressed RLE ``counts`` strings (pycocotools' format), all strings in one
    vectorised pass: ``(counts, string index of each count, ok)``; ``ok[i]`` is False where string ``i`` is
    empty, not ASCII, holds characters outside the format, ends inside a number or has a number over 35 bits.

    The format (pycocotools ``maskApi.c`` ``rleFrString``): each run length is written in 5-bit groups, least
    significant first, as the characters ``chr(48 + g)``; bit 0x20 of a group says another group follows, bit
    0x10 of the last group is the sign; from the fourth run on, the value is the difference to the run two
    before. pycocotools decodes any string without complaint, and a string that is not an encoding of a mask
    of this size gives a garbage mask (or writes past the mask), so this checks what it cannot.
    """
    n = len(strings)
    ok = np.ones(n, dtype=bool)
    clean = list(strings)
    for i, t in enumerate(clean):
        if not t or not t.isascii():
            ok[i] = False
            clean[i] = ""
    lengths = np.fromiter(map(len, clean), dtype=np.int64, count=n)
    total_chars = int(lengths.sum())
    if not total_chars:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), ok
    c = np.frombuffer("".join(clean).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    seg = np.repeat(np.arange(n), lengths)
    bad = (c < 0) | (c > 63)
    ok[np.unique(seg[bad])] = False
    c[bad] = 0
    last = np.cumsum(lengths)[lengths > 0] - 1
    more = (c & 0x20) != 0
    ok[seg[last][more[last]]] = False  # the last group of a string says another follows: truncated
    end = ~more
    end[last] = True
    start = np.empty_like(end)
    start[0] = True
    start[1:] = end[:-1]
    start_pos = np.flatnonzero(start)
    group = np.cumsum(start) - 1
    k = np.arange(total_chars) - start_pos[group]
    ok[np.unique(seg[k > 6])] = False  # > 35 bits: no run of an image mask is that long
    k = np.minimum(k, 6)
    x = np.add.reduceat((c & 0x1F) << (5 * k), start_pos)
    end_pos = np.flatnonzero(end)
    negative = (c[end_pos] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[end_pos][negative] + 1))
    g_str = seg[start_pos]
    first = np.searchsorted(g_str, np.arange(n))
    m = np.arange(len(start_pos)) - first[g_str]
    # counts[m] = x[m] + counts[m - 2] for m > 2: a running sum along three chains per string (m = 0; odd m;
    # even m >= 2).
    chain = g_str * 3 + np.where(m == 0, 0, np.where(m % 2 == 1, 1, 2))
    order = np.lexsort((m, chain))
    xs = x[order]
    cs = np.cumsum(xs)
    ch = chain[order]
    chain_start = np.ones(len(ch), dtype=bool)
    chain_start[1:] = ch[1:] != ch[:-1]
    base = (cs - xs)[chain_start][np.cumsum(chain_start) - 1]
    counts = np.empty_like(x)
    counts[order] = cs - base
    return counts, g_str, ok


def rle_string_counts_ok(strings: Sequence[str], sizes: Sequence[int]) -> np.ndarray:
    """For each compressed RLE ``counts`` string, whether it decodes (:func:`_decode_rle_strings`) to run
    lengths that are all >= 0 and sum to ``sizes[i]`` (the mask's height * width)."""
    n = len(strings)
    counts, g_str, ok = _decode_rle_strings(strings)
    ok[np.unique(g_str[counts < 0])] = False
    totals = np.bincount(g_str, weights=counts.astype(np.float64), minlength=n)
    ok &= totals == np.asarray(sizes, dtype=np.float64).reshape(n)
    return ok


def _rle_list_counts_ok(counts: list, size: int) -> bool:
    """An uncompressed RLE ``counts`` list: whole numbers >= 0 summing to ``size`` (height * width)."""
    if not all(_is_int(v) and v >= 0 for v in counts):
        return False
    return sum(counts) == size


def _image_header_sizes(paths: Sequence[str]) -> list[tuple[int, int] | str]:
    """``(width, height)`` of each image file from its header (nothing is decoded), or a problem word:
    ``"unreadable"`` or ``"bomb"`` (more pixels than PIL's ``Image.MAX_IMAGE_PIXELS``, its decompression-bomb
    limit). PNG headers are read directly (24 bytes); other formats through ``PIL.Image.open``."""
    import struct
    import warnings

    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    out: list[tuple[int, int] | str] = []
    for path in paths:
        size: tuple[int, int] | str | None = None
        try:
            with open(path, "rb") as f:
                head = f.read(24)
                if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                    size = struct.unpack(">II", head[16:24])
                else:
                    f.seek(0)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        with Image.open(f) as im:
                            size = im.size
        except Image.DecompressionBombError:
            size = "bomb"
        except (OSError, ValueError, SyntaxError, struct.error, EOFError):
            size = "unreadable"
        if isinstance(size, tuple) and (min(size) < 1 or (limit and size[0] * size[1] > limit)):
            size = "bomb" if min(size) >= 1 else "unreadable"
        out.append(size if size is not None else "unreadable")
    return out


def _missing_files(paths: Sequence[str]) -> np.ndarray:
    """Mask of the ``paths`` that are not files: one ``os.scandir`` per folder, then set look-ups."""
    by_dir: dict[str, set[str]] = {}
    missing = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        d, base = os.path.split(p)
        names = by_dir.get(d)
        if names is None:
            try:
                with os.scandir(d or ".") as it:
                    names = {e.name for e in it if e.is_file()}
            except OSError:
                names = set()
            by_dir[d] = names
        if base not in names:
            missing[i] = True
    return missing


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
    images, anns, cats = sections["images"], sections["annotations"], sections["categories"]

    # ---- ids
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

    def shown_ann(mask_or_positions) -> list[Any]:
        """Annotation ids to name (``annotations[k]`` where the id itself is bad)."""
        pos = np.asarray(mask_or_positions)
        pos = np.flatnonzero(pos) if pos.dtype == bool else pos.astype(np.int64)
        return [f"annotations[{k}]" if bad_ann[k] else int(ann_ids[k]) for k in pos.tolist()]

    problems.add(np.flatnonzero(bad_ann).tolist(), "annotations have no integer 'id'",
                 "give every annotation an integer id", label="positions")
    problems.add(_duplicates(ann_ids[~bad_ann]), "annotation ids are duplicated", "annotation ids must be unique")

    ann_cat, bad_c = _int_ids(_field(anns, "category_id"))
    ann_img, bad_i = _int_ids(_field(anns, "image_id"))
    problems.add(shown_ann(bad_c | bad_i), "annotations have no integer 'category_id'/'image_id'",
                 "every annotation needs both")
    unknown_cat = ~bad_c & ~np.isin(ann_cat, cat_ids)
    problems.add(shown_ann(unknown_cat),
                 f"annotations have a category_id missing from 'categories' (category ids "
                 f"{', '.join(map(str, np.unique(ann_cat[unknown_cat])[:_SHOW].tolist()))})",
                 "add those categories or remove the annotations", label="annotation ids")
    good_img_ids = img_ids[~bad_img]
    unknown_img = ~bad_i & ~np.isin(ann_img, good_img_ids)
    problems.add(shown_ann(unknown_img),
                 f"annotations point at image ids missing from 'images' (image ids "
                 f"{', '.join(map(str, np.unique(ann_img[unknown_img])[:_SHOW].tolist()))})",
                 "add those images or remove the annotations", label="annotation ids")

    # ---- crowd flags: pycocotools and the training targets treat any truthy value as a crowd region
    crowd_flags = _field(anns, "iscrowd")
    bad_crowd = [k for k, v in enumerate(crowd_flags) if not (v is None or (type(v) in (int, bool) and v in (0, 1)))]
    problems.add(shown_ann(bad_crowd), "annotations have an 'iscrowd' other than 0 or 1",
                 "write \"iscrowd\": 0 for an object, 1 for a crowd region (or leave the key out)",
                 label="annotation ids")

    # ---- image sizes per annotation (NaN where the image or its size is unknown; reported above)
    size_by_id: dict[int, tuple[int, int]] = {}
    for i, w, h, b in zip(img_ids.tolist(), widths, heights, bad_img.tolist()):
        if not b and _is_size(w) and _is_size(h):
            size_by_id[i] = (int(h), int(w))
    ann_img_list: list[Any] = ann_img.tolist()
    if bad_i.any():
        ann_img_list = [None if b else v for v, b in zip(ann_img_list, bad_i.tolist())]
    hw_of_ann = np.array([size_by_id.get(i, (np.nan, np.nan)) for i in ann_img_list],
                         dtype=np.float64).reshape(-1, 2)
    slack = np.maximum(1.0, POLYGON_SLACK * hw_of_ann)  # (N, 2): y slack, x slack

    # ---- boxes
    boxes = _field(anns, "bbox")
    box_arr = None
    try:
        box_arr = np.array(boxes, dtype=np.float64) if boxes else np.zeros((0, 4))
        if box_arr.ndim != 2 or box_arr.shape[1] != 4:
            box_arr = None
    except (ValueError, TypeError, OverflowError):
        box_arr = None
    if box_arr is not None and not np.isfinite(box_arr).all():
        box_arr = None
    bad_box = np.zeros(len(anns), dtype=bool)
    if box_arr is None:
        bad_box = np.array([not (isinstance(b, (list, tuple)) and len(b) == 4 and all(_is_num(v) for v in b))
                            for b in boxes], dtype=bool)
        box_arr = np.array([b if not bb else [0.0, 0.0, 1.0, 1.0] for b, bb in zip(boxes, bad_box)],
                           dtype=np.float64).reshape(-1, 4)
        problems.add(shown_ann(bad_box), "annotations have a 'bbox' that is not 4 finite numbers",
                     "write boxes as [x, y, width, height]", label="annotation ids")
    # The detectors compute in float32: a box finite in float64 but not in float32 (1e39) becomes inf there.
    with np.errstate(over="ignore", invalid="ignore"):
        b32 = box_arr.astype(np.float32)
        corners32 = np.concatenate([b32, b32[:, :2] + b32[:, 2:]], axis=1)
    not32 = ~np.isfinite(corners32).all(axis=1) & ~bad_box
    problems.add(shown_ann(not32), "boxes do not fit in float32 (a coordinate or x + width beyond ±3.4e38)",
                 "fix their [x, y, width, height]: they lie far outside any image", label="annotation ids")
    nonpos = ((box_arr[:, 2] <= 0) | (box_arr[:, 3] <= 0)) & ~bad_box
    problems.add(shown_ann(nonpos), "boxes have width or height <= 0",
                 "drop these annotations or fix their [x, y, width, height]", label="annotation ids")
    known = ~np.isnan(hw_of_ann[:, 0]) & ~bad_box & ~not32 & ~nonpos
    with np.errstate(invalid="ignore"):
        outside_box = known & ((box_arr[:, 0] < -slack[:, 1]) | (box_arr[:, 1] < -slack[:, 0])
                               | (box_arr[:, 0] + box_arr[:, 2] > hw_of_ann[:, 1] + slack[:, 1])
                               | (box_arr[:, 1] + box_arr[:, 3] > hw_of_ann[:, 0] + slack[:, 0]))
    problems.add(shown_ann(outside_box), f"boxes reach outside their image (by more than {POLYGON_SLACK:.0%} of its "
                 "side, or 1 px)", "check the images' width/height and the boxes' [x, y, width, height]",
                 label="annotation ids")

    # ---- segmentations: shape, finite coordinates, fit to their image, RLE that decodes at the image size
    bad_seg_type, no_mask, empty_mask, rle_size, rle_bad = [], [], [], [], []
    poly_flat: list[Any] = []
    poly_offsets: list[int] = []  # start of each polygon in poly_flat
    poly_ann: list[int] = []  # annotation position of each polygon
    rle_strings: list[str] = []
    rle_string_ann: list[int] = []
    for k, a in enumerate(anns):
        seg = a.get("segmentation")
        if seg is None:
            if masks:
                no_mask.append(k)
            continue
        if type(seg) is list:
            if not seg:
                if masks:
                    empty_mask.append(k)
                continue
            if not all(type(poly) is list and len(poly) >= 6 and not len(poly) % 2 for poly in seg):
                bad_seg_type.append(k)
                continue
            for poly in seg:
                poly_offsets.append(len(poly_flat))
                poly_ann.append(k)
                poly_flat.extend(poly)
        elif type(seg) is dict:
            size, counts = seg.get("size"), seg.get("counts")
            if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)) or not \
                    isinstance(counts, (str, list)):
                bad_seg_type.append(k)
                continue
            hh, ww = hw_of_ann[k]
            if not np.isnan(hh) and (size[0] != hh or size[1] != ww):
                rle_size.append(k)
                continue
            if size[0] * size[1] == 0:
                if masks:
                    empty_mask.append(k)
                continue
            if isinstance(counts, str):
                rle_strings.append(counts)
                rle_string_ann.append(k)
            elif not _rle_list_counts_ok(counts, size[0] * size[1]):
                rle_bad.append(k)
        else:
            bad_seg_type.append(k)
    if rle_strings:
        sizes = [anns[k]["segmentation"]["size"][0] * anns[k]["segmentation"]["size"][1] for k in rle_string_ann]
        good = rle_string_counts_ok(rle_strings, sizes)
        rle_bad += [k for k, g in zip(rle_string_ann, good.tolist()) if not g]
        rle_bad.sort()
    nonfinite_poly, outside = [], []
    if poly_flat:
        try:
            coords = np.array(poly_flat, dtype=np.float64)
            if coords.ndim != 1:
                raise ValueError
        except (ValueError, TypeError, OverflowError):
            coords = np.array([float(v) if _is_num(v) or (isinstance(v, float)) else np.nan for v in poly_flat],
                              dtype=np.float64)
        offs = np.asarray(poly_offsets, dtype=np.int64)
        pann = np.asarray(poly_ann, dtype=np.int64)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(coords) & np.isfinite(coords.astype(np.float32))
        poly_ok = np.logical_and.reduceat(finite, offs)
        nonfinite_poly = np.unique(pann[~poly_ok]).tolist()
        safe = np.where(finite, coords, 0.0)
        xs, ys = safe[0::2], safe[1::2]
        half = offs // 2
        lo_x, hi_x = np.minimum.reduceat(xs, half), np.maximum.reduceat(xs, half)
        lo_y, hi_y = np.minimum.reduceat(ys, half), np.maximum.reduceat(ys, half)
        hh, ww = hw_of_ann[pann, 0], hw_of_ann[pann, 1]
        sy, sx = slack[pann, 0], slack[pann, 1]
        with np.errstate(invalid="ignore"):
            out_poly = poly_ok & ~np.isnan(hh) & ((lo_x < -sx) | (lo_y < -sy) | (hi_x > ww + sx) | (hi_y > hh + sy))
        outside = np.unique(pann[out_poly]).tolist()
    problems.add(shown_ann(bad_seg_type), "annotations have a 'segmentation' that is neither polygons nor an RLE dict",
                 "write polygons as [[x1, y1, x2, y2, x3, y3, ...], ...] (an even number, >= 6, of coordinates) or "
                 "RLE as {'size': [h, w], 'counts': ...}", label="annotation ids")
    mask_fix = ("add a mask to each, or train boxes only (a fasterrcnn_* arch, or data.masks=false with a "
                "maskrcnn_* arch)")
    problems.add(shown_ann(no_mask), "annotations have no 'segmentation' (the model has a mask branch)", mask_fix,
                 label="annotation ids")
    problems.add(shown_ann(empty_mask), "annotations have an empty 'segmentation' ([] or an RLE of size 0)",
                 mask_fix if masks else "remove the empty masks or give each object its mask", label="annotation ids")
    problems.add(shown_ann(nonfinite_poly), "polygons have coordinates that are not finite numbers (NaN, inf, text "
                 "or beyond float32)", "fix or remove these polygons", label="annotation ids")
    problems.add(shown_ann(outside), f"polygons have points outside their image (by more than {POLYGON_SLACK:.0%} of "
                 "its side, or 1 px)", "check the images' width/height and the polygons' coordinates",
                 label="annotation ids")
    problems.add(shown_ann(rle_size), "RLE masks have a 'size' other than their image's [height, width]",
                 "re-encode the masks at the image size or fix the image's width/height", label="annotation ids")
    problems.add(shown_ann(rle_bad), "RLE masks do not decode (counts that are not pycocotools' format, negative "
                 "runs, or runs not summing to height * width)",
                 "re-encode them with pycocotools.mask.encode at the image size", label="annotation ids")

    # ---- files and their headers (size and decompression-bomb limit read without decoding the pixels)
    if image_root is not None:
        if not os.path.isdir(image_root):
            problems.lines.append(f"image root {os.fspath(image_root)} is not a directory: give the folder the json's "
                                  "file names are relative to")
        else:
            good = [im for im, b in zip(images, bad_img) if not b]
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
    problems.raise_if_any()


# ------------------------------------------------------------------------------------------ the dataset


def _hflip_probability(hflip: bool | float | None, train: bool) -> float:
    if hflip is None:
        return 0.5 if train else 0.0
    if isinstance(hflip, bool):
        return 0.5 if hflip else 0.0
    if _is_num(hflip) and 0.0 <= float(hflip) <= 1.0:
        return float(hflip)
    raise IIFError(f"hflip must be None, True/False or a probability in [0, 1]; got {hflip!r}.")


def _coco_from_dict(data: Mapping[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def _coco_source_class():
    """A ``CocoDetection`` over an already indexed COCO object, our image paths and contiguous labels.

    Built on first use so that importing :mod:`iif.detection` does not import torchvision.datasets.
    """
    global _COCO_SOURCE
    if _COCO_SOURCE is not None:
        return _COCO_SOURCE
    from PIL import Image
    from torchvision.datasets import CocoDetection, VisionDataset

    class CocoSource(CocoDetection):
        def __init__(self, root: str, coco, ids: list[int], paths: dict[int, str], label_of: dict[int, int]) -> None:
            VisionDataset.__init__(self, root)  # not CocoDetection.__init__: the json is read and indexed once
            self.coco, self.ids, self.paths, self.label_of = coco, ids, paths, label_of

        def _load_image(self, id: int):
            path = self.paths[id]
            try:
                image = Image.open(path).convert("RGB")
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
                raise IIFError(f"image id {id}: cannot read {path} ({exc}); re-download it or remove it from the "
                               "json.") from None
            info = self.coco.imgs[id]
            if (info.get("width"), info.get("height")) != image.size:
                raise IIFError(f"image id {id}: {path} is {image.size[0]}x{image.size[1]} but the json says "
                               f"{info.get('width')}x{info.get('height')}; fix the json or the image.")
            return image

        def _load_target(self, id: int) -> list[dict]:
            # Crowd regions are not instances to detect (torchvision's references drop them as well).
            return [dict(a, category_id=self.label_of[a["category_id"]]) for a in self.coco.imgToAnns.get(id, [])
                    if not a.get("iscrowd", 0)]

    # Pickled by reference as ``iif.detection.data._CocoSource`` (DataLoader workers under spawn/forkserver),
    # which the module ``__getattr__`` below builds in a fresh process.
    CocoSource.__qualname__ = CocoSource.__name__ = "_CocoSource"
    CocoSource.__module__ = __name__
    _COCO_SOURCE = CocoSource
    return CocoSource


_COCO_SOURCE = None


def __getattr__(name: str):
    if name == "_CocoSource":
        return _coco_source_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DetectionDataset(torch.utils.data.Dataset):
    """A COCO or LVIS v1 instances json and its images as ``(image, target)`` pairs for torchvision detectors.

    Args:
        ann_file: the annotation json (path), or its already loaded dict.
        image_root: the folder the images' ``file_name`` (COCO) or ``coco_url`` folders (LVIS v1) are
            relative to (see :func:`image_paths`).
        train: training images drop images without any non-crowd annotation (``num_dropped`` counts them) and
            flip horizontally by default; evaluation keeps every image of the json.
        masks: decode instance masks into ``target["masks"]`` (Mask R-CNN); False gives boxes only.
        hflip: horizontal-flip probability; None: 0.5 for training, 0 otherwise (True is 0.5). Boxes and
            masks are flipped with the image.
        validate: run :func:`validate_annotations` (including the files on disk) before anything else.

    Attributes:
        coco: the pycocotools ``COCO`` of the json (use it for evaluation).
        image_ids: json ids of the images, in json order (without the dropped ones); ``ds[i]`` is image
            ``image_ids[i]``.
        category_ids: json category ids sorted; label ``k`` (1..C) is ``category_ids[k - 1]``.
        class_names: category names in that order; ``num_classes``: C (foreground only).
        freq: :meth:`iif.ClassFrequency.from_coco` of the json (image and instance counts per class, same order;
            K = all images of the json, as in the official weight tables).
        num_dropped: training images dropped for having no annotation.
        json_positions: position of each of ``image_ids`` in the json's ``images`` list (to index
            :func:`iif.detection.repeat_factors` of the json).
    """

    def __init__(self, ann_file: PathLike | Mapping[str, Any], image_root: PathLike, *, train: bool,
                 masks: bool = True, hflip: bool | float | None = None, validate: bool = True) -> None:
        if isinstance(ann_file, Mapping):
            data, name, self.ann_file = ann_file, "annotation dict", None
        else:
            data, name, self.ann_file = _read_json(ann_file), str(ann_file), Path(ann_file)
        if not isinstance(train, bool) or not isinstance(masks, bool):
            raise IIFError(f"train and masks must be True or False; got train={train!r}, masks={masks!r}.")
        self.train, self.masks = train, masks
        self.hflip = _hflip_probability(hflip, train)
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise IIFError(f"{self.image_root}: image root is not a directory; give the folder holding the images "
                           "(for LVIS v1: the COCO root with train2017/ and val2017/).")
        if validate:
            validate_annotations(data, self.image_root, source=name, masks=masks)
        with warnings.catch_warnings():
            if not train:  # a val json's own counts are not training counts: its "no training images" note is noise
                warnings.filterwarnings("ignore", message=".*classes have no training images")
            self.freq = ClassFrequency.from_coco(data, name=name)
        self.category_ids: list[int] = list(self.freq.class_ids)
        self.class_names: list[str] = list(self.freq.class_names)
        self.num_classes = len(self.category_ids)
        self.coco = _coco_from_dict(data)

        images = data["images"]
        all_ids = [int(im["id"]) for im in images]
        if train:
            has = {a["image_id"] for a in data["annotations"] if not a.get("iscrowd", 0)}
            keep = [i for i, iid in enumerate(all_ids) if iid in has]
        else:
            keep = list(range(len(all_ids)))
        self.json_positions = np.asarray(keep, dtype=np.int64)
        self.image_ids: list[int] = [all_ids[i] for i in keep]
        self.num_dropped = len(all_ids) - len(keep)
        if not self.image_ids:
            raise IIFError(f"{name}: no image has an annotation to train on; check that this is a training json.")
        paths = image_paths([images[i] for i in keep], self.image_root)
        no_file = [iid for iid, p in zip(self.image_ids, paths) if p is None]
        if no_file:
            raise IIFError(f"{name}: images name no file ({_ids_text(no_file, 'image ids')}); add 'file_name' or "
                           "'coco_url'.")
        label_of = {cid: k for k, cid in enumerate(self.category_ids, start=1)}
        source = _coco_source_class()(str(self.image_root), self.coco, list(self.image_ids),
                                      dict(zip(self.image_ids, paths)), label_of)
        from torchvision.datasets import wrap_dataset_for_transforms_v2
        from torchvision.transforms import v2

        steps: list = [v2.ToImage()]
        if self.hflip > 0:
            steps.append(v2.RandomHorizontalFlip(p=self.hflip))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        source.transforms = v2.Compose(steps)
        keys = ["boxes", "labels", "image_id"] + (["masks"] if masks else [])
        self._wrapped = wrap_dataset_for_transforms_v2(source, target_keys=keys)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image, raw = self._wrapped[index % len(self)]
        image = image.as_subclass(torch.Tensor)
        h, w = image.shape[-2:]
        target: dict[str, Any] = {"image_id": int(self.image_ids[index])}
        if "boxes" in raw:
            target["boxes"] = raw["boxes"].as_subclass(torch.Tensor).to(torch.float32)
            target["labels"] = raw["labels"].to(torch.int64)
            if self.masks:
                target["masks"] = raw["masks"].as_subclass(torch.Tensor).to(torch.uint8)
        else:  # no (non-crowd) annotation: empty targets of the right shapes
            target["boxes"] = torch.zeros((0, 4), dtype=torch.float32)
            target["labels"] = torch.zeros((0,), dtype=torch.int64)
            if self.masks:
                target["masks"] = torch.zeros((0, h, w), dtype=torch.uint8)
        return image, target

    def __repr__(self) -> str:
        return (f"DetectionDataset({len(self)} images, {self.num_classes} classes, train={self.train}, "
                f"masks={self.masks}, hflip={self.hflip:g}, dropped={self.num_dropped})")


def load_detection_dataset(ann_file: PathLike | Mapping[str, Any], image_root: PathLike, *, train: bool,
                           masks: bool = True, hflip: bool | float | None = None,
                           validate: bool = True) -> DetectionDataset:
    """A :class:`DetectionDataset` of ``ann_file`` (COCO or LVIS v1 instances json) with images under
    ``image_root``; see the class for the arguments. Bad annotations raise one :class:`IIFError` listing
    them all (``validate=True``), before any image is read."""
    return DetectionDataset(ann_file, image_root, train=train, masks=masks, hflip=hflip, validate=validate)


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...] -> ([images], [targets])``: torchvision detectors take lists (sizes differ)."""
    return [b[0] for b in batch], [b[1] for b in batch]


# ------------------------------------------------------------------------------------------- results


def detections_to_results(outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                          category_ids: Sequence[int], *, masks: bool) -> list[dict]:
    """torchvision detector outputs as LVIS/COCO result dicts.

    Args:
        outputs: one dict per image from a detector in eval mode: ``boxes`` (N, 4) ``x1, y1, x2, y2``,
            ``labels`` (N,) contiguous 1..C, ``scores`` (N,) and, with ``masks``, ``masks`` (N, 1, H, W)
            probabilities.
        image_ids: the json id of each image.
        category_ids: json category ids sorted; label ``k`` is ``category_ids[k - 1]``.
        masks: add ``segmentation``: the mask thresholded at 0.5 (torchvision's references), RLE-encoded by
            pycocotools with ``counts`` as str (json-ready).

    Returns:
        ``[{"image_id", "category_id" (json id), "bbox" [x, y, w, h], "score"[, "segmentation"]}, ...]``.
    """
    if len(outputs) != len(image_ids):
        raise IIFError(f"{len(outputs)} outputs but {len(image_ids)} image ids; pass one id per image.")
    cat = np.asarray(list(category_ids), dtype=np.int64)
    results: list[dict] = []
    for out, image_id in zip(outputs, image_ids):
        labels = out["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1)
        if labels.size and (labels.min() < 1 or labels.max() > cat.size):
            raise IIFError(f"image {image_id}: labels {int(labels.min())}..{int(labels.max())} outside 1..{cat.size}; "
                           "the detector's number of classes does not match the dataset's categories.")
        boxes = out["boxes"].detach().cpu().to(torch.float64).numpy().reshape(-1, 4)
        scores = out["scores"].detach().cpu().to(torch.float64).numpy().reshape(-1)
        xywh = boxes.copy()
        xywh[:, 2:] -= boxes[:, :2]
        rles = None
        if masks:
            if "masks" not in out:
                raise IIFError("masks=True but the detector outputs have no 'masks'; use masks=False for box models.")
            m = out["masks"].detach().cpu()
            if m.ndim == 4:
                m = m[:, 0]
            if m.shape[0] != labels.size:
                raise IIFError(f"image {image_id}: {m.shape[0]} masks for {labels.size} boxes.")
            if labels.size:
                from pycocotools import mask as mask_utils

                binary = (m > 0.5).numpy().astype(np.uint8)
                rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        ids = cat[labels - 1] if labels.size else labels
        for j in range(labels.size):
            r = {"image_id": int(image_id), "category_id": int(ids[j]), "bbox": [float(v) for v in xywh[j]],
                 "score": float(scores[j])}
            if rles is not None:
                rle = rles[j]
                r["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return results


# -------------------------------------------------------------------------------------------- layouts

_LAYOUTS = ("benchmark layout (BENCHMARK.json, annotations/train.json, annotations/val.json, images/train/, "
            "images/val/ as written by `iif det-data`); COCO layout (annotations/instances_train2017.json, "
            "annotations/instances_val2017.json, train2017/, val2017/); LVIS v1 layout (lvis_v1_train.json and "
            "lvis_v1_val.json in the folder or its annotations/, with the COCO image folders train2017/ and "
            "val2017/ beside them)")


def resolve_detection_data(root: PathLike, eval_split: str = "val") -> tuple[Path, Path, Path, Path]:
    """``(train_json, train_images, val_json, val_images)`` of a ``--data`` folder.

    Accepted layouts, tried in this order:

    * benchmark (``iif det-data``): ``BENCHMARK.json``, ``annotations/{train,val}.json``,
      ``images/{train,val}/`` (images given as ``images/train``, ``images/val``); a generator-2 folder also
      has ``annotations/test.json`` and ``images/test/``: ``eval_split="test"`` returns those in place of val
      (val is for choosing hyper-parameters, test is reported). ``"test"`` on any other folder is refused;
    * LVIS v1: ``lvis_v1_{train,val}.json`` in ``root`` or ``root/annotations``, COCO's ``train2017/`` and
      ``val2017/`` in ``root`` (both image roots are ``root``: LVIS images name their COCO folder);
    * COCO: ``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``.

    Raises :class:`IIFError` naming the accepted layouts and, for a partial layout, what is missing.
    """
    base = Path(root)
    if not base.is_dir():
        raise IIFError(f"--data {base}: not a directory; give a folder in one of the accepted layouts: {_LAYOUTS}.")
    missing_by_layout: list[tuple[str, list[str]]] = []

    def check(name: str, files: Iterable[Path], dirs: Iterable[Path]) -> bool:
        miss = [str(p.relative_to(base)) for p in files if not p.is_file()]
        miss += [str(p.relative_to(base)) + "/" for p in dirs if not p.is_dir()]
        missing_by_layout.append((name, miss))
        return not miss

    ann = base / "annotations"
    if eval_split not in ("val", "test"):
        raise IIFError(f"eval_split must be 'val' or 'test'; got {eval_split!r}.")
    if check("benchmark", [base / "BENCHMARK.json", ann / "train.json", ann / f"{eval_split}.json"],
             [base / "images" / "train", base / "images" / eval_split]):
        return ann / "train.json", base / "images" / "train", ann / f"{eval_split}.json", base / "images" / eval_split
    if eval_split == "test":
        raise IIFError(f"--data {base}: no test split (annotations/test.json and images/test/); only a benchmark "
                       "written by `iif det-data --generator 2` has one: write one, or evaluate on val.")
    for folder in (base, ann):
        if check("LVIS v1", [folder / "lvis_v1_train.json", folder / "lvis_v1_val.json"],
                 [base / "train2017", base / "val2017"]):
            return folder / "lvis_v1_train.json", base, folder / "lvis_v1_val.json", base
    if check("COCO", [ann / "instances_train2017.json", ann / "instances_val2017.json"],
             [base / "train2017", base / "val2017"]):
        return ann / "instances_train2017.json", base / "train2017", ann / "instances_val2017.json", base / "val2017"
    # Name the layout the folder comes closest to (fewest missing parts), if it has any part of one.
    totals = {"benchmark": 5, "LVIS v1": 4, "COCO": 4}
    name, miss = min(missing_by_layout, key=lambda t: len(t[1]))
    hint = f" It looks like a partial {name} layout missing {', '.join(miss)}." if len(miss) < totals[name] else ""
    raise IIFError(f"--data {base}: not a detection data folder.{hint} Accepted layouts: {_LAYOUTS}.")


def restrict_annotations(ann: Mapping[str, Any], image_ids: set[int]) -> dict:
    """A shallow copy of a COCO/LVIS json dict keeping only ``image_ids`` and their annotations."""
    out = dict(ann)
    out["images"] = [im for im in ann["images"] if im["id"] in image_ids]
    out["annotations"] = [a for a in ann["annotations"] if a["image_id"] in image_ids]
    return out


def covering_subset(dataset: "DetectionDataset", n: int) -> torch.utils.data.Subset:
    """``n`` training images that keep as many categories as possible, as a ``Subset`` carrying its own
    counts (``freq``), ``category_ids`` and ``coco``: first, in json order, each image that brings a category
    not yet covered, then the following images in json order. Deterministic."""
    from ..frequency import ClassFrequency

    labels = [{a["category_id"] for a in dataset.coco.imgToAnns.get(i, []) if not a.get("iscrowd", 0)}
              for i in dataset.image_ids]
    picked, covered = [], set()
    for idx, cats in enumerate(labels):
        if len(picked) == n:
            break
        if cats - covered:
            picked.append(idx)
            covered |= cats
    chosen = set(picked)
    for idx in range(len(labels)):
        if len(picked) == n:
            break
        if idx not in chosen:
            picked.append(idx)
    subset = torch.utils.data.Subset(dataset, sorted(picked))
    ann = restrict_annotations(dataset.coco.dataset, {dataset.image_ids[i] for i in subset.indices})
    ann["categories"] = [{k: v for k, v in c.items() if k not in ("image_count", "instance_count")}
                         for c in ann.get("categories", [])]  # the json's count fields describe the whole set
    subset.freq = ClassFrequency.from_coco(ann)
    subset.category_ids = dataset.category_ids
    subset.coco = dataset.coco
    return subset
