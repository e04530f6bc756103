"""iif train CONFIG [section.key=value ...] [--out DIR] [--resume] [--force] [--device cpu|cuda] [--threads N]

CONFIG is a packaged config's short name (cifar100_lt_decoupled; iif train --list shows them with one line
each) or a YAML path. --print-config prints the resolved config (overrides applied) as YAML and exits; it
prints a detection config (det_*, one with a margin section) too, as `iif det-train --print-config` does.
OUT must be new or empty; --resume continues a run iif started there, --force replaces an earlier iif
output (the old one stays readable until the new run finishes). Under torchrun --nproc_per_node N it
trains with DDP (the global batch is split).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import IIFError


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a classifier from a config (e2e, decoupled or post-hoc IIF)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="packaged config name (e.g. digits_lt_e2e) or YAML path")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.05 schedule.epochs=10")
    p.add_argument("--out", help="output folder (checkpoints, metrics.csv, final_metrics.json); "
                                 "default runtime.out_dir or runs/<config name>")
    p.add_argument("--resume", action="store_true",
                   help="continue the run iif started in OUT (from OUT/last.pt, or a replacement a killed --force run staged)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier iif output in OUT (built beside it, swapped in when finished; a folder "
                        "iif did not write is never replaced); with --resume: resume even if the config changed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override runtime.device")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for training (overrides runtime.threads; default 1 on the CPU below 10,000 "
                        "training images, else torch's; more than the usable CPUs is clamped with a warning)")
    p.add_argument("--list", action="store_true", help="list the packaged configs, one line each, and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (with overrides) as YAML and exit without training")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.set_defaults(func=run)


def config_description(name: str) -> str:
    """The ``description:`` line of a packaged config (else its first comment line), for ``--list``."""
    import yaml

    from ..train.config import resolve_config_path

    text = resolve_config_path(name).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return data["description"].strip()
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..train import fit, load_config, packaged_configs
    from ..train.config_loading import is_detection_config
    from ..train.run_log import format_metrics_table

    if args.list:
        names = packaged_configs()
        width = max((len(n) for n in names), default=0)
        print("\n".join(f"{n:<{width}}  {config_description(n)}".rstrip() for n in names))
        return 0
    if not args.config:
        raise IIFError("give a config name or path, e.g. iif train digits_lt_e2e (see iif train --list).")
    if args.print_config and is_detection_config(args.config):  # printed like det-train's (training is refused)
        from ..detection.config import load_detection_config
        from .det_train import detection_config_yaml

        sys.stdout.write(detection_config_yaml(load_detection_config(args.config, args.overrides)))
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.threads is not None:  # iif.resources: < 1 refused, above the usable CPUs clamped with one warning
        from ..resources import check_threads

        cfg.runtime.threads = check_threads(args.threads)
    if args.print_config:
        import yaml

        from ..train.config import config_to_dict

        sys.stdout.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    if args.quiet:
        cfg.runtime.progress = False
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = args.out or cfg.runtime.out_dir or str(Path("runs") / Path(args.config).name.removesuffix(".yaml"))
    from ..outputs import refuse_overlap

    # the config file itself (fit checks the paths the config names: data.root, checkpoints, list files)
    refuse_overlap({"--out": out}, {"the config": args.config if Path(args.config).is_file() else None})
    result = fit(cfg, out_dir=out, resume=args.resume, force=args.force, device=args.device)
    if result.final_metrics:
        print(format_metrics_table(result.final_metrics))
    if not result.finished:
        print(f"stopped early; outputs so far in {result.out_dir}; run the same command with --resume to continue")
    else:
        print(f"outputs in {result.out_dir}")
        # post-hoc methods belong on a softmax model: for a decoupled run that is its stage-1 folder
        base = Path(result.out_dir)
        softmax_run = base / "stage1" if cfg.strategy.name == "decoupled" and (base / "stage1").is_dir() else base
        print(f"next: iif eval {softmax_run} --save-logits {base}_logits (then iif posthoc "
              f"on that folder), or iif predict {base} IMAGE_OR_DIR")
    return 0
