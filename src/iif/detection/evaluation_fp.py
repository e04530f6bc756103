"""False positives above a score threshold (:func:`count_false_positives`, :func:`false_positives_by_group`):
the plain count behind the paper's ΔAP_FP (Fig. 1).

Moved out of :mod:`iif.detection.evaluation` (issue 16), which re-exports the public names.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

import numpy as np

from ..errors import IIFError
from .evaluation_common import (
    Detections,
    PathOrDict,
    _federated_filter,
    _finite_number,
    _prepare,
    _require_lvis,
    is_lvis,
)

__all__ = ["count_false_positives", "false_positives_by_group"]


def _gt_rle(ann: Mapping[str, Any], height: int, width: int):
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    seg = dict(seg)
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_utils.frPyObjects(seg, height, width)
    if isinstance(seg["counts"], str):
        seg["counts"] = seg["counts"].encode("ascii")
    return seg


def _false_positive_categories(gt_json: PathOrDict, detections: Detections, score_threshold: float,
                               iou_threshold: float, iou_type: str) -> tuple[list[Any], Mapping[str, Any]]:
    """The category id of every false positive (one entry each), and the ground truth."""
    from pycocotools import mask as mask_utils

    gt, dets = _prepare(gt_json, detections, iou_type)
    for name, v in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
        if not _finite_number(v) or not 0.0 <= v <= 1.0:
            raise IIFError(f"{name}={v!r} must be a number in [0, 1].")
    lvis = is_lvis(gt)
    if lvis:
        _require_lvis(gt)
        dets = _federated_filter(gt, dets)
    images = {im["id"]: im for im in gt["images"]}
    not_exhaustive = {im["id"]: set(im.get("not_exhaustive_category_ids", ())) if lvis else set()
                      for im in gt["images"]}
    gts: dict[tuple, list] = defaultdict(list)
    for a in gt["annotations"]:
        gts[a["image_id"], a["category_id"]].append(a)
    dts: dict[tuple, list] = defaultdict(list)
    for d in dets:
        if d["score"] >= score_threshold:
            dts[d["image_id"], d["category_id"]].append(d)

    fps = []
    for (img, cat), group in dts.items():
        group = sorted(group, key=lambda d: d["score"], reverse=True)
        truths = gts.get((img, cat), [])
        if not truths:
            if cat not in not_exhaustive[img]:
                fps.extend([cat] * len(group))
            continue
        crowd = np.array([bool(a.get("iscrowd", 0)) and not lvis for a in truths])
        if iou_type == "segm":
            h, w = images[img]["height"], images[img]["width"]
            g = [_gt_rle(a, h, w) for a in truths]
            dd = []
            for d in group:
                rle = dict(d["segmentation"])
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
                dd.append(rle)
        else:
            g = [list(map(float, a["bbox"])) for a in truths]
            dd = [list(map(float, d["bbox"])) for d in group]
        # crowd columns hold intersection / detection area, as in COCO's matching
        iou = np.asarray(mask_utils.iou(dd, g, crowd.astype(np.uint8).tolist()), dtype=float)
        matched = np.zeros(len(truths), dtype=bool)
        for i in range(len(group)):
            free = np.where(~matched & ~crowd & (iou[i] >= iou_threshold), iou[i], -1.0)
            j = int(np.argmax(free))
            if free[j] >= 0:
                matched[j] = True
            elif not (crowd & (iou[i] >= iou_threshold)).any() and cat not in not_exhaustive[img]:
                fps.append(cat)
    return fps, gt


def count_false_positives(gt_json: PathOrDict, detections: Detections, *, score_threshold: float = 0.3,
                          iou_threshold: float = 0.5, iou_type: str = "bbox") -> int:
    """Number of detections with ``score >= score_threshold`` that match no ground truth of their category.

    Matching is greedy by score within each (image, category): a detection takes the unmatched ground
    truth of its category with the highest IoU, if that IoU >= ``iou_threshold``; each ground truth is
    matched once, so a second detection of an already-found object is a false positive (a duplicate).
    Not counted: detections inside a COCO crowd region (IoU of intersection over detection area >=
    threshold), and on LVIS-format json, as the LVIS API does, detections of a category neither annotated
    nor in ``neg_category_ids`` on their image, and unmatched detections of a category in the image's
    ``not_exhaustive_category_ids``. Unlike ΔAP_FP this ignores scores below the threshold and the ranking.
    """
    fps, _ = _false_positive_categories(gt_json, detections, score_threshold, iou_threshold, iou_type)
    return len(fps)


def false_positives_by_group(gt_json: PathOrDict, detections: Detections, *, score_threshold: float = 0.3,
                             iou_threshold: float = 0.5, iou_type: str = "bbox",
                             groups: Mapping[Any, str] | None = None) -> dict[str, int]:
    """:func:`count_false_positives` split by the detected category's frequency group: ``{"r", "c", "f"}``
    from ``groups`` (category id -> letter, :func:`category_groups`) when given, else the categories' LVIS
    ``frequency`` letters (or, without them, from ``image_count``: r <= 10, c 11-100, f > 100), plus
    ``"all"``. Shows whether the false positives land on rare categories (Fig. 1).
    """
    fps, gt = _false_positive_categories(gt_json, detections, score_threshold, iou_threshold, iou_type)
    letters = dict(groups) if groups is not None else {}
    for c in ([] if groups is not None else gt["categories"]):
        letter = c.get("frequency")
        if letter not in ("r", "c", "f"):
            n = c.get("image_count")
            if n is None:
                raise IIFError(f"category {c.get('id')} has neither 'frequency' nor 'image_count', so its "
                               "group is unknown; use count_false_positives, or add LVIS frequency letters.")
            letter = "r" if n <= 10 else "c" if n <= 100 else "f"
        letters[c["id"]] = letter
    out = {"r": 0, "c": 0, "f": 0}
    for cat in fps:
        out[letters[cat]] += 1
    out["all"] = len(fps)
    return out
