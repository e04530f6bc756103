"""``iif det-bench`` on a version-2 benchmark (setting ``generator``): the rows are scored on the test split (val
kept for choosing), the detector starts from the cached pretraining unless ``model.backbone_weights`` is given,
settings.json records both, and a folder of another generator version is refused in one line before any work."""

import importlib.util
import json
import warnings

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("faster_coco_eval")
if importlib.util.find_spec("tidecv") is None:
    pytest.skip("tidecv is not installed", allow_module_level=True)

from iif.cli import main  # noqa: E402
from iif.detection import bench as B  # noqa: E402
from iif.detection import pretrain, synthetic  # noqa: E402
from iif.errors import IIFError  # noqa: E402

# test_detection_bench.TINY without max_val_images (set per test) and the backbone choice (the point here).
TINY = ["arch=maskrcnn_r10_fpn", "model.min_size=64", "model.max_size=64", "model.fpn_channels=32",
        "model.representation_size=64", "model.mask_layers=[16]", "model.box_detections_per_img=40",
        "model.rpn_pre_nms_top_n_test=100", "model.rpn_post_nms_top_n_test=40", "train.epochs=1",
        "train.batch_size=4", "train.warmup_iters=1", "train.milestones=[]", "max_train_images=20", "threads=1"]
# A pretraining of ~1 CPU-second (tests/test_detection_pretrain.py's TINY).
TINY_PRETRAIN = dict(per_class=12, epochs=1, size=16, batch_size=32, warmup_iters=2, test_per_class=3)


@pytest.fixture(scope="module")
def v2(detection_sources, tmp_path_factory):
    """A tiny generator-2 benchmark (train/val/test) for this module; read-only here."""
    out = tmp_path_factory.mktemp("bench-v2") / "bench"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synthetic.make_benchmark(out, seed=5, generator=2, sources=detection_sources, image_size=64, num_train=171,
                                 num_val=40, num_test=80)
    return out


def _ids(path) -> list[int]:
    return [im["id"] for im in json.loads(path.read_text())["images"]]


@pytest.mark.slow
def test_a_v2_run_is_scored_on_test_and_records_generator_and_pretrained_start(v2, tmp_path, monkeypatch,
                                                                               detection_sources):
    monkeypatch.setattr(pretrain, "PRETRAIN_DEFAULTS", {**pretrain.PRETRAIN_DEFAULTS, **TINY_PRETRAIN})
    monkeypatch.setattr(synthetic, "_load_sources", lambda root, download: detection_sources)
    scored = []  # the image ids of the ground truth each row was evaluated against
    evaluate = B._evaluate

    def spy(val_json, results, *args, **kwargs):
        scored.append(([im["id"] for im in val_json["images"]], {r["image_id"] for r in results}))
        return evaluate(val_json, results, *args, **kwargs)

    monkeypatch.setattr(B, "_evaluate", spy)
    out = tmp_path / "o"
    B.run_det_bench(v2, quick=True, out=out, overrides=TINY + ["max_val_images=6"], plots=False, log=lambda m: None)

    test_ids, val_ids = _ids(v2 / "annotations" / "test.json"), _ids(v2 / "annotations" / "val.json")
    # the reported rows (post-hoc, then the tuned rows' single test scoring) are scored on test; the tuned rows'
    # selection (tests/test_detection_tuned_rows.py) on val, capped by max_val_images too
    on_test = [x for x in scored if set(x[0]) <= set(test_ids)]
    on_val = [x for x in scored if set(x[0]) <= set(val_ids)]
    assert len(on_test) == len(B.POSTHOC_ROWS) + len(B.TUNE_GRIDS) and len(on_test) + len(on_val) == len(scored)
    for gt_ids, det_ids in scored:
        assert len(gt_ids) == 6 and not (set(gt_ids) & set(val_ids) and set(gt_ids) & set(test_ids))
        assert det_ids <= set(gt_ids)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["generator"] == 2
    assert settings["settings"]["model"]["backbone_weights"] == "pretrained"
    meta = settings["meta"]
    assert meta["eval_split"] == "test" and meta["num_val_images"] == 6
    assert meta["data_paths"]["data.val_json"] == str(v2 / "annotations" / "test.json")
    assert meta["tune_paths"] == [str(v2 / "annotations" / "val.json"), str(v2 / "images" / "val")]
    report = (out / "report.md").read_text()
    assert "6 test images" in report and "on the test split" in report and "validation" not in report.split(
        "## Results")[0]
    assert "backbone started from `pretrained`" in report and "from scratch" not in report
    # the pretraining the detector started from is the one of this benchmark, built into the cache
    built = list(pretrain.pretrain_cache_root().glob("v2-seed5-r10-*/backbone.pth"))
    assert len(built) == 1


