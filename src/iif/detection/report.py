"""Tables, seed aggregation, figures and the Markdown report of ``iif det-bench``.

``results.json`` rows have exactly :data:`ROW_KEYS`. ``AP`` ... ``APf`` are LVIS-style mask AP (box AP when
the detector has no mask head), ``APb`` is box AP, all in percent; ``dAP_FP`` is TIDE's false-positive
error (the AP50 lost to false positives, paper Fig. 1) on boxes; ``false_positives`` counts detections above
the report's score threshold that match no ground truth of their category. With several seeds every number
is the mean over seeds and ``results_std.json`` holds the sample standard deviations (ddof = 1) in the same
rows.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..bench.plots import pyplot, save_figure
from ..bench.report import aligned_table, cell, markdown_table

__all__ = [
    "ROW_KEYS",
    "TEXT_KEYS",
    "NUMERIC_KEYS",
    "row_label",
    "aggregate_seeds",
    "format_table",
    "results_markdown",
    "plot_fp_vs_rare_ap",
    "plot_classifier_norms",
    "draw_detections",
    "dumps_rows",
]

TEXT_KEYS: tuple[str, ...] = ("method", "strategy", "variant", "by")
NUMERIC_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APr", "APc", "APf", "APb", "dAP_FP", "false_positives")
ROW_KEYS: tuple[str, ...] = TEXT_KEYS + NUMERIC_KEYS
_HEADERS = {"method": "method", "strategy": "strategy", "variant": "variant", "by": "by", "AP": "AP", "AP50": "AP50",
            "AP75": "AP75", "APr": "APr", "APc": "APc", "APf": "APf", "APb": "APb", "dAP_FP": "dAP_FP",
            "false_positives": "FP"}


def row_label(row: Mapping[str, Any]) -> str:
    """A short name for a row in plots and text, e.g. ``iif base10 IOF (e2e)``."""
    parts = [str(row["method"])]
    if row.get("variant"):
        parts.append(str(row["variant"]))
    if row.get("by"):
        parts.append("IOF" if row["by"] == "object" else "IIF")
    return " ".join(parts) + f" ({row['strategy']})"


def _row_id(row: Mapping[str, Any]) -> tuple:
    return tuple(row[k] for k in TEXT_KEYS)


def aggregate_seeds(per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> tuple[list[dict], list[dict]]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for one seed) of every number over seeds.

    Rows are matched by their text keys; a number that is None in one seed is averaged over the others.
    Returns ``(mean_rows, std_rows)`` with exactly :data:`ROW_KEYS`, in first-seen order.
    """
    groups: "OrderedDict[tuple, list[Mapping[str, Any]]]" = OrderedDict()
    for rows in per_seed:
        for r in rows:
            groups.setdefault(_row_id(r), []).append(r)
    means, stds = [], []
    for rs in groups.values():
        m = {k: rs[0][k] for k in TEXT_KEYS}
        s = dict(m)
        for k in NUMERIC_KEYS:
            vals = np.array([r[k] for r in rs if r[k] is not None], dtype=float)
            m[k] = float(vals.mean()) if vals.size else None
            s[k] = (float(vals.std(ddof=1)) if vals.size > 1 else 0.0) if vals.size else None
        means.append({k: m[k] for k in ROW_KEYS})
        stds.append({k: s[k] for k in ROW_KEYS})
    return means, stds


def _cells(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None) -> list[list[str]]:
    out = []
    for i, r in enumerate(rows):
        s = stds[i] if stds is not None else None
        line = []
        for k in ROW_KEYS:
            digits = 0 if k == "false_positives" else 1
            line.append(cell(r[k], None if s is None or k in TEXT_KEYS else s[k], digits=digits)
                        if r[k] is not None else "-")
        out.append(line)
    return out


def format_table(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The det-bench results as an aligned plain-text table (what ``iif det-bench`` prints)."""
    return aligned_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds), [k in NUMERIC_KEYS for k in ROW_KEYS])


def results_markdown(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The det-bench results as a Markdown table."""
    return markdown_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds))


