"""Writing outputs safely: atomic files, and one policy for every command that writes a folder.

Files
    :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json` and
    :func:`atomic_torch_save` write to a temporary file in the destination's folder
    (``.<name>.<random>.iif-tmp``), flush and ``fsync`` it, give it the mode an ordinary ``open`` would
    (``0o666 & ~umask``; ``mkstemp`` alone creates ``0600``) and move it over the destination with
    ``os.replace``. A reader (or a run killed at any instant) sees the old file or the new one, never a
    truncated one.

Output folders (``iif train``, ``iif bench``, ``iif det-bench``, ``iif det-data``)
    * a folder is recognised as ours by its marker file :data:`MARKER` (``.iif-output.json``: command,
      iif version, creation time);
    * a new run refuses an ``--out`` that is an existing file, or a non-empty folder (a finished run
      included), naming what is there and the flags (``--resume`` / ``--force`` / another ``--out``);
    * ``--resume`` (train, det-train) continues only a folder with our marker of the same command;
    * ``--force`` replaces only a folder that carries our marker naming the same command; anything else is
      refused, since it may hold the user's own files or another command's output;
    * replacement is crash-safe: the new output is built in a staging folder beside the old one
      (``.<name>.iif-stage-<random>``) and swapped in with one ``renameat2(RENAME_EXCHANGE)`` system call,
      so the old output stays readable until the new one is complete and a kill at any instant leaves
      the old or the new output under the requested name. Where the kernel, C library or file system
      cannot exchange (not Linux, or ``EINVAL``/``ENOSYS``), the fallback is two renames (old ->
      ``.<name>.iif-old-<random>``, staging -> name); a kill between them leaves no folder under the name
      for that instant, and the next run of the same folder renames the old output back first;
    * stale temporaries of the same folder left by killed runs (names matching our patterns AND holding
      our marker, or empty) are removed by the next run of that folder; temporary files inside a run
      folder (``*.iif-tmp``) are removed when the run is resumed;
    * folders are created with ``0o777 & ~umask`` and files with ``0o666 & ~umask``.

Outputs never touch inputs (:func:`refuse_overlap`, called by every command before any work)
    * an output (``--out``, ``--json``, ``--save-logits``, ``--detections``, ``--output``) is refused when
      its real path (symlinks and ``..`` resolved) equals an input, contains one (a folder that would be
      replaced holding it) or lies inside an input *data* folder (dataset root, image folder, logits folder,
      benchmark); two outputs of one command may not overlap either;
    * the one exception: a *run folder* (the folder holding the checkpoint a command reads) may receive new
      files (``iif eval RUN`` writes ``RUN/eval_test.json``), but the files it reads there (checkpoint,
      ``config.yaml``) and the folder itself are still refused as outputs;
    * ``--force`` replaces only a folder whose marker names the same command, and the final swap checks the
      destination again at that moment (still ours, same command, not an input): a folder put there while
      the run worked is never moved aside.

For tests, ``IIF_FAULT_KILL_AT=N`` sends SIGKILL to the process itself at the N-th write step (every
atomic write, rename, swap and clean-up counts one), and ``IIF_FAULT_TRACE=FILE`` appends one line per
step to FILE; both are read on every step and cost nothing when unset.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping

from ._version import __version__
from .errors import IIFError

__all__ = [
    "MARKER",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "json_safe",
    "atomic_torch_save",
    "atomic_write_stream",
    "current_umask",
    "make_folder",
    "read_marker",
    "write_marker",
    "exchange_paths",
    "OutputFolder",
    "check_run_folder",
    "prepare_run_folder",
    "finish_run_folder",
    "abandon_run_folder",
    "clean_stale_temporaries",
    "refuse_overlap",
    "checkpoint_inputs",
    "staged_outputs",
]

PathLike = str | os.PathLike

#: The marker file that identifies a folder as an ``iif`` output.
MARKER = ".iif-output.json"
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


# ----------------------------------------------------------------------------------------------- marker


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


# ----------------------------------------------------------------------------------------------- swapping


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276, "riscv64": 276}
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    """``renameat2(AT_FDCWD, src, AT_FDCWD, dst, flags)`` through libc (glibc >= 2.28) or the raw syscall."""
    if platform.system() != "Linux":
        raise OSError(errno.ENOSYS, "renameat2 is Linux only")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    a, b = os.fsencode(str(src)), os.fsencode(str(dst))
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        rc = fn(_AT_FDCWD, a, _AT_FDCWD, b, flags)
    else:
        nr = _SYSCALL_RENAMEAT2.get(platform.machine().lower())
        if nr is None:
            raise OSError(errno.ENOSYS, "renameat2 is not available on this machine")
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(a), ctypes.c_int(_AT_FDCWD),
                          ctypes.c_char_p(b), ctypes.c_uint(flags))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(src), None, str(dst))


def exchange_paths(a: PathLike, b: PathLike) -> None:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Raises ``OSError`` with ``errno`` ENOSYS/EINVAL/ENOTSUP where the system or file system cannot.
    """
    _renameat2(Path(a), Path(b), RENAME_EXCHANGE)


