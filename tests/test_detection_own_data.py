"""Detection on a COCO json of one's own (issue 14, item 6): r/c/f groups from the training json's image counts
by LVIS's rule (one rule for ``iif stats`` and the detection evaluation), det-bench reading det-train's
``data.*`` paths, the det_folder recipe's schedule scaled to the data size and the warm-up warning, and the
report's summary naming no "best row by AP_r" without rare categories."""

import importlib.util
import json
import shutil

import numpy as np
import pytest

from iif import ClassFrequency
from iif.cli import main
from iif.detection.config import load_detection_config, scaled_schedule
from iif.detection.report import summary_lines

needs_eval = pytest.mark.skipif(importlib.util.find_spec("faster_coco_eval") is None,
                                reason="faster-coco-eval is not installed (pip install 'iif[detection]')")

# Training-image counts picked at LVIS's group edges (rare 1-10, common 11-100, frequent > 100; LVIS paper,
# Sec. 3): the groups below are read off the definition, not computed.
EDGE_COUNTS = [10, 11, 101, 1, 100, 0]
EDGE_GROUPS = ["r", "c", "f", "r", "c", "r"]


def _coco_with_image_counts(counts):
    """A plain COCO json (no LVIS fields) where category k+1 is in exactly ``counts[k]`` images: image i holds
    one 4x4 box of every category whose count exceeds i."""
    n = max(counts)
    images = [{"id": i + 1, "file_name": f"{i + 1}.png", "width": 32, "height": 32} for i in range(n)]
    anns = []
    for k, c in enumerate(counts):
        for i in range(c):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": k + 1,
                         "bbox": [float(k * 5), 2.0, 4.0, 4.0], "area": 16.0, "iscrowd": 0})
    cats = [{"id": k + 1, "name": f"c{k}"} for k in range(len(counts))]
    return {"images": images, "annotations": anns, "categories": cats}


