"""Tables, seed aggregation and the Markdown report of ``iif bench``.

``results.json`` is a list of rows in report order with exactly :data:`ROW_KEYS` (:func:`dumps_results`;
the bench's published format). ``summary.json`` (:func:`dumps_summary`) holds the summary of
:func:`iif.bench.summary.summarize` and the same rows with :data:`RANK_KEYS` and the command that
reproduces each (``reproduce``). With several seeds each number is the mean over seeds, and
``results_std.json`` holds the same rows (same order, :data:`ROW_KEYS`) with the standard deviation over
seeds (ddof = 1, see :func:`aggregate_seeds`) in place of each number. Cells and the plain-text and Markdown
table layouts are :mod:`iif.reporting`'s, shared with ``iif det-bench``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

from ..outputs import json_safe
from .. import reporting
from ..reporting import aligned_table, cell, markdown_table
from .posthoc import ROW_KEYS
from .summary import COLLAPSE_POINTS, row_key, row_label, summarize

__all__ = ["RANK_KEYS", "RESULT_KEYS", "ranked_table", "printed_report", "dumps_results", "dumps_summary", "plotted_rows", "per_class_series", "NUMERIC_KEYS", "TEXT_KEYS", "row_id", "aggregate_seeds", "format_table", "posthoc_text_table", "POSTHOC_LEGEND", "results_markdown", "dumps_rows", "write_report"]

TEXT_KEYS: tuple[str, ...] = ("method", "strategy", "variant", "head")
NUMERIC_KEYS: tuple[str, ...] = ("top1", "many", "medium", "few", "ece")
#: Keys :func:`iif.bench.summary.summarize` adds to every row (``summary.json``), after :data:`ROW_KEYS`.
RANK_KEYS: tuple[str, ...] = ("rank", "val_class_avg", "test_class_avg", "delta_val", "delta_test", "same_as",
                               "few_collapse")
#: Keys of every row of ``summary.json``, in order (then any key the runner adds, e.g. ``reproduce``).
RESULT_KEYS: tuple[str, ...] = ROW_KEYS + RANK_KEYS
_HEADERS = {"method": "method", "strategy": "strategy", "variant": "variant", "head": "head",
            "top1": "top-1", "many": "many", "medium": "medium", "few": "few", "ece": "ECE"}


#: What makes a row the same row across seeds (:func:`iif.bench.summary.row_key`): a tuned row may pick a
#: different variant per seed, so its variant is not part of its identity.
row_id = row_key


def _merged_text(rs: Sequence[Mapping[str, Any]]) -> dict:
    """The text keys of one row over seeds: for a tuned row whose choice differs between seeds, ``variant``
    lists the choices, e.g. ``"smooth/raw^0.5"``."""
    variants = list(dict.fromkeys(str(r["variant"]) if r["variant"] is not None else None for r in rs))
    variant = variants[0] if len(variants) == 1 else "/".join(v for v in variants if v is not None)
    return {"method": rs[0]["method"], "strategy": rs[0]["strategy"], "variant": variant, "head": rs[0]["head"]}


def aggregate_seeds(per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> tuple[list[dict], list[dict]]:
    """Mean and standard deviation of every number over seeds (:func:`iif.reporting.aggregate_seeds`).

    Returns ``(mean_rows, std_rows)``, both with exactly :data:`ROW_KEYS`. The std is the sample
    standard deviation (ddof = 1; 0.0 for a single seed). A number that is None in some seed (an empty
    shot group) is averaged over the seeds where it exists. Rows are matched by :func:`row_id`; for tuned rows
    whose choice differs between seeds, ``variant`` lists the choices, e.g. ``"smooth/raw^0.5"``.
    """
    return reporting.aggregate_seeds(per_seed, ROW_KEYS, NUMERIC_KEYS, key=row_id, text=_merged_text)


def _cells(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None) -> list[list[str]]:
    return reporting.table_cells(rows, stds, ROW_KEYS, TEXT_KEYS)


def format_table(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The results as an aligned plain-text table (what ``iif bench`` and ``iif posthoc`` print)."""
    return aligned_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds), [k in NUMERIC_KEYS for k in ROW_KEYS])


