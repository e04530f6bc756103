"""iif posthoc: the post-hoc comparison table for logits a user already has.

    iif posthoc DIR                          (a folder written by iif eval CHECKPOINT --save-logits DIR)
    iif posthoc --logits L.npy --labels Y.npy --counts SOURCE [--val-logits V.npy --val-labels VY.npy]
                [--format table|json]

Arrays: .npy, .npz or a torch .pt (read with weights_only=True: tensors only). An .npz or .pt holding
several arrays is read by key: logits, labels (and val_logits, val_labels when --val-logits names the same
file); one holding a single array gives that array. SOURCE is anything iif weights reads: a JSON list of
per-class training counts, a saved ClassFrequency json (counts.json), a dataset folder, a list file, a
.npy of training labels, COCO/LVIS json. Options given next to DIR replace what DIR holds.

Rows: softmax, post-process IIF for every variant, post-hoc logit adjustment and, with validation
logits, the IIF tuned row (chosen on validation only) and temperature scaling fitted on validation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import IIFError

__all__ = ["register", "run", "load_array", "load_counts", "load_logits_folder"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _pick(arrays: dict, key: str, path: str, what: str):
    if key in arrays:
        return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    names = ", ".join(sorted(map(str, arrays))[:8]) or "none"
    raise IIFError(f"{what} file {path} holds {len(arrays)} arrays ({names}) and none is named {key!r}; "
                   f"save the array under the key {key!r} or as a single .npy.")


def _load_torch(p: Path, what: str, key: str):
    import pickle

    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IIFError(f"{what} file {p} is not a torch file of tensors that loads with weights_only=True ({first}); "
                       "save tensors only: torch.save(tensor, path) or torch.save({'logits': z, 'labels': y}, path).") from None
    if isinstance(obj, dict):
        obj = _pick(obj, key, str(p), what)
    if not isinstance(obj, torch.Tensor):
        raise IIFError(f"{what} file {p} holds a {type(obj).__name__}, not a tensor; save a tensor with torch.save.")
    return obj.detach().cpu().float().numpy() if obj.is_floating_point() else obj.detach().cpu().numpy()


def load_array(path: str, what: str, key: str = "logits") -> np.ndarray:
    """A numeric array from ``.npy``, ``.npz`` or torch ``.pt`` (no pickles, no code run), or an IIFError.

    ``key`` picks the array in an ``.npz`` / a ``.pt`` dict holding several (a file with one array gives it).
    """
    p = Path(path)
    if not p.is_file():
        state = "is a folder" if p.is_dir() else "does not exist"
        raise IIFError(f"{what} file {path} {state}; pass a .npy, .npz or torch .pt file of numbers.")
    with open(p, "rb") as fh:
        head = fh.read(6)
    try:
        if head.startswith(_NPY_MAGIC):
            arr = np.load(p, allow_pickle=False)
        elif head.startswith(_ZIP_MAGIC) and p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                arr = _pick({k: npz[k] for k in npz.files}, key, path, what)
        elif head.startswith(_ZIP_MAGIC):  # torch.save's zip format
            arr = _load_torch(p, what, key)
        else:
            raise IIFError(f"{what} file {path} is neither a .npy, an .npz nor a torch .pt file; save the array with "
                           "numpy.save(path, array).")
    except (ValueError, OSError, EOFError) as exc:
        raise IIFError(f"{what} file {path} is not a readable array ({exc}); save it with numpy.save(path, array).") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise IIFError(f"{what} file {path} holds {kind} values, not numbers; save a numeric array.")
    return arr


def load_counts(path: str) -> tuple[np.ndarray, float]:
    """Training counts from any source :meth:`iif.ClassFrequency.from_source` reads (what ``iif weights``
    reads: a JSON list of counts, a saved ClassFrequency, a folder, a list file...); returns
    ``(counts, K)`` with ``K`` the IIF normaliser of that source's task (docs/method.md, "Frequencies and K")."""
    from ..frequency import ClassFrequency

    freq = ClassFrequency.from_source(Path(path))
    return freq.image_counts.astype(np.float64), freq.default_total("image")


