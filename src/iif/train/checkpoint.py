"""Checkpoints: atomic writes, RNG capture/restore, safe loading, and the checks that make ``--resume`` safe.

A training checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts,
``epoch`` (epochs completed), ``rng`` (torch, cuda, numpy, python states as tensors, numbers and lists),
``config`` (plain dict), ``config_hash``, ``class_counts``, ``history`` (per-epoch metric rows), ``stage``,
``arch`` info and ``best`` (epoch, score, metric and logits of the best validation score so far, or None).
A run folder holds ``last.pt`` (the latest epoch; ``--resume`` continues it) and ``best.pt`` (the same
content for the best validation epoch). It is written to a temporary file in the same directory and moved into place with
``os.replace`` (:mod:`iif.outputs`), so a run killed mid-write never leaves a truncated ``last.pt``.

Trust model: a checkpoint is data, never code. Every checkpoint is read with
``torch.load(weights_only=True)``, which rebuilds only tensors, numbers, strings, ``None`` and plain
containers; a file that needs anything else (a pickled class or function, a numpy array) is refused
with one line naming what it asked for, and none of it runs.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import IIFError
from ..outputs import atomic_torch_save as _atomic_torch_save
from ..outputs import atomic_write_text as _atomic_write_text

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


def _numpy_state_plain() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_restore(state) -> None:
    if isinstance(state, dict):
        keys = state["keys"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        np.random.set_state((state["kind"], keys.astype(np.uint32), int(state["pos"]), int(state["has_gauss"]),
                             float(state["cached_gaussian"])))
    else:  # the tuple np.random.get_state() returns (checkpoints written before states were plain)
        np.random.set_state(state)


def capture_rng() -> dict:
    """Every global RNG state a training epoch draws from, as tensors, numbers and lists only.

    ``torch`` (ByteTensor), ``numpy`` (MT19937 key as an int64 tensor, position, Gaussian cache),
    ``python`` (``random.getstate()`` as ``[version, [625 ints], gauss_next]``) and, when CUDA is in use,
    ``cuda`` (one ByteTensor per device): all loadable with ``torch.load(weights_only=True)``.
    """
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_plain(),
        "python": [int(version), [int(x) for x in internal], gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng` (bit-exact: the same draws follow)."""
    torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    _numpy_state_restore(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def restore_training_state(ckpt: dict, model: torch.nn.Module, optimizer, scheduler, scaler=None, rank: int = 0,
                           load_model=None) -> tuple[int, list]:
    """Put a run back where checkpoint ``ckpt`` left it, for an exact ``--resume`` (classification and
    detection trainers alike): model, optimizer, LR-scheduler and (fp16) grad-scaler states, and this
    rank's RNG states (``rng_per_rank``, else ``rng``). Returns ``(epochs completed, history rows)``.

    ``load_model(model, state)`` loads the weights (default ``model.load_state_dict``).
    """
    (load_model or (lambda m, state: m.load_state_dict(state)))(model, ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rngs = ckpt.get("rng_per_rank") or [ckpt.get("rng")]
    mine = rngs[min(int(rank), len(rngs) - 1)]
    if mine is not None:
        restore_rng(mine)
    return int(ckpt["epoch"]), list(ckpt.get("history", []))


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Atomically save a checkpoint dict; returns the path."""
    atomic_torch_save(state, path)
    return Path(path)


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def safe_load(path: Path, map_location) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors; nothing in the file can run code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        found = _GLOBAL.search(msg)
        if found or "Unsupported global" in msg or "Unsupported class" in msg:
            what = f" ({found.group(1)})" if found else ""
            raise IIFError(
                f"refusing to load checkpoint {path}: it asks to rebuild a Python object{what} beyond tensors, "
                "numbers, strings and plain containers, and unpickling that could run code. iif checkpoints "
                "never need this; load it only through code you trust and re-save its state dict with "
                "torch.save(model.state_dict(), ...).") from None
        detail = msg.split("WeightsUnpickler error:")[-1] if "WeightsUnpickler error:" in msg else msg
        raise IIFError(f"cannot read checkpoint {path}: {_first_line(detail)}. Is it a torch checkpoint written by iif?") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise IIFError(f"cannot read checkpoint {path}: {_first_line(str(exc))}. Is it a torch checkpoint "
                       "written by iif (not truncated)?") from None


def _first_line(text: str) -> str:
    """The first sentence of an exception message, on one line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return line[:200] or "unreadable"


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
    obj = safe_load(path, map_location)
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
