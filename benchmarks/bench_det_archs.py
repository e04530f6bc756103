"""CPU speed of every detection architecture in ``iif.detection.ARCHS`` at the offline benchmark's size (issue 17).

For each arch: training img/s of SGD steps (``--batch`` 128-px random images, 3 boxes each with masks, C = 10)
and inference img/s (batch 1; 100 detections kept), one thread, median of ``--repeats`` timings after one untimed
warm-up step. Every arch is built by ``build_detector(arch, 10, min_size=128, max_size=128,
box_detections_per_img=100)`` with its own default head sizes (torchvision's for the R-CNN families: FPN 256,
1024-wide box head, 4 x 256 mask head; SSD300 resizes every image to 300 x 300 whatever min_size says; YOLOv3 takes
a 128 square). Weights are random (nothing is downloaded), so every image keeps the full 100 detections and mask
heads run on all of them: inference times are upper bounds of a trained detector's.

``OMP_NUM_THREADS=1 python benchmarks/bench_det_archs.py [--archs a,b] [--repeats 3] [--json out.json]`` prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from det_timing import infer_s, random_scenes, sgd, train_ips

from iif.detection import build_detector
from iif.detection.archs import ARCHS, has_masks

NUM_CLASSES = 10


def _infer_ips(model, images) -> float:
    return 1.0 / infer_s(model, images)


def measure(arch: str, batch: int, repeats: int, infer_images: int) -> dict:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_detector(arch, NUM_CLASSES, min_size=128, max_size=128, box_detections_per_img=100)
    build_s = time.perf_counter() - t0
    images, targets = random_scenes(batch, 0, has_masks(arch), NUM_CLASSES)
    opt = sgd(model, 1e-4, momentum=0.9)
    train_ips(model, opt, images, targets)  # warm-up, not timed
    train = [train_ips(model, opt, images, targets) for _ in range(repeats)]
    _infer_ips(model, images[:1])
    infer = [_infer_ips(model, images[:infer_images]) for _ in range(repeats)]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"arch": arch, "params_m": params, "build_s": build_s, "train_img_s": statistics.median(train),
            "infer_img_s": statistics.median(infer), "train_all": train, "infer_all": infer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated (default: every arch in ARCHS)")
    ap.add_argument("--batch", type=int, default=2, help="training images per step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=2, help="images per inference timing")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print("| arch | family | parameters (M) | train img/s | inference img/s |")
    print("|---|---|---|---|---|")
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        r = measure(arch, args.batch, args.repeats, args.images)
        rows.append(r)
        print(f"| `{arch}` | {ARCHS[arch][0]} | {r['params_m']:.1f} | {r['train_img_s']:.2f} | "
              f"{r['infer_img_s']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
