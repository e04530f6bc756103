"""Tables, seed aggregation, figures and the Markdown report of ``iif det-bench``.

``results.json`` rows have exactly :data:`ROW_KEYS`. ``AP`` ... ``APf`` are LVIS-style mask AP (box AP when
the detector has no mask head), ``APb`` is box AP, all in percent; ``dAP_FP`` is TIDE's false-positive
error (the AP50 lost to false positives, paper Fig. 1) on boxes; ``false_positives`` counts detections above
the report's score threshold that match no ground truth of their category. With several seeds every number
is the mean over seeds and ``results_std.json`` holds the sample standard deviations (ddof = 1) in the same
rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import reporting
from ..reporting import aligned_table, cell, markdown_table, pyplot, save_figure
from .archs import has_masks

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
    "summary_lines",
    "interval_lines",
    "write_report",
]

TEXT_KEYS: tuple[str, ...] = ("method", "strategy", "variant", "by")
NUMERIC_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APr", "APc", "APf", "APb", "dAP_FP", "false_positives")
ROW_KEYS: tuple[str, ...] = TEXT_KEYS + NUMERIC_KEYS
_HEADERS = {"method": "method", "strategy": "strategy", "variant": "variant", "by": "by", "AP": "AP", "AP50": "AP50",
            "AP75": "AP75", "APr": "APr", "APc": "APc", "APf": "APf", "APb": "APb", "dAP_FP": "dAP_FP",
            "false_positives": "FP"}


TUNED = "posthoc_tuned"


def row_label(row: Mapping[str, Any]) -> str:
    """A short name for a row in plots and text, e.g. ``iif base10 IOF (e2e)``; a tuned row is its method's
    procedure (choose on val, report on test), ``logit_adjustment (posthoc_tuned)``, whatever each seed chose."""
    if row["strategy"] == TUNED:
        return f"{row['method']} ({TUNED})"
    parts = [str(row["method"])]
    if row.get("variant"):
        parts.append(str(row["variant"]))
    if row.get("by"):
        parts.append("IOF" if row["by"] == "object" else "IIF")
    return " ".join(parts) + f" ({row['strategy']})"


def _seed_key(row: Mapping[str, Any]) -> tuple:
    """The same row in every seed: equal text keys; a tuned row is one per method, since val may choose a
    different tau / gamma / IIF variant for each seed's detector."""
    if row["strategy"] == TUNED:
        return (row["method"], TUNED)
    return reporting.row_key(row, TEXT_KEYS)


def _seed_text(rows: list) -> dict:
    """The text keys of a row merged over seeds: a tuned row's ``variant`` and ``by`` list each seed's distinct
    choices in seed order, joined by ``/`` (``tau=0.5/tau=1``); other rows' text keys are equal in every seed."""
    out = {k: rows[0][k] for k in TEXT_KEYS}
    if rows[0]["strategy"] == TUNED:
        for k in ("variant", "by"):
            seen = list(dict.fromkeys(str(r[k]) for r in rows if r[k] is not None))
            out[k] = "/".join(seen) if seen else None
    return out


