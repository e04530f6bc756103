"""Paired bootstrap over test images: a 95% interval for the difference between two rows of a results table.

Two detectors scored on the same test images are compared by the *difference* of their metric. Its
sampling noise comes from which images the test set happens to hold, so the interval resamples the images:
draw ``n`` image positions with replacement (``n`` = the number of test images), compute every row's metric
on that resampled set, take the difference to the reference row; repeat ``samples`` times; the interval is
the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of the differences (numpy's linear
interpolation). *Paired*: one draw of image positions serves every row, so what the rows share (hard
images, easy images) cancels in the difference, as it does in the table itself.

* :func:`bootstrap_picks` — the ``(samples, n)`` matrix of image positions, from ``seed`` alone.
* :func:`paired_bootstrap` — intervals for every row against a reference row, for any metric computed from
  per-image data (``metric(row_data, picks) -> float``).
* :func:`resample_images` — a COCO/LVIS ground truth and detections restricted to a resampled image list
  (an image drawn twice becomes two images), so AP, AP_r and TIDE's ΔAP_FP can be the metric.
* :class:`ImageWeightedMetrics` — the same three numbers on any resample without re-evaluating: one
  evaluation of the full test set, then images weighted by how often they are drawn (the fast route).
* :func:`row_intervals` — what `iif det-bench` writes to summary.json and report.md: every row against the
  softmax row and the best additive row, for AP, AP_r and ΔAP_FP (docs/detection.md, "Uncertainty"), by
  the fast route; :func:`resampled_metrics` stays as the reference it is tested against.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import IIFError

__all__ = ["bootstrap_picks", "paired_bootstrap", "resample_images", "resampled_metrics", "row_intervals",
           "INTERVAL_METRICS", "ADDITIVE_METHODS", "ImageWeightedMetrics"]


def _positive_int(value: Any, what: str, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise IIFError(f"{what} must be a positive integer, e.g. {example}; got {value!r}.")
    return int(value)


def bootstrap_picks(num_images: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """``(samples, num_images)`` int64 image positions drawn with replacement by ``default_rng(seed)``."""
    n = _positive_int(num_images, "num_images", "400")
    b = _positive_int(samples, "samples (bootstrap resamples)", "1000")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise IIFError(f"seed must be a non-negative integer; got {seed!r}.")
    return np.random.default_rng(int(seed)).integers(0, n, size=(b, n), dtype=np.int64)


def paired_bootstrap(rows: Mapping[str, Any], metric: Callable[[Any, np.ndarray], float], num_images: int,
                     reference: str, *, samples: int = 1000, seed: int = 0, level: float = 0.95,
                     picks: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Paired bootstrap intervals of ``metric(row) - metric(reference)`` for every other row.

    Args:
        rows: row name -> that row's per-image data (anything ``metric`` reads: detections, per-image
            scores, ...).
        metric: ``metric(row_data, positions) -> float``: the metric on the images at ``positions`` (an int
            array of length ``num_images`` with repeats; ``np.arange(num_images)`` is the test set itself).
        num_images: the number of test images ``n``.
        reference: the row the others are compared with (e.g. ``"softmax"``).
        samples, seed: the number of resamples and the seed of :func:`bootstrap_picks` (ignored with
            ``picks``).
        level: the interval's coverage in (0, 1).
        picks: a ``(samples, n)`` matrix of positions to use instead (the same one for several calls keeps
            every comparison on the same resamples).

    Returns:
        ``{row: {"diff", "low", "high", "std", "samples", "level", "within_noise"}}`` for every row but the
        reference: ``diff`` on the full test set, ``low`` / ``high`` the percentile interval, ``std`` the
        bootstrap standard deviation, ``within_noise`` True when the interval contains 0. A resample on which
        the metric is nan (e.g. AP_r with no rare instance drawn) is left out; ``samples`` counts the rest.
    """
    if not isinstance(rows, Mapping) or reference not in rows:
        raise IIFError(f"reference {reference!r} is not one of the rows {sorted(rows) if isinstance(rows, Mapping) else rows!r}; "
                       "pass the name of the row to compare against (e.g. 'softmax').")
    if not callable(metric):
        raise IIFError("metric must be a function metric(row_data, positions) -> float.")
    try:
        lv = float(level)
    except (TypeError, ValueError):
        lv = float("nan")
    if not 0.0 < lv < 1.0:
        raise IIFError(f"level must lie strictly between 0 and 1 (0.95 for a 95% interval); got {level!r}.")
    n = _positive_int(num_images, "num_images", "400")
    if picks is None:
        picks = bootstrap_picks(n, samples, seed)
    picks = np.asarray(picks)
    if picks.ndim != 2 or picks.shape[1] != n or picks.size == 0 or picks.min() < 0 or picks.max() >= n:
        raise IIFError(f"picks must be a (samples, {n}) matrix of image positions in 0..{n - 1}; got shape "
                       f"{picks.shape}. Build it with bootstrap_picks(num_images, samples, seed).")
    everything = np.arange(n, dtype=np.int64)
    ref_full = float(metric(rows[reference], everything))
    ref_boot = np.array([float(metric(rows[reference], p)) for p in picks])
    out: dict[str, dict[str, Any]] = {}
    for name, data in rows.items():
        if name == reference:
            continue
        diffs = np.array([float(metric(data, p)) for p in picks]) - ref_boot
        diffs = diffs[np.isfinite(diffs)]
        full = float(metric(data, everything)) - ref_full
        if diffs.size:
            low, high = (float(v) for v in np.percentile(diffs, [50 * (1 - lv), 50 * (1 + lv)]))
            std = float(diffs.std(ddof=1)) if diffs.size > 1 else float("nan")
        else:
            low = high = std = float("nan")
        out[name] = {"diff": full, "low": low, "high": high, "std": std, "samples": int(diffs.size),
                     "level": lv, "within_noise": bool(low <= 0.0 <= high) if math.isfinite(low) else True}
    return out


