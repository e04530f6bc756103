"""ImageFolder trees: the one walk of a user folder (:func:`walk_image_files`) and :func:`read_folder`."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import IIFError
from .common import IMG_EXTENSIONS, SPLIT_NAMES, Counts, PathLike, _warn_empty


def train_split_of(root: PathLike) -> Path | None:
    """``root/train`` when ``root`` is a dataset split into ``train/`` (``val/``, ``test/``) trees, else None.

    The rule of ``iif train folder``: a root holding a ``train`` folder is a split root, and its classes
    are the class folders of ``train/``.
    """
    train = Path(root) / SPLIT_NAMES[0]
    return train if train.is_dir() else None


class FolderWalk(NamedTuple):
    """What :func:`walk_image_files` found under one folder."""

    #: image files (regular files, each real file once), in torchvision ``make_dataset``'s order
    files: list[str]
    #: ``(path, kind)`` of entries named like images that are FIFOs, sockets or devices (never opened)
    special: list[tuple[str, str]]


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def walk_image_files(top: PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> FolderWalk:
    """Image files under ``top`` (recursively, following symlinks), each real directory and file once.

    The walk of every user folder (``iif stats``, ``iif train folder``, ``iif predict DIR``): ``os.scandir``
    plus one ``stat`` per image-named entry, no file opened. A directory is entered once per real identity
    ``(st_dev, st_ino)``, and ``top`` and its ancestors count as entered, so a link to itself, to a parent or to
    ``/`` ends the walk instead of repeating it (``os.walk(followlinks=True)``, as torchvision's ImageFolder
    walks, grows without end on two self-links). A file reached twice (through links, or a hard link) is listed
    once, under the path met first (directories are walked in name order). Names match ``extensions``
    case-insensitively. FIFOs, sockets and devices with such names go to ``special`` (opening a FIFO would
    block); a dangling link with such a name is listed, so the image check names it. Unreadable sub-folders
    are skipped, as ``os.walk`` does. ``files`` is sorted by (folder, name), torchvision's order, so a tree
    without links gives exactly the samples and splits ``ImageFolder`` would.
    """
    exts = tuple(e.lower() for e in extensions)
    top = os.fspath(top)
    seen_dirs: set[tuple[int, int]] = set()
    real = os.path.realpath(top)
    while True:  # top and every ancestor: entering one of them again would only loop
        try:
            st = os.stat(real)
            seen_dirs.add((st.st_dev, st.st_ino))
        except OSError:
            pass
        parent = os.path.dirname(real)
        if parent == real:
            break
        real = parent
    seen_files: set[tuple[int, int]] = set()
    found: list[tuple[str, str]] = []
    special: list[tuple[str, str]] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            is_image = e.name.lower().endswith(exts)
            try:
                if not is_image and not e.is_dir():  # other files: no stat needed
                    continue
                st = e.stat()  # follows links
            except OSError:  # a dangling link (or a file gone meanwhile)
                if is_image:
                    found.append((folder, e.name))
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if key not in seen_dirs:
                    seen_dirs.add(key)
                    subdirs.append(e.path)
            elif not is_image:
                continue
            elif not stat.S_ISREG(st.st_mode):
                special.append((e.path, _special_kind(st.st_mode)))
            elif key not in seen_files:
                seen_files.add(key)
                found.append((folder, e.name))
        stack.extend(reversed(subdirs))  # depth first, in name order
    found.sort()
    return FolderWalk([os.path.join(d, n) for d, n in found], special)


def special_files_message(special: Sequence[tuple[str, str]], where: str) -> str | None:
    """The one warning for the ``special`` entries of one or more walks (None when there are none)."""
    if not special:
        return None
    path, kind = special[0]
    return (f"{where}: skipped {len(special)} file(s) named like images that are not regular files (FIFOs, "
            f"sockets or devices), e.g. {path} ({kind}); remove them or replace them with the image files")


def read_folder(root: PathLike, extensions: Sequence[str] = IMG_EXTENSIONS) -> Counts:
    """Counts of an ImageFolder tree ``root/<class>/**/<image>``; classes sorted by name.

    Files count when their extension (case-insensitive) is one of ``extensions`` (torchvision's
    ``IMG_EXTENSIONS`` by default), searched recursively through links as torchvision's ``ImageFolder`` does,
    but each real folder and file once per class (:func:`walk_image_files`); FIFOs, sockets and devices
    named like images are skipped with one warning.
    Classes without images are kept with count 0 and reported with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise IIFError(f"{root}: not a directory; from_folder expects one sub-directory per class.")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise IIFError(f"{root}: no class sub-directories; lay the images out as {root}/<class_name>/<image>.jpg.")
    counts = np.zeros(len(classes), dtype=np.int64)
    special: list[tuple[str, str]] = []
    for i, name in enumerate(classes):
        walk = walk_image_files(root / name, extensions)
        counts[i] = len(walk.files)
        special += walk.special
    message = special_files_message(special, str(root))
    if message:
        warnings.warn(message, stacklevel=3)
    out = Counts.of_classes(counts, classes)
    _warn_empty(out, str(root))
    return out


# ----------------------------------------------------------------------------------------------- COCO / LVIS
