"""Fair, correct detection baselines (issue 15): logit adjustment's Bayes form, NorCal, Seesaw, negative IIF
weights, RFS ceil rounding, mask areas for mask-only results, the evaluation's thread fallback, and the
paired bootstrap. Every value is checked against a direct computation written here."""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iif import ClassFrequency
from iif.adjusters import LogitAdjustment, NorCal, bayes_la_offsets, logit_adjustment
from iif.errors import IIFError
from iif.losses import SeesawLoss, build_loss, seesaw_logits

torchvision = pytest.importorskip("torchvision")

from torchvision.models.detection import FasterRCNN  # noqa: E402
from torchvision.models.detection import roi_heads as roi_heads_module  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.ops import MultiScaleRoIAlign  # noqa: E402

from iif.detection.margins import MarginBoxPredictor, use_margin  # noqa: E402
from iif.detection.sampling import RepeatFactorSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COUNTS = np.array([40, 6, 1])
FREQ = ClassFrequency(COUNTS, 2 * COUNTS, 50, 2 * int(COUNTS.sum()), task="detection")


# ------------------------------------------------------------------------------------ logit adjustment


@pytest.mark.parametrize("tau", [1.0, 0.5, 1.7, 0.0])
def test_bayes_offsets_equal_a_direct_numpy_computation(tau):
    counts = np.array([500, 120, 30, 7, 2, 1])
    p = counts / counts.sum()
    want = -tau * np.log(p) - np.log(np.sum(p ** (1 - tau)))
    np.testing.assert_allclose(bayes_la_offsets(counts, tau), want, rtol=0, atol=1e-12)
    if tau == 1.0:
        np.testing.assert_allclose(bayes_la_offsets(counts, 1.0), -np.log(len(counts) * p), atol=1e-12)


def test_bayes_offsets_turn_the_training_posterior_into_the_balanced_one():
    # A detector's posterior under training priors (background pi, foreground (1 - pi) p_c) re-weighted by
    # hand to the balanced target (background pi, foreground (1 - pi) / C) equals softmax(z + [0, a]).
    rng = np.random.default_rng(0)
    counts = np.array([300, 40, 9, 2])
    p = counts / counts.sum()
    z = rng.normal(size=(7, 5)) * 3
    post = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    ratio = np.concatenate([[1.0], (1 / len(p)) / p])  # target prior / training prior, pi cancels
    want = post * ratio
    want /= want.sum(1, keepdims=True)
    got = torch.softmax(LogitAdjustment(counts, background="first", form="bayes")(torch.tensor(z)), -1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the prior form is off by ln C on every foreground logit
    prior = LogitAdjustment(counts, background="first")(torch.tensor(z)).numpy()
    np.testing.assert_allclose(prior[:, 1:] - z[:, 1:] - (-np.log(p)), 0, atol=1e-6)
    np.testing.assert_allclose(logit_adjustment(torch.tensor(z), counts, background="first", form="bayes").numpy()
                               - prior, np.r_[0, [-np.log(4)] * 4][None, :].repeat(7, 0), atol=1e-6)


def test_bayes_and_prior_forms_give_the_same_classification_softmax():
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = torch.softmax(logit_adjustment(z, COUNTS, tau=0.7, form="bayes"), -1)
    b = torch.softmax(logit_adjustment(z, COUNTS, tau=0.7), -1)
    torch.testing.assert_close(a, b)
    with pytest.raises(IIFError, match="form .*'bayes'.*'prior'"):
        LogitAdjustment(COUNTS, form="correct")


def _rcnn(num_logits=4, seed=0):
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    return FasterRCNN(backbone, num_classes=None, min_size=64, max_size=64,
                      rpn_anchor_generator=AnchorGenerator(((16, 32),), ((1.0,),)),
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 7 * 7, 32),
                      box_predictor=FastRCNNPredictor(32, num_logits), rpn_pre_nms_top_n_train=50,
                      rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                      box_batch_size_per_image=16, box_score_thresh=0.0, box_detections_per_img=100)


def _data():
    g = torch.Generator().manual_seed(1)
    imgs = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 34.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 20.0, 24.0]]), "labels": torch.tensor([3, 2])},
    ]
    return imgs, targets


def _offsets(model):
    """The offset the switched predictor adds to a zero logit row (eval / train mode as the model is)."""
    wrapper = model.roi_heads.box_predictor
    return wrapper.adjust(torch.zeros(1, 4))[0].double().numpy()


