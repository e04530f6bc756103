"""``iif stats`` and ``iif weights`` through ``iif.cli.main``: output values and bad-input exit codes.

Expected numbers are the hand counts of tests/fixtures/lvis_mini_train.json (apple 3 images / 4
instances, bus 1/1, kite 1/1, zebra 2/4; 5 images, 10 instances) and math.log by hand.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from iif.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
LVIS = str(FIXTURES / "lvis_mini_train.json")
COCO = str(FIXTURES / "coco_mini_instances.json")
LIST = str(FIXTURES / "lists_imagenet_lt_train.txt")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------------------- stats
def test_stats_json_report(capsys):
    code, out, err = run(capsys, "stats", LVIS, "--format", "json", "--many", "2", "--few", "2", "--top", "2")
    assert code == 0 and err == ""
    r = json.loads(out)
    assert (r["num_classes"], r["num_images"], r["num_instances"], r["task"]) == (4, 5, 10, "detection")
    assert (r["min_count"], r["max_count"], r["imbalance_factor"]) == (1, 3, 3.0)
    assert r["shot_groups"] == {"many": 1, "medium": 1, "few": 2}  # 3 > 2; 2 medium; 1, 1 < 2
    assert r["lvis_groups"] == {"r": 4, "c": 0, "f": 0}
    assert [(h["name"], h["images"], h["instances"]) for h in r["head"]] == [("apple", 3, 4), ("zebra", 2, 4)]
    assert [t["name"] for t in r["tail"]] == ["bus", "kite"]


def test_stats_by_object(capsys):
    code, out, _ = run(capsys, "stats", LVIS, "--format", "json", "--by", "object")
    r = json.loads(out)
    assert code == 0 and (r["min_count"], r["max_count"], r["imbalance_factor"]) == (1, 4, 4.0)


def test_stats_table(capsys):
    code, out, err = run(capsys, "stats", LVIS, "--top", "1")
    assert code == 0 and err == ""
    assert "classes           4" in out and "images            5" in out and "instances         10" in out
    assert "imbalance factor  3.00" in out
    assert "many (> 50): 0   medium: 0   few (< 15): 4" in out  # no class > 100 images: metrics.shot_thresholds
    assert "rare: 4   common: 0   frequent: 0" in out
    head = out.split("head classes")[1].split("tail classes")[0]
    assert "apple" in head and "zebra" not in head
    assert "bus" in out.split("tail classes")[1]  # smallest first; the tie bus = kite = 1 keeps class order


def test_stats_classification_list_file_has_no_lvis_groups(capsys):
    code, out, _ = run(capsys, "stats", LIST, "--format", "json")
    r = json.loads(out)
    assert code == 0 and r["lvis_groups"] is None and r["task"] == "classification"
    assert (r["num_images"], r["imbalance_factor"]) == (6, 3.0)


def test_stats_reports_empty_classes_as_warning(capsys):
    code, out, err = run(capsys, "stats", COCO, "--format", "json")
    r = json.loads(out)
    assert code == 0 and r["empty_classes"] == 1 and r["empty_class_names"] == ["car"]
    assert "warning" in err and "car" in err


def _tree(root, counts):
    """An ImageFolder tree with ``counts[name]`` empty .jpg files per class (counting reads names only)."""
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / name / f"{i}.jpg").write_bytes(b"")


def test_stats_counts_the_train_split_of_a_train_val_test_root(capsys, tmp_path):
    _tree(tmp_path / "train", {"cat": 7, "dog": 3, "emu": 1})
    _tree(tmp_path / "val", {"cat": 2, "dog": 2, "emu": 2})
    _tree(tmp_path / "test", {"cat": 5, "dog": 5, "emu": 5})
    code, out, err = run(capsys, "stats", str(tmp_path), "--format", "json")
    r = json.loads(out)
    assert code == 0 and err == ""
    assert (r["num_classes"], r["num_images"], r["max_count"], r["min_count"]) == (3, 11, 7, 1)  # train only
    assert r["split"] == {"counted": str(tmp_path / "train"), "splits": ["train", "val", "test"]}
    code, out, _ = run(capsys, "stats", str(tmp_path))
    assert f"split             train: counted {tmp_path / 'train'} (the source holds train/, val/, test/)" in out
    assert "classes           3" in out and "images            11" in out
    # a plain class tree is counted as it is, with no split line
    code, out, _ = run(capsys, "stats", str(tmp_path / "val"), "--format", "json")
    assert json.loads(out)["split"] is None and json.loads(out)["num_images"] == 6


def test_stats_tail_ascending_and_no_class_listed_twice(capsys, tmp_path):
    counts = {"a": 9, "b": 2, "c": 40, "d": 5, "e": 1, "f": 17, "g": 2}
    _tree(tmp_path, counts)
    by_size = sorted(counts, key=lambda k: -counts[k])  # no ties at the top
    code, out, _ = run(capsys, "stats", str(tmp_path), "--format", "json", "--top", "3")
    r = json.loads(out)
    assert [h["name"] for h in r["head"]] == by_size[:3] == ["c", "f", "a"]
    # smallest first; the tie b = g = 2 keeps class order
    assert [(t["name"], t["images"]) for t in r["tail"]] == [("e", 1), ("b", 2), ("g", 2)]
    # 7 classes, --top 5: head 5, the tail holds only the 2 classes not in the head
    r = json.loads(run(capsys, "stats", str(tmp_path), "--format", "json", "--top", "5")[1])
    head, tail = [h["name"] for h in r["head"]], [t["name"] for t in r["tail"]]
    assert head == ["c", "f", "a", "d", "b"] and tail == ["e", "g"]
    r = json.loads(run(capsys, "stats", str(tmp_path), "--format", "json", "--top", "10")[1])
    assert len(r["head"]) == 7 and r["tail"] == []
    out = run(capsys, "stats", str(tmp_path), "--top", "5")[1]
    tail_text = out.split("tail classes (smallest first)")[1]
    assert tail_text.index(" e ") < tail_text.index(" g ")
    shown = [ln.split()[2] for ln in out.splitlines() if ln.startswith("  ") and ln.split()[0].isdigit()]
    assert sorted(shown) == sorted(counts)  # every class once


# --------------------------------------------------------------------------------------- weights
def test_weights_json_detection_defaults(capsys):
    code, out, _ = run(capsys, "weights", LVIS, "--variant", "raw", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["total"] == 5 and doc["by"] == "image" and doc["variant"] == "raw"
    np.testing.assert_allclose(doc["weights"], [math.log(5 / n) for n in (3, 1, 1, 2)], rtol=1e-6)
    assert [c["name"] for c in doc["classes"]] == ["apple", "bus", "kite", "zebra"]


def test_weights_by_object_uses_instances(capsys):
    code, out, _ = run(capsys, "weights", LVIS, "--variant", "base10", "--by", "object", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["total"] == 10
    np.testing.assert_allclose(doc["weights"], [math.log10(10 / n) for n in (4, 1, 1, 4)], rtol=1e-6)


@pytest.mark.parametrize("total,k", [("sum", 7), ("instances", 10), ("50", 50)])
def test_weights_total(capsys, total, k):
    code, out, _ = run(capsys, "weights", LVIS, "--variant", "smooth", "--total", total, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["total"] == k
    np.testing.assert_allclose(doc["weights"], [math.log((k + 1) / (n + 1)) + 1 for n in (3, 1, 1, 2)], rtol=1e-6)


@pytest.mark.parametrize("where", ["first", "last"])
def test_weights_csv_with_background_and_norm(capsys, where):
    code, out, _ = run(capsys, "weights", LIST, "--variant", "raw", "--background", where, "--norm", "2",
                       "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["position", "index", "id", "name", "count", "weight"]
    fg = [math.log(6 / n) for n in (3, 1, 2)]
    l2 = math.sqrt(sum(x * x for x in fg))
    bg = rows[0] if where == "first" else rows[-1]
    fg_rows = rows[1:] if where == "first" else rows[:-1]
    assert bg["name"] == "__background__" and float(bg["weight"]) == 1.0 and bg["index"] == ""
    assert [int(r["count"]) for r in fg_rows] == [3, 1, 2]
    np.testing.assert_allclose([float(r["weight"]) for r in fg_rows], [x / l2 for x in fg], rtol=1e-6)
    assert [int(r["position"]) for r in rows] == [0, 1, 2, 3]


def test_weights_table_and_output_file(capsys, tmp_path):
    code, out, _ = run(capsys, "weights", LIST, "--variant", "smooth")
    assert code == 0 and "variant=smooth by=image K=6" in out
    assert f"{math.log(7 / 2) + 1:.4f}" in out  # class 1, one image: ln(7/2) + 1
    dest = tmp_path / "w.json"
    code, out, err = run(capsys, "weights", LIST, "--format", "json", "-o", str(dest))
    assert code == 0 and out == "" and "wrote 3 weights" in err
    np.testing.assert_allclose(json.loads(dest.read_text())["weights"], [math.log(7 / (n + 1)) + 1 for n in (3, 1, 2)],
                               rtol=1e-6)


def test_weights_allow_negative_warns(capsys):
    code, out, err = run(capsys, "weights", LIST, "--variant", "rel", "--allow-negative", "--format", "json")
    assert code == 0 and "warning" in err and "allow_negative" in err
    assert json.loads(out)["weights"][0] == pytest.approx(math.log(3 / 3))  # ln((6-3)/3) = 0


# ------------------------------------------------------------------------------------- bad input
def one_line_error(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_bad_variant(capsys):
    line = one_line_error(capsys, "weights", LVIS, "--variant", "cubic")
    assert line.startswith("iif weights: error:") and "'cubic'" in line and "smooth" in line


def test_zero_count_with_inf_variant_names_class(capsys):
    line = one_line_error(capsys, "weights", COCO, "--variant", "normit")
    assert "zero count" in line and "car" in line and "smooth" in line


def test_negative_weights_refused(capsys):
    line = one_line_error(capsys, "weights", LIST, "--variant", "relative")
    assert "non-positive" in line and "allow_negative" in line


def test_bad_total(capsys):
    line = one_line_error(capsys, "weights", LIST, "--total", "lots")
    assert "'sum', 'images' or 'instances'" in line
    line = one_line_error(capsys, "weights", LIST, "--total", "2")
    assert "smaller than the count" in line


def test_weights_of_a_json_list_of_counts(capsys, tmp_path):
    (tmp_path / "counts.json").write_text("[500, 50, 5]")
    code, out, _ = run(capsys, "weights", str(tmp_path / "counts.json"), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["total"] == 555 and [r["count"] for r in doc["classes"]] == [500, 50, 5]
    expected = [math.log(556 / (n + 1)) + 1 for n in (500, 50, 5)]  # smooth, K = 555 (paper Table III)
    assert np.allclose(doc["weights"], expected, rtol=1e-6)
    (tmp_path / "bad.json").write_text("[500, 2.5]")
    assert "entry 1 is 2.5" in one_line_error(capsys, "weights", str(tmp_path / "bad.json"))


def test_weights_of_a_split_root_say_which_tree_they_count(capsys, tmp_path):
    _tree(tmp_path / "train", {"a": 4, "b": 1})
    _tree(tmp_path / "test", {"a": 1, "b": 1})
    code, out, err = run(capsys, "weights", str(tmp_path), "--format", "json", "--variant", "raw")
    assert code == 0 and f"counting {tmp_path / 'train'}" in err
    assert np.allclose(json.loads(out)["weights"], [math.log(5 / 4), math.log(5 / 1)], rtol=1e-6)


def test_missing_source(capsys, tmp_path):
    line = one_line_error(capsys, "stats", str(tmp_path / "missing.json"))
    assert line.startswith("iif stats: error:") and "no such file or directory" in line


def test_truncated_json(capsys, tmp_path):
    bad = tmp_path / "lvis_trunc.json"
    bad.write_text(Path(LVIS).read_text()[:300])
    line = one_line_error(capsys, "stats", str(bad))
    assert str(bad) in line and "invalid JSON at line" in line


def test_bad_list_line(capsys, tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text("a.jpg 0\nb.jpg zero\n")
    line = one_line_error(capsys, "weights", str(bad))
    assert "line 2" in line and "'b.jpg zero'" in line


def test_unknown_category_in_annotations(capsys, tmp_path):
    data = json.loads(Path(LVIS).read_text())
    data["annotations"][0]["category_id"] = 4242
    p = tmp_path / "lvis_bad.json"
    p.write_text(json.dumps(data))
    line = one_line_error(capsys, "stats", str(p))
    assert "unknown category ids [4242]" in line


def test_bad_thresholds_and_output(capsys, tmp_path):
    assert "must not exceed many" in one_line_error(capsys, "stats", LIST, "--many", "5", "--few", "10")
    assert "--top must be >= 0" in one_line_error(capsys, "stats", LIST, "--top", "-1")
    assert "is a directory" in one_line_error(capsys, "weights", LIST, "-o", str(tmp_path))
    assert "does not exist" in one_line_error(capsys, "weights", LIST, "-o", str(tmp_path / "no" / "w.csv"))


def test_argparse_choices_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["weights", LIST, "--by", "pixel"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
