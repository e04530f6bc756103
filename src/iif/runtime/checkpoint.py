"""Checkpoints of both tasks' training runs: RNG capture/restore, safe loading, the training state a checkpoint
holds (:func:`training_state`, its inverse :func:`restore_training_state`) and the one resume rule
(:func:`settings_hash`, :func:`check_same_settings`; :func:`check_resume_compatible` is classification's form).

A training checkpoint is a dict with ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts, ``epoch``
(epochs completed), ``rng_per_rank`` (every rank's torch, cuda, numpy and python states as tensors, numbers and
lists; classification also keeps rank 0's as ``rng``), then what each task adds: classification its ``config``
and ``config_hash`` (:mod:`iif.train.checkpoint`), detection its ``settings`` and ``settings_hash``
(:mod:`iif.detection.engine`). Writing is :mod:`iif.outputs`' (atomic), through each task.

Trust model: a checkpoint is data, never code. Every checkpoint is read with ``torch.load(weights_only=True)``,
which rebuilds only tensors, numbers, strings, ``None`` and plain containers; a file that needs anything else
(a pickled class or function, a numpy array) is refused with one line naming what it asked for, and none of it
runs.

Moved here from ``iif.train.checkpoint`` (issue 16, "one runtime"), which re-exports every public name.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import IIFError

__all__ = [
    "load_checkpoint",
    "safe_load",
    "capture_rng",
    "restore_rng",
    "training_state",
    "restore_training_state",
    "settings_hash",
    "check_same_settings",
    "check_resume_compatible",
]


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


def training_state(model: torch.nn.Module, optimizer, scheduler, scaler, epoch: int, rngs: list,
                   *, rank0_rng: bool = False) -> dict:
    """The part of a checkpoint both tasks write, in this key order: ``model``, ``optimizer``, ``scheduler``,
    ``scaler`` (None without an fp16 scaler), ``epoch`` (epochs completed), ``rng`` (rank 0's states, only with
    ``rank0_rng``: classification's older readers look for it) and ``rng_per_rank`` (``rngs``, from
    :func:`iif.runtime.distributed.gather_rng_states`). Each task adds its own keys after these; the inverse
    is :func:`restore_training_state`."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch}
    if rank0_rng:
        state["rng"] = rngs[0]
    state["rng_per_rank"] = rngs
    return state


def settings_hash(settings: Any) -> str:
    """The fingerprint a resumed run must match: SHA-256 (first 16 hex digits) of ``settings`` as JSON with
    sorted keys (values JSON does not know written with ``str``). Classification hashes its config dict
    (:func:`iif.train.config.config_hash`), detection its config (``detection_config_hash``) and
    ``train_detector``'s settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_settings(old: str | None, new: str, message: str, *, force: bool = False,
                        missing_ok: bool = True) -> None:
    """The one resume rule of both tasks: a run continues only with the settings it started with.

    Raises ``IIFError(message)`` when the stored fingerprint ``old`` differs from ``new``, unless ``force``
    (``--force``: resume anyway) or ``old`` is None and ``missing_ok`` (a checkpoint written before
    fingerprints were stored). ``message`` is the task's one line naming the problem and the fix."""
    if old == new or force or (old is None and missing_ok):
        return
    raise IIFError(message)


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
    """Refuse to resume a classification run whose config changed (unless ``force``): the checkpoint's
    ``config_hash`` against ``cfg_hash`` under :func:`check_same_settings`."""
    old = ckpt.get("config_hash")
    check_same_settings(old, cfg_hash, force=force, message=(
        f"cannot resume from {ckpt.get('path', 'checkpoint')}: it was written with config hash {old}, "
        f"the current config hashes to {cfg_hash}. Use the same config and overrides, or pass --force "
        "to resume anyway (results will not match an uninterrupted run)."))
