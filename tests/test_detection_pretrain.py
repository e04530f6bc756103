"""The detectors' pretrained start: ``build_detector(backbone_weights=...)``, ``model.backbone_weights`` of the det
configs (bad input: one line, exit 2, nothing written) and the cached balanced pretraining
(:mod:`iif.detection.pretrain`) at a tiny size on the stand-in sources."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from torchvision.models import resnet  # noqa: E402

from iif.cli import main  # noqa: E402
from iif.detection import pretrain  # noqa: E402
from iif.detection.models import build_detector  # noqa: E402
from iif.errors import IIFError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

# Sizes that build in well under a second.
SMALL = dict(min_size=64, max_size=64, fpn_channels=16, representation_size=32, mask_layers=(8,),
             box_detections_per_img=20)
# A pretraining of ~1 CPU-second: 20 classes x 12 images of 16 px, one epoch.
TINY = dict(per_class=12, epochs=1, size=16, batch_size=32, warmup_iters=2, test_per_class=3)


def _r10() -> torch.nn.Module:
    """The cpu-quick preset's backbone as torchvision builds it: BasicBlock ResNet, one block per stage."""
    return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1])


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


# ----------------------------------------------------------------------------------------- loading a file
@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_a_torchvision_resnet_file_loads_into_the_backbone_by_value(tmp_path, norm):
    torch.manual_seed(1)
    net = resnet.resnet18(num_classes=7)  # torchvision's own builder; fc of another class count
    with torch.no_grad():  # non-default running statistics, so the buffers are checked too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = _save(net.state_dict(), tmp_path / "r18.pth")
    lines = []
    model = build_detector("maskrcnn_r18_fpn", 3, backbone_weights=str(path), norm=norm, log=lines.append, **SMALL)
    body = model.backbone.body.state_dict()
    file = torch.load(path, weights_only=True)  # read again, independently of the loader
    compared = 0
    for key, value in file.items():
        if key.startswith("fc."):
            assert key not in body  # the classification head has no place in the detector
            continue
        if key.endswith("num_batches_tracked") and norm == "frozen_bn":
            assert key not in body  # FrozenBatchNorm2d keeps no count
            continue
        assert torch.equal(body[key], value), key
        compared += 1
    # 20 conv weights + 20 BN x 4 tensors of ResNet-18 (downsample convs/BNs included), + 20 BN counts with bn
    assert compared == (120 if norm == "bn" else 100)
    assert any("ignored fc.bias, fc.weight" in line for line in lines), lines
    # the file's stages train or not as torchvision's fine-tuning default: 3 of 5 with weights
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad
    assert not model.backbone.body.conv1.weight.requires_grad


def test_a_file_without_the_fc_head_loads_and_stages_outside_the_fpn_are_checked(tmp_path):
    torch.manual_seed(2)
    net = _r10()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    path = _save(state, tmp_path / "r10.pth")
    model = build_detector("fasterrcnn_r10_fpn", 3, backbone_weights=str(path), norm="bn",
                           returned_layers=(2, 3), anchor_sizes=((16,), (32,), (64,)), log=lambda s: None,
                           **{k: v for k, v in SMALL.items() if k != "mask_layers"})
    assert torch.equal(model.backbone.body.conv1.weight, net.conv1.weight)
    assert torch.equal(model.backbone.body.layer3[0].bn2.running_var, net.layer3[0].bn2.running_var)
    assert torch.equal(model.backbone.body.layer3[0].bn2.running_var, net.layer3[0].bn2.running_var)
    # layer4 is not used by an FPN on stages 2-3, but a file must still hold it: a truncated file is refused
    del state["layer4.0.conv2.weight"]
    _save(state, path)
    with pytest.raises(IIFError, match=r"the file has no layer4\.0\.conv2\.weight"):
        build_detector("fasterrcnn_r10_fpn", 3, backbone_weights=str(path), norm="bn", returned_layers=(2, 3),
                       anchor_sizes=((16,), (32,), (64,)), log=lambda s: None)


def test_from_scratch_values_change_nothing():
    for value in (None, "none", "from_scratch"):
        torch.manual_seed(0)
        a = build_detector("fasterrcnn_r10_fpn", 2, backbone_weights=value, **{k: v for k, v in SMALL.items()
                                                                              if k != "mask_layers"})
        torch.manual_seed(0)
        b = build_detector("fasterrcnn_r10_fpn", 2, **{k: v for k, v in SMALL.items() if k != "mask_layers"})
        assert isinstance(a.backbone.body.bn1, torch.nn.BatchNorm2d)  # from scratch: trainable BN, as before
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---------------------------------------------------------------------------------- bad input, through the CLI
@pytest.fixture(scope="module")
def bench(detection_benchmark):
    return detection_benchmark[0]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(argv: list[str], capsys, *read: Path) -> str:
    before = {k: v for r in read for k, v in _hashes(r).items()}
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    assert "Traceback" not in err[0]
    assert {k: v for r in read for k, v in _hashes(r).items()} == before
    return err[0]