def test_use_margin_la_forms_and_background_margin():
    p = COUNTS / COUNTS.sum()
    model = _rcnn()
    use_margin(model, "logit_adjustment", FREQ, when="test")
    model.eval()
    np.testing.assert_allclose(_offsets(model), np.r_[0, -np.log(3 * p)], atol=1e-6)
    assert model.roi_heads.box_predictor.config["la_form"] == "bayes"
    use_margin(model, "logit_adjustment", FREQ, when="test", la_form="prior", tau=0.5)
    np.testing.assert_allclose(_offsets(model), np.r_[0, -0.5 * np.log(p)], atol=1e-6)
    use_margin(model, "logit_adjustment", FREQ, when="train", tau=0.5)  # the LA loss adds minus the offsets
    model.train()
    np.testing.assert_allclose(_offsets(model), np.r_[0, 0.5 * np.log(p) + np.log(np.sum(p ** 0.5))], atol=1e-6)
    # background margin: -ln p over C + 1 priors (p_bg = 0.75): the old form, la_form 'prior' implied
    use_margin(model, "logit_adjustment", FREQ, when="test", background_margin=True)
    model.eval()
    full = np.r_[0.75, 0.25 * p]
    np.testing.assert_allclose(_offsets(model), -np.log(full), atol=1e-5)
    with pytest.raises(IIFError, match="background_margin=True .*la_form='prior'"):
        use_margin(model, "logit_adjustment", FREQ, when="test", background_margin=True, la_form="bayes")
    with pytest.raises(IIFError, match="Unknown la_form"):
        use_margin(model, "logit_adjustment", FREQ, when="test", la_form="mixed")
    with pytest.raises(IIFError, match="la_form chooses logit adjustment"):
        use_margin(model, "iif", FREQ, la_form="bayes")


# ------------------------------------------------------------------------------------------------ NorCal


