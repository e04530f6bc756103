"""The drawing both generators of the offline detection benchmark share: backgrounds, clutter, glyphs, colours.

A scene is drawn on a float ``(size, size, 3)`` canvas in [0, 1]: :func:`_background` (gradient, smooth
texture, stripes or flat colour with pixel noise), :func:`_clutter` (strokes, arcs, blobs and small fragments
of MNIST strokes that are not objects), then each object: a 28x28 source image cut to its tight crop and
resized (:func:`_glyph`), coloured against the mean background under it (:func:`_contrasting_colour`, at
least 0.35 apart in luminance, :func:`_luminance`). :func:`_png_bytes` stores the uint8 result. Where objects
go and which are annotated is each generator's own (:mod:`iif.detection.synthetic` for version 1,
:mod:`iif.detection.scenes_v2` for version 2); the functions here are moved unchanged from version 1
(issue 16), so both keep writing byte-identical images for the same seed and options.
"""

from __future__ import annotations

import functools
import io

import numpy as np

from .scenes_common import _CROP_THRESHOLD, _MASK_THRESHOLD, MNIST


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _background(size: int, rng: np.random.Generator, noise: float = 1.0) -> np.ndarray:
    """A float (size, size, 3) background in [0, 1]: gradient, smooth texture, stripes or flat, plus noise."""
    from PIL import Image

    kind = int(rng.integers(4))
    yy, xx = _grid(size)
    c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    if kind == 0:  # linear gradient
        theta = rng.random() * 2 * np.pi
        t = xx * np.cos(theta) + yy * np.sin(theta)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        img = c0 + (c1 - c0) * t[..., None]
    elif kind == 1:  # smooth random texture between two colours: a coarse random grid upsampled
        cells = int(rng.integers(3, 9))
        coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
        t = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
        img = c0 + (c1 - c0) * t[..., None]
    elif kind == 2:  # stripes / waves between two colours
        theta = rng.random() * np.pi
        freq = rng.uniform(2, 12)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.random() * 6.3)
        img = c0 + (c1 - c0) * t[..., None]
    else:  # flat colour with pixel noise (noise is kept to this kind and some scenes: noisy PNGs are large)
        sigma = np.float32(rng.uniform(0.02, 0.08) * noise)
        img = c0 + sigma * rng.standard_normal((size, size, 3), dtype=np.float32)
    return np.clip(img, 0.0, 1.0)


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(max(size - 1, 1))
    return yy, xx


def _glyph(src: np.ndarray, long_side: int, flip: bool, fill: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Resize a 28x28 source image's object to ``long_side``: ``(intensity in [0,1], mask)``.

    The mask is the resized pixels above the threshold; ``fill`` (garments, whose dark inner parts are
    still the garment) also fills its holes, while a digit keeps its holes (a filled 0 is not a 0).
    """
    from PIL import Image
    from scipy.ndimage import binary_fill_holes

    rows = np.flatnonzero((src > _CROP_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((src > _CROP_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return None
    crop = src[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    if flip:
        crop = crop[:, ::-1]
    h, w = crop.shape
    s = long_side / max(h, w)
    nh, nw = max(2, int(round(h * s))), max(2, int(round(w * s)))
    big = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((nw, nh), Image.BILINEAR))
    mask = big > _MASK_THRESHOLD
    if fill:
        mask = binary_fill_holes(mask)
    if mask.sum() < 12:
        return None
    return big.astype(np.float64) / 255.0, mask


def _contrasting_colour(bg_lum: float, rng: np.random.Generator) -> np.ndarray:
    for _ in range(20):
        c = rng.random(3)
        if abs(float(_luminance(c)) - bg_lum) >= 0.35:
            return c
    return np.ones(3) if bg_lum < 0.5 else np.zeros(3)


def _clutter(img: np.ndarray, size: int, pool_images: dict[str, np.ndarray], rng: np.random.Generator,
             amount: float = 1.0) -> np.ndarray:
    """Draw 0-6 (x ``amount``) distractors that are not objects: strokes, arcs, blobs, digit-stroke fragments."""
    from PIL import Image, ImageDraw

    n = int(round(int(rng.integers(0, 7)) * amount))
    if n == 0:
        return img
    canvas = Image.fromarray((img * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    small = max(4, size // 10)
    for _ in range(n):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(4))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        if kind == 0:  # a short poly-line stroke
            pts = [(x0, y0)]
            for _ in range(int(rng.integers(1, 4))):
                x0 += int(rng.integers(-small, small + 1))
                y0 += int(rng.integers(-small, small + 1))
                pts.append((x0, y0))
            draw.line(pts, fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:  # an arc
            r = int(rng.integers(small // 2, small + 1))
            start = int(rng.integers(0, 360))
            draw.arc((x0 - r, y0 - r, x0 + r, y0 + r), start, start + int(rng.integers(60, 200)), fill=colour,
                     width=int(rng.integers(1, 3)))
        elif kind == 2:  # a blob
            rx, ry = (int(v) for v in rng.integers(1, max(2, small // 2) + 1, 2))
            draw.ellipse((x0 - rx, y0 - ry, x0 + rx, y0 + ry), fill=colour)
        else:  # a fragment of a digit's stroke (a corner of an MNIST image), smaller than any object
            src = pool_images[MNIST][int(rng.integers(len(pool_images[MNIST])))]
            oy, ox = (int(v) for v in rng.integers(4, 14, 2))
            frag = src[oy: oy + 10, ox: ox + 10]
            side = int(rng.integers(max(3, size // 16), max(4, size // 10) + 1))
            frag = np.asarray(Image.fromarray(np.ascontiguousarray(frag)).resize((side, side), Image.BILINEAR))
            alpha = Image.fromarray(np.where(frag > _MASK_THRESHOLD, 255, 0).astype(np.uint8))
            canvas.paste(Image.new("RGB", (side, side), colour), (x0 - side // 2, y0 - side // 2), alpha)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # noisy pixels: level 6 is 3x slower, ~same size
    return buf.getvalue()
