"""Metrics checked against values worked out by hand on a 6-sample, 3-class example.

The logits are log-probabilities, so softmax returns exactly the probabilities written below and the
confidences / NLL can be read off the table.
"""

import math

import numpy as np
import pytest
import torch

from iif.errors import IIFError
from iif.metrics import (
    accuracy,
    calibration_errors,
    evaluate_logits,
    nll,
    per_class_accuracy,
    reliability_bins,
    shot_group_accuracy,
    shot_groups,
    shot_thresholds,
)

# probabilities, label  -> prediction, correct?, confidence (bin)
PROBS = np.array(
    [
        [0.72, 0.18, 0.10],  # y=0 -> 0 correct, conf .72 (0.7, 0.8]
        [0.62, 0.28, 0.10],  # y=1 -> 0 wrong,   conf .62 (0.6, 0.7]
        [0.08, 0.84, 0.08],  # y=1 -> 1 correct, conf .84 (0.8, 0.9]
        [0.09, 0.09, 0.82],  # y=2 -> 2 correct, conf .82 (0.8, 0.9]
        [0.52, 0.24, 0.24],  # y=2 -> 0 wrong,   conf .52 (0.5, 0.6]
        [0.20, 0.34, 0.46],  # y=2 -> 2 correct, conf .46 (0.4, 0.5]
    ]
)
LABELS = np.array([0, 1, 1, 2, 2, 2])
LOGITS = np.log(PROBS)
COUNTS = [500, 50, 5]  # many, medium, few


def test_accuracy_and_per_class():
    assert accuracy(LOGITS, LABELS) == pytest.approx(100 * 4 / 6)
    np.testing.assert_allclose(per_class_accuracy(LOGITS, LABELS), [100.0, 50.0, 200 / 3])


def test_evaluate_logits_by_hand():
    m = evaluate_logits(LOGITS, LABELS, COUNTS)
    assert m["top1"] == pytest.approx(400 / 6)
    assert m["class_avg"] == pytest.approx((100 + 50 + 200 / 3) / 3)
    assert m["many"] == pytest.approx(100.0)
    assert m["medium"] == pytest.approx(50.0)
    assert m["few"] == pytest.approx(200 / 3)
    assert m["per_class"] == pytest.approx([100.0, 50.0, 200 / 3])
    # bins: .46 gap .54 | .52 gap .52 | .62 gap .62 | .72 gap .28 | {.84,.82} acc 1 conf .83 gap .17
    assert m["ece"] == pytest.approx(100 * (0.54 + 0.52 + 0.62 + 0.28 + 2 * 0.17) / 6)
    assert m["mce"] == pytest.approx(62.0)
    expected_nll = -np.mean(np.log([0.72, 0.28, 0.84, 0.82, 0.24, 0.46]))
    assert m["nll"] == pytest.approx(expected_nll)
    assert nll(LOGITS, LABELS) == pytest.approx(expected_nll)


def test_torch_input_matches_numpy():
    a = evaluate_logits(torch.tensor(LOGITS, dtype=torch.float32), torch.tensor(LABELS), torch.tensor(COUNTS))
    b = evaluate_logits(LOGITS, LABELS, COUNTS)
    for key in ("top1", "class_avg", "many", "medium", "few", "ece", "mce", "nll"):
        assert a[key] == pytest.approx(b[key], rel=1e-5)


def test_reliability_bins_counts_and_means():
    rb = reliability_bins(LOGITS, LABELS, bins=10)
    np.testing.assert_allclose(rb["edges"], np.linspace(0, 1, 11))
    np.testing.assert_array_equal(rb["count"], [0, 0, 0, 0, 1, 1, 1, 1, 2, 0])
    assert rb["confidence"][8] == pytest.approx(0.83)
    assert rb["accuracy"][8] == pytest.approx(1.0)
    assert rb["accuracy"][6] == 0.0
    assert np.isnan(rb["accuracy"][0])
    # with one bin ECE is |mean accuracy - mean confidence|
    ece, mce = calibration_errors(LOGITS, LABELS, bins=1)
    mean_conf = np.mean([0.72, 0.62, 0.84, 0.82, 0.52, 0.46])
    assert ece == pytest.approx(100 * abs(4 / 6 - mean_conf))
    assert mce == pytest.approx(ece)


def test_shot_group_boundaries():
    # many > 100, few < 20, medium 20..100 inclusive
    g = shot_groups([101, 100, 20, 19], many=100, few=20)
    assert g["many"].tolist() == [0]
    assert g["medium"].tolist() == [1, 2]
    assert g["few"].tolist() == [3]


def test_shot_thresholds_one_rule():
    # largest class > 100 images: the paper's 100 / 20
    assert shot_thresholds([101, 7]) == (100, 20)
    # no class above 100 (digits-LT: 100 .. 5): 50 / 15, so the many-shot group is not empty
    assert shot_thresholds([100, 40, 5]) == (50, 15)
    # an explicit threshold replaces only its own value
    assert shot_thresholds([100, 40, 5], many=60) == (60, 15)
    assert shot_thresholds([500, 5], few=10) == (100, 10)
    with pytest.raises(IIFError, match="must not exceed"):
        shot_thresholds([500, 5], many=10)
    with pytest.raises(IIFError, match=">= 0"):
        shot_thresholds([500, 5], few=-1)
    with pytest.raises(IIFError, match="1-D"):
        shot_thresholds([])


def test_default_groups_follow_the_rule():
    counts = [100, 51, 50, 15, 14]  # max <= 100 -> many > 50, few < 15
    g = shot_groups(counts)
    assert (g["many"].tolist(), g["medium"].tolist(), g["few"].tolist()) == ([0, 1], [2, 3], [4])
    # evaluate_logits groups the same way: class i predicted right only for i in {0, 4}
    logits = np.eye(5)[[0, 0, 2, 2, 4]] * 3.0  # sample i has label i; argmaxes 0, 0, 2, 2, 4
    m = evaluate_logits(logits, np.arange(5), counts)
    assert (m["many"], m["medium"], m["few"]) == (pytest.approx(50.0), pytest.approx(50.0), pytest.approx(100.0))


def test_empty_group_and_missing_class_are_none():
    # no few-shot class at all; class 2 has no test sample
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1])
    m = evaluate_logits(logits, labels, [300, 150, 40])
    assert m["few"] is None
    assert m["per_class"][2] is None
    assert m["many"] == pytest.approx((100 + 50) / 2)
    assert m["medium"] is None  # class 2 is medium but has no test sample
    assert m["class_avg"] == pytest.approx(75.0)
    assert shot_group_accuracy([10.0, 20.0, float("nan")], [300, 150, 40]) == {"many": 15.0, "medium": None, "few": None}


@pytest.mark.parametrize(
    "logits, labels, counts, match",
    [
        (LOGITS[:5], LABELS, COUNTS, "rows but labels"),
        (LOGITS, np.array([0, 1, 1, 2, 2, 3]), COUNTS, "labels must be in"),
        (LOGITS, np.array([0, 1, 1, 2, 2, -1]), COUNTS, "labels must be in"),
        (LOGITS, LABELS, [1, 2], "training counts have 2"),
        (np.where(np.eye(6, 3, dtype=bool), np.nan, LOGITS), LABELS, COUNTS, "NaN"),
        (LOGITS[0], LABELS, COUNTS, "2-D"),
        (LOGITS, LABELS + 0.5, COUNTS, "whole class indices"),
    ],
)
def test_bad_input(logits, labels, counts, match):
    with pytest.raises(IIFError, match=match):
        evaluate_logits(logits, labels, counts)
