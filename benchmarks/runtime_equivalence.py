"""Record tiny detection and classification trainings, to show a refactoring of the shared runtime keeps them
bit-identical (issue 16, "one runtime").

Every optimizer step records the learning rate it uses and a float64 sum of the gradients it applies; every
``Tensor.backward`` records the loss value (``float.hex``, so equality is exact); each run records its per-epoch
history and a SHA-256 of its final weights. The hooks sit on torch itself, not on iif, so the same script
observes the code before and after a change.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/runtime_equivalence.py --save /tmp/runtime_before.json
    # ... change the code ...
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/runtime_equivalence.py --check /tmp/runtime_before.json

Runs (each a few CPU-seconds on one thread):

* ``det``: a tiny Mask R-CNN (``maskrcnn_r10_fpn``) through :func:`iif.detection.engine.train_detector`, 4 images,
  batch 2 (2 iterations per epoch), 3 epochs, warm-up over 3 iterations that reaches past the milestone at epoch
  1 (so the warm-up factor and the step decay multiply), gradient clipping, one checkpoint per epoch;
* ``det_resume``: the same stopped after epoch 1 and resumed;
* ``cls_multistep``, ``cls_cosine``, ``cls_bf16``: digits-LT end-to-end with :func:`iif.train.fit` (warm-up then
  step decay / cosine, bf16 autocast);
* ``cls_decoupled``: digits-LT decoupled (stage 1, then stage 2 with the backbone frozen).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

RECORD: list = []


def _install_hooks() -> None:
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    def pre_step(optimizer, args, kwargs):
        g = sum(float(p.grad.double().sum()) for group in optimizer.param_groups for p in group["params"]
                if p.grad is not None)
        RECORD.append(("step", float(optimizer.param_groups[0]["lr"]).hex(), float(g).hex()))

    register_optimizer_step_pre_hook(pre_step)
    real_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        if self.dim() == 0:
            RECORD.append(("loss", float(self.detach()).hex()))
        return real_backward(self, *a, **k)

    torch.Tensor.backward = backward


def _weights_sha(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if v.numel() else b"")
    return h.hexdigest()


def _tiny_scenes():
    """Four 64-px images with one or two filled squares (categories 1..3), as tests/test_detection_engine.py."""
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(4):
        img = torch.rand(3, 64, 64, generator=g) * 0.2
        boxes, labels, masks = [], [], []
        for j in range(1 + i % 2):
            x0, y0 = 4 + 28 * j, 6 + 3 * i
            img[:, y0:y0 + 20, x0:x0 + 20] = 0.9
            m = torch.zeros(64, 64, dtype=torch.uint8)
            m[y0:y0 + 20, x0:x0 + 20] = 1
            boxes.append([x0, y0, x0 + 20, y0 + 20])
            labels.append(1 + (i + j) % 3)
            masks.append(m)
        items.append((img, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                            "masks": torch.stack(masks), "image_id": 100 + i}))
    return items


TINY_DET = dict(min_size=64, max_size=64, returned_layers=(3, 4), anchor_sizes=((16,), (32,), (64,)),
                fpn_channels=16, representation_size=32, mask_layers=(16,), rpn_pre_nms_top_n_train=50,
                rpn_post_nms_top_n_train=20, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                rpn_batch_size_per_image=32, box_batch_size_per_image=16, box_detections_per_img=10)
DET_KW = dict(epochs=3, batch_size=2, lr=0.01, warmup_iters=3, warmup_factor=0.25, milestones=(1,), gamma=0.5,
              clip_grad_norm=5.0, device="cpu", seed=3, log=lambda s: None)


def run_det(tmp: Path, resume: bool) -> dict:
    from iif.detection.engine import train_detector
    from iif.detection.models import build_detector

    torch.manual_seed(0)
    model = build_detector("maskrcnn_r10_fpn", 3, **TINY_DET)
    out = tmp / ("det_resume" if resume else "det")
    if resume:
        train_detector(model, _tiny_scenes(), out_dir=out, stop_after_epoch=1, **DET_KW)
        torch.manual_seed(99)
        model = build_detector("maskrcnn_r10_fpn", 3, **TINY_DET)
        result = train_detector(model, _tiny_scenes(), out_dir=out, resume=True, **DET_KW)
    else:
        result = train_detector(model, _tiny_scenes(), out_dir=out, **DET_KW)
    history = [{k: (float(v).hex() if isinstance(v, float) else v) for k, v in row.items()
                if k not in ("seconds", "images_per_s")} for row in result["history"]]
    return {"history": history, "weights": _weights_sha(model)}


TINY_CLS = ["runtime.progress=false", "runtime.tensorboard=false", "eval.every=1", "model.backbone_kwargs.width=4"]
CLS_RUNS = {
    "cls_multistep": ["schedule.epochs=3", "schedule.name=multistep", "schedule.milestones=[2]",
                      "schedule.warmup_epochs=0.5", "schedule.warmup_start_factor=0.2"],
    "cls_cosine": ["schedule.epochs=2", "schedule.name=cosine", "schedule.warmup_epochs=0.5"],
    "cls_bf16": ["schedule.epochs=1", "runtime.amp=bf16", "data.mixup_alpha=0.2"],
}


def run_cls(name: str, splits) -> dict:
    from iif.train import fit, load_config

    if name == "cls_decoupled":
        cfg = load_config("digits_lt_decoupled", TINY_CLS + ["schedule.epochs=1", "decoupled.epochs=1"])
    else:
        cfg = load_config("digits_lt_e2e", TINY_CLS + CLS_RUNS[name])
    res = fit(cfg, splits=splits)
    history = [{k: (float(v).hex() if isinstance(v, float) else v) for k, v in row.items()
                if k not in ("seconds", "images_per_s")} for row in res.history]
    top1 = {k: float(m["top1"]).hex() for k, m in res.final_metrics.items()}
    return {"history": history, "weights": _weights_sha(res.model), "top1": top1}


def record() -> dict:
    from iif.train import build_splits, load_config

    _install_hooks()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("IIF_CACHE_DIR", str(Path(tmp) / "cache"))
        for name, resume in (("det", False), ("det_resume", True)):
            RECORD.clear()
            results[name] = {**run_det(Path(tmp), resume), "iterations": list(RECORD)}
        splits = build_splits(load_config("digits_lt_e2e"))
        for name in (*CLS_RUNS, "cls_decoupled"):
            RECORD.clear()
            results[name] = {**run_cls(name, splits), "iterations": list(RECORD)}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write the record to this JSON file")
    group.add_argument("--check", help="compare with the record in this JSON file; exit 1 on any difference")
    args = ap.parse_args(argv)
    results = json.loads(json.dumps(record()))  # tuples as lists, as read back
    for name, r in results.items():
        steps = sum(1 for x in r["iterations"] if x[0] == "step")
        print(f"{name}: {steps} optimizer steps, weights {r['weights'][:16]}")
    if args.save:
        Path(args.save).write_text(json.dumps(results, indent=1))
        return 0
    before = json.loads(Path(args.check).read_text())
    bad = [name for name in sorted(set(before) | set(results)) if before.get(name) != results.get(name)]
    for name in bad:
        b, a = before.get(name, {}), results.get(name, {})
        for key in sorted(set(b) | set(a)):
            if b.get(key) != a.get(key):
                print(f"DIFFERENT: {name}.{key}")
    print("identical" if not bad else f"{len(bad)} run(s) differ: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
