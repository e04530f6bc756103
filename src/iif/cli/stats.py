"""``iif stats``: the imbalance report of a training set.

    iif stats SOURCE [--many 100] [--few 20] [--by image|object] [--top 10] [--format table|json]

SOURCE is anything :meth:`iif.ClassFrequency.from_source` reads: an ImageFolder tree, a COCO/LVIS json,
a list file (``path label`` per line), a text file or ``.npy`` of labels, a weight-table ``.csv``,
counts saved with ``ClassFrequency.save`` or a JSON list of counts. A folder holding ``train/`` (with
``val/``, ``test/``: the layout ``iif train folder`` reads) is a split dataset: its ``train/`` tree is
counted, and the report says so. Head classes are listed largest first, tail classes smallest first,
and no class appears in both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from ..errors import IIFError

__all__ = ["register", "run", "format_report"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stats",
        help="imbalance report of a training set (counts, imbalance factor, shot and LVIS groups, head/tail)",
        description="Count images (and instances) per class and report the imbalance: number of classes, images "
        "and instances, min/max count, imbalance factor n_max/n_min, many/medium/few-shot group sizes, LVIS r/c/f "
        "group sizes when known, the largest classes (largest first) and the smallest of the others (smallest first), "
        "each class listed once. A folder holding train/ (val/, test/) is counted by its train/ tree.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="image folder (or a root holding train/), COCO/LVIS json, list file, labels .txt/.npy, "
                   "weight-table .csv, saved counts .json or a JSON list of counts such as [500, 50, 5]")
    p.add_argument("--many", type=int, default=None, help="many-shot: more than this many images (default 100; 50 when no class has more than 100)")
    p.add_argument("--few", type=int, default=None, help="few-shot: fewer than this many images (default 20; 15 when no class has more than 100)")
    p.add_argument("--by", choices=("image", "object"), default="image",
                   help="count images (IF) or instances (OF) for groups and the imbalance factor (default image)")
    p.add_argument("--top", type=int, default=10, help="head/tail classes to list (default 10)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..frequency import ClassFrequency
    from ..readers import SPLIT_NAMES, train_split_of

    if (args.many or 0) < 0 or (args.few or 0) < 0:
        raise IIFError(f"--many and --few must be >= 0; got --many {args.many} --few {args.few}.")
    if args.top < 0:
        raise IIFError(f"--top must be >= 0; got {args.top}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freq = ClassFrequency.from_source(args.source)
    train = train_split_of(args.source) if os.path.isdir(args.source) else None
    report = freq.summary(many=args.many, few=args.few, by=args.by, top=args.top)
    report["source"] = str(args.source)
    report["split"] = None if train is None else {
        "counted": str(train), "splits": [n for n in SPLIT_NAMES if (Path(args.source) / n).is_dir()]}
    report["empty_class_names"] = [freq.class_names[i] for i in freq.empty_classes]
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    for w in caught:  # e.g. classes without images: shown after the report, on stderr
        print(f"iif stats: warning: {w.message}", file=sys.stderr)
    return 0


def format_report(report: dict) -> str:
    """The human-readable form of :meth:`ClassFrequency.summary`'s report."""
    by = report["by"]
    unit = "images" if by == "image" else "instances"
    imb = report["imbalance_factor"]
    lines = [f"source            {report['source']}"]
    if report.get("split"):
        held = ", ".join(f"{n}/" for n in report["split"]["splits"])
        lines.append(f"split             train: counted {report['split']['counted']} (the source holds {held})")
    lines += [
        f"task              {report['task']}",
        f"classes           {report['num_classes']}",
        f"images            {report['num_images']}",
        f"instances         {report['num_instances']}",
        f"min / max {unit:<9}{report['min_count']} / {report['max_count']}",
        f"imbalance factor  {'n/a' if imb is None else f'{imb:.2f}'}  (n_max / n_min over non-empty classes, by {by})",
        f"empty classes     {report['empty_classes']}",
    ]
    t, g = report["shot_thresholds"], report["shot_groups"]
    lines.append(f"shot groups       many (> {t['many']}): {g['many']}   medium: {g['medium']}   "
                 f"few (< {t['few']}): {g['few']}")
    if report["lvis_groups"] is not None:
        lg = report["lvis_groups"]
        lines.append(f"LVIS groups       rare: {lg['r']}   common: {lg['c']}   frequent: {lg['f']}")
    for title, rows in (("head classes (largest first)", report["head"]),
                        ("tail classes (smallest first)", report["tail"])):
        if not rows:
            continue
        lines.append("")
        lines.append(title)
        width = max(4, *(len(str(r["name"])) for r in rows))
        lines.append(f"  {'index':>6} {'id':>8}  {'name':<{width}} {'images':>9} {'instances':>10}")
        for r in rows:
            lines.append(f"  {r['index']:>6} {r['id']:>8}  {str(r['name']):<{width}} {r['images']:>9} {r['instances']:>10}")
    return "\n".join(lines)