def resample_images(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], positions: Sequence[int], *,
                    image_ids: Sequence[Any] | None = None) -> tuple[dict, list[dict]]:
    """The ground truth and detections of the images at ``positions`` (repeats kept as distinct images).

    Args:
        gt: a COCO/LVIS annotation dict (not modified).
        detections: result dicts on ``gt``'s images.
        positions: indices into ``image_ids`` (a :func:`bootstrap_picks` row).
        image_ids: the test images in position order; default: ``gt["images"]`` in json order.

    Returns:
        ``(gt', detections')``: draw ``k`` becomes image id ``k + 1`` (its LVIS fields, size and file kept),
        with copies of its annotations (new ids) and of its detections, so an image drawn twice counts
        twice in AP, exactly as a test set holding it twice would.
    """
    images = {im["id"]: im for im in gt["images"]}
    order = [im["id"] for im in gt["images"]] if image_ids is None else list(image_ids)
    missing = [i for i in order if i not in images]
    if missing:
        raise IIFError(f"image ids {missing[:5]} are not in the ground truth; pass image_ids from gt['images'].")
    anns_of: dict[Any, list] = {}
    for a in gt["annotations"]:
        anns_of.setdefault(a["image_id"], []).append(a)
    dets_of: dict[Any, list] = {}
    for d in detections:
        dets_of.setdefault(d["image_id"], []).append(d)
    new_images, new_anns, new_dets = [], [], []
    for k, pos in enumerate(positions):
        old = order[int(pos)]
        new_id = k + 1
        new_images.append({**images[old], "id": new_id})
        for a in anns_of.get(old, ()):
            new_anns.append({**a, "id": len(new_anns) + 1, "image_id": new_id})
        for d in dets_of.get(old, ()):
            new_dets.append({**d, "image_id": new_id})
    out = {key: value for key, value in gt.items() if key not in ("images", "annotations")}
    out.update(images=new_images, annotations=new_anns)
    return out, new_dets


