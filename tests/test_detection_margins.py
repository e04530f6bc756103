"""use_margin on torchvision detectors (iif.detection.margins): the adjusted logits reach torchvision's own loss
and inference softmax, checked against values computed by hand from the raw logits."""

import copy
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import FasterRCNN, MaskRCNN  # noqa: E402
from torchvision.models.detection import roi_heads as roi_heads_module  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: E402
from torchvision.models.detection.ssd import SSD  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign  # noqa: E402

from iif import ClassFrequency, PostHocIIF  # noqa: E402
from iif.detection.margins import METHODS, WHEN, CosineBoxClassifier, MarginBoxPredictor, use_margin  # noqa: E402
from iif.errors import IIFError  # noqa: E402

COUNTS = np.array([40, 6, 1])  # image counts of the C = 3 foreground classes
NUM_IMAGES = 50
FREQ = ClassFrequency(COUNTS, 2 * COUNTS, NUM_IMAGES, 2 * int(COUNTS.sum()), task="detection")


# ---------------------------------------------------------------------------------------------- fixtures


def _rcnn(cls=FasterRCNN, num_logits=4, seed=0, **kw):
    """A tiny two-stage detector (one 8-channel feature map at stride 4, 32-d box head): milliseconds a step."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    args = dict(min_size=64, max_size=64, rpn_anchor_generator=AnchorGenerator(((16, 32),), ((1.0,),)),
                box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 7 * 7, 32),
                box_predictor=FastRCNNPredictor(32, num_logits), rpn_pre_nms_top_n_train=50,
                rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                box_batch_size_per_image=16, box_score_thresh=0.0, box_detections_per_img=100)
    if cls is MaskRCNN:
        args.update(mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), mask_head=MaskRCNNHeads(8, (16,), 1),
                    mask_predictor=MaskRCNNPredictor(16, 16, num_logits))
    args.update(kw)
    return cls(backbone, num_classes=None, **args)


class _TinySSDBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.out_channels = [8, 8]

    def forward(self, x):
        f1 = F.relu(self.a(x))
        return OrderedDict([("0", f1), ("1", F.relu(self.b(f1)))])


def _ssd(num_logits=4, seed=0):
    torch.manual_seed(seed)
    return SSD(_TinySSDBackbone(), DefaultBoxGenerator([[2], [2]]), (64, 64), num_classes=num_logits)


def _data(masks=False):
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 34.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 20.0, 24.0]]), "labels": torch.tensor([3, 2])},
    ]
    if masks:
        for t in targets:
            m = torch.zeros(len(t["labels"]), 64, 64, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(t["boxes"].int().tolist()):
                m[i, y0:y1, x0:x1] = 1
            t["masks"] = m
    return imgs, targets


def _base(model):
    p = model.roi_heads.box_predictor
    return p.predictor if isinstance(p, MarginBoxPredictor) else p


def _raw_logits_hook(module, store):
    """Record the raw class logits the (wrapped) predictor produces."""
    def hook(mod, inp, out):
        store["z"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
    return module.register_forward_hook(hook)


def _spy_loss(monkeypatch):
    seen = {}
    original = roi_heads_module.fastrcnn_loss

    def spy(class_logits, box_regression, labels, regression_targets):
        seen["logits"] = class_logits.detach().clone()
        seen["labels"] = torch.cat(labels)
        return original(class_logits, box_regression, labels, regression_targets)

    monkeypatch.setattr(roi_heads_module, "fastrcnn_loss", spy)
    return seen


def _spy_postprocess(monkeypatch, model):
    seen = {}
    original = model.roi_heads.postprocess_detections

    def spy(class_logits, box_regression, proposals, image_shapes):
        seen["logits"] = class_logits.detach().clone()
        seen["per_image"] = [len(p) for p in proposals]
        return original(class_logits, box_regression, proposals, image_shapes)

    monkeypatch.setattr(model.roi_heads, "postprocess_detections", spy)
    return seen


def _train_losses(model, imgs, targets, seed=3):
    model.train()
    torch.manual_seed(seed)  # the RPN/RoI samplers draw at random
    return model(imgs, targets)


def _full(fg, bg):
    return torch.tensor([bg] + [float(v) for v in fg], dtype=torch.float32)


# Hand-computed adjustments of the raw logits z (N, C + 1), background column first.
def _iif_raw_image(z):
    return z * _full(np.log(NUM_IMAGES / COUNTS), 1.0)


def _iif_smooth_object(z):  # IOF: K = number of instances, n = instance counts
    k, n = 2 * COUNTS.sum(), 2 * COUNTS
    return z * _full(np.log((k + 1) / (n + 1)) + 1, 1.0)


def _bs(z):
    return z + _full(np.log(COUNTS), 0.0)


def _la_loss(z, tau=0.5):
    return z + _full(tau * np.log(COUNTS / COUNTS.sum()), 0.0)


def _la_posthoc(z, tau=1.0):
    return z + _full(-tau * np.log(COUNTS / COUNTS.sum()), 0.0)


def _la_bayes_loss(z, tau=0.5):
    # The Bayes form (background 0): the loss adds tau ln p_c + ln sum_j p_j^(1 - tau).
    p = COUNTS / COUNTS.sum()
    return z + _full(tau * np.log(p) + np.log(np.sum(p ** (1 - tau))), 0.0)


def _la_bayes_posthoc(z):
    # tau = 1: -ln(C p_c) on the foreground, 0 on the background.
    return z + _full(-np.log(len(COUNTS) * COUNTS / COUNTS.sum()), 0.0)


def _norcal(z, gamma=0.7):
    return z + _full(-gamma * np.log(COUNTS), 0.0)


# ---------------------------------------------------------------------------------------------- (a) loss


TRAIN_CASES = [
    (dict(method="iif", variant="raw"), _iif_raw_image),
    (dict(method="iif", variant="smooth", by="object", when="train"), _iif_smooth_object),
    (dict(method="balanced_softmax", when="train"), _bs),
    (dict(method="logit_adjustment", tau=0.5, when="train", la_form="prior"), _la_loss),
    (dict(method="logit_adjustment", tau=0.5, when="train"), _la_bayes_loss),
]


@pytest.mark.parametrize("kwargs,hand", TRAIN_CASES, ids=lambda c: c["method"] if isinstance(c, dict) else "")
def test_adjusted_logits_reach_fastrcnn_loss(monkeypatch, kwargs, hand):
    model = _rcnn()
    kwargs = dict(kwargs)
    use_margin(model, kwargs.pop("method"), FREQ, **kwargs)
    raw = {}
    _raw_logits_hook(_base(model), raw)
    seen = _spy_loss(monkeypatch)
    imgs, targets = _data()
    losses = _train_losses(model, imgs, targets)
    z, labels = raw["z"], seen["labels"]
    assert (labels == 0).any() and (labels > 0).any()  # both background and foreground RoIs were sampled
    want_logits = hand(z)
    torch.testing.assert_close(seen["logits"], want_logits)
    assert torch.equal(seen["logits"][:, 0], z[:, 0])  # background logit untouched
    assert not torch.allclose(seen["logits"][:, 1:], z[:, 1:])
    want = F.cross_entropy(want_logits, labels)
    torch.testing.assert_close(losses["loss_classifier"].detach(), want)
    assert not torch.isclose(want, F.cross_entropy(z, labels))


def test_mask_rcnn_loss_and_masks_untouched(monkeypatch):
    imgs, targets = _data(masks=True)
    plain = _rcnn(MaskRCNN)
    switched = copy.deepcopy(plain)
    use_margin(switched, "iif", FREQ, variant="raw")
    raw = {}
    _raw_logits_hook(_base(switched), raw)
    seen = _spy_loss(monkeypatch)
    got = _train_losses(switched, imgs, targets)
    want = _train_losses(plain, imgs, targets)
    torch.testing.assert_close(got["loss_classifier"].detach(), F.cross_entropy(_iif_raw_image(raw["z"]), seen["labels"]))
    for key in ("loss_mask", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"):
        assert torch.equal(got[key], want[key]), key  # RPN, box regression and mask head untouched


# ---------------------------------------------------------------------------------------------- (b) scores


EVAL_CASES = [
    (dict(method="iif", variant="raw"), _iif_raw_image),
    (dict(method="iif", variant="smooth", by="object", when="test"), _iif_smooth_object),
    (dict(method="logit_adjustment", when="test", la_form="prior"), _la_posthoc),
    (dict(method="logit_adjustment", when="test"), _la_bayes_posthoc),
    (dict(method="norcal", when="test", gamma=0.7), _norcal),
]


@pytest.mark.parametrize("kwargs,hand", EVAL_CASES, ids=lambda c: c["method"] if isinstance(c, dict) else "")
def test_adjusted_logits_reach_inference_softmax(monkeypatch, kwargs, hand):
    model = _rcnn()
    kwargs = dict(kwargs)
    use_margin(model, kwargs.pop("method"), FREQ, **kwargs)
    model.eval()
    raw = {}
    _raw_logits_hook(_base(model), raw)
    seen = _spy_postprocess(monkeypatch, model)
    imgs, _ = _data()
    with torch.no_grad():
        out = model(imgs)
    adjusted = hand(raw["z"])
    torch.testing.assert_close(seen["logits"], adjusted)
    # The detector's scores are softmax(adjusted) with the background column dropped: the best detection of
    # each image carries the largest foreground probability over that image's proposals.
    probs = torch.softmax(adjusted, dim=-1)[:, 1:].split(seen["per_image"])
    for det, p in zip(out, probs):
        best = int(det["scores"].argmax())
        torch.testing.assert_close(det["scores"][best], p.max())
        assert int(det["labels"][best]) == int(p.max(dim=0).values.argmax()) + 1
        plain_best = torch.softmax(raw["z"], -1)[:, 1:].max()
        assert not torch.isclose(p.max(), plain_best)


# ---------------------------------------------------------------------------------------------- (c) when


def _grads(model):
    return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


def _eval_logits(monkeypatch, model, imgs):
    model.eval()
    seen = _spy_postprocess(monkeypatch, model)
    with torch.no_grad():
        out = model(imgs)
    return seen["logits"], out


def test_when_test_leaves_training_bit_identical_and_changes_inference(monkeypatch):
    imgs, targets = _data()
    plain = _rcnn()
    switched = copy.deepcopy(plain)
    use_margin(switched, "iif", FREQ, variant="raw", when="test")
    lp, ls = _train_losses(plain, imgs, targets), _train_losses(switched, imgs, targets)
    assert lp.keys() == ls.keys()
    for k in lp:
        assert torch.equal(lp[k], ls[k]), k
    sum(lp.values()).backward()
    sum(ls.values()).backward()
    for gp, gs in zip(_grads(plain), _grads(switched)):
        assert (gp is None and gs is None) or torch.equal(gp, gs)
    zp, _ = _eval_logits(monkeypatch, plain, imgs)
    zs, _ = _eval_logits(monkeypatch, switched, imgs)
    torch.testing.assert_close(zs, _iif_raw_image(zp))
    assert not torch.allclose(zs, zp)


def test_when_train_changes_training_and_leaves_inference_identical(monkeypatch):
    imgs, targets = _data()
    plain = _rcnn()
    switched = copy.deepcopy(plain)
    use_margin(switched, "balanced_softmax", FREQ, when="train")
    lp, ls = _train_losses(plain, imgs, targets), _train_losses(switched, imgs, targets)
    assert not torch.equal(lp["loss_classifier"], ls["loss_classifier"])
    assert torch.equal(lp["loss_box_reg"], ls["loss_box_reg"])
    zp, outp = _eval_logits(monkeypatch, plain, imgs)
    zs, outs = _eval_logits(monkeypatch, switched, imgs)
    assert torch.equal(zp, zs)
    for a, b in zip(outp, outs):
        for k in a:
            assert torch.equal(a[k], b[k])


# ---------------------------------------------------------------------------------------------- (d) background


def test_background_margin_logit_adjustment_by_hand(monkeypatch):
    imgs, _ = _data()
    model = _rcnn()
    assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.25
    use_margin(model, "logit_adjustment", FREQ, when="test", tau=1.0, background_margin=True)
    raw = {}
    _raw_logits_hook(_base(model), raw)
    z, _ = _eval_logits(monkeypatch, model, imgs)
    p_bg = 0.75  # 1 - positive_fraction of torchvision's RoI sampler
    prior = np.concatenate([[p_bg], (1 - p_bg) * COUNTS / COUNTS.sum()])
    assert prior.sum() == pytest.approx(1.0)
    want = raw["z"] - torch.tensor(np.log(prior), dtype=torch.float32)
    torch.testing.assert_close(z, want)
    assert model.roi_heads.box_predictor.config["background_fraction"] == 0.75


def test_background_margin_follows_the_sampler_and_explicit_fraction(monkeypatch):
    imgs, _ = _data()
    model = _rcnn(box_positive_fraction=0.5)
    use_margin(model, "logit_adjustment", FREQ, when="test", tau=2.0, background_margin=True)
    assert model.roi_heads.box_predictor.config["background_fraction"] == 0.5
    use_margin(model, "logit_adjustment", FREQ, when="test", tau=2.0, background_margin=True,
               background_fraction=0.9)
    raw = {}
    _raw_logits_hook(_base(model), raw)
    z, _ = _eval_logits(monkeypatch, model, imgs)
    prior = np.concatenate([[0.9], 0.1 * COUNTS / COUNTS.sum()])
    torch.testing.assert_close(z, raw["z"] - 2.0 * torch.tensor(np.log(prior), dtype=torch.float32))


def test_background_margin_balanced_softmax_loss_by_hand(monkeypatch):
    model = _rcnn()
    use_margin(model, "balanced_softmax", FREQ, when="train", background_margin=True)
    raw = {}
    _raw_logits_hook(_base(model), raw)
    seen = _spy_loss(monkeypatch)
    imgs, targets = _data()
    losses = _train_losses(model, imgs, targets)
    n_bg = COUNTS.sum() * 0.75 / 0.25  # background "count" so that n_bg / (n_bg + sum n) = 0.75
    offset = torch.tensor(np.log(np.concatenate([[n_bg], COUNTS])), dtype=torch.float32)
    want = F.cross_entropy(raw["z"] + offset, seen["labels"])
    torch.testing.assert_close(losses["loss_classifier"].detach(), want)


def test_logit_adjusted_loss_with_background_margin_by_hand(monkeypatch):
    model = _rcnn()
    use_margin(model, "logit_adjustment", FREQ, when="train", tau=1.0, background_margin=True,
               background_fraction=0.6)
    raw = {}
    _raw_logits_hook(_base(model), raw)
    seen = _spy_loss(monkeypatch)
    imgs, targets = _data()
    losses = _train_losses(model, imgs, targets)
    prior = np.concatenate([[0.6], 0.4 * COUNTS / COUNTS.sum()])
    want = F.cross_entropy(raw["z"] + torch.tensor(np.log(prior), dtype=torch.float32), seen["labels"])
    torch.testing.assert_close(losses["loss_classifier"].detach(), want)


# ---------------------------------------------------------------------------------------------- (e) SSD


def test_ssd_adjusted_logits_reach_loss_and_scores(monkeypatch):
    imgs, targets = _data()
    plain = _ssd()
    model = copy.deepcopy(plain)
    use_margin(model, "iif", FREQ, variant="raw")
    assert isinstance(model.head.classification_head, MarginBoxPredictor)
    raw = {}
    _raw_logits_hook(model.head.classification_head.predictor, raw)
    seen = {}
    original_loss = model.compute_loss

    def spy_loss(targets_, head_outputs, anchors, matched_idxs):
        seen["loss_logits"] = head_outputs["cls_logits"].detach().clone()
        return original_loss(targets_, head_outputs, anchors, matched_idxs)

    monkeypatch.setattr(model, "compute_loss", spy_loss)
    losses = _train_losses(model, imgs, targets)
    torch.testing.assert_close(seen["loss_logits"], _iif_raw_image(raw["z"]))
    assert torch.equal(seen["loss_logits"][..., 0], raw["z"][..., 0])
    plain_losses = _train_losses(plain, imgs, targets)
    assert torch.equal(losses["bbox_regression"], plain_losses["bbox_regression"])
    assert not torch.isclose(losses["classification"], plain_losses["classification"])

    model.eval()
    original_post = model.postprocess_detections

    def spy_post(head_outputs, anchors, image_shapes):
        seen["score_logits"] = head_outputs["cls_logits"].detach().clone()
        return original_post(head_outputs, anchors, image_shapes)

    monkeypatch.setattr(model, "postprocess_detections", spy_post)
    with torch.no_grad():
        model(imgs)
    torch.testing.assert_close(seen["score_logits"], _iif_raw_image(raw["z"]))


def test_ssd_background_fraction_from_hard_negative_ratio(monkeypatch):
    model = _ssd()
    assert model.neg_to_pos_ratio == 3.0
    use_margin(model, "logit_adjustment", FREQ, when="test", background_margin=True)
    head = model.head.classification_head
    assert head.config["background_fraction"] == pytest.approx(0.75)
    z = torch.randn(2, 5, 4)
    prior = np.concatenate([[0.75], 0.25 * COUNTS / COUNTS.sum()])
    head.eval()
    torch.testing.assert_close(head.adjust(z), z - torch.tensor(np.log(prior), dtype=torch.float32))
    assert head.num_columns == 4  # attribute reads reach the wrapped head


def test_ssd300_vgg16_switches_and_refuses_cosine():
    from torchvision.models.detection import ssd300_vgg16

    with torch.device("meta"):  # modules and shapes without initialising 24M weights; no value is read here
        model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4)
    keys = list(model.state_dict())
    use_margin(model, "iif", FREQ, variant="smooth")
    assert isinstance(model.head.classification_head, MarginBoxPredictor)
    assert list(model.state_dict()) == keys
    with pytest.raises(IIFError, match="not supported for SSD"):
        use_margin(model, "iif", FREQ, cosine_scale=20)
    with pytest.raises(IIFError, match="predicts 4 logits"):
        use_margin(model, "iif", [5, 4, 3, 2])


# ---------------------------------------------------------------------------------------------- (f) cosine


def test_cosine_classifier_values_by_hand():
    torch.manual_seed(0)
    cos = CosineBoxClassifier(5, 4, scale=20.0)
    assert cos.bias is not None and torch.equal(cos.bias, torch.zeros(4))
    with torch.no_grad():
        cos.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    x = torch.randn(6, 5)
    # mmdetection's NormedLinear: v / (||v|| + eps), eps = 1e-6, for features and for every weight row
    # (the background row 0 included); the initial rows have norm ~0.02, so eps shows at 5e-5 relative.
    xn = x / (x.norm(dim=1, keepdim=True) + 1e-6)
    wn = cos.weight / (cos.weight.norm(dim=1, keepdim=True) + 1e-6)
    want = 20.0 * xn @ wn.T + cos.bias
    torch.testing.assert_close(cos(x), want, atol=1e-5, rtol=1e-6)
    xn, wn = x / x.norm(dim=1, keepdim=True), cos.weight / cos.weight.norm(dim=1, keepdim=True)
    torch.testing.assert_close(cos(x), 20.0 * xn @ wn.T + cos.bias, atol=2e-3, rtol=1e-4)  # ~ exact cosine
    nobias = CosineBoxClassifier(5, 4, scale=16.0, bias=False)
    out = nobias(x)
    assert out.abs().max() <= 16.0 + 1e-4
    torch.testing.assert_close(out, 16.0 * xn @ (nobias.weight / nobias.weight.norm(dim=1, keepdim=True)).T,
                               atol=2e-3, rtol=1e-4)
    lin = nn.Linear(5, 4)
    from_lin = CosineBoxClassifier.from_linear(lin, 10.0)
    assert torch.equal(from_lin.weight, lin.weight) and torch.equal(from_lin.bias, lin.bias)


def test_cosine_composes_with_iif_and_keeps_checkpoint_keys(monkeypatch):
    imgs, _ = _data()
    model = _rcnn()
    plain_sd = copy.deepcopy(model.state_dict())
    use_margin(model, "iif", FREQ, variant="raw", cosine_scale=20)
    base = _base(model)
    assert isinstance(base.cls_score, CosineBoxClassifier) and base.cls_score.scale == 20.0
    assert list(model.state_dict()) == list(plain_sd)
    feats = {}
    base.register_forward_pre_hook(lambda mod, inp: feats.__setitem__("x", inp[0].detach().clone()))
    z, _ = _eval_logits(monkeypatch, model, imgs)
    w, b = base.cls_score.weight.detach(), base.cls_score.bias.detach()
    x = feats["x"]
    cosine = 20.0 * (x / (x.norm(dim=1, keepdim=True) + 1e-6)) @ (w / (w.norm(dim=1, keepdim=True) + 1e-6)).T + b
    torch.testing.assert_close(z, _iif_raw_image(cosine), atol=1e-4, rtol=1e-5)
    # A second call without cosine_scale keeps the cosine classifier; with one, it updates the scale only.
    use_margin(model, "logit_adjustment", FREQ, when="test")
    assert _base(model).cls_score is base.cls_score
    use_margin(model, "softmax", cosine_scale=16)
    assert model.roi_heads.box_predictor is base and base.cls_score.scale == 16.0
    model.load_state_dict(plain_sd)  # a plain checkpoint loads into the cosine model (same keys)


# ---------------------------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize("build", [_rcnn, lambda: _rcnn(MaskRCNN), _ssd], ids=["faster", "mask", "ssd"])
def test_checkpoints_map_between_plain_and_switched(build):
    plain = build()
    keys = list(plain.state_dict())
    other = build()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    switched = use_margin(other, "iif", FREQ, variant="smooth")
    assert switched is other
    assert list(switched.state_dict()) == keys  # no "predictor." level, no margin buffers
    # switched checkpoint -> plain model, strict
    plain.load_state_dict(switched.state_dict(), strict=True)
    for a, b in zip(plain.parameters(), switched.parameters()):
        assert torch.equal(a, b)
    # plain checkpoint -> switched model, strict
    fresh = build()
    use_margin(switched, "logit_adjustment", FREQ, when="test")
    switched.load_state_dict(fresh.state_dict(), strict=True)
    for a, b in zip(fresh.parameters(), switched.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- switching


def test_switching_again_replaces_and_softmax_restores():
    model = _rcnn()
    original = model.roi_heads.box_predictor
    use_margin(model, "iif", FREQ, variant="raw")
    use_margin(model, "logit_adjustment", FREQ, when="test")
    wrapper = model.roi_heads.box_predictor
    assert isinstance(wrapper, MarginBoxPredictor) and wrapper.predictor is original
    assert wrapper.method == "logit_adjustment" and wrapper.when == "test"
    assert sum(isinstance(m, MarginBoxPredictor) for m in model.modules()) == 1
    use_margin(model, "softmax")
    assert model.roi_heads.box_predictor is original


def test_wrapper_buffers_follow_to_and_attributes_delegate():
    model = _rcnn().eval()
    use_margin(model, "iif", FREQ, variant="raw")
    wrapper = model.roi_heads.box_predictor
    assert not wrapper.training  # takes the predictor's mode
    names = dict(model.named_buffers())
    assert "roi_heads.box_predictor.adjuster.vec" in names  # a buffer: .to(device) moves it
    model.to(torch.float64)
    assert wrapper.adjuster.vec.dtype == torch.float64
    assert wrapper.cls_score is wrapper.predictor.cls_score
    new = nn.Linear(32, 4)
    wrapper.cls_score = new  # replaces the wrapped predictor's layer
    assert wrapper.predictor.cls_score is new and "cls_score" not in wrapper._modules


def test_count_array_uses_sum_or_given_total():
    model = _rcnn().eval()
    use_margin(model, "iif", COUNTS, variant="raw")
    torch.testing.assert_close(model.roi_heads.box_predictor.adjuster.vec,
                               torch.tensor(np.log(COUNTS.sum() / COUNTS), dtype=torch.float32))
    use_margin(model, "iif", COUNTS, variant="raw", total=NUM_IMAGES)
    torch.testing.assert_close(model.roi_heads.box_predictor.adjuster.vec,
                               torch.tensor(np.log(NUM_IMAGES / COUNTS), dtype=torch.float32))
    assert model.roi_heads.box_predictor.config["K"] == NUM_IMAGES


def test_margin_predictor_on_its_own():
    pred = FastRCNNPredictor(6, 4)
    wrapper = MarginBoxPredictor(pred, PostHocIIF([2.0, 3.0, 4.0], background="first"), when="test", num_logits=4)
    x = torch.randn(5, 6)
    wrapper.train()
    torch.testing.assert_close(wrapper(x)[0], pred(x)[0])
    wrapper.eval()
    torch.testing.assert_close(wrapper(x)[0], pred(x)[0] * torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(wrapper(x)[1], pred(x)[1])


# ---------------------------------------------------------------------------------------------- (g) bad input


@pytest.mark.parametrize("call,match", [
    (lambda m: use_margin(nn.Linear(3, 4), "iif", FREQ), "supports torchvision Faster R-CNN"),
    (lambda m: use_margin(m, "iif", [5, 4]), "predicts 4 logits"),
    (lambda m: use_margin(m, "focal", FREQ), "Unknown method"),
    (lambda m: use_margin(m, "iif", FREQ, when="always"), "Unknown when"),
    (lambda m: use_margin(m, "iif", FREQ, variant="cubic"), "Unknown IIF variant"),
    (lambda m: use_margin(m, "iif", FREQ, by="box"), "Unknown by"),
    (lambda m: use_margin(m, "iif", [5, 0, 1], variant="raw"), "zero count"),
    (lambda m: use_margin(m, "iif", ClassFrequency([5, 0, 1], [5, 0, 1], 6, 6, task="detection"), variant="raw"),
     "zero count"),
    (lambda m: use_margin(m, "iif"), "needs the training counts"),
    (lambda m: use_margin(m, "iif", [1.5, 2, 3]), "whole numbers"),
    (lambda m: use_margin(m, "logit_adjustment", FREQ, when="test", background_margin=True,
                          background_fraction=1.0), "strictly between 0 and 1"),
    (lambda m: use_margin(m, "balanced_softmax", FREQ, when="train", background_margin=True,
                          background_fraction=0.0), "strictly between 0 and 1"),
    (lambda m: use_margin(m, "logit_adjustment", FREQ, when="test", background_fraction=0.7), "only used with"),
    (lambda m: use_margin(m, "iif", FREQ, background_margin=True), "additive methods"),
    (lambda m: use_margin(m, "balanced_softmax", FREQ), "does not take when='train_and_test'"),
    (lambda m: use_margin(m, "balanced_softmax", FREQ, when="test"), "training loss"),
    (lambda m: use_margin(m, "logit_adjustment", FREQ), "does not take when='train_and_test'"),
    (lambda m: use_margin(m, "logit_adjustment", FREQ, when="test", tau=float("nan")), "tau must be"),
    (lambda m: use_margin(m, "logit_adjustment", FREQ, when="test", total=50), "total"),
    (lambda m: use_margin(m, "iif", FREQ, cosine_scale=0), "cosine_scale"),
    (lambda m: use_margin(m, "iif", [5, 3, 1], total="images"), "needs a ClassFrequency"),
    (lambda m: use_margin(m, "balanced_softmax", [5, 0, 1], when="train"), "zero"),
    (lambda m: MarginBoxPredictor(m.roi_heads.box_predictor, PostHocIIF([1.0, 2.0]), num_logits=4),
     "vector of 2 entries"),
    (lambda m: MarginBoxPredictor(m.roi_heads.box_predictor, when="sometimes"), "Unknown when"),
])
def test_bad_input_is_one_line_iif_error(call, match):
    model = _rcnn()
    before = model.roi_heads.box_predictor
    with pytest.raises(IIFError, match=match) as info:
        call(model)
    assert "\n" not in str(info.value)
    assert model.roi_heads.box_predictor is before  # nothing half-switched


def test_bad_input_leaves_a_switched_model_as_it_was():
    model = _rcnn()
    use_margin(model, "iif", FREQ, variant="raw")
    wrapper = model.roi_heads.box_predictor
    with pytest.raises(IIFError):
        use_margin(model, "iif", FREQ, variant="raw", cosine_scale=-1)
    assert model.roi_heads.box_predictor is wrapper
    assert isinstance(_base(model).cls_score, nn.Linear)


def test_public_constants():
    assert METHODS == ("softmax", "iif", "balanced_softmax", "logit_adjustment", "norcal", "seesaw", "eqlv2")
    assert WHEN == ("train_and_test", "train", "test")
    assert math.isclose(0.75, 1 - _rcnn().roi_heads.fg_bg_sampler.positive_fraction)
