"""Moving a finished output into place: ``renameat2`` exchange (or the two-rename fallback), recovery of a
cut fallback, and removal of the staging/old folders that killed runs left (see :mod:`iif.outputs`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from ..errors import IIFError
from .atomic import _TMP_FILE, PathLike, _fault_point, _fsync_dir
from .marker import _contents, _is_marker_temp, read_marker, unlisted

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


def _provably_ours(folder: Path, marker: dict) -> bool:
    """Whether everything in ``folder`` is iif's: a staging folder (``staging: true`` in its marker, written
    when our own mkdtemp made it, dropped when the output is finished) holds only our writes; any other output
    only when its marker lists its files and it holds nothing else. A marker without that list (an unfinished
    run written in place, an output of iif before 2026-12-06) proves nothing: such a folder is never removed."""
    if marker.get("staging") is True:
        return True
    return isinstance(marker.get("files"), list) and not unlisted(folder, marker)


def _remove_ours(folder: Path) -> bool:
    """Remove ``folder`` only if everything in it is ours (:func:`_provably_ours`) or it is empty; True when
    removed. Anything else (a file the user added, an output whose files iif cannot name) is kept whole."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    marker = read_marker(folder)
    if marker is None:
        return _rmdir_if_empty(folder)  # killed between mkdtemp and its marker
    if not _provably_ours(folder, marker):
        return False
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
    if not _remove_ours(old):
        _keep_replaced(old, path)


def _keep_replaced(old: Path, path: Path) -> None:
    """The replaced output could not be proved iif's alone: move it to a name no clean-up ever touches
    (``.<out>.iif-kept-<random>``) and say where, so the user decides what to delete."""
    kept = Path(tempfile.mkdtemp(prefix=_temp_name(path, "kept"), dir=old.parent))
    kept.rmdir()
    os.rename(old, kept)
    _fsync_dir(old.parent)
    print(f"iif: warning: the replaced {path.name} is kept in {kept}: iif cannot tell that everything in it is its "
          "own (its marker lists no files, or something was added); delete it yourself when you no longer need it.",
          file=sys.stderr, flush=True)