def _abs(path: PathLike) -> Path:
    """``path`` made absolute and normalised (``out/.``, ``a/../out`` name the folder ``out``)."""
    return Path(os.path.abspath(path))


def _temp_name(path: Path, kind: str) -> str:
    return f".{_abs(path).name}.iif-{kind}-"


def _temporaries(path: Path) -> list[Path]:
    """Folders beside ``path`` whose names match our staging/old patterns for it."""
    parent = _abs(path).parent
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    prefixes = tuple(_temp_name(path, k) for k in ("stage", "old"))
    return [parent / n for n in names if n.startswith(prefixes)]


def _is_live(marker: dict) -> bool:
    """Whether the run that wrote ``marker`` is still running on this machine."""
    pid = marker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or marker.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) still answers kill(0): read its state.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _rmdir_if_empty(folder: Path) -> bool:
    """Remove ``folder`` if it holds nothing but our marker and temporaries of its writes."""
    if _contents(folder):
        return False
    try:
        for name in os.listdir(folder):
            os.unlink(folder / name)
        folder.rmdir()
    except OSError:
        return False
    return True


def _remove_ours(folder: Path) -> bool:
    """Remove ``folder`` only if it is ours (carries our marker) or empty; True when removed."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if read_marker(folder) is None:
        return _rmdir_if_empty(folder)  # killed between mkdtemp and its marker
    _fault_point(f"remove {folder.name}")
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


def clean_stale_temporaries(path: PathLike, keep: PathLike | None = None) -> list[Path]:
    """Remove the staging/old folders of ``path`` left by killed runs (ours by name AND marker, or empty).

    Folders of a run still alive on this machine, and ``keep``, are left alone. Returns what was removed.
    """
    path = Path(path)
    keep = Path(keep) if keep is not None else None
    removed = []
    for tmp in _temporaries(path):
        if keep is not None and tmp == keep:
            continue
        m = read_marker(tmp)
        if m is not None and _is_live(m):
            continue
        if _remove_ours(tmp):
            removed.append(tmp)
    return removed


def _clean_temp_files(folder: Path) -> None:
    """Remove ``*.iif-tmp`` files of killed atomic writes inside our ``folder`` (and its sub-folders)."""
    for name in os.listdir(folder) if folder.is_dir() else ():
        if _is_marker_temp(name):
            try:
                os.unlink(folder / name)
            except OSError:
                pass
    if read_marker(folder) is None:
        return
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if _TMP_FILE.match(f):
                try:
                    os.unlink(os.path.join(root, f))
                except OSError:
                    pass


def _recover(path: Path) -> None:
    """Undo a fallback swap cut between its two renames: put the old output back under ``path``."""
    if os.path.lexists(path):
        return
    olds = [t for t in _temporaries(path) if t.name.startswith(_temp_name(path, "old")) and read_marker(t) is not None]
    if olds:
        newest = max(olds, key=lambda t: (read_marker(t) or {}).get("created_ns", 0))
        os.rename(newest, path)


def _swap_into_place(staging: Path, path: Path) -> None:
    """Make ``staging`` appear under ``path``; an existing ``path`` (ours) is replaced and removed."""
    parent = path.parent
    if not os.path.lexists(path):
        _fault_point(f"rename {staging.name}")
        try:
            _renameat2(staging, path, RENAME_NOREPLACE)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise IIFError(f"{path} appeared while this run was writing; nothing was replaced. Choose another --out.") from None
            os.rename(staging, path)  # no renameat2: plain rename (fails on a non-empty folder)
        _fsync_dir(parent)
        return
    _fault_point(f"exchange {staging.name}")
    try:
        exchange_paths(staging, path)
        old = staging
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # Documented fallback: two renames, with _recover() undoing a cut between them on the next run.
        old = Path(tempfile.mkdtemp(prefix=_temp_name(path, "old"), dir=parent))
        old.rmdir()
        os.rename(path, old)
        _fault_point(f"fallback rename {staging.name}")
        os.rename(staging, path)
    _fsync_dir(parent)
    _remove_ours(old)


# ----------------------------------------------------------------------------------------------- the policy


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


def _check_not_file(path: Path) -> None:
    if path.is_symlink():
        raise IIFError(f"--out {path} is a symbolic link; pass the folder it points to, or choose another --out.")
    if path.exists() and not path.is_dir():
        raise IIFError(f"--out {path} exists and is a file, not a folder; choose another --out.")


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


def _refuse_existing(path: Path, marker: dict | None, names: list[str], resumable: bool) -> IIFError:
    if marker is None:
        return IIFError(f"--out {path} already holds {_describe(path, marker, names)}; iif writes only into an "
                        "empty or new folder and --force replaces only a folder iif wrote, so choose another --out.")
    if resumable:
        flags = "pass --resume to continue it, --force to replace it"
    else:
        flags = "pass --force to replace it"
    return IIFError(f"--out {path} already holds {_describe(path, marker, names)}; {flags}, or choose another --out.")


def _refuse_force(path: Path, names: list[str]) -> IIFError:
    return IIFError(f"--force replaces only a folder that iif wrote (it carries {MARKER}), and {path} holds other "
                    f"files ({_listing(names)}) that may be yours; nothing was removed. Choose another --out.")


def _refuse_other_command(path: Path, marker: dict, command: str, flag: str = "--force") -> IIFError:
    return IIFError(f"{flag}: {path} holds an iif {marker.get('command')} output, not an iif {command} one, and "
                    f"{flag} only applies to an output of the same command; nothing was changed. Choose another --out.")


def _recheck_destination(path: Path, command: str, inputs: PathPairs | None = None,
                         run_folders: PathPairs | None = None, staged: Path | None = None) -> None:
    """The check made at the moment of the final swap: ``path`` is absent, an empty folder, or an output of
    the same ``command`` (our marker) that is still no input; anything else that appeared while the run
    worked (a user's folder, a link, another command's output) is left exactly as it is."""
    keep = f"; the finished output stays in {staged}" if staged is not None else ""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise IIFError(f"{path} became a {'symbolic link' if path.is_symlink() else 'file'} while this run worked; "
                       f"nothing was replaced{keep}. Choose another --out.")
    if path.is_dir():
        names = _contents(path)
        marker = read_marker(path)
        if names and marker is None:
            raise IIFError(f"{path} now holds files that iif did not write ({_listing(names)}); nothing was "
                           f"replaced{keep}. Choose another --out.")
        if marker is not None and names and marker.get("command") != command:
            raise IIFError(f"{path} now holds an iif {marker.get('command')} output, not an iif {command} one; nothing "
                           f"was replaced{keep}. Choose another --out.")
    refuse_overlap({"--out": path}, inputs, run_folders=run_folders)


class OutputFolder:
    """Write a command's output folder all at once: build it in a staging folder, then swap it in.

    ``with OutputFolder(path, command="bench", force=False) as staging:`` gives ``staging``, a
    :class:`pathlib.Path` of a new, empty folder beside ``path``. On normal exit the marker is written
    into it and it is moved into place atomically (swapped with the old output when ``force``); on an
    exception it is removed and any old output is untouched.

    Constructing the object checks the policy without touching anything (so a command can refuse before
    its expensive work): an existing file at ``path`` is refused; a non-empty folder is refused unless
    ``force``; ``force`` is refused for a folder without our marker or with another command's; an output
    over an input (``inputs``, ``run_folders``: see :func:`refuse_overlap`) is refused. Entering checks again, puts back an
    output left out by a cut fallback swap, and removes stale temporaries of ``path``.
    """

    def __init__(self, path: PathLike, command: str = "bench", force: bool = False, *,
                 inputs: PathPairs | None = None, run_folders: PathPairs | None = None) -> None:
        self.path = Path(path)
        self.command = command
        self.force = bool(force)
        # What the command reads (see refuse_overlap); checked now and again at the final swap.
        self.inputs = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs or [])
        self.run_folders = list(run_folders.items()) if isinstance(run_folders, Mapping) else list(run_folders or [])
        self.staging: Path | None = None
        self.check()

    def check(self) -> None:
        """Raise :class:`IIFError` when this run may not write ``path`` (see the class docstring)."""
        p = self.path
        _check_not_file(p)
        refuse_overlap({"--out": p}, self.inputs, run_folders=self.run_folders)
        if not p.is_dir():
            return
        names = _contents(p)
        if not names:
            return
        marker = read_marker(p)
        if not self.force:
            raise _refuse_existing(p, marker, names, resumable=False)
        if marker is None:
            raise _refuse_force(p, names)
        if marker.get("command") != self.command:
            raise _refuse_other_command(p, marker, self.command)

    def __enter__(self) -> Path:
        _recover(self.path)
        self.check()
        parent = _abs(self.path).parent
        make_folder(parent)
        clean_stale_temporaries(self.path)
        self.staging = _make_temp_folder(parent, _temp_name(self.path, "stage"))
        write_marker(self.staging, self.command, complete=False)
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> bool:
        staging, self.staging = self.staging, None
        if staging is None:
            return False
        if exc_type is not None:
            _remove_ours(staging)  # our own staging folder (it carries our marker since __enter__)
            return False
        try:
            marker = read_marker(staging) or {}
            write_marker(staging, self.command, complete=True,
                         **{k: marker[k] for k in ("created", "created_ns") if k in marker})
            self.check()  # the folder may have changed while we worked
            _recheck_destination(_abs(self.path), self.command, self.inputs, self.run_folders)
            _swap_into_place(staging, _abs(self.path))
        except BaseException:
            _remove_ours(staging)  # only a folder with our marker (after an exchange: our replaced output)
            raise
        return False


#: Commands whose run folders ``--resume`` continues (named in the message refusing a used --out).
RESUMABLE = ("train", "det-train")


def _has_checkpoint(folder: Path) -> bool:
    return any((folder / rel).is_file() for rel in ("last.pt", "stage1/last.pt"))


def staged_outputs(path: PathLike, command: str, match: Callable[[dict], bool] | None = None) -> list[tuple[int, Path]]:
    """``(created_ns, folder)`` of the staging folders beside ``path`` that a ``command`` run left and whose
    process is gone (a killed ``--force`` train run, an interrupted det-bench), oldest first; ``match(marker)``
    narrows them further (det-bench: same settings, unfinished)."""
    path = Path(path)
    found = []
    for tmp in _temporaries(path):
        if not tmp.name.startswith(_temp_name(path, "stage")) or tmp.is_symlink() or not tmp.is_dir():
            continue
        m = read_marker(tmp)
        if m is None or m.get("command") != command or _is_live(m) or (match is not None and not match(m)):
            continue
        found.append((int(m.get("created_ns", 0)), tmp))
    return sorted(found)


def _staged_runs(path: Path, command: str) -> list[tuple[int, Path]]:
    """Staging folders of ``path`` holding a ``command`` run started after the output under ``path``."""
    current = read_marker(path) if path.is_dir() else None
    floor = int(current.get("created_ns", 0)) if current else -1
    return [(created, tmp) for created, tmp in staged_outputs(path, command) if created > floor]


def _plan(path: Path, command: str, force: bool, resume: bool) -> tuple[str, Path | None]:
    """Decide what a run of ``command`` at ``path`` does: ("new" | "continue" | "stage", folder)."""
    _check_not_file(path)
    if resume:
        staged = _staged_runs(path, command)
        if staged:
            return "continue", staged[-1][1]
    if not path.is_dir():
        return "new", path
    names = _contents(path)
    marker = read_marker(path)
    if not names:
        return ("continue" if marker is not None and marker.get("command") == command else "new"), path
    if resume:
        if marker is None:
            raise IIFError(f"--resume continues only a run iif started (its folder carries {MARKER}), and {path} "
                           f"holds {_describe(path, marker, names)}; choose another --out.")
        if marker.get("command") != command:
            raise IIFError(f"--resume: {path} holds an iif {marker.get('command')} output, not a {command} run; "
                           "choose another --out.")
        return "continue", path
    if not force:
        raise _refuse_existing(path, marker, names, resumable=command in RESUMABLE)
    if marker is None:
        raise _refuse_force(path, names)
    if marker.get("command") != command:
        raise _refuse_other_command(path, marker, command)
    return "stage", None


def check_run_folder(path: PathLike, command: str = "train", force: bool = False, resume: bool = False) -> None:
    """Raise :class:`IIFError` when a run may not use ``path``; changes nothing (see :func:`prepare_run_folder`)."""
    _plan(Path(path), command, force, resume)


def prepare_run_folder(path: PathLike, command: str = "train", force: bool = False, resume: bool = False) -> Path:
    """The folder a resumable run (``iif train``) writes into; apply the output-folder policy first.

    * new or empty ``path``: created (umask mode) with our marker; returned;
    * ``resume``: a staged replacement of ``path`` that a killed ``--force`` run left (newest first), else
      ``path`` itself if it carries our marker; anything else is refused. A resume of a folder with
      nothing in it starts the run from scratch;
    * ``force`` on our folder: a new staging folder beside ``path`` is returned; the old output stays
      where it is until :func:`finish_run_folder` swaps the finished run in;
    * otherwise an existing non-empty folder (or a file) is refused with the flags to use.

    Stale temporaries of ``path`` are removed, and so are ``*.iif-tmp`` files in a resumed folder.
    """
    path = Path(path)
    _recover(path)
    action, folder = _plan(path, command, force, resume)
    if action == "stage":
        parent = _abs(path).parent
        clean_stale_temporaries(path)
        folder = _make_temp_folder(parent, _temp_name(path, "stage"))
        write_marker(folder, command, complete=False)
        return folder
    assert folder is not None
    clean_stale_temporaries(path, keep=folder if folder != path else None)
    if action == "new":
        make_folder(folder)
        write_marker(folder, command, complete=False)
    elif read_marker(folder) is None:  # pragma: no cover - _plan only continues marked folders
        raise IIFError(f"{folder} is not an iif run folder; choose another --out.")
    _clean_temp_files(folder)
    return folder


def finish_run_folder(work: PathLike, path: PathLike, *, inputs: PathPairs | None = None,
                      run_folders: PathPairs | None = None) -> Path:
    """Mark the run in ``work`` finished and, if ``work`` is a staging folder, swap it in under ``path``.

    Before the swap ``path`` is checked again (:func:`_recheck_destination`): it must still be absent, empty or
    an output of the same command, and no input (``inputs``, ``run_folders``: see :func:`refuse_overlap`);
    otherwise nothing is moved and the finished run stays in ``work``.
    """
    work, path = Path(work), Path(path)
    marker = read_marker(work) or {}
    command = str(marker.get("command", "train"))
    write_marker(work, command, complete=True, **{k: marker[k] for k in ("created", "created_ns") if k in marker})
    if _abs(work) != _abs(path):
        _recheck_destination(_abs(path), command, inputs, run_folders, staged=_abs(work))
        _swap_into_place(_abs(work), _abs(path))
    return path


def abandon_run_folder(work: PathLike, created: bool, written: Iterable[str] = ()) -> bool:
    """After a run failed before its first checkpoint: remove what :func:`prepare_run_folder` made.

    Only a folder that holds nothing but our marker and the files named in ``written`` (those the run
    writes at its start, such as ``config.yaml``) is touched: those files and the marker go, and the folder
    too when this run ``created`` it (a staging folder always is). A failed start thus leaves nothing that
    a rerun would have to ``--force``. Returns True when something was removed.
    """
    work = Path(work)
    names = _contents(work)
    if read_marker(work) is None or not set(names) <= set(written) or _has_checkpoint(work):
        return False
    for name in names:
        try:
            if (work / name).is_file() and not (work / name).is_symlink():
                os.unlink(work / name)
        except OSError:
            return False
    if _contents(work):
        return False
    if created:
        return _rmdir_if_empty(work)
    try:
        (work / MARKER).unlink()
    except OSError:
        return False
    return True