def _det_train(bench: Path, out: Path, weights: str, *extra: str) -> list[str]:
    return ["det-train", "det_bench_softmax", f"data.root={bench}", "runtime.workers=0", "data.max_train_images=8",
            "data.max_val_images=4", f"model.backbone_weights={weights}", *extra, "--out", str(out), "--quiet"]


@pytest.mark.parametrize("case", ["r18_for_r50", "r18_for_r10", "text_file", "list_file", "missing", "unknown_name",
                                  "name_for_another_depth", "groupnorm", "ssd"])
def test_bad_backbone_weights_are_one_line_before_training(case, bench, tmp_path, capsys):
    out = tmp_path / "run"
    extra: list[str] = []
    weights_dir = tmp_path / "w"
    weights_dir.mkdir()
    r18 = _save(resnet.resnet18().state_dict(), weights_dir / "r18.pth")
    if case == "r18_for_r50":
        weights, extra = str(r18), ["model.arch=maskrcnn_r50_fpn"]
        want = ["r18.pth", "layer1.0.conv1.weight is (64, 64, 3, 3) in the file but (64, 64, 1, 1) in the model",
                "ResNet-50"]
    elif case == "r18_for_r10":  # same shapes where both have a tensor, but ResNet-18 has a second block per stage
        weights, want = str(r18), ["the file has layer1.1.conv1.weight, which the model has not", "ResNet-10"]
    elif case == "text_file":
        weights = str(weights_dir / "notes.pth")
        Path(weights).write_text("not weights\n")
        want = ["notes.pth cannot be read as a weights file", "torchvision-format ResNet state dict"]
    elif case == "list_file":
        weights = str(_save([torch.zeros(2)], weights_dir / "list.pth"))
        want = ["list.pth is not a state dict of tensors (it holds list)"]
    elif case == "missing":
        weights, want = str(weights_dir / "absent.pth"), ["absent.pth does not exist", "null (from scratch)"]
    elif case == "unknown_name":
        weights, want = "ResNet50_Weights.IMAGENET9K_V7", ["unknown torchvision weights name", "IMAGENET1K_V1"]
    elif case == "name_for_another_depth":
        weights, extra = "ResNet18_Weights.IMAGENET1K_V1", ["model.arch=maskrcnn_r50_fpn"]
        want = ["ResNet18_Weights.IMAGENET1K_V1 are for another network than the ResNet-50",
                "use ResNet50_Weights.IMAGENET1K_V1"]
    elif case == "groupnorm":  # the right depth, but BatchNorm statistics for a GroupNorm backbone
        weights, extra = str(r18), ["model.arch=maskrcnn_r18_fpn", "model.norm=gn"]
        want = ["BatchNorm statistics (bn1.running_mean, ...)", "norm bn or frozen_bn"]
    else:
        weights, extra = str(r18), ["model.arch=ssd300_vgg16"]
        want = ["model.backbone_weights", "ssd300_vgg16", "model.backbone_weights=null"]
    line = _one_line(_det_train(bench, out, weights, *extra), capsys, bench, weights_dir)
    assert line.startswith("iif det-train: error: "), line
    for w in want:
        assert w in line, (w, line)
    assert not out.exists()  # refused before the run folder (and any training)


