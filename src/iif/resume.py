"""Runs that survive a crash or a kill (`iif det-bench`, `iif bench`): finished work kept in the staging folder.

``iif det-bench`` writes its output folder through :class:`iif.outputs.OutputFolder`: everything is built in a
staging folder beside ``--out`` (``.<out>.iif-stage-<random>``) and swapped into place at the end. A
det-bench run enters that staging folder *before* it trains and keeps there, under ``resume/``, each trained
detector (``seed<k>/<row>.pt``: the state dict, the settings key, the training time and history) and each
seed's RoI cache (``seed<k>/roi_cache.pt``), every file written atomically. A run killed (SIGKILL, power) or
stopped by an exception leaves that folder behind; the next run of the same command on the same ``--out``
with the same settings (:func:`settings_key`: every setting but ``seeds``, ``quick`` and ``bootstrap``, the data paths with
their json files' sizes and modification times, and the iif version) adopts the newest such folder
(:func:`open_staging`) and loads what is there instead of training again. A file is reused only when its
recorded key, seed and row equal the run's and its state dict loads into the freshly built detector with
``strict=True``; anything else is logged and recomputed. ``resume/`` is removed just before the finished
output is swapped in, so the output folder holds what it always did.

``iif bench`` does the same per (seed, head) block (:meth:`ResumeStore.save_arrays`: the backbone's weights,
the post-hoc and decoupled rows' logits, the timings) and per block of end-to-end rows; its settings key is the
base config, the thread count and a fingerprint of the splits' labels.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch

from ._version import __version__
from .outputs import (OutputFolder, atomic_torch_save, clean_stale_temporaries, json_safe, manifest, read_marker,
                       staged_outputs, write_marker)

__all__ = ["settings_key", "open_staging", "keep_on_failure", "ResumeStore", "RESUME_DIR"]

#: The sub-folder of the staging folder that holds the reusable work.
RESUME_DIR = "resume"
#: What :class:`ResumeStore` (and ``iif bench``'s ``<head>-model.pt``) writes under ``resume/`` (relative paths):
#: ``seed<k>``, its kept files, and the temporaries of their atomic writes (``.<file>.<8 chars>.iif-tmp``).
_KEPT_ENTRY = re.compile(r"seed\d+(/([A-Za-z0-9_-]+\.(pt|npz|json)|\.[A-Za-z0-9_-]+\.(pt|npz|json)\.[A-Za-z0-9_]{8}\.iif-tmp))?")
_COMMAND = "det-bench"


def settings_key(settings: dict[str, Any], data_paths: Any) -> str:
    """A sha256 of what a trained detector depends on: ``settings`` (``seeds``, ``quick`` and ``bootstrap`` left
    out: seed k's models are the same whatever the number of seeds or rows, and the bootstrap only scores them),
    the data paths with the size and modification time of each json among them, and the iif version."""
    s = {k: v for k, v in settings.items() if k not in ("seeds", "quick", "bootstrap")}
    files = []
    for p in data_paths:
        p = Path(p)
        st = p.stat() if p.is_file() else None
        files.append([str(p), None if st is None else [st.st_size, st.st_mtime_ns]])
    blob = json.dumps(json_safe({"settings": s, "data": files, "version": __version__}), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _staged(out: Path, key: str, command: str = _COMMAND) -> list[tuple[int, Path]]:
    """Unfinished ``command`` staging folders of ``out`` with this settings ``key`` whose run is dead, oldest first."""
    return staged_outputs(out, command, match=lambda m: not m.get("complete") and m.get("det_bench_key") == key)


def open_staging(folder: OutputFolder, key: str, log: Callable[[str], Any]) -> tuple[Path, bool]:
    # ``folder.command`` (det-bench, bench) names the staging folders that may be adopted.
    """``(staging, adopted)``: the newest staging folder a killed run of these settings left beside
    ``folder.path`` (its marker rewritten to this process), or a new one from ``folder.__enter__()``.

    Either way ``folder.staging`` is set, so ``folder.__exit__`` swaps it in at the end; stale staging folders
    of other settings are removed as :class:`OutputFolder` always does."""
    command = folder.command
    staged = _staged(folder.path, key, command)
    if staged:
        staging = staged[-1][1]
        folder.check()
        clean_stale_temporaries(folder.path, keep=staging)
        old = read_marker(staging) or {}
        write_marker(staging, command, complete=False, staging=True, det_bench_key=key,
                     **{k: old[k] for k in ("created", "created_ns") if k in old})
        folder.staging = staging
        log(f"{command}: continuing the interrupted run in {staging} (same command and settings)")
        return staging, True
    staging = folder.__enter__()
    m = read_marker(staging) or {}
    write_marker(staging, command, complete=False, staging=True, det_bench_key=key,
                 **{k: m[k] for k in ("created", "created_ns") if k in m})
    return staging, False


@contextmanager
def keep_on_failure(folder: OutputFolder, store: "ResumeStore", log: Callable[[str], Any], *, finish: bool = False):
    """Run a block inside ``folder``'s staging folder (opened by :func:`open_staging`).

    On an exception (or KeyboardInterrupt) the staging folder stays when ``store`` has kept work (logged:
    rerun the same command), else it is removed as :class:`OutputFolder` does. With ``finish``, a block that
    ends normally removes ``resume/`` and swaps the staging folder into place (``folder.__exit__``)."""
    try:
        yield folder.staging
    except BaseException:
        if store.root.is_dir():
            log(f"{folder.command}: stopped; the work done so far stays in {folder.staging}: rerun the same "
                "command to continue")
        else:
            folder.__exit__(*sys.exc_info())
        raise
    if finish:
        store.discard()
        folder.__exit__(None, None, None)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


class ResumeStore:
    """The reusable work of one det-bench run under ``staging/resume`` (see the module docstring)."""

    def __init__(self, staging: Path, key: str, log: Callable[[str], Any]) -> None:
        self.root = Path(staging) / RESUME_DIR
        self.key = key
        self.log = log
        self.saved = 0

    def _path(self, seed: int, name: str) -> Path:
        return self.root / f"seed{int(seed)}" / f"{_slug(name)}.pt"

    def _read(self, path: Path, seed: int, name: str) -> dict | None:
        if not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged file is recomputed, never trusted
            self.log(f"det-bench: not reusing {path} ({type(exc).__name__}: {exc}); recomputing it")
            return None
        if not isinstance(blob, dict) or (blob.get("key"), blob.get("seed"), blob.get("row")) != (self.key, seed, name):
            self.log(f"det-bench: not reusing {path}: it was made with other settings; recomputing it")
            return None
        return blob

    def load_model(self, model: torch.nn.Module, seed: int, name: str) -> dict | None:
        """Load the kept detector of (``seed``, ``name``) into ``model``; its training record, or None."""
        path = self._path(seed, name)
        blob = self._read(path, seed, name)
        if blob is None:
            return None
        try:
            model.load_state_dict(blob["state_dict"], strict=True)
        except (RuntimeError, KeyError) as exc:
            self.log(f"det-bench: not reusing {path}: its weights do not fit this detector ({exc}); training again")
            return None
        return json.loads(blob["record"])

    def save_model(self, model: torch.nn.Module, seed: int, name: str, record: dict) -> None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_torch_save({"key": self.key, "seed": int(seed), "row": name, "state_dict": state,
                           "record": json.dumps(json_safe(record))}, self._path(seed, name), mkdir=True)
        self.saved += 1

    def load_cache(self, seed: int) -> tuple[list[dict], list[int]] | None:
        """``(batches, image_ids)`` of the RoI cache kept for ``seed`` (the fields of
        :class:`iif.detection.posthoc.RoICache`), or None."""
        blob = self._read(self._path(seed, "roi_cache"), seed, "roi_cache")
        if blob is None:
            return None
        return blob["batches"], list(blob["image_ids"])

    def save_cache(self, seed: int, cache) -> None:
        batches = [{k: v for k, v in b.items() if k != "masks"} for b in cache.batches]  # the mask memo is rebuilt
        atomic_torch_save({"key": self.key, "seed": int(seed), "row": "roi_cache", "batches": batches,
                           "image_ids": list(cache.image_ids)}, self._path(seed, "roi_cache"), mkdir=True)

    def save_arrays(self, seed: int, name: str, record: dict, arrays: dict[str, Any]) -> None:
        """Keep a finished block of work: ``arrays`` (name -> numpy array) in ``<name>.npz``, then ``record``
        (JSON) in ``<name>.json``; the json is written last, so its presence means the block is complete."""
        import io

        import numpy as np

        from .outputs import atomic_write_bytes, atomic_write_text

        base = self._path(seed, name).with_suffix("")
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(base.with_suffix(".npz"), buf.getvalue(), mkdir=True)
        # Plain json (NaN kept as NaN, unlike json_safe): the record must read back to the same numbers.
        text = json.dumps({"key": self.key, "seed": int(seed), "row": name, "record": record},
                          default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        atomic_write_text(base.with_suffix(".json"), text + "\n", mkdir=True)
        self.saved += 1

    def load_arrays(self, seed: int, name: str) -> tuple[dict, dict] | None:
        """``(record, arrays)`` of a block kept by :meth:`save_arrays` with this key, seed and name, or None."""
        import numpy as np

        base = self._path(seed, name).with_suffix("")
        js, npz = base.with_suffix(".json"), base.with_suffix(".npz")
        if not js.is_file() or not npz.is_file():
            return None
        try:
            blob = json.loads(js.read_text())
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            self.log(f"not reusing {base}: {type(exc).__name__}: {exc}; recomputing it")
            return None
        if not isinstance(blob, dict) or (blob.get("key"), blob.get("seed"), blob.get("row")) != (self.key, seed, name):
            self.log(f"not reusing {base}: it was made with other settings; recomputing it")
            return None
        return blob["record"], arrays

    def discard(self) -> None:
        """Remove ``resume/`` (just before the finished output is swapped in): only a real folder inside our
        staging folder (its marker says ``staging``), never through a link, and only when every entry in it is
        one this class writes (``seed<k>/<name>.pt|.npz|.json`` and their atomic-write temporaries); anything
        else stays, with the folder."""
        if not self.root.is_dir() or self.root.is_symlink():
            return
        if (read_marker(self.root.parent) or {}).get("staging") is not True:
            return
        if all(_KEPT_ENTRY.fullmatch(name) for name in manifest(self.root)):
            shutil.rmtree(self.root, ignore_errors=True)
