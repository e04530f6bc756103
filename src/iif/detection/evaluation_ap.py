"""COCO and LVIS AP through faster-coco-eval (:func:`evaluate_lvis`, :func:`evaluate_coco`), the frequency
groups (:func:`category_groups`) and the paper's tail-k AP (:func:`tail_k_ap`), all in percent.

Moved out of :mod:`iif.detection.evaluation` (issue 16), which re-exports the public names.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import IIFError
from .evaluation_common import (
    _COCO_KEYS,
    _LVIS_KEYS,
    Detections,
    PathOrDict,
    _federated_filter,
    _few,
    _import_fce,
    _load_gt,
    _prepare,
    _require_lvis,
    _top_per_image,
    is_lvis,
)

__all__ = ["evaluate_lvis", "evaluate_coco", "tail_k_ap", "category_groups", "EVAL_THREADS"]


def _copy_gt(gt: Mapping[str, Any], lvis: bool) -> dict:
    """A copy the evaluator may annotate in place (faster-coco-eval writes flags into every dict)."""
    anns = [dict(a) for a in gt["annotations"]]
    if lvis:  # the LVIS API has no crowd regions: it treats every annotation as a plain instance
        for a in anns:
            a["iscrowd"] = 0
    return {"images": [dict(im) for im in gt["images"]], "annotations": anns,
            "categories": [dict(c) for c in gt["categories"]]}


def _results_dataset(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]], iou_type: str) -> dict:
    """The results as the dataset ``COCO.loadRes`` builds (fresh dicts with ``id`` = position + 1,
    ``iscrowd`` 0 and ``area`` = box w*h, the area pycocotools gives results that carry a box), built
    directly: loadRes would also write a polygon into every box result, half our run time.

    A mask-only result (``segmentation`` without ``bbox``) gets its box from the mask and ``area`` = the
    mask's pixel count, as pycocotools' ``loadRes`` and the LVIS API do; that area decides its
    small / medium / large range (APs / APm / APl)."""
    from pycocotools import mask as mask_utils

    segm = iou_type == "segm"
    anns = []
    for i, d in enumerate(dets):
        box = d.get("bbox")
        if box is None:  # a mask-only result: its box from the mask, as loadRes does
            rle = dict(d["segmentation"])
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            box = [float(v) for v in mask_utils.toBbox(rle)]
            area = float(mask_utils.area(rle))
        else:
            area = box[2] * box[3]
        a = {"id": i + 1, "image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
             "bbox": list(box), "area": area, "iscrowd": 0}
        if segm:
            a["segmentation"] = dict(d["segmentation"])
        anns.append(a)
    return {"images": [dict(im) for im in gt["images"]], "annotations": anns,
            "categories": [dict(c) for c in gt["categories"]]}


#: Upper bound on faster-coco-eval's mask-IoU worker threads (its own default is 8, capped by the CPUs).
EVAL_THREADS = 4


def _is_thread_start_failure(exc: BaseException) -> bool:
    """``RuntimeError("can't start new thread")`` (CPython's message when the OS refuses a thread)."""
    return isinstance(exc, RuntimeError) and "start new thread" in str(exc)


def _run_cocoeval(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]], iou_type: str, *, lvis: bool,
                  max_dets: int):
    """faster-coco-eval's evaluator after evaluate() + accumulate() (LVIS mode when ``lvis``).

    faster-coco-eval computes mask IoUs in a thread pool. Its workers are bounded here by
    :data:`EVAL_THREADS`, and if the pool cannot start a thread (``can't start new thread``: another
    process holds the machine's thread limit) the evaluation is redone serially on a fresh evaluator (one
    line on stderr) instead of losing the run: the serial and threaded paths give the same numbers.
    """
    COCO, COCOeval_faster = _import_fce()

    def run(workers: int):
        coco_gt = COCO(_copy_gt(gt, lvis))
        coco_dt = COCO(_results_dataset(gt, dets, iou_type))
        ev = COCOeval_faster(coco_gt, coco_dt, iou_type, lvis_style=lvis, print_function=lambda *a, **k: None,
                             rle_iou_max_workers=workers)
        if lvis:
            ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
        return ev

    try:
        return run(EVAL_THREADS)
    except RuntimeError as exc:
        if not _is_thread_start_failure(exc):
            raise
        import sys

        print(f"warning: the evaluation could not start a thread ({exc}); evaluating again on one thread.",
              file=sys.stderr)
        return run(1)


def _mean_precision(precision: np.ndarray) -> float:
    """Mean over the entries > -1 (the COCO/LVIS summary rule), in percent; nan when there are none."""
    valid = precision[precision > -1]
    return float(valid.mean()) * 100.0 if valid.size else float("nan")


