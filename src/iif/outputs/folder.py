"""A command's output folder written all at once (:class:`OutputFolder`) and the refusals shared with run
folders (see :mod:`iif.outputs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..errors import IIFError
from .atomic import PathLike, _make_temp_folder, make_folder
from .marker import MARKER, _contents, _describe, _listing, manifest, read_marker, unlisted, write_marker
from .overlap import PathPairs, refuse_overlap
from .swap import _abs, _recover, _remove_ours, _swap_into_place, _temp_name, clean_stale_temporaries

def _check_not_file(path: Path) -> None:
    if path.is_symlink():
        raise IIFError(f"--out {path} is a symbolic link; pass the folder it points to, or choose another --out.")
    if path.exists() and not path.is_dir():
        raise IIFError(f"--out {path} exists and is a file, not a folder; choose another --out.")


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


def _refuse_added(path: Path, names: list[str], keep: str = "") -> IIFError:
    return IIFError(f"--force: {path} is an iif output but now also holds files iif did not write there "
                    f"({_listing(names)}) that may be yours; nothing was replaced{keep}. Move them out or choose "
                    "another --out.")


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
        added = unlisted(path, marker)
        if added:
            raise _refuse_added(path, added, keep)
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
        added = unlisted(p, marker)  # the old output is removed whole after the swap: only what iif wrote
        if added:
            raise _refuse_added(p, added)

    def __enter__(self) -> Path:
        _recover(self.path)
        self.check()
        parent = _abs(self.path).parent
        make_folder(parent)
        clean_stale_temporaries(self.path)
        self.staging = _make_temp_folder(parent, _temp_name(self.path, "stage"))
        write_marker(self.staging, self.command, complete=False, staging=True)
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
            write_marker(staging, self.command, complete=True, files=manifest(staging),
                         **{k: marker[k] for k in ("created", "created_ns") if k in marker})
            self.check()  # the folder may have changed while we worked
            _recheck_destination(_abs(self.path), self.command, self.inputs, self.run_folders)
            _swap_into_place(staging, _abs(self.path))
        except BaseException:
            _remove_ours(staging)  # only a folder with our marker (after an exchange: our replaced output)
            raise
        return False
