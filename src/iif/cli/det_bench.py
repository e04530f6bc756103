"""``iif det-bench``: IIF against the additive margins in a Mask R-CNN, with rare-class AP and false positives.

    iif det-bench [--data DIR] [--quick] [--out DIR] [--seeds N] [--force] [--preset cpu-quick|gpu|DET_CONFIG]
                  [--device ...] [data.train_json=... data.train_images=... data.val_json=... data.val_images=...]
                  [generator=1|2] [KEY=VALUE ...]

``generator=2``: the v2 offline benchmark (scored on its test split, pretrained backbone by default).
See docs/detection.md for the rows, the output folder and what was measured.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "det-bench",
        help="compare post-hoc / end-to-end IIF, Balanced Softmax and logit adjustment in a detector",
        description="Train a softmax Mask R-CNN on a long-tailed detection set (default: the offline benchmark of "
        "iif det-data, generated once into the cache), then score post-hoc IIF (raw/smooth/base10 x IIF/IOF) and "
        "logit adjustment (with and without a background prior) on it and, unless --quick, detectors trained end "
        "to end with IIF, Balanced Softmax and the LA loss. LVIS-style mask/box AP, AP_r/c/f, TIDE's dAP_FP and a "
        "false-positive count per row. Writes results.json, details.json, settings.json, report.md and plots.",
    )
    p.add_argument("--data", default=None, help="a benchmark, COCO or LVIS v1 folder (default: the offline benchmark); "
                   "any other file names: data.train_json=... data.train_images=... data.val_json=... "
                   "data.val_images=... (det-train's keys)")
    p.add_argument("--quick", action="store_true", help="post-hoc rows only (one detector per seed)")
    p.add_argument("--out", default="det-bench-out", help="output folder (default det-bench-out)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1; numbers become mean ± std")
    p.add_argument("--force", action="store_true", help="replace an earlier iif output in --out")
    p.add_argument("--preset", default=None, help="a preset of the packaged bench_detection.yaml: cpu-quick or gpu "
                   "(default: gpu on CUDA, else cpu-quick), or any det-train config or YAML path for its model and "
                   "schedule (e.g. det_folder)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's; more than the usable CPUs "
                   "is clamped with a warning)")
    p.add_argument("--no-plots", action="store_true", help="write report.md without PNG plots")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. generator=2 (the v2 offline benchmark: scored on its test split, pretrained "
                   "backbone) train.epochs=2 model.min_size=96 max_train_images=500 score_threshold=0.5 "
                   "data.train_json=train.json data.train_images=images ...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detection.bench import default_benchmark_dir, run_det_bench
    from ..outputs import refuse_overlap
    from ..resources import check_threads

    # outputs never touch inputs: --out is not the data read (--data, the data.* paths given as KEY=VALUE, else the
    # cached benchmark), nor inside one of its folders
    keys = ("data.root=", "data.train_json=", "data.train_images=", "data.val_json=", "data.val_images=")
    given = [(o.split("=", 1)[0], o.split("=", 1)[1]) for o in args.overrides if o.startswith(keys)]
    gen = [o.split("=", 1)[1] for o in args.overrides if o.startswith("generator=")]
    version = int(gen[-1]) if gen and gen[-1].strip().isdigit() else None  # a bad value is refused by run_det_bench
    default = default_benchmark_dir(generator=version) if args.data is None and not given else None
    refuse_overlap({"--out": args.out}, [("--data", args.data if args.data is not None else default)] + given)

    run_det_bench(args.data, quick=args.quick, out=args.out, seeds=args.seeds, force=args.force, device=args.device,
                  preset=args.preset, overrides=args.overrides, plots=not args.no_plots,
                  threads=check_threads(args.threads))  # >= 1; above the usable CPUs clamped with one warning
    return 0
