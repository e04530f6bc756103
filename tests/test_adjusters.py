"""Adjusters (paper Table IV) against values worked by hand with math.exp / math.log."""

import math

import numpy as np
import pytest
import torch

from iif.adjusters import (
    BalancedSoftmaxOffset,
    LearnableWeightScaling,
    LogitAdjustment,
    PostHocIIF,
    balanced_softmax_offset,
    detection_scores,
    logit_adjustment,
    posthoc_iif,
    tau_normalize,
)
from iif.errors import IIFError
from iif.weights import iif_weights

Z = [[1.0, -2.0, 0.5], [0.0, 4.0, -1.0]]
W = [2.0, 3.0, 0.5]


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def test_posthoc_iif_multiplies_each_logit_by_its_weight():
    out = PostHocIIF(W)(t(Z))
    assert out.dtype == torch.float64
    assert out.tolist() == [[2.0, -6.0, 0.25], [0.0, 12.0, -0.5]]
    assert torch.equal(posthoc_iif(t(Z), torch.tensor(W)), out)


def test_posthoc_iif_keeps_the_sign_and_can_move_the_argmax_to_a_rare_class():
    # head class 0 (w=1.2) wins on raw logits; the rare class (w=3) wins after Eq. 13
    z = t([[2.0, 1.0]])
    assert int(z.argmax()) == 0
    out = PostHocIIF([1.2, 3.0])(z)
    assert out[0].tolist() == pytest.approx([2.4, 3.0], rel=1e-6) and int(out.argmax()) == 1
    assert bool((torch.sign(out) == torch.sign(z)).all())


def test_posthoc_iif_from_counts_uses_smooth_weights_by_default():
    counts, k = [3, 1], 4
    expect = [math.log((k + 1) / (n + 1)) + 1 for n in counts]
    mod = PostHocIIF.from_counts(counts)
    assert mod.weights.tolist() == pytest.approx(expect, rel=1e-6)
    raw = PostHocIIF.from_counts(counts, variant="raw", total=8)
    assert raw.weights.tolist() == pytest.approx([math.log(8 / 3), math.log(8)], rel=1e-6)
    out = mod(t([[1.0, -1.0]]))
    assert out[0].tolist() == pytest.approx([expect[0], -expect[1]], rel=1e-6)


@pytest.mark.parametrize("where", ["first", "last"])
def test_posthoc_iif_detection_leaves_background_logit_unchanged(where):
    fg = [1.0, -2.0, 0.5]
    z = [0.7] + fg if where == "first" else fg + [0.7]
    out = PostHocIIF(W, background=where)(t([z]))[0].tolist()
    expect_fg = [2.0, -6.0, 0.25]
    assert out == ([0.7] + expect_fg if where == "first" else expect_fg + [0.7])
    # weights that already carry the background entry (iif_weights(..., background=...)) give the same
    full = [1.0] + W if where == "first" else W + [1.0]
    assert PostHocIIF(full, background=where)(t([z]))[0].tolist() == out


def test_adjusters_check_the_class_dimension_without_background():
    with pytest.raises(IIFError, match=r"logits have 4 classes.*weights have 3.*expected logits of shape \(\.\.\., 3\)"):
        PostHocIIF(W)(torch.zeros(2, 4))
    with pytest.raises(IIFError, match="logits have 2 classes.*counts have 3"):
        LogitAdjustment([5, 3, 1])(torch.zeros(1, 2))
    with pytest.raises(IIFError, match="logits have 5 classes"):
        BalancedSoftmaxOffset([5, 3, 1])(torch.zeros(5))
    with pytest.raises(IIFError, match="logits have 2 classes"):
        LearnableWeightScaling(3)(torch.zeros(1, 2))


def test_adjusters_check_the_class_dimension_with_background():
    with pytest.raises(IIFError, match=r"logits have 5 classes.*expected 4 \(3 foreground classes \+ 1 background"):
        PostHocIIF(W, background="first")(torch.zeros(2, 5))
    with pytest.raises(IIFError, match=r"expected 4"):
        LogitAdjustment([5, 3, 1], background="last")(torch.zeros(2, 2))
    with pytest.raises(IIFError, match=r"expected 4"):
        detection_scores(torch.zeros(1, 6), torch.tensor(W), background="last")
    with pytest.raises(IIFError, match="background must be None .*'first'.*'last'.*got 'middle'"):
        PostHocIIF(W, background="middle")


def test_logit_adjustment_subtracts_tau_log_prior():
    counts = [3, 1]
    z = [[0.5, 0.2]]
    lp = [math.log(0.75), math.log(0.25)]
    out = LogitAdjustment(counts)(t(z))[0].tolist()
    assert out == pytest.approx([0.5 - lp[0], 0.2 - lp[1]], rel=1e-6)
    half = LogitAdjustment(counts, tau=0.5)(t(z))[0].tolist()
    assert half == pytest.approx([0.5 - 0.5 * lp[0], 0.2 - 0.5 * lp[1]], rel=1e-6)
    # the functional form keeps float64 offsets for float64 logits: exact to double rounding
    exact = [0.5 - 0.5 * lp[0], 0.2 - 0.5 * lp[1]]
    assert logit_adjustment(t(z), counts, tau=0.5)[0].tolist() == pytest.approx(exact, rel=1e-15)
    bg = LogitAdjustment(counts, background="last")(t([[0.5, 0.2, -3.0]]))[0].tolist()
    assert bg == pytest.approx(out + [-3.0], rel=1e-6)