def test_norcal_scores_are_the_renormalised_divided_probabilities():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(6, 4)) * 2
    gamma = 0.6
    s = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    want = s.copy()
    want[:, 1:] /= COUNTS[None, :] ** gamma  # foreground divided by n^gamma, background kept
    want /= want.sum(1, keepdims=True)
    got = torch.softmax(NorCal(COUNTS, gamma, background="first")(torch.tensor(z)), -1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # through use_margin (post-hoc only), the same logits
    model = _rcnn()
    use_margin(model, "norcal", FREQ, when="test", gamma=gamma, by="object")
    model.eval()
    np.testing.assert_allclose(_offsets(model), np.r_[0, -gamma * np.log(2 * COUNTS)], atol=1e-5)
    assert torch.equal(NorCal(COUNTS, 0.0, background="first")(torch.tensor(z)), torch.tensor(z))


@pytest.mark.parametrize("call,match", [
    (lambda m: use_margin(m, "norcal", FREQ, when="train"), "does not take when='train'"),
    (lambda m: use_margin(m, "norcal", FREQ, when="test", gamma=-1), "gamma .* >= 0"),
    (lambda m: use_margin(m, "norcal", FREQ, when="test", gamma=float("nan")), "gamma"),
    (lambda m: use_margin(m, "seesaw", FREQ, when="test"), "does not take when='test'"),
    (lambda m: use_margin(m, "seesaw", FREQ, when="train", seesaw_p=-0.1), "seesaw_p must be"),
    (lambda m: use_margin(m, "logit_adjustment", FREQ, when="test", allow_negative=True), "allow_negative"),
])
def test_new_methods_bad_input(call, match):
    with pytest.raises(IIFError, match=match):
        call(_rcnn())


# ------------------------------------------------------------------------------------------------ Seesaw


def _seesaw_direct(z, y, counts, p, q, eps=1e-2, bg_first=False):
    """The published formula, one sample at a time: L = -ln(e^z_i / (e^z_i + sum_{j != i} S_ij e^z_j))."""
    losses = []
    for zr, yi in zip(z, y):
        if bg_first and yi == 0:  # background sample: plain cross-entropy
            losses.append(-zr[0] + math.log(sum(math.exp(v) for v in zr)))
            continue
        fg = zr[1:] if bg_first else zr
        i = yi - 1 if bg_first else yi
        sig = np.exp(fg - fg.max()) / np.exp(fg - fg.max()).sum()
        denom = math.exp(fg[i]) + (math.exp(zr[0]) if bg_first else 0.0)
        for j in range(len(fg)):
            if j == i:
                continue
            ni, nj = max(counts[i], 1), max(counts[j], 1)
            m = (nj / ni) ** p if nj < ni else 1.0
            r = sig[j] / max(sig[i], eps)
            c = r ** q if r > 1 else 1.0
            denom += m * c * math.exp(fg[j])
        losses.append(-(fg[i] - math.log(denom)))
    return np.array(losses)


@pytest.mark.parametrize("p,q", [(0.8, 2.0), (0.8, 0.0), (0.0, 2.0), (1.3, 0.5)])
def test_seesaw_loss_equals_the_published_formula(p, q):
    g = torch.Generator().manual_seed(5)
    z = torch.randn(40, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 6, (40,), generator=g)
    prior = torch.tensor([500.0, 200, 50, 10, 0, 3], dtype=torch.float64)  # a zero count is clamped to 1
    loss = SeesawLoss(6, p=p, q=q, reduction="none")
    loss.cum_samples += prior
    got = loss(z, y)
    counts = (prior + torch.bincount(y, minlength=6)).numpy()  # the batch counts before its loss
    np.testing.assert_allclose(got.detach().numpy(), _seesaw_direct(z.numpy(), y.numpy(), counts, p, q), rtol=1e-10)
    np.testing.assert_allclose(loss.cum_samples.numpy(), counts)
    loss.eval()
    loss(z, y)
    np.testing.assert_allclose(loss.cum_samples.numpy(), counts)  # no accumulation outside training


def test_seesaw_with_background_first_and_registry():
    g = torch.Generator().manual_seed(8)
    z = torch.randn(30, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (30,), generator=g)  # 0 = background
    y[:3] = 0
    loss = build_loss("seesaw", [9, 9, 9, 9], background="first", reduction="none")
    assert isinstance(loss, SeesawLoss) and loss.num_classes == 4
    got = loss(z, y).detach().numpy()
    counts = np.bincount(y[y > 0].numpy() - 1, minlength=4)
    np.testing.assert_allclose(got, _seesaw_direct(z.numpy(), y.numpy(), counts, 0.8, 2.0, bg_first=True), rtol=1e-10)
    # gradients flow through the logits only (compensation uses detached probabilities), and p=q=0 is CE
    zz = z.clone().requires_grad_()
    SeesawLoss(4, p=0.0, q=0.0, background="first")(zz, y).backward()
    zc = z.clone().requires_grad_()
    F.cross_entropy(zc, y).backward()
    torch.testing.assert_close(zz.grad, zc.grad)
    with pytest.raises(IIFError, match="hard labels"):
        SeesawLoss(4, background="first")(z, torch.softmax(z, -1))
    with pytest.raises(IIFError, match="q .*non-negative"):
        SeesawLoss(4, q=-1)


def test_seesaw_through_use_margin_reaches_fastrcnn_loss(monkeypatch):
    model = _rcnn()
    use_margin(model, "seesaw", FREQ, when="train")
    raw = {}
    base = model.roi_heads.box_predictor.predictor
    base.register_forward_hook(lambda m, i, o: raw.__setitem__("z", o[0].detach().clone()))
    seen = {}
    original = roi_heads_module.fastrcnn_loss

    def spy(class_logits, box_regression, labels, regression_targets):
        seen["logits"], seen["labels"] = class_logits.detach().clone(), torch.cat(labels)
        return original(class_logits, box_regression, labels, regression_targets)

    monkeypatch.setattr(roi_heads_module, "fastrcnn_loss", spy)
    imgs, targets = _data()
    model.train()
    total = torch.zeros(3, dtype=torch.float64)
    for step in range(2):  # counts accumulate over steps
        torch.manual_seed(3 + step)
        losses = model(imgs, targets)
        labels = seen["labels"]
        assert (labels == 0).any() and (labels > 0).any()
        total += torch.bincount(labels[labels > 0] - 1, minlength=3).double()
        want = seesaw_logits(raw["z"], labels, total, 0.8, 2.0, background="first")
        torch.testing.assert_close(seen["logits"], want)
        direct = _seesaw_direct(raw["z"].double().numpy(), labels.numpy(), total.numpy(), 0.8, 2.0, bg_first=True)
        assert losses["loss_classifier"].item() == pytest.approx(direct.mean(), rel=1e-5)
    torch.testing.assert_close(model.roi_heads.box_predictor.adjuster.cum_samples, total)
    # a deep copy taps its own labels into its own adjuster
    twin = copy.deepcopy(model)
    torch.manual_seed(9)
    twin(imgs, targets)
    torch.testing.assert_close(model.roi_heads.box_predictor.adjuster.cum_samples, total)
    assert twin.roi_heads.box_predictor.adjuster.cum_samples.sum() > total.sum()
    # inference sees the raw logits; switching back removes the label tap
    model.eval()
    x = torch.randn(2, 4)
    assert torch.equal(model.roi_heads.box_predictor.adjust(x), x)
    assert "select_training_samples" in model.roi_heads.__dict__
    use_margin(model, "softmax")
    assert "select_training_samples" not in model.roi_heads.__dict__
    assert not isinstance(model.roi_heads.box_predictor, MarginBoxPredictor)


# ------------------------------------------------------------------------------------ negative IIF weights


def test_allow_negative_uses_the_authors_negative_weights():
    counts = np.array([700, 200, 100])  # class 0 holds most of K = 1000: relative weight ln(300/700) < 0
    freq = ClassFrequency(counts, counts, 1000, int(counts.sum()), task="detection")
    model = _rcnn()
    with pytest.raises(IIFError, match="allow_negative"):
        use_margin(model, "iif", freq, variant="relative")
    use_margin(model, "iif", freq, variant="relative", allow_negative=True)
    w = model.roi_heads.box_predictor.adjuster.weights.double().numpy()
    np.testing.assert_allclose(w, np.log((1000 - counts) / counts), rtol=1e-6)
    assert w[0] < 0
    z = torch.tensor([[0.5, 2.0, 1.0, -1.0]])
    np.testing.assert_allclose(model.roi_heads.box_predictor.adjust(z).numpy(),
                               z.numpy() * np.r_[1.0, w][None, :], rtol=1e-6)


# ------------------------------------------------------------------------------------------ RFS rounding


def test_rfs_ceil_repeats_each_image_ceil_r_times_every_epoch():
    r = np.array([1.0, 1.2, 2.5, 3.0, 1.01, 4.9])
    s = RepeatFactorSampler(r, num_replicas=1, rank=0, seed=4, rounding="ceil")
    for epoch in range(3):
        s.set_epoch(epoch)
        idx = s.epoch_indices()
        assert np.bincount(idx, minlength=r.size).tolist() == [1, 2, 3, 3, 2, 5]
        assert len(s) == 16
    assert s.expected_len == 16.0
    stoch = RepeatFactorSampler(r, num_replicas=1, rank=0, seed=4)
    assert stoch.rounding == "stochastic" and stoch.expected_len == pytest.approx(r.sum())
    counts = np.mean([np.bincount(stoch.epoch_indices(e), minlength=r.size) for e in range(400)], axis=0)
    np.testing.assert_allclose(counts, r, atol=0.1)  # r copies on average, not ceil(r)
    with pytest.raises(IIFError, match="rounding must be 'stochastic'.*'ceil'"):
        RepeatFactorSampler(r, num_replicas=1, rank=0, rounding="round")


def test_paper_rfs_configs_use_ceil_and_the_cosine_temperature_8():
    from iif.detection.config import detection_configs, load_detection_config

    rfs = [n for n in detection_configs() if n.startswith("det_lvis") and "rfs" in n]
    assert len(rfs) >= 6
    for name in rfs:
        assert load_detection_config(name).data.rfs_rounding == "ceil", name
    assert load_detection_config("det_lvis_r50_1x_softmax").data.rfs_rounding == "stochastic"
    assert load_detection_config("det_lvis_r50_2x_rfs_iof_base10_cos").model.cosine_scale == 8.0
    with pytest.raises(IIFError, match="data.rfs_rounding"):
        load_detection_config("det_lvis_r50_1x_rfs_iif", ["data.rfs_rounding=floor"])
    with pytest.raises(IIFError, match="margin.gamma"):
        load_detection_config("det_bench_softmax", ["margin.method=norcal", "margin.gamma=-2"])


def test_det_eval_margin_spec_takes_norcal_gamma():
    from iif.detection.config import load_detection_config, margin_kwargs
    from iif.detection.runs import parse_margin_spec

    items = parse_margin_spec("norcal:0.5:object")
    assert items == ["margin.method=norcal", "margin.gamma=0.5", "margin.by=object", "margin.when=test"]
    kw = margin_kwargs(load_detection_config("det_bench_softmax", items).margin)
    assert (kw["gamma"], kw["by"], kw["when"]) == (0.5, "object", "test")
    assert parse_margin_spec("logit_adjustment:0.7")[1] == "margin.tau=0.7"


# ------------------------------------------------------------------------------------------- evaluation


def _rle(mask):
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _thin_mask_case():
    """Ground truth and mask-only results where box and mask area fall in different COCO ranges: thin
    diagonal masks whose boxes are large (> 96^2) but whose pixels are few (< 32^2)."""
    h = w = 160
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    dets = []
    rng = np.random.default_rng(0)
    for img in range(1, 5):
        gt["images"].append({"id": img, "height": h, "width": w})
        for k, (cat, thin) in enumerate([(1, True), (2, False), (1, False)]):
            m = np.zeros((h, w), np.uint8)
            if thin:
                for t in range(120):
                    m[10 + t, 10 + t:13 + t] = 1
            else:
                y0, x0 = 20 + 40 * k, 20 + 30 * k  # 40 x 40: a medium object either way
                m[y0:y0 + 40, x0:x0 + 40] = 1
            r = _rle(m)
            from pycocotools import mask as mask_utils

            box = [float(v) for v in mask_utils.toBbox(dict(r, counts=r["counts"].encode()))]
            aid = len(gt["annotations"]) + 1
            gt["annotations"].append({"id": aid, "image_id": img, "category_id": cat, "segmentation": r,
                                      "area": float(m.sum()), "bbox": box, "iscrowd": 0})
            jitter = np.roll(m, int(rng.integers(0, 2)) if thin else int(rng.integers(-3, 4)), axis=1)
            dets.append({"image_id": img, "category_id": cat, "segmentation": _rle(jitter),
                         "score": float(rng.uniform(0.2, 1.0))})
            dets.append({"image_id": img, "category_id": 3 - cat, "segmentation": _rle(jitter),
                         "score": float(rng.uniform(0.0, 0.5))})
    return gt, dets


def test_mask_only_results_use_mask_areas_as_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from iif.detection.evaluation import evaluate_coco

    gt, dets = _thin_mask_case()
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    res = coco.loadRes(copy.deepcopy(dets))
    ev = COCOeval(coco, res, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ref = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), (100 * v for v in ev.stats[:6])))
    got = evaluate_coco(gt, dets, iou_type="segm")
    for key, v in ref.items():
        assert (math.isnan(got[key]) and v < 0) or got[key] == pytest.approx(v, abs=1e-9), key
    # with box areas (the same results carrying a box) the small range differs: the test can tell them apart
    from pycocotools import mask as mask_utils

    boxed = [dict(d, bbox=[float(v) for v in mask_utils.toBbox(dict(d["segmentation"],
                                                                     counts=d["segmentation"]["counts"].encode()))])
             for d in dets]
    assert evaluate_coco(gt, boxed, iou_type="segm")["APs"] != pytest.approx(got["APs"], abs=1e-6)


