"""``iif stats``: the imbalance report of a training set.

    iif stats SOURCE [--many 100] [--few 20] [--by image|object] [--top 10] [--format table|json]

SOURCE is anything :meth:`iif.ClassFrequency.from_source` reads: an ImageFolder tree, a COCO/LVIS json,
a list file (``path label`` per line), a text file or ``.npy`` of labels, a weight-table ``.csv`` or
counts saved with ``ClassFrequency.save``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..errors import IIFError
from ..frequency import ClassFrequency

__all__ = ["register", "run", "format_report"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stats",
        help="imbalance report of a training set (counts, imbalance factor, shot and LVIS groups, head/tail)",
        description="Count images (and instances) per class and report the imbalance: number of classes, images "
        "and instances, min/max count, imbalance factor n_max/n_min, many/medium/few-shot group sizes, LVIS r/c/f "
        "group sizes when known, and the head and tail classes.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="image folder, COCO/LVIS json, list file, labels .txt/.npy, weight-table .csv or saved counts .json")
    p.add_argument("--many", type=int, default=None, help="many-shot: more than this many images (default 100; 50 when no class has more than 100)")
    p.add_argument("--few", type=int, default=None, help="few-shot: fewer than this many images (default 20; 15 when no class has more than 100)")
    p.add_argument("--by", choices=("image", "object"), default="image",
                   help="count images (IF) or instances (OF) for groups and the imbalance factor (default image)")
    p.add_argument("--top", type=int, default=10, help="head/tail classes to list (default 10)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.many or 0) < 0 or (args.few or 0) < 0:
        raise IIFError(f"--many and --few must be >= 0; got --many {args.many} --few {args.few}.")
    if args.top < 0:
        raise IIFError(f"--top must be >= 0; got {args.top}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        freq = ClassFrequency.from_source(args.source)
    report = freq.summary(many=args.many, few=args.few, by=args.by, top=args.top)
    report["source"] = str(args.source)
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
    lines = [
        f"source            {report['source']}",
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
    for title, rows in (("head", report["head"]), ("tail", report["tail"])):
        if not rows:
            continue
        lines.append("")
        lines.append(f"{title} classes")
        width = max(4, *(len(str(r["name"])) for r in rows))
        lines.append(f"  {'index':>6} {'id':>8}  {'name':<{width}} {'images':>9} {'instances':>10}")
        for r in rows:
            lines.append(f"  {r['index']:>6} {r['id']:>8}  {str(r['name']):<{width}} {r['images']:>9} {r['instances']:>10}")
    return "\n".join(lines)
