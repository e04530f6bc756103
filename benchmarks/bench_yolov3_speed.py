"""YOLOv3's CPU speed at the offline benchmark's size (issue 17, Performance): training and inference images per
second of ``yolov3_tiny_cpu`` and ``yolov3_darknet53`` on 128-px images, the IIF margin's step cost (the same
training steps with and without ``use_margin('iif')``, alternated), and YOLOv3 inference against Mask R-CNN
R50-FPN's on the same images.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_yolov3_speed.py [--threads 1] [--repeats 3]

Random images with two boxes each (speed does not depend on the content); timings are medians of ``repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from det_timing import paired, sgd, train_ips

from iif.detection import build_detector, use_margin

C = 20


def batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 50.0]]),
                "labels": torch.tensor([1 + i % C, 1 + (i + 3) % C])} for i in range(n)]
    return images, targets


def train_rate(model, images, targets, steps: int) -> float:
    return train_ips(model, sgd(model, 1e-4, momentum=0.9), images, targets, steps)


@torch.no_grad()
def infer_rate(model, images, steps: int) -> float:
    model.eval()
    model(images)  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        model(images)
    return steps * len(images) / (time.perf_counter() - start)


def build(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    kw = dict(min_size=128, max_size=128, box_detections_per_img=100)
    model = build_detector(arch, C, **kw)
    if arch.startswith("yolov3"):
        model.multiscale = False  # the same input size in every timed step
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"threads": args.threads, "repeats": args.repeats, "image_px": 128, "num_classes": C}
    counts = [1000 // (k + 1) for k in range(C)]
    for arch, n, steps in (("yolov3_tiny_cpu", 8, 5), ("yolov3_darknet53", 4, 2)):
        images, targets = batch(n, 0)
        plain, iif = build(arch), build(arch)
        use_margin(iif, "iif", counts, variant="smooth")
        tr_plain, tr_iif, inf = [], [], []
        for _ in range(args.repeats):  # alternated, so drift on the shared machine hits both
            tr_plain.append(train_rate(plain, images, targets, steps))
            tr_iif.append(train_rate(iif, images, targets, steps))
            inf.append(infer_rate(plain, images, steps))
        out[arch] = {"train_img_s": statistics.median(tr_plain), "train_img_s_iif": statistics.median(tr_iif),
                     "iif_over_plain_step_time": paired(tr_plain, tr_iif),
                     "infer_img_s": statistics.median(inf), "batch": n, "steps": steps}
    images, _ = batch(4, 1)
    ref = build("maskrcnn_r50_fpn")
    rates = [infer_rate(ref, images, 2) for _ in range(args.repeats)]
    out["maskrcnn_r50_fpn"] = {"infer_img_s": statistics.median(rates)}
    for arch in ("yolov3_tiny_cpu", "yolov3_darknet53"):
        out[arch]["infer_time_over_maskrcnn_r50"] = out["maskrcnn_r50_fpn"]["infer_img_s"] / out[arch]["infer_img_s"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