def test_balanced_softmax_offset_adds_log_counts_and_refuses_zero_counts():
    out = BalancedSoftmaxOffset([4, 1])(t([[0.0, 1.0]]))[0].tolist()
    assert out == pytest.approx([math.log(4), 1.0], rel=1e-6)
    first = balanced_softmax_offset(t([[9.0, 0.0, 1.0]]), [4, 1], background="first")[0].tolist()
    assert first == pytest.approx([9.0, math.log(4), 1.0], rel=1e-6)
    with pytest.raises(IIFError, match="ln\\(n\\) is -inf.*zero count \\[1\\].*add 1"):
        BalancedSoftmaxOffset([4, 0])
    with pytest.raises(IIFError, match="zero"):
        LogitAdjustment([0, 2])


def test_tau_normalize_rows():
    w = t([[3.0, 4.0], [0.0, 2.0]])
    unit = tau_normalize(w, 1.0)
    assert unit[0].tolist() == pytest.approx([0.6, 0.8]) and unit[1].tolist() == pytest.approx([0.0, 1.0])
    assert torch.equal(tau_normalize(w, 0.0), w)
    half = tau_normalize(w, 0.5)
    assert half[0].tolist() == pytest.approx([3 / math.sqrt(5), 4 / math.sqrt(5)])
    assert half[1].tolist() == pytest.approx([0.0, 2 / math.sqrt(2)])


def test_learnable_weight_scaling_scales_foreground_and_learns():
    lws = LearnableWeightScaling(2, background="first")
    with torch.no_grad():
        lws.scale.copy_(torch.tensor([2.0, 0.5]))
    z = torch.tensor([[3.0, 1.0, 4.0]])
    out = lws(z)
    assert out.tolist() == [[3.0, 2.0, 2.0]]
    out.sum().backward()
    # d(sum)/d alpha_c = z_c of the foreground columns; the background has no parameter
    assert lws.scale.grad.tolist() == [1.0, 4.0]
    assert LearnableWeightScaling(3)(torch.ones(1, 3)).tolist() == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("where", ["first", "last"])
def test_detection_scores_softmax_of_weighted_logits_without_background(where):
    bg, fg = 0.5, [1.0, -1.0]
    w = [2.0, 3.0]
    zw = [bg, 2.0, -3.0]
    den = sum(math.exp(v) for v in zw)
    expect = [math.exp(2.0) / den, math.exp(-3.0) / den]
    z = [bg] + fg if where == "first" else fg + [bg]
    out = detection_scores(t([z]), torch.tensor(w), background=where)
    assert out.shape == (1, 2)
    assert out[0].tolist() == pytest.approx(expect, rel=1e-12)
    with pytest.raises(IIFError, match="background='first' or 'last'"):
        detection_scores(t([z]), torch.tensor(w), background=None)


def test_adjusters_follow_the_module_device_and_dtype():
    mod = PostHocIIF(iif_weights([3, 1]))
    z32 = torch.tensor([[1.0, 1.0]])
    assert mod(z32).dtype == torch.float32
    assert mod.double()(t([[1.0, 1.0]])).dtype == torch.float64
    assert "vec" in dict(mod.named_buffers())


def _bf16_logits(n=256, c=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, generator=g) * 6).bfloat16()


def test_low_precision_logits_are_adjusted_in_float32_and_returned_in_their_dtype():
    counts = [500, 200, 90, 40, 20, 9, 5, 3, 2, 1, 1, 1]
    z = _bf16_logits()
    w = iif_weights(counts, "smooth")
    z32 = z.float()
    lp = torch.tensor(np.log(np.array(counts) / sum(counts)), dtype=torch.float32)
    ln_n = torch.tensor(np.log(counts), dtype=torch.float32)
    cases = [
        (PostHocIIF(w)(z), z32 * w),
        (posthoc_iif(z, w), z32 * w),
        (posthoc_iif(z, w.tolist()), z32 * w),
        (LogitAdjustment(counts, tau=1.5)(z), z32 - 1.5 * lp),
        (logit_adjustment(z, counts, tau=1.5), z32 - 1.5 * lp),
        (BalancedSoftmaxOffset(counts)(z), z32 + ln_n),
        (balanced_softmax_offset(z, counts), z32 + ln_n),
    ]
    for got, ref in cases:
        assert got.dtype == torch.bfloat16
        # the float32 result rounded once to bfloat16 (a bfloat16 product would round w first)
        assert torch.equal(got, ref.bfloat16())
    # a bfloat16 multiply of bfloat16-rounded weights is not the same: the test can tell the two apart
    assert not torch.equal(z * w.bfloat16(), (z32 * w).bfloat16())
    zb = torch.cat([torch.zeros(z.shape[0], 1, dtype=torch.bfloat16), z], 1)
    scores = detection_scores(zb, w, background="first")
    assert scores.dtype == torch.bfloat16
    ref = torch.softmax(torch.cat([torch.zeros(z.shape[0], 1), z32 * w], 1), 1)[:, 1:]
    assert torch.equal(scores, ref.bfloat16())
    z16 = z.half()
    assert torch.equal(PostHocIIF(w)(z16), (z16.float() * w).half())


def test_float64_logits_keep_float64_weights():
    w = iif_weights([500, 3, 1], "normit", total=5000, dtype=torch.float64)
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    assert torch.equal(PostHocIIF(w)(z), z * w)
    assert PostHocIIF(w).weights.dtype == torch.float64
    assert torch.equal(posthoc_iif(z, w), z * w)
