"""TIDE's error breakdown (:func:`tide_errors`, Bolya et al., ECCV 2020, with ``tidecv``) and its per-detection
match data (:func:`tide_matches`), with the LVIS federated rules applied around TIDE.

Moved out of :mod:`iif.detection.evaluation` (issue 16), which re-exports the public names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .evaluation_common import (
    Detections,
    PathOrDict,
    _federated_filter,
    _import_tide,
    _prepare,
    _require_lvis,
    _top_per_image,
    is_lvis,
)

__all__ = ["tide_errors", "tide_matches"]


def _tide_inputs(gt_json: PathOrDict, detections: Detections, iou_type: str, max_dets: int | None):
    """tidecv's ground-truth and detection ``Data`` under :func:`tide_errors`' rules (top ``max_dets`` per
    image, LVIS federated filter and not-exhaustive ignore regions, COCO crowd regions); returns
    ``(tidecv, truth, preds, kept detections, masks)``."""
    gt, dets = _prepare(gt_json, detections, iou_type)
    tidecv, tide_functions = _import_tide()
    lvis = is_lvis(gt)
    if lvis:
        _require_lvis(gt)
    if max_dets is None:
        max_dets = 300 if lvis else 100
    dets = _top_per_image(dets, max_dets)
    if lvis:
        dets = _federated_filter(gt, dets)
    masks = iou_type == "segm"
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}

    truth = tidecv.Data("ground truth", max_dets=max_dets)
    for im in gt["images"]:
        truth.add_image(im["id"], str(im.get("file_name", im["id"])))
    for c in gt["categories"]:
        truth.add_class(c["id"], str(c.get("name", c["id"])))
    for a in gt["annotations"]:
        mask = tide_functions.toRLE(a["segmentation"], *sizes[a["image_id"]]) if masks else None
        if a.get("iscrowd", 0) and not lvis:
            truth.add_ignore_region(a["image_id"], a["category_id"], a["bbox"], mask)
        else:
            truth.add_ground_truth(a["image_id"], a["category_id"], a["bbox"], mask)
    if lvis:
        for im in gt["images"]:
            for c in im["not_exhaustive_category_ids"]:
                truth.add_ignore_region(im["id"], c)

    preds = tidecv.Data("detections", max_dets=max_dets)
    for d in dets:
        seg = None
        if masks:
            seg = dict(d["segmentation"])
            if isinstance(seg["counts"], str):
                seg["counts"] = seg["counts"].encode("ascii")
        preds.add_detection(d["image_id"], d["category_id"], float(d["score"]), list(d["bbox"]), seg)
    return tidecv, truth, preds, dets, masks


def tide_errors(gt_json: PathOrDict, detections: Detections, iou_type: str = "bbox", *,
                max_dets: int | None = None) -> dict[str, float]:
    """TIDE's error breakdown at IoU 0.5 (background threshold 0.1), in AP50 points (percent).

    Returns the main errors ``dAP_Cls`` (right box, wrong class), ``dAP_Loc`` (right class, IoU in
    [0.1, 0.5)), ``dAP_Both`` (both), ``dAP_Dupe`` (duplicate), ``dAP_Bkg`` (fired on background),
    ``dAP_Miss`` (missed ground truth), the special errors ``dAP_FP`` (AP50 gained if every false positive
    were scored 0: the paper's ΔAP_FP, Fig. 1) and ``dAP_FN`` (gained with perfect recall), and
    ``AP50_tide``, TIDE's own AP50. TIDE's AP50 is not COCO/LVIS AP50 (its matching and AP code differ):
    compare ΔAP values to ``AP50_tide`` only, never to :func:`evaluate_lvis`'s ``AP50``.

    LVIS-format json: TIDE knows no federated rules, so they are applied around it. The top ``max_dets``
    detections per image are kept (300 for LVIS, 100 for COCO by default), then detections of a category
    that is neither annotated nor in ``neg_category_ids`` on their image are dropped (the LVIS API never
    evaluates them; left in, TIDE would count them as background or class errors, and as false positives
    in ΔAP_FP, for categories nobody checked), and each ``not_exhaustive_category_ids`` category gets a
    whole-image TIDE ignore region, so its unmatched detections are ignored and its matched ones count,
    as in the LVIS API. COCO ``iscrowd`` annotations become TIDE ignore regions (TIDE's COCO loader does
    the same); a missing ``iscrowd`` counts as 0. With no detections ``AP50_tide`` is 0 and the errors are
    ``nan``; an error whose fix leaves TIDE nothing to average (degenerate, tiny results) is ``nan`` too.
    """
    tidecv, truth, preds, dets, masks = _tide_inputs(gt_json, detections, iou_type, max_dets)

    main_names = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
    nan = float("nan")
    if not dets:  # TIDE cannot analyse an empty result (its AP divides by zero): AP 0, errors undefined
        return {**{f"dAP_{k}": nan for k in main_names}, "dAP_FP": nan, "dAP_FN": nan, "AP50_tide": 0.0}
    tide = tidecv.TIDE(mode=tidecv.TIDE.MASK if masks else tidecv.TIDE.BOX)
    run = tide.evaluate(truth, preds, name="detections")
    # A fix that leaves no category with data (e.g. fixing misses when only a handful of detections
    # exist) makes TIDE divide by zero; those error values are undefined, reported as nan.
    try:
        main = tide.get_main_errors()["detections"]
    except ZeroDivisionError:
        main = {k: nan for k in main_names}
    try:
        special = tide.get_special_errors()["detections"]
    except ZeroDivisionError:
        special = {"FalsePos": nan, "FalseNeg": nan}
    out = {f"dAP_{k}": float(main[k]) for k in main_names}
    out["dAP_FP"] = float(special["FalsePos"])
    out["dAP_FN"] = float(special["FalseNeg"])
    out["AP50_tide"] = float(run.ap)
    return out


def tide_matches(gt_json: PathOrDict, detections: Detections, *, max_dets: int | None = None) -> dict[str, Any]:
    """Per-detection data of :func:`tide_errors`' box TIDE run (IoU 0.5), for reweighting images.

    Runs tidecv once under :func:`tide_errors`' rules and reads back what its matching decided for every
    kept detection. Returns ``{"image_ids" (json order), "image", "class", "score", "rank" (the detection's
    place in its image's score order, TIDE's tie order), "used" (1 true positive, 0 false positive, -1
    ignored), "gt_image", "gt_class" (every non-ignored ground truth)}``, with images as positions in
    ``image_ids``."""
    tidecv, truth, preds, dets, _ = _tide_inputs(gt_json, detections, "bbox", max_dets)
    pos_of = {im: i for i, im in enumerate(truth.images)}
    if dets:
        tidecv.TIDE(mode=tidecv.TIDE.BOX).evaluate(truth, preds, name="detections")
    kept = [p for p in preds.annotations if "_idx" in p]  # those TIDE evaluated (all, after the top-k cut)
    used = [-1 if p["used"] is None else int(bool(p["used"])) for p in kept]
    gts = [a for a in truth.annotations if not a["ignore"]]
    return {"image_ids": list(truth.images), "image": np.array([pos_of[p["image"]] for p in kept], dtype=np.int64),
            "class": np.array([p["class"] for p in kept], dtype=np.int64),
            "score": np.array([p["score"] for p in kept], dtype=float),
            "rank": np.array([p["_idx"] for p in kept], dtype=np.int64), "used": np.array(used, dtype=np.int64),
            "gt_image": np.array([pos_of[a["image"]] for a in gts], dtype=np.int64),
            "gt_class": np.array([a["class"] for a in gts], dtype=np.int64)}
