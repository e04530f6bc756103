"""Per-image match data of the COCO/LVIS AP evaluation (:func:`cocoeval_matches`), for the paired bootstrap
of :mod:`iif.detection.uncertainty`.

Moved out of :mod:`iif.detection.evaluation` (issue 16), which re-exports it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .evaluation_ap import _run_cocoeval, _summary
from .evaluation_common import (
    _COCO_KEYS,
    _LVIS_KEYS,
    Detections,
    PathOrDict,
    _federated_filter,
    _prepare,
    _require_lvis,
    _top_per_image,
    is_lvis,
)

__all__ = ["cocoeval_matches"]


def _match_image(ious, gts: Sequence[Mapping[str, Any]], dts: Sequence[Mapping[str, Any]], iou_thrs: np.ndarray,
                 area_rng: Sequence[float], lvis: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """COCO's per-image matching (pycocotools ``COCOeval.evaluateImg`` at area range ``area_rng``) of one
    (image, category): ground truth ordered non-ignored first, detections in score order, each detection
    greedily takes the free ground truth of highest IoU >= the threshold (a crowd region may be taken again;
    a non-ignored match is never given up for an ignored one); a detection matched to an ignored ground
    truth, or unmatched with an area outside the range, or (LVIS rule) unmatched in a not-exhaustive
    category (``lvis_mark``), is ignored. Returns ``(tp, fp)`` (thresholds x detections, bool) and the
    number of non-ignored ground truths."""
    gt_ig = np.array([bool(g.get("ignore", 0)) or not area_rng[0] <= g["area"] <= area_rng[1] for g in gts], dtype=bool)
    gind = np.argsort(gt_ig, kind="mergesort")
    gt_ig = gt_ig[gind]
    crowd = np.array([bool(gts[i].get("iscrowd", 0)) for i in gind], dtype=bool)
    T, D, G = len(iou_thrs), len(dts), len(gts)
    dtm = np.zeros((T, D), dtype=bool)
    dt_ig = np.zeros((T, D), dtype=bool)
    if D and G:
        iou_mat = np.asarray(ious, dtype=float)[:, gind]
        best = iou_mat.max(axis=1)
        for ti, thr in enumerate(iou_thrs):
            gtm = np.zeros(G, dtype=bool)
            floor = min(float(thr), 1 - 1e-10)
            for di in np.flatnonzero(best >= floor):
                iou, m = floor, -1
                row = iou_mat[di]
                for gi in range(G):
                    if gtm[gi] and not crowd[gi]:
                        continue
                    if m > -1 and not gt_ig[m] and gt_ig[gi]:
                        break
                    if row[gi] < iou:
                        continue
                    iou, m = row[gi], gi
                if m == -1:
                    continue
                dt_ig[ti, di] = gt_ig[m]
                dtm[ti, di] = True
                gtm[m] = True
    outside = np.array([not area_rng[0] <= d["area"] <= area_rng[1] or (lvis and bool(d.get("lvis_mark")))
                        for d in dts], dtype=bool)
    dt_ig |= ~dtm & outside[None, :]
    return dtm & ~dt_ig, ~dtm & ~dt_ig, int((~gt_ig).sum())


def cocoeval_matches(gt_json: PathOrDict, detections: Detections, iou_type: str = "bbox") -> dict[str, Any]:
    """Per-image match data of the AP evaluation det-bench's table uses, for reweighting images (the paired
    bootstrap of :mod:`iif.detection.uncertainty`).

    The evaluation is :func:`evaluate_lvis`'s (top 300 per image, federated filter, LVIS mode) for LVIS json
    and :func:`evaluate_coco`'s (100 per image and category) otherwise, run once by :func:`_run_cocoeval`.
    faster-coco-eval keeps its per-image results (``evalImgs``) in C++ where Python cannot read them, so
    the IoU matrices of that same run (``ev.ious``, detections in its score order) are matched again here
    by COCO's rule (:func:`_match_image`, area range "all", which AP and AP_r use).

    Returns ``{"lvis", "image_ids" (json order: positions index this), "cat_ids", "iou_thrs", "rec_thrs",
    "per_category", "summary"}``: ``per_category[k]`` (category ``cat_ids[k]``) holds ``score``, ``image``
    (positions), ``rank`` (order of the detection among its image's detections of that category),
    ``tp`` / ``fp`` (thresholds x detections, ignored detections neither) and ``gt_image`` (the position of
    every non-ignored ground truth); ``summary`` is the evaluation's own AP numbers (``_summary``).
    """
    gt, dets = _prepare(gt_json, detections, iou_type)
    lvis = is_lvis(gt)
    if lvis:
        _require_lvis(gt)
        dets = _federated_filter(gt, _top_per_image(dets, 300))
    ev = _run_cocoeval(gt, dets, iou_type, lvis=lvis, max_dets=300 if lvis else 100)
    p = ev.params
    iou_thrs, rec_thrs = np.asarray(p.iouThrs, dtype=float), np.asarray(p.recThrs, dtype=float)
    area_all = p.areaRng[p.areaRngLbl.index("all")]
    max_det = p.maxDets[-1]
    cat_ids = [int(c) for c in p.catIds]
    pos_of = {im["id"]: i for i, im in enumerate(gt["images"])}
    pairs = sorted({(a["image_id"], a["category_id"]) for a in gt["annotations"]}
                   | {(d["image_id"], d["category_id"]) for d in dets}, key=lambda t: (pos_of[t[0]], t[1]))
    parts: dict[int, list] = {c: [] for c in cat_ids}
    for img, cat in pairs:
        gts = ev.gt_dataset.get_instances([img], [cat], True)[0][0]
        dts = ev.dt_dataset.get_instances([img], [cat], True)[0][0]
        inds = np.argsort([-d["score"] for d in dts], kind="mergesort")[:max_det]
        dts = [dts[i] for i in inds]
        tp, fp, npos = _match_image(ev.ious.get((img, cat), []), gts, dts, iou_thrs, area_all, lvis)
        parts[int(cat)].append((pos_of[img], np.array([d["score"] for d in dts], dtype=float), tp, fp, npos))
    per_category = []
    T = len(iou_thrs)
    for c in cat_ids:
        rows = parts[c]
        per_category.append({
            "score": np.concatenate([r[1] for r in rows]) if rows else np.zeros(0),
            "image": np.concatenate([np.full(len(r[1]), r[0], dtype=np.int64) for r in rows]) if rows
            else np.zeros(0, dtype=np.int64),
            "rank": np.concatenate([np.arange(len(r[1]), dtype=np.int64) for r in rows]) if rows
            else np.zeros(0, dtype=np.int64),
            "tp": np.concatenate([r[2] for r in rows], axis=1) if rows else np.zeros((T, 0), dtype=bool),
            "fp": np.concatenate([r[3] for r in rows], axis=1) if rows else np.zeros((T, 0), dtype=bool),
            "gt_image": np.repeat(np.array([r[0] for r in rows], dtype=np.int64),
                                  [r[4] for r in rows]) if rows else np.zeros(0, dtype=np.int64),
        })
    return {"lvis": lvis, "image_ids": list(pos_of), "cat_ids": cat_ids, "iou_thrs": iou_thrs,
            "rec_thrs": rec_thrs, "per_category": per_category,
            "summary": _summary(ev, _LVIS_KEYS if lvis else _COCO_KEYS, lvis=lvis)}