class _Stop(Exception):
    pass


def _settings_before_training(data, overrides, monkeypatch, out):
    """The settings and data det-bench has resolved when it is about to train (stopped at the memory check)."""
    seen = {}

    def stop(s, d, device):
        seen.update(s=s, d=d)
        raise _Stop

    monkeypatch.setattr(B, "_check_memory", stop)
    with pytest.raises(_Stop):  # stopped before the staging folder: nothing is written
        B.run_det_bench(data, quick=True, out=out, overrides=overrides, log=lambda m: None)
    return seen["s"], seen["d"]


def test_backbone_default_follows_the_generator_and_an_explicit_value_wins(v2, detection_benchmark, monkeypatch,
                                                                            tmp_path):
    s, d = _settings_before_training(v2, TINY, monkeypatch, tmp_path / "o")
    assert (s.generator, s.model["backbone_weights"], d.eval_split) == (2, "pretrained", "test")
    assert [str(p) for p in d.tune_paths] == [str(v2 / "annotations" / "val.json"), str(v2 / "images" / "val")]
    # TINY names a Mask R-CNN: kept, with class-agnostic masks
    assert (s.arch, s.model["class_agnostic_mask"], s.rfs_threshold, s.rfs_rounding) == (
        "maskrcnn_r10_fpn", True, 0.2, "stochastic")
    assert B.V2_DEFAULTS == {"arch": "fasterrcnn_r10_fpn", "model.backbone_weights": "pretrained",
                             "model.class_agnostic_mask": True, "rfs_threshold": 0.2}
    no_arch = [o for o in TINY if not o.startswith("arch=")]
    s, _ = _settings_before_training(v2, no_arch, monkeypatch, tmp_path / "o")  # the v2 default detector: boxes
    assert (s.arch, s.model.get("class_agnostic_mask"), s.rfs_threshold) == ("fasterrcnn_r10_fpn", None, 0.2)
    s, _ = _settings_before_training(v2, TINY + ["model.backbone_weights=none", "model.class_agnostic_mask=false",
                                                 "rfs_threshold=null"], monkeypatch, tmp_path / "o")
    # from scratch, per-category masks and plain sampling on v2 when asked
    assert (s.model["backbone_weights"], s.model["class_agnostic_mask"], s.rfs_threshold) == ("none", False, None)
    s, d = _settings_before_training(detection_benchmark[0], TINY, monkeypatch, tmp_path / "o")  # v1: as recorded
    assert s.generator == 1 and s.model.get("backbone_weights") is None
    assert s.model.get("class_agnostic_mask") is None and s.rfs_threshold is None
    assert d.eval_split == "val" and d.tune_paths == ()
    assert str(d.paths[2]) == str(detection_benchmark[0] / "annotations" / "val.json")
    # explicit val paths on a v2 folder are taken as given (the caller chose the split)
    s, d = _settings_before_training(None, TINY + [f"data.train_json={v2}/annotations/train.json",
                                                   f"data.train_images={v2}/images/train",
                                                   f"data.val_json={v2}/annotations/val.json",
                                                   f"data.val_images={v2}/images/val"], monkeypatch, tmp_path / "o")
    assert s.generator == 2 and d.eval_split == "val" and str(d.paths[2]).endswith("val.json")


