"""Time of ``iif.detection.evaluate_lvis`` against the official ``lvis`` API's ``LVISEval`` on the same input.

Synthesises an LVIS-v1-format val json (default 500 images with ~4 objects each, 20 categories with an
LVIS-like r/c/f tail, neg / not-exhaustive ids, polygon masks) and results with 300 detections per image
(noisy copies of the objects plus background boxes), or reads ``--gt`` / ``--dets`` files. Runs both
evaluators in one process, interleaved, best of ``--repeat``, and prints their times (wall and CPU of this
process), the ratio official / ours (target: >= 1, no slower) and the largest difference of their AP
numbers. Both timings start from the json path and a list of result dicts and include everything up to
the summary numbers (ours includes its input checks). The official API needs ``np.float`` on numpy 2;
this script sets the alias for its own run only.

    python benchmarks/bench_det_eval.py [--images 500] [--objects 4] [--categories 20] [--dets 300]
                                        [--iou-type bbox|segm] [--repeat 2] [--gt val.json --dets-file res.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import tempfile
import time
import warnings

import numpy as np

from iif.detection import evaluate_lvis


def synthesise(num_images: int, objects: int, num_categories: int, dets_per_image: int, seed: int = 0):
    """(gt dict, detections list) in LVIS v1 format; see the module docstring."""
    rng = np.random.default_rng(seed)
    # image counts falling off like LVIS's: a few frequent, many rare categories
    image_count = np.maximum(1, (2000 / np.arange(1, num_categories + 1) ** 1.8).astype(int))
    freq = np.where(image_count <= 10, "r", np.where(image_count <= 100, "c", "f"))
    p = image_count / image_count.sum()
    p = 0.7 * p + 0.3 / num_categories  # keep every category present in val
    cat_ids = np.arange(1, num_categories + 1)
    categories = [{"id": int(c), "name": f"cat{c}", "synset": f"cat{c}.n.01", "frequency": str(f),
                   "image_count": int(n), "instance_count": int(2 * n)}
                  for c, f, n in zip(cat_ids, freq, image_count)]
    images, anns, dets = [], [], []
    w, h = 320, 240
    for i in range(num_images):
        img_id = i + 1
        n = int(rng.poisson(objects - 1)) + 1
        cats = rng.choice(cat_ids, size=n, p=p)
        sizes = rng.uniform(8, 160, size=(n, 2))
        xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([w, h]) - sizes)
        boxes = np.concatenate([xy, sizes], 1)
        for c, b in zip(cats, boxes):
            x, y, bw, bh = b
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(c),
                         "bbox": [float(v) for v in b], "area": float(bw * bh),
                         "segmentation": [[float(v) for v in poly]]})
        absent = np.setdiff1d(cat_ids, cats)
        neg = rng.choice(absent, size=min(len(absent), 5), replace=False)
        not_ex = [int(c) for c in np.unique(cats) if rng.random() < 0.1]
        images.append({"id": img_id, "width": w, "height": h, "coco_url": f"http://x/{img_id}.jpg",
                       "neg_category_ids": sorted(int(c) for c in neg), "not_exhaustive_category_ids": not_ex})
        # detections: up to 5 noisy copies of each object (some with a wrong class), the rest background
        k = min(dets_per_image, 5 * n)
        src = rng.integers(0, n, size=k)
        jitter = rng.normal(0, 0.1, size=(k, 4)) * np.tile(boxes[src, 2:], 2)
        obj_boxes = boxes[src] + jitter
        obj_cats = np.where(rng.random(k) < 0.7, cats[src], rng.choice(cat_ids, size=k))
        m = dets_per_image - k
        bg_sizes = rng.uniform(8, 120, size=(m, 2))
        bg_xy = rng.uniform(0, 1, size=(m, 2)) * (np.array([w, h]) - bg_sizes)
        all_boxes = np.concatenate([obj_boxes, np.concatenate([bg_xy, bg_sizes], 1)])
        all_boxes[:, 2:] = np.maximum(all_boxes[:, 2:], 1.0)
        all_cats = np.concatenate([obj_cats, rng.choice(cat_ids, size=m, p=p)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, k), rng.uniform(0.0, 0.6, m)])
        for b, c, s in zip(all_boxes.round(2).tolist(), all_cats.tolist(), scores.tolist()):
            dets.append({"image_id": img_id, "category_id": int(c), "bbox": b, "score": float(s)})
    gt = {"info": {"description": "synthetic LVIS-format val"}, "licenses": [], "images": images,
          "annotations": anns, "categories": categories}
    return gt, dets


def add_masks(gt: dict, dets: list) -> None:
    """Give every detection a box-shaped RLE mask (for ``--iou-type segm``)."""
    from pycocotools import mask as mask_utils

    size = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    for d in dets:
        h, w = size[d["image_id"]]
        rle = mask_utils.frPyObjects(np.array([d["bbox"]], dtype=np.float64), h, w)[0]
        d["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def official(gt_path: str, dets: list, iou_type: str) -> dict:
    import lvis

    had = hasattr(np, "float")
    np.float = float  # lvis 0.5.3 uses the alias numpy 1.24 removed
    try:
        lgt = lvis.LVIS(gt_path)
        ev = lvis.LVISEval(lgt, lvis.LVISResults(lgt, dets, max_dets=300), iou_type=iou_type)
        ev.run()
        return {k: float(v) * 100 for k, v in ev.get_results().items()}
    finally:
        if not had:
            del np.float


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--objects", type=int, default=4, help="mean objects per image")
    ap.add_argument("--categories", type=int, default=20)
    ap.add_argument("--dets", type=int, default=300, help="detections per image")
    ap.add_argument("--iou-type", choices=("bbox", "segm"), default="bbox")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gt", help="an LVIS-format val json instead of the synthetic one")
    ap.add_argument("--dets-file", help="a results json (list of detections) for --gt")
    args = ap.parse_args()
    logging.getLogger("lvis").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    with tempfile.TemporaryDirectory() as tmp:
        if args.gt:
            if not args.dets_file:
                ap.error("--gt needs --dets-file")
            gt_path = args.gt
            with open(args.dets_file, encoding="utf-8") as f:
                dets = json.load(f)
            print(f"input: {gt_path}, {len(dets)} detections from {args.dets_file}")
        else:
            gt, dets = synthesise(args.images, args.objects, args.categories, args.dets)
            if args.iou_type == "segm":
                add_masks(gt, dets)
            gt_path = os.path.join(tmp, "val.json")
            with open(gt_path, "w", encoding="utf-8") as f:
                json.dump(gt, f)
            print(f"synthetic LVIS-format val: {len(gt['images'])} images, {len(gt['annotations'])} objects, "
                  f"{len(gt['categories'])} categories, {len(dets)} detections ({args.dets}/image)")

        best = {"ours": [np.inf, np.inf], "official": [np.inf, np.inf]}
        results = {}
        for _ in range(args.repeat):
            for name in ("official", "ours"):
                if name == "ours":
                    res, wall, cpu = timed(lambda: evaluate_lvis(gt_path, dets, iou_type=args.iou_type))
                else:
                    fresh = copy.deepcopy(dets)  # LVISResults writes into the dicts; copying is not timed
                    res, wall, cpu = timed(lambda: official(gt_path, fresh, args.iou_type))
                results[name] = res
                best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]

    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
    diff = max(abs(results["ours"][k] - results["official"][k]) for k in keys
               if results["official"][k] > -100)  # -1 (undefined) x 100 on the official side
    print("  ".join(f"{k} {results['ours'][k]:.2f}" for k in keys))
    print(f"largest |ours - official| over those numbers: {diff:.2e} AP points")
    for j, clock in enumerate(("wall", "cpu")):
        o, r = best["ours"][j], best["official"][j]
        print(f"[{clock:>4}] official LVISEval: {r:.2f} s   iif evaluate_lvis: {o:.2f} s   "
              f"official / ours = {r / o:.1f}x  (best of {args.repeat}, {args.iou_type}; target >= 1)")


if __name__ == "__main__":
    main()
