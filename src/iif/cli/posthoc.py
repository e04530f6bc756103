"""``iif posthoc``: the post-hoc comparison table for logits a user already has.

    iif posthoc --logits L.npy --labels Y.npy --counts C.json [--val-logits V.npy --val-labels VY.npy]
                [--format table|json]

Rows: softmax, post-process IIF for every variant, post-hoc logit adjustment and, with validation
logits, the ``IIF tuned`` row (chosen on validation only) and temperature scaling fitted on validation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..weights import as_counts

__all__ = ["register", "run", "load_array", "load_counts"]


def load_array(path: str, what: str) -> np.ndarray:
    """A ``.npy`` array (no pickles), or an IIFError naming the file and what it should hold."""
    p = Path(path)
    if not p.is_file():
        state = "is a folder" if p.is_dir() else "does not exist"
        raise IIFError(f"{what} file {path} {state}; pass the path of a .npy file written by numpy.save.")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise IIFError(f"{what} file {path} is not a readable .npy array ({exc}); save it with numpy.save(path, array).") from None
    if not isinstance(arr, np.ndarray):  # a zip: .npz archive, or a torch .pt file (also a zip)
        arr.close()
        raise IIFError(f"{what} file {path} is a zip archive (.npz or a torch .pt), not a .npy array; save one array "
                       "with numpy.save(path, array) (for a tensor: numpy.save(path, t.cpu().numpy())).")
    if arr.dtype.kind not in "biuf":
        raise IIFError(f"{what} file {path} holds {arr.dtype} values, not numbers; save a numeric array.")
    return arr


def load_counts(path: str) -> tuple[np.ndarray, float | None]:
    """Training counts from a saved ClassFrequency json or a plain JSON list; returns ``(counts, K)``.

    ``K`` (the IIF normaliser) is the ClassFrequency's default for its task, or None (sum of counts).
    """
    p = Path(path)
    if not p.is_file():
        raise IIFError(f"counts file {path} does not exist; pass a JSON list of per-class training counts or a ClassFrequency json.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise IIFError(f"counts file {path} is not valid JSON ({str(exc) or 'nested too deeply'}); write e.g. [500, 120, 7].") from None
    if isinstance(data, dict):
        freq = ClassFrequency.load(p)
        return freq.image_counts.astype(np.float64), freq.default_total("image")
    if isinstance(data, list):
        return as_counts(data, what=f"counts in {path}"), None
    raise IIFError(f"counts file {path} must hold a JSON list of counts or a saved ClassFrequency; got {type(data).__name__}.")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "posthoc",
        help="post-hoc IIF / logit-adjustment table for saved logits",
        description="Score saved test logits with softmax, post-process IIF (all variants) and logit adjustment; "
        "with validation logits also the validation-tuned IIF row and temperature scaling.",
    )
    p.add_argument("--logits", required=True, help="test logits, .npy of shape (N, C)")
    p.add_argument("--labels", required=True, help="test labels, .npy of shape (N,)")
    p.add_argument("--counts", required=True, help="training counts: JSON list or ClassFrequency json")
    p.add_argument("--val-logits", help="validation logits .npy (balanced split) for the tuned row and temperature scaling")
    p.add_argument("--val-labels", help="validation labels .npy")
    p.add_argument("--head", default=None, help="name of the classifier head the logits came from (shown in each row)")
    p.add_argument("--many", type=int, default=100, help="many-shot: more than this many training images (default 100)")
    p.add_argument("--few", type=int, default=20, help="few-shot: fewer than this many training images (default 20)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.posthoc import posthoc_table
    from ..bench.report import dumps_rows, format_table

    if (args.val_logits is None) != (args.val_labels is None):
        raise IIFError("pass both --val-logits and --val-labels, or neither.")
    logits = load_array(args.logits, "--logits")
    labels = load_array(args.labels, "--labels")
    counts, total = load_counts(args.counts)
    val_logits = val_labels = None
    if args.val_logits is not None:
        val_logits = load_array(args.val_logits, "--val-logits")
        val_labels = load_array(args.val_labels, "--val-labels")
    rows, details = posthoc_table(logits, labels, counts, val_logits, val_labels, head=args.head,
                                  total=total, many=args.many, few=args.few)
    if args.format == "json":
        print(dumps_rows(rows), end="")
        return 0
    print(format_table(rows))
    if val_logits is not None:
        print("\ntemperature scaling fitted on validation (ECE on test, %):")
        for r, d in zip(rows, details):
            name = " ".join(str(x) for x in (r["method"], r["variant"]) if x is not None)
            print(f"  {name:<28} T={d['temperature']:.3f}  ECE {r['ece']:.2f} -> {d['ece_ts']:.2f}")
        sel = next((d["selection"] for d in details if "selection" in d), None)
        if sel:
            print(f"tuned on validation: variant={sel['variant']} gamma={sel['gamma']:g} (val class-avg {sel['val_class_avg']:.2f}%)")
    return 0
