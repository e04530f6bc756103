"""Open and decode every image file of a dataset once before training, reporting all bad files at once.

A corrupt, truncated, empty or non-image file in an ImageFolder tree or a list dataset would otherwise stop a
run mid-epoch (hours in) with a PIL traceback. :func:`verify_images` decodes each file (JPEGs at 1/8 scale
with PIL's draft mode, which still reads the whole entropy-coded stream, so truncation is caught) and raises
one :class:`~iif.errors.IIFError` naming the first few bad files, their count and where the full list was
written.

Files that passed are remembered in a cache keyed by absolute path, size and modification time
(nanoseconds), one JSON file per dataset folder under ``$IIF_CACHE_DIR`` (default
``$XDG_CACHE_HOME/iif`` or ``~/.cache/iif``), sub-folder ``image-check``. A warm check is one ``os.stat``
per file: a 100k-image list takes well under a second to a few seconds (``benchmarks/bench_image_check.py``).
A changed file (size or mtime) is decoded again; bad files are never cached, so they are reported every
run until fixed. Training skips the check with ``data.verify_images: false``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import IIFError
from ..outputs import atomic_write_text

__all__ = ["verify_images", "verify_split_images", "image_cache_dir", "check_image", "ImageCheck"]

log = logging.getLogger(__name__)
_CACHE_VERSION = 1


@dataclass
class ImageCheck:
    """What :func:`verify_images` did: files in all, decoded now, skipped as cached, seconds, cache file."""

    files: int
    decoded: int
    cached: int
    seconds: float
    cache_file: str | None


def image_cache_dir() -> Path:
    """``$IIF_CACHE_DIR`` or ``$XDG_CACHE_HOME/iif`` or ``~/.cache/iif``, plus ``image-check``."""
    base = os.environ.get("IIF_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "iif")
    return Path(base) / "image-check"


def check_image(path: str) -> str | None:
    """None if ``path`` decodes as an image, else a short reason (empty, not a regular file, not an image,
    truncated, corrupt). Only regular files are opened: opening a FIFO named ``x.png`` would wait for a
    writer forever."""
    from PIL import Image, UnidentifiedImageError

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device or other special file")
            return f"not a regular file ({kind})"
        if st.st_size == 0:
            return "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, EXIF warnings: not errors
            with Image.open(path) as img:
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
        return None
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except Image.DecompressionBombError:
        return "image too large (PIL decompression-bomb limit)"
    except FileNotFoundError:
        return "missing"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return "truncated" if "truncated" in text.lower() else f"corrupt ({text})"


def _cache_file(folder: str, cache_dir: Path) -> Path:
    return cache_dir / (hashlib.sha256(folder.encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".json")


def _load_cache(path: Path, folder: str) -> dict[str, list]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _CACHE_VERSION or data.get("folder") != folder:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _write_atomic(path: Path, text: str) -> bool:
    """Best effort: a cache that cannot be written only costs time on the next run."""
    try:
        atomic_write_text(path, text, mkdir=True)
        return True
    except (OSError, IIFError) as exc:
        log.debug("image-check cache %s not written: %s", path, exc)
        return False


def verify_images(paths: Iterable[str], *, cache: bool = True, cache_dir: str | os.PathLike | None = None,
                  workers: int | None = None, show: int = 5, what: str = "dataset") -> ImageCheck:
    """Decode every file in ``paths`` once; raise one IIFError listing every bad one.

    Args:
        paths: image files (duplicates are checked once).
        cache: remember files that passed (by absolute path, size, mtime) and skip them next time.
        cache_dir: where the cache lives (default :func:`image_cache_dir`).
        workers: threads used to decode (default ``min(8, cpu count)``; PIL releases the GIL while decoding).
        show: bad files named in the message; the full list goes to ``<cache>/<key>.bad.txt``.
        what: how the message names the dataset.
    """
    t0 = time.perf_counter()
    files = sorted({os.path.abspath(str(p)) for p in paths})
    if not files:
        return ImageCheck(0, 0, 0, 0.0, None)
    # Sorted strings: every path lies between the first and the last, so those two share the common folder.
    folder = os.path.commonpath([files[0], files[-1]]) if len(files) > 1 else os.path.dirname(files[0])
    cdir = Path(cache_dir) if cache_dir is not None else image_cache_dir()
    cfile = _cache_file(folder, cdir) if cache else None
    known = _load_cache(cfile, folder) if cfile is not None else {}
    cut = len(folder.rstrip(os.sep)) + 1  # every file is under ``folder``: its relative path is a slice
    keys = {}
    todo = []
    os_stat = os.stat
    for f in files:
        try:
            st = os_stat(f)
            key = (st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        keys[f] = key
        if key is None or known.get(f[cut:]) != list(key):
            todo.append(f)
    n_workers = workers or min(8, os.cpu_count() or 1)
    if len(todo) > 32 and n_workers > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            reasons = list(pool.map(check_image, todo, chunksize=64))
    else:
        reasons = [check_image(f) for f in todo]
    bad = [(f, r) for f, r in zip(todo, reasons) if r is not None]
    written = None
    if cfile is not None and todo:
        bad_set = {f for f, _ in bad}
        good = {f[cut:]: list(keys[f]) for f in files if f not in bad_set and keys[f] is not None}
        if _write_atomic(cfile, json.dumps({"version": _CACHE_VERSION, "folder": folder, "files": good},
                                           separators=(",", ":"))):
            written = str(cfile)
    if bad:
        listing = None
        target = (cfile or _cache_file(folder, cdir)).with_suffix(".bad.txt")
        if _write_atomic(target, "".join(f"{f}\t{r}\n" for f, r in bad)):
            listing = str(target)
        shown = "; ".join(f"{f}: {r}" for f, r in bad[:show])
        more = f" (and {len(bad) - show} more)" if len(bad) > show else ""
        where = f"; the full list is in {listing}" if listing else ""
        raise IIFError(f"{what}: {len(bad)} of {len(files)} image file(s) cannot be read: {shown}{more}{where}. "
                       "Replace or remove them (and their list-file lines), or set data.verify_images=false to "
                       "skip this check.")
    return ImageCheck(len(files), len(todo), len(files) - len(todo), time.perf_counter() - t0,
                      written or (str(cfile) if cfile is not None else None))


def verify_split_images(splits, *, cache: bool = True, cache_dir: str | os.PathLike | None = None) -> ImageCheck | None:
    """:func:`verify_images` over the file-backed train/val/test datasets of ``splits`` (None if none is)."""
    from .lists import FileListDataset

    paths: list[str] = []
    for name in ("train", "val", "test"):
        ds = getattr(splits, name, None)
        if isinstance(ds, FileListDataset):
            paths.extend(p for p, _ in ds.samples)
    if not paths:
        return None
    check = verify_images(paths, cache=cache, cache_dir=cache_dir, what=f"dataset {getattr(splits, 'name', '')!s}".strip())
    log.info("checked %d image files (%d decoded, %d unchanged since the last check) in %.2fs",
             check.files, check.decoded, check.cached, check.seconds)
    return check
