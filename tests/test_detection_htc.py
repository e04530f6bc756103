"""Hybrid Task Cascade (iif.detection.htc): training and inference at 64 px, the mask information flow against
the chain computed by hand, interleaved execution (stage t's mask RoIs are stage t's refined boxes), the stage
weights on the mask losses, IIF's w * z on every stage's classifier, and det-train -> det-eval (+ resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torchvision")

from _detection_helpers import CASCADE_COUNTS as COUNTS  # noqa: E402
from _detection_helpers import CASCADE_TRAIN as TINY  # noqa: E402
from _detection_helpers import assert_ddp_grads_are_the_mean, ddp_and_single_process_grads, tiny_cascade  # noqa: E402
from _detection_helpers import box_iou as _iou  # noqa: E402
from _detection_helpers import capture_stage_logits as _capture  # noqa: E402
from _detection_helpers import cascade_batch as _batch  # noqa: E402
from _detection_helpers import decode_by_hand as _decode_by_hand  # noqa: E402
from _detection_helpers import full_and_resumed_runs, losses_with_default_and_unit_stage_weights  # noqa: E402
from _detection_helpers import raw_iif as _raw_iif  # noqa: E402
from _detection_helpers import record_samples  # noqa: E402
from _detection_helpers import stage_predictors as _stage_predictors  # noqa: E402

from iif.detection import build_detector  # noqa: E402
from iif.detection.cascade import STAGE_BOX_WEIGHTS, STAGE_IOUS  # noqa: E402
from iif.detection.htc import HTCRoIHeads  # noqa: E402
from iif.detection.margins import MarginBoxPredictor, use_margin  # noqa: E402
from iif.errors import IIFError  # noqa: E402


def _model(seed: int = 0, **kw):
    return tiny_cascade("htc_r10_fpn", seed, **kw)


def _mask_parts(model):
    rh = model.roi_heads
    return [rh.mask_stage(t) for t in range(3)]


def test_builds_and_trains_and_detects_at_64px():
    model = _model()
    rh = model.roi_heads
    assert isinstance(rh, HTCRoIHeads) and rh.stage_ious == (0.5, 0.6, 0.7)
    assert rh.stage_loss_weights == (1.0, 0.5, 0.25)
    parts = _mask_parts(model)
    assert len({id(m) for p in parts for m in p if m is not None}) == 8  # 3 heads, 3 predictors, 2 flows
    assert parts[0][2] is None and parts[1][2].conv.kernel_size == (1, 1)
    assert parts[1][2].conv.in_channels == 8 and parts[1][2].conv.out_channels == 16  # head output -> RoI width
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    expected = {f"loss_{k}_s{t}" for k in ("classifier", "box_reg", "mask") for t in (1, 2, 3)}
    assert expected | {"loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and all(losses[f"loss_mask_s{t}"] > 0 for t in (1, 2, 3))
    sum(losses.values()).backward()
    for head, pred, flow in parts:
        assert pred.mask_fcn_logits.weight.grad.abs().sum() > 0
        assert all(p.grad.abs().sum() > 0 for p in head.parameters() if p.dim() > 1)
        assert flow is None or flow.conv.weight.grad.abs().sum() > 0
    for p in _stage_predictors(model):
        assert p.cls_score.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(images)
    for r in out:
        n = len(r["boxes"])
        assert 0 < n <= 30 and r["masks"].shape == (n, 1, 64, 64) and set(r["labels"].tolist()) <= {1, 2, 3}


def _chain_by_hand(model, x, t):
    """Stage t's mask logits from pooled RoI features x, HTC Eq. 4 written out: f_1 = M_1(x),
    f_s = M_s(x + relu(conv1x1_s(f_{s-1}))), logits = P_t(f_t)."""
    rh = model.roi_heads
    heads = [rh.mask_head, rh.mask_head_2, rh.mask_head_3]
    flows = [None, rh.mask_flow_2.conv, rh.mask_flow_3.conv]
    preds = [rh.mask_predictor, rh.mask_predictor_2, rh.mask_predictor_3]
    f = heads[0](x)
    for s in range(1, t + 1):
        g = F.relu(F.conv2d(f, flows[s].weight, flows[s].bias))
        f = heads[s](x + g)
    return preds[t](f)


def test_mask_information_flow_by_hand_and_through_stage_one():
    """mask_logits(t) is the chain written out by hand; changing stage 1's mask head changes stage 3's logits
    (the flow), and changing stage 3's does not change stage 1's (no flow backwards)."""
    model = _model()
    rh = model.roi_heads
    images, _ = _batch()
    model.eval()
    with torch.no_grad():
        feats = model.backbone(model.transform(images)[0].tensors)
        rois = [torch.tensor([[4.0, 6, 30, 34], [20, 20, 50, 60]]), torch.tensor([[10.0, 8, 50, 40]])]
        shapes = [(64, 64), (64, 64)]
        x = rh.mask_roi_pool(feats, rois, shapes)
        before = [rh.mask_logits(t, feats, rois, shapes) for t in range(3)]
        for t in range(3):
            assert torch.allclose(before[t], _chain_by_hand(model, x, t), atol=1e-5)
        with torch.no_grad():
            for p in rh.mask_head.parameters():
                p.add_(0.05 * torch.randn_like(p))
        after = [rh.mask_logits(t, feats, rois, shapes) for t in range(3)]
        assert not torch.allclose(after[2], before[2], atol=1e-4) and not torch.allclose(after[1], before[1])
        for p in rh.mask_head_3.parameters():
            p.add_(0.05 * torch.randn_like(p))
        assert torch.equal(rh.mask_logits(0, feats, rois, shapes), after[0])
        rh.mask_flow_3.conv.weight.zero_(), rh.mask_flow_3.conv.bias.zero_()  # no flow into stage 3:
        alone = rh.mask_predictor_3(rh.mask_head_3(x))
        assert torch.allclose(rh.mask_logits(2, feats, rois, shapes), alone, atol=1e-6)


def test_test_time_masks_are_stage_three_on_the_detections():
    """At inference the mask heads run once each, in order, on the final detections' boxes, and only stage 3's
    predictor makes the masks: its logits are the flow chain by hand on the detections' RoI features."""
    model = _model()
    rh = model.roi_heads
    calls = []
    for name in ("mask_head", "mask_head_2", "mask_head_3", "mask_predictor", "mask_predictor_2",
                 "mask_predictor_3"):
        getattr(rh, name).register_forward_hook(lambda m, i, o, name=name: calls.append((name, o.detach())))
    pooled = []
    rh.mask_roi_pool.register_forward_hook(lambda m, i, o: pooled.append(([b.clone() for b in i[1]], o.detach())))
    images, _ = _batch()
    model.eval()
    with torch.no_grad():
        out = model(images)
        assert [c[0] for c in calls] == ["mask_head", "mask_head_2", "mask_head_3", "mask_predictor_3"]
        assert len(pooled) == 1 and all(torch.equal(p, r["boxes"]) for p, r in zip(pooled[0][0], out))
        assert torch.allclose(calls[-1][1], _chain_by_hand(model, pooled[0][1], 2), atol=1e-5)


