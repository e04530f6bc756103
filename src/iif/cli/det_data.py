"""``iif det-data``: write the offline long-tailed instance-segmentation benchmark.

    iif det-data --out DIR [--generator 1|2] [--seed S] [--image-size 128] [--num-train 2000] [--num-val 400]
                 [--num-test 1000] [--neg-fraction 1.0] [--clutter 1.0] [--distractors 1.5]
                 [--object-size 0.125 0.375] [--source-root DIR] [--download] [--force]

Scenes of Fashion-MNIST and MNIST objects, 20 categories with an LVIS-like r/c/f tail in train and a
balanced val, LVIS v1 json + PNG images (see :mod:`iif.detection.synthetic`); ``--generator 2``: distractors,
federated labels and train/val/test (:mod:`iif.detection.scenes_v2`). A controlled benchmark, not LVIS.
"""

from __future__ import annotations

import argparse
import time

# The generator versions as iif.detection.synthetic defines them (DEFAULT_GENERATOR, GENERATORS), restated here
# so that building the parser (``iif --help``) does not import the detection package and torch with it;
# tests/test_startup.py checks that the two agree.
DEFAULT_GENERATOR = 2
GENERATORS = (1, 2)

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "det-data",
        help="write the offline long-tailed instance-segmentation benchmark (Fashion-MNIST + MNIST scenes, LVIS json)",
        description="Compose scenes from Fashion-MNIST and MNIST objects (20 categories: 8 frequent, 7 common and "
        "5 rare by train image count, as LVIS's r/c/f groups) and write LVIS v1 annotations "
        "(annotations/train.json, annotations/val.json), PNG images (images/train, images/val) and BENCHMARK.json "
        "into a new folder. The same seed gives byte-identical files. Train objects come from the source train "
        "splits, val objects from the source test splits. --generator 2 writes version 2: 16 categories (6 "
        "frequent, 5 common, 5 rare with 1-10 train images), unannotated held-out objects (pullover, coat, 6, 9) "
        "as distractors, objects cut by the border, LVIS federated labels (a subset of absent categories "
        "verified negative, some categories not exhaustively annotated), and train / val (for choosing "
        "hyper-parameters) / test (reported) splits, val and test from disjoint parts of the source test splits.",
    )
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--generator", type=int, default=DEFAULT_GENERATOR, choices=GENERATORS,
                   help=f"benchmark generator version (default {DEFAULT_GENERATOR}): 1 = train/val, clutter of "
                        "strokes and blobs, every absent category verified negative; 2 = train/val/test, "
                        "unannotated held-out objects as distractors, objects cut by the border, LVIS-style "
                        "federated labels (see docs/detection.md, 'The v2 benchmark')")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--image-size", type=int, default=None, help="image side in pixels (default 128)")
    p.add_argument("--num-train", type=int, default=None, help="train images (default 2000)")
    p.add_argument("--num-val", type=int, default=None,
                   help="val images (default 400 with generator 1, every category in 9%% of them; 500 with "
                        "generator 2, every category in 15%% of them)")
    p.add_argument("--num-test", type=int, default=None,
                   help="generator 2 only: test images, the reported split (default 1000; every category in 15%% "
                        "of them)")
    p.add_argument("--neg-fraction", type=float, default=None,
                   help="fraction of each image's absent categories listed in neg_category_ids (default 1 with "
                        "generator 1: all, so the LVIS evaluation counts every false positive; 0.5 with generator 2)")
    p.add_argument("--clutter", type=float, default=None,
                   help="0-1: scales the distractors (strokes, blobs, fragments) and pixel noise (default 1; 0 gives "
                        "clean backgrounds, an easier benchmark)")
    p.add_argument("--distractors", type=float, default=None,
                   help="generator 2 only: mean number of unannotated held-out objects (pullover, coat, 6, 9) per "
                        "image, 0-3 (default 1.5; 0: none)")
    p.add_argument("--object-size", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
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
                             object_size=None if args.object_size is None else tuple(args.object_size),
                             source_root=args.source_root, download=args.download, force=args.force,
                             generator=args.generator, num_test=args.num_test, distractors=args.distractors)
    seconds = time.perf_counter() - start
    splits = [s for s in ("train", "val", "test") if s in summary["splits"]]
    g = summary["groups"]
    sizes = ", ".join(f"{s} {summary['splits'][s]['images']} images / {summary['splits'][s]['instances']} instances"
                      for s in splits)
    print(f"wrote {args.out} (generator {summary['generator_version']}): {sizes}, {len(summary['categories'])} "
          f"categories ({g['r']} rare, {g['c']} common, {g['f']} frequent) in {seconds:.1f} s")
    head = {"train": f"{'train img':>9} {'train inst':>10}", "val": f"{'val img':>7} {'val inst':>8}",
            "test": f"{'test img':>8} {'test inst':>9}"}
    width = {"train": (9, 10), "val": (7, 8), "test": (8, 9)}
    print(f"{'id':>3} {'name':<11} {'grp':<3} " + " ".join(head[s] for s in splits))
    for row in summary["categories"]:
        cells = " ".join(f"{row[s + '_images']:>{width[s][0]}} {row[s + '_instances']:>{width[s][1]}}" for s in splits)
        print(f"{row['id']:>3} {row['name']:<11} {row['frequency']:<3} {cells}")
    return 0