def load_logits_folder(folder: str) -> tuple[dict[str, str], dict]:
    """The files of an ``iif eval --save-logits`` folder, ``{"logits", "labels", "counts"[, "val_logits",
    "val_labels"]}`` paths, and its settings (``head``, ``many``, ``few`` when recorded), from ``manifest.json``."""
    d = Path(folder)
    man = d / "manifest.json"
    if not man.is_file():
        raise IIFError(f"{folder} has no manifest.json; pass a folder written by iif eval CHECKPOINT --save-logits "
                       "DIR, or the files with --logits, --labels and --counts.")
    try:
        m = json.loads(man.read_text(encoding="utf-8"))
        splits = m["splits"]
        out = {"logits": splits["test"]["logits"], "labels": splits["test"]["labels"], "counts": m["counts"]}
        if "val" in splits:
            out.update(val_logits=splits["val"]["logits"], val_labels=splits["val"]["labels"])
    except (ValueError, KeyError, TypeError):
        raise IIFError(f"{man} is not a manifest written by iif eval --save-logits; write the folder again with "
                       "iif eval CHECKPOINT --save-logits DIR --force.") from None
    settings = {k: m[k] for k in ("head", "many", "few") if m.get(k) is not None}
    return {k: str(d / Path(str(v)).name) for k, v in out.items()}, settings  # names only: never read outside DIR


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "posthoc",
        help="post-hoc IIF / logit-adjustment table for saved logits",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", nargs="?", help="a folder written by iif eval CHECKPOINT --save-logits DIR")
    p.add_argument("--logits", help="test logits (N, C): .npy, .npz or .pt")
    p.add_argument("--labels", help="test labels (N,): .npy, .npz or .pt")
    p.add_argument("--counts", help="training counts: a JSON list, counts.json, a dataset folder, a list file, "
                                    "a .npy of labels (anything iif weights reads)")
    p.add_argument("--val-logits", help="validation logits (balanced split) for the tuned row and temperature scaling")
    p.add_argument("--val-labels", help="validation labels")
    p.add_argument("--head", default=None, help="name of the classifier head the logits came from (shown in each row)")
    p.add_argument("--many", type=int, default=None,
                   help="many-shot: more than this many training images (default 100, or 50 when no class has more than 100)")
    p.add_argument("--few", type=int, default=None,
                   help="few-shot: fewer than this many training images (default 20, or 15 when no class has more than 100)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.posthoc import posthoc_table
    from ..bench.report import POSTHOC_LEGEND, dumps_rows, posthoc_text_table
    from ..metrics import shot_thresholds

    src, recorded = load_logits_folder(args.folder) if args.folder else ({}, {})
    given = {k: getattr(args, k) for k in ("logits", "labels", "counts", "val_logits", "val_labels")}
    if args.val_logits is not None or args.val_labels is not None:  # explicit validation replaces the folder's
        src.pop("val_logits", None)
        src.pop("val_labels", None)
    files = {**src, **{k: v for k, v in given.items() if v is not None}}
    missing = [f"--{k}" for k in ("logits", "labels", "counts") if k not in files]
    if missing:
        raise IIFError(f"missing {', '.join(missing)}; pass a folder from iif eval --save-logits DIR, or "
                       "--logits, --labels and --counts.")
    if ("val_logits" in files) != ("val_labels" in files):
        raise IIFError("pass both --val-logits and --val-labels, or neither.")
    logits = load_array(files["logits"], "--logits", "logits")
    labels = load_array(files["labels"], "--labels", "labels")
    counts, total = load_counts(files["counts"])
    # The folder's recorded shot thresholds and head (those iif eval used) unless given here.
    many, few = shot_thresholds(counts, args.many if args.many is not None else recorded.get("many"),
                                args.few if args.few is not None else recorded.get("few"))
    head = args.head if args.head is not None else recorded.get("head")
    val_logits = val_labels = None
    if "val_logits" in files:
        same = files["val_logits"] == files["val_labels"]
        val_logits = load_array(files["val_logits"], "--val-logits", "val_logits" if same else "logits")
        val_labels = load_array(files["val_labels"], "--val-labels", "val_labels" if same else "labels")
    rows, details = posthoc_table(logits, labels, counts, val_logits, val_labels, head=head,
                                  total=total, many=many, few=few)
    if args.format == "json":
        print(dumps_rows(rows), end="")
        return 0
    print(posthoc_text_table(rows, details))
    print(POSTHOC_LEGEND)
    if val_logits is not None:
        print("\ntemperature scaling fitted on validation (ECE on test, %):")
        for r, d in zip(rows, details):
            name = " ".join(str(x) for x in (r["method"], r["variant"]) if x is not None)
            print(f"  {name:<28} T={d['temperature']:.3f}  ECE {r['ece']:.2f} -> {d['ece_ts']:.2f}")
        sel = next((d["selection"] for d in details if "selection" in d), None)
        if sel:
            print(f"tuned on validation: variant={sel['variant']} gamma={sel['gamma']:g} (val class-avg {sel['val_class_avg']:.2f}%)")
    return 0
