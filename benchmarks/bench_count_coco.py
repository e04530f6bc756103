"""Cost of counting a LVIS-v1-sized annotation file relative to just parsing it.

Synthesises a COCO/LVIS-format json with ~100k images, ~1.27M instances and 1,203 long-tailed
categories (realistic ``bbox``/``area``/``iscrowd`` fields, no segmentations) in a temp directory,
then times, best of N, ``json.load`` alone against ``ClassFrequency.from_coco(path)`` (which includes
the load) in the same run, and prints both times and their ratio (target: <= ~1.2).

    python benchmarks/bench_count_coco.py [--images 100170] [--instances 1270141] [--classes 1203] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np

from iif import ClassFrequency


def synthesise(path: str, num_images: int, num_instances: int, num_classes: int, seed: int = 0) -> None:
    """Write a LVIS-like json: Zipf-ish class sizes, instances clustered per image, bbox/area fields."""
    rng = np.random.default_rng(seed)
    # Long-tailed class distribution (LVIS has an imbalance factor in the tens of thousands).
    p = 1.0 / np.arange(1, num_classes + 1) ** 1.3
    p /= p.sum()
    cats = rng.choice(num_classes, size=num_instances, p=p)
    imgs = np.sort(rng.integers(0, num_images, size=num_instances))
    xywh = rng.uniform(0, 400, size=(num_instances, 4)).round(2)
    images = [{"id": int(i) * 7 + 1, "width": 640, "height": 480, "file_name": f"{i:012d}.jpg",
               "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
               "neg_category_ids": [], "not_exhaustive_category_ids": []} for i in range(num_images)]
    categories = [{"id": c + 1, "name": f"class_{c:04d}", "synset": f"class_{c:04d}.n.01",
                   "def": "a synthetic category", "synonyms": [f"class_{c:04d}"]} for c in range(num_classes)]
    annotations = [
        {"id": j + 1, "image_id": int(imgs[j]) * 7 + 1, "category_id": int(cats[j]) + 1,
         "bbox": xywh[j].tolist(), "area": round(float(xywh[j, 2] * xywh[j, 3]), 2), "iscrowd": 0}
        for j in range(num_instances)
    ]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"info": {"description": "synthetic LVIS-sized"}, "images": images,
                   "annotations": annotations, "categories": categories}, f)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call of ``fn``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_170)
    ap.add_argument("--instances", type=int, default=1_270_141)
    ap.add_argument("--classes", type=int, default=1_203)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lvis_synthetic_train.json")
        t0 = time.perf_counter()
        synthesise(path, args.images, args.instances, args.classes)
        size_mb = os.path.getsize(path) / 2**20
        print(f"synthesised {args.images} images, {args.instances} instances, {args.classes} classes: "
              f"{size_mb:.0f} MiB in {time.perf_counter() - t0:.1f} s")

        def load_only():
            with open(path, encoding="utf-8") as f:
                json.load(f)

        def count():
            with warnings.catch_warnings():  # a synthetic tail class may be empty
                warnings.simplefilter("ignore")
                return ClassFrequency.from_coco(path)

        # Interleave the two so drifting machine load hits both alike. CPU time (this process only) is
        # printed beside wall time because other jobs on a shared machine inflate wall time at random.
        runs: dict[str, list[tuple[float, float]]] = {"load": [], "count": []}
        for _ in range(args.repeat):
            runs["load"].append(timed(load_only))
            runs["count"].append(timed(count))
        freq = count()
        assert freq.num_instances == args.instances and freq.num_images == args.images
        assert int(freq.object_counts.sum()) == args.instances
        for j, clock in enumerate(("wall", "cpu")):
            lo = min(t[j] for t in runs["load"])
            co = min(t[j] for t in runs["count"])
            print(f"[{clock:>4}] json.load alone: {lo:.3f} s   ClassFrequency.from_coco (includes the load): "
                  f"{co:.3f} s   ratio {co / lo:.3f}  (best of {args.repeat}; target <= ~1.2)")


if __name__ == "__main__":
    main()
