"""``iif det-train CONFIG [section.key=value ...] [--out DIR] [--resume] [--force] [--list] [--print-config]``.

CONFIG is a packaged detection config's short name (``det_bench_softmax``, ``det_lvis_r50_1x_iif``; ``iif
det-train --list`` shows them with the paper table each reproduces) or a YAML path (``base: det_...`` inherits
one). Trains with :func:`iif.detection.train_detector` (repeat-factor sampling with ``data.sampler=rfs``), then
evaluates on val and writes ``final_metrics.json`` with det-bench's row keys (AP, AP50, AP75, APr, APc, APf,
APb, dAP_FP, false_positives). OUT must be new or empty; ``--resume`` continues a run exactly from its
``last.pt``; ``--force`` replaces an earlier iif output (kept until the new run finishes). Under
``torchrun --nproc_per_node N iif det-train ...`` it trains with DDP (``schedule.batch_size`` is global).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import IIFError


def register(subparsers) -> None:
    p = subparsers.add_parser("det-train", help="train and evaluate a detector from a detection config",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="packaged detection config (e.g. det_bench_softmax) or YAML path")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.root=BENCH schedule.epochs=1")
    p.add_argument("--out", help="run folder (config.yaml, last.pt, history.json, detections.json, "
                                 "final_metrics.json); default runs/<config name>")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last.pt")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier iif output in OUT (a folder iif did not write is never replaced); "
                        "with --resume: resume even if the config changed")
    p.add_argument("--device", help="override runtime.device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--list", action="store_true", help="list the packaged detection configs and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run)


def detection_config_yaml(cfg) -> str:
    """A resolved detection config as YAML (``--print-config`` of ``iif det-train`` and ``iif train``)."""
    import dataclasses

    import yaml

    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..detection.config import config_description, detection_configs, load_detection_config

    if args.list:
        names = detection_configs()
        width = max((len(n) for n in names), default=0)
        for name in names:
            print(f"{name:<{width}}  {config_description(name)}")
        return 0
    if not args.config:
        raise IIFError("give a detection config name or path, e.g. `iif det-train det_bench_softmax data.root=BENCH` "
                       "(see `iif det-train --list`).")
    overrides = list(args.overrides) + ([f"runtime.device={args.device}"] if args.device else [])
    cfg = load_detection_config(args.config, overrides)
    if args.print_config:
        print(detection_config_yaml(cfg), end="")
        return 0
    from ..detection.runs import format_metrics, train_from_config

    out = args.out or str(Path("runs") / Path(args.config).name.removesuffix(".yaml"))
    from ..outputs import refuse_overlap

    # the config file itself (train_from_config checks data.* and model.checkpoint)
    refuse_overlap({"--out": out}, {"the config": args.config if Path(args.config).is_file() else None})

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = train_from_config(cfg, out, resume=args.resume, force=args.force, log=log)
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 reports
        return 0
    if not result["finished"]:
        print(f"stopped early; outputs so far in {result['out_dir']}; run the same command with --resume to continue")
        return 0
    print(format_metrics(result["metrics"]))
    print(f"outputs in {result['out_dir']}")
    return 0