def test_pretrained_keyword_needs_a_benchmark(bench, tmp_path, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(bench, plain)
    (plain / "BENCHMARK.json").unlink()  # the same jsons and images, but not an iif det-data folder
    argv = _det_train(plain, tmp_path / "run", "pretrained")
    argv.remove(f"data.root={plain}")
    argv[2:2] = [f"data.train_json={plain / 'annotations' / 'train.json'}", f"data.train_images={plain / 'images' / 'train'}",
                 f"data.val_json={plain / 'annotations' / 'val.json'}", f"data.val_images={plain / 'images' / 'val'}"]
    line = _one_line(argv, capsys, plain)
    assert "needs an iif det-data benchmark" in line and "null (from scratch)" in line, line


# ----------------------------------------------------------------------------------------------- pretraining
def test_pretraining_is_deterministic_for_a_seed_and_keeps_the_callers_rng(fake_detection_sources):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, meta = pretrain.pretrain_backbone(depth="r10", seed=5, sources=fake_detection_sources, log=lambda s: None,
                                         **TINY)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    b, _ = pretrain.pretrain_backbone(depth="r10", seed=5, sources=fake_detection_sources, log=lambda s: None,
                                      **TINY)
    c, _ = pretrain.pretrain_backbone(depth="r10", seed=6, sources=fake_detection_sources, log=lambda s: None,
                                      **TINY)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])
    # the format of torchvision's ResNet state dicts: the same keys and shapes, fc for the 20 source classes
    ref = _r10().state_dict()
    assert [k for k in ref if not k.startswith("fc.")] == [k for k in a if not k.startswith("fc.")]
    assert all(a[k].shape == ref[k].shape for k in ref if not k.startswith("fc."))
    assert a["fc.weight"].shape == (20, 512)
    assert meta["train_images"] == 20 * TINY["per_class"] and meta["test_images"] == 20 * TINY["test_per_class"]
    assert 0 <= meta["test_accuracy"] <= 1


def test_pretraining_uses_train_sources_only_and_skips_those_an_evaluation_split_records(fake_detection_sources,
                                                                                        bench, tmp_path):
    assert pretrain.excluded_sources(bench) == {}  # generator 1 draws its val objects from the test splits
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    val_path = copy / "annotations" / "val.json"
    val = json.loads(val_path.read_text())
    val["annotations"][0]["source"] = ["mnist", "train", 7]
    val["annotations"][1]["source"] = ["fashion-mnist", "train", 11]
    val_path.write_text(json.dumps(val))
    exclude = pretrain.excluded_sources(copy)
    assert exclude == {"mnist": {7}, "fashion-mnist": {11}}
    # which images the picker takes: write each train image's index into its first two pixels, read them back
    sources = {}
    for name, (tr, trl, te, tel) in fake_detection_sources.items():
        tr = tr.copy()
        tr[:, 0, 0], tr[:, 0, 1] = np.arange(len(tr)) % 256, np.arange(len(tr)) // 256
        sources[name] = (tr, trl, te, tel)
    glyphs, labels = pretrain._pick(sources, "train", 200, np.random.default_rng(0), exclude)  # all 200 per class
    classes = pretrain._classes()
    taken: dict[str, set] = {name: set() for name in sources}
    for g, c in zip(glyphs, labels):
        taken[classes[int(c)][0]].add(int(g[0, 0]) + 256 * int(g[0, 1]))
    assert 7 not in taken["mnist"] and 11 not in taken["fashion-mnist"]
    assert len(taken["mnist"]) == 1999 and len(taken["fashion-mnist"]) == 1999  # every other train image


def test_pretraining_is_cached_once_and_loads_into_build_detector(fake_detection_sources, bench, monkeypatch):
    calls = []
    real = pretrain.pretrain_backbone

    def counted(**kw):
        calls.append(kw["seed"])
        return real(**kw)

    monkeypatch.setattr(pretrain, "pretrain_backbone", counted)
    path = pretrain.pretrained_backbone(bench, "r10", sources=fake_detection_sources, log=lambda s: None, **TINY)
    assert calls == [json.loads((bench / "BENCHMARK.json").read_text())["seed"]]  # seeded by the benchmark
    assert path.parent.parent == Path(os.environ["IIF_CACHE_DIR"]) / "det-pretrain"
    assert path.parent.name.startswith("v1-seed3-r10-")
    meta = json.loads((path.parent / "pretrain.json").read_text())
    assert meta["depth"] == "r10" and meta["settings"]["per_class"] == TINY["per_class"]
    mtime = path.stat().st_mtime_ns
    again = pretrain.pretrained_backbone(bench, "r10", sources=fake_detection_sources, log=lambda s: None, **TINY)
    assert again == path and path.stat().st_mtime_ns == mtime and len(calls) == 1  # not retrained
    other = pretrain.pretrained_backbone(bench, "r10", sources=fake_detection_sources, log=lambda s: None,
                                         **{**TINY, "per_class": 13})
    assert other != path and len(calls) == 2  # another recipe, another cache entry
    # the keyword resolves to the cached file (r10 of the arch), and it loads into the detector by value
    assert pretrain.resolve_backbone_weights("pretrained", arch="maskrcnn_r10_fpn", data_root=bench,
                                             sources=fake_detection_sources, **TINY) == str(path)
    assert len(calls) == 2
    model = build_detector("maskrcnn_r10_fpn", 20, backbone_weights=str(path), norm="bn", log=lambda s: None, **SMALL)
    file = torch.load(path, weights_only=True)
    body = model.backbone.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in file.items() if k in body)
    assert sum(k in body for k in file) == len([k for k in file if not k.startswith("fc.")])


