"""Classifier heads: logits checked against the formulas evaluated by hand in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from iif.errors import IIFError
from iif.models import HEADS, CosineHead, LWSHead, TauNormHead, build_head

X = [[3.0, 4.0, 0.0], [0.5, -1.0, 2.0]]  # ||x|| = 5 and sqrt(5.25)
W = [[1.0, 0.0, 0.0], [0.0, 2.0, 2.0], [-1.0, 1.0, 3.0], [0.2, 0.1, -0.4]]



def _norm(v: list[float]) -> float:
    return math.sqrt(sum(a * a for a in v))


def _cosine_by_hand(x: list[list[float]], w: list[list[float]], s: float) -> list[list[float]]:
    out = []
    for xi in x:
        nx = _norm(xi)
        x_hat = [(nx / (1.0 + nx)) * a / nx for a in xi]  # the OLTR formula (docs/method.md#models), written literally
        out.append([s * sum(a * b / _norm(wj) for a, b in zip(x_hat, wj)) for wj in w])
    return out


def _set_weight(head: nn.Module, w: list[list[float]]) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.tensor(w, dtype=head.weight.dtype))


def test_cosine_head_matches_oltr_formula_in_float64() -> None:
    head = build_head("cosine", 3, 4).double()
    _set_weight(head, W)
    got = head(torch.tensor(X, dtype=torch.float64))
    assert head.scale == 16.0
    assert torch.allclose(got, torch.tensor(_cosine_by_hand(X, W, 16.0), dtype=torch.float64), atol=1e-12)


def test_cosine_head_zero_feature_gives_zero_logits_not_nan() -> None:
    head = build_head("cosine", 3, 4)
    out = head(torch.zeros(2, 3))
    assert torch.equal(out, torch.zeros(2, 4))


def test_cosine_learnable_scale_is_s_squared_and_starts_at_5() -> None:
    head = build_head("cosine", 3, 4, learnable_scale=True).double()
    _set_weight(head, W)
    x = torch.tensor(X, dtype=torch.float64)
    assert head.s.item() == 5.0
    assert torch.allclose(head(x), torch.tensor(_cosine_by_hand(X, W, 25.0), dtype=torch.float64), atol=1e-12)
    with torch.no_grad():
        head.s.fill_(3.0)
    assert torch.allclose(head(x), torch.tensor(_cosine_by_hand(X, W, 9.0), dtype=torch.float64), atol=1e-12)
    # s is trained: d(sum logits)/ds = 2 s * sum(cosine part).
    head(x).sum().backward()
    cos_sum = sum(sum(r) for r in _cosine_by_hand(X, W, 1.0))
    assert head.s.grad.item() == pytest.approx(2 * 3.0 * cos_sum, rel=1e-12)
    # Fixed-scale heads have no scale parameter at all.
    assert [n for n, _ in build_head("cosine", 3, 4, scale=10).named_parameters()] == ["weight"]


def test_normed_linear_is_scaled_cosine_similarity() -> None:
    head = build_head("normed_linear", 3, 4).double()
    _set_weight(head, W)
    got = head(torch.tensor(X, dtype=torch.float64))
    expected = [[30.0 * sum(a * b for a, b in zip(xi, wj)) / (_norm(xi) * _norm(wj)) for wj in W] for xi in X]
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    head2 = build_head("normed_linear", 3, 4, scale=1.0).double()
    _set_weight(head2, W)
    assert torch.allclose(head2(torch.tensor(X, dtype=torch.float64)) * 30.0, got, atol=1e-12)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_tau_norm_head_uses_tau_normalised_rows_in_eval_only(tau: float) -> None:
    head = build_head("tau_norm", 3, 4, tau=tau).double()
    _set_weight(head, W)
    x = torch.tensor(X, dtype=torch.float64)
    raw = [[sum(a * b for a, b in zip(xi, wj)) for wj in W] for xi in X]
    head.train()
    assert torch.allclose(head(x), torch.tensor(raw, dtype=torch.float64), atol=1e-12)
    head.eval()
    expected = [[sum(a * b for a, b in zip(xi, wj)) / _norm(wj) ** tau for wj in W] for xi in X]
    assert torch.allclose(head(x), torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_tau_norm_from_linear_copies_weight_and_drops_the_bias_in_eval() -> None:
    linear = nn.Linear(3, 4)
    head = TauNormHead.from_linear(linear, tau=1.0)
    x = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.allclose(head.train()(x), linear(x), atol=1e-6)  # training: the linear head, bias included
        unit = linear.weight / linear.weight.norm(dim=1, keepdim=True)
        # eval: unit rows and no bias, as Kang et al.'s tau_norm.py
        assert torch.allclose(head.eval()(x), x @ unit.T, atol=1e-6)
        # the same logits as the library's one tau-norm adjuster on the trained linear head
        from iif.train.strategies import tau_norm_head

        assert torch.allclose(head(x), tau_norm_head(linear, 1.0)(x), atol=1e-6)


def test_lws_head_scales_linear_logits_and_from_linear_freezes_linear() -> None:
    linear = nn.Linear(3, 4)
    head = LWSHead.from_linear(linear)
    assert head.weight.shape == (4, 3) and torch.equal(head.weight, linear.weight)
    with torch.no_grad():
        head.lws.scale.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
    x = torch.randn(5, 3)
    assert torch.allclose(head(x), linear(x) * torch.tensor([1.0, 2.0, 0.5, -1.0]), atol=1e-6)
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["lws.scale"]


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_has_weight_and_reset_parameters(name: str) -> None:
    kw = {"learnable_scale": True} if name == "cosine" else {}
    head = build_head(name, 6, 5, **kw)
    assert head.weight.shape == (5, 6)
    assert head(torch.randn(3, 6)).shape == (3, 5)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
    head.reset_parameters()
    assert head.weight.abs().sum() > 0
    if name == "cosine":
        assert head.s.item() == 5.0
    if name == "lws":
        assert torch.equal(head.lws.scale, torch.ones(5))


def test_cosine_reset_parameters_keeps_custom_initial_scale() -> None:
    head = CosineHead(4, 2, scale=7.0, learnable_scale=True)
    with torch.no_grad():
        head.s.fill_(1.0)
    head.reset_parameters()
    assert head.s.item() == 7.0 and head.scale.item() == 49.0


def test_build_head_bad_inputs() -> None:
    with pytest.raises(IIFError, match="cosine.*linear|linear.*cosine"):
        build_head("arcface", 3, 4)
    with pytest.raises(IIFError, match="does not accept.*'tau'"):
        build_head("cosine", 3, 4, tau=1.0)
    with pytest.raises(IIFError, match="in_features"):
        build_head("linear", 0, 4)
    with pytest.raises(IIFError, match="num_classes"):
        build_head("linear", 3, 2.5)
    with pytest.raises(IIFError, match="scale"):
        build_head("cosine", 3, 4, scale=-1.0)
    with pytest.raises(IIFError, match="scale"):
        build_head("normed_linear", 3, 4, scale=0)
    with pytest.raises(IIFError, match="tau"):
        build_head("tau_norm", 3, 4, tau=float("nan"))
