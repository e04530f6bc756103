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

__all__ = ["NUMERIC_KEYS", "TEXT_KEYS", "row_id", "aggregate_seeds", "format_table", "markdown_table", "dumps_rows"]

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


def _cell(value, std=None, digits: int = 1) -> str:
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
        out.append([_cell(r[k], None if s is None or k in TEXT_KEYS else s[k]) for k in ROW_KEYS])
    return out


def format_table(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The results as an aligned plain-text table (what ``iif bench`` and ``iif posthoc`` print)."""
    header = [_HEADERS[k] for k in ROW_KEYS]
    body = _cells(rows, stds)
    widths = [max(len(header[j]), *(len(b[j]) for b in body)) if body else len(header[j]) for j in range(len(header))]
    numeric = [k in NUMERIC_KEYS for k in ROW_KEYS]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for b in body:
        lines.append("| " + " | ".join(_cell(x) if not isinstance(x, str) else x for x in b) + " |")
    return "\n".join(lines)


def results_markdown(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The results table in Markdown (accuracies and ECE in percent)."""
    return markdown_table([_HEADERS[k] for k in ROW_KEYS], _cells(rows, stds))


def dumps_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """JSON text of rows with exactly :data:`ROW_KEYS`, in that order."""
    return json.dumps([{k: r[k] for k in ROW_KEYS} for r in rows], indent=2) + "\n"