def test_interleaved_stage_t_mask_rois_are_stage_t_refined_boxes():
    """In training, stage t's mask RoIs are stage t's sampled box RoIs moved by its deltas (its coder weights,
    gt boxes dropped; by hand), or a gt box the resampling added, and are foreground at u_t; they are the
    proposals stage t + 1 samples from."""
    model = _model()
    rh = model.roi_heads
    with torch.no_grad():  # deltas big enough that a missing refinement shows
        for p in _stage_predictors(model):
            p.bbox_pred.weight.normal_(std=0.05)
    deltas, mask_rois, samples = [], [], []
    for p in _stage_predictors(model):
        p.register_forward_hook(lambda m, i, o: deltas.append(o[1].detach().clone()))
    rh.mask_roi_pool.register_forward_hook(lambda m, i, o: mask_rois.append([b.clone() for b in i[1]]))
    original = rh.sample
    rh.sample = lambda t, props, tg: samples.append((t, [p.clone() for p in props], original(t, props, tg))) \
        or samples[-1][2]
    images, targets = _batch()
    model.train()
    g = torch.Generator().manual_seed(2)
    proposals = []  # jittered copies of the gts: foreground RoIs at every stage's threshold
    for tg in targets:
        jit = tg["boxes"].repeat(20, 1) + torch.randn(20 * len(tg["boxes"]), 4, generator=g) * 2
        proposals.append(torch.cat([jit[:, :2].clamp(0, 60), torch.maximum(jit[:, 2:], jit[:, :2] + 2)], 1))
    feats = model.backbone(torch.stack(images))
    rh(feats, proposals, [(64, 64)] * 2, targets)
    # per stage: the box sample, then the mask resample
    assert [s[0] for s in samples] == [0, 0, 1, 1, 2, 2] and len(mask_rois) == 3
    for t in range(3):
        rois, _, _, _, is_gt = samples[2 * t][2]
        n = [len(r) for r in rois]
        moved = _decode_by_hand(deltas[t], torch.cat(rois), STAGE_BOX_WEIGHTS[t]).split(n)
        refined = [m[~g] for m, g in zip(moved, is_gt)]
        for got, want in zip(samples[2 * t + 1][1], refined):  # the mask resample draws from the refined boxes
            assert torch.allclose(got, want, atol=1e-4)
        if t < 2:
            for got, want in zip(samples[2 * t + 2][1], refined):  # and so does stage t + 1
                assert torch.allclose(got, want, atol=1e-4)
        n_refined = 0
        for boxes, ref, tg in zip(mask_rois[t], refined, targets):
            gts = tg["boxes"].tolist()
            for box in boxes.tolist():
                from_refined = bool((torch.tensor(box) - ref).abs().max(1).values.min() < 1e-4)
                n_refined += from_refined
                assert from_refined or box in gts
                assert max(_iou(box, g) for g in gts) >= STAGE_IOUS[t] - 1e-6
        assert n_refined > 10


