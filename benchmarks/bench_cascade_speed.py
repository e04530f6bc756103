"""CPU speed of Cascade Mask R-CNN against Mask R-CNN at the offline benchmark's size (issue 17, Performance).

Three measurements, each repeated ``--repeats`` times in alternation (A B A B ...), one thread, medians:

1. training img/s of one SGD step (batch ``--batch``, 128-px images, 3 objects each with masks) with det-bench's
   cpu-quick model settings (det_bench_softmax.yaml: r10, FPN 128 on P3-P5, ...): ``maskrcnn_r10_fpn`` vs
   ``cascade_maskrcnn_r10_fpn``, and the cascade with and without IIF in the loss (``use_margin('iif',
   when='train_and_test')``, raw weights): the margin's step cost as a ratio;
2. inference s/image (batch 1, masks on) with the same settings, softmax vs IIF on the cascade too;
3. inference s/image at 128 px of ``maskrcnn_r50_fpn`` vs ``cascade_maskrcnn_r50_fpn`` with torchvision's head
   sizes (FPN 256, 1024-wide box head, 4 x 256 mask head, 1000 test proposals, 100 detections).

Weights are random (nothing is downloaded), so every image yields the full 100 detections and the mask head
runs on all of them in both architectures. ``python benchmarks/bench_cascade_speed.py [--repeats 3]``.
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


def _preset_kwargs() -> dict:
    kw = model_kwargs(load_detection_config("det_bench_softmax"))
    return {k: v for k, v in kw.items() if k not in ("arch", "num_classes", "masks")}


def _model(arch: str, kw: dict, margin: bool):
    torch.manual_seed(0)
    model = build_detector(arch, 10, **kw)
    if margin:
        use_margin(model, "iif", COUNTS, variant="raw")
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


@torch.no_grad()
def _infer_s(model, images) -> float:
    model.eval()
    start = time.perf_counter()
    for im in images:
        model([im])
    return (time.perf_counter() - start) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--images", type=int, default=4, help="images per inference timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = _preset_kwargs()
    r50 = dict(min_size=128, max_size=128, box_detections_per_img=100)
    cases = {
        "maskrcnn_r10_fpn": ("maskrcnn_r10_fpn", preset, False),
        "cascade_maskrcnn_r10_fpn": ("cascade_maskrcnn_r10_fpn", preset, False),
        "cascade_maskrcnn_r10_fpn+iif": ("cascade_maskrcnn_r10_fpn", preset, True),
        "maskrcnn_r50_fpn": ("maskrcnn_r50_fpn", r50, False),
        "cascade_maskrcnn_r50_fpn": ("cascade_maskrcnn_r50_fpn", r50, False),
    }
    models = {name: _model(*spec) for name, spec in cases.items()}
    images, targets = _data(args.batch, 0)
    train: dict[str, list[float]] = {n: [] for n in cases if "r10" in n}
    infer: dict[str, list[float]] = {n: [] for n in cases}
    for name in infer:  # warm-up (first-call allocations), not timed
        if name in train:
            _train_ips(models[name], images, targets, 1)
        _infer_s(models[name], images[:1])
    for _ in range(args.repeats):
        for name in train:
            train[name].append(_train_ips(models[name], images, targets, args.steps))
        for name in infer:
            infer[name].append(_infer_s(models[name], images[: args.images]))
    med = {f"train_img_per_s/{n}": statistics.median(v) for n, v in train.items()}
    med.update({f"infer_s_per_image/{n}": statistics.median(v) for n, v in infer.items()})
    c, i = "cascade_maskrcnn_r10_fpn", "cascade_maskrcnn_r10_fpn+iif"
    med["iif_step_cost_ratio (softmax/iif img/s, paired median)"] = statistics.median(
        a / b for a, b in zip(train[c], train[i]))
    med["r10_train_ratio (maskrcnn/cascade img/s, paired median)"] = statistics.median(
        a / b for a, b in zip(train["maskrcnn_r10_fpn"], train[c]))
    med["iif_infer_cost_ratio (iif/softmax s, paired median)"] = statistics.median(
        b / a for a, b in zip(infer[c], infer[i]))
    med["r50_infer_ratio (cascade/maskrcnn s, paired median)"] = statistics.median(
        b / a for a, b in zip(infer["maskrcnn_r50_fpn"], infer["cascade_maskrcnn_r50_fpn"]))
    med["r10_infer_ratio (cascade/maskrcnn s, paired median)"] = statistics.median(
        b / a for a, b in zip(infer["maskrcnn_r10_fpn"], infer[c]))
    print(json.dumps({k: round(v, 3) for k, v in med.items()}, indent=1))
    print(json.dumps({"train": train, "infer": infer}))


if __name__ == "__main__":
    main()