def _summary(ev, keys: Sequence[str], lvis: bool, groups: Mapping[Any, str] | None = None) -> dict[str, float]:
    """AP numbers from the accumulated precision array [IoU, recall, category, area, maxDets]; APr/c/f from
    the categories' LVIS ``frequency`` (``lvis``) or from ``groups`` (category id -> letter) when given."""
    p = ev.params
    prec = np.asarray(ev.eval["precision"])[..., -1]  # at the largest maxDets
    iou = np.asarray(p.iouThrs)
    out = {
        "AP": _mean_precision(prec[:, :, :, 0]),
        "AP50": _mean_precision(prec[np.isclose(iou, 0.5)][:, :, :, 0]),
        "AP75": _mean_precision(prec[np.isclose(iou, 0.75)][:, :, :, 0]),
    }
    for key, label in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
        out[key] = _mean_precision(prec[:, :, :, p.areaRngLbl.index(label)])
    if lvis or groups is not None:
        freq = groups if groups is not None else {c["id"]: c["frequency"] for c in ev.cocoGt.dataset["categories"]}
        letters = np.array([freq[c] for c in p.catIds])
        for letter in "rcf":
            out[f"AP{letter}"] = _mean_precision(prec[:, :, letters == letter, 0])
    return {k: out[k] for k in keys}


def category_groups(gt_json: PathOrDict, train_counts: Sequence[int] | np.ndarray | Any | None = None
                    ) -> dict[int, str] | None:
    """The LVIS frequency group (``"r"``/``"c"``/``"f"``) of every category of ``gt_json``, by category id.

    One rule for every dataset, the one ``iif stats`` and :class:`iif.ClassFrequency` use: the json's own
    LVIS ``frequency`` letters when every category has one (LVIS val files carry the train groups), else
    LVIS's definition applied to training image counts (rare: 1-10 images, common: 11-100, frequent: > 100;
    :func:`iif.readers.lvis_group_letters`, a category with no training image is rare). The counts are
    ``train_counts`` (per category sorted by id, or a ``ClassFrequency`` of the training json), else each
    category's ``image_count``. None when neither is known: the groups of a plain COCO json cannot come from
    its val split alone.
    """
    from ..readers import lvis_group_letters

    gt = _load_gt(gt_json)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    if cats and all(c.get("frequency") in ("r", "c", "f") for c in cats):
        return {c["id"]: c["frequency"] for c in cats}
    if train_counts is not None:
        counts = np.asarray(getattr(train_counts, "image_counts", train_counts))
        if counts.shape != (len(cats),):
            raise IIFError(f"train_counts has shape {counts.shape}, expected ({len(cats)},): one training image "
                           "count per category of the json, sorted by category id.")
    elif cats and all(isinstance(c.get("image_count"), (int, np.integer)) for c in cats):
        counts = np.array([c["image_count"] for c in cats])
    else:
        return None
    return dict(zip((c["id"] for c in cats), lvis_group_letters(counts)))


def evaluate_lvis(gt_json: PathOrDict, detections: Detections, iou_type: str = "bbox",
                  max_dets: int = 300) -> dict[str, float]:
    """LVIS v1 AP of ``detections`` on an LVIS-format ``gt_json``, in percent.

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}``: AP averaged over IoU
    0.50:0.05:0.95 and 101 recall points, at IoU 0.5 / 0.75, per object area (small < 32², medium, large
    > 96² pixels) and per frequency group (r / c / f from each category's ``frequency``); ``nan`` where a
    group has no ground truth. The federated rules are those of the official ``lvis`` API (module
    docstring); ``max_dets`` detections per image are kept by score before anything else, as that API
    does. Ground-truth ``iscrowd`` flags are ignored, as in the LVIS API (LVIS has no crowd regions).
    """
    if not isinstance(max_dets, int) or isinstance(max_dets, bool) or max_dets < 1:
        raise IIFError(f"max_dets={max_dets!r} must be a positive int (LVIS uses 300 detections per image).")
    gt, dets = _prepare(gt_json, detections, iou_type)
    _require_lvis(gt)
    # The evaluator would drop unverified detections itself; dropping them first spares their mask work.
    dets = _federated_filter(gt, _top_per_image(dets, max_dets))
    ev = _run_cocoeval(gt, dets, iou_type, lvis=True, max_dets=max_dets)
    return _summary(ev, _LVIS_KEYS, lvis=True)


