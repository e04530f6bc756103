"""Detection configs (iif.detection.config), iif det-train and iif det-eval on a tiny offline benchmark."""

from __future__ import annotations

import json

import pytest
import torch

from iif.cli import main
from iif.errors import IIFError

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

pytest.importorskip("torchvision")
pytest.importorskip("faster_coco_eval")

from iif.detection import DETECTION_PRESETS  # noqa: E402
from iif.detection.config import (  # noqa: E402
    DetectionConfig,
    detection_configs,
    load_detection_config,
    margin_kwargs,
    model_kwargs,
)
from iif.train.config import load_config, packaged_configs  # noqa: E402

# A model small enough that one epoch of 16 images takes well under a second on one CPU thread.
TINY = ["data.max_train_images=24", "data.max_val_images=8", "model.min_size=64", "model.max_size=64",
        "model.fpn_channels=16", "model.representation_size=32", "model.mask_layers=[8]",
        "model.box_detections_per_img=20", "schedule.batch_size=4", "schedule.warmup_iters=2",
        "schedule.milestones=[1]", "eval.batch_size=4", "runtime.threads=1"]


@pytest.fixture(scope="module")
def bench(detection_benchmark):
    """The session's shared tiny benchmark (conftest.py); det-train only reads it."""
    return detection_benchmark[0]


# ------------------------------------------------------------------------------------------------ config
def test_every_packaged_detection_config_loads_and_validates():
    names = detection_configs()
    assert {"det_bench_softmax", "det_bench_iif", "det_lvis_r50_1x_softmax", "det_lvis_r101_2x_rfs_iif",
            "det_coco_ssd300_iif", "det_lvis_r50_1x_decoupled_iif"} <= set(names)
    for name in names:
        cfg = load_detection_config(name)
        assert isinstance(cfg, DetectionConfig)
    # iif train's list keeps them out (they are not classification configs), and each side refuses the other's.
    assert not any(n.startswith("det_") for n in packaged_configs())
    with pytest.raises(IIFError, match="is a detection config .* run it with .iif det-train"):
        load_config("det_bench_softmax")


def test_bench_configs_equal_the_cpu_quick_preset():
    """det_bench_* reproduce det-bench's training settings, so its rows can be rerun with det-train."""
    preset = DETECTION_PRESETS["cpu-quick"]
    cfg = load_detection_config("det_bench_softmax")
    assert cfg.model.arch == preset["arch"] and cfg.runtime.threads == preset["threads"]
    kw = model_kwargs(cfg)
    for key, value in preset["model"].items():
        assert kw[key] == value, key
    for key, value in preset["train"].items():
        got = getattr(cfg.schedule, key)
        assert (list(got) if isinstance(value, tuple) else got) == (list(value) if isinstance(value, tuple) else value), key
    assert cfg.eval.batch_size == preset["predict"]["batch_size"]
    e2e = {n: load_detection_config(n).margin for n in ("det_bench_iif", "det_bench_iof_base10",
                                                         "det_bench_balanced_softmax", "det_bench_la_loss")}
    assert (e2e["det_bench_iif"].variant, e2e["det_bench_iif"].by) == ("raw", "image")
    assert (e2e["det_bench_iof_base10"].variant, e2e["det_bench_iof_base10"].by) == ("base10", "object")
    assert margin_kwargs(e2e["det_bench_la_loss"])["when"] == "train"


def test_paper_configs_hold_the_paper_schedules():
    one = load_detection_config("det_lvis_r50_1x_rfs_iif")
    two = load_detection_config("det_lvis_r101_2x_rfs_iif")
    assert (one.schedule.epochs, one.schedule.milestones, one.schedule.batch_size, one.schedule.lr) == (12, [8, 11], 16, 0.02)
    assert (two.schedule.epochs, two.schedule.milestones, two.model.arch) == (24, [16, 22], "maskrcnn_r101_fpn")
    assert (one.data.sampler, one.data.rfs_threshold, one.model.min_size, one.model.max_size) == ("rfs", 0.001, 800, 1333)
    assert load_detection_config("det_lvis_r50_2x_rfs_iof_base10_cos").model.cosine_scale == 8.0  # the authors' IIF+RFS+cos
    # Table XIV variants are overrides, not files.
    v = load_detection_config("det_lvis_r50_1x_iif", ["margin.variant=base10", "margin.by=object"]).margin
    assert (v.method, v.variant, v.by) == ("iif", "base10", "object")


