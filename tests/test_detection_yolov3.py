"""YOLOv3 (iif.detection.yolo): forward/backward at 64 px, the three loss terms against hand computations on a
hand-made target, the margin (IIF's w * z, Balanced Softmax's z + ln n) in the loss and in the scores at every
scale, the refusals, and one det-train step."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:.*classes have no training images:UserWarning")

pytest.importorskip("torchvision")

from iif.detection import build_detector, use_margin  # noqa: E402
from iif.detection.yolo import COCO_ANCHORS, STRIDES  # noqa: E402
from iif.errors import IIFError  # noqa: E402

C = 4
COUNTS = [100, 20, 5, 1]  # per-class image counts; K = their sum (126) for an array


def tiny(seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = build_detector("yolov3_tiny_cpu", C, min_size=64, max_size=64, **kw)
    model.multiscale = False
    with torch.no_grad():  # class and box outputs of order 1, as after training (at init they are ~1e-5)
        gen = torch.Generator().manual_seed(seed)
        for seq in model.head.outputs:
            conv = seq[-1]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) - 2.0)
    return model


def capture_head(model):
    """The head's per-scale outputs of the next forward, in a list."""
    store: list = []
    model.head.register_forward_hook(lambda mod, inp, out: store.append([o.detach().double() for o in out]))
    return store


def smooth_iif(counts, k):
    """Table III smooth: ln((K + 1) / (n_c + 1)) + 1 (SPEC.md)."""
    return [math.log((k + 1) / (n + 1)) + 1 for n in counts]


# ------------------------------------------------------------------------------------------- hand formulas
def sig(x):
    return 1 / (1 + math.exp(-x))


def focal(x, t, alpha=0.25, gamma=2.0):
    """RetinaNet's focal loss of one logit x against t in {0, 1}."""
    p = sig(x)
    ce = -math.log(p) if t else -math.log(1 - p)
    p_t = p if t else 1 - p
    a_t = alpha if t else 1 - alpha
    return a_t * (1 - p_t) ** gamma * ce


def ciou_loss(b, g):
    """1 - CIoU (Zheng et al. 2020): 1 - IoU + rho^2 / c^2 + alpha v."""
    iw = max(0.0, min(b[2], g[2]) - max(b[0], g[0]))
    ih = max(0.0, min(b[3], g[3]) - max(b[1], g[1]))
    inter = iw * ih
    wb, hb, wg, hg = b[2] - b[0], b[3] - b[1], g[2] - g[0], g[3] - g[1]
    iou = inter / (wb * hb + wg * hg - inter)
    rho2 = ((b[0] + b[2]) / 2 - (g[0] + g[2]) / 2) ** 2 + ((b[1] + b[3]) / 2 - (g[1] + g[3]) / 2) ** 2
    c2 = (max(b[2], g[2]) - min(b[0], g[0])) ** 2 + (max(b[3], g[3]) - min(b[1], g[1])) ** 2
    v = 4 / math.pi ** 2 * (math.atan(wg / hg) - math.atan(wb / hb)) ** 2
    alpha = v / (1 - iou + v)
    return 1 - iou + rho2 / c2 + alpha * v


def cross_entropy(z, y):
    m = max(z)
    return -(z[y] - m - math.log(sum(math.exp(v - m) for v in z)))


def best_anchor(w, h, side=64):
    """(scale, anchor) of the best shape IoU among the nine COCO anchors scaled to ``side``."""
    best, where = -1.0, None
    for s, level in enumerate(COCO_ANCHORS):
        for a, (aw, ah) in enumerate(level):
            aw, ah = aw * side / 416, ah * side / 416
            inter = min(w, aw) * min(h, ah)
            iou = inter / (w * h + aw * ah - inter)
            if iou > best:
                best, where = iou, (s, a)
    return where