def aggregate_seeds(per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> tuple[list[dict], list[dict]]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for one seed) of every number over seeds
    (:func:`iif.reporting.aggregate_seeds`).

    Rows are matched by their text keys, except that a method's tuned row (``posthoc_tuned``) is one row over
    seeds whatever each seed chose on val: its numbers are the tuning procedure's mean ± std, its ``variant`` /
    ``by`` the choices joined by ``/``. A number that is None in one seed is averaged over the others; a row
    seen in one seed only gets std 0.0. ``false_positives`` stays a count where one seed has it.
    Returns ``(mean_rows, std_rows)`` with exactly :data:`ROW_KEYS`, in first-seen order.
    """
    return reporting.aggregate_seeds(per_seed, ROW_KEYS, NUMERIC_KEYS, key=_seed_key, text=_seed_text,
                                     counts=("false_positives",))


def _cells(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None) -> list[list[str]]:
    return reporting.table_cells(rows, stds, ROW_KEYS, TEXT_KEYS, digits={"false_positives": 0})


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
                    path, *, score_threshold: float = 0.3, highlight: Sequence[set[int]] | None = None,
                    split: str = "validation") -> Path:
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
    fig.suptitle(f"Detections with score >= {score_threshold:g} on {split} images with rare categories "
                 "(red: rare categories)", fontsize=9)
    return save_figure(fig, path)



def dumps_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """JSON text of rows with exactly :data:`ROW_KEYS`, in that order (:func:`iif.reporting.dumps_rows`)."""
    return reporting.dumps_rows(rows, ROW_KEYS)


def _find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def summary_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's opening: the paper's question (does multiplicative IIF give fewer false positives than
    the additive margins, and at what rare-class AP) answered from these rows, strategy by strategy."""
    def fmt(r):
        return (f"AP {cell(r['AP'])}, AP_r {cell(r['APr'])}, ΔAP_FP {cell(r['dAP_FP'])}, "
                f"{cell(r['false_positives'], digits=0)} false positives")

    lines = []
    soft = _find(rows, method="softmax")
    if soft:
        lines.append(f"- Softmax detector: {fmt(soft[0])}.")
    for strategy, additive in (("posthoc", ("logit_adjustment",)), ("e2e", ("balanced_softmax", "logit_adjustment"))):
        iif_rows = _find(rows, method="iif", strategy=strategy)
        add_rows = [r for r in rows if r["strategy"] == strategy and r["method"] in additive]
        if not iif_rows or not add_rows:
            continue
        if all(r["APr"] is None for r in iif_rows):  # no rare category with validation ground truth
            lines.append(f"- {'Post-hoc' if strategy == 'posthoc' else 'End-to-end'}: no AP_r (no rare category "
                         "has validation ground truth), so no IIF row is picked by it.")
            continue
        best_iif = max(iif_rows, key=lambda r: -1 if r["APr"] is None else r["APr"])
        lines.append(f"- {'Post-hoc' if strategy == 'posthoc' else 'End-to-end'}: best IIF row by AP_r is "
                     f"{row_label(best_iif)}: {fmt(best_iif)}.")
        for a in add_rows:
            if None in (a["dAP_FP"], best_iif["dAP_FP"], a["APr"], best_iif["APr"]):
                continue
            d_fp = best_iif["dAP_FP"] - a["dAP_FP"]
            d_r = best_iif["APr"] - a["APr"]
            lines.append(f"  - against {row_label(a)} ({fmt(a)}): IIF has "
                         f"{'fewer' if d_fp < 0 else 'more' if d_fp > 0 else 'the same'} false positives by TIDE "
                         f"(ΔAP_FP {d_fp:+.1f}) and {'higher' if d_r > 0 else 'lower' if d_r < 0 else 'equal'} AP_r "
                         f"({d_r:+.1f}).")
    return lines


def interval_lines(intervals: Mapping[str, Any] | None) -> list[str]:
    """The report's "Differences with 95% intervals" section from :func:`iif.detection.uncertainty.row_intervals`'s
    result: one table per reference (softmax, best additive row), each cell ``diff [low, high]``, marked
    "within noise" where the interval contains 0."""
    if not intervals:
        return []
    metrics = list(intervals["metrics"])
    names = {"AP": "AP", "APr": "AP_r", "dAP_FP": "ΔAP_FP"}
    out = ["## Differences with 95% intervals", "",
           f"Paired bootstrap over the {intervals['num_images']} test images: {intervals['samples']} resamples (seed "
           f"{intervals['seed']}), the same resampled images for every row"
           + (f" and each of the {intervals['seeds']} seeds (a resample's difference is the mean over seeds)"
              if intervals["seeds"] > 1 else "")
           + f"; interval = the 2.5 and 97.5 percentiles of the resampled differences ({intervals['cost_s']:.0f} s, "
           f"{intervals['evaluations']} evaluations). \"within noise\": the interval contains 0.", ""]

    def fmt(r):
        if r is None or r["diff"] != r["diff"]:
            return "-"
        text = f"{r['diff']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]"
        return text + (" within noise" if r["within_noise"] else "")

    for ref_key, title in (("softmax", "the softmax row"), ("best_additive", "the best additive row (by AP_r)")):
        ref = intervals["references"].get(ref_key)
        if ref is None:
            continue
        body = [[r["row"], *[fmt(r.get(f"vs_{ref_key}", {}).get(m)) for m in metrics]]
                for r in intervals["rows"] if r["row"] != ref]
        out += [f"Against {title}: `{ref}`.", "",
                markdown_table(["row minus reference", *[names.get(m, m) for m in metrics]], body), ""]
    return out


