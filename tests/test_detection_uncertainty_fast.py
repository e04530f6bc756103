"""iif.detection.uncertainty's per-image route (ImageWeightedMetrics, used by row_intervals): AP, AP_r and
TIDE's ΔAP_FP on a resample of the test images, computed by weighting one full-set evaluation's per-image
match data, equal the slow reference route (resampled_metrics: build the resampled json with repeated
images and evaluate it with evaluate_lvis / evaluate_coco / tide_errors), on LVIS and COCO json, boxes and
masks, with repeated draws, tied scores, and resamples that leave AP_r or ΔAP_FP undefined."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("faster_coco_eval")
pytest.importorskip("tidecv")

from test_detection_evaluation import make_coco, make_lvis  # noqa: E402

from iif.detection import uncertainty as U  # noqa: E402

# Tolerance: both routes add the same integer counts and divide the same way; what differs is only the
# order of float summation in the final means (numpy's pairwise mean over a differently laid-out array,
# TIDE's Python sums), a few ulps of numbers <= 100.
TOL = 1e-9


def _data(kind: str):
    gt, dets = make_lvis(0) if kind == "lvis" else make_coco(1)
    # Scores rounded to 2 decimals: most detections keep a score of their own (the weighted path), but many
    # share one, some of them a true and a false positive (the path that expands ties copy by copy).
    dets = [dict(d, score=round(d["score"], 2)) for d in dets]
    groups = None if kind == "lvis" else {c["id"]: "rrcccfff"[i] for i, c in enumerate(gt["categories"])}
    return gt, dets, groups


def _rare_free_images(gt: dict, groups) -> list[int]:
    rare = ({c["id"] for c in gt["categories"] if c.get("frequency") == "r"} if groups is None
            else {c for c, g in groups.items() if g == "r"})
    has_rare = {a["image_id"] for a in gt["annotations"] if a["category_id"] in rare}
    return [i for i, im in enumerate(gt["images"]) if im["id"] not in has_rare]


def _assert_same(fast: dict, slow: dict, what: str) -> None:
    for k in U.INTERVAL_METRICS:
        if math.isnan(slow[k]):
            assert math.isnan(fast[k]), (what, k, fast[k], slow[k])
        else:
            assert abs(fast[k] - slow[k]) <= TOL, (what, k, fast[k], slow[k])


@pytest.mark.parametrize("kind", ["lvis", "coco"])
@pytest.mark.parametrize("masks", [False, True])
def test_weighted_metrics_equal_the_evaluation_of_the_resampled_json(kind, masks):
    gt, dets, groups = _data(kind)
    n = len(gt["images"])
    fast = U.ImageWeightedMetrics(gt, dets, masks=masks, groups=groups)
    rng = np.random.default_rng(11)
    rare_free = _rare_free_images(gt, groups)
    assert 0 < len(rare_free) < n
    cases = {"full set": np.arange(n),
             "reversed": np.arange(n)[::-1].copy(),
             "one image drawn n times": np.full(n, 3),
             "no rare ground truth drawn": rng.choice(rare_free, size=n)}
    for b, p in enumerate(U.bootstrap_picks(n, 4, seed=5)):
        cases[f"bootstrap draw {b}"] = p
    nan_apr = 0
    for what, pos in cases.items():
        assert len(pos) == n
        slow = U.resampled_metrics(gt, dets, pos, masks=masks, groups=groups)
        _assert_same(fast(pos), slow, what)
        nan_apr += math.isnan(slow["APr"])
    assert nan_apr >= 1  # the rare-free resample really leaves AP_r undefined


def test_the_test_data_has_both_kinds_of_ranked_list():
    """The fixture exercises both paths: detections with a score of their own and tied scores that mix a
    true and a false positive in one category (where the order inside the tie decides precision)."""
    gt, dets, groups = _data("lvis")
    fast = U.ImageWeightedMetrics(gt, dets, masks=False, groups=groups)
    untied = mixed = 0
    for s, tp, fp, _ in fast.cats:
        tied = np.zeros(s.image.size, dtype=bool)
        for a, b in s.ties:
            tied[a:b] = True
            mixed += bool(tp[0, a:b].any() and fp[0, a:b].any())
        untied += int((~tied).sum())
    assert untied > 20 and mixed >= 1


def test_full_set_equals_the_table_evaluation():
    """On the test set itself the weighted route gives evaluate_lvis' AP/AP_r and tide_errors' ΔAP_FP
    (the numbers row_intervals' table holds)."""
    from iif.detection.evaluation import evaluate_lvis, tide_errors

    gt, dets, _ = _data("lvis")
    fast = U.ImageWeightedMetrics(gt, dets, masks=True)(np.arange(len(gt["images"])))
    ev = evaluate_lvis(gt, dets, iou_type="segm")
    assert abs(fast["AP"] - ev["AP"]) <= TOL and abs(fast["APr"] - ev["APr"]) <= TOL
    assert abs(fast["dAP_FP"] - tide_errors(gt, dets, iou_type="bbox")["dAP_FP"]) <= TOL


def test_images_without_detections_leave_dap_fp_undefined_and_ap_zero():
    """A resample of images with no detection: TIDE has nothing to analyse (nan), AP is 0 where there is
    ground truth, in both routes."""
    gt, dets, groups = _data("coco")
    empty = {im["id"] for im in gt["images"][:3]}
    dets = [d for d in dets if d["image_id"] not in empty]
    n = len(gt["images"])
    pos = np.array([0, 1, 2] * n)[:n]
    slow = U.resampled_metrics(gt, dets, pos, masks=False, groups=groups)
    fast = U.ImageWeightedMetrics(gt, dets, masks=False, groups=groups)(pos)
    assert math.isnan(slow["dAP_FP"]) and math.isnan(fast["dAP_FP"])
    assert slow["AP"] == 0.0 and fast["AP"] == 0.0


def test_row_intervals_equal_the_slow_route(monkeypatch):
    """row_intervals by the per-image route gives the same intervals as with resampled_metrics (the slow
    route substituted for ImageWeightedMetrics), for two seeds."""
    gt, dets, groups = _data("coco")
    rng = np.random.default_rng(2)

    def variant(keep: float) -> list:
        return [d for d in dets if rng.random() < keep]

    per_seed = [{"soft": variant(0.5), "la": variant(0.7), "iif": variant(0.9)} for _ in range(2)]
    n = len(gt["images"])
    everything = np.arange(n)
    full = {k: {m: float(np.mean([U.resampled_metrics(gt, s[k], everything, masks=False, groups=groups)[m]
                                  for s in per_seed])) for m in U.INTERVAL_METRICS} for k in per_seed[0]}
    methods = {"soft": "softmax", "la": "logit_adjustment", "iif": "iif"}
    rows = [{"method": methods[k], "name": k, **full[k]} for k in per_seed[0]]
    kw = dict(masks=False, groups=groups, samples=6, seed=4, label=lambda r: r["name"])
    fast = U.row_intervals(gt, rows, per_seed, **kw)

    class Slow:
        def __init__(self, val_json, detections, *, masks, groups=None):
            self.args = (val_json, detections, masks, groups)

        def __call__(self, positions):
            val_json, detections, masks, groups = self.args
            return U.resampled_metrics(val_json, detections, positions, masks=masks, groups=groups)

    monkeypatch.setattr(U, "ImageWeightedMetrics", Slow)
    slow = U.row_intervals(gt, rows, per_seed, **kw)
    assert fast["evaluations"] == slow["evaluations"] == 3 * 6
    for key in ("samples", "seed", "level", "num_images", "seeds", "metrics", "references"):
        assert fast[key] == slow[key]
    for a, b in zip(fast["rows"], slow["rows"]):
        assert a["row"] == b["row"] and a.keys() == b.keys()
        for ref in (k for k in a if k.startswith("vs_")):
            for m in U.INTERVAL_METRICS:
                ra, rb = a[ref][m], b[ref][m]
                assert ra["samples"] == rb["samples"] and ra["within_noise"] == rb["within_noise"]
                for q in ("diff", "low", "high", "std"):
                    assert ra[q] == pytest.approx(rb[q], abs=TOL, nan_ok=True)


def test_groups_without_a_letter_for_every_category_are_refused():
    from iif.errors import IIFError

    gt, dets, groups = _data("coco")
    groups.pop(gt["categories"][0]["id"])
    with pytest.raises(IIFError, match="groups gives no r/c/f letter"):
        U.ImageWeightedMetrics(gt, dets, masks=False, groups=groups)
