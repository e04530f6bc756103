"""What :func:`iif.detection.data.validate_annotations` is built from: problem lines, JSON type tests, id
arrays, image files on disk and their headers, and compressed-RLE decoding (pycocotools' format).

Moved out of :mod:`iif.detection.data` (issue 16); ``image_paths`` and ``rle_string_counts_ok`` are re-exported
there and stay public under that path.
"""

from __future__ import annotations

import math
import os
from operator import itemgetter
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import IIFError

PathLike = str | os.PathLike

# A polygon point may lie up to this far outside the image (fraction of the image side, at least 1 px) before
# the mask counts as not fitting it: polygons touch the border at x = width, annotation tools leave vertices a
# pixel or two past it, and pycocotools clips them when rasterising. A mask drawn for another image size
# (the error this check is for) misses by far more.
POLYGON_SLACK = 0.02
_SHOW = 5  # ids named per problem


# -------------------------------------------------------------------------------------------- messages


def _ids_text(ids: Sequence[Any], what: str = "ids") -> str:
    """``"ids 3, 7, 9 and 12 more (15 in all)"`` for a problem line."""
    ids = list(ids)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in ids[:_SHOW])
    more = f" and {len(ids) - _SHOW} more ({len(ids)} in all)" if len(ids) > _SHOW else ""
    return f"{what} {shown}{more}"


class _Problems:
    """Collects problem lines; :meth:`raise_if_any` joins them into one IIFError message."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, ids: Sequence[Any], what: str, fix: str, *, label: str = "ids") -> None:
        if len(ids):
            self.lines.append(f"{len(ids)} {what} ({_ids_text(ids, label)}): {fix}")

    def raise_if_any(self) -> None:
        if self.lines:
            n = len(self.lines)
            raise IIFError(f"{self.source}: {n} kind{'s' if n > 1 else ''} of problem{'s' if n > 1 else ''} found "
                           "before training: " + " | ".join(self.lines))


# ------------------------------------------------------------------------------------------ validation


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int of hundreds of digits (JSON allows it): no float holds it
        return False


def _is_size(v: Any) -> bool:
    """A positive whole number of pixels (``640`` or ``640.0``, as some converters write)."""
    return _is_num(v) and v > 0 and float(v).is_integer()


def _field(items: list[dict], key: str) -> list[Any]:
    """``item.get(key)`` for every item in one C-level pass when every item has it."""
    try:
        return list(map(itemgetter(key), items))
    except KeyError:
        return [item.get(key) for item in items]


def _int_ids(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 array with -1 where a value is not an int, mask of those bad values)."""
    if not values:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False), np.zeros(len(values), dtype=bool)
    bad = np.array([not _is_int(v) for v in values], dtype=bool)
    out = np.array([int(v) if ok else -1 for v, ok in zip(values, ~bad)], dtype=np.int64)
    return out, bad


def _duplicates(ids: np.ndarray) -> list[int]:
    s = np.sort(ids)
    return np.unique(s[1:][s[1:] == s[:-1]]).tolist()


def image_paths(images: Sequence[Mapping[str, Any]], image_root: PathLike) -> list[str | None]:
    """The file of each json image under ``image_root`` (None where the image names no file).

    ``file_name`` when present (COCO), else the last two parts of ``coco_url`` (LVIS v1:
    ``image_root/train2017/000000391895.jpg``), or just its file name when ``image_root`` has no folder of
    that name. Only the url's folders are checked (one ``isdir`` per distinct folder), not the files.
    """
    root = os.fspath(image_root)
    is_dir: dict[str, bool] = {}
    out: list[str | None] = []
    for im in images:
        name = im.get("file_name") if isinstance(im, Mapping) else None
        if isinstance(name, str) and name:
            out.append(os.path.join(root, name))
            continue
        url = im.get("coco_url") if isinstance(im, Mapping) else None
        if not isinstance(url, str) or not url.strip("/"):
            out.append(None)
            continue
        parts = url.rstrip("/").rsplit("/", 2)
        base = parts[-1]
        folder = parts[-2] if len(parts) >= 2 and "://" not in parts[-2] and parts[-2] else ""
        if folder:
            if folder not in is_dir:
                is_dir[folder] = os.path.isdir(os.path.join(root, folder))
            if is_dir[folder]:
                out.append(os.path.join(root, folder, base))
                continue
        out.append(os.path.join(root, base))
    return out


