"""Outputs never touch inputs: :func:`refuse_overlap` compares real paths (see :mod:`iif.outputs`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import IIFError
from .atomic import PathLike

PathPairs = Mapping[str, "PathLike | None"] | Iterable[tuple[str, "PathLike | None"]]


def _real_pairs(items: PathPairs | None) -> list[tuple[str, str, str]]:
    """``(label, path as given, real path)`` of each named path that is set (None and blank ones skipped)."""
    if items is None:
        return []
    pairs = items.items() if isinstance(items, Mapping) else items
    found = []
    for label, path in pairs:
        if path is None:
            continue
        given = os.fspath(path)
        if not str(given).strip():
            continue
        found.append((str(label), str(given), os.path.realpath(given)))
    return found


def _inside(child: str, parent: str) -> bool:
    """Whether the real path ``child`` is ``parent`` or lies below it."""
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _via(given: str, real: str) -> str:
    return "" if os.path.abspath(given) == real else f" (really {real})"


def refuse_overlap(outputs: PathPairs, inputs: PathPairs, *, run_folders: PathPairs | None = None) -> None:
    """Raise :class:`IIFError` when an output of a command would touch one of its inputs; changes nothing.

    ``outputs`` maps each output option to its path (``{"--out": "runs/x", "--json": None}``; None is skipped),
    ``inputs`` names everything the command reads (``{"data.root": ..., "the checkpoint": ...}``, or a list
    of ``(label, path)`` pairs when labels repeat, e.g. predict's images). Paths are compared as real paths
    (:func:`os.path.realpath`), so symbolic links and ``a/../b`` are seen through. An output is refused when

    * it equals an input (the file or folder would be overwritten or replaced);
    * it contains an input (a folder that would be replaced holds it);
    * it lies inside an input that is a folder (a data root, an image folder, a logits folder, a benchmark:
      every file there is read, so nothing may be written there);
    * it equals, contains or lies inside another output of the same command.

    ``run_folders``: folders that hold a checkpoint the command reads (``iif eval RUN``). They are refused
    as outputs and inside outputs, like any input, but new files may be written *inside* them: that is where
    ``iif eval`` writes ``eval_test.json`` by default. The files read there (checkpoint, ``config.yaml``) are
    passed in ``inputs`` and stay refused.
    """
    outs = _real_pairs(outputs)
    ins = _real_pairs(inputs)
    runs = _real_pairs(run_folders)
    for opt, given, real in outs:
        for label, in_given, in_real in ins + runs:
            if real == in_real:
                raise IIFError(f"{opt} {given}{_via(given, real)} is {label} {in_given}, an input of this command, "
                               f"and writing it would destroy it; choose a {opt} path outside every input.")
            if _inside(in_real, real):
                raise IIFError(f"{opt} {given}{_via(given, real)} would replace a folder holding {label} {in_given}, "
                               f"an input of this command; choose a {opt} path outside every input.")
        for label, in_given, in_real in ins:
            if os.path.isdir(in_real) and _inside(real, in_real):
                raise IIFError(f"{opt} {given}{_via(given, real)} lies inside {label} {in_given}, a folder this "
                               f"command reads; choose a {opt} path outside it.")
    for i, (opt, given, real) in enumerate(outs):
        for opt2, given2, real2 in outs[i + 1:]:
            if _inside(real, real2) or _inside(real2, real):
                raise IIFError(f"{opt} {given} and {opt2} {given2} overlap; give each output its own path.")


#: Files of a run folder that commands reading a checkpoint there treat as inputs (never overwritten).
RUN_FILES = ("best.pt", "last.pt", "config.yaml", "final_metrics.json")


def checkpoint_inputs(checkpoint: PathLike) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(inputs, run_folders)`` for :func:`refuse_overlap` of a command given a checkpoint file or run folder:
    the checkpoint and the run's own files (:data:`RUN_FILES`, ``stage1/`` included) are inputs; the folder
    holding them is a run folder (new files may be written inside it, e.g. ``eval_test.json``)."""
    ckpt = Path(checkpoint)
    run = ckpt if ckpt.is_dir() else ckpt.parent
    inputs = [] if ckpt.is_dir() else [("the checkpoint", str(ckpt))]
    for sub in (run, run / "stage1"):
        inputs += [(f"the run's {f.relative_to(run)}", str(f)) for f in (sub / n for n in RUN_FILES) if f.exists()]
    return inputs, [("the run folder", str(run))]
