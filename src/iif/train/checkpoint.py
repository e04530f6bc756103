"""Checkpoints: atomic writes, RNG capture/restore, and the checks that make ``--resume`` safe.

A training checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts,
``epoch`` (epochs completed), ``rng`` (torch, cuda, numpy, python states), ``config`` (plain dict),
``config_hash``, ``class_counts``, ``history`` (per-epoch metric rows), ``stage`` and ``arch`` info.
It is written to a temporary file in the same directory and moved into place with ``os.replace``, so a
run killed mid-write never leaves a truncated ``last.pt``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import IIFError

__all__ = [
    "atomic_write_text",
    "atomic_torch_save",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng",
    "restore_rng",
    "check_resume_compatible",
]


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory + ``os.replace``)."""
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def capture_rng() -> dict:
    """Every global RNG state a training epoch draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically save a checkpoint dict; returns the path."""
    atomic_torch_save(state, path)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (or a bare state dict), with clear errors."""
    path = Path(path)
    if path.is_dir():
        for name in ("last.pt", "final.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise IIFError(f"{path} is a folder without last.pt or final.pt; pass the checkpoint file itself.")
    if not path.is_file():
        raise IIFError(f"checkpoint {path} does not exist; check the path (runs write <out>/last.pt).")
    try:
        # Our checkpoints hold numpy RNG state and plain dicts, so full unpickling is needed. Only load
        # checkpoints you trust (as with any torch.load).
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise IIFError(f"cannot read checkpoint {path}: {exc}. Is it a torch checkpoint written by iif?") from exc
    if not isinstance(obj, dict):
        raise IIFError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict.")
    if "model" not in obj:  # a bare state dict
        obj = {"model": obj}
    obj["path"] = str(path)
    return obj


def check_resume_compatible(ckpt: dict, cfg_hash: str, force: bool = False) -> None:
    """Refuse to resume a run whose config changed (unless ``force``)."""
    old = ckpt.get("config_hash")
    if old is not None and old != cfg_hash and not force:
        raise IIFError(
            f"cannot resume from {ckpt.get('path', 'checkpoint')}: it was written with config hash {old}, "
            f"the current config hashes to {cfg_hash}. Use the same config and overrides, or pass --force "
            "to resume anyway (results will not match an uninterrupted run).")
