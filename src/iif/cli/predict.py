"""iif predict CHECKPOINT IMAGE_OR_DIR... [--adjust SPEC] [--topk 5] [--format table|csv|json] [--out FILE]

Top-k classes for new images with a trained checkpoint, preprocessed the way the checkpoint's evaluation
split was (image size, grey or RGB, normalisation) and named with its class names. Folders are searched
recursively for image files.

--adjust takes what iif eval --adjust takes: iif:<variant> (post-process IIF; iif:<variant>^<gamma> for the
weights to the power gamma, as iif bench's tuned row), la:<tau>, taunorm:<tau>;
or loss for the rule of the loss the checkpoint was trained with (w * z for the IIF loss). score is the
softmax of the logits the decision is made on.

An unreadable image stops the command with one line naming it (nothing is written); --skip-unreadable
leaves such images out with a warning instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict classes of new images with a checkpoint",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint file (best.pt, last.pt) or a run folder (its best.pt; last.pt when eval.select=last)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--adjust", metavar="SPEC", default=None,
                   help="post-hoc adjuster: iif:<variant>, iif:<variant>^<gamma>, la:<tau>, taunorm:<tau>, or loss "
                        "(default: raw logits)")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")
    p.add_argument("--out", metavar="FILE", help="write the output to FILE instead of printing it")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--skip-unreadable", action="store_true", help="leave unreadable images out (with a warning)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the forward passes (default: torch's choice; 1 is often faster for small "
                        "models on a busy or small CPU)")
    p.set_defaults(func=run)


def format_predictions(rows: list[dict], fmt: str) -> str:
    """``rows`` of :func:`iif.predict.predict_images` as a table, CSV (one line per image and rank) or JSON."""
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "rank", "class", "index", "score"])
        for r in rows:
            for rank, t in enumerate(r["top"], 1):
                w.writerow([r["path"], rank, t["class"], t["index"], f"{t['score']:.6f}"])
        return buf.getvalue()
    width = max([len("image")] + [len(r["path"]) for r in rows])
    lines = [f"{'image':<{width}}  top classes (score %)"]
    for r in rows:
        tops = ", ".join(f"{t['class']} ({100 * t['score']:.1f})" for t in r["top"])
        lines.append(f"{r['path']:<{width}}  {tops}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import IIFError
    from ..outputs import atomic_write_text
    from ..predict import predict_images

    if args.topk < 1:
        raise IIFError(f"--topk must be >= 1; got {args.topk}.")
    if args.batch_size < 1:
        raise IIFError(f"--batch-size must be >= 1; got {args.batch_size}.")
    if args.threads is not None:  # iif.resources: >= 1, clamped to the usable CPUs with one warning
        from ..resources import check_threads, set_threads

        set_threads(check_threads(args.threads))
    if args.out and Path(args.out).is_dir():  # checked before the (possibly long) prediction
        raise IIFError(f"--out {args.out} is a folder; give a file name such as {Path(args.out) / 'predictions.csv'}.")
    if args.out:  # outputs never touch inputs: not the checkpoint, its run's files, an image or inside an image folder
        from ..outputs import checkpoint_inputs, refuse_overlap

        inputs, runs = checkpoint_inputs(args.checkpoint)
        refuse_overlap({"--out": args.out}, inputs + [("the image input", p) for p in args.images], run_folders=runs)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = predict_images(args.checkpoint, args.images, adjust=args.adjust, topk=args.topk, device=args.device,
                              batch_size=args.batch_size, skip_unreadable=args.skip_unreadable)
    for w in caught:
        print(f"iif predict: warning: {w.message}", file=sys.stderr)
    text = format_predictions(rows, args.format)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {len(rows)} prediction(s) to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
