"""The bench report's figures (matplotlib, Agg backend: no display needed).

Each function writes one PNG atomically (:func:`iif.reporting.save_figure`, shared with ``iif det-bench``)
and returns its path. Titles, axis labels and legends say what is plotted so every figure reads without the
table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..reporting import pyplot, save_figure
from ..weights import VARIANTS, weights_from_counts

__all__ = ["plot_deltas", "plot_per_class_accuracy", "plot_weight_curves", "plot_weight_norms", "plot_reliability"]


def plot_per_class_accuracy(counts: Sequence[float], series: Mapping[str, Sequence[float | None]], path, title: str = "") -> Path:
    """Per-class test accuracy against the class's training frequency, one line per method."""
    plt = pyplot()
    n = np.asarray(counts, dtype=float)
    order = np.argsort(-n, kind="stable")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, acc in series.items():
        a = np.array([np.nan if v is None else v for v in acc], dtype=float)
        ax.plot(n[order], a[order], marker="o", ms=4, lw=1.4, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()  # head classes on the left, tail on the right, as long-tail plots usually read
    ax.set_xlabel("training images of the class (log scale, head -> tail)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Per-class accuracy vs training frequency")
    return save_figure(fig, path)


def plot_deltas(rows: Sequence[Mapping], path, stds: Sequence[Mapping] | None = None, top: int = 12,
                title: str = "") -> Path:
    """Change against softmax (class-average accuracy, points) on validation and test, one panel per head
    with its ``top`` best ranked rows (best at the top, overall rank in the label); error bars are the std
    over seeds when ``stds`` is given.

    ``rows``/``stds`` as returned by :func:`iif.bench.summary.summarize` (rows with a ``rank``)."""
    plt = pyplot()
    heads = list(dict.fromkeys(r.get("head") for r in rows if r.get("rank") is not None))
    panels = []
    for h in heads:
        idx = sorted((i for i, r in enumerate(rows) if r.get("rank") is not None and r.get("head") == h
                      and (r["method"], r["strategy"]) != ("softmax", "end-to-end")), key=lambda i: rows[i]["rank"])[:top]
        soft = next((r for r in rows if r.get("head") == h and (r["method"], r["strategy"]) == ("softmax", "end-to-end")), None)
        panels.append((h, idx, soft))
    n = max(1, max(len(idx) for _, idx, _ in panels)) if panels else 1
    fig, axes = plt.subplots(len(panels) or 1, 1, figsize=(8, (0.3 * n + 1.2) * max(1, len(panels)) + 0.6), squeeze=False)
    bar = 0.38
    for ax, (h, idx, soft) in zip(axes[:, 0], panels):
        labels = [f"{rows[i]['rank']}. {rows[i]['method']} / {rows[i]['strategy']}"
                  + (f" / {rows[i]['variant']}" if rows[i].get("variant") else "") for i in idx]
        y = np.arange(len(idx))
        for off, key, name in ((-bar / 2, "delta_val", "validation (ranking key)"), (bar / 2, "delta_test", "test (reported only)")):
            v = np.array([np.nan if rows[i].get(key) is None else rows[i][key] for i in idx], dtype=float)
            err = None
            if stds is not None:
                err = np.array([np.nan if stds[i].get(key) is None else stds[i][key] for i in idx], dtype=float)
            ax.barh(y + off, v, bar, xerr=err, label=name, capsize=2)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ref = ""
        if soft is not None and soft.get("val_class_avg") is not None:
            ref = f" (softmax: validation {soft['val_class_avg']:.1f}%, test {soft['test_class_avg']:.1f}%)"
        ax.set_title(f"{h} head{ref}", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("change in class-average accuracy against softmax of the same head (points)")
    fig.suptitle(title or "Change against softmax, ranked on validation")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_weight_curves(path, total: float, class_probs: Sequence[float] | None = None, variants: Sequence[str] = VARIANTS) -> Path:
    """IIF weight of every variant as a function of the class probability ``p = n / K`` (paper Fig. 2).

    ``total`` is the K used for ``smooth`` (the only variant depending on K beyond p). Ticks on the x axis
    mark the classes of the benchmarked dataset.
    """
    plt = pyplot()
    p = np.logspace(-4, np.log10(0.99), 400)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for v in variants:
        w = weights_from_counts(p * total, v, total)
        ax.plot(p, w, lw=1.5, label=v)
    if class_probs is not None:
        ax.plot(class_probs, np.zeros(len(class_probs)), "k|", ms=12, label="classes of this dataset")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("class probability p = n_c / K (log scale)")
    ax.set_ylabel("IIF weight w_c")
    ax.set_title(f"IIF weight variants (paper Fig. 2; smooth uses K = {total:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def plot_weight_norms(counts: Sequence[float], before: Sequence[float], after: Sequence[float], path,
                      after_label: str = "after decoupled IIF (smooth)", title: str = "") -> Path:
    """Classifier weight norm per class before and after decoupled retraining (paper Fig. 5)."""
    plt = pyplot()
    n = np.asarray(counts, dtype=float)
    order = np.argsort(-n, kind="stable")
    x = np.arange(n.size)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.4
    ax.bar(x - width / 2, np.asarray(before)[order], width, label="stage 1 (softmax CE)")
    ax.bar(x + width / 2, np.asarray(after)[order], width, label=after_label)
    step = max(1, n.size // 20)
    ax.set_xticks(x[::step])
    ax.set_xticklabels([f"{int(v)}" for v in n[order][::step]], rotation=90, fontsize=7)
    ax.set_xlabel("classes sorted by training images (label = training images)")
    ax.set_ylabel("L2 norm of the class's weight row")
    ax.set_title(title or "Classifier weight norms per class (paper Fig. 5)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_reliability(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], path,
                     ece_before: float, ece_after: float, temperature: float, title: str = "") -> Path:
    """Reliability diagram before and after temperature scaling (bins from :func:`iif.metrics.reliability_bins`)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, rb, name in ((axes[0], before, f"before (ECE {ece_before:.1f}%)"),
                         (axes[1], after, f"after T = {temperature:.2f} (ECE {ece_after:.1f}%)")):
        edges = rb["edges"]
        centers = (edges[:-1] + edges[1:]) / 2
        acc = np.nan_to_num(rb["accuracy"], nan=0.0)
        ax.bar(centers, acc, width=edges[1] - edges[0], edgecolor="k", alpha=0.75, label="accuracy in bin")
        conf = rb["confidence"]
        ax.plot(centers[np.isfinite(conf)], conf[np.isfinite(conf)], "r.", ms=8, label="mean confidence in bin")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (softmax max-probability)")
        ax.set_title(name)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title or "Reliability diagram: temperature scaling fitted on validation")
    return save_figure(fig, path)
