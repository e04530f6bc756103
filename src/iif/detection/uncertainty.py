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
* :func:`row_intervals` — what `iif det-bench` writes to summary.json and report.md: every row against the
  softmax row and the best additive row, for AP, AP_r and ΔAP_FP (docs/detection.md, "Uncertainty").
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import IIFError

__all__ = ["bootstrap_picks", "paired_bootstrap", "resample_images", "resampled_metrics", "row_intervals",
           "INTERVAL_METRICS", "ADDITIVE_METHODS"]


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
    :func:`~iif.detection.evaluation.tide_errors`) on :func:`resample_images`'s set; nan where undefined."""
    from .evaluation import evaluate_coco, evaluate_lvis, is_lvis, tide_errors

    gt, dets = resample_images(val_json, detections, positions)
    iou = "segm" if masks else "bbox"
    ev = evaluate_lvis(gt, dets, iou_type=iou) if is_lvis(gt) else evaluate_coco(gt, dets, iou_type=iou, groups=groups)
    tide = tide_errors(gt, dets, iou_type="bbox")

    def num(x):
        return float("nan") if x is None else float(x)

    return {"AP": num(ev.get("AP")), "APr": num(ev.get("APr")), "dAP_FP": num(tide.get("dAP_FP"))}


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

    A row's metric on a resample is the mean over seeds of :func:`resampled_metrics`; on the full test set it
    is the row's own table number, so ``diff`` is the table's difference. Every (row, seed, resample) is
    evaluated once: the cost is ``rows x seeds x samples`` evaluations (``cost_s`` in the result).
    """
    import time

    n = len(val_json["images"])
    if picks is None:
        picks = bootstrap_picks(n, samples, seed)
    picks = np.asarray(picks)
    names = [label(r) for r in rows]
    table = {label(r): r for r in rows}
    memo: dict[tuple[str, bytes], dict[str, float]] = {}
    t0 = time.perf_counter()
    everything = np.arange(n, dtype=np.int64).tobytes()

    def values(name: str, positions: np.ndarray) -> dict[str, float]:
        key = (name, np.asarray(positions, dtype=np.int64).tobytes())
        if key not in memo:
            if key[1] == everything:
                memo[key] = {m: float("nan") if table[name][m] is None else float(table[name][m])
                             for m in INTERVAL_METRICS}
            else:
                per_seed = [resampled_metrics(val_json, d[name], positions, masks=masks, groups=groups)
                            for d in detections]
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
