"""Per-epoch metric logging: a CSV rewritten atomically from the run history, TensorBoard when installed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

from ..outputs import atomic_write_text, json_safe

__all__ = ["scalar_metrics", "write_history_csv", "write_json", "TensorBoardLogger", "format_metrics_table"]

_SCALARS = ("top1", "class_avg", "many", "medium", "few", "ece", "mce", "nll")


def scalar_metrics(metrics: dict, prefix: str) -> dict[str, Any]:
    """The scalar entries of an ``evaluate_logits`` dict, keys prefixed (``raw_top1``...)."""
    return {f"{prefix}_{k}": metrics.get(k) for k in _SCALARS if k in metrics}


def write_history_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch; the union of all keys as columns (rewritten whole, so resume never duplicates rows)."""
    columns: list[str] = []
    for row in history:
        for k in row:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue(), mkdir=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2), mkdir=True)


class TensorBoardLogger:
    """Writes scalars to TensorBoard if ``tensorboard`` is installed; otherwise does nothing."""

    def __init__(self, log_dir: Path | None, enabled: bool = True) -> None:
        self.writer = None
        if log_dir is None or not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional dependency
            return
        self.writer = SummaryWriter(str(log_dir))

    def log(self, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def format_metrics_table(results: dict[str, dict], columns: Iterable[str] = _SCALARS) -> str:
    """A plain-text table: one row per method (``raw``, ``adjusted``, ``iif:smooth``...), one column per metric."""
    columns = list(columns)
    names = list(results)
    width = max([len("method")] + [len(n) for n in names])
    lines = ["method".ljust(width) + "".join(f"{c:>10}" for c in columns)]
    for name in names:
        cells = []
        for c in columns:
            v = results[name].get(c)
            cells.append(f"{'-':>10}" if v is None else f"{v:>10.2f}" if c != "nll" else f"{v:>10.4f}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)
