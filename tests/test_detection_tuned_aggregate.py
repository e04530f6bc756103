"""Seed aggregation of det-bench's tuned rows (issue 15): val may choose a different tau / gamma / IIF variant
for each seed's detector, and the report must still give ONE row per tuning procedure (its mean ± std over
seeds, the choices listed), with the bootstrap intervals found under the same label in every seed. Values are
computed here by hand."""

import math

import pytest

from iif.detection.report import ROW_KEYS, _short_label, aggregate_seeds, row_label


def _row(method, strategy, variant, by, ap, apr, fp):
    r = {k: None for k in ROW_KEYS}
    r.update(method=method, strategy=strategy, variant=variant, by=by, AP=ap, AP50=ap + 20, AP75=ap - 1, APr=apr,
             APc=ap + 2, APf=ap + 14, APb=ap, dAP_FP=40.0 - apr, false_positives=fp)
    return r


SEEDS = [
    [_row("softmax", "posthoc", None, None, 23.0, 4.4, 870),
     _row("logit_adjustment", "posthoc_tuned", "tau=0.5", None, 23.8, 4.9, 882),
     _row("iif", "posthoc_tuned", "base10", "object", 21.8, 4.2, 1900)],
    [_row("softmax", "posthoc", None, None, 23.4, 4.0, 880),
     _row("logit_adjustment", "posthoc_tuned", "tau=0.75", None, 22.8, 4.7, 988),
     _row("iif", "posthoc_tuned", "base10", "object", 21.7, 3.9, 1700)],
    [_row("softmax", "posthoc", None, None, 22.9, 4.7, 875),
     _row("logit_adjustment", "posthoc_tuned", "tau=1", None, 23.2, 5.3, 1099),
     _row("iif", "posthoc_tuned", "raw", "image", 22.0, 4.7, 2100)],
]


def _std(xs):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_one_tuned_row_per_method_with_the_mean_and_std_of_each_seeds_choice():
    means, stds = aggregate_seeds(SEEDS)
    assert [(r["method"], r["strategy"]) for r in means] == [
        ("softmax", "posthoc"), ("logit_adjustment", "posthoc_tuned"), ("iif", "posthoc_tuned")]
    la, la_std = means[1], stds[1]
    assert la["variant"] == "tau=0.5/tau=0.75/tau=1" and la["by"] is None
    assert la["APr"] == pytest.approx((4.9 + 4.7 + 5.3) / 3) and la_std["APr"] == pytest.approx(_std([4.9, 4.7, 5.3]))
    assert la["AP"] == pytest.approx((23.8 + 22.8 + 23.2) / 3) and la_std["AP"] == pytest.approx(_std([23.8, 22.8, 23.2]))
    iif = means[2]
    assert iif["variant"] == "base10/raw" and iif["by"] == "object/image"  # distinct choices, seed order
    assert iif["false_positives"] == pytest.approx((1900 + 1700 + 2100) / 3)
    assert tuple(means[0]) == ROW_KEYS and tuple(stds[1]) == ROW_KEYS


def test_tuned_rows_have_one_label_in_every_seed_and_the_seed_mean_row():
    """The bootstrap intervals match rows to each seed's detections by label: a label that named the choice
    would exist in one seed only and the tuned rows would get no interval."""
    labels = [{row_label(r) for r in seed} for seed in SEEDS]
    means, _ = aggregate_seeds(SEEDS)
    common = set.intersection(*labels)
    assert {row_label(r) for r in means} == common
    assert "logit_adjustment (posthoc_tuned)" in common and "iif (posthoc_tuned)" in common
    assert row_label(SEEDS[0][0]) == "softmax (posthoc)"


def test_the_per_seed_detail_label_still_names_the_choice():
    d = {"method": "logit_adjustment", "strategy": "posthoc_tuned", "tau": 0.75, "gamma": None, "variant": None,
         "by": None}
    assert _short_label(d) == "logit_adjustment tau=0.75 (posthoc_tuned)"
    d = {"method": "iif", "strategy": "posthoc_tuned", "variant": "base10", "by": "object"}
    assert _short_label(d) == "iif base10 IOF (posthoc_tuned)"
