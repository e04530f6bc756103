"""Tables, seed aggregation and the Markdown report of ``iif bench``.

Seeds: ``results.json`` rows keep exactly :data:`ROW_KEYS`. With several seeds each number is the mean
over seeds, and ``results_std.json`` holds the same rows (same order, same text keys) with the standard
deviation over seeds (ddof = 1, see :func:`aggregate_seeds`) in place of each number.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .posthoc import ROW_KEYS

__all__ = ["NUMERIC_KEYS", "TEXT_KEYS", "row_id", "aggregate_seeds", "aligned_table", "format_table", "cell", "markdown_table", "results_markdown", "dumps_rows", "write_report"]

TEXT_KEYS: tuple[str, ...] = ("method", "strategy", "variant", "head")
NUMERIC_KEYS: tuple[str, ...] = ("top1", "many", "medium", "few", "ece")
_HEADERS = {"method": "method", "strategy": "strategy", "variant": "variant", "head": "head",
            "top1": "top-1", "many": "many", "medium": "medium", "few": "few", "ece": "ECE"}


def row_id(row: Mapping[str, Any]) -> tuple:
    """What makes a row the same row across seeds. A tuned row may pick a different variant per seed,
    so its variant is not part of its identity."""
    variant = None if "tuned" in str(row["method"]) else row["variant"]
    return (row["method"], row["strategy"], variant, row["head"])


def aggregate_seeds(per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> tuple[list[dict], list[dict]]:
    """Mean and standard deviation of every number over seeds.

    Returns ``(mean_rows, std_rows)``, both with exactly :data:`ROW_KEYS`. The std is the sample
    standard deviation (ddof = 1; 0.0 for a single seed). A number that is None in some seed (an empty
    shot group) is averaged over the seeds where it exists. For tuned rows whose choice differs between
    seeds, ``variant`` lists the choices, e.g. ``"smooth/raw^0.5"``.
    """
    groups: "OrderedDict[tuple, list[Mapping[str, Any]]]" = OrderedDict()
    for rows in per_seed:
        for r in rows:
            groups.setdefault(row_id(r), []).append(r)
    means, stds = [], []
    for rs in groups.values():
        variants = list(dict.fromkeys(str(r["variant"]) if r["variant"] is not None else None for r in rs))
        variant = variants[0] if len(variants) == 1 else "/".join(v for v in variants if v is not None)
        m = {"method": rs[0]["method"], "strategy": rs[0]["strategy"], "variant": variant, "head": rs[0]["head"]}
        s = dict(m)
        for k in NUMERIC_KEYS:
            vals = np.array([r[k] for r in rs if r[k] is not None], dtype=float)
            m[k] = float(vals.mean()) if vals.size else None
            s[k] = (float(vals.std(ddof=1)) if vals.size > 1 else 0.0) if vals.size else None
        means.append({k: m[k] for k in ROW_KEYS})
        stds.append({k: s[k] for k in ROW_KEYS})
    return means, stds


def cell(value, std=None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)):
        text = f"{value:.{digits}f}"
        if std is not None:
            text += f" ± {std:.{digits}f}"
        return text
    return str(value)


def _cells(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None) -> list[list[str]]:
    out = []
    for i, r in enumerate(rows):
        s = stds[i] if stds is not None else None
        out.append([cell(r[k], None if s is None or k in TEXT_KEYS else s[k]) for k in ROW_KEYS])
    return out


def aligned_table(header: Sequence[str], body: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """Plain-text table: numeric columns right-aligned, text columns left-aligned, a dashed rule under the header."""
    widths = [max(len(header[j]), *(len(b[j]) for b in body)) if body else len(header[j]) for j in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def format_table(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The results as an aligned plain-text table (what ``iif bench`` and ``iif posthoc`` print)."""
    return aligned_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds), [k in NUMERIC_KEYS for k in ROW_KEYS])


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for b in body:
        lines.append("| " + " | ".join(cell(x) if not isinstance(x, str) else x for x in b) + " |")
    return "\n".join(lines)


