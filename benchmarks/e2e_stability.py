"""End-to-end IIF stability: softmax CE vs the IIF loss with the paper's weights vs unit-mean weights.

Trains each (head, method, seed) with ``iif.train.fit`` on a packaged config and prints, per head and method,
mean ± std over seeds of top-1 on the validation and the test split (models trained with the IIF loss are
scored on ``w * z``, as ``iif train`` does). The methods:

- ``softmax``: ``loss.name=ce``;
- ``iif-paper``: ``loss.name=iif`` with the paper's smooth weights (mean ~3.3 for digits-LT, ~6 for CIFAR-100-LT);
- ``iif-mean``: ``loss.name=iif`` with ``loss.norm=mean``: the same weights divided by their mean (the packaged
  end-to-end configs' setting).

Usage (2-core CPU; digits-LT ~1-10 s per run, Fashion-MNIST-LT ~50-100 s)::

    python benchmarks/e2e_stability.py digits_lt_e2e --seeds 5
    python benchmarks/e2e_stability.py digits_lt_e2e --seeds 5 schedule.epochs=30
    python benchmarks/e2e_stability.py fashion_mnist_lt_e2e --seeds 3 data.num_workers=0

Extra ``key=value`` arguments are config overrides applied to every run. Selection decisions use the
validation column only; the test column is reported, never tuned on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

METHODS = {
    "softmax": ["loss.name=ce", "loss.kwargs={}", "loss.norm=null"],
    "iif-paper": ["loss.name=iif", "loss.variant=smooth", "loss.kwargs={}", "loss.norm=null"],
    "iif-mean": ["loss.name=iif", "loss.variant=smooth", "loss.kwargs={}", "loss.norm=mean"],
}
HEADS = {"linear": "model.kwargs={}", "cosine": "model.kwargs={scale: 16.0}"}


def top1(model, criterion, dataset) -> float:
    from iif.train import extract_features

    _, logits, labels = extract_features(model, dataset, "cpu", 1024)
    if criterion is not None and hasattr(criterion, "adjust_logits"):
        logits = criterion.adjust_logits(logits)
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def run_one(config: str, head: str, method: str, seed: int, overrides: list[str]) -> dict:
    from iif.train import fit, load_config
    from iif.train.config import apply_overrides

    cfg = load_config(config)
    ov = METHODS[method] + [f"model.head={head}", HEADS[head], f"runtime.seed={seed}", "runtime.progress=false",
                            "runtime.device=cpu", "eval.every=100000"] + overrides
    apply_overrides(cfg, ov)
    t0 = time.perf_counter()
    res = fit(cfg)
    train_acc = [h["train_acc"] for h in res.history if h.get("train_acc") is not None]
    return {"head": head, "method": method, "seed": seed, "val": top1(res.model, res.criterion, res.splits.val),
            "test": top1(res.model, res.criterion, res.splits.test), "final_train_acc": train_acc[-1] if train_acc else None,
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--heads", default="linear,cosine")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--jsonl", default=None, help="also append every run as a JSON line to this file")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args(argv)
    torch.set_num_threads(1)
    rows = []
    for head in a.heads.split(","):
        for method in a.methods.split(","):
            runs = [run_one(a.config, head, method, s, a.overrides) for s in range(a.seeds)]
            if a.jsonl:
                with open(a.jsonl, "a") as f:
                    for r in runs:
                        f.write(json.dumps({"config": a.config, "overrides": a.overrides, **r}) + "\n")
            v, t = [r["val"] for r in runs], [r["test"] for r in runs]
            sd = (lambda x: statistics.stdev(x)) if len(runs) > 1 else (lambda x: float("nan"))
            rows.append((head, method, statistics.mean(v), sd(v), statistics.mean(t), sd(t),
                         statistics.mean(r["seconds"] for r in runs)))
            print(f"{head:7s} {method:10s} val {rows[-1][2]:6.2f} ± {rows[-1][3]:5.2f}   test {rows[-1][4]:6.2f} ± "
                  f"{rows[-1][5]:5.2f}   ({rows[-1][6]:.1f} s/run)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
