"""Training-step cost of IIF in a torchvision detector: the same step with and without ``use_margin``.

Two detectors with identical weights, one plain (softmax) and one switched with
``iif.detection.use_margin(model, "iif", counts, variant=..., by="image", total=<images>)`` (end to end: the
multiplied logits reach torchvision's loss). Each repetition times one full training step (forward with
targets, backward, SGD step) of both, in random order on the same batch and the same RNG state (so the RPN /
RoI sampling is identical), so machine load hits both alike. Prints the median step time of each, the ratio
of medians and the median of per-repetition ratios (issue 9: "IIF adds no measurable cost").

    python benchmarks/bench_det_step.py                          # cpu-quick preset, 1 thread

On the shared 2-core dev machine use one thread: with other jobs running, two OpenMP threads per process
made detector steps several times slower (oversubscription), which drowns any difference.
    python benchmarks/bench_det_step.py --device cuda --preset gpu --reps 50
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time

import numpy as np
import torch

from iif.detection import DETECTION_PRESETS, build_detector, use_margin


def scenes(n: int, size: int, num_classes: int, seed: int):
    """``n`` noise images with 2-5 filled rectangles each: boxes, long-tailed labels and masks."""
    g = np.random.default_rng(seed)
    p = np.exp(-np.arange(num_classes) / 4.0)
    p /= p.sum()
    images, targets = [], []
    for _ in range(n):
        img = torch.from_numpy(g.uniform(0, 0.3, (3, size, size)).astype(np.float32))
        boxes, labels, masks = [], [], []
        for _ in range(int(g.integers(2, 6))):
            w, h = (int(v) for v in g.integers(size // 8, size // 2, 2))
            x, y = int(g.integers(0, size - w)), int(g.integers(0, size - h))
            img[:, y:y + h, x:x + w] = float(g.uniform(0.5, 1.0))
            m = torch.zeros(size, size, dtype=torch.uint8)
            m[y:y + h, x:x + w] = 1
            boxes.append([x, y, x + w, y + h])
            labels.append(int(g.choice(num_classes, p=p)) + 1)
            masks.append(m)
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "masks": torch.stack(masks)})
    return images, targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-quick", choices=sorted(DETECTION_PRESETS))
    ap.add_argument("--arch", default=None, help="override the preset's arch")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variant", default="smooth")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU (0: as is)")
    args = ap.parse_args()
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    preset = DETECTION_PRESETS[args.preset]
    arch = args.arch or preset["arch"]
    size = int(preset["model"].get("min_size", 128))
    torch.manual_seed(0)
    plain = build_detector(arch, args.classes, **preset["model"]).to(dev)
    margin = copy.deepcopy(plain)
    images, targets = scenes(args.batch, size, args.classes, seed=0)
    counts = np.zeros(args.classes)
    for t in targets:
        for c in set(t["labels"].tolist()):
            counts[c - 1] += 1
    counts = np.maximum(counts, 1) * 50  # a long tail with no empty class (raw IIF needs n_c > 0)
    use_margin(margin, "iif", counts, variant=args.variant, by="image", total=float(counts.sum() * 2))
    images = [im.to(dev) for im in images]
    targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
    models = {"softmax": plain, "iif": margin}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for k, m in models.items()}

    def step(name: str, seed: int) -> float:
        m, opt = models[name], opts[name]
        m.train()
        torch.manual_seed(seed)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        loss = sum(m(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    for r in range(args.warmup):
        for name in models:
            step(name, r)
    order = random.Random(0)
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.reps):
        names = list(models)
        order.shuffle(names)
        for name in names:
            times[name].append(step(name, 1000 + r))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [b / a for a, b in zip(times["softmax"], times["iif"])]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{arch} ({args.preset} preset), batch {args.batch} of {size}px, {args.classes} classes, device {dev}, "
          f"threads {torch.get_num_threads()}, {args.reps} interleaved reps, load avg {load:.2f}")
    for k in models:
        print(f"  {k:8s} median step {med[k] * 1e3:8.1f} ms  ({args.batch / med[k]:.2f} img/s)")
    print(f"  iif/softmax: ratio of medians {med['iif'] / med['softmax']:.3f}, "
          f"median of per-rep ratios {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