def test_stage_loss_weights_scale_each_mask_loss():
    """The same seed with all stage weights 1: stage t's mask loss is exactly 1/lambda_t times the default's."""
    la, lb = losses_with_default_and_unit_stage_weights(_model)
    for t, lam in zip((1, 2, 3), (1.0, 0.5, 0.25)):
        assert torch.allclose(la[f"loss_mask_s{t}"], lam * lb[f"loss_mask_s{t}"], rtol=1e-6, atol=1e-9)
    assert la["loss_mask_s3"] > 0


def test_iif_at_test_time_on_every_stage():
    """use_margin('iif', when='test'): every stage's predictor is switched; at inference each stage's logits
    are w * z (background weight 1); in training they are z."""
    model = _model()
    use_margin(model, "iif", COUNTS, variant="raw", when="test")
    assert all(isinstance(p, MarginBoxPredictor) for p in _stage_predictors(model))
    w = torch.tensor(np.concatenate([[1.0], _raw_iif(COUNTS)]), dtype=torch.float32)
    raw, adjusted = _capture(model)
    images, targets = _batch()
    model.eval()
    with torch.no_grad():
        model(images)
    for t in range(3):
        assert len(raw[t]) == 1
        assert torch.allclose(adjusted[t][0], raw[t][0] * w, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(adjusted[t][0], raw[t][0])
    model.train()
    for t in range(3):
        raw[t].clear(), adjusted[t].clear()
    model(images, targets)
    for t in range(3):
        assert torch.equal(adjusted[t][0], raw[t][0])


def test_iif_in_every_stage_loss():
    """when='train': stage t's classification loss is lambda_t * CE(w * z_t, y_t), y_t its box sampler's labels."""
    model = _model()
    use_margin(model, "iif", COUNTS, variant="raw", when="train")
    w = torch.tensor(np.concatenate([[1.0], _raw_iif(COUNTS)]), dtype=torch.float32)
    raw, _ = _capture(model)
    drawn = record_samples(model)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    for t, lam in enumerate((1.0, 0.5, 0.25)):
        labels = torch.cat(drawn[2 * t][1])  # the box sample (the mask resample follows it)
        want = lam * F.cross_entropy(raw[t][0] * w, labels)
        assert torch.allclose(losses[f"loss_classifier_s{t + 1}"], want, rtol=1e-5)


def test_masks_false_and_bad_input():
    model = _model(masks=False)
    assert not model.roi_heads.has_mask() and not hasattr(model.roi_heads, "mask_head_2")
    images, targets = _batch()
    model.train()
    assert not any(k.startswith("loss_mask") for k in model(images, targets))
    model = _model()
    model.train()
    with pytest.raises(IIFError, match="HTC detector trains on targets with 'masks'.*masks=False"):
        model(images, [{k: v for k, v in t.items() if k != "masks"} for t in targets])
    with pytest.raises(IIFError, match="unknown detector arch 'htc_r5_fpn'"):
        build_detector("htc_r5_fpn", 3)
    from iif.detection.posthoc import cache_roi_inputs

    with pytest.raises(IIFError, match="is a cascade"):
        cache_roi_inputs(_model(), [])


@pytest.mark.parametrize("arch", ["htc_r50_fpn", "htc_r101_fpn"])
def test_r50_r101_build_with_torchvision_head_sizes(arch):
    """Built without downloads: three box stages, three 4x256 conv mask heads and two 256 -> 256 flows."""
    model = build_detector(arch, 5)
    rh = model.roi_heads
    assert isinstance(rh, HTCRoIHeads)
    for t in range(3):
        head, pred, flow = rh.mask_stage(t)
        assert len([m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]) == 4
        assert pred.mask_fcn_logits.out_channels == 6
        assert flow is None or (flow.conv.in_channels, flow.conv.out_channels) == (256, 256)
        assert rh.stage(t)[1].cls_score.out_features == 6
    assert len(model.backbone.body.layer3) == (6 if arch.endswith("r50_fpn") else 23)


# ------------------------------------------------------------------------------------------- det-train
@pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")
def test_det_train_and_det_eval_round_trip(detection_benchmark, tmp_path):
    """det_bench_iif with model.arch=htc_r10_fpn trains one epoch and evaluates mask AP; det-eval rebuilds the
    HTC from config.yaml + last.pt and writes the same detections."""
    pytest.importorskip("faster_coco_eval")
    from iif.cli import main

    bench, out = detection_benchmark[0], tmp_path / "run"
    assert main(["det-train", "det_bench_iif", f"data.root={bench}", *TINY, "model.arch=htc_r10_fpn",
                 "schedule.epochs=1", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "final_metrics.json").read_text())["iou_type"] == "segm"
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    assert "roi_heads.mask_flow_3.conv.weight" in state and "roi_heads.mask_predictor_3.mask_fcn_logits.weight" in state
    assert main(["det-eval", str(out), "--detections", str(tmp_path / "d.json"),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads((out / "detections.json").read_text())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")
def test_det_train_resume_is_bit_identical(detection_benchmark, tmp_path):
    """Two epochs at once, or one epoch, stop, --resume: the same HTC weights, bit for bit (the mask resampling
    draws from the saved RNG state too)."""
    a, b = full_and_resumed_runs(detection_benchmark[0], tmp_path, "htc_r10_fpn")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], _model().state_dict()[k]) for k in a if "mask_flow_3" in k)