def results_markdown(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The results table in Markdown (accuracies and ECE in percent)."""
    return markdown_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds))


def dumps_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """JSON text of rows with exactly :data:`ROW_KEYS`, in that order."""
    return json.dumps([{k: r[k] for k in ROW_KEYS} for r in rows], indent=2) + "\n"


def _calibration_rows(rows: Sequence[Mapping[str, Any]], details: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Mean over seeds of ECE before/after temperature scaling and of T, per table row."""
    acc: "OrderedDict[tuple, list[Mapping[str, Any]]]" = OrderedDict()
    for d in details:
        if "temperature" in d:
            acc.setdefault(row_id(d), []).append(d)
    body = []
    for r in rows:
        ds = acc.get(row_id(r))
        if not ds:
            continue
        body.append([r["method"], r["strategy"], r["variant"] or "-", r["head"] or "-",
                     cell(r["ece"]), cell(float(np.mean([d["ece_ts"] for d in ds]))),
                     f"{float(np.mean([d['temperature'] for d in ds])):.2f}"])
    return body


def write_report(folder, rows, stds, details, meta, plot_data=None) -> None:
    """``report.md`` (and its PNG plots when ``plot_data`` is given) in ``folder``."""
    from pathlib import Path

    from . import plots as P

    folder = Path(folder)
    m = meta
    lines = [f"# iif bench: {m['dataset']}", ""]
    lines += [
        f"- {m['num_classes']} classes, {sum(m['train_counts'])} training images, imbalance ratio "
        f"{m['imbalance_ratio']:.0f} (largest class {max(m['train_counts'])}, smallest {min(m['train_counts'])}); "
        f"validation {m['val_size'] if m['val_size'] is not None else 'none'}, test {m['test_size']} images.",
        f"- Backbone `{m['arch']}`, {m['epochs']} epochs of softmax CE per head; heads: {', '.join(m['heads'])} "
        "(cosine: OLTR form, s = 16).",
        f"- Seeds: {m['seeds']}" + (" (every number is mean ± sample std over seeds; `results.json` holds the means, "
                                    "`results_std.json` the stds)" if m["seeds"] > 1 else "") + ".",
        f"- Shot groups by training images: many > {m['many']}, few < {m['few']}, medium otherwise. "
        "Accuracies and ECE (10 bins) in percent, on the test split.",
        f"- Mode: {'quick (no end-to-end baselines)' if m['quick'] else 'full'}; device {m['device']}.",
        "",
        "## Results",
        "",
        results_markdown(rows, stds),
        "",
        "Rows: `softmax` is the backbone itself; `post-process` multiplies its logits by the IIF weights "
        "(Eq. 13); `decoupled` retrains only the head on cached features (IIF loss Eq. 15 with random "
        "sampling, evaluated on w * z; cRT: re-initialised head, class-balanced sampling; LWS: learned "
        "per-class scales); `IIF tuned` picks the variant (and for post-process an exponent gamma on the "
        "weights, shown as `variant^gamma`) on the validation split only; tau-norm picks tau on validation.",
        "",
    ]
    tuned = [d for d in details if "selection" in d]
    if tuned:
        lines += ["### Choices made on validation", ""]
        lines += [f"- seed {d['seed']}, {d['head']} head, {d['strategy']}: `{d['variant']}`" for d in tuned]
        lines.append("")
    skipped = m.get("skipped_variants") or {}
    cal = _calibration_rows(rows, details)
    if cal:
        lines += ["## Calibration: temperature scaling fitted on validation (L-BFGS on NLL)", "",
                  markdown_table(["method", "strategy", "variant", "head", "ECE before", "ECE after", "T"], cal), ""]
    t = m.get("timings", [])
    if t:
        lines += ["## Timings", "",
                  markdown_table(["seed", "head", "backbone s/epoch", "backbone total s", "post-backbone s (all cached rows)",
                                  "post-backbone / epoch", "end-to-end baselines s"],
                                 [[str(x["seed"]), x["head"], f"{x['backbone_epoch_s']:.2f}", f"{x['backbone_train_s']:.1f}",
                                   f"{x['post_backbone_s']:.2f}", f"{x['post_backbone_s'] / x['backbone_epoch_s']:.2f}",
                                   f"{x['e2e_baselines_s']:.1f}"] for x in t]),
                  "", f"Whole bench: {m.get('wall_s', float('nan')):.1f} s wall, peak RSS {m.get('peak_rss_mb', float('nan')):.0f} MB.", ""]
    if plot_data:
        lines += ["## Plots", ""]
        total = float(m["k_total"])
        P.plot_weight_curves(folder / "iif_weights.png", total, [c / total for c in m["train_counts"]])
        lines += ["![IIF weight variants](iif_weights.png)", ""]
        for head, pdata in plot_data.items():
            if pdata.get("per_class"):
                name = f"per_class_{head}.png"
                P.plot_per_class_accuracy(m["train_counts"], pdata["per_class"], folder / name,
                                          title=f"Per-class test accuracy vs training frequency ({head} head, seed 0)")
                lines += [f"![per-class accuracy, {head} head]({name})", ""]
            if pdata.get("norms_before") is not None and pdata.get("norms_after") is not None:
                name = f"weight_norms_{head}.png"
                P.plot_weight_norms(m["train_counts"], pdata["norms_before"], pdata["norms_after"], folder / name,
                                    title=f"Classifier weight norm per class, {head} head (paper Fig. 5)")
                lines += [f"![weight norms, {head} head]({name})", ""]
            rel = pdata.get("reliability")
            if rel:
                name = f"reliability_{head}.png"
                P.plot_reliability(rel["before"], rel["after"], folder / name, rel["ece_before"], rel["ece_after"],
                                   rel["temperature"], title=f"Softmax backbone, {head} head: reliability on test, "
                                   "temperature fitted on validation")
                lines += [f"![reliability, {head} head]({name})", ""]
    if skipped:
        lines += ["## Skipped variants", ""]
        lines += [f"- `{v}`: {why}" for v, why in skipped.items()]
        lines.append("")
    (folder / "report.md").write_text("\n".join(lines))