def hand_losses(preds, gts, weights=None, offsets=None, side=64):
    """The three loss terms of ``preds`` (per-scale (N, A, H, W, 5 + C) float64) for ``gts``: (image, box in
    input pixels, label 1..C) rows; class logits w * z + offset before the cross-entropy."""
    positives = {}
    for img, box, label in gts:
        s, a = best_anchor(box[2] - box[0], box[3] - box[1], side)
        gx, gy = int((box[0] + box[2]) / 2 // STRIDES[s]), int((box[1] + box[3]) / 2 // STRIDES[s])
        positives[(s, img, a, gy, gx)] = (box, label)
    obj = sum(focal(float(x), (s, *idx) in positives)
              for s, p in enumerate(preds) for idx, x in zip(_indices(p[..., 4].shape), p[..., 4].flatten().tolist()))
    box_sum = cls_sum = 0.0
    for (s, img, a, gy, gx), (box, label) in positives.items():
        t = preds[s][img, a, gy, gx].tolist()
        aw, ah = (v * side / 416 for v in COCO_ANCHORS[s][a])
        cx, cy = (sig(t[0]) + gx) * STRIDES[s], (sig(t[1]) + gy) * STRIDES[s]
        w, h = aw * math.exp(t[2]), ah * math.exp(t[3])
        box_sum += ciou_loss([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], box)
        z = [t[5 + c] * (weights[c] if weights else 1.0) + (offsets[c] if offsets else 0.0) for c in range(C)]
        cls_sum += cross_entropy(z, label - 1)
    n = max(len(positives), 1)
    return {"loss_box": box_sum / n, "loss_obj": obj / n, "loss_cls": cls_sum / n}, positives


def _indices(shape):
    import itertools

    return itertools.product(*(range(n) for n in shape))


# Image 0 is 128 x 96 px (boxes halve / two-thirds at the 64-px input), image 1 64 x 64 (boxes as given).
IMAGES = [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(1)),
          torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2))]
TARGETS = [{"boxes": torch.tensor([[10.0, 6.0, 74.0, 54.0]]), "labels": torch.tensor([2])},
           {"boxes": torch.tensor([[2.0, 20.0, 5.0, 24.0], [36.0, 10.0, 60.0, 30.0], [40.0, 4.0, 52.0, 26.0]]),
            "labels": torch.tensor([4, 1, 3])}]
# the same boxes in pixels of the 64-px input: image 0 scaled by (64/128, 64/96)
GTS = [(0, [5.0, 4.0, 37.0, 36.0], 2), (1, [2.0, 20.0, 5.0, 24.0], 4), (1, [36.0, 10.0, 60.0, 30.0], 1),
       (1, [40.0, 4.0, 52.0, 26.0], 3)]


