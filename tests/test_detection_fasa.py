"""FASA (Zang et al., ICCV 2021) as a detection training option: the running class statistics against numpy,
the virtual features' distribution, the extra loss against an independent cross-entropy, a detector step, the
exact resume and the refusals."""

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from _detection_helpers import RESUME_TRAIN_KW, four_square_images  # noqa: E402
from _detection_helpers import one_image_batch as _batch  # noqa: E402
from _detection_helpers import tiny_fpn_rcnn as _tiny  # noqa: E402

from iif.errors import IIFError  # noqa: E402


def test_running_mean_and_variance_follow_the_momentum_update_over_two_iterations():
    from iif.detection.fasa import FASA

    rng = np.random.default_rng(0)
    x1, l1 = rng.normal(size=(6, 4)), np.array([0, 0, 0, 2, 1, 1])  # class 2 once: variance 0
    x2, l2 = rng.normal(size=(5, 4)) + 3.0, np.array([2, 2, 0, 2, 3])  # class 3 never in batch 1
    f = FASA(4, 4, [5, 5, 5, 5], momentum=0.1)
    mean, var, seen = np.zeros((4, 4)), np.zeros((4, 4)), np.zeros(4, bool)
    for x, lab in ((x1, l1), (x2, l2)):
        f.update(torch.tensor(x, dtype=torch.float32), torch.tensor(lab))
        for c in np.unique(lab):
            xc = x[lab == c].astype(np.float32).astype(np.float64)
            m, v = xc.mean(0), (xc.var(0, ddof=1) if len(xc) > 1 else np.zeros(4))
            mean[c], var[c] = (0.9 * mean[c] + 0.1 * m, 0.9 * var[c] + 0.1 * v) if seen[c] else (m, v)
            seen[c] = True
    np.testing.assert_allclose(f.mean.numpy(), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f.var.numpy(), var, rtol=1e-9, atol=1e-12)
    assert f.seen.tolist() == [True, True, True, True]
    # Class 0 was in both batches: it is the momentum mix, not the last batch's mean.
    assert not np.allclose(mean[0], x2[l2 == 0].mean(0))


def test_initial_probabilities_are_the_normalised_inverse_frequency():
    from iif.detection.fasa import inverse_frequency_probs

    p = inverse_frequency_probs([100, 10, 0, 1])
    inv = np.array([0.01, 0.1, 0.0, 1.0])
    np.testing.assert_allclose(p.numpy(), inv / inv.sum(), rtol=1e-12)
    np.testing.assert_allclose(inverse_frequency_probs([1, 4], scale=3.0, power=0.5).numpy(),
                               np.minimum(3 * np.sqrt(np.array([1, 0.25]) / 1.25), 1.0), rtol=1e-12)


def test_virtual_features_are_drawn_from_the_class_gaussian():
    from iif.detection.fasa import FASA

    f = FASA(3, 2, [1, 1, 1])
    f.mean[:] = torch.tensor([[1.0, -2.0], [5.0, 0.5], [0.0, 0.0]], dtype=torch.float64)
    f.var[:] = torch.tensor([[4.0, 0.25], [1.0, 9.0], [1.0, 1.0]], dtype=torch.float64)
    f.seen[:] = torch.tensor([True, True, False])  # class 2 has no statistics: never drawn
    f.prob[:] = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    torch.manual_seed(7)
    feats, labels = f.sample()
    torch.manual_seed(7)  # the same draws, recomputed by hand
    u = torch.rand(3, dtype=torch.float64)
    want_labels = [c for c in range(2) if u[c] < [1.0, 0.5][c]]
    eps = torch.randn(len(want_labels), 2, dtype=torch.float64)
    assert labels.tolist() == want_labels
    want = f.mean[want_labels] + f.var[want_labels].sqrt() * eps
    torch.testing.assert_close(feats, want, rtol=0, atol=0)
    # Over many draws: the per-class sample mean / variance match N(mu_c, sigma2_c), p_1 = 0.5 the frequency.
    draws = [f.sample() for _ in range(4000)]
    allf = torch.cat([d[0] for d in draws])
    alll = torch.cat([d[1] for d in draws])
    assert 2 not in alll.tolist()
    for c in (0, 1):
        xc = allf[alll == c].numpy()
        se = np.sqrt(f.var[c].numpy() / len(xc))  # the standard error of the sample mean
        assert np.all(np.abs(xc.mean(0) - f.mean[c].numpy()) < 4 * se), (xc.mean(0), se)
        np.testing.assert_allclose(xc.var(0), f.var[c].numpy(), rtol=0.1)
    assert abs(float((alll == 1).sum()) / 4000 - 0.5) < 0.04