#: The note ``iif posthoc`` prints under its table (:func:`posthoc_text_table`).
POSTHOC_LEGEND = ("class-avg: test class-average accuracy (mean of per-class accuracies; what the tuned row is chosen on, "
                  "on validation); Δ class-avg: its change against the softmax row, in points (Δ uses class-average, "
                  "not top-1: top-1 counts images, so on an imbalanced test split it follows the head classes); top-1, "
                  "many, medium, few, ECE: test split, percent.")


def posthoc_text_table(rows: Sequence[Mapping[str, Any]], details: Sequence[Mapping[str, Any]]) -> str:
    """``iif posthoc``'s table: :data:`ROW_KEYS` with the test class-average accuracy (``details[i]["class_avg"]``)
    and its change against softmax (``details[i]["delta_test"]``) beside top-1."""
    keys = list(ROW_KEYS)
    at = keys.index("top1") + 1
    header = [_HEADERS[k] for k in keys]
    header[at:at] = ["class-avg", "Δ class-avg"]
    body = []
    for r, d in zip(rows, details):
        line = [cell(r[k]) for k in keys]
        ref = (r["method"], r["strategy"]) == ("softmax", "end-to-end")
        dt = d.get("delta_test")
        line[at:at] = [cell(d.get("class_avg")), "ref" if ref else ("-" if dt is None else f"{dt:+.1f}")]
        body.append(line)
    numeric = [k in NUMERIC_KEYS for k in keys]
    numeric[at:at] = [True, True]
    return aligned_table(header, body, numeric)


