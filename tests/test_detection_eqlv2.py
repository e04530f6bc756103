"""EQLv2 (Tan et al., CVPR 2021) as the detection method "eqlv2": the loss, its gradients and its weight
update against the published formulas (Eq. 7-8) computed independently in numpy, and its use in a detector."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from _detection_helpers import RESUME_TRAIN_KW, four_square_images  # noqa: E402
from _detection_helpers import one_image_batch as _batch  # noqa: E402
from _detection_helpers import tiny_fpn_rcnn as _tiny  # noqa: E402

from iif.errors import IIFError  # noqa: E402


def _ref_step(z, labels, pos, neg, started, gamma=12.0, mu=0.8, alpha=4.0):
    """numpy: (loss, dL/dz, new pos, new neg) of one EQLv2 iteration (C sigmoid classifiers, background all 0)."""
    n, c = z.shape
    y = np.zeros((n, c))
    for i, lab in enumerate(labels):
        if lab > 0:
            y[i, lab - 1] = 1.0
    if started:
        g = pos / (neg + 1e-10)
        r = 1.0 / (1.0 + np.exp(-gamma * (g - mu)))  # Eq. 8
        q = 1.0 + alpha * (1.0 - r)  # Eq. 7
    else:
        q = r = np.ones(c)
    w = q[None] * y + r[None] * (1 - y)
    p = 1.0 / (1.0 + np.exp(-z))
    loss = float(np.sum(-w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / n)
    grad = w * (p - y) / n  # the reweighted gradients: q (p - 1) on positives, r p on negatives
    mag = np.abs(p - y) * w
    return loss, grad, pos + (mag * y).sum(0), neg + (mag * (1 - y)).sum(0)


def test_eqlv2_loss_gradient_and_update_match_the_published_formulas_over_two_iterations():
    from iif.detection.eqlv2 import EQLv2Loss

    labels = np.array([0, 1, 3, 1, 0, 1])  # class 2 has no positive: g = 0, r = f(0) ~ 7e-5, q ~ 5
    z1 = np.array([[-1.0, 0.5, -2.0], [1.5, -0.5, 0.2], [-0.3, -1.2, 0.9], [0.4, 0.1, -0.7],
                   [-2.0, -1.5, -0.1], [0.3, 0.8, -1.1]])
    z2 = z1[::-1].copy() * 0.7 + 0.2
    loss_fn = EQLv2Loss(3).train()
    pos, neg, started = np.zeros(3), np.zeros(3), False
    for z in (z1, z2):
        want_loss, want_grad, pos, neg = _ref_step(z, labels, pos, neg, started)
        t = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        loss = loss_fn(t, torch.tensor(labels))
        loss.backward()
        np.testing.assert_allclose(loss.item(), want_loss, rtol=1e-12)
        np.testing.assert_allclose(t.grad.numpy(), want_grad, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(loss_fn.pos_grad.numpy(), pos, rtol=1e-12)
        np.testing.assert_allclose(loss_fn.neg_grad.numpy(), neg, rtol=1e-12)
        started = True
    # The second iteration's weights differ from 1 (the test exercises Eq. 7-8, not the first-step weights).
    q, r = loss_fn.class_weights()
    assert float((q - 1).abs().max()) > 0.1 and float(r.min()) < 0.5
    # Eval mode computes the loss without accumulating.
    before = loss_fn.pos_grad.clone()
    loss_fn.eval()(torch.tensor(z1), torch.tensor(labels))
    assert torch.equal(loss_fn.pos_grad, before)


def test_eqlv2_map_is_the_published_mapping_function():
    from iif.detection.eqlv2 import eqlv2_map

    g = np.array([0.0, 0.5, 0.8, 1.0, 3.0])
    want = 1.0 / (1.0 + np.exp(-12.0 * (g - 0.8)))
    np.testing.assert_allclose(eqlv2_map(torch.tensor(g), 12.0, 0.8).numpy(), want, rtol=1e-12)
    assert abs(float(eqlv2_map(torch.tensor(0.8), 12.0, 0.8)) - 0.5) < 1e-12


def test_use_margin_eqlv2_replaces_the_classification_loss_and_scores_with_sigmoid():
    from iif.detection.margins import use_margin

    model = _tiny()
    use_margin(model, "eqlv2", [10, 5, 1], when="train", params={"alpha": 2.0})
    seen = {}
    model.roi_heads.box_predictor.cls_score.register_forward_hook(lambda m, i, o: seen.__setitem__("z", o))

    def record(out):
        seen["labels"] = torch.cat(list(out[2]))  # the labels of the RoIs torchvision sampled
        return out

    images, targets = _batch()
    model.train()
    tap = model.roi_heads.select_training_samples  # the eqlv2 tap (an instance attribute)
    model.roi_heads.select_training_samples = lambda p, t: record(tap(p, t))
    pos, neg = np.zeros(3), np.zeros(3)
    for step in range(2):
        losses = model(images, targets)
        z = seen["z"].detach().double().numpy()[:, 1:]
        want, _, pos, neg = _ref_step(z, seen["labels"].numpy(), pos, neg, step > 0, alpha=2.0)
        np.testing.assert_allclose(losses["loss_classifier"].item(), want, rtol=1e-5)
        sum(losses.values()).backward()
    np.testing.assert_allclose(model.roi_heads.box_predictor.adjuster.loss.pos_grad.numpy(), pos, rtol=1e-5)
    model.roi_heads.select_training_samples = tap
    model.eval()
    with torch.no_grad():
        out = model(images)[0]
    assert out["scores"].numel() > 0
    # Every detection's score is sigmoid of its class logit, which softmax would not give: recompute from the
    # kept logits of the RoIs (each detection's score must be among sigmoid(z[:, label])).
    z = seen["z"].detach()
    for s, lab in zip(out["scores"][:10], out["labels"][:10]):
        assert torch.isclose(torch.sigmoid(z[:, int(lab)]), s, atol=1e-6).any()
    use_margin(model, "softmax")
    assert not {"forward", "postprocess_detections", "select_training_samples"} & set(model.roi_heads.__dict__)


def test_postprocess_sigmoid_thresholds_and_suppresses_per_class():
    from iif.detection.eqlv2 import postprocess_sigmoid

    model = _tiny("fasterrcnn_r10_fpn")
    rh = model.roi_heads
    rh.score_thresh, rh.nms_thresh = 0.3, 0.5
    proposals = [torch.tensor([[0.0, 0, 20, 20], [1, 1, 21, 21], [40, 40, 60, 60]])]
    logits = torch.tensor([[5.0, 2.0, -3.0, 0.0], [5.0, 1.0, -3.0, 0.5], [5.0, -1.0, 1.5, -0.4]])
    boxes, scores, labels = postprocess_sigmoid(rh, logits, torch.zeros(3, 16), proposals, [(64, 64)])
    sig = torch.sigmoid(logits[:, 1:])
    # Kept: class 1 of RoI 0 (RoI 1 overlaps it at IoU 0.82 and is suppressed), class 3 of RoI 1 (0.62 > 0.3),
    # class 2 of RoI 2, class 3 of RoI 2 (0.40); background logit 5 plays no part.
    want = sorted([(float(sig[0, 0]), 1), (float(sig[1, 2]), 3), (float(sig[2, 1]), 2), (float(sig[2, 2]), 3)],
                  reverse=True)
    got = sorted(zip(scores[0].tolist(), labels[0].tolist()), reverse=True)
    assert [lab for _, lab in got] == [lab for _, lab in want]
    np.testing.assert_allclose([s for s, _ in got], [s for s, _ in want], rtol=1e-6)


def test_eqlv2_bad_input_is_one_line():
    from iif.detection.margins import use_margin
    from iif.detection.models import build_detector

    model = _tiny("fasterrcnn_r10_fpn")
    with pytest.raises(IIFError, match="no parameter 'beta'"):
        use_margin(model, "eqlv2", [1, 2, 3], when="train", params={"beta": 1})
    with pytest.raises(IIFError, match="finite number >= 0"):
        use_margin(model, "eqlv2", [1, 2, 3], when="train", params={"gamma": "x"})
    with pytest.raises(IIFError, match="does not take when"):
        use_margin(model, "eqlv2", [1, 2, 3], when="test")
    ssd = build_detector("ssd300_vgg16", 3)
    with pytest.raises(IIFError, match="RoIHeads"):
        use_margin(ssd, "eqlv2", [1, 2, 3], when="train")
    with pytest.raises(IIFError, match="params="):
        use_margin(model, "iif", [1, 2, 3], params={"gamma": 2})


def test_det_config_margin_eqlv2_builds_the_eqlv2_detector():
    from iif.detection.config import load_detection_config
    from iif.detection.eqlv2 import EQLv2Adjuster
    from iif.detection.runs import build_from_config

    cfg = load_detection_config(None, ["model.arch=fasterrcnn_r10_fpn", "margin.method=eqlv2", "model.min_size=64",
                                       "model.max_size=64", "model.fpn_channels=16", "model.representation_size=32"])
    assert cfg.margin.when in (None, "train")
    model = build_from_config(cfg, 3, np.array([10.0, 5.0, 1.0]), log=lambda *a: None)
    pred = model.roi_heads.box_predictor
    assert isinstance(pred.adjuster, EQLv2Adjuster) and pred.when == "train"
    assert (pred.adjuster.loss.gamma, pred.adjuster.loss.mu, pred.adjuster.loss.alpha) == (12.0, 0.8, 4.0)
    images, targets = _batch()
    model.train()
    losses = model(images, [{k: v for k, v in targets[0].items() if k != "masks"}])
    assert torch.isfinite(losses["loss_classifier"]) and bool(pred.adjuster.loss.started)
    with pytest.raises(IIFError, match="'margin.when' is 'train_and_test' but eqlv2 is a training loss"):
        load_detection_config(None, ["margin.method=eqlv2", "margin.when=train_and_test"])


def test_det_train_resume_with_eqlv2_is_exact(tmp_path):
    """The EQLv2 accumulators travel in last.pt: 1 epoch + resume gives the 2-epoch run's weights and sums."""
    from iif.detection.engine import train_detector
    from iif.detection.margins import use_margin

    ds = four_square_images()
    quiet = lambda s: None  # noqa: E731
    KW = RESUME_TRAIN_KW

    def eql(seed=0):
        return use_margin(_tiny("fasterrcnn_r10_fpn", seed), "eqlv2", [2, 2, 2], when="train")

    full = eql()
    train_detector(full, ds, epochs=2, out_dir=tmp_path / "a", log=quiet, **KW)
    train_detector(eql(), ds, epochs=2, out_dir=tmp_path / "b", stop_after_epoch=1, log=quiet, **KW)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["margin_state"]
    assert float(saved["roi_heads.box_predictor.adjuster.loss.neg_grad"].sum()) > 0
    resumed = eql(seed=99)
    train_detector(resumed, ds, epochs=2, out_dir=tmp_path / "b", resume=True, log=quiet, **KW)
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la, lb = full.roi_heads.box_predictor.adjuster.loss, resumed.roi_heads.box_predictor.adjuster.loss
    assert torch.equal(la.pos_grad, lb.pos_grad) and torch.equal(la.neg_grad, lb.neg_grad)
