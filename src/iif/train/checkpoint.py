"""Checkpoints: atomic writes, RNG capture/restore, safe loading, and the checks that make ``--resume`` safe.

A training checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts,
``epoch`` (epochs completed), ``rng`` (torch, cuda, numpy, python states as tensors, numbers and lists),
``config`` (plain dict), ``config_hash``, ``class_counts``, ``history`` (per-epoch metric rows), ``stage``,
``arch`` info and ``best`` (epoch, score, metric and logits of the best validation score so far, or None).
A run folder holds ``last.pt`` (the latest epoch; ``--resume`` continues it) and ``best.pt`` (the same
content for the best validation epoch). It is written to a temporary file in the same directory and moved into place with
``os.replace`` (:mod:`iif.outputs`), so a run killed mid-write never leaves a truncated ``last.pt``.

Reading, the RNG states, the training state and the resume checks are :mod:`iif.runtime.checkpoint`'s, shared
with detection (issue 16, "one runtime"); this module re-exports them and keeps the writing.

Trust model: a checkpoint is data, never code. Every checkpoint is read with
``torch.load(weights_only=True)``, which rebuilds only tensors, numbers, strings, ``None`` and plain
containers; a file that needs anything else (a pickled class or function, a numpy array) is refused
with one line naming what it asked for, and none of it runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..outputs import atomic_torch_save as _atomic_torch_save
from ..outputs import atomic_write_text as _atomic_write_text
from ..runtime.checkpoint import (capture_rng, check_resume_compatible, load_checkpoint, restore_rng,
                                  restore_training_state, safe_load)

__all__ = [
    "atomic_write_text",
    "atomic_torch_save",
    "save_checkpoint",
    "load_checkpoint",
    "safe_load",
    "capture_rng",
    "restore_rng",
    "restore_training_state",
    "check_resume_compatible",
]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, creating missing parent folders (see :mod:`iif.outputs`)."""
    _atomic_write_text(path, text, mkdir=True)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically, creating missing parent folders (see :mod:`iif.outputs`)."""
    _atomic_torch_save(obj, path, mkdir=True)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically save a checkpoint dict; returns the path."""
    atomic_torch_save(state, path)
    return Path(path)
