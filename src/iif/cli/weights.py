"""``iif weights``: IIF weights of a training set, ready to paste or load.

    iif weights SOURCE [--variant smooth] [--by image|object] [--total K|sum|images|instances]
                [--background first|last] [--norm P] [--allow-negative]
                [--format table|csv|json] [--output FILE]

SOURCE is anything :meth:`iif.ClassFrequency.from_source` reads (a JSON list of counts such as
``[500, 50, 5]`` included; a folder holding ``train/`` counts its ``train/`` tree and says so). The weights are
:meth:`ClassFrequency.weights` (paper Eq. 12, Table III); K defaults to the sum of counts for
classification and to the number of images/instances for detection (docs/method.md, "Frequencies and K").
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IIFError

if TYPE_CHECKING:
    from ..frequency import ClassFrequency

# The variant names of iif.weights.VARIANTS, in its order, restated for --help so that building the parser does
# not import numpy either; tests/test_startup.py checks that the two agree.
VARIANT_NAMES = ("raw", "smooth", "relative", "base2", "base10", "gombit", "normit")

__all__ = ["register", "run", "render"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "weights",
        help="IIF weights per class for a dataset (table, csv or json)",
        description="Compute per-class IIF weights w_c (paper Eq. 12, Table III) from a training set's class "
        "frequencies.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="image folder (or a root holding train/), COCO/LVIS json, list file, labels .txt/.npy, "
                   "weight-table .csv, saved counts .json or a JSON list of counts such as [500, 50, 5]")
    p.add_argument("--variant", default="smooth",
                   help=f"one of {', '.join(VARIANT_NAMES)} (aliases rel, prob); default smooth")
    p.add_argument("--by", choices=("image", "object"), default="image",
                   help="image frequency (IIF) or object frequency (IOF); default image")
    p.add_argument("--total", default=None, metavar="K",
                   help="the normaliser K: a number, 'sum', 'images' or 'instances' "
                   "(default: sum for classification, images/instances for detection)")
    p.add_argument("--background", choices=("first", "last"), default=None,
                   help="add a background weight of 1 at index 0 (torchvision) or last (mmdetection)")
    p.add_argument("--norm", type=float, default=None, metavar="P", help="divide the weights by their P-norm")
    p.add_argument("--allow-negative", action="store_true",
                   help="keep non-positive weights (relative/normit/gombit for very large classes) with a warning")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write to FILE (atomically) instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..frequency import ClassFrequency
    from ..outputs import atomic_write_text
    from ..readers import train_split_of
    from ..weights import canonical_variant

    variant = canonical_variant(args.variant)  # bad names fail before the (possibly slow) counting
    if args.output:  # outputs never touch inputs: not the source, nor inside a source folder
        from ..outputs import refuse_overlap

        refuse_overlap({"--output": args.output}, {"SOURCE": args.source})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freq = ClassFrequency.from_source(args.source)
        k = freq.resolve_total(args.total, args.by)
        w = freq.weights_array(variant, by=args.by, total=k, background=args.background, norm=args.norm,
                               allow_negative=args.allow_negative)  # float32, as freq.weights, without torch
    train = train_split_of(args.source) if os.path.isdir(args.source) else None
    if train is not None:
        print(f"iif weights: counting {train}, the train split of {args.source}", file=sys.stderr)
    text = render(freq, w.tolist(), variant=variant, by=args.by, total=k, background=args.background,
                  norm=args.norm, fmt=args.format)
    if args.output:
        out = Path(args.output)
        if out.is_dir():
            raise IIFError(f"--output {out} is a directory; give a file name such as {out / ('weights.' + args.format)}.")
        atomic_write_text(out, text)
        print(f"wrote {len(w)} weights ({variant}, by {args.by}, K={k:g}) to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for warning in caught:
        print(f"iif weights: warning: {warning.message}", file=sys.stderr)
    return 0


def _rows(freq: ClassFrequency, weights: list[float], by: str, background: str | None) -> list[dict]:
    counts = freq.counts(by)
    rows = [{"index": i, "id": freq.class_ids[i], "name": freq.class_names[i], "count": int(counts[i])}
            for i in range(freq.num_classes)]
    bg = {"index": None, "id": None, "name": "__background__", "count": None}
    if background == "first":
        rows = [bg, *rows]
    elif background == "last":
        rows = [*rows, bg]
    for pos, (row, weight) in enumerate(zip(rows, weights)):
        row["position"] = pos  # index into the weight vector (differs from the class index with background first)
        row["weight"] = weight
    return rows


def render(freq: ClassFrequency, weights: list[float], *, variant: str, by: str, total: float,
           background: str | None, norm: float | None, fmt: str) -> str:
    """The weights as a text table, CSV (``position,index,id,name,count,weight``) or JSON."""
    rows = _rows(freq, weights, by, background)
    if fmt == "json":
        doc = {"variant": variant, "by": by, "total": total, "background": background, "norm": norm,
               "task": freq.task, "weights": weights, "classes": rows}
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["position", "index", "id", "name", "count", "weight"])
        for r in rows:
            writer.writerow([r["position"], "" if r["index"] is None else r["index"], "" if r["id"] is None else r["id"],
                             r["name"], "" if r["count"] is None else r["count"], repr(r["weight"])])
        return buf.getvalue()
    width = max(4, *(len(str(r["name"])) for r in rows))
    count_name = "images" if by == "image" else "instances"
    lines = [f"# IIF weights: variant={variant} by={by} K={total:g}"
             + (f" norm={norm:g}" if norm is not None else "") + (f" background={background}" if background else "")]
    lines.append(f"{'pos':>5} {'index':>6} {'id':>8}  {'name':<{width}} {count_name:>10} {'weight':>10}")
    for r in rows:
        idx = "-" if r["index"] is None else r["index"]
        cid = "-" if r["id"] is None else r["id"]
        cnt = "-" if r["count"] is None else r["count"]
        lines.append(f"{r['position']:>5} {idx:>6} {cid:>8}  {str(r['name']):<{width}} {cnt:>10} {r['weight']:>10.4f}")
    return "\n".join(lines) + "\n"
