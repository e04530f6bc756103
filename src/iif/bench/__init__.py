"""``iif bench``: one backbone, every IIF strategy and baseline, one table (see docs/bench.md).

``posthoc_table`` works on logits alone and imports only numpy/torch; ``run_bench`` (which needs the
datasets, models and trainer) is imported on first use so ``iif posthoc`` starts fast.
"""

from __future__ import annotations

from .posthoc import ROW_KEYS, fit_temperature, posthoc_table, select_posthoc_iif

__all__ = ["ROW_KEYS", "posthoc_table", "select_posthoc_iif", "fit_temperature", "run_bench"]


def __getattr__(name: str):
    if name == "run_bench":
        from .runner import run_bench

        return run_bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
