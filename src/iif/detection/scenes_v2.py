"""Generator version 2 of the offline detection benchmark: object-like background, federated labels, three splits.

Version 1 (:mod:`iif.detection.synthetic`) has almost no background confusion (its clutter is strokes and
blobs no detector takes for an object), lists every absent category as verified negative and annotates every
instance, so neither LVIS rule acts, and it has two splits. Version 2 keeps v1's drawing (backgrounds,
clutter, glyph cut-out, colouring: :mod:`iif.detection.scenes_draw`, shared with v1 as are the sources, counts,
category assignment, json and split checks of :mod:`iif.detection.scenes_common`) and changes four things:

* **Object-like background.** Four source classes are held out of the vocabulary (Fashion-MNIST ``pullover``
  and ``coat``, digits 6 and 9: :data:`HELD_OUT`). Each scene gets on average ``distractors`` (default 1.5,
  at most 3) of them, drawn exactly like objects (same sizes, colours, occlusion) and never annotated: a
  proposal on a coat carries real garment evidence (it looks like the rare ``shirt``), one on a 9 looks like
  a 4 or a 7. Objects may also be cut by the image border (``_BORDER_P`` of them, >= half of the glyph inside,
  annotated with their visible part, as LVIS annotates truncated objects) and overlap more than in v1 (every
  object and distractor keeps >= 40% of its pixels visible, v1: 50%), so many background proposals overlap
  part of an object.
* **LVIS-style federated labels.** Per image, only a random ``neg_fraction`` (default 0.5) of the categories
  absent from the scene are listed in ``neg_category_ids``; a detection of an unlisted absent category is
  ignored by the LVIS evaluation. When a category has >= 2 instances in an image, with probability
  ``_NOT_EXHAUSTIVE_P`` the category goes into the image's ``not_exhaustive_category_ids`` and 1..n-1 of its
  instances (never the first) are drawn but left unannotated; unmatched detections of it there are ignored.
* **A vocabulary of 16 categories with a steeper tail** (:data:`CATEGORIES`): 6 frequent, 5 common and 5 rare
  with 1, 2, 3, 6 and 10 train images. Frequent and common counts scale with ``num_train`` as in v1; rare
  counts do not. Look-alikes sit in different groups (rare ``shirt`` / frequent ``tshirt_top``, rare
  ``sandal`` / common ``ankle_boot`` / frequent ``sneaker``, rare digits 4, 5, 8 / frequent 1, 7, 0).
* **Three splits.** ``train`` (long-tailed, from the sources' train splits), ``val`` (for choosing τ, γ and
  variants) and ``test`` (reported). Val and test are balanced (every category in ``max(10, round(0.15 *
  n))`` of their images) and both come from the sources' TEST splits, partitioned per class into disjoint
  parts (in proportion ``num_val : num_test``), so no source image's pixels are in two splits (fragments of
  the v1 clutter included). Each annotation records its source (``"source": [dataset, split, index]``).

The unannotated objects (distractors and the instances left out of not-exhaustive categories) are listed
with their masks in ``unannotated/<split>.json`` (for analysis and tests; not a training input). The
categories of every split carry the *train* counts, as LVIS's val does. ``BENCHMARK.json`` records
``generator_version: 2``, the options, the split sizes, and per split the images and instances of each
frequency group, so AP_r's precision can be judged before training.

Determinism: the same seed and options give byte-identical files (same numpy, Pillow, pycocotools).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import IIFError
from .scenes_common import (_EXTRA_INSTANCE_P, _MASK_THRESHOLD, _MAX_CATEGORIES_PER_IMAGE, _MAX_OBJECTS_PER_IMAGE,
                            _MIN_SOURCE_PIXELS, _NOISY_SCENES, BENCHMARK_FORMAT, FASHION, MNIST, _assign_categories,
                            _Category, _category_rows, _category_summaries, _check_scene_options, _check_seed_and_size,
                            _check_sources, _designed_train_counts, _dump, _feasible, _fmt, _load_sources, _read_splits,
                            _rle, _summary_count_problems, _train_count_problems)
from .scenes_draw import _background, _clutter, _contrasting_colour, _glyph, _luminance, _png_bytes

__all__ = ["GENERATOR_VERSION", "DEFAULTS", "CATEGORIES", "HELD_OUT", "SPLITS", "generate", "make_benchmark",
           "validate_benchmark", "minimum_num_train"]

GENERATOR_VERSION = 2
SPLITS = ("train", "val", "test")
#: Default options of version 2 (``iif det-data --generator 2``).
DEFAULTS = {"image_size": 128, "num_train": 2000, "num_val": 500, "num_test": 1000, "neg_fraction": 0.5,
            "clutter": 1.0, "distractors": 1.5, "object_size": (0.125, 0.375)}

_EVAL_IMAGES_PER_CATEGORY = 0.15  # x num_val / num_test
_MIN_EVAL_IMAGES_PER_CATEGORY = 10
_MAX_DISTRACTORS = 3
_MIN_VISIBLE = 0.4  # every object and distractor keeps at least this fraction of its glyph's pixels visible
_BORDER_P = 0.15  # fraction of objects and distractors placed across the image border
_CUT_KEEP = 0.5  # ... keeping at least this fraction of the glyph inside the image
_NOT_EXHAUSTIVE_P = 0.4  # P(an occurrence with >= 2 instances is marked not exhaustive, some instances left out)
_SPLIT_CODES = {"train": 10, "val": 11, "test": 12}  # rng stream ids (v1 uses 0 and 1)
_FIRST_IMAGE_ID = {"train": 1, "val": 1_000_001, "test": 2_000_001}
_FIRST_ANN_ID = {"train": 1, "val": 10_000_001, "test": 20_000_001}

#: The 16 categories: (id, name, source dataset, source label, designed group, train images at 2000).
CATEGORIES: tuple[_Category, ...] = tuple(_Category(*row) for row in (
    (1, "tshirt_top", FASHION, 0, "f", 300),
    (2, "trouser", FASHION, 1, "f", 700),
    (3, "dress", FASHION, 3, "c", 20),
    (4, "sandal", FASHION, 5, "r", 3),
    (5, "shirt", FASHION, 6, "r", 10),
    (6, "sneaker", FASHION, 7, "f", 520),
    (7, "bag", FASHION, 8, "c", 80),
    (8, "ankle_boot", FASHION, 9, "c", 40),
    (9, "digit_0", MNIST, 0, "f", 400),
    (10, "digit_1", MNIST, 1, "f", 900),
    (11, "digit_2", MNIST, 2, "c", 60),
    (12, "digit_3", MNIST, 3, "c", 15),
    (13, "digit_4", MNIST, 4, "r", 6),
    (14, "digit_5", MNIST, 5, "r", 2),
    (15, "digit_7", MNIST, 7, "f", 230),
    (16, "digit_8", MNIST, 8, "r", 1),
))
#: Source classes drawn as unannotated object-like distractors: (name, dataset, label).
HELD_OUT: tuple[tuple[str, str, int], ...] = (("pullover", FASHION, 2), ("coat", FASHION, 4),
                                               ("digit_6", MNIST, 6), ("digit_9", MNIST, 9))

# roles of a drawn item
_ANNOTATED, _LEFT_OUT, _DISTRACTOR = 0, 1, 2


# ----------------------------------------------------------------------------------------------- counts


def _train_image_counts(num_train: int) -> np.ndarray:
    """Designed train image count per category (order of :data:`CATEGORIES`): v1's rule on v2's categories."""
    return _designed_train_counts(num_train, CATEGORIES)


def _eval_images_per_category(num_images: int) -> int:
    return max(_MIN_EVAL_IMAGES_PER_CATEGORY, int(round(_EVAL_IMAGES_PER_CATEGORY * num_images)))


@functools.lru_cache(maxsize=1)
def minimum_num_train() -> int:
    """Smallest ``num_train`` whose designed counts keep 6 frequent, 5 common and 5 rare categories."""
    n = 1
    while not _feasible(_train_image_counts(n), n):
        n += 1
    return n


def minimum_num_eval() -> int:
    """Smallest val/test size: every category in >= 10 images, at most 4 categories per image."""
    return -(-_MIN_EVAL_IMAGES_PER_CATEGORY * len(CATEGORIES) // _MAX_CATEGORIES_PER_IMAGE)


# ----------------------------------------------------------------------------------------------- sources


def _partition_test_sources(sources: dict, seed: int, num_val: int, num_test: int) -> dict[str, dict]:
    """Disjoint parts of the sources' test splits: ``{"val": {(dataset, label): indices}, "test": {...}}``.

    Per class, the usable images (v1's rule: >= 30 pixels above the mask threshold) in a seeded order, the
    first ``num_val / (num_val + num_test)`` of them (at least one, leaving one) for val, the rest for test.
    """
    rng = np.random.default_rng([int(seed), 13])
    parts: dict[str, dict] = {"val": {}, "test": {}}
    for dataset in (FASHION, MNIST):
        imgs, labels = sources[dataset][2:4]
        usable = (imgs > _MASK_THRESHOLD).sum(axis=(1, 2)) >= _MIN_SOURCE_PIXELS
        for label in range(10):
            idx = rng.permutation(np.flatnonzero((np.asarray(labels) == label) & usable))
            if idx.size < 2:
                raise IIFError(f"{dataset} test split has fewer than 2 usable images of class {label}; check the "
                               "source files (re-download them).")
            k = min(idx.size - 1, max(1, int(round(idx.size * num_val / (num_val + num_test)))))
            parts["val"][(dataset, label)] = np.sort(idx[:k])
            parts["test"][(dataset, label)] = np.sort(idx[k:])
    return parts


class _Pool:
    """Source images of one split (a set of allowed indices per class), handed out in a seeded order, each once
    until a class is exhausted (then a new round in a new order)."""

    def __init__(self, sources: dict, split: str, allowed: dict | None, rng: np.random.Generator) -> None:
        self.split_name = "train" if split == "train" else "test"
        self.rng = rng
        self.images: dict[str, np.ndarray] = {}
        self.order: dict[tuple[str, int], np.ndarray] = {}
        self.next: dict[tuple[str, int], int] = {}
        for dataset in (FASHION, MNIST):
            imgs, labels = sources[dataset][0:2] if split == "train" else sources[dataset][2:4]
            self.images[dataset] = imgs
            usable = (imgs > _MASK_THRESHOLD).sum(axis=(1, 2)) >= _MIN_SOURCE_PIXELS
            for label in range(10):
                key = (dataset, label)
                idx = np.flatnonzero((np.asarray(labels) == label) & usable) if allowed is None else allowed[key]
                if not len(idx):
                    raise IIFError(f"{dataset} {self.split_name} split has no usable image of class {label}; check "
                                   "the source files (re-download them).")
                self.order[key] = rng.permutation(idx)
                self.next[key] = 0
        # Clutter fragments are cut from MNIST images of this split's part only (no pixels shared across splits).
        if allowed is None:
            self.fragments = {MNIST: self.images[MNIST]}
        else:
            keep = np.sort(np.concatenate([allowed[(MNIST, label)] for label in range(10)]))
            self.fragments = {MNIST: self.images[MNIST][keep]}

    def take(self, dataset: str, label: int) -> int:
        key = (dataset, label)
        i = self.next[key]
        if i == len(self.order[key]):
            self.order[key] = self.rng.permutation(self.order[key])
            i = 0
        self.next[key] = i + 1
        return int(self.order[key][i])


# ----------------------------------------------------------------------------------------------- planning


def _plan_split(counts: np.ndarray, num_images: int, pool: _Pool, rng: np.random.Generator,
                distractors: float) -> list[list[tuple[int, int, str, int]]]:
    """Per image, the items to draw in paint order: ``(role, category index or held-out index, dataset,
    source index)``. Per category occurrence the first instance is annotated; extra instances (v1's 25% / 8%)
    are annotated too, except in a not-exhaustive occurrence, where 1..n-1 of them are left out."""
    plan = []
    for cats in _assign_categories(counts, num_images, rng):
        instances = {c: 1 for c in cats}
        total = len(cats)
        for c in cats:
            u = rng.random()
            for _ in range(int(u < _EXTRA_INSTANCE_P[0]) + int(u < _EXTRA_INSTANCE_P[1])):
                if total < _MAX_OBJECTS_PER_IMAGE:
                    instances[c] += 1
                    total += 1
        items: list[tuple[int, int]] = []
        for c in cats:
            n = instances[c]
            left_out = int(rng.integers(1, n)) if n >= 2 and rng.random() < _NOT_EXHAUSTIVE_P else 0
            items += [(_ANNOTATED, c)] * (n - left_out) + [(_LEFT_OUT, c)] * left_out
        n_dis = min(_MAX_DISTRACTORS, int(rng.poisson(distractors))) if distractors > 0 else 0
        items += [(_DISTRACTOR, int(rng.integers(len(HELD_OUT)))) for _ in range(n_dis)]
        items = [items[j] for j in rng.permutation(len(items))]
        out = []
        for role, k in items:
            dataset, label = ((HELD_OUT[k][1], HELD_OUT[k][2]) if role == _DISTRACTOR
                              else (CATEGORIES[k].dataset, CATEGORIES[k].label))
            out.append((role, k, dataset, pool.take(dataset, label)))
        plan.append(out)
    return plan


# ----------------------------------------------------------------------------------------------- drawing


def _window(y: int, x: int, h: int, w: int, size: int) -> tuple[slice, slice, slice, slice]:
    """``(image rows, image cols, glyph rows, glyph cols)`` of a glyph at (y, x) clipped to the image."""
    y0, x0, y1, x1 = max(0, y), max(0, x), min(size, y + h), min(size, x + w)
    return slice(y0, y1), slice(x0, x1), slice(y0 - y, y1 - y), slice(x0 - x, x1 - x)


def _place(visible: list[np.ndarray], areas: list[int], mask: np.ndarray, size: int, rng: np.random.Generator,
           cut: bool, tries: int = 40) -> tuple[int, int, bool]:
    """Top-left corner (may be negative or past the border when ``cut``) keeping every earlier item >= 40%
    visible and, when ``cut``, >= half of the new glyph inside the image; ``ok`` False if none was found."""
    h, w = mask.shape
    total = int(mask.sum())
    best, best_score = (0, 0), -1.0
    for _ in range(tries):
        y, x = int(rng.integers(0, max(1, size - h + 1))), int(rng.integers(0, max(1, size - w + 1)))
        if cut:  # push it over one of the four borders by up to half its side
            side = int(rng.integers(4))
            if side == 0:
                y = -int(rng.integers(1, h // 2 + 2))
            elif side == 1:
                y = size - h + int(rng.integers(1, h // 2 + 2))
            elif side == 2:
                x = -int(rng.integers(1, w // 2 + 2))
            else:
                x = size - w + int(rng.integers(1, w // 2 + 2))
        ys, xs, gy, gx = _window(y, x, h, w, size)
        part = mask[gy, gx]
        score = 1.0
        if cut and int(part.sum()) < _CUT_KEEP * total:
            continue
        for vis, area in zip(visible, areas):
            left = int(vis.sum()) - int((vis[ys, xs] & part).sum())
            score = min(score, left / area)
        if score >= _MIN_VISIBLE:
            return y, x, True
        if score > best_score:
            best, best_score = (y, x), score
    return best[0], best[1], False


def _render(items: list[tuple[int, int, str, int]], size: int, pool: _Pool, rng: np.random.Generator,
            clutter: float, object_size: tuple[float, float]):
    """Draw one scene: ``(uint8 image, [(role, k, dataset, source index, visible mask)], [glyph area])``.

    v1's background and clutter, then the items in paint order, each coloured against the background under
    it as v1 does. An item that finds no place keeping the earlier ones >= 40% visible is dropped, unless it
    is the first annotated instance of its category in the image (the design's image counts are exact): that
    one takes the best place found.
    """
    img = _background(size, rng, noise=clutter)
    img = _clutter(img, size, pool.fragments, rng, amount=clutter)
    lo, hi = size * object_size[0], size * object_size[1]
    visible: list[np.ndarray] = []
    areas: list[int] = []
    drawn: list[tuple[int, int, str, int]] = []
    seen: set[int] = set()
    for role, k, dataset, src_index in items:
        required = role == _ANNOTATED and k not in seen
        src = pool.images[dataset][src_index]
        long_side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        flip = dataset == FASHION and bool(rng.random() < 0.5)
        cut = bool(rng.random() < _BORDER_P)
        for attempt in range(6):
            glyph = _glyph(src, long_side, flip, fill=dataset == FASHION)
            if glyph is None:
                long_side = int(hi)
                glyph = _glyph(src, long_side, flip, fill=dataset == FASHION)
                if glyph is None:
                    raise IIFError(f"source image {src_index} of {dataset} leaves no object pixels at objects of "
                                   f"{long_side} px (image_size {size}); use a larger --image-size (128 is the "
                                   "default) or a larger object_size.")
            intensity, mask = glyph
            y, x, ok = _place(visible, areas, mask, size, rng, cut)
            if ok:
                break
            cut = False
            long_side = max(int(lo), int(long_side * 0.8))
        if not ok and not required:
            continue
        ys, xs, gy, gx = _window(y, x, *mask.shape, size)
        part = mask[gy, gx]
        region = img[ys, xs]
        bg_lum = float(_luminance(region[part].mean(axis=0)))
        colour = _contrasting_colour(bg_lum, rng)
        away = 1.0 if float(_luminance(colour)) > bg_lum else -1.0
        shade = colour + away * 0.3 * (intensity[gy, gx][..., None] - 0.5)
        region[part] = np.clip(shade, 0, 1)[part]
        full = np.zeros((size, size), dtype=bool)
        full[ys, xs] = part
        for vis in visible:
            vis &= ~full
        visible.append(full)
        areas.append(int(mask.sum()))
        drawn.append((role, k, dataset, src_index))
        if role == _ANNOTATED:
            seen.add(k)
    if rng.random() < _NOISY_SCENES * clutter:
        img = img + np.float32(rng.uniform(0.005, 0.03)) * rng.standard_normal(img.shape, dtype=np.float32)
    out = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return out, [d + (v,) for d, v in zip(drawn, visible)], areas


def _render_scene(items, size, pool, seed, code, i, clutter, object_size):
    """:func:`_render` with a seeded stream per image; redrawn with the next stream in the rare case that an
    annotated instance ended with no visible pixel (a forced placement)."""
    for attempt in range(20):
        img, drawn, areas = _render(items, size, pool, np.random.default_rng([seed, code, 1, i, attempt]),
                                    clutter, object_size)
        if all(d[4].any() for d in drawn if d[0] == _ANNOTATED):
            return img, drawn, areas
    raise RuntimeError("no layout keeps every annotated object visible; this is a bug in iif.detection.scenes_v2")


# ----------------------------------------------------------------------------------------------- json


def _category_entries(train_images: np.ndarray, train_instances: np.ndarray) -> list[dict[str, Any]]:
    return _category_rows(CATEGORIES, train_images, train_instances)


def _split_json(split: str, size: int, scenes: list, categories: list[dict], neg_fraction: float,
                rng: np.random.Generator) -> tuple[dict, dict]:
    """``(LVIS json, unannotated json)`` of one split from the drawn scenes."""
    images, annotations, hidden = [], [], []
    ann_id = _FIRST_ANN_ID[split]
    all_ids = np.array([cat.id for cat in CATEGORIES])
    src_split = "train" if split == "train" else "test"
    for i, drawn in enumerate(scenes):
        image_id = _FIRST_IMAGE_ID[split] + i
        # an unannotated item that a later forced placement covered entirely is not in the image
        drawn = [d for d in drawn if d[0] == _ANNOTATED or d[4].any()]
        shown = sorted({CATEGORIES[d[1]].id for d in drawn if d[0] != _DISTRACTOR})
        annotated = {CATEGORIES[d[1]].id for d in drawn if d[0] == _ANNOTATED}
        not_exhaustive = sorted({CATEGORIES[d[1]].id for d in drawn if d[0] == _LEFT_OUT} & annotated)
        absent = np.setdiff1d(all_ids, shown)
        keep = int(round(neg_fraction * absent.size))
        neg = np.sort(rng.permutation(absent)[:keep])
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "width": size, "height": size,
                       "neg_category_ids": neg.tolist(), "not_exhaustive_category_ids": not_exhaustive,
                       "license": 0})
        for role, k, dataset, src_index, vis in drawn:
            rle, bbox, area = _rle(vis)
            if role == _ANNOTATED:
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": CATEGORIES[k].id,
                                    "bbox": bbox, "area": area, "segmentation": rle, "iscrowd": 0,
                                    "source": [dataset, src_split, int(src_index)]})
                ann_id += 1
            else:
                name = HELD_OUT[k][0] if role == _DISTRACTOR else CATEGORIES[k].name
                hidden.append({"image_id": image_id, "kind": "distractor" if role == _DISTRACTOR else "not_exhaustive",
                               "name": name, "category_id": None if role == _DISTRACTOR else CATEGORIES[k].id,
                               "bbox": bbox, "area": area, "segmentation": rle,
                               "source": [dataset, src_split, int(src_index)]})
    ann = {
        "info": {"description": f"iif offline long-tailed instance-segmentation benchmark v2, {split} split "
                                "(Fashion-MNIST + MNIST objects; a controlled benchmark, not LVIS)",
                 "version": str(GENERATOR_VERSION)},
        "licenses": [{"id": 0, "name": "MIT (Fashion-MNIST); MNIST terms (Y. LeCun, C. Cortes, C. Burges)", "url": ""}],
        "images": images, "annotations": annotations, "categories": categories,
    }
    unannotated = {"info": {"description": f"drawn but unannotated objects of the {split} split (held-out "
                                           "distractors; instances left out of not-exhaustive categories); "
                                           "for analysis, not a training input"},
                   "unannotated": hidden}
    return ann, unannotated


# ----------------------------------------------------------------------------------------------- public


def _check_options(seed, image_size, num_train, num_val, num_test, neg_fraction, clutter, distractors,
                   object_size) -> None:
    _check_seed_and_size(seed, image_size)
    _check_scene_options(image_size, neg_fraction, clutter, object_size)
    low = minimum_num_train()
    if (not isinstance(num_train, (int, np.integer)) or isinstance(num_train, bool)
            or not low <= num_train <= 200_000 or not _feasible(_train_image_counts(int(num_train)),
                                                                    int(num_train))):
        raise IIFError(f"num_train must be a whole number in {low}..200000 for generator 2 (fewer images cannot "
                       f"hold its 6 frequent categories of > 100 images each); got {num_train!r} (default 2000).")
    low_eval = minimum_num_eval()
    for name, value, default in (("num_val", num_val, 500), ("num_test", num_test, 1000)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low_eval <= value <= 100_000:
            raise IIFError(f"{name} must be a whole number in {low_eval}..100000 for generator 2 (every category "
                           f"needs >= {_MIN_EVAL_IMAGES_PER_CATEGORY} images); got {value!r} (default {default}).")
    if (not isinstance(distractors, (int, float)) or isinstance(distractors, bool)
            or not 0.0 <= float(distractors) <= _MAX_DISTRACTORS):
        raise IIFError(f"distractors must be a mean number of held-out objects per image in 0..{_MAX_DISTRACTORS} "
                       f"(0: none); got {distractors!r} (default {DEFAULTS['distractors']}).")


def generate(seed: int = 0, *, image_size: int = 128, num_train: int = 2000, num_val: int = 500,
             num_test: int = 1000, neg_fraction: float = 0.5, clutter: float = 1.0, distractors: float = 1.5,
             object_size: tuple[float, float] = (0.125, 0.375), sources: dict | None = None,
             source_root: str | os.PathLike | None = None, download: bool = False,
             sink: Callable[[str, str, bytes], None] | None = None):
    """Build the v2 benchmark: ``({split: (json, [(file_name, png bytes)], unannotated json)}, summary)``.

    As :func:`iif.detection.synthetic.generate` (``sources`` preloaded or found; ``sink`` receives each PNG
    instead of the returned lists), with the splits ``train``, ``val`` and ``test``.
    """
    _check_options(seed, image_size, num_train, num_val, num_test, neg_fraction, clutter, distractors, object_size)
    object_size = (float(object_size[0]), float(object_size[1]))
    seed, size = int(seed), int(image_size)
    if sources is None:
        sources = _load_sources(source_root, download)
    _check_sources(sources)
    sizes = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
    counts = {"train": _train_image_counts(sizes["train"])}
    for split in ("val", "test"):
        counts[split] = np.full(len(CATEGORIES), _eval_images_per_category(sizes[split]), dtype=np.int64)
    parts = _partition_test_sources(sources, seed, sizes["val"], sizes["test"])
    rendered: dict[str, tuple[list, list]] = {}
    for split in SPLITS:
        code = _SPLIT_CODES[split]
        plan_rng = np.random.default_rng([seed, code, 0])
        pool = _Pool(sources, split, parts.get(split), plan_rng)
        plan = _plan_split(counts[split], sizes[split], pool, plan_rng, float(distractors))
        files, scenes = [], []
        for i, items in enumerate(plan):
            img, drawn, _ = _render_scene(items, size, pool, seed, code, i, float(clutter), object_size)
            name, data = f"{_FIRST_IMAGE_ID[split] + i:012d}.png", _png_bytes(img)
            if sink is None:
                files.append((name, data))
            else:
                sink(split, name, data)
            scenes.append(drawn)
        rendered[split] = (files, scenes)
    n_img = np.zeros(len(CATEGORIES), dtype=np.int64)
    n_inst = np.zeros(len(CATEGORIES), dtype=np.int64)
    for drawn in rendered["train"][1]:
        cats = [d[1] for d in drawn if d[0] == _ANNOTATED]
        np.add.at(n_inst, cats, 1)
        n_img[sorted(set(cats))] += 1
    categories = _category_entries(n_img, n_inst)
    results = {}
    for split in SPLITS:
        ann, hidden = _split_json(split, size, rendered[split][1], categories, float(neg_fraction),
                                  np.random.default_rng([seed, _SPLIT_CODES[split], 2]))
        results[split] = (ann, rendered[split][0], hidden)
    options = {"image_size": size, "num_train": sizes["train"], "num_val": sizes["val"], "num_test": sizes["test"],
               "neg_fraction": float(neg_fraction), "clutter": float(clutter), "distractors": float(distractors),
               "object_size": list(object_size)}
    return results, _summary(seed, options, results)


def _summary(seed: int, options: dict, results: dict) -> dict[str, Any]:
    cats = results["train"][0]["categories"]
    letter = {c["id"]: c["frequency"] for c in cats}
    per_cat = _category_summaries(CATEGORIES, results, SPLITS)
    splits = {}
    for split in SPLITS:
        ann, _, hidden = results[split]
        per_group = {}
        for g in "rcf":
            mine = [a for a in ann["annotations"] if letter[a["category_id"]] == g]
            per_group[g] = {"categories": sum(1 for c in cats if c["frequency"] == g),
                            "images": len({a["image_id"] for a in mine}), "instances": len(mine)}
        kinds = [h["kind"] for h in hidden["unannotated"]]
        splits[split] = {
            "images": len(ann["images"]), "instances": len(ann["annotations"]), "groups": per_group,
            "unannotated": {"distractor": kinds.count("distractor"), "not_exhaustive": kinds.count("not_exhaustive")},
            "not_exhaustive_pairs": sum(len(im["not_exhaustive_category_ids"]) for im in ann["images"]),
            "neg_pairs": sum(len(im["neg_category_ids"]) for im in ann["images"]),
            "annotations": f"annotations/{split}.json", "images_dir": f"images/{split}",
            "unannotated_file": f"unannotated/{split}.json",
            "sha256": hashlib.sha256(_dump(ann)).hexdigest(),
        }
    return {
        "format": BENCHMARK_FORMAT, "generator_version": GENERATOR_VERSION, "seed": int(seed), "options": options,
        "sources": {"train": "train split of Fashion-MNIST and MNIST",
                    "val": "test split of Fashion-MNIST and MNIST (a part disjoint from test's)",
                    "test": "test split of Fashion-MNIST and MNIST (a part disjoint from val's)"},
        "roles": {"train": "training", "val": "choosing tau, gamma and variants", "test": "reported"},
        "held_out": [{"name": n, "source": [d, label]} for n, d, label in HELD_OUT],
        "splits": splits, "groups": {g: sum(1 for c in cats if c["frequency"] == g) for g in "rcf"},
        "categories": per_cat,
        "recommended": {"hflip": False, "repeat_factor_threshold": round(100 / options["num_train"], 6)},
    }


def make_benchmark(out: str | os.PathLike, *, seed: int = 0, image_size: int = 128, num_train: int = 2000,
                   num_val: int = 500, num_test: int = 1000, neg_fraction: float = 0.5, clutter: float = 1.0,
                   distractors: float = 1.5, object_size: tuple[float, float] = (0.125, 0.375),
                   source_root: str | os.PathLike | None = None, download: bool = False, force: bool = False,
                   sources: dict | None = None) -> dict[str, Any]:
    """Write the v2 benchmark into the new folder ``out``; return its summary (``BENCHMARK.json``'s content).

    Options as :func:`iif.detection.synthetic.make_benchmark`, plus ``num_test`` (test images, reported;
    ``num_val`` images are for choosing hyper-parameters) and ``distractors`` (mean held-out objects per image,
    0-3). ``neg_fraction`` defaults to 0.5: half of each image's absent categories are verified negative.
    Written through a staging folder (``iif.outputs.OutputFolder``): ``out`` never holds half a benchmark.
    """
    from ..outputs import OutputFolder

    _check_options(seed, image_size, num_train, num_val, num_test, neg_fraction, clutter, distractors, object_size)
    folder = OutputFolder(out, command="det-data", force=force)
    if sources is None:
        sources = _load_sources(source_root, download)
    _check_sources(sources)
    with folder as staging:
        for split in SPLITS:
            (staging / "images" / split).mkdir(parents=True)

        def write_png(split: str, name: str, data: bytes) -> None:
            (staging / "images" / split / name).write_bytes(data)

        results, summary = generate(seed, image_size=image_size, num_train=num_train, num_val=num_val,
                                    num_test=num_test, neg_fraction=neg_fraction, clutter=clutter,
                                    distractors=distractors, object_size=object_size, sources=sources,
                                    sink=write_png)
        (staging / "annotations").mkdir()
        (staging / "unannotated").mkdir()
        for split in SPLITS:
            (staging / "annotations" / f"{split}.json").write_bytes(_dump(results[split][0]))
            (staging / "unannotated" / f"{split}.json").write_bytes(_dump(results[split][2]))
        (staging / "BENCHMARK.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="ascii")
    return summary


# ----------------------------------------------------------------------------------------------- validation


def validate_benchmark(root: str | os.PathLike, summary: dict) -> None:
    """Check a v2 folder (``summary`` is its parsed ``BENCHMARK.json``); raise :class:`IIFError` listing problems.

    v1's per-split checks (:func:`iif.detection.scenes_common._check_split`: LVIS v1 fields, masks, boxes, images
    on disk) on train, val and test; the train categories' counts (``ClassFrequency.from_coco(...,
    check_lvis=True)``); val and test carrying the train categories; ``not_exhaustive_category_ids`` only
    among each image's annotated categories; ``BENCHMARK.json``'s per-category counts equal to the
    annotations'; and no source image in two splits (train from the sources' train split, val and test from
    disjoint parts of their test split).
    """
    root = Path(root)
    anns, problems = _read_splits(root, SPLITS)
    if not problems:
        problems += _train_count_problems(anns)
        sources: dict[str, set] = {}
        for split in SPLITS:
            ann = anns[split]
            if split != "train" and ann["categories"] != anns["train"]["categories"]:
                problems.append(f"{split}.json's categories differ from train.json's (all must carry the train counts)")
            positive: dict[Any, set] = {}
            for a in ann["annotations"]:
                positive.setdefault(a["image_id"], set()).add(a["category_id"])
            bad = [im["id"] for im in ann["images"]
                   if not set(im["not_exhaustive_category_ids"]) <= positive.get(im["id"], set())]
            if bad:
                problems.append(f"{split}.json: images {_fmt(bad)} list not_exhaustive_category_ids that are "
                                "not annotated there")
            want = "train" if split == "train" else "test"
            used = {tuple(a.get("source", ())) for a in ann["annotations"]}
            if any(len(s) != 3 or s[1] != want for s in used):
                problems.append(f"{split}.json: annotations whose source is not [dataset, {want!r}, index]")
            sources[split] = used
        if sources["val"] & sources["test"]:
            problems.append(f"{len(sources['val'] & sources['test'])} source images are in both val and test")
        problems += _summary_count_problems(summary, anns, SPLITS)
    if problems:
        raise IIFError(f"{root}: invalid benchmark: {_fmt(problems, 4)}; regenerate it with "
                       "`iif det-data --generator 2`.")
