"""Report building blocks shared by ``iif bench`` and ``iif det-bench``: table cells, aligned plain-text and
Markdown tables, and figure output (matplotlib, Agg backend: no display needed).

:mod:`iif.bench.report` / :mod:`iif.bench.plots` (classification) and :mod:`iif.detection.report` (detection)
both build on these, so detection does not import the classification bench (docs/ARCHITECTURE.md,
"Layering rules"). Nothing here knows a row's keys; each report passes its own header and cells::

    print(aligned_table(["method", "top-1"], [["softmax", cell(71.04)]], [False, True]))
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .outputs import atomic_write_stream

__all__ = ["cell", "aligned_table", "markdown_table", "pyplot", "save_figure"]


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
