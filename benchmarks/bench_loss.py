"""IIF loss cost relative to plain cross-entropy, forward + backward, measured side by side.

Times, in one run with interleaved repetitions (so machine load hits all variants alike):
  ce     F.cross_entropy(z, y)
  naive  F.cross_entropy(z * w, y)                 (the composed form of Eq. 15)
  fused  iif.losses.IIFLoss(w)(z, y)               (default options: the fused autograd kernel on CPU,
                                                   the composed form on GPUs)
  fused-nocheck  the same with check_finite=False, check_labels=False
  kernel-forced  (GPU only) IIFLoss(w, fused=True, no checks): the fused kernel on the GPU
and prints each median, the ratio of medians to ce and the median of per-repetition ratios. The target is
fused <= 1.10x ce (docs/losses.md#speed has the measured numbers).

    python benchmarks/bench_loss.py                      # CPU, batch 256, 1000 classes
    python benchmarks/bench_loss.py --device cuda --reps 500
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from iif.losses import IIFLoss
from iif.weights import iif_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: as is")
    ap.add_argument(
        "--clock", default="wall", choices=["wall", "cpu"],
        help="wall: perf_counter; cpu: this thread's CPU time (use with --threads 1 on a shared machine: "
        "time spent descheduled by other jobs is not counted)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.clock == "cpu" and (dev.type != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("--clock cpu measures one thread's CPU time: use it with --device cpu --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    # ImageNet-LT-like counts (Pareto, 1280 .. 5 images) so the weights have a realistic spread.
    counts = torch.clamp((1280 * torch.rand(args.classes) ** 6).round(), min=5)
    w = iif_weights(counts, "smooth").to(dev)
    z0 = torch.randn(args.batch, args.classes, device=dev, dtype=dtype)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    fused = IIFLoss(w).to(dev)
    fused_nocheck = IIFLoss(w, check_finite=False, check_labels=False).to(dev)
    w_dt = w.to(dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    variants = {
        "ce": lambda z: F.cross_entropy(z, y),
        "naive": lambda z: F.cross_entropy(z * w_dt, y),
        "fused": lambda z: fused(z, y),
        "fused-nocheck": lambda z: fused_nocheck(z, y),
    }
    if dev.type != "cpu":
        # IIFLoss picks the composed form on GPUs (fused="auto"); show the forced fused kernel too.
        forced = IIFLoss(w, fused=True, check_finite=False, check_labels=False).to(dev)
        variants["kernel-forced"] = lambda z: forced(z, y)
    # Each repetition runs every variant once, in a shuffled order, on a fresh leaf (made outside the
    # timed region). Two summaries: ratio of the per-variant medians, and the median over repetitions of
    # the ratio within one repetition; the second cancels the load swings of a shared machine.
    rng = random.Random(0)
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    paired: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(args.warmup + args.reps):
        rng.shuffle(names)
        cur = {}
        for name in names:
            z = z0.detach().clone().requires_grad_()
            sync()
            t0 = clock()
            variants[name](z).backward()
            sync()
            cur[name] = clock() - t0
        if rep >= args.warmup:
            for name, dt in cur.items():
                times[name].append(dt)
                paired[name].append(dt / cur["ce"])
    base = statistics.median(times["ce"])
    print(f"device={dev} dtype={args.dtype} batch={args.batch} classes={args.classes} reps={args.reps} "
          f"threads={torch.get_num_threads()} clock={args.clock} torch={torch.__version__}")
    print(f"{'variant':14s} {'median':>12s}   {'ratio of medians':>16s}   {'median paired ratio':>19s}")
    for name in variants:
        med = statistics.median(times[name])
        print(f"{name:14s} {med * 1e6:9.1f} us   {med / base:15.3f}x   {statistics.median(paired[name]):18.3f}x")

if __name__ == "__main__":
    main()
