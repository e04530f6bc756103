"""Atomic files: write to a temporary file beside the destination, ``fsync`` it, give it the umask's mode
and ``os.replace`` it over the destination (see :mod:`iif.outputs`); the fault points tests use to kill a
run at a chosen write step (``IIF_FAULT_KILL_AT``, ``IIF_FAULT_TRACE``)."""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from ..errors import IIFError

PathLike = str | os.PathLike

#: Suffix of the temporary files of atomic writes.
TMP_SUFFIX = ".iif-tmp"
_TMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.iif-tmp$")


# ----------------------------------------------------------------------------------------------- fault points


_fault_steps = 0


def _fault_point(label: str) -> None:
    """Count one write step; kill this process here if ``IIF_FAULT_KILL_AT`` names this step (tests)."""
    global _fault_steps
    kill_at = os.environ.get("IIF_FAULT_KILL_AT")
    trace = os.environ.get("IIF_FAULT_TRACE")
    if not kill_at and not trace:
        return
    _fault_steps += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{_fault_steps} {label}\n")
    if kill_at and _fault_steps == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- modes and files


def current_umask() -> int:
    """This process's umask (read from /proc where possible, which, unlike ``os.umask``, changes nothing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parent_for(path: Path, mkdir: bool) -> Path:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        if mkdir:
            directory.mkdir(parents=True, exist_ok=True)
        elif directory.exists():
            raise IIFError(f"cannot write {path}: {directory} is not a folder; choose another path.")
        else:
            raise IIFError(f"cannot write {path}: folder {directory} does not exist; create it first or choose another path.")
    return directory


def atomic_write_stream(path: PathLike, write: Callable[[BinaryIO], Any], *, mkdir: bool = False) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, then move it over ``path`` atomically.

    ``mkdir``: create missing parent folders (else a missing folder is an :class:`IIFError`). On any
    failure the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    directory = _parent_for(path, mkdir)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        _fault_point(f"write {path.name}")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def atomic_write_bytes(path: PathLike, data: bytes, *, mkdir: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    return atomic_write_stream(path, lambda fh: fh.write(bytes(data)), mkdir=mkdir)


def atomic_write_text(path: PathLike, text: str, *, mkdir: bool = False) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mkdir=mkdir)


def json_safe(obj: Any) -> Any:
    """``obj`` with what JSON cannot hold made plain: numpy/torch scalars and arrays to numbers and lists,
    NaN/inf to None, tuples to lists, paths to strings, dict keys to strings."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: PathLike, obj: Any, *, mkdir: bool = False, indent: int | None = 1,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """``json.dumps(obj)`` plus a newline, written atomically; refuses NaN/inf (``allow_nan=False``)."""
    try:
        text = json.dumps(obj, indent=indent, default=default, allow_nan=False)
    except ValueError as exc:
        raise IIFError(f"cannot write {path}: {exc}; replace NaN/inf values with null first.") from exc
    return atomic_write_text(path, text + "\n", mkdir=mkdir)


def atomic_torch_save(obj: Any, path: PathLike, *, mkdir: bool = False) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)  # serialise first: a failure leaves no temporary file at all
    return atomic_write_bytes(path, buf.getbuffer(), mkdir=mkdir)


def make_folder(path: PathLike) -> Path:
    """``mkdir -p`` with the umask's mode (``0o777 & ~umask``, as ``mkdir`` gives)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _make_temp_folder(parent: Path, prefix: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp creates 0700
    return tmp