@pytest.mark.parametrize("kw", [{"class_agnostic_mask": True}, {"mask_predictor": "normalised"}])
def test_mask_predictor_options_reach_every_stage(kw):
    """class_agnostic_mask and the normalised mask predictor: each stage's predictor is of that kind (its own
    weights) and a step trains; det-bench's v2 default (one mask channel) reaches an HTC as a Mask R-CNN's."""
    model = _model(**kw)
    preds = [p for _, p, _ in _mask_parts(model)]
    assert len({type(p) for p in preds}) == 1 and len({id(p) for p in preds}) == 3
    assert not torch.equal(preds[1].mask_fcn_logits.weight, preds[2].mask_fcn_logits.weight)
    images, targets = _batch()
    model.train()
    sum(model(images, targets).values()).backward()
    from iif.detection import bench as B

    s = B.quick_settings("cpu-quick", ["arch=htc_r10_fpn"])
    B._apply_v2_defaults(s, {"arch"}, lambda m: None)
    assert s.model.get("class_agnostic_mask") is True


def test_ddp_step_under_two_gloo_ranks_averages_every_mask_stage_gradient():
    """Under DDP (two forked gloo ranks, one image each) both ranks hold the mean of the two single-process
    gradients, the three mask heads and two flows included."""
    g0, g1, single = ddp_and_single_process_grads(_model)
    names = [n for n, p in _model().named_parameters() if p.requires_grad]
    assert len(g0) == len(g1) == len(single[0]) == len(names) and any("mask_flow_3" in n for n in names)
    assert_ddp_grads_are_the_mean(g0, g1, single)
