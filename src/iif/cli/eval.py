"""iif eval CHECKPOINT [--adjust iif:smooth iif:normit^0.25 la:1.0 taunorm:1.0 ...] [--split test|val] [--save-logits DIR]

Rebuilds the model and dataset a checkpoint was trained with and prints raw vs adjusted metrics (the
loss's own rule, e.g. w * z for the IIF loss, plus each --adjust), then writes them as JSON.

--save-logits DIR also writes the raw test and validation logits and labels (logits_test.npy,
labels_test.npy, logits_val.npy, labels_val.npy), the training class counts (counts.json) and
manifest.json; pass DIR to iif posthoc to compare post-hoc methods on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint: raw vs adjusted logits",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file (best.pt, last.pt) or a run folder (its best.pt; last.pt when eval.select=last)")
    p.add_argument("--adjust", nargs="*", default=[], metavar="SPEC",
                   help="post-hoc adjusters: iif:<variant>, iif:<variant>^<gamma> (weights to the power gamma), "
                        "la:<tau>, taunorm:<tau>")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--json", help="where to write the metrics (default: eval_<split>.json beside the checkpoint)")
    p.add_argument("--save-logits", metavar="DIR",
                   help="also write test/val logits, labels and training counts to DIR (new or empty) for iif posthoc")
    p.add_argument("--force", action="store_true",
                   help="with --save-logits: replace an earlier iif eval --save-logits output in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import IIFError
    from ..train import evaluate_checkpoint
    from ..train.run_log import format_metrics_table, write_json

    if args.batch_size is not None and args.batch_size < 1:
        raise IIFError(f"--batch-size must be >= 1; got {args.batch_size}.")
    ckpt = Path(args.checkpoint)
    target = Path(args.json) if args.json else (ckpt if ckpt.is_dir() else ckpt.parent) / f"eval_{args.split}.json"
    if target.is_dir():  # checked before the (possibly long) evaluation
        raise IIFError(f"--json {target} is a folder; give a file name such as {target / f'eval_{args.split}.json'}.")
    from ..outputs import OutputFolder, checkpoint_inputs, refuse_overlap

    # Outputs never touch inputs: neither --json nor --save-logits may be the checkpoint, the run folder or one
    # of its files (the default eval_<split>.json beside the checkpoint is a new file in the run folder: fine).
    outputs = {"--json": target, "--save-logits": args.save_logits}
    inputs, runs = checkpoint_inputs(ckpt)
    refuse_overlap(outputs, inputs, run_folders=runs)
    if args.save_logits:  # refuse a folder we may not write before the (possibly long) evaluation
        try:
            OutputFolder(args.save_logits, command="eval-logits", force=args.force)
        except IIFError as exc:  # the shared message names --out; here the option is --save-logits
            raise IIFError(str(exc).replace("--out", "--save-logits")) from None
    # The checkpoint is read with torch.load(weights_only=True): a file needing more is refused, never run.
    # protect=: checked again once the checkpoint's config names its data (data.root, list files).
    metrics = evaluate_checkpoint(args.checkpoint, adjust=args.adjust, split=args.split, device=args.device,
                                  batch_size=args.batch_size, save_logits_to=args.save_logits, force=args.force,
                                  protect=outputs)
    print(format_metrics_table(metrics))
    write_json(target, metrics)
    print(f"wrote {target}")
    if args.save_logits:
        print(f"wrote logits, labels and counts to {args.save_logits}; compare post-hoc methods with: "
              f"iif posthoc {args.save_logits}")
    return 0
