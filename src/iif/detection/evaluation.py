"""Detection evaluation: LVIS and COCO AP, the paper's tail-k AP, TIDE errors and false-positive counts.

Every AP is in **percent** (0-100), as in the paper's Tables XI-XVIII; an AP that is undefined (a frequency
group or area range with no ground truth) is ``nan`` (the official APIs print -1 there).

* :func:`evaluate_lvis` — LVIS v1 box or mask AP with the federated rules (Gupta et al., LVIS, 2019): the
  top ``max_dets`` (300) detections per image by score are kept; a category is evaluated on an image only if
  it is in the image's positive set (it has ground truth there) or its ``neg_category_ids``; unmatched
  detections of a category in the image's ``not_exhaustive_category_ids`` are ignored; AP_r / AP_c / AP_f
  average the categories whose ``frequency`` is r / c / f. Computed with faster-coco-eval's LVIS mode (C++,
  works on numpy 2), which gives the official ``lvis`` API's numbers (tested to 1e-9 on a fixture).
* :func:`evaluate_coco` — COCO AP (100 detections per image, crowd regions ignored), equal to pycocotools.
* :func:`tail_k_ap` — the paper's tail-k AP (Tables XVII, XVIII): the mean AP of the k categories with
  the fewest training images.
* :func:`tide_errors` — TIDE's error breakdown (Bolya et al., ECCV 2020) with ``tidecv``; its special
  error ``dAP_FP`` is the paper's ΔAP_FP (Fig. 1): the AP50 gained if every false positive were scored 0.
* :func:`count_false_positives` / :func:`false_positives_by_group` — detections above a score threshold
  that match no ground truth, the plain count behind ΔAP_FP.

``gt_json`` is a path or a loaded dict (never modified); ``detections`` is a list of COCO/LVIS result dicts
(``image_id``, ``category_id`` (json id), ``bbox`` [x, y, w, h], ``score``, and ``segmentation`` as an RLE
dict for masks) or the path of a json file holding that list. :func:`check_results` validates them first.
faster-coco-eval and tidecv are imported on first use (``pip install "iif[detection]"``).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import IIFError
from ..readers import read_json as _read_json

__all__ = [
    "evaluate_lvis",
    "is_lvis",
    "evaluate_coco",
    "tail_k_ap",
    "tide_errors",
    "cocoeval_matches",
    "tide_matches",
    "count_false_positives",
    "false_positives_by_group",
    "category_groups",
    "check_results",
    "IOU_TYPES",
]

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


# ------------------------------------------------------------------------------------------- AP (COCOeval)


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


# -------------------------------------------------------------------------------------------------- TIDE


def _federated_filter(gt: Mapping[str, Any], dets: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Drop detections of categories that are neither positive nor negative on their image (LVIS rule 1)."""
    verified: dict[Any, set] = {im["id"]: set(im.get("neg_category_ids", ())) for im in gt["images"]}
    for a in gt["annotations"]:
        verified[a["image_id"]].add(a["category_id"])
    return [d for d in dets if d["category_id"] in verified[d["image_id"]]]


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


# --------------------------------------------------------------------------------------- false positives


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