# ------------------------------------------------------------------------------------------------- groups
def test_groups_from_hand_counted_images_one_rule_for_stats_and_evaluation(tmp_path, capsys):
    from iif.detection.evaluation import category_groups

    gt = _coco_with_image_counts(EDGE_COUNTS)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(gt))
    freq = ClassFrequency.from_coco(path)
    assert freq.image_counts.tolist() == EDGE_COUNTS  # the json holds the intended counts
    by_id = category_groups(gt, freq.image_counts)
    assert [by_id[k + 1] for k in range(len(EDGE_COUNTS))] == EDGE_GROUPS
    assert freq.lvis_groups() == EDGE_GROUPS
    assert main(["stats", str(path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["lvis_groups"] == {"r": 3, "c": 2, "f": 1}
    # LVIS letters win where every category has one; a plain val json without counts has no groups
    lvis = json.loads(json.dumps(gt))
    for c in lvis["categories"]:
        c["frequency"] = "f"
    assert set(category_groups(lvis, freq.image_counts).values()) == {"f"}
    assert category_groups(gt) is None
    with pytest.raises(Exception, match="one training image count per category"):
        category_groups(gt, [1, 2])


def _val_and_detections():
    """Four val images, one 10x10 object each of categories 1-4; detections: exact boxes for 1 and 3 only."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 40} for i in range(1, 5)]
    anns = [{"id": i, "image_id": i, "category_id": i, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0}
            for i in range(1, 5)]
    gt = {"images": images, "annotations": anns, "categories": [{"id": k, "name": f"c{k}"} for k in range(1, 5)]}
    dets = [{"image_id": i, "category_id": i, "bbox": [5.0, 5.0, 10.0, 10.0], "score": 0.9} for i in (1, 3)]
    return gt, dets


@needs_eval
def test_ap_r_c_f_on_a_coco_json_by_hand():
    """Categories 1 and 4 rare (5 and 10 training images), 2 common (11), 3 frequent (101); 1 and 3 found
    exactly (AP 100), 2 and 4 missed (AP 0): AP_r = (100 + 0) / 2 = 50, AP_c = 0, AP_f = 100."""
    from iif.detection.evaluation import evaluate_coco
    from iif.detection.runs import evaluate_detections

    gt, dets = _val_and_detections()
    ev = evaluate_detections(gt, dets, masks=False, score_threshold=0.3, train_counts=np.array([5, 11, 101, 10]))
    assert ev["rules"] == "coco"
    assert (ev["APr"], ev["APc"], ev["APf"]) == pytest.approx((50.0, 0.0, 100.0), abs=1e-9)
    assert ev["AP"] == pytest.approx(50.0, abs=1e-9)
    assert ev["groups"] == {"r": 2, "c": 1, "f": 1}
    plain = evaluate_coco(gt, dets)  # without groups: COCO's keys only, as before
    assert "APr" not in plain and plain["AP"] == pytest.approx(50.0, abs=1e-9)


@needs_eval
def test_false_positives_by_group_follow_the_training_counts():
    from iif.detection.evaluation import false_positives_by_group

    gt, _ = _val_and_detections()
    # a confident box of category 4 (rare by its 10 training images) on image 2, where there is none
    dets = [{"image_id": 2, "category_id": 4, "bbox": [20.0, 20.0, 10.0, 10.0], "score": 0.9}]
    groups = {1: "r", 2: "c", 3: "f", 4: "r"}
    assert false_positives_by_group(gt, dets, groups=groups) == {"r": 1, "c": 0, "f": 0, "all": 1}


# ------------------------------------------------------------------------------------------------ summary
def _row(method, strategy, apr, variant=None, by=None):
    return {"method": method, "strategy": strategy, "variant": variant, "by": by, "AP": 10.0, "AP50": 20.0,
            "AP75": 5.0, "APr": apr, "APc": None if apr is None else 3.0, "APf": 12.0, "APb": 11.0,
            "dAP_FP": 4.0, "false_positives": 7}


def test_no_best_row_by_ap_r_without_rare_classes():
    rows = [_row("softmax", "posthoc", None), _row("iif", "posthoc", None, "raw", "image"),
            _row("iif", "posthoc", None, "smooth", "image"), _row("logit_adjustment", "posthoc", None)]
    text = "\n".join(summary_lines(rows))
    assert "best IIF row by AP_r" not in text
    assert "no AP_r" in text
    rows[2]["APr"] = 2.5  # one rare number: the pick is made, and it is that row
    text = "\n".join(summary_lines(rows))
    assert "best IIF row by AP_r is iif smooth IIF (posthoc)" in text


# ----------------------------------------------------------------------------------------------- schedule
def test_warmup_and_milestones_scaled_by_hand():
    # 220 images, batch 8: ceil(220 / 8) = 28 iterations per epoch, x 3 epochs = 84; 10% of 84 = 8.4 -> 8
    s = scaled_schedule(epochs=3, batch_size=8, num_images=220, warmup_iters=100, milestones=[2],
                        warmup_fraction=0.1, milestone_fractions=None)
    assert (s["total_iters"], s["warmup_iters"], s["milestones"], s["warning"]) == (84, 8, [2], None)
    # det_folder on 300 images: 38 x 12 = 456 iterations, warm-up min(500, 45) = 45; 0.67 x 12 = 8.04 -> 8,
    # 0.92 x 12 = 11.04 -> 11 (the 1x schedule's milestones)
    s = scaled_schedule(epochs=12, batch_size=8, num_images=300, warmup_iters=500, milestones=[],
                        warmup_fraction=0.1, milestone_fractions=[0.67, 0.92])
    assert (s["total_iters"], s["warmup_iters"], s["milestones"]) == (456, 45, [8, 11])
    # a short run keeps milestones inside 1..epochs and merges duplicates; the configured warm-up is a cap
    s = scaled_schedule(epochs=2, batch_size=4, num_images=1000, warmup_iters=20, milestones=[],
                        warmup_fraction=0.5, milestone_fractions=[0.1, 0.4, 0.67])
    assert (s["warmup_iters"], s["milestones"]) == (20, [1])
    # no warm-up stays none
    assert scaled_schedule(epochs=1, batch_size=8, num_images=8, warmup_iters=0, milestones=[],
                           warmup_fraction=0.1)["warmup_iters"] == 0


def test_warning_when_warmup_is_longer_than_the_run():
    """The det_bench_* configs on 220 images: 100 warm-up iterations against 84 in the whole run."""
    s = scaled_schedule(epochs=3, batch_size=8, num_images=220, warmup_iters=100, milestones=[2])
    assert s["warmup_iters"] == 100 and s["total_iters"] == 84
    w = s["warning"]
    assert w is not None and "\n" not in w
    assert "100 iterations" in w and "84 iterations" in w and "schedule.warmup_fraction" in w
    # exactly as long as the run: the learning rate never reaches lr either
    assert scaled_schedule(epochs=3, batch_size=8, num_images=220, warmup_iters=84, milestones=[])["warning"]
    assert scaled_schedule(epochs=3, batch_size=8, num_images=220, warmup_iters=83, milestones=[])["warning"] is None


def test_det_train_logs_the_scaled_schedule_and_the_warning():
    from iif.detection.runs import _schedule

    lines = []
    cfg = load_detection_config("det_bench_softmax")  # warmup_iters 100, 3 epochs, batch 8
    sched = _schedule(cfg, range(220), None, lines.append)
    assert sched["warmup_iters"] == 100 and len(lines) == 1 and lines[0].startswith("warning: the warm-up")
    lines.clear()
    sched = _schedule(load_detection_config("det_folder"), range(300), None, lines.append)
    assert (sched["warmup_iters"], sched["milestones"]) == (45, [8, 11])
    assert lines == ["schedule scaled to 300 training images (456 iterations): warm-up 45 iterations, "
                     "milestones [8, 11]"]


def test_det_folder_config_and_its_checks():
    cfg = load_detection_config("det_folder")
    assert (cfg.schedule.warmup_fraction, cfg.schedule.milestone_fractions) == (0.1, [0.67, 0.92])
    assert cfg.schedule.milestones == []
    # its milestones follow the epochs, so a shorter run needs no milestone override
    assert load_detection_config("det_folder", ["schedule.epochs=2"]).schedule.epochs == 2
    from iif.errors import IIFError

    with pytest.raises(IIFError, match="schedule.warmup_fraction"):
        load_detection_config("det_folder", ["schedule.warmup_fraction=1.5"])
    with pytest.raises(IIFError, match="schedule.milestone_fractions"):
        load_detection_config("det_folder", ["schedule.milestone_fractions=[0.5,0]"])


def test_det_folder_as_a_det_bench_preset():
    pytest.importorskip("torchvision")
    from iif.detection import bench as B

    s = B.quick_settings("det_folder", ["train.epochs=6"])
    assert s.arch == "maskrcnn_r10_fpn" and s.model["min_size"] == 128 and s.threads == 1
    assert s.hflip is False  # det_folder's data.hflip, as det-train would train it
    assert B.quick_settings("cpu-quick").hflip is None  # a built-in preset: the benchmark's recommendation
    lines = []
    sched = B._scale_schedule(s, 300, lines.append)
    # 38 iterations x 6 epochs = 228 -> warm-up 22; milestones round(0.67 * 6) = 4, round(0.92 * 6) = 6
    assert (sched["total_iters"], s.train["warmup_iters"], s.train["milestones"]) == (228, 22, (4, 6))
    assert "warmup_fraction" not in s.train  # train_detector gets resolved numbers only
    assert lines == ["det-bench: schedule scaled to 300 training images (228 iterations): warm-up 22 iterations, "
                     "milestones [4, 6]"]
    with pytest.raises(Exception, match="unknown det-bench preset 'det_nope'"):
        B.quick_settings("det_nope")


# -------------------------------------------------------------------------------------- det-bench --data
@pytest.fixture(scope="module")
def own_coco(detection_benchmark, tmp_path_factory):
    """The shared tiny benchmark rewritten as a user's plain COCO json under names no layout knows:
    ``mine/train-set.json`` + ``mine/pics_a/``, ``mine/val-set.json`` + ``mine/pics_b/``."""
    bench = detection_benchmark[0]
    root = tmp_path_factory.mktemp("own") / "mine"
    root.mkdir()
    for split, name, pics in (("train", "train-set.json", "pics_a"), ("val", "val-set.json", "pics_b")):
        shutil.copytree(bench / "images" / split, root / pics)
        ann = json.loads((bench / "annotations" / f"{split}.json").read_text())
        for im in ann["images"]:
            im.pop("neg_category_ids", None)
            im.pop("not_exhaustive_category_ids", None)
        for c in ann["categories"]:
            for k in ("frequency", "image_count", "instance_count"):
                c.pop(k, None)
        (root / name).write_text(json.dumps(ann))
    return root


TINY = ["arch=maskrcnn_r10_fpn", "model.min_size=64", "model.max_size=64", "model.fpn_channels=32",
        "model.representation_size=64", "model.mask_layers=[16]", "model.box_detections_per_img=40",
        "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=40", "train.epochs=1",
        "train.batch_size=4", "train.warmup_iters=100", "train.milestones=[]", "max_train_images=20",
        "max_val_images=12", "threads=1"]


@pytest.mark.slow
@needs_eval
def test_det_bench_reads_explicit_paths_and_reports_ap_r(own_coco, tmp_path, capsys):
    pytest.importorskip("torchvision")
    if importlib.util.find_spec("tidecv") is None:
        pytest.skip("tidecv is not installed")
    from iif.detection.data import covering_subset, load_detection_dataset
    from iif.readers import lvis_group_letters

    out = tmp_path / "o"
    paths = [f"data.train_json={own_coco / 'train-set.json'}", f"data.train_images={own_coco / 'pics_a'}",
             f"data.val_json={own_coco / 'val-set.json'}", f"data.val_images={own_coco / 'pics_b'}"]
    assert main(["det-bench", "--quick", "--no-plots", "--out", str(out), *paths, *TINY]) == 0
    log = capsys.readouterr().out
    # cpu-quick-like warm-up of 100 iterations on 20 images at batch 4 (5 iterations): the one-line warning
    assert "warning: the warm-up (100 iterations) is not shorter than the whole run (5 iterations" in log
    meta = json.loads((out / "settings.json").read_text())["meta"]
    assert meta["data_paths"]["data.val_json"] == str(own_coco / "val-set.json")
    assert meta["schedule"]["total_iters"] == 5
    # the groups the report counts: LVIS's rule on the 20 training images det-bench trained on
    train = covering_subset(load_detection_dataset(own_coco / "train-set.json", own_coco / "pics_a", train=True,
                                                   masks=True, hflip=False), 20)
    letters = lvis_group_letters(train.freq.image_counts)
    n = {g: letters.count(g) for g in "rcf"}
    assert n["r"] > 0  # the tiny subset has rare categories, so AP_r must be a number
    report = (out / "report.md").read_text()
    assert f"({n['r']} rare, {n['c']} common, {n['f']} frequent" in report
    rows = json.loads((out / "results.json").read_text())
    val = json.loads((own_coco / "val-set.json").read_text())
    kept = {im["id"] for im in val["images"][:12]}
    cats = sorted(c["id"] for c in val["categories"])
    rare_in_val = {a["category_id"] for a in val["annotations"] if a["image_id"] in kept
                   and letters[cats.index(a["category_id"])] == "r"}
    assert rare_in_val and all(isinstance(r["APr"], float) for r in rows)
    details = json.loads((out / "details.json").read_text())
    assert details[0]["groups"] == n and details[0]["rules"] == "coco"
    assert "best IIF row by AP_r" in report
    assert "COCO mask AP (100 detections per image" in report and "warm-up 100 iterations" in report


@pytest.mark.parametrize("keys, message", [
    (["data.train_jsn=a.json"], "unknown det-bench override 'data.train_jsn'"),
    (["data.train_json=a.json"], "data.train_images, data.val_json, data.val_images are not set"),
    (["data.train_json=/nonexistent/a.json", "data.train_images=.", "data.val_json=/nonexistent/b.json",
      "data.val_images=."], "data.train_json: /nonexistent/a.json is not a file"),
])
def test_det_bench_bad_data_keys_are_one_line(keys, message, tmp_path, capsys):
    pytest.importorskip("torchvision")
    out = tmp_path / "o"
    assert main(["det-bench", "--quick", "--out", str(out), *keys]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iif det-bench: error:") and message in err[0], err
    assert not out.exists()


def test_a_val_set_does_not_warn_about_training_images(tmp_path):
    """The "classes have no training images" note is about training counts: a val dataset whose json lacks a
    category stays silent, while the same json loaded as a training set still warns."""
    import warnings

    from PIL import Image

    from iif.detection.data import DetectionDataset

    (tmp_path / "img").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "img" / "a.png")
    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100,
                            "iscrowd": 0}]}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        DetectionDataset(ann, tmp_path / "img", train=False, masks=False)
    assert not [w for w in seen if "no training images" in str(w.message)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        DetectionDataset(ann, tmp_path / "img", train=True, masks=False)
    assert [w for w in seen if "no training images" in str(w.message) and "dog" in str(w.message)]
