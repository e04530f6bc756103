"""Toy Bayes simulation: which logit-adjustment offset suits a C + 1 softmax detector? (issue 15, item 2)

Proposals ``x`` in ``R^d`` come from ``C + 1`` Gaussian classes (unit covariance, random means); class 0 is
the background. The "detector" is the exact Bayes posterior of the *training* distribution: background
share ``pi`` (0.75, torchvision's RoI sampler), foreground prior ``p_c`` long-tailed (``p_c ∝ c^-alpha``).
Its logits are ``z_y = ln prior_y + ln N(x; mu_y, I)``. The test set is foreground-balanced (every class
``1 / C`` of the foreground) at the same background share. Three post-hoc offsets are compared (all through
:mod:`iif.adjusters`, as ``use_margin(..., when="test")`` builds them):

* ``bayes``: ``-tau ln p_c - ln sum_j p_j^(1-tau)``, background 0 (``la_form="bayes"``, the default);
* ``prior``: ``-tau ln p_c``, background 0 (``la_form="prior"``, the library's form until 2026-12-06);
* ``background_margin``: ``-tau ln p`` over ``C + 1`` priors with ``p_bg = pi`` (``background_margin=True``).

Reported: mAP over the ``C`` classes (per-class average precision of the class's score over all test
proposals, non-interpolated) and the number of background proposals whose best foreground score exceeds
0.3 (false positives at the det-bench threshold).

    python benchmarks/toy_bayes_la.py [--classes 20] [--seed 0] [--proposals 40000] [--spread 1.6]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from iif.adjusters import LogitAdjustment


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated AP: the mean of the precision at each positive, proposals ranked by score."""
    order = np.argsort(-scores, kind="stable")
    hit = positive[order]
    if not hit.any():
        return float("nan")
    precision = np.cumsum(hit) / np.arange(1, hit.size + 1)
    return float(precision[hit].mean())


def simulate(classes: int = 20, seed: int = 0, proposals: int = 40000, dim: int = 8, spread: float = 1.6,
             alpha: float = 1.5, background_share: float = 0.75, tau: float = 1.0,
             threshold: float = 0.3) -> dict[str, dict[str, float]]:
    """``{form: {"mAP", "false_positives"}}`` for the three offsets (module docstring), mAP in percent."""
    rng = np.random.default_rng(seed)
    c = int(classes)
    means = rng.normal(0.0, spread, size=(c + 1, dim))
    counts = np.round(1e6 * np.arange(1, c + 1, dtype=np.float64) ** -alpha)  # training counts, n_c ∝ c^-alpha
    p_fg = counts / counts.sum()
    train_prior = np.concatenate([[background_share], (1 - background_share) * p_fg])
    test_prior = np.concatenate([[background_share], np.full(c, (1 - background_share) / c)])
    y = rng.choice(c + 1, size=proposals, p=test_prior)
    x = means[y] + rng.normal(size=(proposals, dim))
    sq = ((x[:, None, :] - means[None, :, :]) ** 2).sum(-1)
    z = torch.as_tensor(np.log(train_prior)[None, :] - 0.5 * sq, dtype=torch.float64)
    adjusted = {
        "bayes": LogitAdjustment(counts, tau=tau, background="first", form="bayes")(z),
        "prior": LogitAdjustment(counts, tau=tau, background="first", form="prior")(z),
        "background_margin": z - tau * torch.as_tensor(np.log(train_prior), dtype=torch.float64),
    }
    out = {}
    for name, logits in adjusted.items():
        scores = torch.softmax(logits, dim=-1).numpy()
        aps = [average_precision(scores[:, k], y == k) for k in range(1, c + 1)]
        fps = int(((y == 0) & (scores[:, 1:].max(axis=1) > threshold)).sum())
        out[name] = {"mAP": 100.0 * float(np.nanmean(aps)), "false_positives": fps}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--proposals", type=int, default=40000)
    ap.add_argument("--spread", type=float, default=1.6, help="std of the class means (smaller: harder)")
    args = ap.parse_args()
    res = simulate(args.classes, args.seed, args.proposals, spread=args.spread)
    print(json.dumps(res, indent=1))
    base = res["bayes"]["false_positives"]
    for name, r in res.items():
        ratio = r["false_positives"] / base if base else math.nan
        print(f"{name:18s} mAP {r['mAP']:5.1f}  false positives {r['false_positives']:6d} ({ratio:.2f}x bayes)")


if __name__ == "__main__":
    main()
