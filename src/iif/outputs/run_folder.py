"""Folders of resumable runs (``iif train``, ``iif det-train``): new, continued (``--resume``) or staged beside
the old output (``--force``) and swapped in when the run finishes (see :mod:`iif.outputs`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import IIFError
from .atomic import PathLike, _make_temp_folder, make_folder
from .folder import (_check_not_file, _recheck_destination, _refuse_added, _refuse_existing, _refuse_force,
                     _refuse_other_command)
from .marker import MARKER, _contents, _describe, manifest, read_marker, unlisted, write_marker
from .overlap import PathPairs
from .swap import (_abs, _clean_temp_files, _is_live, _recover, _rmdir_if_empty, _swap_into_place, _temp_name,
                   _temporaries, clean_stale_temporaries)

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
        added = unlisted(path, marker)  # the finished run would list them as its own
        if added:
            raise IIFError(f"--resume: {path} is a finished iif {command} run but now also holds files iif did not "
                           f"write there ({', '.join(added[:4])}{' ...' if len(added) > 4 else ''}) that may be yours; "
                           "nothing was changed. Move them out or choose another --out.")
        return "continue", path
    if not force:
        raise _refuse_existing(path, marker, names, resumable=command in RESUMABLE)
    if marker is None:
        raise _refuse_force(path, names)
    if marker.get("command") != command:
        raise _refuse_other_command(path, marker, command)
    added = unlisted(path, marker)  # the replaced run is removed whole after the swap: only what iif wrote
    if added:
        raise _refuse_added(path, added)
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
        write_marker(folder, command, complete=False, staging=True)
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
    write_marker(work, command, complete=True, files=manifest(work),
                 **{k: marker[k] for k in ("created", "created_ns") if k in marker})
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


def made_by_run(work: PathLike, out: PathLike, existed: bool) -> bool:
    """Whether a run created its folder ``work``: ``out`` did not exist before it (``existed``), or ``work`` is
    the staging folder :func:`prepare_run_folder` made beside ``out``."""
    return not existed or _abs(work) != _abs(out)


@contextlib.contextmanager
def abandoned_on_failure(work: PathLike, *, created: bool, written: Iterable[str] = (),
                         owner: bool = True) -> Iterator[None]:
    """Run the body; if it raises, :func:`abandon_run_folder` the run folder ``work`` (only when ``owner``: rank
    0 of a DDP run; ``created``: :func:`made_by_run`) and re-raise. ``iif train`` and ``iif det-train`` wrap
    what they do before their first checkpoint in it, so a failed start leaves nothing a rerun must
    ``--force``."""
    try:
        yield
    except BaseException:
        if owner:
            abandon_run_folder(work, created=created, written=written)
        raise
