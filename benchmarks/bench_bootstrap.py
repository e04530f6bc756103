"""Time det-bench's paired bootstrap per (row, seed): the slow reference route (resampled_metrics: build
the resampled json, run evaluate_lvis / evaluate_coco and tide_errors on it, for every resample) against
the per-image route (ImageWeightedMetrics: one full-set evaluation, then every resample by image weights),
side by side on the same synthetic detections and the same resamples, checking they agree.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bootstrap.py --images 500 --dets 75 --slow 3 --fast 20

Synthetic data (seeded): an LVIS-format json (``--coco`` for COCO with groups) of ``--images`` images of
256x256 pixels, 16 categories (4 rare, 6 common, 6 frequent), 2-8 objects per image with RLE masks,
``neg_category_ids`` / ``not_exhaustive_category_ids``, and ``--dets`` mask detections per image (jittered
copies of the objects, some with a wrong class, the rest background boxes), random scores.
Prints the seconds per resample of each route, the fast route's one-off setup, the agreement and the
ratio for a det-bench bootstrap of ``--resamples`` resamples (``slow x B`` against ``setup + fast x B``).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from pycocotools import mask as mask_utils

from iif.detection import uncertainty as U

FREQ = "rrrrccccccffffff"


def _rle(box, h, w) -> dict:
    x, y, bw, bh = box
    poly = [[x, y + bh / 2, x + bw / 2, y, x + bw, y + bh / 2, x + bw / 2, y + bh]]  # a diamond in the box
    rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def synthetic(num_images: int, dets_per_image: int, seed: int, lvis: bool = True):
    rng = np.random.default_rng(seed)
    h = w = 256
    cats = [{"id": i + 1, "name": f"c{i}", "frequency": FREQ[i]} for i in range(16)]
    prob = np.array([0.01] * 4 + [0.05] * 6 + [0.11] * 6)
    prob /= prob.sum()
    images, anns, dets = [], [], []
    for i in range(num_images):
        img = i + 1
        present = set()
        objs = []
        for _ in range(int(rng.integers(2, 9))):
            c = int(rng.choice(16, p=prob)) + 1
            bw, bh = rng.uniform(12, 120, 2)
            box = [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), float(bw), float(bh)]
            seg = _rle(box, h, w)
            area = float(mask_utils.area({"size": seg["size"], "counts": seg["counts"].encode()}))
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": c, "bbox": box, "area": area,
                         "segmentation": seg, "iscrowd": 0})
            present.add(c)
            objs.append((c, box))
        absent = [c for c in range(1, 17) if c not in present]
        im = {"id": img, "width": w, "height": h, "file_name": f"{img}.jpg"}
        if lvis:
            im["neg_category_ids"] = sorted(int(c) for c in rng.choice(absent, size=min(4, len(absent)), replace=False))
            im["not_exhaustive_category_ids"] = sorted(c for c in present if rng.random() < 0.1)
        images.append(im)
        for k in range(dets_per_image):
            if k < 3 * len(objs):
                c, (x, y, bw, bh) = objs[k % len(objs)]
                j = rng.normal(0, 0.15, 4) * [bw, bh, bw, bh]
                box = [x + j[0], y + j[1], max(4.0, bw + j[2]), max(4.0, bh + j[3])]
                if rng.random() < 0.2:
                    c = int(rng.integers(1, 17))
            else:
                c = int(rng.choice(16, p=prob)) + 1
                bw, bh = rng.uniform(8, 100, 2)
                box = [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), float(bw), float(bh)]
            box = [float(min(max(v, 0.0), 250.0)) for v in box]
            dets.append({"image_id": img, "category_id": c, "bbox": box, "score": float(rng.uniform(0.01, 1.0)),
                         "segmentation": _rle(box, h, w)})
    gt = {"images": images, "annotations": anns, "categories": cats if lvis else
          [{"id": c["id"], "name": c["name"]} for c in cats]}
    groups = None if lvis else {c["id"]: c["frequency"] for c in cats}
    return gt, dets, groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--dets", type=int, default=75, help="detections per image")
    ap.add_argument("--slow", type=int, default=3, help="resamples timed on the slow route")
    ap.add_argument("--fast", type=int, default=20, help="resamples timed on the fast route")
    ap.add_argument("--resamples", type=int, default=20, help="det-bench's resamples per (row, seed), for the ratio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coco", action="store_true", help="COCO json with groups instead of LVIS")
    ap.add_argument("--boxes", action="store_true", help="box AP instead of mask AP")
    a = ap.parse_args()

    t = time.perf_counter()
    gt, dets, groups = synthetic(a.images, a.dets, a.seed, lvis=not a.coco)
    print(f"data: {a.images} images, {len(gt['annotations'])} objects, {len(dets)} detections, "
          f"{'COCO' if a.coco else 'LVIS'}, {'box' if a.boxes else 'mask'} AP ({time.perf_counter() - t:.1f} s to make)")
    masks = not a.boxes
    from iif.detection.evaluation import _import_fce, _import_tide

    _import_fce(), _import_tide()  # one-off imports (tidecv pulls in seaborn: ~3 s) outside both timings
    picks = U.bootstrap_picks(a.images, max(a.slow, a.fast), seed=a.seed)

    t = time.perf_counter()
    fast = U.ImageWeightedMetrics(gt, dets, masks=masks, groups=groups)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    fast_vals = [fast(p) for p in picks[:a.fast]]
    fast_each = (time.perf_counter() - t) / a.fast

    t = time.perf_counter()
    slow_vals = [U.resampled_metrics(gt, dets, p, masks=masks, groups=groups) for p in picks[:a.slow]]
    slow_each = (time.perf_counter() - t) / a.slow

    worst = 0.0
    for f, s in zip(fast_vals, slow_vals):
        for m in U.INTERVAL_METRICS:
            if math.isnan(s[m]) or math.isnan(f[m]):
                assert math.isnan(s[m]) and math.isnan(f[m]), (m, f[m], s[m])
            else:
                worst = max(worst, abs(f[m] - s[m]))
    b = a.resamples
    print(f"slow route: {slow_each:.3f} s per resample (mean of {a.slow})")
    print(f"fast route: {setup:.3f} s once per (row, seed), then {fast_each:.4f} s per resample (mean of {a.fast})")
    print(f"per-resample ratio slow/fast: {slow_each / fast_each:.0f}x; largest |fast - slow| over "
          f"{a.slow} resamples x (AP, APr, dAP_FP): {worst:.1e}")
    print(f"per (row, seed) with {b} resamples: slow {slow_each * b:.1f} s, fast {setup + fast_each * b:.1f} s "
          f"-> {slow_each * b / (setup + fast_each * b):.1f}x")


if __name__ == "__main__":
    main()
