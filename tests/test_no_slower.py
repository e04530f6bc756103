"""benchmarks/no_slower.py's comparison of two runs' result files (issue 16, Performance): a number that differs
in the last bit is reported, measurement keys (durations, rates, memory peaks) are left out and named, and a
file one run lacks is reported. The script's timing part needs two worktrees and minutes; not run here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def no_slower():
    spec = importlib.util.spec_from_file_location("no_slower", ROOT / "benchmarks" / "no_slower.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, doc: dict, csv_text: str) -> Path:
    folder.mkdir()
    (folder / "r.json").write_text(json.dumps(doc))
    (folder / "m.csv").write_text(csv_text)
    return folder


def test_identical_apart_from_measurements(no_slower, tmp_path):
    a = _write(tmp_path / "a", {"rows": [{"top1": 0.1, "wall_s": 1.0, "post_hoc_s": 0.2}], "peak_rss_mb": 800,
                                "nan": float("nan")},
               "epoch,loss,seconds\n1,0.5,2.0\n")
    b = _write(tmp_path / "b", {"rows": [{"top1": 0.1, "wall_s": 9.0, "post_hoc_s": 0.3}], "peak_rss_mb": 900,
                                "nan": float("nan")},
               "epoch,loss,seconds\n1,0.5,3.0\n")
    diffs, skipped = no_slower.compare(a, b, ["r.json", "m.csv"])
    assert diffs == []
    assert skipped == {"r.json:wall_s", "r.json:post_hoc_s", "r.json:peak_rss_mb", "m.csv:seconds"}


def test_a_last_bit_a_missing_key_and_a_missing_file_are_reported(no_slower, tmp_path):
    x = 0.1 + 0.2
    a = _write(tmp_path / "a", {"rows": [{"top1": x}], "ap": 1}, "epoch,loss\n1,0.5\n")
    b = _write(tmp_path / "b", {"rows": [{"top1": 0.3}], "ap": 1, "extra": 2}, "epoch,loss\n1,0.50001\n")
    diffs, _ = no_slower.compare(a, b, ["r.json", "m.csv", "gone.json"])
    assert diffs == ["r.json: extra only in B", f"r.json: rows[0].top1: A {x!r} B 0.3",
                     "m.csv: [0].loss: A '0.5' B '0.50001'", "gone.json: present in neither"]


def test_timing_rows_give_medians_and_paired_ratios(no_slower):
    lines = no_slower.timing_rows({"t": {"A": [2.0, 4.0, 3.0], "B": [3.0, 4.0, 6.0]}})
    # medians 3 and 4; paired ratios B/A 1.5, 1.0, 2.0
    assert lines[2] == "| t | 3.00 (2.00-4.00) | 4.00 (3.00-6.00) | 1.500 (1.000-2.000) |"