def test_det_train_resolves_the_keyword_to_the_cached_pretraining(fake_detection_sources, bench, monkeypatch):
    """model.backbone_weights=pretrained in a det config builds (once) and loads the benchmark's pretraining; the
    detector's other tensors are initialised as without it (the pretraining leaves the seeded RNG alone)."""
    from iif.detection import synthetic
    from iif.detection.config import load_detection_config
    from iif.detection.runs import build_from_config

    monkeypatch.setattr(pretrain, "PRETRAIN_DEFAULTS", {**pretrain.PRETRAIN_DEFAULTS, **TINY})
    monkeypatch.setattr(synthetic, "_load_sources", lambda root, download: fake_detection_sources)
    small = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in SMALL.items()]
    cfg = load_detection_config("det_bench_softmax", [f"data.root={bench}", "model.backbone_weights=pretrained",
                                                      *small])
    torch.manual_seed(0)
    model = build_from_config(cfg, 20, None, log=lambda s: None)
    calls = []
    monkeypatch.setattr(pretrain, "pretrain_backbone", lambda **kw: calls.append(kw))
    path = pretrain.pretrained_backbone(bench, "r10")  # the entry det-train used (built then, read now)
    assert calls == []
    file = torch.load(path, weights_only=True)
    assert torch.equal(model.backbone.body.layer4[0].conv2.weight, file["layer4.0.conv2.weight"])
    assert isinstance(model.backbone.body.bn1, torch.nn.BatchNorm2d)  # det_bench_softmax's norm: bn
    torch.manual_seed(0)
    scratch = build_from_config(load_detection_config(cfg, ["model.backbone_weights=null"]), 20, None)
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, scratch.roi_heads.box_predictor.cls_score.weight)


def test_det_bench_resolves_the_keyword_for_the_benchmark_it_runs(fake_detection_sources, bench, monkeypatch):
    """iif det-bench model.backbone_weights=pretrained: the detector of each row gets the cached pretraining of the
    benchmark being run (its settings keep the keyword); other data has none."""
    from iif.detection import bench as det_bench
    from iif.detection import synthetic

    monkeypatch.setattr(pretrain, "PRETRAIN_DEFAULTS", {**pretrain.PRETRAIN_DEFAULTS, **TINY})
    monkeypatch.setattr(synthetic, "_load_sources", lambda root, download: fake_detection_sources)
    s = det_bench.quick_settings("cpu-quick", ["model.backbone_weights=pretrained"])
    assert s.model["backbone_weights"] == "pretrained"
    paths = (bench / "annotations" / "train.json", bench / "images" / "train", bench / "annotations" / "val.json",
             bench / "images" / "val")
    data = det_bench._Data(bench, None, None, {}, {"format": "iif-det-benchmark"}, paths)
    kw = det_bench._model_kwargs(s, data, lambda line: None)
    assert kw["backbone_weights"] == str(pretrain.pretrained_backbone(bench, "r10"))
    assert s.model["backbone_weights"] == "pretrained"
    with pytest.raises(IIFError, match="needs an iif det-data benchmark"):
        det_bench._model_kwargs(s, det_bench._Data(bench, None, None, {}, None, paths), lambda line: None)


def test_det_eval_rebuilds_a_pretrained_run_without_the_weights_file(bench, tmp_path):
    """det-eval's rebuild (load_checkpoint=False) loads no backbone weights (last.pt replaces every tensor; the
    file may be gone) but keeps the norm the weights gave in training: frozen BN unless model.norm says."""
    from iif.detection.config import load_detection_config
    from iif.detection.runs import build_from_config

    small = [f"model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in SMALL.items()]
    gone = str(tmp_path / "deleted.pth")
    for norm, cls in (("null", "FrozenBatchNorm2d"), ("bn", "BatchNorm2d")):
        cfg = load_detection_config("det_bench_softmax", [f"data.root={bench}", f"model.backbone_weights={gone}",
                                                          f"model.norm={norm}", *small])
        model = build_from_config(cfg, 20, None, log=lambda s: None, load_checkpoint=False)
        assert type(model.backbone.body.bn1).__name__ == cls
        with pytest.raises(IIFError, match="deleted.pth does not exist"):  # training would load it
            build_from_config(cfg, 20, None, log=lambda s: None)
