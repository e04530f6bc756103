"""Cost of repeat factors, counting and annotation checks on an LVIS-v1-sized json, next to parsing it.

Builds a LVIS-v1-like annotation json in memory (100,170 images with ``coco_url`` and no ``file_name``,
1,270,141 instances with boxes and an 8-point polygon each, 1,203 long-tailed categories), serialises it
to a string, then times (best of N, same run): ``json.loads`` of that string, ``ClassFrequency.from_coco``,
``iif.detection.repeat_factors`` and ``iif.detection.validate_annotations`` (without image files) on the
loaded dict, and prints each time and its ratio to ``json.loads``. With ``--files`` it also writes one empty
file per image into a temp ``train2017/`` folder and times the missing-file check of ``validate_annotations``
(paths from ``coco_url``, one directory listing, set look-ups).

    python benchmarks/bench_repeat_factors.py [--images 100170] [--instances 1270141] [--classes 1203] [--repeat 3]
                                              [--files]
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
from iif.detection import repeat_factors, validate_annotations
from iif.detection.data import _missing_files, image_paths


def synthesise(num_images: int, num_instances: int, num_classes: int, seed: int = 0) -> dict:
    """A LVIS-v1-like dict: Zipf-ish class sizes, instances spread over images, boxes and one polygon each."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, num_classes + 1) ** 1.3
    p /= p.sum()
    cats = rng.choice(num_classes, size=num_instances, p=p)
    imgs = np.sort(rng.integers(0, num_images, size=num_instances))
    xy = rng.uniform(0, 300, size=(num_instances, 2)).round(2)
    wh = rng.uniform(1, 300, size=(num_instances, 2)).round(2)
    images = [{"id": int(i) * 7 + 1, "width": 640, "height": 640,
               "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
               "neg_category_ids": [], "not_exhaustive_category_ids": []} for i in range(num_images)]
    categories = [{"id": c + 1, "name": f"class_{c:04d}", "synset": f"class_{c:04d}.n.01",
                   "frequency": "r"} for c in range(num_classes)]
    annotations = []
    for j in range(num_instances):
        x, y = float(xy[j, 0]), float(xy[j, 1])
        w, h = float(wh[j, 0]), float(wh[j, 1])
        annotations.append({"id": j + 1, "image_id": int(imgs[j]) * 7 + 1, "category_id": int(cats[j]) + 1,
                            "bbox": [x, y, w, h], "area": round(w * h, 2),
                            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {"info": {"description": "synthetic LVIS-v1-sized"}, "images": images, "annotations": annotations,
            "categories": categories}


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_170)
    ap.add_argument("--instances", type=int, default=1_270_141)
    ap.add_argument("--classes", type=int, default=1_203)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", action="store_true", help="also time the images-on-disk check")
    args = ap.parse_args()

    t0 = time.perf_counter()
    text = json.dumps(synthesise(args.images, args.instances, args.classes))
    print(f"synthesised {args.images} images, {args.instances} instances, {args.classes} classes: "
          f"{len(text) / 2**20:.0f} MiB of json in {time.perf_counter() - t0:.1f} s")
    data = json.loads(text)
    t_load = best(lambda: json.loads(text), args.repeat)

    def count():
        with warnings.catch_warnings():  # a synthetic tail class may be empty
            warnings.simplefilter("ignore")
            return ClassFrequency.from_coco(data)

    def factors():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return repeat_factors(data, 0.001)

    r = factors()
    rows = [("json.loads", t_load), ("ClassFrequency.from_coco", best(count, args.repeat)),
            ("repeat_factors", best(factors, args.repeat)),
            ("validate_annotations", best(lambda: validate_annotations(data), args.repeat))]
    for name, t in rows:
        print(f"{name:26s} {t:7.2f} s   {t / t_load:5.2f} x json.loads")
    print(f"repeat factors: mean {r.mean():.3f}, max {r.max():.2f}, images with r > 1: {(r > 1).mean():.1%}")
    if args.files:
        with tempfile.TemporaryDirectory() as root:
            os.mkdir(os.path.join(root, "train2017"))
            for i in range(args.images):
                open(os.path.join(root, "train2017", f"{i:012d}.jpg"), "wb").close()

            def check_files():
                missing = _missing_files(image_paths(data["images"], root))
                assert not missing.any()

            print(f"{'images on disk check':26s} {best(check_files, args.repeat):7.2f} s   ({args.images} files)")


if __name__ == "__main__":
    main()
