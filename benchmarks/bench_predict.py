"""Throughput of ``iif predict`` (:func:`iif.predict.predict_images`) on 32-px PNG files.

    python benchmarks/bench_predict.py [--images 1000] [--repeats 3] [--batch-size 64] [--threads N]

Trains the packaged ``folder`` recipe for one epoch per stage on a tiny random 32-px ImageFolder tree (the
weights do not matter for speed), writes ``--images`` random 32-px RGB PNGs, then times predict_images over
all of them: once cold (checkpoint load + model build + decoding + forward) and ``--repeats`` times warm.
Prints one JSON line: images, wall seconds and images per second (median of the repeats), and the CPU
seconds the process used (all threads), which depend less on other jobs sharing the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _write_pngs(folder: Path, n: int, rng: np.random.Generator, size: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--adjust", default="iif:smooth")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from iif.predict import predict_images
    from iif.train import fit, load_config

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for c in range(4):
            _write_pngs(tmp / "tree" / f"class{c}", 12 - 2 * c, rng)
        cfg = load_config("folder", [f"data.root={tmp / 'tree'}", "schedule.epochs=1", "decoupled.epochs=1",
                                     "data.num_workers=0", "runtime.device=cpu", "runtime.progress=false"])
        fit(cfg, out_dir=tmp / "run")
        _write_pngs(tmp / "new", args.images, rng)
        t0 = time.perf_counter()
        rows = predict_images(tmp / "run" / "last.pt", [tmp / "new"], adjust=args.adjust, topk=5,
                              device="cpu", batch_size=args.batch_size)
        cold = time.perf_counter() - t0
        assert len(rows) == args.images
        warm, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            predict_images(tmp / "run" / "last.pt", [tmp / "new"], adjust=args.adjust, topk=5, device="cpu",
                           batch_size=args.batch_size)
            warm.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    med = statistics.median(warm)
    print(json.dumps({"images": args.images, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                      "adjust": args.adjust, "cold_s": round(cold, 3), "cold_img_per_s": round(args.images / cold, 1),
                      "warm_s": [round(w, 3) for w in warm], "img_per_s": round(args.images / med, 1),
                      # CPU seconds of this process (all threads): less sensitive to other jobs on the machine
                      "cpu_s": [round(c, 3) for c in cpu], "img_per_cpu_s": round(args.images / statistics.median(cpu), 1)}))


if __name__ == "__main__":
    main()
