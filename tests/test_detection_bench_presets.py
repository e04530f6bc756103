"""det-bench's presets and rows from packaged YAML (iif.detection.bench_presets; issue 16 part 3).

The expected values below are the dict literal of ``DETECTION_PRESETS`` and the row tuples of
``iif/detection/bench.py`` as they were written in Python before they moved to YAML (main, 2026-12-06),
copied here by hand: the YAML must reproduce them bit for bit (same values, types, key order, row order).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest

pytest.importorskip("torchvision")

from iif.cli import main  # noqa: E402
from iif.detection import bench as B  # noqa: E402
from iif.detection.bench_presets import RowSpec, bench_rows, detection_presets, load_bench_suite  # noqa: E402
from iif.detection.bench_settings import DetBenchSettings, quick_settings  # noqa: E402
from iif.detection.models import DETECTION_PRESETS  # noqa: E402
from iif.errors import IIFError  # noqa: E402
from iif.train.config import packaged_configs  # noqa: E402

OLD_PRESETS = {
    "cpu-quick": {
        "arch": "maskrcnn_r10_fpn",
        "threads": 1,
        "model": {"min_size": 128, "max_size": 128, "returned_layers": (2, 3, 4),
                  "anchor_sizes": ((16,), (32,), (64,), (128,)), "fpn_channels": 128, "representation_size": 256,
                  "mask_layers": (64,), "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 100,
                  "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100, "rpn_batch_size_per_image": 256,
                  "box_batch_size_per_image": 64, "box_detections_per_img": 100, "box_score_thresh": 1e-4,
                  "norm": "bn"},
        "train": {"epochs": 3, "batch_size": 8, "lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4,
                  "warmup_iters": 100, "milestones": (2,), "clip_grad_norm": 10.0},
        "predict": {"batch_size": 4},
        "measured": True,
    },
    "gpu": {
        "arch": "maskrcnn_r50_fpn",
        "threads": None,
        "model": {"min_size": 256, "max_size": 256, "anchor_sizes": ((16,), (32,), (64,), (128,), (256,)),
                  "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500,
                  "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 500,
                  "box_batch_size_per_image": 256, "box_detections_per_img": 300, "box_score_thresh": 1e-4,
                  "norm": "bn"},
        "train": {"epochs": 24, "batch_size": 16, "lr": 0.04, "momentum": 0.9, "weight_decay": 1e-4,
                  "warmup_iters": 300, "milestones": (16, 22), "clip_grad_norm": 10.0, "amp": "bf16"},
        "predict": {"batch_size": 16},
        "measured": False,
    },
}

OLD_POSTHOC = (
    RowSpec("softmax", "posthoc"),
    RowSpec("iif", "posthoc", "raw", "image"), RowSpec("iif", "posthoc", "smooth", "image"),
    RowSpec("iif", "posthoc", "base10", "image"), RowSpec("iif", "posthoc", "raw", "object"),
    RowSpec("iif", "posthoc", "smooth", "object"), RowSpec("iif", "posthoc", "base10", "object"),
    RowSpec("logit_adjustment", "posthoc"),
    RowSpec("logit_adjustment", "posthoc", background_margin=True),
)
_VARIANTS = ("raw", "smooth", "relative", "base2", "base10", "gombit", "normit")
OLD_TUNE = {
    "logit_adjustment": tuple(RowSpec("logit_adjustment", "posthoc_tuned", tau=t)
                              for t in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
    "norcal": tuple(RowSpec("norcal", "posthoc_tuned", gamma=g) for g in (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
    "iif": tuple(RowSpec("iif", "posthoc_tuned", v, by) for by in ("image", "object") for v in _VARIANTS),
}
OLD_E2E = (
    RowSpec("iif", "e2e", "raw", "image", when="train_and_test"),
    RowSpec("iif", "e2e", "base10", "object", when="train_and_test"),
    RowSpec("balanced_softmax", "e2e", when="train"),
    RowSpec("logit_adjustment", "e2e", when="train"),
    RowSpec("seesaw", "e2e", when="train"),
)


def _order(d):
    """A dict's items with nested dicts' items, keys in order (dict == ignores order; settings.json does not)."""
    return [(k, _order(v) if isinstance(v, dict) else (type(v), v)) for k, v in d.items()]


def test_presets_equal_the_old_literal_with_types_and_key_order():
    assert DETECTION_PRESETS == OLD_PRESETS
    assert _order(DETECTION_PRESETS) == _order(OLD_PRESETS)
    # the values are tuples as before (a list would differ from (2,) and change settings.json's hash input)
    assert type(DETECTION_PRESETS["cpu-quick"]["model"]["anchor_sizes"][0]) is tuple


@pytest.mark.parametrize("name", ["cpu-quick", "gpu"])
def test_quick_settings_equal_the_old_construction(name):
    p = OLD_PRESETS[name]  # quick_settings as it read the dict before the YAML
    old = DetBenchSettings(preset=name, arch=p["arch"], model=copy.deepcopy(dict(p["model"])),
                           train=copy.deepcopy(dict(p["train"])), threads=p.get("threads"), hflip=p.get("hflip"),
                           batch_size_eval=int(p.get("predict", {}).get("batch_size", 8)))
    new = quick_settings(name)
    assert new == old
    assert json.dumps(asdict(new)) == json.dumps(asdict(old))  # settings.json's bytes, key order included


def test_rows_are_the_old_rowspecs_in_order():
    assert B.POSTHOC_ROWS == OLD_POSTHOC and type(B.POSTHOC_ROWS) is tuple
    assert B.E2E_ROWS == OLD_E2E
    assert list(B.TUNE_GRIDS) == list(OLD_TUNE) and B.TUNE_GRIDS == OLD_TUNE
    # the float grid values keep their type (f"{tau:g}" is the table's label)
    assert all(type(r.tau) is float for r in B.TUNE_GRIDS["logit_adjustment"])
    assert all(type(r.gamma) is float for r in B.TUNE_GRIDS["norcal"])


def test_the_suite_is_its_own_kind_of_packaged_config():
    assert packaged_configs("bench") == ["bench_detection"]
    assert "bench_detection" not in packaged_configs() + packaged_configs("detection")
    assert {"det_bench_gpu", "det_bench_seesaw"} <= set(packaged_configs("detection"))
    suite = load_bench_suite()
    assert suite.presets.configs == {"cpu-quick": "det_bench_softmax", "gpu": "det_bench_gpu"}


def test_a_user_config_path_is_a_preset(tmp_path):
    """A det-train YAML path as --preset is read whole (det-train's defaults fill it), as before the YAML."""
    path = tmp_path / "mine.yaml"
    path.write_text("base: det_bench_softmax\nschedule:\n  epochs: 5\n  milestones: [3, 4]\nruntime:\n  threads: 2\n",
                    encoding="utf-8")
    s = quick_settings(str(path), ["train.lr=0.01"])
    assert (s.preset, s.arch, s.threads, s.batch_size_eval) == (str(path), "maskrcnn_r10_fpn", 2, 4)
    assert s.train["epochs"] == 5 and s.train["milestones"] == (3, 4) and s.train["lr"] == 0.01
    assert s.train["gamma"] == 0.1 and s.train["amp"] == "none"  # det-train's defaults, read whole
    assert s.model["aspect_ratios"] == (0.5, 1.0, 2.0) and s.model["fpn_channels"] == 128


def test_a_user_config_path_reaches_the_run_through_the_cli(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("base: det_bench_softmax\nschedule:\n  epochs: 2\n", encoding="utf-8")
    (tmp_path / "data").mkdir()
    seen = {}

    class Stop(Exception):
        pass

    def load(data, s, log, paths):  # the first step after the settings: capture them and stop
        seen["s"] = s
        raise Stop

    monkeypatch.setattr(B, "_load_data", load)
    with pytest.raises(Stop):
        main(["det-bench", "--preset", str(path), "--out", str(tmp_path / "out"), "--device", "cpu",
              "--data", str(tmp_path / "data")])
    assert seen["s"].preset == str(path) and seen["s"].train["epochs"] == 2


def test_grids_expand_first_key_slowest_and_rows_are_validated():
    posthoc, tune, e2e = bench_rows({"rows": {"posthoc": [{"method": "iif", "by": ["object", "image"],
                                                            "variant": ["base2", "raw"]}],
                                              "tune": {"logit_adjustment": {"tau": [2, 0.5]}}}})
    assert [(r.by, r.variant) for r in posthoc] == [("object", "base2"), ("object", "raw"), ("image", "base2"),
                                                   ("image", "raw")]
    assert [r.tau for r in tune["logit_adjustment"]] == [2.0, 0.5] and e2e == ()
    assert type(tune["logit_adjustment"][0].tau) is float  # the loader's type (float), not YAML's int


@pytest.mark.parametrize("rows, message", [
    ({"posthoc": [{"method": "iif", "variant": "log"}]}, r"rows.posthoc\[0\]: config key 'margin.variant' is 'log'"),
    ({"posthoc": [{"method": "iif", "when": "train"}]}, r"rows.posthoc\[0\]: 'when' is not a row key"),
    ({"posthoc": [{"method": "balanced_softmax"}]}, r"rows.posthoc\[0\]: .*balanced_softmax is a training loss"),
    ({"posthoc": [{"method": "iif", "variant": []}]}, r"rows.posthoc\[0\] has an empty list"),
    ({"tune": {"norcal": {"gamma": [-1]}}}, r"rows.tune.norcal: config key 'margin.gamma'"),
    ({"e2e": ["det_nope"]}, r"rows.e2e\[0\]: config 'det_nope' is neither a file nor a packaged config"),
    ({"e2e": [3]}, r"rows.e2e\[0\] must name a det-train config"),
    ({"postoc": []}, r"unknown config key 'rows.postoc'. Did you mean 'posthoc'"),
])
def test_bad_rows_name_the_row(rows, message):
    with pytest.raises(IIFError, match=message) as info:
        bench_rows({"rows": rows})
    assert "\n" not in str(info.value)


def test_e2e_configs_carry_only_what_a_row_holds(tmp_path):
    bad = tmp_path / "bs.yaml"
    bad.write_text("base: det_bench_softmax\nmargin:\n  method: balanced_softmax\n  variant: raw\n  when: train\n",
                   encoding="utf-8")
    with pytest.raises(IIFError, match="sets margin.variant/by for balanced_softmax; they are IIF's"):
        bench_rows({"rows": {"e2e": [str(bad)]}})
    bad.write_text("base: det_bench_softmax\nmargin:\n  method: seesaw\n  seesaw_p: 0.5\n", encoding="utf-8")
    with pytest.raises(IIFError, match="sets margin.seesaw_p, which a det-bench row does not carry"):
        bench_rows({"rows": {"e2e": [str(bad)]}})
    ok = tmp_path / "la.yaml"
    ok.write_text("base: det_bench_softmax\nmargin:\n  method: logit_adjustment\n  tau: 2\n", encoding="utf-8")
    (row,) = bench_rows({"rows": {"e2e": [str(ok)]}})[2]
    assert row == RowSpec("logit_adjustment", "e2e", when="train", tau=2.0)  # when: det-train's default for LA


def test_a_preset_is_read_as_written_and_measured_names_a_preset(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("model:\n  arch: fasterrcnn_r10_fpn\n  min_size: 96\n  max_size: 96\nschedule:\n  epochs: 12\n"
                   "data:\n  hflip: true\n", encoding="utf-8")
    presets = detection_presets({"presets": {"configs": {"mine": str(cfg)}, "measured": ["mine"]}})
    assert presets == {"mine": {"arch": "fasterrcnn_r10_fpn", "threads": None, "model": {"min_size": 96, "max_size": 96},
                                "train": {"epochs": 12}, "hflip": True, "predict": {"batch_size": 4},
                                "measured": True}}
    with pytest.raises(IIFError, match="presets.measured names 'gpu', which is not in presets.configs"):
        detection_presets({"presets": {"configs": {"mine": str(cfg)}, "measured": ["gpu"]}})


def test_iif_train_print_config_prints_a_detection_config_as_det_train_does(capsys):
    import yaml

    assert main(["det-train", "det_bench_gpu", "schedule.epochs=23", "--print-config"]) == 0
    det = capsys.readouterr().out
    assert main(["train", "det_bench_gpu", "schedule.epochs=23", "--print-config"]) == 0
    assert capsys.readouterr().out == det
    printed = yaml.safe_load(det)
    assert (printed["schedule"]["epochs"], printed["runtime"]["amp"], printed["model"]["arch"]) == (
        23, "bf16", "maskrcnn_r50_fpn")
    assert main(["train", "det_bench_gpu"]) == 2  # training a detection config is still det-train's
    assert "is a detection config" in capsys.readouterr().err