# ---------------------------------------------------------------------------------------------------- tests
def test_forward_backward_at_64px_and_detections_in_image_pixels():
    model = tiny()
    model.train()
    losses = model(IMAGES, TARGETS)
    assert set(losses) == {"loss_box", "loss_obj", "loss_cls"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["backbone.stem.0.weight"].abs().sum() > 0 and grads["head.outputs.0.1.weight"].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(IMAGES)
    assert len(out) == 2
    for det, im in zip(out, IMAGES):
        h, w = im.shape[-2:]
        assert set(det) == {"boxes", "labels", "scores"} and 0 < len(det["boxes"]) <= 300
        assert det["labels"].min() >= 1 and det["labels"].max() <= C
        assert (det["boxes"][:, 2] <= w + 1e-4).all() and (det["boxes"][:, 3] <= h + 1e-4).all()
        assert (det["boxes"] >= 0).all() and (det["scores"][:-1] >= det["scores"][1:]).all()


def test_multiscale_training_draws_multiples_of_32_around_the_input_size():
    model = tiny()
    model.multiscale = True
    model.input_size = 128
    torch.manual_seed(0)
    sides = {model._train_side() for _ in range(60)}
    assert sides == {96, 128, 160}  # multiples of 32 in [0.75, 1.25] x 128


def test_the_three_losses_equal_hand_computations():
    model = tiny()
    store = capture_head(model)
    model.train()
    losses = model(IMAGES, TARGETS)
    expected, positives = hand_losses(store[0], GTS)
    # the hand-made targets hit four different (scale, anchor, cell), on all three scales, three off the diagonal
    assert len(positives) == 4 and {k[0] for k in positives} == {0, 1, 2}
    assert sorted((k[0], k[3], k[4]) for k in positives) == [(0, 2, 0), (1, 0, 2), (2, 0, 0), (2, 0, 1)]
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_no_object_gives_only_the_objectness_term():
    model = tiny()
    store = capture_head(model)
    model.train()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = model(IMAGES, empty)
    expected, _ = hand_losses(store[0], [])
    assert losses["loss_box"].item() == 0.0 and losses["loss_cls"].item() == 0.0
    assert losses["loss_obj"].item() == pytest.approx(expected["loss_obj"], rel=1e-5)


def test_iif_multiplies_the_class_logits_in_the_loss():
    model = tiny()
    use_margin(model, "iif", COUNTS, variant="smooth")
    store = capture_head(model)
    model.train()
    losses = model(IMAGES, TARGETS)
    w = smooth_iif(COUNTS, sum(COUNTS))
    expected, _ = hand_losses(store[0], GTS, weights=w)
    plain, _ = hand_losses(store[0], GTS)
    assert losses["loss_cls"].item() == pytest.approx(expected["loss_cls"], rel=1e-5)
    assert abs(expected["loss_cls"] - plain["loss_cls"]) > 1e-3  # the margin changed it
    assert losses["loss_obj"].item() == pytest.approx(plain["loss_obj"], rel=1e-5)  # objectness untouched
    assert losses["loss_box"].item() == pytest.approx(plain["loss_box"], rel=1e-5)


def test_balanced_softmax_adds_log_counts_in_the_loss_only():
    model = tiny()
    use_margin(model, "balanced_softmax", COUNTS, when="train")
    store = capture_head(model)
    model.train()
    losses = model(IMAGES, TARGETS)
    expected, _ = hand_losses(store[0], GTS, offsets=[math.log(n) for n in COUNTS])
    assert losses["loss_cls"].item() == pytest.approx(expected["loss_cls"], rel=1e-5)
    model.eval()
    with torch.no_grad():
        z = torch.randn(5, C)
        assert torch.equal(model.adjusted_class_logits(z), z)  # when="train": inference sees z


def _methods_and_phases():
    from iif.detection.margins import METHODS
    from iif.methods import get_method

    return [(m, w) for m in METHODS for w in get_method(m, "detection").when]


@pytest.mark.parametrize("method, when", _methods_and_phases())
def test_every_margin_method_trains_or_is_refused_in_one_line(method, when):
    model = tiny()
    counts = None if method == "softmax" else COUNTS
    if method in ("seesaw", "eqlv2"):  # both need torchvision's RoI heads
        with pytest.raises(IIFError, match="YOLOv3") as info:
            use_margin(model, method, counts, when=when)
        assert "\n" not in str(info.value)
        return
    use_margin(model, method, counts, when=when)
    store = capture_head(model)
    model.train()
    losses = model(IMAGES, TARGETS)
    sum(losses.values()).backward()
    assert model.head.outputs[0][-1].weight.grad.abs().sum() > 0
    # the loss's class logits by hand: IIF's w z in training phases; an additive method's ln n offset (logit
    # adjustment's Bayes offsets are -ln p_c - ln C at tau 1: ln n up to a constant, which the C-way softmax
    # ignores); z otherwise
    weights = smooth_iif(COUNTS, sum(COUNTS)) if method == "iif" and when != "test" else None
    offsets = [math.log(n) for n in COUNTS] if method in ("balanced_softmax", "logit_adjustment") and \
        when == "train" else None
    expected, _ = hand_losses(store[0], GTS, weights=weights, offsets=offsets)
    assert losses["loss_cls"].item() == pytest.approx(expected["loss_cls"], rel=1e-5)


def _all_pairs(model):
    """Keep every (prediction, class) pair: no threshold, no suppression, no cut."""
    model.score_thresh, model.nms_thresh = -1.0, 1.0
    model.pre_nms_top_n = model.detections_per_img = 10 ** 6


@pytest.mark.parametrize("method", ["iif", "softmax"])
def test_scores_are_objectness_times_softmax_of_w_z_at_every_scale(method):
    model = tiny()
    if method == "iif":
        use_margin(model, "iif", COUNTS, variant="smooth")
    w = torch.tensor(smooth_iif(COUNTS, sum(COUNTS)) if method == "iif" else [1.0] * C, dtype=torch.float64)
    _all_pairs(model)
    store = capture_head(model)
    model.eval()
    with torch.no_grad():
        out = model(IMAGES[1:])  # the 64 x 64 image: boxes stay in input pixels
        _, obj, probs = model.decode([p.float() for p in store[0]])
    preds = store[0]
    start = 0
    expected_pairs = []
    for s, p in enumerate(preds):  # every scale on its own
        z, o = p[0, ..., 5:].reshape(-1, C), p[0, ..., 4].reshape(-1)
        hand_probs = torch.softmax(z * w, dim=-1)  # softmax(w * z), by hand
        m = z.shape[0]
        assert torch.allclose(probs[0, start:start + m].double(), hand_probs, atol=1e-6), f"scale {s}"
        assert torch.allclose(obj[0, start:start + m].double(), torch.sigmoid(o), atol=1e-6), f"scale {s}"
        scores = torch.sigmoid(o)[:, None] * hand_probs
        expected_pairs += [(c + 1, v) for c in range(C) for v in scores[:, c].tolist()]
        start += m
    assert start == obj.shape[1] == 3 * (8 * 8 + 4 * 4 + 2 * 2)
    got = sorted(zip(out[0]["labels"].tolist(), out[0]["scores"].tolist()))
    expected_pairs.sort()
    assert len(got) == len(expected_pairs)
    assert all(a[0] == b[0] and a[1] == pytest.approx(b[1], abs=1e-6) for a, b in zip(got, expected_pairs))


def test_post_hoc_iif_changes_scores_not_objectness_or_boxes():
    model = tiny()
    _all_pairs(model)
    model.eval()
    with torch.no_grad():
        plain = model(IMAGES[1:])[0]
        use_margin(model, "iif", COUNTS, variant="smooth", when="test")
        adjusted = model(IMAGES[1:])[0]
        model.train()
        z = torch.randn(3, C)
        assert torch.equal(model.adjusted_class_logits(z), z)  # when="test": the loss sees z
    assert not torch.allclose(torch.sort(plain["scores"]).values, torch.sort(adjusted["scores"]).values)
    # the same boxes come out, re-scored
    assert torch.allclose(torch.sort(plain["boxes"].flatten()).values, torch.sort(adjusted["boxes"].flatten()).values)


def test_the_margin_keeps_the_state_dict_keys():
    plain = tiny()
    switched = tiny()
    use_margin(switched, "iif", COUNTS)
    assert list(plain.state_dict()) == list(switched.state_dict())
    switched.load_state_dict(plain.state_dict(), strict=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "logit_adjustment", "when": "test", "background_margin": True}, "no background class"),
    ({"method": "balanced_softmax", "when": "train", "background_margin": True}, "no background class"),
    ({"method": "iif", "cosine_scale": 8.0}, "not supported for YOLOv3"),
    ({"method": "seesaw", "when": "train"}, "SSD and YOLOv3 are not supported"),
])
def test_refusals_are_one_line(kwargs, message):
    model = tiny()
    kwargs = dict(kwargs)
    with pytest.raises(IIFError, match=message) as info:
        use_margin(model, kwargs.pop("method"), COUNTS, **kwargs)
    assert "\n" not in str(info.value)
    assert not hasattr(model.class_logits, "adjuster")  # nothing installed


