"""What every evaluation of :mod:`iif.detection.evaluation` starts with: reading the ground truth and the
detections, checking them (:func:`check_results`), the LVIS format test, the optional packages, and the
per-image top-k cut and federated filter the LVIS rules apply first.

Moved out of :mod:`iif.detection.evaluation` (issue 16), which re-exports the public names.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import IIFError
from ..readers import read_json as _read_json

__all__ = ["IOU_TYPES", "is_lvis", "check_results"]

IOU_TYPES = ("bbox", "segm")
_LVIS_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
_COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_INSTALL = 'pip install "iif[detection]"'

PathOrDict = str | os.PathLike | Mapping[str, Any]
Detections = str | os.PathLike | Sequence[Mapping[str, Any]]

# ----------------------------------------------------------------------------------------------- loading


def _load_gt(gt_json: PathOrDict) -> Mapping[str, Any]:
    """The ground-truth dict (read from a path, or the caller's dict itself: never written to)."""
    if isinstance(gt_json, (str, os.PathLike)):
        gt = _read_json(gt_json)
        name = str(gt_json)
    else:
        gt, name = gt_json, "ground-truth dict"
    if not isinstance(gt, Mapping) or any(k not in gt for k in ("images", "annotations", "categories")):
        raise IIFError(f"{name}: not a COCO/LVIS annotation object (needs 'images', 'annotations' and "
                       "'categories'); pass the val annotation json, not a results file.")
    return gt


def _load_dets(detections: Detections) -> list[Mapping[str, Any]]:
    if isinstance(detections, (str, os.PathLike)):
        dets = _read_json(detections)
        if not isinstance(dets, list):
            raise IIFError(f"{detections}: a results file must hold a json list of detection dicts, found a "
                           f"{type(dets).__name__}; write the list itself (COCO results format).")
        return dets
    if isinstance(detections, Mapping) or not isinstance(detections, Sequence):
        raise IIFError(f"detections must be a list of result dicts or a path to a results json, got "
                       f"{type(detections).__name__}; pass e.g. iif.detection.predict(...)'s output.")
    return list(detections)


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise IIFError(f"iou_type={iou_type!r} is not supported; use one of {IOU_TYPES} ('segm' for masks).")


def is_lvis(gt: Mapping[str, Any]) -> bool:
    """LVIS format: every image lists ``neg_category_ids`` and every category has a ``frequency``."""
    return bool(gt["images"]) and all("neg_category_ids" in im for im in gt["images"]) and all(
        "frequency" in c for c in gt["categories"])


def _require_lvis(gt: Mapping[str, Any]) -> None:
    for im in gt["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if not isinstance(im.get(key), list):
                raise IIFError(f"image {im.get('id')} has no {key!r} list, so the json is not LVIS format; "
                               "use evaluate_coco for COCO data, or add the federated fields ([] if none).")
    for c in gt["categories"]:
        if c.get("frequency") not in ("r", "c", "f"):
            raise IIFError(f"category {c.get('id')} has frequency {c.get('frequency')!r}, LVIS needs 'r', "
                           "'c' or 'f'; set it from the training image counts (r: 1-10, c: 11-100, f: >100).")


def _import_fce():
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise IIFError(f"faster-coco-eval is not installed; {_INSTALL}") from None
    return COCO, COCOeval_faster


def _import_tide():
    try:
        import tidecv
        from tidecv import functions as tide_functions
    except ImportError:
        raise IIFError(f"tidecv is not installed; {_INSTALL}") from None
    return tidecv, tide_functions


# -------------------------------------------------------------------------------------------- validation


def _few(ids: Iterable[Any], n: int = 5) -> str:
    ids = sorted(set(ids), key=repr)
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(repr(i) for i in ids[:n]) + more


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def _check_gt_annotations(gt: Mapping[str, Any], iou_type: str) -> None:
    anns = gt["annotations"]
    images = {im.get("id") for im in gt["images"]}
    cat_ids = {c.get("id") for c in gt["categories"]}
    if iou_type == "segm" and any("segmentation" not in a for a in anns):
        bad = [a.get("id") for a in anns if "segmentation" not in a]
        raise IIFError(f"ground-truth annotations {_few(bad)} have no 'segmentation'; mask AP needs masks, "
                       "evaluate iou_type='bbox' instead.")
    bad = [a.get("id") for a in anns if "bbox" not in a or "area" not in a]
    if bad:
        raise IIFError(f"ground-truth annotations {_few(bad)} lack 'bbox' or 'area'; add them "
                       "(area = mask area, or w*h for boxes).")
    bad = [a.get("id") for a in anns if a.get("image_id") not in images or a.get("category_id") not in cat_ids]
    if bad:
        raise IIFError(f"ground-truth annotations {_few(bad)} point at unknown image or category ids; "
                       "fix the annotation json.")


def _detections_look_valid(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]], iou_type: str) -> bool:
    """Vectorised screen of the detections (the common, valid case costs a few list passes); False sends
    :func:`_check_loaded` to its per-detection loop, which names what is wrong."""
    if not all(type(d) is dict for d in dets):
        return False
    images = {im["id"]: im for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    if not {d.get("image_id") for d in dets} <= images.keys() or not {d.get("category_id") for d in dets} <= cat_ids:
        return False
    try:  # no dtype given: strings, None or ragged boxes give a non-numeric array or raise
        scores = np.asarray([d["score"] for d in dets])
        boxes = np.asarray([d["bbox"] for d in dets])
    except (KeyError, TypeError, ValueError):
        return False
    if scores.dtype.kind not in "if" or boxes.dtype.kind not in "if" or boxes.shape != (len(dets), 4):
        return False
    if not np.isfinite(scores).all() or not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
        return False
    if iou_type == "segm":
        for d in dets:
            seg, im = d.get("segmentation"), images[d["image_id"]]
            if (type(seg) is not dict or "counts" not in seg
                    or list(seg.get("size", ())) != [im.get("height"), im.get("width")]):
                return False
    return True


def _check_loaded(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]], iou_type: str) -> None:
    _check_iou_type(iou_type)
    _check_gt_annotations(gt, iou_type)
    if _detections_look_valid(gt, dets, iou_type):
        return
    images = {im["id"]: im for im in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    bad_img, bad_cat, bad_box, bad_score, bad_seg, not_dict = [], [], [], [], [], []
    for i, d in enumerate(dets):
        if not isinstance(d, Mapping):
            not_dict.append(i)
            continue
        if d.get("image_id") not in images:
            bad_img.append(d.get("image_id"))
            continue
        if d.get("category_id") not in cat_ids:
            bad_cat.append(d.get("category_id"))
        if not _finite_number(d.get("score")):
            bad_score.append(i)
        box = d.get("bbox")
        if box is not None or iou_type == "bbox":
            if (not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_finite_number(v) for v in box)
                    or box[2] < 0 or box[3] < 0):
                bad_box.append(i)
        if iou_type == "segm":
            seg = d.get("segmentation")
            im = images[d["image_id"]]
            if (not isinstance(seg, Mapping) or "counts" not in seg
                    or list(seg.get("size", ())) != [im.get("height"), im.get("width")]):
                bad_seg.append(i)
    if not_dict:
        raise IIFError(f"detections {_few(not_dict)} are not dicts; each result must be a dict with image_id, "
                       "category_id, bbox and score.")
    if bad_img:
        raise IIFError(f"{len(bad_img)} detections have image ids not in the ground truth ({_few(bad_img)}); "
                       "evaluate against the annotation json the images came from.")
    if bad_cat:
        raise IIFError(f"{len(bad_cat)} detections have category ids not in the ground truth "
                       f"({_few(bad_cat)}); map contiguous labels to json ids (category_ids[label - 1]).")
    if bad_score:
        raise IIFError(f"{len(bad_score)} detections have a missing or non-finite score (indices "
                       f"{_few(bad_score)}); drop them or fix the model's output before evaluating.")
    if bad_box:
        raise IIFError(f"{len(bad_box)} detections have a bbox that is not 4 finite numbers [x, y, w, h] with "
                       f"w, h >= 0 (indices {_few(bad_box)}); convert xyxy boxes to xywh.")
    if bad_seg:
        raise IIFError(f"{len(bad_seg)} detections lack an RLE 'segmentation' of their image's [height, "
                       f"width] (indices {_few(bad_seg)}); for iou_type='segm' encode each mask with "
                       "pycocotools.mask.encode, or evaluate iou_type='bbox'.")


