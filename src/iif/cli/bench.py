"""``iif bench``: one softmax backbone per head, every IIF strategy and baseline, one table.

    iif bench [--dataset NAME | --config FILE] [--seeds N] [--out DIR] [--quick] [--heads cosine,linear]
              [--force] [--device ...] [--methods NAME,...]

See docs/bench.md for what each row means and what the output folder holds.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="compare post-process / decoupled / end-to-end IIF and baselines on one dataset",
        description="Train a softmax backbone per classifier head, cache its features and logits, and compare softmax, "
        "post-process IIF (all variants), logit adjustment, tau-norm, decoupled IIF (all variants), cRT, LWS, "
        "validation-tuned IIF and (unless --quick) end-to-end IIF, IIF_CSL, Balanced Softmax, LA loss and LDAM-DRW. "
        "Decoupled rows retrain the classifier with the same stage and recipe as `iif train <dataset>_decoupled` (the "
        "config's decoupled: section). Every row carries the iif train / iif eval command that reproduces it. "
        "Writes results.json, report.md and plots to --out.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="registered dataset name (default digits-lt, embedded, runs offline)")
    src.add_argument("--config", help="training config (packaged name or YAML path) describing the backbone recipe")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1); numbers become mean ± std")
    p.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    p.add_argument("--quick", action="store_true", help="skip the end-to-end baselines (only one backbone per head)")
    p.add_argument("--heads", default="cosine,linear", help="comma-separated classifier heads (default cosine,linear)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier iif output in --out (swapped in atomically when the new one is complete; "
                        "a folder iif did not write is never replaced)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the config's, auto)")
    p.add_argument("--many", type=int, default=None, help="many-shot threshold (default: iif.metrics.shot_thresholds, 100; 50 when no class has > 100 images)")
    p.add_argument("--few", type=int, default=None, help="few-shot threshold (default: iif.metrics.shot_thresholds, 20; 15 when no class has > 100 images)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training (default 1 below 10k training images, else torch's default; "
                   "more than the usable CPUs is clamped with a warning)")
    p.add_argument("--no-plots", action="store_true", help="write report.md without PNG plots")
    p.add_argument("--methods", default="",
                   help="comma-separated methods of iif.methods to add rows for (e.g. focal,cb_softmax): a post-hoc row "
                        "(--adjust NAME) for a post-hoc method, an end-to-end row (loss.name=NAME) for a loss; run "
                        "with or without --quick")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides of every row, e.g. schedule.epochs=5; decoupled.* ones (e.g. decoupled.epochs=2, a "
                        "shorter stage 2 than the config's recipe) are shown in the decoupled rows' strategy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.runner import run_bench
    from ..errors import IIFError

    from ..resources import check_threads

    threads = check_threads(args.threads)  # >= 1; above the usable CPUs clamped with one warning
    for flag, value in (("--many", args.many), ("--few", args.few)):
        if value is not None and value < 0:
            raise IIFError(f"{flag} must be >= 0; got {value}.")
    _refuse_overlap(args)
    run_bench(dataset=args.dataset, config=args.config, seeds=args.seeds, out=args.out, quick=args.quick,
              heads=args.heads.split(","), force=args.force, device=args.device, overrides=args.overrides,
              many=args.many, few=args.few, plots=not args.no_plots, threads=threads,
              methods=[m for m in args.methods.split(",") if m.strip()])
    return 0


def _refuse_overlap(args: argparse.Namespace) -> None:
    """``--out`` never touches what the bench reads: the --config file and the data its config names."""
    from pathlib import Path

    from ..outputs import refuse_overlap

    inputs: list = []
    if args.config:
        from ..train import load_config
        from ..train.build import config_inputs

        if Path(args.config).is_file():
            inputs.append(("--config", args.config))
        inputs += config_inputs(load_config(args.config, [o for o in args.overrides if o.startswith("data.")]))
    else:
        inputs += [("data.root", o.split("=", 1)[1]) for o in args.overrides if o.startswith("data.root=")]
    refuse_overlap({"--out": args.out}, inputs)