def test_loss_term_is_lambda_times_cross_entropy_of_the_virtual_features():
    from iif.detection.fasa import FASA

    f = FASA(3, 4, [1, 1, 1], loss_weight=0.1)
    w = torch.randn(4, 4, dtype=torch.float64)  # C + 1 = 4 logits, background first
    feats = torch.randn(5, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 3, 3, 2])
    got = {}

    def classify(x, y):
        got["x"], got["y"] = x, y
        return x @ w.T

    torch.manual_seed(3)
    loss = f.step(feats, labels, classify)
    x, y = got["x"].numpy(), got["y"].numpy()
    assert len(y) >= 1 and set(y.tolist()) <= {1, 2, 3}
    z = x @ w.numpy().T
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = 0.1 * float(-logp[np.arange(len(y)), y].mean())
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)


def test_adaptation_rule_raises_on_a_fall_and_lowers_on_a_rise():
    from iif.detection.fasa import FASA, adapt_probabilities

    p = torch.tensor([0.5, 0.5, 0.95, 0.2], dtype=torch.float64)
    before = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    now = torch.tensor([0.8, 1.2, 0.5, 1.0], dtype=torch.float64)
    np.testing.assert_allclose(adapt_probabilities(p, before, now).numpy(), [0.55, 0.45, 1.0, 0.2])
    # Groups: the summed loss of {0, 1} fell by 0, so neither changes.
    np.testing.assert_allclose(adapt_probabilities(p, before, now, groups=[[0, 1], [2], [3]]).numpy(),
                               [0.5, 0.5, 1.0, 0.2])
    f = FASA(4, 2, [1, 1, 1, 1])
    f.prob.copy_(p)
    f.adapt(before)  # the first call only records the loss
    torch.testing.assert_close(f.prob, p)
    f.adapt(now)
    np.testing.assert_allclose(f.prob.numpy(), [0.55, 0.45, 1.0, 0.2])


def test_detector_step_with_fasa_and_a_margin_adds_the_virtual_loss():
    from iif.detection.fasa import use_fasa
    from iif.detection.margins import use_margin

    model = _tiny()
    use_margin(model, "iif", [10, 5, 1], variant="raw", when="train_and_test")
    state = use_fasa(model, [10, 5, 1], prob_scale=100.0)  # every seen class drawn each step
    images, targets = _batch()
    model.train()
    seen = {}
    adj = model.roi_heads.box_predictor.adjuster
    adj.register_forward_hook(lambda m, i, o: seen.setdefault("calls", []).append((i[0].detach(), o.detach())))
    torch.manual_seed(0)
    losses = model(images, targets)
    assert {"loss_classifier", "loss_fasa", "loss_mask"} <= set(losses)
    assert bool(state.seen[1]) and bool(state.seen[2]) and not bool(state.seen[0])
    # The virtual logits went through the IIF adjuster (its second call): output = w * z by hand.
    z, out = seen["calls"][1]
    assert z.shape[0] == 2
    w = adj(torch.eye(4)).diagonal()  # the per-logit multipliers
    torch.testing.assert_close(out, z * w)
    assert float(losses["loss_fasa"].detach()) > 0
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert isinstance(model(images), list)


@pytest.mark.parametrize("arch", ["cascade_maskrcnn_r10_fpn", "htc_r10_fpn"])
def test_cascade_first_stage_statistics_are_its_foreground_roi_features(arch):
    from iif.detection.fasa import use_fasa
    from iif.detection.margins import use_margin

    model = _tiny(arch)
    use_margin(model, "iif", [10, 5, 1], variant="raw")
    state = use_fasa(model, [10, 5, 1], prob_scale=100.0)
    rh = model.roi_heads
    seen = {}
    rh.box_head.register_forward_hook(lambda m, i, o: None if "x" in seen else seen.update(x=o.detach().double()))
    stage_sample = rh.sample

    def record(t, boxes, targets):
        out = stage_sample(t, boxes, targets)
        if t == 0:
            seen.setdefault("labels", torch.cat(out[1]))
        return out

    rh.sample = record
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    assert float(losses["loss_fasa"].detach()) > 0 and "loss_classifier_s1" in losses
    x, labels = seen["x"].numpy(), seen["labels"].numpy()
    counts = []
    for c in (2, 3):  # the first update sets the statistics to the batch's mean and unbiased variance
        xc = x[labels == c]
        np.testing.assert_allclose(state.mean[c - 1].numpy(), xc.mean(0), rtol=1e-5, atol=1e-7)
        want = xc.var(0, ddof=1) if len(xc) > 1 else np.zeros(x.shape[1])  # one RoI: variance 0
        np.testing.assert_allclose(state.var[c - 1].numpy(), want, rtol=1e-4, atol=1e-7)
        counts.append(len(xc))
    assert min(counts) >= 1 and max(counts) > 1, counts
    assert not bool(state.seen[0])
    assert rh.sample is record  # the tap is undone after the call