def test_evaluation_survives_a_thread_that_cannot_start(monkeypatch, capsys):
    from faster_coco_eval.core import faster_eval_api

    from iif.detection.evaluation import evaluate_coco

    gt, dets = _thin_mask_case()
    normal = evaluate_coco(gt, dets, iou_type="segm")
    tried = []

    class NoThreads:
        def __init__(self, *a, **k):
            tried.append(k.get("max_workers"))
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(faster_eval_api, "ThreadPoolExecutor", NoThreads)
    monkeypatch.setattr(faster_eval_api, "_available_cpu_count", lambda: 16)
    got = evaluate_coco(gt, dets, iou_type="segm")
    assert tried == [4]  # the bounded pool was tried first
    assert "could not start a thread" in capsys.readouterr().err
    for key in normal:
        assert (math.isnan(got[key]) and math.isnan(normal[key])) or got[key] == normal[key], key

    class Broken(NoThreads):
        def __init__(self, *a, **k):
            raise RuntimeError("something else")

    monkeypatch.setattr(faster_eval_api, "ThreadPoolExecutor", Broken)
    with pytest.raises(RuntimeError, match="something else"):
        evaluate_coco(gt, dets, iou_type="segm")


# --------------------------------------------------------------------------------------------- bootstrap


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


def _quantile(sorted_values, q):
    h = (len(sorted_values) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo])


