"""``iif det-data``: write the offline long-tailed instance-segmentation benchmark.

    iif det-data --out DIR [--seed S] [--image-size 128] [--num-train 2000] [--num-val 400]
                 [--neg-fraction 1.0] [--clutter 1.0] [--object-size 0.125 0.375]
                 [--source-root DIR] [--download] [--force]

Scenes of Fashion-MNIST and MNIST objects, 20 categories with an LVIS-like r/c/f tail in train and a
balanced val, LVIS v1 json + PNG images (see :mod:`iif.detection.synthetic`). A controlled benchmark, not LVIS.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "det-data",
        help="write the offline long-tailed instance-segmentation benchmark (Fashion-MNIST + MNIST scenes, LVIS json)",
        description="Compose scenes from Fashion-MNIST and MNIST objects (20 categories: 8 frequent, 7 common and "
        "5 rare by train image count, as LVIS's r/c/f groups) and write LVIS v1 annotations "
        "(annotations/train.json, annotations/val.json), PNG images (images/train, images/val) and BENCHMARK.json "
        "into a new folder. The same seed gives byte-identical files. Train objects come from the source train "
        "splits, val objects from the source test splits.",
    )
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--image-size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--num-train", type=int, default=2000, help="train images (default 2000)")
    p.add_argument("--num-val", type=int, default=400, help="val images (default 400; every category in 9%% of them)")
    p.add_argument("--neg-fraction", type=float, default=1.0,
                   help="fraction of each image's absent categories listed in neg_category_ids (default 1: all, so "
                        "the LVIS evaluation counts every false positive)")
    p.add_argument("--clutter", type=float, default=1.0,
                   help="0-1: scales the distractors (strokes, blobs, fragments) and pixel noise (default 1; 0 gives "
                        "clean backgrounds, an easier benchmark)")
    p.add_argument("--object-size", type=float, nargs=2, default=(0.125, 0.375), metavar=("LOW", "HIGH"),
                   help="objects' long side as fractions of the image side (default 0.125 0.375: 16-48 px at 128)")
    p.add_argument("--source-root", default=None,
                   help="folder with the Fashion-MNIST / MNIST idx files (DIR/FashionMNIST/raw, DIR/MNIST/raw as "
                        "torchvision stores them) when they are not installed")
    p.add_argument("--download", action="store_true",
                   help="download missing Fashion-MNIST / MNIST with torchvision into --source-root (needs internet)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier iif output in --out (a folder iif did not write is never replaced)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detection.synthetic import make_benchmark

    from ..outputs import refuse_overlap

    refuse_overlap({"--out": args.out}, {"--source-root": args.source_root})  # never into the sources read
    start = time.perf_counter()
    summary = make_benchmark(args.out, seed=args.seed, image_size=args.image_size, num_train=args.num_train,
                             num_val=args.num_val, neg_fraction=args.neg_fraction, clutter=args.clutter,
                             object_size=tuple(args.object_size), source_root=args.source_root,
                             download=args.download, force=args.force)
    seconds = time.perf_counter() - start
    tr, va = summary["splits"]["train"], summary["splits"]["val"]
    g = summary["groups"]
    print(f"wrote {args.out}: train {tr['images']} images / {tr['instances']} instances, val {va['images']} images / "
          f"{va['instances']} instances, {len(summary['categories'])} categories "
          f"({g['r']} rare, {g['c']} common, {g['f']} frequent) in {seconds:.1f} s")
    print(f"{'id':>3} {'name':<11} {'grp':<3} {'train img':>9} {'train inst':>10} {'val img':>7} {'val inst':>8}")
    for row in summary["categories"]:
        print(f"{row['id']:>3} {row['name']:<11} {row['frequency']:<3} {row['train_images']:>9} "
              f"{row['train_instances']:>10} {row['val_images']:>7} {row['val_instances']:>8}")
    return 0
