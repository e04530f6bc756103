"""Losses against hand-worked values (float64, math.exp/log), the closed-form gradient of Eq. 16, and
F.cross_entropy on w * z for every torch option."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iif.errors import IIFError
from iif.frequency import ClassFrequency
from iif.losses import (
    LOSSES,
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    IIFCostSensitiveLoss,
    IIFLoss,
    LDAMLoss,
    SeesawLoss,
    LogitAdjustedLoss,
    build_loss,
    class_balanced_weights,
    focal_loss,
    iif_cross_entropy,
)
from iif.losses.iif_loss import _FusedIIFCrossEntropy
from iif.weights import iif_weights


def lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def ce_hand(z, y):
    """-log softmax(z)[y] for one sample, in Python floats."""
    return lse(z) - z[y]


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def rand_case(n=12, c=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=dtype) * 2
    y = torch.randint(0, c, (n,), generator=g)
    w = torch.rand(c, generator=g, dtype=torch.float32) * 4 + 0.5
    return z, y, w


# ---------------------------------------------------------------- IIF cross-entropy (Eq. 15, 16)


def test_iif_cross_entropy_hand_value():
    z = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
    y = [0, 2]
    w = [2.0, 0.5, 3.0]
    zw = [[a * b for a, b in zip(row, w)] for row in z]
    per = [ce_hand(zw[0], 0), ce_hand(zw[1], 2)]
    # zw[0] = [2, 1, 1.5]: -2 + log(e^2 + e^1 + e^1.5)
    assert per[0] == pytest.approx(-2 + math.log(math.exp(2) + math.exp(1) + math.exp(1.5)), rel=1e-15)
    for fused in (True, False):
        got = iif_cross_entropy(t(z), torch.tensor(y), torch.tensor(w), fused=fused)
        assert got.item() == pytest.approx(sum(per) / 2, rel=1e-6)
        assert iif_cross_entropy(t(z), torch.tensor(y), torch.tensor(w), reduction="sum", fused=fused).item() == pytest.approx(sum(per), rel=1e-6)
        none = iif_cross_entropy(t(z), torch.tensor(y), torch.tensor(w), reduction="none", fused=fused)
        assert none.tolist() == pytest.approx(per, rel=1e-6)
    assert IIFLoss(w)(t(z), torch.tensor(y)).item() == pytest.approx(sum(per) / 2, rel=1e-6)


def eq16_gradient(z, y, w, row_scale):
    """Eq. 16 in float64 with numpy: w_i (q_i - 1[i = y]) per sample times row_scale (1/N for the mean)."""
    z = np.asarray(z, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    zw = z * w
    q = np.exp(zw - zw.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    onehot = np.zeros_like(q)
    onehot[np.arange(len(y)), y] = 1.0
    return w * (q - onehot) * np.asarray(row_scale, dtype=np.float64)[:, None]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_is_eq16(fused, reduction):
    z, y, w = rand_case(seed=1)
    z = z.float().requires_grad_()
    loss = iif_cross_entropy(z, y, w, reduction=reduction, fused=fused)
    n = z.shape[0]
    if reduction == "none":
        g = torch.linspace(0.5, 2.0, n)
        loss.backward(g)
        scale = g.double().numpy()
    else:
        loss.backward()
        scale = np.full(n, 1.0 / n if reduction == "mean" else 1.0)
    expect = eq16_gradient(z.detach().numpy(), y.numpy(), w.numpy(), scale)
    np.testing.assert_allclose(z.grad.double().numpy(), expect, rtol=1e-5, atol=1e-7)
    # and autograd through the composed form in float64
    z64 = z.detach().double().requires_grad_()
    ref = F.cross_entropy(z64 * w.double(), y, reduction=reduction)
    ref.backward(torch.as_tensor(scale * n if reduction == "mean" else scale) if reduction == "none" else None)
    np.testing.assert_allclose(z.grad.double().numpy(), z64.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_fused_and_composed_paths_agree_with_ignored_labels():
    z, y, w = rand_case(n=20, c=9, seed=2, dtype=torch.float32)
    y[[3, 7]] = -100
    for reduction in ("mean", "sum", "none"):
        grads, vals = [], []
        for fused in (True, False):
            zz = z.clone().requires_grad_()
            loss = iif_cross_entropy(zz, y, w, reduction=reduction, fused=fused)
            (loss.sum() if reduction == "none" else loss).backward()
            grads.append(zz.grad)
            vals.append(loss.detach())
        torch.testing.assert_close(vals[0], vals[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
        assert grads[0][[3, 7]].abs().max() == 0  # ignored samples get no gradient
    # the mean is over the 18 non-ignored samples
    full = iif_cross_entropy(z, y, w, reduction="none")
    assert iif_cross_entropy(z, y, w).item() == pytest.approx(full.sum().item() / 18, rel=1e-6)


def test_fused_kernel_is_the_one_used_in_the_common_case(monkeypatch):
    calls = []
    orig = _FusedIIFCrossEntropy.apply
    monkeypatch.setattr(_FusedIIFCrossEntropy, "apply", lambda *a: calls.append(1) or orig(*a))
    z, y, w = rand_case(dtype=torch.float32)
    iif_cross_entropy(z, y, w)
    assert calls == [1]
    iif_cross_entropy(z, y, w, label_smoothing=0.1)
    iif_cross_entropy(z, y, w, weight=torch.ones(7))
    iif_cross_entropy(z, F.one_hot(y, 7).float(), w)
    iif_cross_entropy(z, y, w, fused=False)
    assert calls == [1]  # the other options took the composed path


def test_fused_loss_survives_an_underflowing_target_probability():
    # float32 softmax of [0, -200] underflows q_1 to 0; the loss is 200 + log(1 + e^-200) = 200.
    z = torch.tensor([[0.0, -200.0], [1.0, 0.0]], requires_grad=True)
    y = torch.tensor([1, 0])
    loss = iif_cross_entropy(z, y, torch.ones(2), reduction="none")
    assert loss[0].item() == pytest.approx(200.0, rel=1e-6)
    assert loss[1].item() == pytest.approx(ce_hand([1.0, 0.0], 0), rel=1e-6)
    loss.sum().backward()
    assert z.grad[0].tolist() == pytest.approx([1.0, -1.0], abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_gradient_follows_weights_changed_in_place(dtype):
    """The fused backward caches ``w * grad / N`` between steps; changing the weights in place (a schedule
    that rescales ``iif_weights``, a user's ``mul_``) must not reuse the old product. Reference: autograd of
    F.cross_entropy(w * z) in float64 with the weights as they are at that step."""
    z, y, w = rand_case(n=10, c=6, seed=41, dtype=dtype)
    crit = IIFLoss(w.to(dtype), fused=True)
    for step in range(3):
        if step == 2:
            crit.iif_weights.mul_(2)  # in place: same tensor object, new values
        zz = z.clone().requires_grad_()
        crit(zz, y).backward()
        z64 = z.detach().to(torch.float64, copy=True).requires_grad_()
        F.cross_entropy(z64 * crit.iif_weights.double(), y).backward()
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(zz.grad.double(), z64.grad, rtol=tol, atol=tol)


def test_fused_loss_refuses_a_second_backward_through_a_retained_graph():
    z, y, w = rand_case(dtype=torch.float32)
    z.requires_grad_()
    loss = iif_cross_entropy(z, y, w)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="fused=False"):
        loss.backward()
    z.grad = None
    loss = iif_cross_entropy(z, y, w, fused=False)
    loss.backward(retain_graph=True)
    loss.backward()  # the composed path supports it


def test_low_precision_logits_compute_in_float32():
    z, y, w = rand_case(dtype=torch.float32)
    zb = z.bfloat16().requires_grad_()
    loss = iif_cross_entropy(zb, y, w)
    assert loss.dtype == torch.float32
    ref = F.cross_entropy(zb.detach().float() * w, y)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert zb.grad.dtype == torch.bfloat16


OPTIONS = [
    dict(label_smoothing=0.1),
    dict(weight=[1.0, 2.0, 0.5, 1.5, 1.0, 0.2, 3.0]),
    dict(weight=[1.0, 2.0, 0.5, 1.5, 1.0, 0.2, 3.0], label_smoothing=0.2, reduction="sum"),
    dict(ignore_index=2),
    dict(ignore_index=2, weight=[1.0, 2.0, 0.5, 1.5, 1.0, 0.2, 3.0], label_smoothing=0.3),
    dict(reduction="none", label_smoothing=0.05),
]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_torch_options_match_cross_entropy_on_weighted_logits(opts, soft):
    z, y, w = rand_case(seed=3)
    target = torch.softmax(torch.randn(12, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64), 1) if soft else y
    if soft and "ignore_index" in opts:
        opts = {k: v for k, v in opts.items() if k != "ignore_index"}
    wt = opts.get("weight")
    kw = dict(opts, weight=None if wt is None else torch.tensor(wt, dtype=torch.float64))
    ref = F.cross_entropy(z * w.double(), target, **kw)
    for fused in (True, False):
        got = iif_cross_entropy(z, target, w, fused=fused, **kw)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)
    got = IIFLoss(w, **opts)(z, target)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)


def test_mixup_soft_target_hand_value():
    # target 0.3 / 0.7 over two classes: -(0.3 log q0 + 0.7 log q1) on w * z
    z, w = [0.4, -0.6], [2.0, 5.0]
    zw = [0.8, -3.0]
    expect = 0.3 * ce_hand(zw, 0) + 0.7 * ce_hand(zw, 1)
    got = IIFLoss(w)(t([z]), t([[0.3, 0.7]]))
    assert got.item() == pytest.approx(expect, rel=1e-6)


@pytest.mark.parametrize("where", ["first", "last"])
def test_detection_form_inserts_background_weight_one(where):
    z, y, w = rand_case(n=10, c=5, seed=4)  # 4 foreground classes + background
    w_fg = w[:4]
    full = torch.cat([torch.ones(1), w_fg]) if where == "first" else torch.cat([w_fg, torch.ones(1)])
    ref = F.cross_entropy(z * full.double(), y)
    loss = IIFLoss(w_fg, background=where)
    torch.testing.assert_close(loss(z, y), ref)
    torch.testing.assert_close(IIFLoss(full, background=where)(z, y), ref)  # already (C + 1) weights
    torch.testing.assert_close(loss.adjust_logits(z), z * full.double())
    from_table = iif_weights([50, 20, 5, 1], "smooth", background=where)
    torch.testing.assert_close(
        IIFLoss(from_table[1:] if where == "first" else from_table[:-1], background=where)(z, y),
        F.cross_entropy(z * from_table.double(), y),
    )


def test_online_iif_uses_each_batch_counts():
    # batch labels [0, 0, 1] over 3 classes: K = 3, counts [2, 1, 0]
    z = [[0.5, -0.2, 0.1], [1.0, 0.0, -1.0], [0.2, 0.3, 0.4]]
    y = [0, 0, 1]
    w = [math.log(4 / 3) + 1, math.log(4 / 2) + 1, math.log(4 / 1) + 1]
    expect = sum(ce_hand([a * b for a, b in zip(row, w)], yy) for row, yy in zip(z, y)) / 3
    loss = IIFLoss(num_classes=3, online=True)
    assert loss(t(z), torch.tensor(y)).item() == pytest.approx(expect, rel=1e-6)
    # inference uses smooth weights of all labels seen in training mode: here [0,0,1] then [2]
    loss(t(z[:1]), torch.tensor([2]))
    k, counts = 4, [2, 1, 1]
    w_seen = [math.log((k + 1) / (n + 1)) + 1 for n in counts]
    assert loss.adjust_logits(t([[1.0, 1.0, 1.0]]))[0].tolist() == pytest.approx(w_seen, rel=1e-6)
    with pytest.raises(IIFError, match="only variant='smooth'"):
        IIFLoss(num_classes=3, online=True, variant="raw")
    with pytest.raises(IIFError, match="no training labels"):
        IIFLoss(num_classes=3, online=True).adjust_logits(torch.zeros(1, 3))


def test_adjust_logits_per_loss():
    counts = [30, 10, 2]
    z = t([[1.0, -2.0, 0.5]])
    w = iif_weights(counts)
    torch.testing.assert_close(IIFLoss(w).adjust_logits(z), z * w.double())
    for name in ("ce", "balanced_softmax", "logit_adjusted", "ldam", "iif_csl", "cb_softmax", "focal"):
        assert torch.equal(build_loss(name, counts).adjust_logits(z), z)


# ---------------------------------------------------------------- baselines


def test_iif_csl_scales_each_sample_by_its_target_weight():
    z = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
    y = [0, 2]
    w = [2.0, 0.5, 3.0]
    per = [2.0 * ce_hand(z[0], 0), 3.0 * ce_hand(z[1], 2)]
    loss = IIFCostSensitiveLoss(w, reduction="none")
    assert loss(t(z), torch.tensor(y)).tolist() == pytest.approx(per, rel=1e-6)
    assert IIFCostSensitiveLoss(w)(t(z), torch.tensor(y)).item() == pytest.approx(sum(per) / 2, rel=1e-6)


@pytest.mark.parametrize("opts", OPTIONS)
def test_iif_csl_with_unit_weights_is_cross_entropy(opts):
    z, y, _ = rand_case(seed=5)
    wt = opts.get("weight")
    kw = dict(opts, weight=None if wt is None else torch.tensor(wt, dtype=torch.float64))
    got = IIFCostSensitiveLoss(torch.ones(7), **opts)(z, y)
    torch.testing.assert_close(got, F.cross_entropy(z, y, **kw))
    torch.testing.assert_close(CrossEntropyLoss(**opts)(z, y), F.cross_entropy(z, y, **kw))


def test_balanced_softmax_and_logit_adjusted_loss_hand_values():
    counts = [3, 1]
    z, y = [0.2, 0.4], 1
    bs = ce_hand([0.2 + math.log(3), 0.4 + math.log(1)], y)
    assert BalancedSoftmaxLoss(counts)(t([z]), torch.tensor([y])).item() == pytest.approx(bs, rel=1e-6)
    la = ce_hand([0.2 + math.log(0.75), 0.4 + math.log(0.25)], y)
    assert LogitAdjustedLoss(counts)(t([z]), torch.tensor([y])).item() == pytest.approx(la, rel=1e-6)
    la2 = ce_hand([0.2 + 2 * math.log(0.75), 0.4 + 2 * math.log(0.25)], y)
    assert LogitAdjustedLoss(counts, tau=2.0)(t([z]), torch.tensor([y])).item() == pytest.approx(la2, rel=1e-6)
    # with tau = 1 the two differ only by a constant shift of all logits (ln sum n), so they are equal
    assert bs == pytest.approx(la, rel=1e-12)


def test_ldam_margin_scale_and_drw():
    counts = [16, 1]  # n^-1/4 = [0.5, 1] -> margins scaled to max 0.5: [0.25, 0.5]
    loss = LDAMLoss(counts, max_margin=0.5, scale=30.0, reduction="sum")
    assert loss.margins.tolist() == pytest.approx([0.25, 0.5])
    z = [[1.0, 2.0], [0.3, 0.1]]
    y = [1, 0]
    per = [ce_hand([30 * 1.0, 30 * (2.0 - 0.5)], 1), ce_hand([30 * (0.3 - 0.25), 30 * 0.1], 0)]
    assert loss(t(z), torch.tensor(y)).item() == pytest.approx(sum(per), rel=1e-6)
    # DRW from epoch 2: class-balanced weights with beta = 0.5: (1-b)/(1-b^n) = [0.5/(1-0.5^16), 1], sum to 2
    drw = LDAMLoss(counts, drw_epoch=2, drw_beta=0.5, reduction="sum")
    raw = [0.5 / (1 - 0.5 ** 16), 1.0]
    cb = [r / sum(raw) * 2 for r in raw]
    drw.set_epoch(1)
    assert drw(t(z), torch.tensor(y)).item() == pytest.approx(sum(per), rel=1e-6)
    drw.set_epoch(2)
    assert drw.current_weight().tolist() == pytest.approx(cb, rel=1e-6)
    assert drw(t(z), torch.tensor(y)).item() == pytest.approx(cb[1] * per[0] + cb[0] * per[1], rel=1e-6)


def test_class_balanced_weights_and_loss():
    # counts [2, 1], beta 0.5: (1-b)/(1-b^n) = [0.5/0.75, 0.5/0.5] = [2/3, 1], rescaled to sum 2: [0.8, 1.2]
    assert class_balanced_weights([2, 1], beta=0.5).tolist() == pytest.approx([0.8, 1.2], rel=1e-6)
    assert class_balanced_weights([7, 1], beta=0.0).tolist() == [1.0, 1.0]
    z = [[0.1, 0.9], [2.0, -1.0]]
    y = [0, 1]
    per = [0.8 * ce_hand(z[0], 0), 1.2 * ce_hand(z[1], 1)]
    loss = ClassBalancedLoss([2, 1], beta=0.5)
    assert loss(t(z), torch.tensor(y)).item() == pytest.approx(sum(per) / 2, rel=1e-6)
    # the softmax focal form, under its own name
    q = [math.exp(-ce_hand(z[0], 0)), math.exp(-ce_hand(z[1], 1))]
    foc = [0.8 * (1 - q[0]) ** 1.5 * ce_hand(z[0], 0), 1.2 * (1 - q[1]) ** 1.5 * ce_hand(z[1], 1)]
    loss = ClassBalancedLoss([2, 1], beta=0.5, loss="softmax_focal", gamma=1.5)
    assert loss(t(z), torch.tensor(y)).item() == pytest.approx(sum(foc) / 2, rel=1e-6)
    with pytest.raises(IIFError, match=r"beta must lie in \[0, 1\)"):
        ClassBalancedLoss([2, 1], beta=1.0)
    with pytest.raises(IIFError, match="loss must be one of"):
        ClassBalancedLoss([2, 1], loss="hinge")


def sigmoid_focal_hand(z, y, gamma):
    """Cui et al.'s per-sample focal loss written out: sum over classes of (1 - p_t)^gamma * -log p_t,
    p = 1 / (1 + e^-z), p_t = p for the label and 1 - p for every other class."""
    def softplus(x):
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))

    total = 0.0
    for c, zc in enumerate(z):
        s = zc if c == y else -zc  # p_t = sigmoid(s): -log p_t = softplus(-s), 1 - p_t = sigmoid(-s)
        total += (1.0 / (1.0 + math.exp(s))) ** gamma * softplus(-s)
    return total


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_cb_focal_is_cui_et_al_sigmoid_focal_loss(gamma):
    # counts [2, 1], beta 0.5: class-balanced weights [0.8, 1.2] (sum C = 2); the mean divides by the number
    # of labels (2), as the official code's reduce_sum(loss) / reduce_sum(one_hot_labels)
    z = [[0.1, 0.9], [2.0, -1.0], [-3.0, 4.0]]
    y = [0, 1, 0]
    cb = [0.8, 1.2]
    per = [cb[yy] * sigmoid_focal_hand(row, yy, gamma) for row, yy in zip(z, y)]
    name, kw = ("cb_sigmoid", {}) if gamma == 0.0 else ("cb_focal", {"gamma": gamma})
    loss = build_loss(name, [2, 1], beta=0.5, **kw)
    assert loss.loss == ("sigmoid" if gamma == 0.0 else "focal")
    assert loss(t(z), torch.tensor(y)).item() == pytest.approx(sum(per) / 3, rel=1e-6)
    loss_sum = build_loss(name, [2, 1], beta=0.5, reduction="sum", **kw)
    assert loss_sum(t(z), torch.tensor(y)).item() == pytest.approx(sum(per), rel=1e-6)
    none = build_loss(name, [2, 1], beta=0.5, reduction="none", ignore_index=1, **kw)(t(z), torch.tensor(y))
    assert none.tolist() == pytest.approx([per[0], 0.0, per[2]], rel=1e-6)
    # the mean over non-ignored labels only
    ign = build_loss(name, [2, 1], beta=0.5, ignore_index=1, **kw)(t(z), torch.tensor(y))
    assert ign.item() == pytest.approx((per[0] + per[2]) / 2, rel=1e-6)


def test_sigmoid_focal_options_match_binary_cross_entropy():
    from iif.losses import sigmoid_focal_loss

    z, y, _ = rand_case(n=10, c=5, seed=9)
    onehot = F.one_hot(y, 5).double()
    # gamma 0 is one-vs-all BCE summed over classes, averaged over samples
    bce = F.binary_cross_entropy_with_logits(z, onehot, reduction="none").sum(1)
    torch.testing.assert_close(sigmoid_focal_loss(z, y, 0.0), bce.mean())
    # label smoothing smooths the binary targets like F.cross_entropy smooths its target distribution
    smooth = onehot * 0.8 + 0.2 / 5
    bce_s = F.binary_cross_entropy_with_logits(z, smooth, reduction="none").sum(1)
    torch.testing.assert_close(sigmoid_focal_loss(z, y, 0.0, label_smoothing=0.2), bce_s.mean())
    # soft targets are used as given; a class weight scales by weight[y] and divides the mean by its sum
    torch.testing.assert_close(sigmoid_focal_loss(z, smooth, 0.0), bce_s.mean())
    wt = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(z, y, 0.0, weight=wt), (bce * wt[y]).sum() / wt[y].sum())
    # the focal modulator is finite and exact for large |z| (Cui et al.'s stable form)
    big = torch.tensor([[60.0, -60.0]], dtype=torch.float64)
    val = sigmoid_focal_loss(big, torch.tensor([1]), 2.0).item()
    assert math.isfinite(val) and val == pytest.approx(sigmoid_focal_hand([60.0, -60.0], 1, 2.0), rel=1e-6)


def test_focal_loss_hand_value():
    z = [0.0, math.log(3.0)]  # q = [0.25, 0.75]
    got = FocalLoss(gamma=2.0)(t([z]), torch.tensor([1])).item()
    assert got == pytest.approx(-(0.25 ** 2) * math.log(0.75), rel=1e-9)


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy_for_every_option(opts, soft):
    z, y, _ = rand_case(seed=6)
    target = torch.softmax(torch.randn(12, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64), 1) if soft else y
    if soft:
        opts = {k: v for k, v in opts.items() if k != "ignore_index"}
    wt = opts.get("weight")
    kw = dict(opts, weight=None if wt is None else torch.tensor(wt, dtype=torch.float64))
    torch.testing.assert_close(focal_loss(z, target, 0.0, **kw), F.cross_entropy(z, target, **kw))
    torch.testing.assert_close(FocalLoss(gamma=0.0, **opts)(z, target), F.cross_entropy(z, target, **kw))


# ---------------------------------------------------------------- registry


def test_build_loss_every_name():
    counts = [40, 10, 3]
    freq = ClassFrequency.from_labels([0] * 40 + [1] * 10 + [2] * 3)
    kinds = {
        "ce": CrossEntropyLoss, "iif": IIFLoss, "iif_csl": IIFCostSensitiveLoss,
        "balanced_softmax": BalancedSoftmaxLoss, "logit_adjusted": LogitAdjustedLoss, "ldam": LDAMLoss,
        "cb_softmax": ClassBalancedLoss, "cb_sigmoid": ClassBalancedLoss, "cb_focal": ClassBalancedLoss,
        "cb_softmax_focal": ClassBalancedLoss, "focal": FocalLoss, "seesaw": SeesawLoss,
    }
    assert set(kinds) == set(LOSSES)
    z, y, _ = rand_case(n=6, c=3, seed=7)
    for name, cls in kinds.items():
        for source in (counts, freq):
            loss = build_loss(name, source)
            assert type(loss) is cls
            assert torch.isfinite(loss(z, y))
    assert build_loss("cb_focal", counts).loss == "focal"  # Cui et al.'s sigmoid focal loss
    assert build_loss("cb_softmax_focal", counts).loss == "softmax_focal"
    w = build_loss("iif", freq, variant="raw", total=100).iif_weights
    assert w.tolist() == pytest.approx([math.log(100 / n) for n in counts], rel=1e-6)
    w = build_loss("iif_csl", counts, variant="base10").iif_weights
    assert w.tolist() == pytest.approx([math.log10(53 / n) for n in counts], rel=1e-6)
    assert build_loss("iif", counts, online=True).online
    assert build_loss("ldam", counts, drw_epoch=3).drw_epoch == 3


def test_build_loss_unknown_name_lists_known_ones():
    # issue 16: the list now gives the canonical names of iif.methods and the old spellings as aliases
    with pytest.raises(IIFError, match="Unknown loss 'iff'.*softmax, iif, iif_csl.*focal.*ce=softmax"):
        build_loss("iff", [1, 2])
    with pytest.raises(IIFError, match="needs the training class counts"):
        build_loss("iif", None)
    with pytest.raises(IIFError, match="bad options for loss 'focal'"):
        build_loss("focal", None, beta=0.9)


# ---------------------------------------------------------------- bad input


ALL = sorted(LOSSES)


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("ce", "focal")])  # those have no per-class state
def test_class_dimension_mismatch(name):
    loss = build_loss(name, [5, 3, 1])
    with pytest.raises(IIFError, match=r"logits have 4 classes.*(expected|built for)"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_class_dimension_mismatch_with_background():
    loss = IIFLoss([2.0, 3.0, 4.0], background="first")
    with pytest.raises(IIFError, match=r"logits have 6 classes.*expected 4 \(3 foreground classes \+ 1 background"):
        loss(torch.zeros(2, 6), torch.tensor([0, 1]))
    with pytest.raises(IIFError, match="logits have 4 classes.*weights have 3"):
        IIFLoss([2.0, 3.0, 4.0])(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(IIFError, match="expected 4"):
        iif_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]), torch.ones(3), background="last")


@pytest.mark.parametrize("name", ALL)
def test_label_out_of_range_names_the_label_and_the_range(name):
    loss = build_loss(name, [5, 3, 1])
    with pytest.raises(IIFError, match=r"target label 3 \(sample 1\) is out of range for 3 classes.*\[0, 2\]"):
        loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(IIFError, match=r"target label -1 .*\[0, 2\] or equal ignore_index=-100"):
        loss(torch.zeros(2, 3), torch.tensor([-1, 0]))
    loss(torch.zeros(2, 3), torch.tensor([-100, 0]))  # the ignore_index is fine


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_non_finite_logits_raise_unless_disabled(name, bad, reduction):
    z = torch.zeros(2, 3)
    z[1, 1] = bad  # at sample 1's target, so it reaches the loss whatever its sign
    with pytest.raises(IIFError, match=r"logits contain .*(NaN|inf).*first at index \(1, 1\)"):
        build_loss(name, [5, 3, 1], reduction=reduction)(z, torch.tensor([0, 1]))
    out = build_loss(name, [5, 3, 1], check_finite=False)(z, torch.tensor([0, 1]))
    assert not torch.isfinite(out)


@pytest.mark.parametrize("name", ["ce", "iif", "iif_csl", "balanced_softmax", "logit_adjusted", "ldam", "cb_softmax"])
def test_minus_inf_mask_that_does_not_reach_the_loss_is_allowed(name):
    z = torch.tensor([[0.5, 1.0, float("-inf")], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 1])
    loss = build_loss(name, [5, 3, 1])(z, y)
    assert torch.isfinite(loss)
    # NaN anywhere in a used row reaches the loss
    z[0, 2] = float("nan")
    with pytest.raises(IIFError, match=r"1 NaN and 0 inf values \(first at index \(0, 2\)\)"):
        build_loss(name, [5, 3, 1])(z, y)


def test_non_finite_soft_targets_are_named():
    t = torch.tensor([[0.5, 0.5, 0.0], [float("nan"), 0.5, 0.5]])
    with pytest.raises(IIFError, match="soft targets contain 1 NaN"):
        IIFLoss([1.0, 2.0, 3.0])(torch.zeros(2, 3), t)


def test_bad_options():
    with pytest.raises(IIFError, match="reduction must be one of"):
        IIFLoss([1.0, 2.0], reduction="avg")
    with pytest.raises(IIFError, match=r"label_smoothing must lie in \[0, 1\]"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(IIFError, match="must be positive"):
        IIFLoss([1.0, -2.0])
    with pytest.raises(IIFError, match="needs weights"):
        IIFLoss()
    with pytest.raises(IIFError, match=r"soft targets must have the logits' shape \(2, 3\)"):
        IIFLoss([1.0, 2.0, 3.0])(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(IIFError, match=r"shape \(2,\)"):
        IIFLoss([1.0, 2.0, 3.0])(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(IIFError, match="weight has 2 entries"):
        CrossEntropyLoss(weight=[1.0, 2.0])(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_finite_check_is_not_fooled_by_an_overflowing_sum():
    # every logit is finite but their float32 sum overflows to inf: no error, a finite loss
    z = torch.full((2, 3), 3e38)
    z[:, 0] = 0.0
    loss = IIFLoss([1.0, 1.0, 1.0])(z, torch.tensor([1, 2]))
    assert torch.isfinite(loss)


def test_labels_must_be_long():
    with pytest.raises(IIFError, match=r"torch.long; got torch.int32. Use target.long\(\)"):
        IIFLoss([1.0, 2.0])(torch.zeros(2, 2), torch.tensor([0, 1], dtype=torch.int32))


def softplus_ce(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """An independent float64 CE route: ``softplus(logsumexp_{c != y} s_c - s_y)``, accurate for tiny losses
    too (``F.cross_entropy`` returns 0 for a loss of 1e-19, even in float64)."""
    others = s.scatter(1, y[:, None], float("-inf"))
    x = torch.logsumexp(others, 1) - s.gather(1, y[:, None]).squeeze(1)
    return torch.where(x > 30, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))


def rounding_bound(s: torch.Tensor, loss: torch.Tensor, eps: float) -> torch.Tensor:
    """What float rounding allows per sample: a few ulps of the loss, plus the rounding of the products
    ``s = w * z`` (each off by eps |s|), which moves the loss by at most ``2 (1 - q_y) max|s| <= 2 min(1, L) max|s|``."""
    tiny = 4 * s.shape[1] * 2.0**-149  # float32 subnormal spacing, per summed class
    return 8 * eps * (loss + 2 * loss.clamp(max=1.0) * s.abs().amax(1)) + tiny


@pytest.mark.parametrize("gap", [0.0, 1.0, 10.0, 100.0, 1e3, 1e4])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_fused_loss_value_is_exact_to_rounding_for_any_logit_gap(gap, sign):
    # sign +1: the target trails the other logits by `gap` (losses up to ~1e4 * w); -1: it leads (losses down
    # to 1e-40 and 0). Compared with a float64 route from the same float32 inputs, every reduction, with
    # two ignored labels.
    g = torch.Generator().manual_seed(int(gap) + (7 if sign > 0 else 0))
    n, c = 24, 10
    z = torch.randn(n, c, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    # each row's gap scaled by 0.5 .. 1.5, so that around gap 100 some q_y fall in float32's subnormal range
    z[torch.arange(n), y] -= sign * gap * (0.5 + torch.rand(n, generator=g))
    w = torch.rand(c, generator=g) * 2 + 0.5
    s = z.double() * w.double()
    eps = torch.finfo(torch.float32).eps
    for ignored in (False, True):
        yy = y.clone()
        if ignored:
            yy[[2, 5]] = -100
        valid = yy != -100
        ref = softplus_ce(s, yy.clamp_min(0)) * valid
        bound = rounding_bound(s, ref, eps) * valid
        for reduction in ("none", "sum", "mean"):
            zz = z.clone().requires_grad_()
            out = iif_cross_entropy(zz, yy, w, reduction=reduction)
            assert out.dtype == torch.float32
            if reduction == "none":
                err, tol = (out.double() - ref).abs(), bound
            else:
                d = valid.sum() if reduction == "mean" else 1
                err, tol = (out.double() - ref.sum() / d).abs(), bound.sum() / d
            assert bool((err <= tol).all()), (reduction, ignored, (err / tol).max().item())
            if reduction == "none":  # the composed path (F.cross_entropy on w * z): also an absolute ~eps near 0
                composed = iif_cross_entropy(z, yy, w, reduction="none", fused=False).double()
                assert bool(((composed - ref).abs() <= tol + 4 * eps).all())
            # and the gradient is Eq. 16 to float32 rounding
            (out.sum() if reduction == "none" else out).backward()
            q = torch.softmax(s, 1)
            grad = (q - F.one_hot(yy.clamp_min(0), c)) * w.double() * valid[:, None]
            if reduction == "mean":
                grad = grad / valid.sum()
            torch.testing.assert_close(zz.grad.double(), grad, rtol=0, atol=1e-6 * float(w.max()))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_fused_loss_value_when_the_target_probability_is_subnormal(reduction):
    # 1000 tied logits and a target 80 .. 95.75 below them: q_y = exp(-d) / 1000 falls in float32's subnormal
    # range (below 1.2e-38, above 0) for d > 80.5, where a log of q_y loses up to 0.2% of the loss.
    n, c = 64, 1000
    d = 80.0 + 0.25 * torch.arange(n, dtype=torch.float64)
    y = torch.arange(n) * 7 % c
    z = torch.zeros(n, c)
    z[torch.arange(n), y] = -d.float()
    out = iif_cross_entropy(z, y, torch.ones(c), reduction=reduction).double()
    ref = d + torch.log((c - 1) + torch.exp(-d))  # -log q_y by hand
    ref = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
    torch.testing.assert_close(out, ref, rtol=4 * torch.finfo(torch.float32).eps, atol=0)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_in_place_softmax_routes_are_exact_to_rounding(native, dtype):
    from iif.losses.iif_loss import _softmax_and_loss

    z, y, w = rand_case(n=9, c=6, seed=11, dtype=dtype)
    w = w.to(dtype)
    z[0, y[0]] = -300.0  # q_y underflows (float32): the loss must still be exact
    z[1] = 0.0
    z[1, y[1]] = 45.0 / w[y[1]]  # q_y rounds to 1: the loss 5 e^-45 = 1.4e-19 must not be 0
    q, rest, loss, _ = _softmax_and_loss(z.clone(), w, y[:, None], native)
    s = z.double() * w.double()
    ref = softplus_ce(s, y)
    assert bool(((loss.squeeze(1).double() - ref).abs() <= rounding_bound(s, ref, torch.finfo(dtype).eps)).all())
    assert loss[1].item() == pytest.approx(math.log1p(5 * math.exp(-45.0)), rel=1e-5)
    # q holds softmax(w z) with the targets zeroed, rest the sum of the others (= 1 - q_y, without cancellation)
    q_ref = torch.softmax(s, 1)
    torch.testing.assert_close(rest.squeeze(1).double(), q_ref.sum(1) - q_ref.gather(1, y[:, None]).squeeze(1),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(q.double(), q_ref.scatter(1, y[:, None], 0.0), rtol=1e-5, atol=1e-7)


def test_fused_loss_refuses_double_backward():
    z, y, w = rand_case(dtype=torch.float32)
    z.requires_grad_()
    loss = iif_cross_entropy(z, y, w)
    with pytest.raises(RuntimeError, match="double backward.*fused=False"):
        torch.autograd.grad(loss, z, create_graph=True)
    # the composed path gives second derivatives
    (g,) = torch.autograd.grad(iif_cross_entropy(z, y, w, fused=False), z, create_graph=True)
    assert g.requires_grad


def test_docs_examples_run():
    """Every ```python block of docs/losses.md runs (the page promises runnable examples)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "losses.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    for block in blocks:
        exec(compile(block, "docs/losses.md", "exec"), {})


def test_low_precision_fused_and_composed_paths_agree():
    # both weight bf16 logits in float32 (rounding w to bf16 would move the loss by ~0.1%)
    z, y, w = rand_case(n=32, c=9, seed=12, dtype=torch.float32)
    zb = (z * 3).bfloat16()
    for reduction in ("mean", "sum", "none"):
        a = iif_cross_entropy(zb, y, w, reduction=reduction, fused=True)
        b = iif_cross_entropy(zb, y, w, reduction=reduction, fused=False)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(IIFError, match="fused must be 'auto', True or False"):
        IIFLoss(w, fused="yes")


@pytest.mark.parametrize(
    "opts", [dict(), dict(label_smoothing=0.1), dict(weight=[1.0, 1.0, 1.0]), dict(fused=False), dict(ignore_index=1)]
)
def test_iif_label_check_on_every_path(opts):
    # the fused CPU kernel lets its gather catch bad labels; every other path checks them up front
    z = torch.zeros(3, 3)
    for bad in (3, -1, -7):
        with pytest.raises(IIFError, match=rf"target label {bad} \(sample 2\) is out of range for 3 classes"):
            IIFLoss([1.0, 2.0, 3.0], **opts)(z, torch.tensor([0, 2, bad]))
        with pytest.raises(IIFError, match=rf"target label {bad} \(sample 2\)"):
            iif_cross_entropy(z, torch.tensor([0, 2, bad]), torch.tensor([1.0, 2.0, 3.0]), **opts)
    # ignored labels take the masked kernel after the optimistic try
    y = torch.tensor([0, -100, 2]) if "ignore_index" not in opts else torch.tensor([0, 1, 2])
    got = IIFLoss([1.0, 2.0, 3.0], **opts)(z, y)
    ref = F.cross_entropy(z * torch.tensor([1.0, 2.0, 3.0]), y, **{k: (torch.tensor(v) if k == "weight" else v) for k, v in opts.items() if k != "fused"})
    torch.testing.assert_close(got, ref)


# ---------------------------------------------------------------- precision of the weights


def test_iif_loss_keeps_float64_weights_and_float64_logits_are_exact():
    # normit weights need every digit: float32 would move them by ~1e-8 relative
    counts = [500, 90, 7, 1]
    w64 = iif_weights(counts, "normit", total=5000, dtype=torch.float64)
    z, y, _ = rand_case(n=16, c=4, seed=21)
    expect = sum(ce_hand([a * b for a, b in zip(row, w64.tolist())], yy) for row, yy in zip(z.tolist(), y.tolist())) / 16
    for fused in (True, False):
        loss = IIFLoss(w64, fused=fused)
        assert loss.iif_weights.dtype == torch.float64
        out = loss(z, y)
        assert out.dtype == torch.float64
        assert out.item() == pytest.approx(expect, rel=1e-14)
        assert iif_cross_entropy(z, y, w64.numpy(), fused=fused).item() == pytest.approx(expect, rel=1e-14)
        torch.testing.assert_close(loss.adjust_logits(z), z * w64, rtol=0, atol=0)
    # float32 logits compute in float32: the weights are rounded to float32 once
    z32 = z.float()
    ref = F.cross_entropy(z32 * w64.float(), y)
    torch.testing.assert_close(IIFLoss(w64)(z32, y), ref)
    # other weight dtypes become float32
    assert IIFLoss([1.0, 2.0]).iif_weights.dtype == torch.float32
    assert IIFLoss(torch.tensor([1.0, 2.0], dtype=torch.bfloat16)).iif_weights.dtype == torch.float32
    csl = IIFCostSensitiveLoss(w64)
    assert csl.iif_weights.dtype == torch.float64
    per = [w64[yy].item() * ce_hand(row, yy) for row, yy in zip(z.tolist(), y.tolist())]
    assert csl(z, y).item() == pytest.approx(sum(per) / 16, rel=1e-14)
    with pytest.raises(IIFError, match="IIF weights contain NaN or inf at classes \\[1\\]"):
        IIFCostSensitiveLoss([1.0, float("nan")])


def test_online_weights_come_from_the_variant_table_in_float64():
    from iif.losses import online_smooth_weights
    from iif.weights import VARIANT_TABLE

    y = torch.tensor([0, 0, 1, -100])
    w, counts, k = online_smooth_weights(y, 3)
    assert w.dtype == torch.float64 and counts.tolist() == [2.0, 1.0, 0.0] and k.item() == 3.0
    assert w.tolist() == pytest.approx([math.log(4 / 3) + 1, math.log(4 / 2) + 1, math.log(4 / 1) + 1], rel=1e-15)
    torch.testing.assert_close(w, VARIANT_TABLE["smooth"].weight(counts, k))


def test_low_precision_adjust_logits_is_rounded_once():
    w = iif_weights([300, 20, 1], "smooth")
    z = (torch.randn(64, 3, generator=torch.Generator().manual_seed(4)) * 5).bfloat16()
    got = IIFLoss(w).adjust_logits(z)
    assert got.dtype == torch.bfloat16 and torch.equal(got, (z.float() * w).bfloat16())


# ---------------------------------------------------------------- typed variant parameters


def test_build_loss_takes_the_variant_and_weight_options_by_name():
    counts = [40, 10, 3]
    w = build_loss("iif", counts, variant="base2").iif_weights
    assert w.tolist() == pytest.approx([math.log2(53 / n) for n in counts], rel=1e-6)
    assert build_loss("iif", counts, variant="rel", total=1000).iif_weights.tolist() == pytest.approx(
        [math.log((1000 - n) / n) for n in counts], rel=1e-6)
    assert build_loss("iif", counts, norm="mean").iif_weights.mean().item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(IIFError, match="loss 'ce' has no IIF variant"):
        build_loss("ce", counts, variant="raw")
    with pytest.raises(IIFError, match="Unknown IIF variant 'bogus'"):
        build_loss("iif", counts, variant="bogus")
    with pytest.raises(IIFError, match="background_weight"):
        build_loss("iif", counts, background="first", background_weight=2.0)
    with pytest.raises(IIFError, match="bad options for loss 'iif'.*colour"):
        build_loss("iif", counts, colour="red")


def test_train_config_variant_reaches_the_loss():
    from iif.train.build import StageSpec, build_criterion
    from iif.train.config import TrainConfig

    counts = [40, 10, 3]
    cfg = TrainConfig()
    cfg.loss.name, cfg.loss.variant = "iif", "base10"
    spec = StageSpec.main(cfg)
    assert spec.variant == "base10" and "variant" not in spec.loss_kwargs
    w = build_criterion(spec, counts).iif_weights
    assert w.tolist() == pytest.approx([math.log10(53 / n) for n in counts], rel=1e-6)
    cfg.loss.name = "ce"
    assert StageSpec.main(cfg).variant is None
    assert type(build_criterion(StageSpec.main(cfg), counts)) is CrossEntropyLoss


def test_detection_end_to_end_iif_is_the_iif_loss():
    # use_margin(model, "iif", ...) wraps the box predictor with PostHocIIF(w, background="first") and torchvision
    # applies F.cross_entropy to its output: that is IIFLoss's composed path, value and gradient alike
    from iif.adjusters import PostHocIIF

    w = iif_weights([300, 40, 5, 1], "smooth")
    z, y, _ = rand_case(n=20, c=5, seed=31, dtype=torch.float32)
    y[:4] = 0  # some background RoIs
    z1, z2, z3 = (z.clone().requires_grad_() for _ in range(3))
    det = F.cross_entropy(PostHocIIF(w, background="first")(z1), y)
    composed = IIFLoss(w, background="first", fused=False)(z2, y)
    fused = IIFLoss(w, background="first")(z3, y)
    det.backward(), composed.backward(), fused.backward()
    assert torch.equal(det, composed) and torch.equal(z1.grad, z2.grad)
    torch.testing.assert_close(fused, composed, rtol=1e-6, atol=0)
    torch.testing.assert_close(z3.grad, z2.grad, rtol=1e-5, atol=1e-7)