def _decode_rle_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run lengths of compressed RLE ``counts`` strings (pycocotools' format), all strings in one
    vectorised pass: ``(counts, string index of each count, ok)``; ``ok[i]`` is False where string ``i`` is
    empty, not ASCII, holds characters outside the format, ends inside a number or has a number over 35 bits.

    The format (pycocotools ``maskApi.c`` ``rleFrString``): each run length is written in 5-bit groups, least
    significant first, as the characters ``chr(48 + g)``; bit 0x20 of a group says another group follows, bit
    0x10 of the last group is the sign; from the fourth run on, the value is the difference to the run two
    before. pycocotools decodes any string without complaint, and a string that is not an encoding of a mask
    of this size gives a garbage mask (or writes past the mask), so this checks what it cannot.
    """
    n = len(strings)
    ok = np.ones(n, dtype=bool)
    clean = list(strings)
    for i, t in enumerate(clean):
        if not t or not t.isascii():
            ok[i] = False
            clean[i] = ""
    lengths = np.fromiter(map(len, clean), dtype=np.int64, count=n)
    total_chars = int(lengths.sum())
    if not total_chars:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), ok
    c = np.frombuffer("".join(clean).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    seg = np.repeat(np.arange(n), lengths)
    bad = (c < 0) | (c > 63)
    ok[np.unique(seg[bad])] = False
    c[bad] = 0
    last = np.cumsum(lengths)[lengths > 0] - 1
    more = (c & 0x20) != 0
    ok[seg[last][more[last]]] = False  # the last group of a string says another follows: truncated
    end = ~more
    end[last] = True
    start = np.empty_like(end)
    start[0] = True
    start[1:] = end[:-1]
    start_pos = np.flatnonzero(start)
    group = np.cumsum(start) - 1
    k = np.arange(total_chars) - start_pos[group]
    ok[np.unique(seg[k > 6])] = False  # > 35 bits: no run of an image mask is that long
    k = np.minimum(k, 6)
    x = np.add.reduceat((c & 0x1F) << (5 * k), start_pos)
    end_pos = np.flatnonzero(end)
    negative = (c[end_pos] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * (k[end_pos][negative] + 1))
    g_str = seg[start_pos]
    first = np.searchsorted(g_str, np.arange(n))
    m = np.arange(len(start_pos)) - first[g_str]
    # counts[m] = x[m] + counts[m - 2] for m > 2: a running sum along three chains per string (m = 0; odd m;
    # even m >= 2).
    chain = g_str * 3 + np.where(m == 0, 0, np.where(m % 2 == 1, 1, 2))
    order = np.lexsort((m, chain))
    xs = x[order]
    cs = np.cumsum(xs)
    ch = chain[order]
    chain_start = np.ones(len(ch), dtype=bool)
    chain_start[1:] = ch[1:] != ch[:-1]
    base = (cs - xs)[chain_start][np.cumsum(chain_start) - 1]
    counts = np.empty_like(x)
    counts[order] = cs - base
    return counts, g_str, ok


def rle_string_counts_ok(strings: Sequence[str], sizes: Sequence[int]) -> np.ndarray:
    """For each compressed RLE ``counts`` string, whether it decodes (:func:`_decode_rle_strings`) to run
    lengths that are all >= 0 and sum to ``sizes[i]`` (the mask's height * width)."""
    n = len(strings)
    counts, g_str, ok = _decode_rle_strings(strings)
    ok[np.unique(g_str[counts < 0])] = False
    totals = np.bincount(g_str, weights=counts.astype(np.float64), minlength=n)
    ok &= totals == np.asarray(sizes, dtype=np.float64).reshape(n)
    return ok


def _rle_list_counts_ok(counts: list, size: int) -> bool:
    """An uncompressed RLE ``counts`` list: whole numbers >= 0 summing to ``size`` (height * width)."""
    if not all(_is_int(v) and v >= 0 for v in counts):
        return False
    return sum(counts) == size


def _image_header_sizes(paths: Sequence[str]) -> list[tuple[int, int] | str]:
    """``(width, height)`` of each image file from its header (nothing is decoded), or a problem word:
    ``"unreadable"`` or ``"bomb"`` (more pixels than PIL's ``Image.MAX_IMAGE_PIXELS``, its decompression-bomb
    limit). PNG headers are read directly (24 bytes); other formats through ``PIL.Image.open``."""
    import struct
    import warnings

    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    out: list[tuple[int, int] | str] = []
    for path in paths:
        size: tuple[int, int] | str | None = None
        try:
            with open(path, "rb") as f:
                head = f.read(24)
                if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                    size = struct.unpack(">II", head[16:24])
                else:
                    f.seek(0)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        with Image.open(f) as im:
                            size = im.size
        except Image.DecompressionBombError:
            size = "bomb"
        except (OSError, ValueError, SyntaxError, struct.error, EOFError):
            size = "unreadable"
        if isinstance(size, tuple) and (min(size) < 1 or (limit and size[0] * size[1] > limit)):
            size = "bomb" if min(size) >= 1 else "unreadable"
        out.append(size if size is not None else "unreadable")
    return out


def _missing_files(paths: Sequence[str]) -> np.ndarray:
    """Mask of the ``paths`` that are not files: one ``os.scandir`` per folder, then set look-ups."""
    by_dir: dict[str, set[str]] = {}
    missing = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        d, base = os.path.split(p)
        names = by_dir.get(d)
        if names is None:
            try:
                with os.scandir(d or ".") as it:
                    names = {e.name for e in it if e.is_file()}
            except OSError:
                names = set()
            by_dir[d] = names
        if base not in names:
            missing[i] = True
    return missing
