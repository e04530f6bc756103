"""CPU step cost of FASA (iif.detection.fasa) at the offline benchmark's size.

One SGD step (batch ``--batch``, 128-px images, 3 objects each with masks) of ``maskrcnn_r10_fpn`` with det-bench's
cpu-quick model settings (det_bench_softmax.yaml) and IIF in the loss, with and without ``use_fasa`` (10 classes,
long-tailed counts, ``prob_scale`` 10 so several virtual features are drawn each step); the two alternate
``--repeats`` times (A B A B ...), one thread; printed: the median img/s of each and the paired median ratio.
Weights are random (nothing is downloaded). ``python benchmarks/bench_fasa_speed.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from iif.detection import build_detector
from iif.detection.config import load_detection_config, model_kwargs
from iif.detection.fasa import use_fasa
from iif.detection.margins import use_margin

COUNTS = np.array([300.0, 120.0, 60.0, 30.0, 12.0, 6.0, 3.0, 2.0, 1.0, 1.0])


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, 128, 128, generator=g))
        xy = torch.rand(3, 2, generator=g) * 80
        boxes = torch.cat([xy, xy + 16 + torch.rand(3, 2, generator=g) * 30], 1)
        masks = torch.zeros(3, 128, 128, dtype=torch.uint8)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            m[y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes, "labels": torch.randint(1, 11, (3,), generator=g), "masks": masks})
    return images, targets


def _model(fasa: bool):
    kw = model_kwargs(load_detection_config("det_bench_softmax"))
    kw = {k: v for k, v in kw.items() if k not in ("arch", "num_classes", "masks")}
    torch.manual_seed(0)
    model = build_detector("maskrcnn_r10_fpn", 10, **kw)
    use_margin(model, "iif", COUNTS, variant="raw")
    if fasa:
        use_fasa(model, COUNTS, prob_scale=10.0)
    return model


def _train_ips(model, images, targets, steps: int) -> float:
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * len(images) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = {"iif": _model(False), "iif+fasa": _model(True)}
    images, targets = _data(args.batch, 0)
    for m in models.values():  # warm-up, not timed
        _train_ips(m, images, targets, 1)
    ips: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            ips[name].append(_train_ips(m, images, targets, args.steps))
    out = {f"train_img_per_s/{n}": statistics.median(v) for n, v in ips.items()}
    out["fasa_step_cost_ratio (iif/iif+fasa img/s, paired median)"] = statistics.median(
        a / b for a, b in zip(ips["iif"], ips["iif+fasa"]))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
