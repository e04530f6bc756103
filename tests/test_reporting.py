"""The result-row helpers both benches share (iif.reporting: seed aggregation, row identity, cells, JSON text).

Expected numbers are computed by hand: the sample standard deviation of {10, 20} is sqrt(((10-15)^2 +
(20-15)^2) / 1) = sqrt(50).
"""

from __future__ import annotations

import inspect
import json
import math

import pytest

from iif import reporting
from iif.bench import report as bench_report

DET_TEXT = ("method", "strategy", "variant", "by")
DET_NUM = ("AP", "false_positives")


def _det(method, ap, fp, by="image"):
    return {"method": method, "strategy": "posthoc", "variant": "raw", "by": by, "AP": ap, "false_positives": fp}


def test_mean_std_by_hand_and_a_row_seen_in_one_seed_gets_std_zero():
    seed0 = [_det("iif", 10.0, 3), _det("softmax", None, None)]
    seed1 = [_det("iif", 20.0, 4), _det("la", 7.5, 5)]  # "la" only in seed 1: std 0.0, documented
    means, stds = reporting.aggregate_seeds([seed0, seed1], DET_TEXT + DET_NUM, DET_NUM, counts=("false_positives",))
    assert [m["method"] for m in means] == ["iif", "softmax", "la"]  # first-seen order
    assert means[0]["AP"] == 15.0 and stds[0]["AP"] == pytest.approx(math.sqrt(50.0))
    assert means[0]["false_positives"] == 3.5 and stds[0]["false_positives"] == pytest.approx(math.sqrt(0.5))
    assert means[1]["AP"] is None and stds[1]["AP"] is None  # no seed has it
    assert stds[2]["AP"] == 0.0 and stds[2]["false_positives"] == 0.0
    assert means[2]["false_positives"] == 5 and type(means[2]["false_positives"]) is int  # a count stays a count
    assert list(means[0]) == list(DET_TEXT + DET_NUM) and list(stds[0]) == list(DET_TEXT + DET_NUM)
    assert stds[0]["method"] == "iif" and stds[0]["by"] == "image"  # the std rows carry the text keys


def test_rows_differing_in_a_text_key_are_different_rows():
    means, _ = reporting.aggregate_seeds([[_det("iif", 1.0, 1, by="image")], [_det("iif", 3.0, 1, by="object")]],
                                         DET_TEXT + DET_NUM, DET_NUM)
    assert [(m["by"], m["AP"]) for m in means] == [("image", 1.0), ("object", 3.0)]


def test_the_classification_bench_matches_tuned_rows_across_variants():
    a = {"method": "IIF tuned", "strategy": "post-process", "variant": "smooth", "head": "linear",
         "top1": 50.0, "many": 60.0, "medium": None, "few": 10.0, "ece": 5.0}
    b = dict(a, variant="raw^0.5", top1=70.0, few=None)
    means, stds = bench_report.aggregate_seeds([[a], [b]])
    assert len(means) == 1 and means[0]["variant"] == "smooth/raw^0.5" and stds[0]["variant"] == "smooth/raw^0.5"
    assert means[0]["top1"] == 60.0 and stds[0]["top1"] == pytest.approx(math.sqrt(200.0))
    assert means[0]["few"] == 10.0 and stds[0]["few"] == 0.0 and means[0]["medium"] is None
    assert bench_report.row_id(a) == bench_report.row_id(b) == ("IIF tuned", "post-process", None, "linear")


def test_cells_and_json_text():
    rows = [_det("iif", 12.345, 7)]
    stds = [dict(rows[0], AP=0.25, false_positives=1.5)]
    assert reporting.table_cells(rows, stds, DET_TEXT + DET_NUM, DET_TEXT, digits={"false_positives": 0}) == [
        ["iif", "posthoc", "raw", "image", "12.3 ± 0.2", "7 ± 2"]]
    text = reporting.dumps_rows([{"AP": 1.5, "extra": 1}], ("method", "AP"))
    assert text.endswith("\n") and json.loads(text) == [{"method": None, "AP": 1.5}]
    assert reporting.row_key({"a": 1, "b": 2}, ("b", "c")) == (2, None)


def test_both_reports_aggregate_through_the_shared_helper():
    """One implementation (issue 16 part 4): neither task's report computes a std of its own."""
    from iif.detection import report as det_report

    for module in (bench_report, det_report):
        src = inspect.getsource(module)
        assert "ddof" not in src.replace("(ddof = 1", "") and "reporting.aggregate_seeds(" in src, module.__name__