#: The metrics det-bench puts intervals on (its row keys): mask AP, rare-category mask AP, TIDE's ΔAP_FP.
INTERVAL_METRICS: tuple[str, ...] = ("AP", "APr", "dAP_FP")
#: The methods whose rows are "additive" (the best of them by AP_r is the second reference).
ADDITIVE_METHODS: tuple[str, ...] = ("logit_adjustment", "balanced_softmax")


def resampled_metrics(val_json: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], positions: Sequence[int],
                      *, masks: bool, groups: Mapping[Any, str] | None = None) -> dict[str, float]:
    """AP, AP_r (mask AP when ``masks``, else box AP) and TIDE's box ΔAP_FP of ``detections`` on the test images
    at ``positions``, by the evaluation det-bench's table uses (:func:`iif.detection.evaluation.evaluate_lvis`
    for an LVIS json, :func:`~iif.detection.evaluation.evaluate_coco` with ``groups`` otherwise, and
    :func:`~iif.detection.evaluation.tide_errors`) on :func:`resample_images`'s set; nan where undefined.

    The slow reference route (a full evaluation per resample); :func:`row_intervals` uses
    :class:`ImageWeightedMetrics`, which is tested equal to it."""
    from .evaluation import evaluate_coco, evaluate_lvis, is_lvis, tide_errors

    gt, dets = resample_images(val_json, detections, positions)
    iou = "segm" if masks else "bbox"
    ev = evaluate_lvis(gt, dets, iou_type=iou) if is_lvis(gt) else evaluate_coco(gt, dets, iou_type=iou, groups=groups)
    tide = tide_errors(gt, dets, iou_type="bbox")

    def num(x):
        return float("nan") if x is None else float(x)

    return {"AP": num(ev.get("AP")), "APr": num(ev.get("APr")), "dAP_FP": num(tide.get("dAP_FP"))}


# ------------------------------------------------------------------------------------- the per-image route