@pytest.mark.parametrize("override, message", [
    ("model.cosine_scale=8", "model.arch is yolov3_tiny_cpu, whose head is convolutional"),
    ("model.classifier_only=true", "needs an R-CNN arch"),
    ("model.backbone_weights=pretrained", "ResNet weights, but model.arch is yolov3_tiny_cpu"),
    ("model.backbone_weights=ResNet50_Weights.IMAGENET1K_V1", "ResNet weights, but model.arch is yolov3_tiny_cpu"),
])
def test_config_refuses_what_yolov3_cannot_take(override, message, tmp_path):
    from iif.detection.config import load_detection_config

    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"")
    with pytest.raises(IIFError, match=message) as info:
        load_detection_config("det_bench_softmax", ["model.arch=yolov3_tiny_cpu", "model.anchor_sizes=null",
                                                    f"model.checkpoint={ckpt}", override])
    assert "\n" not in str(info.value)


def test_build_bad_input_and_darknet53_size():
    with pytest.raises(IIFError, match="3 levels of 3 sizes"):
        build_detector("yolov3_tiny_cpu", C, min_size=64, anchor_sizes=((16,), (32,)))
    with pytest.raises(IIFError, match="not a file"):
        build_detector("yolov3_tiny_cpu", C, min_size=64, backbone_weights="ResNet50_Weights.IMAGENET1K_V1")
    big = build_detector("yolov3_darknet53", 80, min_size=416)
    # Redmon & Farhadi's YOLOv3 on COCO: about 62 M parameters (Darknet-53 alone about 40.6 M without its fc)
    assert 61.5e6 < sum(p.numel() for p in big.parameters()) < 62.5e6
    assert 40.0e6 < sum(p.numel() for p in big.backbone.parameters()) < 41.0e6


