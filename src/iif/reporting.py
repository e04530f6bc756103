"""Report building blocks shared by ``iif bench`` and ``iif det-bench``: table cells, aligned plain-text and
Markdown tables, result rows (their identity across seeds, the mean and standard deviation over seeds, their
JSON text) and figure output (matplotlib, Agg backend: no display needed).

:mod:`iif.bench.report` / :mod:`iif.bench.plots` (classification) and :mod:`iif.detection.report` (detection)
both build on these, so detection does not import the classification bench (docs/ARCHITECTURE.md,
"Layering rules"). Nothing here knows a row's keys; each report passes its own keys, header and cells::

    print(aligned_table(["method", "top-1"], [["softmax", cell(71.04)]], [False, True]))
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .outputs import atomic_write_stream

__all__ = ["cell", "aligned_table", "markdown_table", "table_cells", "row_key", "aggregate_seeds", "dumps_rows",
           "pyplot", "save_figure"]


def cell(value, std=None, digits: int = 1) -> str:
    """One table cell: ``-`` for a missing (None or NaN) number, ``value`` to ``digits`` decimals (``± std``
    when a standard deviation is given), any other value as its ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)):
        text = f"{value:.{digits}f}"
        if std is not None:
            text += f" ± {std:.{digits}f}"
        return text
    return str(value)


def aligned_table(header: Sequence[str], body: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """Plain-text table: numeric columns right-aligned, text columns left-aligned, a dashed rule under the header."""
    widths = [max(len(header[j]), *(len(b[j]) for b in body)) if body else len(header[j]) for j in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (a non-string entry goes through :func:`cell`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for b in body:
        lines.append("| " + " | ".join(cell(x) if not isinstance(x, str) else x for x in b) + " |")
    return "\n".join(lines)


def table_cells(rows: Sequence[Mapping[str, Any]], stds: Sequence[Mapping[str, Any]] | None, keys: Sequence[str],
                text_keys: Sequence[str], digits: Mapping[str, int] | None = None) -> list[list[str]]:
    """The :func:`cell` of every ``keys`` entry of every row, ``± std`` beside the numbers when ``stds`` (rows in
    the same order) is given; ``digits`` per key (default 1)."""
    digits = digits or {}
    out = []
    for i, r in enumerate(rows):
        s = stds[i] if stds is not None else None
        out.append([cell(r[k], None if s is None or k in text_keys else s[k], digits=digits.get(k, 1)) for k in keys])
    return out


def row_key(row: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    """What makes ``row`` the same row in every seed: its values of ``keys`` (its text keys), None where absent."""
    return tuple(row.get(k) for k in keys)


def aggregate_seeds(per_seed: Sequence[Sequence[Mapping[str, Any]]], row_keys: Sequence[str],
                    numeric_keys: Sequence[str], *, key: Callable[[Mapping[str, Any]], tuple] | None = None,
                    text: Callable[[list], dict] | None = None, counts: Sequence[str] = ()
                    ) -> tuple[list[dict], list[dict]]:
    """Mean and sample standard deviation (ddof = 1) of every ``numeric_keys`` number over seeds.

    Rows are matched across seeds by ``key(row)`` (default :func:`row_key` on the text keys, the ``row_keys``
    not in ``numeric_keys``) and kept in first-seen order. A number that is None in some seed (an empty group)
    is averaged over the seeds that have it; its std is 0.0 when one seed has it (so a row seen in one seed
    only gets std 0.0, not None) and None when none has. ``text(rows)`` gives the text keys of the merged row
    (default: the first seen row's). A ``counts`` key stays a whole number where one seed has it (a mean over
    seeds may be fractional). Returns ``(mean_rows, std_rows)``, both with exactly ``row_keys``, in order."""
    import numpy as np

    text_keys = [k for k in row_keys if k not in numeric_keys]
    key = key or (lambda r: row_key(r, text_keys))
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for rows in per_seed:
        for r in rows:
            groups.setdefault(key(r), []).append(r)
    means, stds = [], []
    for rs in groups.values():
        m = text(rs) if text is not None else {k: rs[0][k] for k in text_keys}
        s = dict(m)
        for k in numeric_keys:
            vals = np.array([r[k] for r in rs if r[k] is not None], dtype=float)
            m[k] = float(vals.mean()) if vals.size else None
            if k in counts and vals.size == 1:
                m[k] = int(vals[0])
            s[k] = (float(vals.std(ddof=1)) if vals.size > 1 else 0.0) if vals.size else None
        means.append({k: m[k] for k in row_keys})
        stds.append({k: s[k] for k in row_keys})
    return means, stds


def dumps_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """JSON text (indent 2, a final newline) of ``rows`` with exactly ``keys``, in that order (None where absent)."""
    return json.dumps([{k: r.get(k) for k in keys} for r in rows], indent=2) + "\n"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically (:func:`iif.outputs.atomic_write_stream`) and close it."""
    path = Path(path)
    try:
        atomic_write_stream(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))
    finally:
        pyplot().close(fig)
    return path