def evaluate_coco(gt_json: PathOrDict, detections: Detections, iou_type: str = "bbox",
                  groups: Mapping[Any, str] | None = None) -> dict[str, float]:
    """COCO AP of ``detections`` on a COCO-format ``gt_json``, in percent: the numbers pycocotools'
    ``COCOeval.summarize`` prints (at 100 detections per image per category; crowd regions ignored).

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` (``nan`` for an area range without ground
    truth). LVIS-format json is evaluated without its federated rules here; use :func:`evaluate_lvis`.
    ``groups`` (category id -> ``"r"``/``"c"``/``"f"``, e.g. :func:`category_groups` of the training counts)
    adds ``APr``/``APc``/``APf``: the mean AP of each group's categories with ground truth, as LVIS averages.
    """
    gt, dets = _prepare(gt_json, detections, iou_type)
    if groups is not None:
        missing = [c["id"] for c in gt["categories"] if groups.get(c["id"]) not in ("r", "c", "f")]
        if missing:
            raise IIFError(f"groups gives no r/c/f letter for categories {_few(missing)}; give one per category "
                           "(category_groups(gt_json, train_counts)).")
    ev = _run_cocoeval(gt, dets, iou_type, lvis=False, max_dets=100)
    return _summary(ev, _COCO_KEYS + (("APr", "APc", "APf") if groups is not None else ()), lvis=False, groups=groups)


def _per_category_ap(ev) -> dict[int, float]:
    """AP (percent, IoU 0.50:0.95, all areas, largest maxDets) of each category with ground truth."""
    prec = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    out = {}
    for k, cat_id in enumerate(ev.params.catIds):
        ap = _mean_precision(prec[:, :, k])
        if not math.isnan(ap):
            out[int(cat_id)] = ap
    return out


def tail_k_ap(gt_json: PathOrDict, detections: Detections, ks: Sequence[int] = (5, 10, 20),
              iou_type: str = "bbox", train_counts: Sequence[int] | np.ndarray | Any | None = None
              ) -> dict[str, float]:
    """The paper's tail-k AP (Tables XVII, XVIII): mean AP over the k categories with the fewest training
    images, for each k in ``ks``; returns ``{"tail5": ..., "tail10": ..., ...}`` in percent.

    Per-category AP is COCO's (IoU 0.50:0.95, 101 recall points, all areas), computed under LVIS rules
    (federated, 300 detections per image) when ``gt_json`` is LVIS format and under COCO rules (100 per
    image) otherwise, so tail-k AP with k = all categories equals that evaluation's AP.

    ``train_counts``: training-image count of every category, in the order of ``gt_json``'s categories
    sorted by id (an array, or a ``ClassFrequency`` of the training json, whose ``image_counts`` is used);
    by default each category's ``image_count`` field (LVIS val files carry the train counts there). The
    k categories are the ones with the smallest counts among the categories that have ground truth in
    ``gt_json`` (AP is undefined for the others); ties go to the smaller category id.
    """
    gt, dets = _prepare(gt_json, detections, iou_type)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    if train_counts is None:
        by_id = {c["id"]: c.get("image_count") for c in gt["categories"]}
        if any(v is None for v in by_id.values()):
            raise IIFError("tail_k_ap needs training image counts: the json's categories have no "
                           "'image_count'; pass train_counts=ClassFrequency.from_coco(train_json).")
        counts = np.array([by_id[c] for c in cat_ids])
    else:
        counts = np.asarray(getattr(train_counts, "image_counts", train_counts))
        if counts.shape != (len(cat_ids),):
            raise IIFError(f"train_counts has shape {counts.shape}, expected ({len(cat_ids)},): one training "
                           "image count per category of gt_json, sorted by category id.")
    if not np.all(np.isfinite(counts.astype(float))) or np.any(counts < 0):
        raise IIFError("train_counts must be finite, non-negative image counts.")
    ks = [ks] if isinstance(ks, int) else list(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 for k in ks):
        raise IIFError(f"ks={ks!r} must be positive ints (the paper uses 5, 10, 20).")
    lvis = is_lvis(gt)
    if lvis:
        _require_lvis(gt)
    if lvis:
        dets = _federated_filter(gt, _top_per_image(dets, 300))
    ev = _run_cocoeval(gt, dets, iou_type, lvis=lvis, max_dets=300)
    per_cat = _per_category_ap(ev)
    count_of = dict(zip(cat_ids, counts.tolist()))
    order = sorted(per_cat, key=lambda c: (count_of[c], c))
    out = {}
    for k in ks:
        if k > len(order):
            raise IIFError(f"tail-{k} AP needs {k} categories with ground truth in gt_json, only "
                           f"{len(order)} have any; pass ks of at most {len(order)}.")
        out[f"tail{k}"] = float(np.mean([per_cat[c] for c in order[:k]]))
    return out
