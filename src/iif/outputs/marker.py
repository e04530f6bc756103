"""The marker file that makes a folder recognisable as an ``iif`` output, and what a folder holds besides it."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from .atomic import _TMP_FILE, PathLike, atomic_write_json

#: The marker file that identifies a folder as an ``iif`` output.
MARKER = ".iif-output.json"


def _version() -> str:
    return str(__version__)


def read_marker(folder: PathLike) -> dict | None:
    """The marker of ``folder`` as a dict, or None when there is none (or it is not ours)."""
    p = Path(folder) / MARKER
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "iif" or not isinstance(data.get("command"), str):
        return None
    return data


def write_marker(folder: PathLike, command: str, **extra: Any) -> dict:
    """Write the marker that makes ``folder`` recognisable as an ``iif <command>`` output."""
    now = time.time_ns()
    marker = {"tool": "iif", "command": command, "version": _version(),
              "created": datetime.fromtimestamp(now / 1e9, timezone.utc).isoformat(timespec="seconds"),
              "created_ns": now, "pid": os.getpid(), "host": socket.gethostname(), **extra}
    atomic_write_json(Path(folder) / MARKER, marker)
    return marker


def _is_marker_temp(name: str) -> bool:
    """A temporary file of a marker write cut by a kill (``..iif-output.json.<random>.iif-tmp``)."""
    return name.startswith(f".{MARKER}.") and _TMP_FILE.match(name) is not None


def _contents(folder: Path) -> list[str]:
    """What a folder holds, our marker (and temporaries of its writes) excepted, sorted."""
    try:
        return sorted(n for n in os.listdir(folder) if n != MARKER and not _is_marker_temp(n))
    except OSError:
        return []


def _listing(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _describe(path: Path, marker: dict | None, names: list[str]) -> str:
    if marker is None:
        return f"files that iif did not write ({_listing(names)})"
    finished = marker.get("complete") or "final_metrics.json" in names or "results.json" in names
    return f"a {'finished' if finished else 'unfinished'} iif {marker['command']} output ({_listing(names)})"


def manifest(folder: PathLike) -> list[str]:
    """Every entry under ``folder`` (files, links and folders, relative POSIX paths, sorted; links are not
    followed), our marker and its temporaries excepted: what a finished output records as written by iif."""
    root = Path(folder)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for name in dirnames + filenames:
            if rel == Path(".") and (name == MARKER or _is_marker_temp(name)):
                continue
            out.append((rel / name).as_posix())
    return sorted(out)


def unlisted(folder: PathLike, marker: dict | None) -> list[str]:
    """Entries of ``folder`` that its marker's ``files`` list does not name (added after iif wrote it: files
    that may be the user's). ``[]`` for a marker without that list (outputs of iif before 2026-12-06)."""
    listed = (marker or {}).get("files")
    if not isinstance(listed, list):
        return []
    known = set(listed)
    return [name for name in manifest(folder) if name not in known]