def test_paired_bootstrap_equals_a_direct_loop():
    from iif.detection.uncertainty import paired_bootstrap

    rng = np.random.default_rng(11)
    n = 37
    rows = {"softmax": rng.normal(size=n), "iif": rng.normal(0.3, 1, size=n), "la": rng.normal(0.01, 1, size=n)}
    rows["same"] = rows["softmax"] + 1e-3 * rng.normal(size=n)

    def metric(data, positions):
        return float(np.mean(data[positions]))

    got = paired_bootstrap(rows, metric, n, "softmax", samples=200, seed=7)
    assert set(got) == {"iif", "la", "same"}
    draw = np.random.default_rng(7)
    picks = [draw.integers(0, n, size=n) for _ in range(200)]  # one draw of images, shared by every row
    for name in got:
        diffs = sorted(sum(rows[name][i] for i in p) / n - sum(rows["softmax"][i] for i in p) / n for p in picks)
        assert got[name]["low"] == pytest.approx(_quantile(diffs, 0.025), abs=1e-12)
        assert got[name]["high"] == pytest.approx(_quantile(diffs, 0.975), abs=1e-12)
        assert got[name]["diff"] == pytest.approx(rows[name].mean() - rows["softmax"].mean(), abs=1e-12)
        assert got[name]["std"] == pytest.approx(np.std(diffs, ddof=1), rel=1e-9)
        assert got[name]["within_noise"] == (got[name]["low"] <= 0 <= got[name]["high"])
    assert got["same"]["high"] - got["same"]["low"] < 1e-3  # pairing: shared noise cancels
    assert not got["iif"]["within_noise"]
    with pytest.raises(IIFError, match="reference 'base'"):
        paired_bootstrap(rows, metric, n, "base")
    with pytest.raises(IIFError, match="level"):
        paired_bootstrap(rows, metric, n, "softmax", level=95)