def test_backbone_weights_file_loads_into_the_darknet(tmp_path):
    source = tiny(seed=3)
    path = tmp_path / "darknet.pt"
    torch.save(source.backbone.state_dict(), path)
    model = tiny(seed=4, backbone_weights=str(path))
    a, b = source.backbone.state_dict(), model.backbone.state_dict()
    assert set(b) <= set(a) and all(torch.equal(a[k], b[k]) for k in b)  # frozen_bn: no num_batches_tracked


# ------------------------------------------------------------------------------------------------ det-train
def _det_train_args(bench, out, *extra):
    return ["det-train", "det_bench_softmax", f"data.root={bench}", "model.arch=yolov3_tiny_cpu",
            "model.anchor_sizes=null", "model.min_size=64", "model.max_size=64", "data.max_train_images=8",
            "data.max_val_images=4", "schedule.batch_size=4", "schedule.warmup_iters=1",
            "schedule.milestones=[1]", "margin.method=iif", "eval.batch_size=4", "runtime.threads=1", *extra,
            "--out", str(out), "--quiet"]


@pytest.mark.slow
def test_det_train_step_and_det_eval(detection_benchmark, tmp_path):
    pytest.importorskip("faster_coco_eval")
    from iif.cli import main

    out = tmp_path / "run"
    assert main(_det_train_args(detection_benchmark[0], out, "schedule.epochs=1")) == 0
    history = json.loads((out / "history.json").read_text())
    assert history[0]["images"] == 8 and {"loss_box", "loss_obj", "loss_cls"} <= set(history[0])
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["iou_type"] == "bbox"
    assert main(["det-eval", str(out), "--detections", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text()) == json.loads((out / "detections.json").read_text())
    # another margin at evaluation (here none: the IIF-trained model scored with softmax(z)) re-scores it
    assert main(["det-eval", str(out), "--margin", "softmax", "--detections", str(tmp_path / "p.json")]) == 0
    posthoc = json.loads((tmp_path / "p.json").read_text())
    assert posthoc and posthoc != json.loads((out / "detections.json").read_text())


SIDE_128 = ("model.min_size=128", "model.max_size=128")


@pytest.mark.slow
def test_det_train_resume_is_bit_identical(detection_benchmark, tmp_path):
    """Two epochs straight, or one epoch then --resume: the same weights (at 128 px each batch's multi-scale
    side is one of 96, 128, 160, drawn from torch's RNG, which the checkpoint restores)."""
    pytest.importorskip("faster_coco_eval")
    from iif.cli import main

    bench = detection_benchmark[0]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(_det_train_args(bench, full, "schedule.epochs=2", *SIDE_128)) == 0
    assert main(_det_train_args(bench, part, "schedule.epochs=2", *SIDE_128, "runtime.stop_after_epoch=1")) == 0
    assert main(_det_train_args(bench, part, "schedule.epochs=2", *SIDE_128, "--resume")) == 0
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
