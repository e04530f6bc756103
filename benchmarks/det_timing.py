"""What the detection speed scripts share (bench_cascade_speed, bench_htc_speed, bench_fasa_speed,
bench_yolov3_speed, bench_det_archs): random 128-px scenes, det-bench's cpu-quick model settings, the timed SGD
steps and per-image inference, the alternated repeats and the paired-median ratio.

Not a script: the others import it (``python benchmarks/<script>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

# 10 long-tailed class counts (the margin and FASA benchmarks' training set sizes)
COUNTS = np.array([300.0, 120.0, 60.0, 30.0, 12.0, 6.0, 3.0, 2.0, 1.0, 1.0])


def timing_args(description: str, repeats: int, batch: int = 8, steps: int = 3, images: int | None = None):
    """Parse ``--repeats``, ``--batch`` (training images per step), ``--steps`` (per timing) and, when ``images``
    is given, ``--images`` (per inference timing); then one torch thread."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--steps", type=int, default=steps)
    if images is not None:
        ap.add_argument("--images", type=int, default=images, help="images per inference timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    return args


def random_scenes(n: int, seed: int, masks: bool = True, num_classes: int = 10):
    """``n`` random 128 x 128 images, 3 random boxes each (16 to 46 px a side), labels in 1..num_classes and,
    with ``masks``, each box filled as its mask; all drawn from one generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, 128, 128, generator=g))
        xy = torch.rand(3, 2, generator=g) * 80
        boxes = torch.cat([xy, xy + 16 + torch.rand(3, 2, generator=g) * 30], 1)
        t = {"boxes": boxes, "labels": torch.randint(1, num_classes + 1, (3,), generator=g)}
        if masks:
            m = torch.zeros(3, 128, 128, dtype=torch.uint8)
            for mk, (x0, y0, x1, y1) in zip(m, boxes.int().tolist()):
                mk[y0:y1, x0:x1] = 1
            t["masks"] = m
        targets.append(t)
    return images, targets


def preset_kwargs() -> dict:
    """``build_detector`` keywords of det-bench's cpu-quick model (det_bench_softmax.yaml), arch and classes aside."""
    from iif.detection.config import load_detection_config, model_kwargs

    kw = model_kwargs(load_detection_config("det_bench_softmax"))
    return {k: v for k, v in kw.items() if k not in ("arch", "num_classes", "masks")}


def sgd(model, lr: float, momentum: float = 0.0) -> torch.optim.SGD:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum)


def train_ips(model, opt, images, targets, steps: int = 1) -> float:
    """Training images per second of ``steps`` SGD steps (forward, backward, ``opt.step``) on one batch."""
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * len(images) / (time.perf_counter() - start)


@torch.no_grad()
def infer_s(model, images) -> float:
    """Seconds per image of eval-mode inference, one image per forward."""
    model.eval()
    start = time.perf_counter()
    for im in images:
        model([im])
    return (time.perf_counter() - start) / len(images)


def alternated(models: dict, train_names, images, targets, repeats: int, steps: int, infer_images: int, lr: float):
    """Warm-up (one untimed step and inference each), then ``repeats`` rounds of: ``steps`` SGD steps (a fresh
    plain SGD at ``lr``) of every model named in ``train_names``, then per-image inference on the first
    ``infer_images`` images of every model, so drift on a shared machine hits all alike. Returns
    ``(train img/s lists, inference s/image lists)`` by name."""
    train: dict[str, list[float]] = {n: [] for n in train_names}
    infer: dict[str, list[float]] = {n: [] for n in models}
    for name in infer:  # warm-up (first-call allocations), not timed
        if name in train:
            train_ips(models[name], sgd(models[name], lr), images, targets, 1)
        infer_s(models[name], images[:1])
    for _ in range(repeats):
        for name in train:
            train[name].append(train_ips(models[name], sgd(models[name], lr), images, targets, steps))
        for name in infer:
            infer[name].append(infer_s(models[name], images[:infer_images]))
    return train, infer


def medians(train: dict, infer: dict) -> dict:
    out = {f"train_img_per_s/{n}": statistics.median(v) for n, v in train.items()}
    out.update({f"infer_s_per_image/{n}": statistics.median(v) for n, v in infer.items()})
    return out


def paired(a: list[float], b: list[float]) -> float:
    """The median of the paired ratios ``a_i / b_i`` (timings of the same round)."""
    return statistics.median(x / y for x, y in zip(a, b))