def test_det_config_fasa_builds_and_trains_one_step():
    from iif.detection.config import load_detection_config
    from iif.detection.runs import build_from_config

    cfg = load_detection_config(None, ["model.arch=fasterrcnn_r10_fpn", "model.fasa=true", "model.min_size=64",
                                       "model.max_size=64", "model.fpn_channels=16", "model.representation_size=32",
                                       "model.fasa_loss_weight=0.5", "margin.method=seesaw"])
    model = build_from_config(cfg, 3, np.array([10.0, 5.0, 1.0]), log=lambda *a: None)
    assert model.roi_heads.fasa.loss_weight == 0.5
    images, targets = _batch()
    model.train()
    losses = model(images, [{k: v for k, v in targets[0].items() if k != "masks"}])
    assert torch.isfinite(losses["loss_fasa"])
    plain = load_detection_config(cfg, ["model.fasa=false"])
    keys = set(build_from_config(plain, 3, np.array([10.0, 5.0, 1.0]), log=lambda *a: None).state_dict())
    assert set(model.state_dict()) == keys  # the FASA statistics stay out of the checkpoint's weights
    from iif.detection.config import detection_config_hash

    assert detection_config_hash(cfg) != detection_config_hash(plain)  # --resume refuses a run without FASA


def test_det_train_resume_with_fasa_is_exact(tmp_path):
    from iif.detection.engine import train_detector
    from iif.detection.fasa import use_fasa

    ds = four_square_images()
    quiet = lambda s: None  # noqa: E731
    KW = RESUME_TRAIN_KW

    def fasa(seed=0):
        model = _tiny("fasterrcnn_r10_fpn", seed)
        use_fasa(model, [2, 2, 2], prob_scale=3.0)
        return model

    full = fasa()
    train_detector(full, ds, epochs=2, out_dir=tmp_path / "a", log=quiet, **KW)
    train_detector(fasa(), ds, epochs=2, out_dir=tmp_path / "b", stop_after_epoch=1, log=quiet, **KW)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["margin_state"]
    assert bool(saved["roi_heads.fasa.seen"].any()) and int(saved["roi_heads.fasa.iteration"]) == 2
    resumed = fasa(seed=99)
    train_detector(resumed, ds, epochs=2, out_dir=tmp_path / "b", resume=True, log=quiet, **KW)
    a, b = full.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in ("mean", "var", "seen", "prob", "iteration"):
        assert torch.equal(getattr(full.roi_heads.fasa, name), getattr(resumed.roi_heads.fasa, name)), name


def test_fasa_refusals_are_one_line():
    from iif.detection.config import load_detection_config
    from iif.detection.fasa import use_fasa
    from iif.detection.margins import use_margin

    for arch in ("ssd300_vgg16", "yolov3_tiny_cpu"):
        with pytest.raises(IIFError, match="has no such RoI heads") as e:
            load_detection_config(None, [f"model.arch={arch}", "model.fasa=true"])
        assert "\n" not in str(e.value)
    model = _tiny("fasterrcnn_r10_fpn")
    use_margin(model, "eqlv2", [1, 2, 3], when="train")
    with pytest.raises(IIFError, match="eqlv2"):
        use_fasa(model, [1, 2, 3])
    with pytest.raises(IIFError, match="no parameter 'decay'"):
        use_fasa(_tiny("fasterrcnn_r10_fpn"), [1, 2, 3], decay=0.1)
    with pytest.raises(IIFError, match="momentum"):
        use_fasa(_tiny("fasterrcnn_r10_fpn"), [1, 2, 3], momentum=0.0)
    with pytest.raises(IIFError, match="every count is 0"):
        use_fasa(_tiny("fasterrcnn_r10_fpn"), [0, 0, 0])


def _ddp_update(rank: int, queue) -> None:
    """Two FASA updates on this rank's half of each batch under a gloo group; the resulting statistics."""
    import torch.distributed as dist

    from iif.detection.fasa import FASA
    from iif.runtime.distributed import join_process_group

    join_process_group("cpu")
    f = FASA(3, 4, [1, 1, 1])
    for x, lab in _ddp_batches():
        f.update(x[rank::2], lab[rank::2])
    queue.put((rank, f.mean.numpy().copy(), f.var.numpy().copy(), f.seen.numpy().copy()))
    dist.destroy_process_group()


def _ddp_batches():
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(8, 4, generator=g), torch.tensor([0, 0, 1, 1, 0, 2, 1, 0])),
            (torch.randn(8, 4, generator=g) + 1, torch.tensor([2, 2, 0, 1, 2, 2, 0, 0]))]


def test_ddp_ranks_keep_the_statistics_of_the_global_batch():
    from test_runtime_shared import _fork_two_ranks

    from iif.detection.fasa import FASA

    (_, m0, v0, s0), (_, m1, v1, s1) = _fork_two_ranks(_ddp_update)
    single = FASA(3, 4, [1, 1, 1])
    for x, lab in _ddp_batches():
        single.update(x, lab)
    for m, v, s in ((m0, v0, s0), (m1, v1, s1)):
        np.testing.assert_allclose(m, single.mean.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(v, single.var.numpy(), rtol=1e-10, atol=1e-12)
        assert s.tolist() == [True, True, True]