@pytest.mark.parametrize("which, setting, fix", [
    ("v1", "generator=2", "iif det-data --generator 2"),
    ("v2", "generator=1", "iif det-data --generator 1"),
])
def test_a_folder_of_another_generator_version_is_refused_in_one_line(which, setting, fix, v2, detection_benchmark,
                                                                      tmp_path, capsys):
    data = v2 if which == "v2" else detection_benchmark[0]
    out = tmp_path / "o"
    code = main(["det-bench", "--data", str(data), "--out", str(out), *TINY, setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("iif det-bench: error:") and "generator version" in err[0] and fix in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("value", ["3", "0", "true", "two"])
def test_generator_values_outside_1_2_are_refused(value, detection_benchmark, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["det-bench", "--data", str(detection_benchmark[0]), "--out", str(out), f"generator={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "generator" in err[0] and "generator=2" in err[0], err
    assert not out.exists()


def test_generator_on_data_that_is_no_benchmark_is_refused(detection_benchmark, tmp_path):
    root = detection_benchmark[0]
    paths = [f"data.train_json={root}/annotations/train.json", f"data.train_images={root}/images/train",
             f"data.val_json={root}/annotations/val.json", f"data.val_images={root}/images/val"]
    import shutil

    copy = tmp_path / "plain"  # the same files without BENCHMARK.json above them: a plain COCO-style json pair
    (copy / "a").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(root / "annotations" / f"{split}.json", copy / "a" / f"{split}.json")
    paths = [p.replace(f"{root}/annotations", str(copy / "a")) for p in paths]
    with pytest.raises(IIFError, match="not an `iif det-data` folder.*leave generator out"):
        B.run_det_bench(None, quick=True, out=tmp_path / "o", overrides=TINY + paths + ["generator=1"],
                        log=lambda m: None)
    assert not (tmp_path / "o").exists()


def test_the_cache_folder_is_per_version_and_v1_keeps_its_path(monkeypatch, tmp_path):
    monkeypatch.setenv("IIF_CACHE_DIR", str(tmp_path))
    assert B.default_benchmark_dir() == tmp_path / "det-data" / f"v{synthetic.DEFAULT_GENERATOR}-seed0"
    assert B.default_benchmark_dir(generator=1) == tmp_path / "det-data" / "v1-seed0"  # every recorded run's
    assert B.default_benchmark_dir(3, generator=2) == tmp_path / "det-data" / "v2-seed3"


@pytest.mark.parametrize("setting, words", [
    ("rfs_threshold=2", "rfs_threshold must be in (0, 1]"),
    ("rfs_threshold=0", "rfs_threshold must be in (0, 1]"),
    ("rfs_rounding=round", "rfs_rounding must be stochastic"),
    ("workers=0", "workers (seeds run side by side)"),
    ("model.class_agnostic_mask=maybe", "class_agnostic_mask' must be true or false"),
    ("pretrain_epochs=0", "pretrain_epochs must be a whole number >= 1"),
    ("pretrain_epochs=2.5", "pretrain_epochs must be a whole number >= 1"),
])
def test_new_v2_settings_out_of_range_are_one_line_before_any_work(setting, words, v2, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["det-bench", "--data", str(v2), "--out", str(out), *TINY, setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("arch, kind", [("fasterrcnn_r10_fpn", "box"), ("maskrcnn_r10_fpn", "mask")])
def test_report_names_box_ap_for_a_box_detector(arch, kind):
    """v2's default detector has no mask head, so the report's metric line must say box AP, not mask AP."""
    from iif.detection import report as R

    s = B.quick_settings("cpu-quick", [f"arch={arch}"])
    meta = {"data": "d", "num_train_images": 10, "num_val_images": 5, "device": "cpu", "torch": "x", "wall_s": 1.0,
            "peak_rss_mb": 1.0, "date": "2026-12-06"}
    lines = R._setup_lines(s, meta, [{"details": [{"rules": "lvis"}]}], 16, {"r": 5, "c": 5, "f": 6}, "test")
    metric = next(line for line in lines if line.startswith("- AP, AP50"))
    assert f"LVIS-style {kind} AP" in metric and ("mask AP" in metric) == (kind == "mask")


def test_pretrain_epochs_reaches_the_cached_pretraining_and_the_default_is_four(v2, monkeypatch):
    """det-bench's pretrain_epochs goes to resolve_backbone_weights as the recipe's epochs (the recorded v2 rows of
    before 2026-12-06 09:30 UTC used 2); unset, the recipe's default (4 epochs) applies."""
    calls = []
    monkeypatch.setattr(pretrain, "resolve_backbone_weights",
                        lambda weights, **kw: calls.append(kw) or "/weights.pth")
    data = type("D", (), {"benchmark": {"generator_version": 2}, "paths": [v2 / "annotations" / "train.json"]})()
    for extra, want in (([], None), (["pretrain_epochs=2"], 2)):
        s = B.quick_settings("cpu-quick", ["model.backbone_weights=pretrained", *extra])
        assert B._model_kwargs(s, data, lambda m: None)["backbone_weights"] == "/weights.pth"
        assert calls[-1].get("epochs") == want and str(calls[-1]["data_root"]) == str(v2)
    assert pretrain.PRETRAIN_DEFAULTS["epochs"] == 4


def test_det_bench_device_goes_through_the_shared_resolution(v2, tmp_path, capsys, monkeypatch):
    """--device is resolved by iif.runtime.resolve_device, as det-train's: a name torch does not know is one line
    and exit 2 before any work; auto is cpu on a machine without CUDA (the settings handed to the run say so)."""
    out = tmp_path / "o"
    code = main(["det-bench", "--data", str(v2), "--out", str(out), "--device", "gpu0", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not a device name" in err[0], err
    assert not out.exists()
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    seen = {}

    class _Stop(Exception):
        pass

    def stop(s, d, device):
        seen["device"] = (s.device, device)
        raise _Stop

    monkeypatch.setattr(B, "_check_memory", stop)
    with pytest.raises(_Stop):
        B.run_det_bench(v2, quick=True, out=out, device="auto", overrides=TINY, log=lambda m: None)
    assert seen["device"] == ("cpu", "cpu")


def test_det_bench_fits_the_cpu_quick_preset_to_a_yolov3_arch(v2):
    """arch=yolov3_* on the R-CNN preset: the preset's FPN anchors are dropped (YOLOv3 keeps its own 3 x 3) unless
    the command sets model.anchor_sizes, and on v2 the ResNet pretraining default is not given to a Darknet."""
    s = B.quick_settings("cpu-quick", ["arch=yolov3_tiny_cpu"])
    assert "anchor_sizes" not in s.model
    assert B.quick_settings("cpu-quick", ["arch=maskrcnn_r10_fpn"]).model["anchor_sizes"] == ((16,), (32,), (64,), (128,))
    mine = [[10, 16, 33], [30, 62, 59], [116, 156, 373]]
    assert B.quick_settings("cpu-quick", ["arch=yolov3_tiny_cpu", f"model.anchor_sizes={mine}"]).model["anchor_sizes"] == tuple(map(tuple, mine))
    B._apply_v2_defaults(s, {"arch"}, lambda m: None)
    assert s.model.get("backbone_weights") is None and s.rfs_threshold == 0.2
    s = B.quick_settings("cpu-quick", ["arch=cascade_maskrcnn_r10_fpn"])
    B._apply_v2_defaults(s, {"arch"}, lambda m: None)
    assert s.model["backbone_weights"] == "pretrained"