def test_overrides_are_typed_and_inherit(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: det_bench_softmax\nschedule:\n  epochs: 5\n", encoding="utf-8")
    cfg = load_detection_config(tmp_path / "mine.yaml", ["schedule.lr=1e-3", "model.anchor_sizes=[[8],[16]]"])
    assert cfg.schedule.epochs == 5 and cfg.schedule.lr == 0.001 and cfg.model.arch == "maskrcnn_r10_fpn"
    assert model_kwargs(cfg)["anchor_sizes"] == ((8,), (16,))


@pytest.mark.parametrize("override, message", [
    ("schedule.epohcs=3", "unknown config key 'schedule.epohcs'. Did you mean 'epochs'"),
    ("margn.method=iif", "unknown config section 'margn'. Did you mean 'margin'"),
    ("model.arch=maskrcnn_r51_fpn", "'model.arch' is 'maskrcnn_r51_fpn'; use one of .* Did you mean 'maskrcnn_r50_fpn'"),
    ("schedule.lr=-0.1", "'schedule.lr' must be a positive finite number"),
    ("schedule.milestones=[2,99]", "'schedule.milestones' must list epochs in 1..schedule.epochs=3"),
    ("data.sampler=rsf", "'data.sampler' is 'rsf'; use one of random, rfs"),
    ("data.rfs_threshold=0", "'data.rfs_threshold' must be in \\(0, 1\\]"),
    ("margin.method=balanced_softmax margin.when=test", "balanced_softmax is a training loss"),
    ("margin.variant=log", "'margin.variant' is 'log'"),
    ("model.min_size=900", "'model.min_size' \\(900\\) exceeds model.max_size"),
    ("model.classifier_only=true", "model.checkpoint is not set"),
    ("runtime.device=gpu", "'runtime.device' is 'gpu'"),
    ("eval.score_threshold=1.5", "'eval.score_threshold' must be in \\[0, 1\\)"),
    ("schedule.batch_size=abc", "'schedule.batch_size' must be a whole number"),
])
def test_bad_values_name_the_dotted_key(override, message):
    with pytest.raises(IIFError, match=message) as info:
        load_detection_config("det_bench_softmax", override.split())
    assert "\n" not in str(info.value)


def test_cli_list_and_print_config(capsys):
    assert main(["det-train", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("det_lvis_r50_1x_iif ") and "Table" in line for line in lines)
    assert main(["det-train", "det_bench_iif", "schedule.epochs=7", "--print-config"]) == 0
    import yaml

    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["schedule"]["epochs"] == 7 and printed["margin"]["method"] == "iif"
    assert load_detection_config(printed).schedule.epochs == 7  # the printed YAML loads back


# ------------------------------------------------------------------------------------------- end to end
def _train(bench, out, *extra, config="det_bench_softmax"):
    return main(["det-train", config, f"data.root={bench}", *TINY, *extra, "--out", str(out), "--quiet"])


@pytest.mark.slow
def test_det_train_resume_and_det_eval(bench, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _train(bench, full, "schedule.epochs=2") == 0
    out = capsys.readouterr().out
    metrics = json.loads((full / "final_metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APr", "APc", "APf", "APb", "dAP_FP", "false_positives"):
        assert key in metrics and f"{key} " in out
    assert metrics["rules"] == "lvis" and metrics["iou_type"] == "segm"
    assert metrics["num_detections"] == len(json.loads((full / "detections.json").read_text())) > 0
    saved = load_detection_config(full / "config.yaml")
    assert saved.data.root == str(bench) and saved.schedule.epochs == 2
    history = json.loads((full / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]

    # Stopped after epoch 1 (as if killed), then --resume: the same weights as the uninterrupted run.
    assert _train(bench, part, "schedule.epochs=2", "runtime.stop_after_epoch=1") == 0
    assert "stopped early" in capsys.readouterr().out and not (part / "final_metrics.json").exists()
    assert main(["det-train", "det_bench_softmax", f"data.root={bench}", *TINY, "schedule.epochs=2",
                 "--out", str(part), "--quiet"]) == 2  # not empty: refused without --resume
    assert "already holds a unfinished iif det-train output" in capsys.readouterr().err
    assert _train(bench, part, "schedule.epochs=2", "--resume") == 0
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((part / "final_metrics.json").read_text())["AP"] == metrics["AP"]

    # det-eval rebuilds the model from config.yaml + last.pt: the same detections and numbers.
    capsys.readouterr()
    assert main(["det-eval", str(full), "--out", str(tmp_path / "m.json"), "--detections", str(tmp_path / "d.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())
    assert {k: evaluated[k] for k in metrics if k in ("bbox", "segm", "tide", "false_positives")} == \
        {k: metrics[k] for k in ("bbox", "segm", "tide", "false_positives")}
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads((full / "detections.json").read_text())

    # Post-hoc margin: same boxes re-scored, so the detections differ from softmax's but not their count source.
    assert main(["det-eval", str(full), "--margin", "iif:smooth:image", "--detections", str(tmp_path / "p.json")]) == 0
    posthoc = json.loads((tmp_path / "p.json").read_text())
    assert posthoc and posthoc != json.loads((full / "detections.json").read_text())

    # A config change refuses --resume.
    assert _train(bench, full, "schedule.epochs=2", "schedule.lr=0.01", "--resume") == 2
    assert "another config" in capsys.readouterr().err


@pytest.fixture(scope="module")
def one_epoch_run(bench, tmp_path_factory):
    """det_bench_softmax, one epoch, box evaluation only: the stage 1 of the decoupled test and the run
    compared with det-bench's own training (both only read it)."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    assert _train(bench, out, "schedule.epochs=1", "eval.masks=false") == 0
    return out


def test_decoupled_stage2_trains_only_the_classifier(bench, one_epoch_run, tmp_path):
    stage1 = one_epoch_run
    stage2 = tmp_path / "s2"
    assert _train(bench, stage2, "schedule.epochs=1", "eval.masks=false", "margin.method=iif",
                  "margin.variant=smooth", f"model.checkpoint={stage1 / 'last.pt'}", "model.classifier_only=true",
                  "model.norm=bn") == 0
    a = torch.load(stage1 / "last.pt", weights_only=True)["model"]
    b = torch.load(stage2 / "last.pt", weights_only=True)["model"]
    changed = {k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])}
    trained = {k for k in changed if "running_" not in k}
    assert trained == {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias"}


@pytest.mark.parametrize("args, message", [
    (["data.train_json=/nonexistent/train.json", "data.train_images=/tmp", "data.val_json=/nonexistent/v.json",
      "data.val_images=/tmp"], "data.train_json: /nonexistent/train.json is not a file"),
    (["data.root=EMPTY"], "not a detection data folder"),
    (["data.root=BENCH", "model.arch=maskrcnn_r5_fpn"], "'model.arch' is 'maskrcnn_r5_fpn'"),
])
def test_bad_inputs_one_line_exit_2_nothing_written(bench, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("EMPTY", str(tmp_path / "empty")).replace("BENCH", str(bench)) for a in args]
    out = tmp_path / "out"
    assert main(["det-train", "det_bench_softmax", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("iif det-train: error: ")
    assert message.split("'")[0] in err or message in err
    import re

    assert re.search(message, err) or message in err
    assert not out.exists()


def test_det_eval_bad_run(tmp_path, capsys):
    assert main(["det-eval", str(tmp_path / "nope")]) == 2
    assert "neither a det-train run folder nor a checkpoint" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    assert main(["det-eval", str(tmp_path / "run")]) == 2
    assert "has no config.yaml" in capsys.readouterr().err


def test_det_train_reproduces_det_bench_training(bench, one_epoch_run):
    """det_bench_softmax through det-train trains the same weights as det-bench's softmax detector."""
    from iif.detection.bench import _load_data, quick_settings
    from iif.detection.bench import _train as bench_train

    tiny = {"model.min_size": 64, "model.max_size": 64, "model.fpn_channels": 16, "model.representation_size": 32,
            "model.mask_layers": [8], "model.box_detections_per_img": 20}
    s = quick_settings("cpu-quick", [f"{k}={v}" for k, v in tiny.items()] + [
        "train.epochs=1", "train.batch_size=4", "train.warmup_iters=2", "train.milestones=[1]",
        "max_train_images=24", "max_val_images=8"])
    torch.set_num_threads(1)
    model, _ = bench_train(s, _load_data(bench, s, lambda *_: None), None, 0, "cpu", lambda *_: None)
    ours = torch.load(one_epoch_run / "last.pt", weights_only=True)["model"]
    theirs = model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_runs_started_before_the_new_keys_still_resume():
    """Keys added on 2026-12-06 (la_form, gamma, seesaw_*, allow_negative, rfs_rounding, warmup_fraction,
    milestone_fractions) leave the fingerprint unchanged at their defaults: the values below were computed by the
    code of commit 491d087, before those keys existed. A logit-adjustment run (its default form changed) and the
    paper RFS configs (now ceil rounding) must not match their old fingerprints: they train differently now."""
    from iif.detection.config import detection_config_hash, load_detection_config

    old = {"det_bench_softmax": "f793ff80287c85a4", "det_bench_iif": "351368c952ff8eb0",
           "det_bench_la_loss": "5b9b03b37abd6aac", "det_lvis_r50_1x_rfs_iif": "fe4b862f922cd590"}
    now = {name: detection_config_hash(load_detection_config(name)) for name in old}
    assert now["det_bench_softmax"] == old["det_bench_softmax"]
    assert now["det_bench_iif"] == old["det_bench_iif"]
    assert now["det_bench_la_loss"] != old["det_bench_la_loss"]
    assert now["det_lvis_r50_1x_rfs_iif"] != old["det_lvis_r50_1x_rfs_iif"]
    # A new key set away from its default does change the fingerprint.
    changed = load_detection_config("det_bench_iif", ["margin.allow_negative=true"])
    assert detection_config_hash(changed) != old["det_bench_iif"]


def test_v2_bench_configs_equal_det_bench_v2_settings():
    """det_bench_v2_* reproduce the detectors of `iif det-bench` on a generator-2 benchmark: the cpu-quick
    preset with det-bench's V2_DEFAULTS (arch, pretrained start, RFS), one config per end-to-end row."""
    from iif.detection import bench as B

    s = B.quick_settings("cpu-quick")
    s.generator = 2
    B._apply_v2_defaults(s, set(), lambda m: None)
    cfg = load_detection_config("det_bench_v2_softmax")
    assert cfg.model.arch == s.arch == "fasterrcnn_r10_fpn" and cfg.runtime.threads == s.threads
    kw = model_kwargs(cfg)
    for key, value in s.model.items():
        assert kw[key] == value, key
    assert "class_agnostic_mask" not in s.model and "class_agnostic_mask" not in kw
    for key, value in s.train.items():
        got = getattr(cfg.schedule, key)
        assert (list(got) if isinstance(value, tuple) else got) == (list(value) if isinstance(value, tuple) else value), key
    assert (cfg.data.sampler, cfg.data.rfs_threshold, cfg.data.rfs_rounding) == ("rfs", s.rfs_threshold, s.rfs_rounding)
    rows = {(r.method, r.variant, r.by, r.when) for r in B.E2E_ROWS}
    configs = {}
    for name in ("det_bench_v2_iif", "det_bench_v2_iof_base10", "det_bench_v2_balanced_softmax",
                 "det_bench_v2_la_loss", "det_bench_v2_seesaw"):
        c = load_detection_config(name)
        assert model_kwargs(c) == kw and c.data == cfg.data and c.schedule == cfg.schedule, name
        m = margin_kwargs(c.margin)
        configs[name] = (c.margin.method, m.get("variant") if c.margin.method == "iif" else None,
                         m.get("by") if c.margin.method == "iif" else None, m["when"])
    assert set(configs.values()) == rows