def check_results(gt: PathOrDict, detections: Detections, *, iou_type: str = "bbox") -> None:
    """Raise :class:`IIFError` (one line, with the fix) if ``detections`` cannot be evaluated on ``gt``.

    Checks: every detection is a dict whose ``image_id`` and ``category_id`` exist in ``gt``, whose
    ``score`` is a finite number and whose ``bbox`` is 4 finite numbers [x, y, w, h] with w, h >= 0; for
    ``iou_type="segm"`` each also has an RLE ``segmentation`` of its image's size, and the ground truth has
    masks. ``gt`` and ``detections`` may be paths or loaded objects; nothing is modified.
    """
    _check_loaded(_load_gt(gt), _load_dets(detections), iou_type)


def _prepare(gt_json: PathOrDict, detections: Detections, iou_type: str):
    gt = _load_gt(gt_json)
    dets = _load_dets(detections)
    _check_loaded(gt, dets, iou_type)
    return gt, dets


def _top_per_image(dets: Sequence[Mapping[str, Any]], max_dets: int) -> list[Mapping[str, Any]]:
    """The ``max_dets`` highest-scoring detections of each image (a stable sort, as the LVIS API does),
    grouped by image in order of first appearance."""
    by_image: dict[Any, list] = defaultdict(list)
    for d in dets:
        by_image[d["image_id"]].append(d)
    out = []
    for group in by_image.values():
        if len(group) > max_dets:
            group = sorted(group, key=lambda d: d["score"], reverse=True)[:max_dets]
        out.extend(group)
    return out


def _federated_filter(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Drop detections of categories that are neither positive nor negative on their image (LVIS rule 1)."""
    verified: dict[Any, set] = {im["id"]: set(im.get("neg_category_ids", ())) for im in gt["images"]}
    for a in gt["annotations"]:
        verified[a["image_id"]].add(a["category_id"])
    return [d for d in dets if d["category_id"] in verified[d["image_id"]]]