def _tie_runs(scores: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` of every run of two or more equal scores in a score-sorted array."""
    if scores.size < 2:
        return []
    edge = np.flatnonzero(scores[1:] != scores[:-1]) + 1
    bounds = np.concatenate([[0], edge, [scores.size]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b - a > 1]


class _Sorted:
    """One category's detections in the order the evaluators rank a test set holding every image once:
    score descending, then image position, then the detection's place in its image (``rank``)."""

    def __init__(self, score: np.ndarray, image: np.ndarray, rank: np.ndarray):
        self.order = np.lexsort((rank, image, -score))
        self.image = image[self.order]
        self.rank = rank[self.order]
        self.ties = _tie_runs(score[self.order])

    def sequence(self, w: np.ndarray, draws: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The ranked list of the resampled set as ``(index into the sorted detections, multiplicity)``.

        A detection of an image drawn ``k`` times stands for its ``k`` copies, which the slow route ranks
        next to each other (equal score, nothing between them unless another detection has that very score):
        one entry of multiplicity ``k``. Their running TP/FP counts pass through the intermediate points
        the slow route also visits, but those never change COCO's or TIDE's interpolated precision: along
        ``k`` true positives precision rises, so the envelope at each of them is the one at the last; along
        ``k`` false positives recall is flat (no recall threshold lands on them) and precision falls below
        the point before the run. Where scores tie between different detections the order inside the tie
        (draw position, then ``rank``) does matter, so tied runs are expanded copy by copy in that order.
        """
        ww = w[self.image]
        if not self.ties:
            keep = np.flatnonzero(ww)
            return keep, ww[keep]
        idx, mult, prev = [], [], 0
        for a, b in self.ties + [(len(ww), len(ww))]:
            keep = prev + np.flatnonzero(ww[prev:a])
            idx.append(keep)
            mult.append(ww[keep])
            if b > a:
                entries = sorted((int(k), int(self.rank[j]), j) for j in range(a, b) for k in draws(int(self.image[j])))
                idx.append(np.array([e[2] for e in entries], dtype=np.int64))
                mult.append(np.ones(len(entries), dtype=np.int64))
            prev = b
        return np.concatenate(idx), np.concatenate(mult)


def _draws(positions: np.ndarray, w: np.ndarray) -> Callable[[int], np.ndarray]:
    """image position -> the draw indices (ascending) at which ``positions`` holds it."""
    by = np.argsort(positions, kind="stable")
    start = np.concatenate([[0], np.cumsum(w)])
    return lambda i: by[start[i]:start[i + 1]]


def _interpolated(tp_sum: np.ndarray, fp_sum: np.ndarray, npos: float, thresholds: np.ndarray,
                  eps: float) -> np.ndarray:
    """COCO's interpolated precision at recall ``thresholds`` for each row of running TP/FP counts
    (``(rows, L)``): precision ``tp / (tp + fp + eps)``, made non-increasing from the right, read at the
    first point whose recall ``tp / npos`` reaches the threshold; 0 where recall never does."""
    rows, L = tp_sum.shape
    out = np.zeros((rows, len(thresholds)))
    if L == 0:
        return out
    rc = tp_sum / npos
    pr = tp_sum / (fp_sum + tp_sum + eps)
    env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    for t in range(rows):
        inds = np.searchsorted(rc[t], thresholds, side="left")
        ok = inds < L
        out[t, ok] = env[t, inds[ok]]
    return out


class ImageWeightedMetrics:
    """AP, AP_r and TIDE's box ΔAP_FP of one detector on any resample of the test images, from one
    evaluation of the full test set (the fast route of :func:`row_intervals`).

    Built once per (row, seed): :func:`iif.detection.evaluation.cocoeval_matches` (the table's AP
    evaluation, LVIS or COCO rules, mask AP when ``masks``) and :func:`iif.detection.evaluation.tide_matches`
    (the box TIDE run of :func:`~iif.detection.evaluation.tide_errors`) give every detection's per-image
    outcome; matching is per image, so a copy of an image matches exactly as the original does. Calling it
    with ``positions`` weights image ``i`` by ``w_i``, the number of times it is drawn, and recomputes

    * AP / AP_r: per category, ``npos = sum_i w_i * (non-ignored ground truth in i)``; the ranked list
      carries each detection with multiplicity ``w_i`` (:meth:`_Sorted.sequence`), so the running counts are
      ``TP(j) = sum w * tp`` and ``FP(j) = sum w * fp``; precision ``TP / (TP + FP + eps)``, recall
      ``TP / npos``, COCO's envelope and 101 recall thresholds (Lin et al. 2014; LVIS, Gupta et al. 2019,
      uses the same accumulation); ``-1`` for a category with ``npos = 0`` (undefined, left out), AP the
      mean of the precision entries > -1 over IoU 0.50:0.95, AP_r over the rare categories (nan if none
      has a drawn ground truth), exactly as :func:`~iif.detection.evaluation._summary` reads the array;
    * ΔAP_FP (Bolya et al., TIDE, ECCV 2020): tidecv's class AP50 (its precision ``TP / (TP + FP)`` without
      eps, the same envelope, recall points ``x / 100``, 0 for a class without ground truth), averaged
      over the classes that have a drawn ground truth or a drawn non-ignored detection, minus the same
      with every false positive scored 0 (then a class's AP50 is ``#{x : x <= TP_total / npos} / 101``,
      0 without a true positive); nan when no detection is drawn.

    Equal to :func:`resampled_metrics` (the slow route that builds the resampled json and evaluates it),
    tested to 1e-9 (tests/test_detection_uncertainty.py).
    """

    def __init__(self, val_json: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], *, masks: bool,
                 groups: Mapping[Any, str] | None = None):
        from .evaluation import cocoeval_matches, tide_matches

        m = cocoeval_matches(val_json, list(detections), iou_type="segm" if masks else "bbox")
        self.num_images = len(m["image_ids"])
        self.summary = m["summary"]
        self.iou_thrs, self.rec_thrs = m["iou_thrs"], m["rec_thrs"]
        if m["lvis"]:
            letters = {c["id"]: c["frequency"] for c in val_json["categories"]}
        else:
            letters = dict(groups) if groups is not None else None
            missing = [] if letters is None else [c for c in m["cat_ids"] if letters.get(c) not in ("r", "c", "f")]
            if missing:
                raise IIFError(f"groups gives no r/c/f letter for categories {missing[:5]}; give one per category "
                               "(category_groups(gt_json, train_counts)).")
        self.rare = None if letters is None else np.array([letters[c] == "r" for c in m["cat_ids"]])
        self.cats = []
        for pc in m["per_category"]:
            s = _Sorted(pc["score"], pc["image"], pc["rank"])
            self.cats.append((s, pc["tp"][:, s.order], pc["fp"][:, s.order], pc["gt_image"]))
        t = tide_matches(val_json, list(detections))
        self.tide_any = t["image"]
        self.tide_x = np.array([x / 100 for x in range(101)])
        counted = t["used"] >= 0
        self.tide_classes = []
        for c in dict.fromkeys(list(t["gt_class"]) + list(t["class"][counted])):
            sel = counted & (t["class"] == c)
            s = _Sorted(t["score"][sel], t["image"][sel], t["rank"][sel])
            self.tide_classes.append((s, (t["used"][sel] == 1)[s.order], t["gt_image"][t["gt_class"] == c]))

    def weights(self, positions: Sequence[int]) -> np.ndarray:
        return np.bincount(np.asarray(positions, dtype=np.int64), minlength=self.num_images)

    def precision(self, positions: Sequence[int]) -> np.ndarray:
        """The ``(IoU thresholds, 101, categories)`` precision array of the resampled set (-1: no ground truth)."""
        positions = np.asarray(positions, dtype=np.int64)
        w = self.weights(positions)
        draws = _draws(positions, w)
        P = -np.ones((len(self.iou_thrs), len(self.rec_thrs), len(self.cats)))
        for k, (s, tp, fp, gt_image) in enumerate(self.cats):
            npos = int(w[gt_image].sum())
            if npos == 0:
                continue
            idx, mult = s.sequence(w, draws)
            tp_sum = np.cumsum(tp[:, idx] * mult, axis=1).astype(float)
            fp_sum = np.cumsum(fp[:, idx] * mult, axis=1).astype(float)
            P[:, :, k] = _interpolated(tp_sum, fp_sum, npos, self.rec_thrs, np.spacing(1))
        return P

    def dap_fp(self, positions: Sequence[int]) -> float:
        positions = np.asarray(positions, dtype=np.int64)
        w = self.weights(positions)
        if not w[self.tide_any].any():
            return float("nan")
        draws = _draws(positions, w)
        aps, fixed = [], []
        for s, tp, gt_image in self.tide_classes:
            npos = int(w[gt_image].sum())
            idx, mult = s.sequence(w, draws)
            if npos == 0:
                if idx.size:  # detections but no ground truth: AP 0 in both
                    aps.append(0.0)
                    fixed.append(0.0)
                continue
            t_sum = np.cumsum(tp[idx] * mult).astype(float)[None, :]
            f_sum = np.cumsum(~tp[idx] * mult).astype(float)[None, :]
            y = _interpolated(t_sum, f_sum, npos, self.tide_x, 0.0)[0]
            aps.append(sum(y.tolist()) / len(y) * 100)
            found = int(t_sum[0, -1]) if idx.size else 0
            fixed.append(0.0 if found == 0 else float((self.tide_x <= found / npos).sum()) / len(y) * 100)
        if not aps:
            return float("nan")
        return sum(fixed) / len(fixed) - sum(aps) / len(aps)

    def __call__(self, positions: Sequence[int]) -> dict[str, float]:
        """``{"AP", "APr", "dAP_FP"}`` on the images at ``positions`` (as :func:`resampled_metrics`)."""
        from .evaluation import _mean_precision

        P = self.precision(positions)
        apr = float("nan") if self.rare is None else _mean_precision(P[:, :, self.rare])
        return {"AP": _mean_precision(P), "APr": apr, "dAP_FP": self.dap_fp(positions)}


def row_intervals(val_json: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                  detections: Sequence[Mapping[str, Sequence[Mapping[str, Any]]]], *, masks: bool,
                  groups: Mapping[Any, str] | None = None, samples: int = 100, seed: int = 0, level: float = 0.95,
                  label: Callable[[Mapping[str, Any]], str] = lambda r: str(r), picks: np.ndarray | None = None,
                  log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """det-bench's paired bootstrap: for every row, 95% intervals of its difference to the softmax row and to
    the best additive row (highest AP_r among :data:`ADDITIVE_METHODS`), for :data:`INTERVAL_METRICS`.

    Args:
        val_json: the test ground truth (its ``images`` order is the position order).
        rows: the table's (seed-mean) rows; ``label(row)`` names a row in ``detections``.
        detections: per seed, ``{label: that row's detections}``.
        samples, seed, level, picks: as :func:`paired_bootstrap`; one ``picks`` matrix serves every row, seed,
            metric and reference (the same resampled images everywhere).

    A row's metric on a resample is the mean over seeds of :func:`resampled_metrics`' numbers, computed by
    :class:`ImageWeightedMetrics`: each (row, seed) is evaluated once on the full test set (one AP
    evaluation and one TIDE run) and every resample reweights its per-image match data, equal to
    re-evaluating the resampled json (tested to 1e-9). On the full test set a row's metric is its own table
    number, so ``diff`` is the table's difference. ``evaluations`` counts the (row, resample) metric
    computations (each over all seeds), ``cost_s`` the seconds the whole bootstrap took.
    """
    import time

    n = len(val_json["images"])
    if picks is None:
        picks = bootstrap_picks(n, samples, seed)
    picks = np.asarray(picks)
    names = [label(r) for r in rows]
    table = {label(r): r for r in rows}
    memo: dict[tuple[str, bytes], dict[str, float]] = {}
    fast: dict[str, list[ImageWeightedMetrics]] = {}
    t0 = time.perf_counter()
    everything = np.arange(n, dtype=np.int64).tobytes()

    def values(name: str, positions: np.ndarray) -> dict[str, float]:
        key = (name, np.asarray(positions, dtype=np.int64).tobytes())
        if key not in memo:
            if key[1] == everything:
                memo[key] = {m: float("nan") if table[name][m] is None else float(table[name][m])
                             for m in INTERVAL_METRICS}
            else:
                if name not in fast:
                    fast[name] = [ImageWeightedMetrics(val_json, d[name], masks=masks, groups=groups)
                                  for d in detections]
                per_seed = [f(positions) for f in fast[name]]
                memo[key] = {m: float(np.mean([v[m] for v in per_seed])) for m in INTERVAL_METRICS}
        return memo[key]

    soft = [label(r) for r in rows if r["method"] == "softmax"]
    additive = [r for r in rows if r["method"] in ADDITIVE_METHODS]
    best = max(additive, key=lambda r: (-math.inf if r["APr"] is None else r["APr"],
                                        -math.inf if r["AP"] is None else r["AP"])) if additive else None
    refs = {"softmax": soft[0] if soft else None, "best_additive": label(best) if best is not None else None}
    out_rows: dict[str, dict[str, Any]] = {name: {} for name in names}
    for ref_key, ref in refs.items():
        if ref is None:
            continue
        for m in INTERVAL_METRICS:
            res = paired_bootstrap({name: name for name in names}, lambda name, pos, m=m: values(name, pos)[m], n, ref,
                                   picks=picks, level=level)
            for name, r in res.items():
                out_rows[name].setdefault(f"vs_{ref_key}", {})[m] = r
        if log is not None:
            log(f"det-bench: bootstrap against {ref}: {time.perf_counter() - t0:.0f} s so far")
    return {"samples": int(picks.shape[0]), "seed": int(seed), "level": float(level), "num_images": n,
            "seeds": len(detections), "metrics": list(INTERVAL_METRICS), "references": refs,
            "cost_s": time.perf_counter() - t0, "evaluations": len(memo) - len(names),
            "rows": [{"row": name, **out_rows[name]} for name in names]}