def results_markdown(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The results table in Markdown (accuracies and ECE in percent)."""
    return markdown_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds))


def dumps_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] = ROW_KEYS) -> str:
    """JSON text of rows with exactly ``keys`` (default :data:`ROW_KEYS`), in that order."""
    return reporting.dumps_rows(rows, keys)


def dumps_results(rows: Sequence[Mapping[str, Any]]) -> str:
    """JSON text of ``results.json``: a list of the rows (report order) with exactly :data:`ROW_KEYS`."""
    return json.dumps(json_safe([{k: r.get(k) for k in ROW_KEYS} for r in rows]), indent=2) + "\n"


def dumps_summary(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """JSON text of ``summary.json``: ``{"summary": summary, "rows": rows}``, each row with
    :data:`ROW_KEYS`, then :data:`RANK_KEYS`, then any other key the rows carry (rows from
    :func:`iif.bench.summary.summarize`; the runner adds ``reproduce``)."""
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in RESULT_KEYS]
    keys = RESULT_KEYS + tuple(extra)
    doc = {"summary": summary, "rows": [{k: r.get(k) for k in keys} for r in rows]}
    return json.dumps(json_safe(doc), indent=2, default=str) + "\n"


def _folded_into(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("same_as"):
            out.setdefault(r["same_as"], []).append(r)
    return out


def _short(folded: Mapping[str, Any], kept: Mapping[str, Any]) -> str:
    """How a folded row is named beside the row it equals: only what differs."""
    if (folded["method"], folded["strategy"]) == (kept["method"], kept["strategy"]):
        return str(folded["variant"])
    return row_label(folded, head=False)


def ranked_table(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None,
                 markdown: bool = False) -> str:
    """The report's table: one line per row that is not folded, in rank order, with validation accuracy,
    the change against softmax on validation and test, the test metrics, and the rows folded into it.

    ``rows``/``stds`` as returned by :func:`iif.bench.summary.summarize`.
    """
    has_val = any(r.get("rank") is not None for r in rows)
    folded = _folded_into(rows)
    std_of = {id(r): (stds[i] if stds is not None else None) for i, r in enumerate(rows)}
    cols = (["rank"] if has_val else []) + ["method", "strategy", "variant", "head"]
    cols += (["val", "Δ val"] if has_val else []) + ["top-1", "test avg", "Δ test", "many", "medium", "few", "ECE",
                                                      "same rows"]
    numeric = {"rank", "val", "Δ val", "top-1", "test avg", "Δ test", "many", "medium", "few", "ECE"}
    body = []
    for r in rows:
        if r.get("same_as"):
            continue
        s = std_of[id(r)]

        def num(key, signed=False):
            v = r.get(key)
            if v is None:
                return "-"
            text = f"{v:+.1f}" if signed else f"{v:.1f}"
            sd = None if s is None else s.get(key)
            return text + (f" ± {sd:.1f}" if sd is not None else "")

        line = ([str(r["rank"])] if has_val else []) + [str(r["method"]), str(r["strategy"]), r["variant"] or "-", r["head"] or "-"]
        ref = (r["method"], r["strategy"]) == ("softmax", "end-to-end")
        if has_val:
            line += [num("val_class_avg"), "ref" if ref else num("delta_val", True)]
        few = num("few") + (" !" if r.get("few_collapse") else "")
        line += [num("top1"), num("test_class_avg"), "ref" if ref else num("delta_test", True), num("many"), num("medium"),
                 few, num("ece")]
        twins = folded.get(row_label(r), [])
        line.append("= " + ", ".join(_short(t, r) for t in twins) if twins else "")
        body.append(line)
    if markdown:
        return markdown_table(cols, body)
    return aligned_table(cols, body, [c in numeric for c in cols])


_TABLE_LEGEND = ("val: class-average accuracy on validation (the ranking key); test avg: class-average accuracy on "
                 "test (the mean of per-class accuracies); Δ val, Δ test: change in CLASS-AVERAGE accuracy (val, test avg) "
                 "against the softmax row of the same head (`ref`), in points, not in top-1 (top-1 counts images, so on an "
                 "imbalanced test split it follows the head classes; on a class-balanced one the two are equal); top-1, "
                 "many, medium, few, ECE: test split, percent; `!` after few: few-shot collapse (more than "
                 f"{COLLAPSE_POINTS:g} points below softmax's few-shot accuracy, or 0 where softmax's is above 0); same rows: "
                 "rows folded into this one because they predict the same class for every validation and test image.")


def printed_report(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None,
                   summary: Mapping[str, Any]) -> str:
    """What ``iif bench`` prints: the summary sentences, then the ranked table, then the folded rows."""
    parts = list(summary.get("lines", [])) + ["", ranked_table(rows, stds), "", _TABLE_LEGEND]
    notes = _fold_notes(summary)
    if notes:
        parts += [""] + notes
    return "\n".join(parts)


def _code(command: str) -> str:
    """A command in backticks; a note (``(not reproducible: ...)``) as it is."""
    return command if command.startswith("(") else f"`{command}`"


def _fold_notes(summary: Mapping[str, Any]) -> list[str]:
    out = []
    for f in summary.get("folded", []):
        text = f"- {f['row']} = {f['same_as']}: {f['relation']}"
        if f.get("why"):
            text += f"; {f['why']}"
        out.append(text + ".")
    return out


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


def write_report(folder, rows, stds, details, meta, plot_data=None, summary=None) -> None:
    """``report.md`` (and its PNG plots when ``plot_data`` is given) in ``folder``.

    ``rows``/``stds``/``summary`` as returned by :func:`iif.bench.summary.summarize`; without ``summary``
    the rows are the plain means of :func:`aggregate_seeds` and are summarised here. The sections, in order:
    summary, ranked results, folded rows, setup (:func:`_setup_lines`), commands and validation choices
    (:func:`_reproduce_lines`), calibration, timings (:func:`_timing_lines`), plots (:func:`_plot_lines`),
    skipped variants.
    """
    from pathlib import Path

    from ..outputs import atomic_write_text

    if summary is None:
        rows, stds, summary = summarize(rows, stds, details, meta)
    folder = Path(folder)
    m = meta
    lines = [f"# iif bench: {m['dataset']}", "", "## Summary", ""]
    lines += [f"- {x}" for x in summary.get("lines", [])]
    lines += ["", "## Ranked results" if summary.get("selected_on") else "## Results", "",
              ranked_table(rows, stds if m.get("seeds", 1) > 1 else None, markdown=True), "", _TABLE_LEGEND, ""]
    notes = _fold_notes(summary)
    if notes:
        lines += ["### Folded rows", "", *notes, ""]
    lines += _setup_lines(m)
    lines += _reproduce_lines(rows, details)
    skipped = m.get("skipped_variants") or {}
    cal = _calibration_rows([r for r in rows if not r.get("same_as")], details)
    if cal:
        lines += ["## Calibration: temperature scaling fitted on validation (L-BFGS on NLL)", "",
                  markdown_table(["method", "strategy", "variant", "head", "ECE before", "ECE after", "T"], cal), ""]
    lines += _timing_lines(m)
    if plot_data:
        lines += _plot_lines(folder, rows, stds, details, m, plot_data, summary)
    if skipped:
        lines += ["## Skipped variants", ""]
        lines += [f"- `{v}`: {why}" for v, why in skipped.items()]
        lines.append("")
    atomic_write_text(folder / "report.md", "\n".join(lines))


def _setup_lines(m: Mapping[str, Any]) -> list[str]:
    """The report's "Setup" section: data, backbone, seeds, shot groups, mode, the decoupled recipe, row kinds."""
    lines = [
        "## Setup", "",
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
    ]
    stage2 = m.get("head_retraining")
    if isinstance(stage2, Mapping) and stage2:
        lines.append("- Decoupled rows (classifier retrained on the frozen backbone): "
                     + ", ".join(f"{k} {v}" for k, v in stage2.items()) + ".")
    lines += [
        "",
        "Rows: `softmax` is the backbone itself; `post-process` multiplies its logits by the IIF weights "
        "(Eq. 13); `decoupled` retrains only the classifier (IIF loss Eq. 15 with random sampling, evaluated "
        "on w * z; cRT: re-initialised classifier, class-balanced sampling; LWS: learned per-class scales); "
        "`IIF tuned` picks the variant (and for post-process an exponent gamma on the weights, shown as "
        "`variant^gamma`) on the validation split only; tau-norm picks tau on validation.",
        "",
    ]
    return lines


def _reproduce_lines(rows: Sequence[Mapping[str, Any]], details: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each kept row's ``iif train`` / ``iif eval`` command, then the choices made on validation."""
    lines: list[str] = []
    commands = [(r, r.get("reproduce")) for r in rows if not r.get("same_as") and r.get("reproduce")]
    if commands:
        lines += ["### Reproduce a row", "", "Each row with `iif train` / `iif eval` (first seed; `runtime.seed=N` for seed N):", ""]
        lines += [f"- {(str(r['rank']) + '. ') if r.get('rank') else ''}{row_label(r)}: {_code(cmd)}" for r, cmd in commands]
        lines.append("")
    tuned = [d for d in details if "selection" in d]
    if tuned:
        lines += ["### Choices made on validation", ""]
        lines += [f"- seed {d['seed']}, {d['head']} head, {d['strategy']}: `{d['variant']}`" for d in tuned]
        lines.append("")
    return lines


def _timing_lines(m: Mapping[str, Any]) -> list[str]:
    """The "Timings" section: per (seed, head) backbone and post-backbone seconds, then the whole bench."""
    t = m.get("timings", [])
    if not t:
        return []
    return ["## Timings", "",
            markdown_table(["seed", "head", "backbone s/epoch", "backbone total s", "post-backbone s (all cached rows)",
                            "post-backbone / epoch", "end-to-end baselines s"],
                           [[str(x["seed"]), x["head"], f"{x['backbone_epoch_s']:.2f}", f"{x['backbone_train_s']:.1f}",
                             f"{x['post_backbone_s']:.2f}", f"{x['post_backbone_s'] / x['backbone_epoch_s']:.2f}",
                             f"{x['e2e_baselines_s']:.1f}"] for x in t]),
            "", f"Whole bench: {m.get('wall_s', float('nan')):.1f} s wall, peak RSS {m.get('peak_rss_mb', float('nan')):.0f} MB.", ""]


def _plot_lines(folder, rows, stds, details, m: Mapping[str, Any], plot_data: Mapping[str, Any], summary) -> list[str]:
    """Draw the PNG plots into ``folder`` (deltas, weight curves, per head: per-class accuracy, weight norms,
    reliability) and return the "Plots" section that shows them."""
    from . import plots as P

    lines = ["## Plots", ""]
    total = float(m["k_total"])
    if any(r.get("rank") is not None for r in rows):
        P.plot_deltas(rows, folder / "deltas.png", stds=stds if m.get("seeds", 1) > 1 else None,
                      title=f"Change against softmax, ranked on validation ({m['dataset']})")
        lines += ["![change against softmax, validation and test](deltas.png)", ""]
    P.plot_weight_curves(folder / "iif_weights.png", total, [c / total for c in m["train_counts"]])
    lines += ["![IIF weight variants](iif_weights.png)", ""]
    for head, pdata in plot_data.items():
        series = per_class_series(rows, details, head, (summary.get("recommended") or {}).get("label"))
        if series:
            name = f"per_class_{head}.png"
            seed = min(int(d.get("seed", 0)) for d in details)
            P.plot_per_class_accuracy(m["train_counts"], series, folder / name,
                                      title=f"Per-class test accuracy vs training frequency ({head} head, seed {seed})")
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
    return lines


def plotted_rows(rows: Sequence[Mapping[str, Any]], head: str | None,
                 recommended: str | None = None) -> list[tuple[str, Mapping[str, Any]]]:
    """The rows the per-class plot of ``head`` shows, with their legend labels: softmax, then the
    recommendation (``recommended``: its :func:`row_label`, ``summary["recommended"]["label"]``; default the
    rank-1 row) and the best row (by validation rank) of each strategy. Without a validation split: softmax
    and the paper's default variant (smooth) of each IIF strategy."""
    mine = [r for r in rows if r.get("head") == head and not r.get("same_as")]

    def is_rec(r):
        return row_label(r) == recommended if recommended is not None else r.get("rank") == 1

    out = [("softmax" + (" (recommended)" if is_rec(r) else ""), r) for r in mine if (r["method"], r["strategy"]) == ("softmax", "end-to-end")]
    ranked = [r for r in mine if r.get("rank") is not None]
    if ranked:
        seen = set()
        rec = [r for r in ranked if is_rec(r) and (r["method"], r["strategy"]) != ("softmax", "end-to-end")]
        for r in rec + sorted(ranked, key=lambda r: r["rank"]):
            if (r["method"], r["strategy"]) == ("softmax", "end-to-end") or r["strategy"] in seen:
                continue
            seen.add(r["strategy"])
            tag = " (recommended)" if is_rec(r) else f" (best {r['strategy']}, rank {r['rank']})"
            out.append((row_label(r, head=False) + tag, r))
    else:
        out += [(row_label(r, head=False), r) for r in mine if r["method"] in ("IIF", "IIF loss") and r.get("variant") == "smooth"]
    return out


def per_class_series(rows: Sequence[Mapping[str, Any]], details: Sequence[Mapping[str, Any]],
                     head: str | None, recommended: str | None = None) -> dict[str, list]:
    """``{legend label: per-class test accuracy}`` of :func:`plotted_rows`, from the first seed's details."""
    if not details:
        return {}
    seed = min(int(d.get("seed", 0)) for d in details)
    by = {row_key(d): d for d in details if int(d.get("seed", 0)) == seed and d.get("per_class") is not None}
    out = {}
    for label, r in plotted_rows(rows, head, recommended):
        d = by.get(row_key(r))
        if d is not None:
            if "tuned" in str(r["method"]) and d.get("variant"):
                label = label.replace(f" / {r['variant']}", f" / {d['variant']}") if r.get("variant") else label
            out[label] = d["per_class"]
    return out