def plot_fp_vs_rare_ap(rows: Sequence[Mapping[str, Any]], path, stds: Sequence[Mapping[str, Any]] | None = None,
                       title: str = "") -> Path:
    """Rare-category AP against TIDE's ΔAP_FP, one point per row (the paper's Fig. 1 comparison).

    Up and to the left is better: more rare-class AP for fewer false positives. Error bars are the seed
    standard deviations when given.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    markers = {"posthoc": "o", "e2e": "s"}
    for i, r in enumerate(rows):
        if r["APr"] is None or r["dAP_FP"] is None:
            continue
        xerr = yerr = None
        if stds is not None:
            xerr, yerr = stds[i]["dAP_FP"], stds[i]["APr"]
        ax.errorbar(r["dAP_FP"], r["APr"], xerr=xerr, yerr=yerr, fmt=markers.get(r["strategy"], "^"), ms=7,
                    capsize=3, label=row_label(r))
    ax.set_xlabel("ΔAP_FP: AP50 lost to false positives (TIDE, boxes; lower is better)")
    ax.set_ylabel("AP_r: mask AP of rare categories (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=1)
    ax.set_title(title or "Rare-class AP vs false positives (paper Fig. 1)")
    return save_figure(fig, path)


def plot_classifier_norms(counts: Sequence[float], norms: Mapping[str, Sequence[float]], path, title: str = "") -> Path:
    """L2 norm of the box classifier's weight row per foreground category, categories sorted by training
    images (paper Fig. 5), one line per trained detector."""
    plt = pyplot()
    n = np.asarray(counts, dtype=float)
    order = np.argsort(-n, kind="stable")
    x = np.arange(n.size)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, v in norms.items():
        ax.plot(x, np.asarray(v, dtype=float)[order], marker="o", ms=4, lw=1.4, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{int(c)}" for c in n[order]], rotation=90, fontsize=7)
    ax.set_xlabel("categories sorted by training images (label = training images)")
    ax.set_ylabel("L2 norm of the category's classifier weight row")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Box classifier weight norms per category (paper Fig. 5)")
    return save_figure(fig, path)


def draw_detections(images: Sequence[Any], panels: Mapping[str, Sequence[Mapping[str, Any]]], class_names: Sequence[str],
                    path, *, score_threshold: float = 0.3, highlight: Sequence[set[int]] | None = None) -> Path:
    """A grid of example images (rows) by detector (columns): boxes, masks and ``name score`` captions.

    ``images``: float (3, H, W) tensors in [0, 1]. ``panels``: column title -> one target/output dict per image
    (``boxes`` xyxy, ``labels`` 1..C, optional ``scores`` and ``masks``); ground truth is a panel without
    scores. Detections below ``score_threshold`` are not drawn. ``highlight``: per image, the labels drawn in
    red (e.g. the rare categories); the rest are drawn in blue.
    """
    import torch
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    plt = pyplot()
    cols = list(panels)
    nrows = len(images)
    fig, axes = plt.subplots(nrows, len(cols), figsize=(2.6 * len(cols), 2.6 * nrows), squeeze=False)
    for i, img in enumerate(images):
        base = (img.clamp(0, 1) * 255).to(torch.uint8)
        if base.shape[0] == 1:
            base = base.expand(3, -1, -1)
        for j, name in enumerate(cols):
            d = panels[name][i]
            keep = torch.ones(len(d["labels"]), dtype=torch.bool)
            if d.get("scores") is not None:
                keep = d["scores"] >= score_threshold
            labels = d["labels"][keep]
            rare = highlight[i] if highlight is not None else set()
            colors = ["red" if int(l) in rare else "deepskyblue" for l in labels]
            canvas = base.clone()
            if d.get("masks") is not None and keep.any():
                m = d["masks"][keep]
                m = (m[:, 0] if m.dim() == 4 else m) > 0.5
                canvas = draw_segmentation_masks(canvas, m, alpha=0.35, colors=colors)
            captions = [class_names[int(l) - 1] + (f" {float(s):.2f}" if d.get("scores") is not None else "")
                        for l, s in zip(labels, d["scores"][keep] if d.get("scores") is not None else labels)]
            if keep.any():
                canvas = draw_bounding_boxes(canvas, d["boxes"][keep], labels=captions, colors=colors, width=1)
            ax = axes[i][j]
            ax.imshow(canvas.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.suptitle(f"Detections with score >= {score_threshold:g} on validation images with rare categories "
                 "(red: rare categories)", fontsize=9)
    return save_figure(fig, path)



def dumps_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """JSON text of rows with exactly :data:`ROW_KEYS`, in that order."""
    return json.dumps([{k: r[k] for k in ROW_KEYS} for r in rows], indent=2) + "\n"