def test_resample_images_gives_ap_of_the_resampled_test_set():
    from iif.detection.evaluation import evaluate_coco
    from iif.detection.uncertainty import paired_bootstrap, resample_images

    gt, dets = _thin_mask_case()
    same_gt, same_dets = resample_images(gt, dets, range(4))
    assert _same(evaluate_coco(same_gt, same_dets, "segm"), evaluate_coco(gt, dets, "segm"))
    # images 2, 2, 4 by hand: copy image 2 under a new id
    g2 = {"images": [dict(im) for im in gt["images"] if im["id"] in (2, 4)],
          "annotations": [dict(a) for a in gt["annotations"] if a["image_id"] in (2, 4)],
          "categories": gt["categories"]}
    g2["images"].append(dict(gt["images"][1], id=99))
    g2["annotations"] += [dict(a, id=1000 + a["id"], image_id=99) for a in gt["annotations"] if a["image_id"] == 2]
    d2 = [d for d in dets if d["image_id"] in (2, 4)] + [dict(d, image_id=99) for d in dets if d["image_id"] == 2]
    rg, rd = resample_images(gt, dets, [1, 1, 3])
    assert _same(evaluate_coco(rg, rd, "segm"), evaluate_coco(g2, d2, "segm"))
    # AP as the bootstrap metric: a row against itself has a zero-width interval
    rows = {"a": dets, "b": list(dets)}
    out = paired_bootstrap(rows, lambda d, pos: evaluate_coco(*resample_images(gt, d, pos), "segm")["AP"], 4, "a",
                           samples=3, seed=0)
    assert out["b"]["low"] == out["b"]["high"] == out["b"]["diff"] == 0.0 and out["b"]["within_noise"]


# ------------------------------------------------------------------------------------- toy Bayes claim


def test_toy_bayes_simulation_ranks_the_bayes_form_first():
    spec = importlib.util.spec_from_file_location("toy_bayes_la", ROOT / "benchmarks" / "toy_bayes_la.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["toy_bayes_la"] = mod
    spec.loader.exec_module(mod)
    res = mod.simulate(classes=20, seed=0, proposals=8000, spread=1.0)
    assert res["bayes"]["mAP"] > res["prior"]["mAP"] > res["background_margin"]["mAP"]
    assert (res["bayes"]["false_positives"] < res["prior"]["false_positives"]
            < res["background_margin"]["false_positives"])
    assert mod.average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True])) == pytest.approx(
        (1 + 2 / 3) / 2)