def write_report(folder, rows, stds, per_seed, data, settings, meta, *, plots: bool = True,
                 intervals: Mapping[str, Any] | None = None) -> None:
    """``report.md`` of ``iif det-bench`` (and its PNGs when ``plots``) in ``folder``."""
    folder = Path(folder)
    s = settings
    from .evaluation import category_groups

    val_cats = data.val_json["categories"]
    counts = np.asarray(data.train.freq.image_counts)
    letters = category_groups(data.val_json, counts) or {}  # LVIS letters, else LVIS's rule on the train counts
    groups = {g: sum(1 for v in letters.values() if v == g) for g in "rcf"}
    lines = ["# iif det-bench", ""]
    lines += ["## What the rows say", "", *summary_lines(rows), ""]
    if meta.get("benchmark"):
        lines.append("The data is the offline benchmark (`iif det-data`): scenes composed from Fashion-MNIST and "
                     "MNIST objects, a controlled long-tailed set, not LVIS. Conclusions about LVIS need LVIS.")
        lines.append("")
    soft = _find(rows, method="softmax")
    if soft and soft[0]["APb"] is not None and soft[0]["APb"] < 10:
        lines += [f"**Warning:** the softmax detector reached only {soft[0]['APb']:.1f} box AP; differences between "
                  "rows at this level are mostly noise. Train longer (`train.epochs=...`) or on a GPU.", ""]
    # The split the rows are scored on (a generator-2 benchmark: test).
    split = "test" if meta.get("eval_split") == "test" else "validation"
    lines += _setup_lines(s, meta, per_seed, len(val_cats), groups, split)
    lines += ["## Results", "", results_markdown(rows, stds), "", *interval_lines(intervals)]
    lines += _detail_lines(per_seed)
    skipped = {k: v for p in per_seed for k, v in (p.get("skipped") or {}).items()}
    if skipped:
        lines += ["## Skipped rows", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    lines += _timing_lines(per_seed)
    if plots:
        lines += _plot_lines(folder, rows, stds, per_seed, counts, data.val.class_names, s, split)
    from ..outputs import atomic_write_text

    atomic_write_text(folder / "report.md", "\n".join(lines))


def _setup_lines(s, meta, per_seed, num_categories: int, groups: Mapping[str, int], split: str) -> list[str]:
    """The report's "Set-up" section: data, detector and its start, seeds, metrics, row kinds, mode (the
    section's last line is its last bullet; "## Results" follows)."""
    from .models import is_from_scratch

    weights = s.model.get("backbone_weights")
    start = "trained from scratch" if is_from_scratch(weights) else f"backbone started from `{weights}`, trained"
    kind = "mask" if has_masks(s.arch) else "box"  # AP is box AP for a detector without masks
    return [
        "## Set-up", "",
        f"- Data: `{meta['data']}`; {meta['num_train_images']} training images, {meta['num_val_images']} {split} "
        f"images; {num_categories} categories ({groups['r']} rare, {groups['c']} common, {groups['f']} frequent by "
        "training images: r 1-10, c 11-100, f > 100).",
        f"- Detector `{s.arch}` ({s.preset} preset), {start} for {s.train['epochs']} epochs per model "
        f"(batch {s.train.get('batch_size')}, lr {s.train.get('lr')}, warm-up {s.train.get('warmup_iters')} iterations, "
        f"milestones {list(s.train.get('milestones') or ())}); device {meta['device']}, torch {meta['torch']}.",
        f"- Seeds: {s.seeds}" + (" (mean ± sample std; `results_std.json` holds the stds)" if s.seeds > 1 else "") + ".",
        (f"- AP, AP50, AP75, APr/c/f: LVIS-style {kind} AP (federated rules, 300 detections per image) on the "
         if _rules(per_seed) == "lvis" else
         f"- AP, AP50, AP75, APr/c/f: COCO {kind} AP (100 detections per image; APr/c/f over the groups above) on the ")
        + f"{split} split, in percent; APb: box AP. dAP_FP: TIDE's false-positive error on boxes (AP50 lost to "
        f"false positives, paper Fig. 1). FP: box detections with score >= {s.score_threshold:g} matching no ground "
        "truth of their category at IoU 0.5.",
        "- post-hoc rows switch the softmax detector's box classifier at test time (`use_margin(..., when=\"test\")`); "
        "e2e rows train a detector with the margin in the loss (IIF: `when=\"train_and_test\"`, Balanced Softmax, "
        "LA loss and Seesaw: `when=\"train\"`). Background keeps weight 1 / offset 0 unless the variant says "
        "`background_margin` (prior 0.75, the RoI sampler's background share). Logit adjustment (post-hoc and "
        "loss) uses the Bayes offsets of a C + 1 softmax detector, -τ ln p_c - ln Σ_j p_j^(1-τ) "
        "(`la_form=\"bayes\"`); its `background_margin` row the classification form -τ ln p over C + 1 priors.",
        f"- Mode: {'quick (post-hoc rows only)' if s.quick else 'full'}. Whole run {meta['wall_s']:.0f} s, peak RSS "
        f"{meta['peak_rss_mb']:.0f} MB, {meta['date']}.",
        "",
    ]


def _detail_lines(per_seed) -> list[str]:
    """"More numbers (seed 0)": box APr/c/f, TIDE's errors, tail-k AP and false positives by group per row."""
    lines: list[str] = []
    details = [d for p in per_seed for d in p["details"] if d["seed"] == 0]
    if details:
        tail_keys = sorted({k for d in details for k in d.get("tail", {})}, key=lambda k: int(k[4:]))
        body = []
        for d in details:
            t = d["tide"]
            body.append([_short_label(d), cell(d["bbox"].get("APr")), cell(d["bbox"].get("APc")), cell(d["bbox"].get("APf")),
                         cell(t.get("AP50_tide")), cell(t.get("dAP_Cls")), cell(t.get("dAP_Bkg")), cell(t.get("dAP_Miss")),
                         *[cell(d["tail"].get(k)) for k in tail_keys],
                         "/".join(str(d["false_positives_by_group"].get(g, "-")) for g in "rcf")])
        lines += ["## More numbers (seed 0)", "",
                  "Box APr/c/f; TIDE's own AP50 and its classification, background and missed-object errors "
                  "(TIDE's AP50 is not LVIS's AP50: never mix them); tail-k mask AP (the k categories with fewest "
                  "training images, paper Tables XVII-XVIII); false positives by group.", "",
                  markdown_table(["row", "box APr", "box APc", "box APf", "AP50 (TIDE)", "dAP_Cls", "dAP_Bkg",
                                  "dAP_Miss", *tail_keys, "FP r/c/f"], body), ""]
    return lines


def _timing_lines(per_seed) -> list[str]:
    """"Timings": the stages of each seed in seconds."""
    t = [p["timings"] for p in per_seed]
    return ["## Timings", "",
            markdown_table(["seed", "softmax training s", "RoI cache s", "post-hoc rows s", "end-to-end rows s", "seed total s"],
                           [[str(i), cell(x["softmax_train_s"]), cell(x["cache_s"]), cell(x["posthoc_rows_s"]),
                             cell(x["e2e_s"]), cell(x["seed_total_s"])] for i, x in enumerate(t)]), ""]


def _plot_lines(folder: Path, rows, stds, per_seed, counts, class_names, s, split: str) -> list[str]:
    """"Plots": draws the PNGs into ``folder`` (AP_r against ΔAP_FP, classifier norms, example detections)
    and returns the lines that show them."""
    lines = ["## Plots", ""]
    plot_fp_vs_rare_ap(rows, folder / "fp_vs_rare_ap.png", stds)
    lines += ["![AP_r against ΔAP_FP](fp_vs_rare_ap.png)", ""]
    norms = per_seed[0].get("norms") or {}
    if norms:
        plot_classifier_norms(counts, norms, folder / "classifier_norms.png")
        lines += ["![classifier weight norms](classifier_norms.png)", ""]
    ex = per_seed[0].get("examples")
    if ex is not None:
        images, panels, highlight = ex
        draw_detections(images, panels, class_names, folder / "examples.png",
                        score_threshold=s.score_threshold, highlight=highlight, split=split)
        lines += [f"![example detections on {split} images with rare categories](examples.png)", ""]
    return lines


def _rules(per_seed) -> str:
    """``"lvis"`` or ``"coco"``: the evaluation rules the rows were scored with (LVIS when unknown)."""
    details = [d for p in per_seed for d in p.get("details", [])]
    return details[0].get("rules", "lvis") if details else "lvis"


def _short_label(d: Mapping[str, Any]) -> str:
    variant = d.get("variant") if d.get("method") == "iif" else ("background_margin" if d.get("background_margin") else None)
    if d.get("strategy") == "posthoc_tuned" and d.get("method") != "iif":  # the chosen value, as in the row
        variant = next((f"{k}={d[k]:g}" for k in ("tau", "gamma") if d.get(k) is not None), variant)
    if d.get("strategy") == TUNED:  # this seed's choice, which the seed-mean row's label leaves out
        by = {"image": "IIF", "object": "IOF"}.get(d.get("by") or "")
        return " ".join(str(p) for p in (d["method"], variant, by) if p) + f" ({TUNED})"
    return row_label({"method": d["method"], "strategy": d["strategy"], "variant": variant, "by": d.get("by")})
