"""Cascade Mask R-CNN (iif.detection.cascade): training and inference at 64 px, the stage sampling and box
encoding against their formulas, the margin on every stage's classifier (IIF's w * z checked by hand in the loss
and at inference), the averaged test scores, and det-train -> det-eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torchvision")

from _detection_helpers import CASCADE_COUNTS, tiny_cascade  # noqa: E402
from _detection_helpers import CASCADE_TRAIN as TINY  # noqa: E402
from _detection_helpers import assert_ddp_grads_are_the_mean, ddp_and_single_process_grads  # noqa: E402
from _detection_helpers import box_iou as _iou  # noqa: E402
from _detection_helpers import capture_stage_logits as _capture  # noqa: E402
from _detection_helpers import cascade_batch as _batch  # noqa: E402
from _detection_helpers import decode_by_hand as _decode_by_hand  # noqa: E402
from _detection_helpers import full_and_resumed_runs, losses_with_default_and_unit_stage_weights  # noqa: E402
from _detection_helpers import raw_iif as _raw_iif  # noqa: E402
from _detection_helpers import record_samples  # noqa: E402
from _detection_helpers import stage_predictors as _stage_predictors  # noqa: E402

from iif.detection import build_detector  # noqa: E402
from iif.detection.cascade import STAGE_BOX_WEIGHTS, STAGE_IOUS, CascadeRoIHeads  # noqa: E402
from iif.detection.margins import MarginBoxPredictor, use_margin  # noqa: E402

COUNTS = CASCADE_COUNTS


def _model(seed: int = 0, **kw):
    return tiny_cascade("cascade_maskrcnn_r10_fpn", seed, **kw)


def test_builds_three_stages_and_trains_and_detects_at_64px():
    model = _model()
    rh = model.roi_heads
    assert isinstance(rh, CascadeRoIHeads) and rh.stage_ious == (0.5, 0.6, 0.7)
    assert rh.stage_loss_weights == (1.0, 0.5, 0.25)
    assert [c.weights for c in rh.stage_coders] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert all(p.cls_score.out_features == 4 and p.bbox_pred.out_features == 4 for p in _stage_predictors(model))
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    expected = {f"loss_{k}_s{t}" for k in ("classifier", "box_reg") for t in (1, 2, 3)}
    assert expected | {"loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for p in _stage_predictors(model):
        assert p.cls_score.weight.grad.abs().sum() > 0 and p.bbox_pred.weight.grad.abs().sum() > 0
    assert rh.box_head_3.fc6.weight.grad.abs().sum() > 0
    assert rh.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for r in out:
        n = len(r["boxes"])
        assert 0 < n <= 30 and r["masks"].shape == (n, 1, 64, 64) and set(r["labels"].tolist()) <= {1, 2, 3}
        assert bool(((r["scores"] > 0) & (r["scores"] <= 1)).all())


def test_stage_loss_weights_scale_each_stage():
    """The same seed with all stage weights 1: stage t's losses are exactly 1/lambda_t times the default's."""
    la, lb = losses_with_default_and_unit_stage_weights(_model)
    for t, lam in zip((1, 2, 3), (1.0, 0.5, 0.25)):
        for k in ("classifier", "box_reg"):
            assert torch.allclose(la[f"loss_{k}_s{t}"], lam * lb[f"loss_{k}_s{t}"], rtol=1e-6, atol=1e-9)
    assert la["loss_classifier_s2"] > 0


@pytest.mark.parametrize("t", [0, 1, 2])
def test_stage_sampling_labels_and_box_targets_by_hand(t):
    """Stage t: label = the gt's class iff the best IoU >= u_t (else background); the gt boxes are among the
    RoIs; the regression target is (wx (gx - px) / pw, wy (gy - py) / ph, ww ln(gw / pw), wh ln(gh / ph))
    with the stage's weights (Fast R-CNN's encoding)."""
    rh = _model().roi_heads
    _, targets = _batch()
    g = torch.Generator().manual_seed(2)
    proposals = []
    for tg in targets:  # jittered copies of the gts (a spread of IoUs) and random boxes
        jit = tg["boxes"].repeat(20, 1) + torch.randn(20 * len(tg["boxes"]), 4, generator=g) * 5
        rand = torch.rand(30, 2, generator=g) * 40
        proposals.append(torch.cat([jit, torch.cat([rand, rand + 8 + torch.rand(30, 2, generator=g) * 20], 1)]))
    proposals = [torch.cat([p[:, :2].clamp(0, 60), torch.maximum(p[:, 2:], p[:, :2].clamp(0, 60) + 2)], 1)
                 for p in proposals]
    torch.manual_seed(0)
    rois, labels, reg, matched, is_gt = rh.sample(t, proposals, targets)
    wx, wy, ww, wh = STAGE_BOX_WEIGHTS[t]
    u = STAGE_IOUS[t]
    seen_fg = seen_bg = 0
    for r_img, l_img, reg_img, g_img, tg in zip(rois, labels, reg, is_gt, targets):
        gts = tg["boxes"].tolist()
        for box in r_img[g_img].tolist():  # a RoI flagged as a gt box is one (the next stage drops it)
            assert box in gts
        for box, lab, d in zip(r_img.tolist(), l_img.tolist(), reg_img.tolist()):
            ious = [_iou(box, gb) for gb in gts]
            best = int(np.argmax(ious))
            if ious[best] >= u:
                seen_fg += 1
                assert lab == int(tg["labels"][best])
                gx0, gy0, gx1, gy1 = gts[best]
                pw, ph = box[2] - box[0], box[3] - box[1]
                px, py = box[0] + pw / 2, box[1] + ph / 2
                gw, gh = gx1 - gx0, gy1 - gy0
                want = [wx * ((gx0 + gw / 2) - px) / pw, wy * ((gy0 + gh / 2) - py) / ph,
                        ww * math.log(gw / pw), wh * math.log(gh / ph)]
                assert np.allclose(d, want, rtol=1e-4, atol=1e-4)
            else:
                seen_bg += 1
                assert lab == 0
        assert int((l_img > 0).sum()) <= int(0.25 * 48)  # positive fraction of the sampler
    assert seen_fg > len(targets) and seen_bg > 0


def test_iif_at_test_time_on_every_stage_and_the_averaged_scores():
    """use_margin('iif', when='test'): at inference every stage's logits are w * z (background weight 1); the
    cascade's scores are the mean of the three stages' softmaxes, computed here from the recorded z; every
    detection's score is one of them. In training mode the stages see z."""
    model = _model()
    use_margin(model, "iif", COUNTS, variant="raw", when="test")
    assert all(isinstance(p, MarginBoxPredictor) for p in _stage_predictors(model))
    w = torch.tensor(np.concatenate([[1.0], _raw_iif(COUNTS)]), dtype=torch.float32)
    raw, adjusted = _capture(model)
    images, targets = _batch()
    model.eval()
    rh = model.roi_heads
    scores_seen = []
    original = rh.cascade_scores
    rh.cascade_scores = lambda *a: scores_seen.append(original(*a)) or scores_seen[-1]
    with torch.no_grad():
        out = model(images)
    for t in range(3):
        assert len(raw[t]) == 1 and raw[t][0].shape[1] == 4
        assert torch.allclose(adjusted[t][0], raw[t][0] * w, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(adjusted[t][0], raw[t][0])
    mean = sum(torch.softmax(raw[t][0].double() * w.double(), dim=1) for t in range(3)) / 3
    scores = torch.cat(scores_seen[0][0])
    assert torch.allclose(scores.double(), mean, atol=1e-6)
    sizes = [len(s) for s in scores_seen[0][0]]
    for r, s_img in zip(out, mean.split(sizes)):
        for score, label in zip(r["scores"].tolist(), r["labels"].tolist()):
            assert (s_img[:, label] - score).abs().min() < 1e-6
    model.train()
    for t in range(3):
        raw[t].clear(), adjusted[t].clear()
    model(images, targets)
    for t in range(3):
        assert torch.equal(adjusted[t][0], raw[t][0])


def test_each_stage_runs_on_the_previous_stage_refined_boxes():
    """At inference stage t + 1 pools the boxes stage t's deltas (its coder weights) moved, and the detections'
    boxes are stage 3's; in training stage t + 1 samples from stage t's sampled RoIs moved, gt boxes dropped."""
    model = _model()
    rh = model.roi_heads
    with torch.no_grad():  # deltas big enough that a missing refinement shows
        for p in _stage_predictors(model):
            p.bbox_pred.weight.normal_(std=0.05)
    pooled, deltas = [], []
    rh.box_roi_pool.register_forward_hook(lambda m, i, o: pooled.append(torch.cat(i[1]).detach().clone()))
    for p in _stage_predictors(model):
        p.register_forward_hook(lambda m, i, o: deltas.append(o[1].detach().clone()))
    images, targets = _batch()
    model.eval()
    seen = []
    original = rh.cascade_scores
    rh.cascade_scores = lambda *a: seen.append(original(*a)) or seen[-1]
    with torch.no_grad():
        model(images)
    assert len(pooled) == 3
    for t in range(2):
        want = _decode_by_hand(deltas[t], pooled[t], STAGE_BOX_WEIGHTS[t])
        assert torch.allclose(pooled[t + 1], want, atol=1e-4) and not torch.allclose(pooled[t + 1], pooled[t])
    final = _decode_by_hand(deltas[2], pooled[2], STAGE_BOX_WEIGHTS[2])
    assert torch.allclose(torch.cat(seen[0][1]), final, atol=1e-4)

    calls = []
    original_sample = rh.sample
    rh.sample = lambda t, props, tg: calls.append(([p.clone() for p in props], original_sample(t, props, tg))) \
        or calls[-1][1]
    pooled.clear(), deltas.clear()
    model.train()
    model(images, targets)
    for t in range(2):
        rois, _, _, _, is_gt = calls[t][1]
        n = [len(r) for r in rois]
        moved = _decode_by_hand(deltas[t], torch.cat(rois), STAGE_BOX_WEIGHTS[t]).split(n)
        for got, m, g in zip(calls[t + 1][0], moved, is_gt):
            assert torch.allclose(got, m[~g], atol=1e-4)


@pytest.mark.parametrize("when", ["train", "train_and_test"])
def test_iif_in_every_stage_loss(when):
    """With IIF in the loss, stage t's classification loss is lambda_t * CE(w * z_t, y_t), z_t its raw logits and
    y_t the labels its own sampler drew (recorded by wrapping ``sample``)."""
    model = _model()
    use_margin(model, "iif", COUNTS, variant="raw", when=when)
    w = torch.tensor(np.concatenate([[1.0], _raw_iif(COUNTS)]), dtype=torch.float32)
    raw, adjusted = _capture(model)
    drawn = record_samples(model)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    for t, lam in enumerate((1.0, 0.5, 0.25)):
        labels = torch.cat(drawn[t][1])
        assert torch.allclose(adjusted[t][0], raw[t][0] * w, rtol=1e-6, atol=1e-6)
        want = lam * F.cross_entropy(raw[t][0] * w, labels)
        assert torch.allclose(losses[f"loss_classifier_s{t + 1}"], want, rtol=1e-5)
    model.eval()
    for t in range(3):
        raw[t].clear(), adjusted[t].clear()
    with torch.no_grad():
        model(images)
    for t in range(3):
        scaled = torch.allclose(adjusted[t][0], raw[t][0] * w, rtol=1e-6, atol=1e-6)
        assert scaled == (when == "train_and_test")


@pytest.mark.parametrize("method,kw", [("balanced_softmax", {"when": "train"}), ("seesaw", {"when": "train"}),
                                       ("logit_adjustment", {"when": "test"}), ("norcal", {"when": "test"}),
                                       ("iif", {"cosine_scale": 8.0})])
def test_every_margin_method_trains_and_detects(method, kw):
    """Every stage is switched (each its own adjuster copy), trains a step and detects; 'softmax' puts the three
    plain predictors back and the state dict keys stay those of the plain model."""
    model = _model()
    keys = set(model.state_dict())
    use_margin(model, method, COUNTS, **kw)
    preds = _stage_predictors(model)
    assert all(isinstance(p, MarginBoxPredictor) and p.method == method for p in preds)
    assert len({id(p.adjuster) for p in preds}) == 3
    images, targets = _batch()
    model.train()
    sum(model(images, targets).values()).backward()
    model.eval()
    with torch.no_grad():
        assert len(model(images)) == 2
    assert set(model.state_dict()) == keys
    use_margin(model, "softmax")
    assert not any(isinstance(p, MarginBoxPredictor) for p in _stage_predictors(model))


def test_masks_false_builds_a_cascade_without_mask_branch():
    model = _model(masks=False)
    assert not model.roi_heads.has_mask()
    images, targets = _batch()
    model.train()
    assert "loss_mask" not in model(images, targets)
    model.eval()
    with torch.no_grad():
        assert "masks" not in model(images)[0]


# ------------------------------------------------------------------------------------------- det-train
@pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")
def test_det_train_and_det_eval_round_trip(detection_benchmark, tmp_path):
    """det_bench_iif (end-to-end IIF) with model.arch=cascade_maskrcnn_r10_fpn trains one epoch, evaluates mask
    AP; det-eval rebuilds the cascade from config.yaml + last.pt and writes the same detections."""
    pytest.importorskip("faster_coco_eval")
    from iif.cli import main

    bench, out = detection_benchmark[0], tmp_path / "run"
    assert main(["det-train", "det_bench_iif", f"data.root={bench}", *TINY, "model.arch=cascade_maskrcnn_r10_fpn",
                 "schedule.epochs=1", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["iou_type"] == "segm"
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    assert "roi_heads.box_predictor_3.cls_score.weight" in state
    assert main(["det-eval", str(out), "--detections", str(tmp_path / "d.json"),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads((out / "detections.json").read_text())
    # det-eval --margin switches the trained cascade's three classifiers (use_margin): other scores.
    assert main(["det-eval", str(out), "--margin", "softmax", "--detections", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) != json.loads((out / "detections.json").read_text())

    # Decoupled stage 2 (model.classifier_only) from that checkpoint retrains the three stages' classifiers only.
    s2 = tmp_path / "s2"
    assert main(["det-train", "det_bench_iif", f"data.root={bench}", *TINY, "model.arch=cascade_maskrcnn_r10_fpn",
                 "schedule.epochs=1", "eval.masks=false", f"model.checkpoint={out / 'last.pt'}",
                 "model.classifier_only=true", "model.norm=bn", "--out", str(s2), "--quiet"]) == 0
    b = torch.load(s2 / "last.pt", weights_only=True)["model"]
    changed = {k for k in state if state[k].is_floating_point() and not torch.equal(state[k], b[k])}
    assert {k for k in changed if "running_" not in k} == {
        f"roi_heads.{p}.cls_score.{w}" for p in ("box_predictor", "box_predictor_2", "box_predictor_3")
        for w in ("weight", "bias")}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")
def test_det_train_resume_is_bit_identical(detection_benchmark, tmp_path):
    """Two epochs at once, or one epoch, stop, --resume: the same cascade weights, bit for bit (three stages'
    sampling draws from the saved RNG state)."""
    a, b = full_and_resumed_runs(detection_benchmark[0], tmp_path, "cascade_maskrcnn_r10_fpn")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], _model().state_dict()[k]) for k in a if "box_predictor_3" in k)


def test_posthoc_roi_cache_refuses_a_cascade():
    """The one-stage RoI cache of det-bench's post-hoc rows cannot replay three stages: one line, not stage 1's
    scores passed off as the cascade's."""
    from iif.detection.posthoc import cache_roi_inputs
    from iif.errors import IIFError

    with pytest.raises(IIFError, match="is a cascade.*full inference"):
        cache_roi_inputs(_model(), [])
    # det-bench asks for no cache for a cascade, so its post-hoc rows run full inference (a one-stage model too)
    from iif.detection import bench as B

    assert B._make_cache(_model(), None, "cpu", None) is None


def test_det_bench_takes_class_agnostic_masks_for_a_cascade():
    from iif.detection import bench as B

    s = B.quick_settings("cpu-quick", ["arch=cascade_maskrcnn_r10_fpn", "model.class_agnostic_mask=true"])
    assert s.arch == "cascade_maskrcnn_r10_fpn" and s.model["class_agnostic_mask"] is True
    # the v2 benchmark's default (one mask channel) reaches a cascade as it reaches a Mask R-CNN, not a box detector
    for arch, want in (("cascade_maskrcnn_r10_fpn", True), ("maskrcnn_r10_fpn", True), ("fasterrcnn_r10_fpn", None)):
        s = B.quick_settings("cpu-quick", [f"arch={arch}"])
        B._apply_v2_defaults(s, {"arch"}, lambda m: None)
        assert s.model.get("class_agnostic_mask") is want, arch


def test_ddp_step_under_two_gloo_ranks_averages_every_stage_gradient():
    """Under DDP (two forked gloo ranks, one image each) every parameter of the three stages gets a gradient
    and both ranks hold the mean of the two single-process gradients computed here with the same draws."""
    g0, g1, single = ddp_and_single_process_grads(_model)
    assert len(g0) == len(g1) == len(single[0])
    assert_ddp_grads_are_the_mean(g0, g1, single)


def test_bad_input_is_one_line():
    from iif.errors import IIFError

    model = _model()
    images, targets = _batch()
    model.train()
    with pytest.raises(IIFError, match="needs targets"):
        model.roi_heads({}, [], [], None)
    with pytest.raises(IIFError, match="targets with 'masks'.*masks=False"):
        model(images, [{k: v for k, v in t.items() if k != "masks"} for t in targets])
    with pytest.raises(IIFError, match="unknown detector arch 'cascade_maskrcnn_r5_fpn'"):
        build_detector("cascade_maskrcnn_r5_fpn", 3)


@pytest.mark.parametrize("arch", ["cascade_maskrcnn_r50_fpn", "cascade_maskrcnn_r101_fpn"])
def test_r50_r101_build_with_torchvision_head_sizes(arch):
    """Built without downloads: three 1024-wide two-layer box heads on 256 x 7 x 7 RoI features, C + 1 logits
    and 4 class-agnostic deltas per stage, torchvision's mask head; the ResNet depth is the arch's."""
    model = build_detector(arch, 5)
    rh = model.roi_heads
    for t in range(3):
        head, pred = rh.stage(t)
        assert head.fc6.in_features == 256 * 7 * 7 and head.fc7.out_features == 1024
        assert pred.cls_score.in_features == 1024 and pred.cls_score.out_features == 6
        assert pred.bbox_pred.out_features == 4
    assert len({id(rh.stage(t)[0]) for t in range(3)}) == 3  # three heads, not one shared
    blocks = len(model.backbone.body.layer3)
    assert blocks == (6 if arch.endswith("r50_fpn") else 23)
    assert rh.has_mask()


def test_eqlv2_on_a_cascade_is_refused_naming_the_cascade_heads():
    from iif.errors import IIFError

    with pytest.raises(IIFError, match=r"eqlv2.*its CascadeRoIHeads \(several box stages\) is not one"):
        use_margin(_model(), "eqlv2", COUNTS, when="train")
