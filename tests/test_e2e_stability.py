"""End-to-end IIF with unit-mean weights (``loss.norm: mean``): what the normalisation preserves and removes.

The paper's smooth weights have mean ln(C)+1-ish (3.3 for digits-LT, ~6 for CIFAR-100-LT), so CE(w * z)
also multiplies every logit, and Eq. 16's gradient w_i (q_i - y_i), by that factor: a temperature change
that a cosine head (fixed scale s) cannot undo. Dividing by the mean removes exactly that factor.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import iif
from iif.train import load_config
from iif.train.build import StageSpec, build_criterion
from iif.train.config import apply_overrides


def test_unit_mean_weights_keep_the_ratios_and_have_mean_one():
    counts = [500, 120, 30, 7, 2]
    w = iif.iif_weights(counts, "smooth").double()
    wm = iif.iif_weights(counts, "smooth", norm="mean").double()
    k = sum(counts)
    by_hand = torch.tensor([math.log((k + 1) / (n + 1)) + 1 for n in counts], dtype=torch.float64)
    assert torch.allclose(wm, by_hand / by_hand.mean(), atol=1e-6)
    assert wm.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(wm / wm[0], w / w[0], atol=1e-5)  # ratios, hence post-hoc argmax, unchanged


def test_on_balanced_counts_the_unit_mean_iif_loss_is_plain_cross_entropy():
    # Equal counts give equal weights; with unit mean they are all 1 and the loss is CE exactly, whereas the
    # paper's weights (ln(C) + 1 = ln(5) + 1 each here) turn it into CE at temperature 1 / (ln 5 + 1).
    torch.manual_seed(0)
    z, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 5, (64,))
    counts = [40] * 5
    unit = iif.IIFLoss(iif.iif_weights(counts, "smooth", norm="mean").double())(z, y)
    assert unit.item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-12)
    paper = iif.IIFLoss(iif.iif_weights(counts, "smooth").double())(z, y)
    factor = math.log((200 + 1) / (40 + 1)) + 1
    assert paper.item() == pytest.approx(F.cross_entropy(factor * z, y).item(), rel=1e-6)


def test_unit_mean_keeps_the_average_gradient_scale_of_eq_16():
    # d loss / d z_i = w_i (q_i - y_i) / N: summed |grad| over classes, weighted per class, averages to CE's
    # when the weights have unit mean and the logits are zero (q uniform), for any label mix.
    counts = [900, 90, 9]
    w = iif.iif_weights(counts, "smooth", norm="mean").double()
    y = torch.tensor([0, 1, 2])  # one sample of each class
    z = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    iif.IIFLoss(w)(z, y).backward()
    z_ce = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(z_ce, y).backward()
    # column i of the gradient is w_i times CE's column i (Eq. 16 at w * z = 0)
    assert torch.allclose(z.grad, z_ce.grad * w, atol=1e-12)
    assert z.grad.abs().sum().item() == pytest.approx(z_ce.grad.abs().sum().item(), rel=1e-6)


def test_loss_norm_reaches_the_loss_by_name():
    cfg = load_config("digits_lt_e2e")
    apply_overrides(cfg, ["loss.name=iif", "loss.norm=mean"])
    counts = np.array([90, 50, 30, 20, 12, 9, 7, 5, 5, 4])
    crit = build_criterion(StageSpec.main(cfg), counts)
    assert crit.iif_weights.double().mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(crit.iif_weights, iif.iif_weights(counts, "smooth", norm="mean"))


@pytest.mark.parametrize("bad", ["loss.norm=-1", "loss.norm=foo", "loss.norm=0"])
def test_bad_loss_norm_is_refused_before_any_work(bad):
    cfg = load_config("digits_lt_e2e")
    with pytest.raises(iif.IIFError, match="loss.norm"):
        apply_overrides(cfg, [bad])


def test_packaged_end_to_end_iif_configs_use_unit_mean_weights():
    from iif.train import packaged_configs

    names = [n for n in packaged_configs() if n.endswith("_e2e")]
    assert names
    for name in names:
        cfg = load_config(name)
        if cfg.loss.name == "iif":
            assert cfg.loss.norm == "mean", name


def test_cosine_head_digits_run_does_not_collapse_with_unit_mean_weights():
    # Seed 1 of the cosine head with the paper's weights ended at 64% val (docs/results.md, "End-to-end IIF
    # stability"); with unit-mean weights the same seed trains like softmax. A few seconds on one CPU thread.
    from iif.train import extract_features, fit

    def val_top1(overrides):
        cfg = load_config("digits_lt_e2e")
        apply_overrides(cfg, ["model.head=cosine", "model.kwargs={scale: 16.0}", "runtime.seed=1",
                              "runtime.progress=false", "runtime.device=cpu", "eval.every=1000", *overrides])
        res = fit(cfg)
        _, z, y = extract_features(res.model, res.splits.val, "cpu", 1024)
        z = res.criterion.adjust_logits(z) if hasattr(res.criterion, "adjust_logits") else z
        return 100.0 * float((z.argmax(1) == y).float().mean())

    softmax = val_top1(["loss.name=ce"])
    unit = val_top1(["loss.name=iif", "loss.norm=mean"])
    paper = val_top1(["loss.name=iif", "loss.norm=null"])
    # Measured (2026-12-06, 2-core CPU, torch 1 and 2 threads alike: the run is deterministic): seed 1 gives
    # softmax 84.5, unit-mean 83.0, paper weights 64.0 (200 val images, 0.5 points each). Over seeds 0-19
    # unit - softmax is -1.1 +- 2.7 (below -3 on 3 seeds of 20, -9 once) and paper - softmax -10.6 +- 6.8,
    # so these bounds pin this seed's run (re-measure them if a change redraws its random stream): 3 points
    # below softmax is twice the measured gap; weights divided by their minimum instead of their mean land
    # 4 points below softmax here, inside the earlier 8-point margin.
    assert unit > paper + 5.0
    assert unit >= softmax - 3.0 - 0.01  # 0.01: the top-1 is a float32 mean, off by ~1e-6
