"""iif.detection.models / engine: detectors build without downloads, checkpoints load with weights_only=True,
training resumes exactly, predict writes LVIS/COCO result dicts."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from iif.detection.data import collate
from iif.detection.engine import DetectionSchedule, predict, train_detector
from iif.detection.models import ARCHS, DETECTION_PRESETS, build_detector, load_detector_checkpoint
from iif.errors import IIFError

TINY = dict(min_size=64, max_size=64, returned_layers=(3, 4), anchor_sizes=((16,), (32,), (64,)), fpn_channels=16,
            representation_size=32, mask_layers=(16,), rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
            rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, rpn_batch_size_per_image=32,
            box_batch_size_per_image=16, box_detections_per_img=10)


class TinyScenes(torch.utils.data.Dataset):
    """Four 64-px images with one or two filled squares of categories 1..3 (json ids 10, 20, 30)."""

    category_ids = [10, 20, 30]

    def __init__(self, n: int = 4) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            img = torch.rand(3, 64, 64, generator=g) * 0.2
            boxes, labels, masks = [], [], []
            for j in range(1 + i % 2):
                x0, y0 = 4 + 28 * j, 6 + 3 * i
                img[:, y0:y0 + 20, x0:x0 + 20] = 0.9
                m = torch.zeros(64, 64, dtype=torch.uint8)
                m[y0:y0 + 20, x0:x0 + 20] = 1
                boxes.append([x0, y0, x0 + 20, y0 + 20])
                labels.append(1 + (i + j) % 3)
                masks.append(m)
            self.items.append((img, {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                     "labels": torch.tensor(labels), "masks": torch.stack(masks),
                                     "image_id": 100 + i}))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def tiny(arch: str = "maskrcnn_r10_fpn", num_classes: int = 3, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_detector(arch, num_classes, **{**TINY, **kw})


# ----------------------------------------------------------------------------------------------- build


@pytest.mark.parametrize("arch", ["maskrcnn_r18_fpn", "fasterrcnn_r50_fpn", "maskrcnn_r101_fpn"])
def test_rcnn_builds_without_download_with_trainable_norm(arch, monkeypatch):
    from torchvision.ops.misc import FrozenBatchNorm2d

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("build_detector tried to download weights"))
    with torch.device("meta"):  # the structure without filling tens of millions of weights (see below)
        model = build_detector(arch, 7, min_size=128, max_size=128)
    assert model.roi_heads.box_predictor.cls_score.out_features == 8  # 7 foreground + background at 0
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 32
    assert model.roi_heads.has_mask() == arch.startswith("maskrcnn")
    if arch.startswith("maskrcnn"):
        assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 8
    norms = [m for m in model.backbone.body.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and all(type(m) is nn.BatchNorm2d for m in norms)  # from scratch: real, trainable BN
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    assert model.roi_heads.detections_per_img == 300 and model.roi_heads.score_thresh == 1e-4


def test_norm_choices_and_masks_off():
    from torchvision.ops.misc import FrozenBatchNorm2d

    gn = tiny(norm="gn")
    assert any(isinstance(m, nn.GroupNorm) for m in gn.backbone.body.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.backbone.body.modules())
    frozen = tiny(norm="frozen_bn", trainable_layers=3)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.backbone.body.modules())
    assert not frozen.backbone.body.conv1.weight.requires_grad and frozen.backbone.body.layer2[0].conv1.weight.requires_grad
    assert not tiny(masks=False).roi_heads.has_mask()


def test_ssd_builds_with_lvis_detection_settings():
    # On the meta device: every module, shape and setting as on the CPU, but no weight is initialised
    # (random init of SSD300's 24M weights is ~1.5 CPU-s and nothing here reads a value).
    with torch.device("meta"):
        model = build_detector("ssd300_vgg16", 5)
    assert model.head.classification_head.num_columns == 6
    assert model.detections_per_img == 300 and model.score_thresh == 1e-4


def test_tiny_mask_rcnn_trains_a_step_and_returns_all_losses():
    model = tiny()
    images, targets = collate([TinyScenes()[i] for i in range(2)])
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_build_bad_input():
    with pytest.raises(IIFError, match="unknown detector arch"):
        build_detector("maskrcnn_r5_fpn", 3)
    with pytest.raises(IIFError, match="num_classes"):
        build_detector("maskrcnn_r18_fpn", 0)
    with pytest.raises(IIFError, match="unknown norm"):
        build_detector("maskrcnn_r18_fpn", 3, norm="ln")
    with pytest.raises(IIFError, match="anchor_sizes has 2 levels"):
        build_detector("maskrcnn_r18_fpn", 3, anchor_sizes=((16,), (32,)))
    with pytest.raises(IIFError, match="does not exist"):
        build_detector("maskrcnn_r18_fpn", 3, checkpoint="/nonexistent/model.pth")
    assert set(ARCHS) >= {"maskrcnn_r18_fpn", "maskrcnn_r50_fpn", "maskrcnn_r101_fpn", "fasterrcnn_r18_fpn",
                          "fasterrcnn_r50_fpn", "ssd300_vgg16"}


@pytest.mark.parametrize("name", sorted(DETECTION_PRESETS))
def test_presets_build(name):
    preset = DETECTION_PRESETS[name]
    with torch.device("meta"):  # structure only, as above
        model = build_detector(preset["arch"], 20, **preset["model"])
    assert model.roi_heads.box_predictor.cls_score.out_features == 21
    assert set(preset["train"]) <= set(train_detector.__code__.co_varnames[:train_detector.__code__.co_argcount
                                                                           + train_detector.__code__.co_kwonlyargcount])


# ----------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("wrap", [False, True])
def test_checkpoint_round_trip_adapts_class_specific_layers(tmp_path, wrap):
    src = tiny(num_classes=5, seed=1, norm="frozen_bn")
    path = tmp_path / "model.pth"
    sd = src.state_dict()
    torch.save({"model": sd, "epoch": 3} if wrap else sd, path)

    same = build_detector("maskrcnn_r10_fpn", 5, checkpoint=path, **TINY, log=lambda s: None)
    for k, v in same.state_dict().items():
        assert torch.equal(v, sd[k]), k

    lines = []
    other = build_detector("maskrcnn_r10_fpn", 2, checkpoint=path, **TINY, log=lines.append)
    skipped = {"roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
               "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias",
               "roi_heads.mask_predictor.mask_fcn_logits.weight", "roi_heads.mask_predictor.mask_fcn_logits.bias"}
    for k, v in other.state_dict().items():
        if k in skipped:
            assert v.shape != sd[k].shape
        else:
            assert torch.equal(v, sd[k]), k
    assert len(lines) == 1 and all(k in lines[0] for k in skipped)
    report = load_detector_checkpoint(tiny(num_classes=2, norm="frozen_bn"), path, log=lambda s: None)
    assert {s.split(" ")[0] for s in report["skipped"]} == skipped


def test_checkpoint_of_another_arch_or_with_code_is_refused(tmp_path):
    path = tmp_path / "r10.pth"
    torch.save(tiny(norm="frozen_bn").state_dict(), path)
    with pytest.raises(IIFError, match="does not fit"):
        build_detector("maskrcnn_r18_fpn", 3, checkpoint=path, **TINY)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(IIFError):
        build_detector("maskrcnn_r10_fpn", 3, checkpoint=bad, **TINY)


# ----------------------------------------------------------------------------------------------- training


def test_schedule_warmup_and_steps_by_hand():
    s = DetectionSchedule(iters_per_epoch=10, warmup_iters=4, milestones=(2, 3), gamma=0.1, warmup_factor=0.2)
    assert s(0) == pytest.approx(0.2)
    assert s(2) == pytest.approx(0.2 + 0.8 * 2 / 4)
    assert s(4) == s(19) == 1.0
    assert s(20) == pytest.approx(0.1) and s(29) == pytest.approx(0.1)
    assert s(30) == pytest.approx(0.01)


KW = dict(batch_size=2, lr=0.01, warmup_iters=2, milestones=(2,), clip_grad_norm=5.0, device="cpu", seed=3)


def test_resume_is_exact(tmp_path):
    ds = TinyScenes()
    quiet = lambda s: None  # noqa: E731
    full = tiny()
    r_full = train_detector(full, ds, epochs=2, out_dir=tmp_path / "a", log=quiet, **KW)
    assert [row["epoch"] for row in r_full["history"]] == [1, 2] and r_full["finished"]

    first = tiny()
    r1 = train_detector(first, ds, epochs=2, out_dir=tmp_path / "b", stop_after_epoch=1, log=quiet, **KW)
    assert not r1["finished"] and r1["epochs_done"] == 1
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=True)  # everything in it is plain data
    assert ckpt["epoch"] == 1 and isinstance(ckpt["rng_per_rank"][0]["torch"], torch.Tensor)

    resumed = tiny(seed=99)  # other init: every weight must come from the checkpoint
    lines = []
    r2 = train_detector(resumed, ds, epochs=2, out_dir=tmp_path / "b", resume=True, log=lines.append, **KW)
    assert any("resumed" in ln for ln in lines)
    assert [row["epoch"] for row in r2["history"]] == [1, 2]
    assert r2["history"][1]["loss"] == r_full["history"][1]["loss"]
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    with pytest.raises(IIFError, match="other settings"):
        train_detector(tiny(), ds, epochs=3, out_dir=tmp_path / "b", resume=True, log=quiet, **{**KW, "lr": 0.02})


class _NaNDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, images, targets=None):
        return {"loss_classifier": self.w.sum() * float("nan"), "loss_box_reg": self.w.sum()}


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(IIFError, match=r"not finite at epoch 1, iteration 1 .*loss_classifier=nan.*Lower lr"):
        train_detector(_NaNDetector(), TinyScenes(), epochs=1, batch_size=2, lr=0.1, out_dir=tmp_path, log=lambda s: None)
    assert torch.load(tmp_path / "nan.pt", weights_only=True)["nan_step"] == 0


def test_train_bad_input():
    ds = TinyScenes()
    with pytest.raises(IIFError, match="batch_size"):
        train_detector(tiny(), ds, epochs=1, batch_size=0, lr=0.1)
    with pytest.raises(IIFError, match="lr must be"):
        train_detector(tiny(), ds, epochs=1, batch_size=2, lr=float("nan"))
    with pytest.raises(IIFError, match="empty"):
        train_detector(tiny(), [], epochs=1, batch_size=2, lr=0.1)
    with pytest.raises(IIFError, match="amp"):
        train_detector(tiny(), ds, epochs=1, batch_size=2, lr=0.1, amp="fp8")


def test_epoch_sampler_is_used_and_set_each_epoch():
    class Recording(torch.utils.data.Sampler):
        def __init__(self):
            self.epochs = []

        def set_epoch(self, e):
            self.epochs.append(e)

        def __iter__(self):
            return iter([0, 1])

        def __len__(self):
            return 2

    sampler = Recording()
    r = train_detector(tiny(), TinyScenes(), epochs=2, batch_size=2, lr=0.01, sampler=sampler, log=lambda s: None)
    assert sampler.epochs == [0, 1] and [row["images"] for row in r["history"]] == [2, 2]


# ----------------------------------------------------------------------------------------------- predict


def test_predict_writes_result_dicts_with_json_ids_and_rle():
    ds = TinyScenes()
    model = tiny()
    model.roi_heads.score_thresh = 0.0
    res = predict(model, ds, device="cpu", batch_size=3)
    assert res, "an untrained detector with score_thresh 0 still returns detections"
    assert {r["image_id"] for r in res} <= {100, 101, 102, 103}
    assert {r["category_id"] for r in res} <= {10, 20, 30}
    for r in res[:20]:
        assert set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"}
        x, y, w, h = r["bbox"]
        assert w >= 0 and h >= 0 and 0 <= x <= 64 and 0 <= y <= 64
        assert isinstance(r["segmentation"]["counts"], str) and r["segmentation"]["size"] == [64, 64]
    # same detections as calling the model directly
    model.eval()
    with torch.no_grad():
        direct = model([ds[0][0]])[0]
    mine = sorted(r["score"] for r in res if r["image_id"] == 100)
    assert mine == pytest.approx(sorted(direct["scores"].tolist()))
    boxes_only = predict(model, ds, device="cpu", batch_size=4, masks=False)
    assert "segmentation" not in boxes_only[0] and len(boxes_only) == len(res)
