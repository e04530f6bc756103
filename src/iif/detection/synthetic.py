"""An offline long-tailed instance-segmentation benchmark composed from Fashion-MNIST and MNIST objects.

What it is: a *controlled* benchmark, not LVIS. Each image is a ``image_size`` x ``image_size`` RGB scene
(default 128 px): a textured, noisy or gradient background with clutter (random strokes, blobs and small
fragments of glyphs that are not objects), and 1-6 opaque objects cut out of real Fashion-MNIST / MNIST
images, recoloured, rescaled to a long side of ``image_size/8``-``3*image_size/8`` px (16-48 px at 128),
placed so that every object keeps at least half of its pixels visible. Twenty categories: the ten
Fashion-MNIST classes and the ten digits. The instance mask is exactly the set of pixels the object painted
that no later object covered (objects are opaque; clutter is drawn before the objects, so it never covers
them), stored as compressed RLE; the box is the tight box of that mask. Two knobs tune the difficulty:
``clutter`` (0-1, scales the distractors and pixel noise) and ``object_size`` (the long side's range as
fractions of the image side).

The long tail (train split). The number of train images containing each category follows a fixed design
with LVIS's groups (r: 1-10 images, c: 11-100, f: > 100): 8 frequent, 7 common and 5 rare categories
(:data:`CATEGORIES`). Look-alikes sit in different groups on purpose (rare ``shirt`` against frequent
``tshirt_top``, rare ``digit_4``/``digit_5``/``digit_8`` against frequent ``digit_1``/``digit_3``/``digit_7``,
rare ``sandal`` against frequent ``sneaker``), so a classifier biased to the head produces the rare/frequent
confusions and background false positives that the paper (Section I, Fig. 1) is about. Frequent and common
counts are given for ``num_train = 2000`` and scale with ``num_train``, kept inside their group's range (f
>= 101, c in 11-100); rare counts do not scale. The category counts are exact (they are assigned before any
image is drawn); 25% of category occurrences get a second instance and 8% a third (at most 6 objects per
image), so ``instance_count > image_count``.

The val split is *not* long-tailed: every category appears in the same number of val images,
``max(10, round(0.09 * num_val))`` (36 at the default 400), so AP_r averages over enough instances to mean
something (at least 10 images per rare category). A balanced val is the usual long-tailed protocol (a
label-shift from train to test); it favours corrections for the train prior, which is what is compared.
As in LVIS, the val json's categories carry the *train* ``image_count``/``instance_count``/``frequency``:
the evaluation groups categories by their train frequency.

Federated labels. LVIS evaluates a category only on images where it is annotated (positive set) or listed
in ``neg_category_ids`` (verified absent); detections elsewhere are ignored. Every scene here is annotated
exhaustively, so ``not_exhaustive_category_ids`` is empty and, by default (``neg_fraction=1``),
``neg_category_ids`` lists *every* category absent from the image: each detection is judged on every image,
so the LVIS-style evaluation counts every false positive (it equals COCO-style exhaustive evaluation with
LVIS's 300 detections per image and r/c/f groups). That is the honest label for a synthetic scene and the
one under which the false-positive comparison is meaningful. ``neg_fraction < 1`` keeps a random fraction
of the absent categories per image to imitate LVIS's incomplete negative sets, where many false positives
go unpunished.

No pixel leakage: train objects (and clutter fragments) come from the source datasets' TRAIN splits and
val objects from their TEST splits; within a split every source image is used once (sources are reused
only when a split needs more instances of a class than the source split holds, which needs
``num_train`` above ~10,000). Each annotation records its source (``"source": [dataset, split, index]``).

Determinism: the same seed and options give byte-identical json and PNG files (with the same numpy,
Pillow and pycocotools). Files written::

    out/annotations/train.json, out/annotations/val.json   (LVIS v1 format, plus file_name for torchvision)
    out/images/train/<id>.png, out/images/val/<id>.png
    out/BENCHMARK.json                                      (marker: generator version, seed, options, counts)

Measured on the 2-core CPU dev machine (shared, load average ~2): drawing the default benchmark (2000 train +
400 val images, 58 MB of PNG, ~4,800 train and ~960 val instances) took 7.1 s; the whole ``iif det-data``
command 12.7 s (with imports and loading the source arrays) and 1.3 GB peak memory (the MNIST pickle
loader's); the 231 + 50 image, 64-px benchmark of the tests 0.6 s; ``validate_benchmark`` 0.3 s.

Where the code lives (issue 16): this module holds version 1's categories, planning, placement, json and
summary, and :func:`make_benchmark` / :func:`validate_benchmark`, which choose the version (generator 2 is
:mod:`iif.detection.scenes_v2`). What both versions share is in :mod:`iif.detection.scenes_common` (sources,
counts, category assignment, json bytes, option and split checks) and :mod:`iif.detection.scenes_draw`
(backgrounds, clutter, glyphs, colours, PNG bytes); neither imports this module, so there is no import circle.
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
from . import scenes_v2
from .scenes_common import (_EXTRA_INSTANCE_P, _MASK_THRESHOLD, _MAX_CATEGORIES_PER_IMAGE, _MAX_OBJECTS_PER_IMAGE,
                            _MIN_SOURCE_PIXELS, _NOISY_SCENES, BENCHMARK_FORMAT, FASHION, MNIST, _assign_categories,
                            _Category, _category_rows, _category_summaries, _check_scene_options, _check_seed_and_size,
                            _check_sources, _designed_train_counts, _dump, _feasible, _fmt, _load_sources, _read_splits,
                            _rle, _summary_count_problems, _train_count_problems)
from .scenes_draw import _background, _clutter, _contrasting_colour, _glyph, _luminance, _png_bytes

__all__ = ["make_benchmark", "validate_benchmark", "generate", "CATEGORIES", "GENERATOR_VERSION", "BENCHMARK_FORMAT",
           "DEFAULTS", "minimum_num_train", "DEFAULT_GENERATOR", "GENERATORS"]

#: Bumped whenever the same seed and options would give different files.
GENERATOR_VERSION = 1
#: The generator ``iif det-data``, :func:`make_benchmark` and ``iif det-bench`` use when none is named:
#: version 2 (:mod:`iif.detection.scenes_v2`, issue 15) since 2026-12-06; version 1 (this module) stays
#: available (``--generator 1`` / ``generator=1``) and reproduces every number recorded on it.
DEFAULT_GENERATOR = 2
GENERATORS = (1, 2)
#: Default options (chosen so a Mask R-CNN R18-FPN trained from scratch on 2 CPU cores learns in minutes).
DEFAULTS = {"image_size": 128, "num_train": 2000, "num_val": 400, "neg_fraction": 1.0, "clutter": 1.0,
            "object_size": (0.125, 0.375)}

_VAL_IMAGES_PER_CATEGORY = 0.09  # x num_val
_MIN_VAL_IMAGES_PER_CATEGORY = 10
_MIN_VISIBLE = 0.5  # every object keeps at least this fraction of its own pixels visible
_SPLIT_CODES = {"train": 0, "val": 1}
_FIRST_IMAGE_ID = {"train": 1, "val": 1_000_001}  # disjoint ids, so train and val jsons never collide
_FIRST_ANN_ID = {"train": 1, "val": 10_000_001}


#: The 20 categories: (id, name, source dataset, source label, designed group, train images at 2000).
CATEGORIES: tuple[_Category, ...] = tuple(_Category(*row) for row in (
    (1, "tshirt_top", FASHION, 0, "f", 300),
    (2, "trouser", FASHION, 1, "f", 900),
    (3, "pullover", FASHION, 2, "c", 90),
    (4, "dress", FASHION, 3, "c", 24),
    (5, "coat", FASHION, 4, "c", 12),
    (6, "sandal", FASHION, 5, "r", 6),
    (7, "shirt", FASHION, 6, "r", 10),
    (8, "sneaker", FASHION, 7, "f", 520),
    (9, "bag", FASHION, 8, "f", 170),
    (10, "ankle_boot", FASHION, 9, "c", 45),
    (11, "digit_0", MNIST, 0, "f", 400),
    (12, "digit_1", MNIST, 1, "f", 700),
    (13, "digit_2", MNIST, 2, "c", 64),
    (14, "digit_3", MNIST, 3, "f", 120),
    (15, "digit_4", MNIST, 4, "r", 8),
    (16, "digit_5", MNIST, 5, "r", 5),
    (17, "digit_6", MNIST, 6, "c", 32),
    (18, "digit_7", MNIST, 7, "f", 230),
    (19, "digit_8", MNIST, 8, "r", 4),
    (20, "digit_9", MNIST, 9, "c", 17),
))


# ----------------------------------------------------------------------------------------------- counts


def _train_image_counts(num_train: int) -> np.ndarray:
    """Designed train image count per category (order of :data:`CATEGORIES`) for ``num_train`` images: f >= 101,
    c in 11-100 (both scaled from the counts at 2000 images), r as designed (1-10, not scaled); the rule is
    :func:`iif.detection.scenes_common._designed_train_counts`."""
    return _designed_train_counts(num_train, CATEGORIES)


@functools.lru_cache(maxsize=1)
def minimum_num_train() -> int:
    """Smallest ``num_train`` whose designed counts keep 8 frequent, 7 common and 5 rare categories."""
    n = 1
    while not _feasible(_train_image_counts(n), n):
        n += 1
    return n


def _val_images_per_category(num_val: int) -> int:
    return max(_MIN_VAL_IMAGES_PER_CATEGORY, int(round(_VAL_IMAGES_PER_CATEGORY * num_val)))


# ----------------------------------------------------------------------------------------------- sources


class _SourcePool:
    """Source images of one split, handed out per class in a seeded order, each once (until exhausted)."""

    def __init__(self, sources: dict[str, tuple[np.ndarray, ...]], split: str, rng: np.random.Generator) -> None:
        self.split_name = "train" if split == "train" else "test"
        self.images: dict[str, np.ndarray] = {}
        self.order: dict[tuple[str, int], np.ndarray] = {}
        self.next: dict[tuple[str, int], int] = {}
        self.rng = rng
        for dataset in (FASHION, MNIST):
            imgs, labels = sources[dataset][0:2] if split == "train" else sources[dataset][2:4]
            self.images[dataset] = imgs
            # Skip the few near-black sources (72 of Fashion-MNIST's 60k train images have < 30 pixels above
            # the mask threshold): they would give a few-pixel mask for a whole garment.
            usable = (imgs > _MASK_THRESHOLD).sum(axis=(1, 2)) >= _MIN_SOURCE_PIXELS
            for label in range(10):
                key = (dataset, label)
                self.order[key] = rng.permutation(np.flatnonzero((labels == label) & usable))
                if not len(self.order[key]):
                    raise IIFError(f"{dataset} {self.split_name} split has no usable image of class {label} (none "
                                   f"with >= {_MIN_SOURCE_PIXELS} pixels above {_MASK_THRESHOLD}); check the source "
                                   "files (re-download them).")
                self.next[key] = 0

    def take(self, dataset: str, label: int) -> int:
        key = (dataset, label)
        i = self.next[key]
        if i == len(self.order[key]):  # more instances needed than the source split holds: a new round
            self.order[key] = self.rng.permutation(self.order[key])
            i = 0
        self.next[key] = i + 1
        return int(self.order[key][i])


# ----------------------------------------------------------------------------------------------- planning


def _plan_split(split: str, counts: np.ndarray, num_images: int, pool: _SourcePool,
                rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    """Per image, the objects to draw in paint order: ``(category index, source image index)``."""
    plan = []
    for cats in _assign_categories(counts, num_images, rng):
        objects = []
        for c in cats:
            objects.append(c)
        for c in cats:  # extra instances, at most 6 objects per image
            u = rng.random()
            extra = int(u < _EXTRA_INSTANCE_P[0]) + int(u < _EXTRA_INSTANCE_P[1])
            for _ in range(extra):
                if len(objects) < _MAX_OBJECTS_PER_IMAGE:
                    objects.append(c)
        objects = [objects[j] for j in rng.permutation(len(objects))]
        plan.append([(c, pool.take(CATEGORIES[c].dataset, CATEGORIES[c].label)) for c in objects])
    return plan


# ----------------------------------------------------------------------------------------------- drawing


def _place(masks_full: list[np.ndarray], visible: list[np.ndarray], areas: list[int], mask: np.ndarray,
           size: int, rng: np.random.Generator, tries: int = 40) -> tuple[int, int, bool]:
    """Top-left corner for a new object keeping every earlier object >= 50% visible (``ok`` False if none)."""
    h, w = mask.shape
    best, best_score = (0, 0), -1.0
    for _ in range(tries):
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        score = 1.0
        for vis, area in zip(visible, areas):
            left = int(vis.sum()) - int((vis[y: y + h, x: x + w] & mask).sum())
            score = min(score, left / area)
        if score >= _MIN_VISIBLE:
            return y, x, True
        if score > best_score:
            best, best_score = (y, x), score
    return best[0], best[1], False


def _render(objects: list[tuple[int, int]], size: int, pool: _SourcePool, rng: np.random.Generator,
            clutter: float = 1.0, object_size: tuple[float, float] = (0.125, 0.375)):
    """Draw one scene: ``(uint8 (size, size, 3) image, [(category index, source index, visible mask)],
    [unoccluded mask area per object])``. ``clutter`` scales the distractors and the pixel noise;
    objects get a long side log-uniform in ``object_size`` x ``size``."""
    img = _background(size, rng, noise=clutter)
    img = _clutter(img, size, pool.images, rng, amount=clutter)
    lo, hi = size * object_size[0], size * object_size[1]
    masks_full: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    areas: list[int] = []
    drawn: list[tuple[int, int]] = []
    for c, src_index in objects:
        cat = CATEGORIES[c]
        src = pool.images[cat.dataset][src_index]
        long_side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        flip = cat.dataset == FASHION and bool(rng.random() < 0.5)
        for attempt in range(6):
            glyph = _glyph(src, long_side, flip, fill=cat.dataset == FASHION)
            if glyph is None:  # a near-empty source image: draw it larger
                long_side = int(hi)
                glyph = _glyph(src, long_side, flip, fill=cat.dataset == FASHION)
                if glyph is None:
                    raise IIFError(f"source image {src_index} of {cat.dataset} leaves no object pixels at objects of "
                                   f"{long_side} px (image_size {size}); use a larger --image-size (128 is the "
                                   "default) or a larger object_size.")
            intensity, mask = glyph
            y, x, ok = _place(masks_full, visible, areas, mask, size, rng)
            if ok or attempt == 5:
                break
            long_side = max(int(lo), int(long_side * 0.8))  # crowded: try smaller
        h, w = mask.shape
        region = img[y: y + h, x: x + w]
        bg_lum = float(_luminance(region[mask].mean(axis=0)))
        colour = _contrasting_colour(bg_lum, rng)
        # The glyph's own shading, +-0.15 around the colour, brighter away from the background's luminance,
        # so every object pixel keeps >= 0.2 luminance contrast with the mean background under it.
        away = 1.0 if float(_luminance(colour)) > bg_lum else -1.0
        shade = colour + away * 0.3 * (intensity[..., None] - 0.5)
        region[mask] = np.clip(shade, 0, 1)[mask]
        full = np.zeros((size, size), dtype=bool)
        full[y: y + h, x: x + w] = mask
        for vis in visible:
            vis &= ~full
        masks_full.append(full)
        visible.append(full.copy())
        areas.append(int(mask.sum()))
        drawn.append((c, src_index))
    if rng.random() < _NOISY_SCENES * clutter:  # sensor-like noise over the whole scene
        img = img + np.float32(rng.uniform(0.005, 0.03)) * rng.standard_normal(img.shape, dtype=np.float32)
    out = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return out, [(c, s, v) for (c, s), v in zip(drawn, visible)], areas


# ----------------------------------------------------------------------------------------------- json


def _category_entries(train_images: np.ndarray, train_instances: np.ndarray) -> list[dict[str, Any]]:
    return _category_rows(CATEGORIES, train_images, train_instances)


def _encode(drawn: list[tuple[int, int, np.ndarray]]) -> list[tuple[int, int, dict, list[float], int]]:
    """``(category index, source index, visible mask)`` -> ``(.., .., RLE with str counts, bbox, area)``."""
    return [(c, src_index, *_rle(vis)) for c, src_index, vis in drawn]


def _split_json(split: str, size: int, scenes: list[list[tuple[int, int, dict, list[float], int]]],
                categories: list[dict], neg_fraction: float, rng: np.random.Generator) -> dict[str, Any]:
    images, annotations = [], []
    ann_id = _FIRST_ANN_ID[split]
    all_ids = np.array([cat.id for cat in CATEGORIES])
    src_split = "train" if split == "train" else "test"
    for i, objects in enumerate(scenes):
        image_id = _FIRST_IMAGE_ID[split] + i
        present = sorted({CATEGORIES[obj[0]].id for obj in objects})
        absent = np.setdiff1d(all_ids, present)
        if neg_fraction < 1.0:
            keep = int(round(neg_fraction * absent.size))
            absent = np.sort(rng.permutation(absent)[:keep])
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "width": size, "height": size,
                       "neg_category_ids": absent.tolist(), "not_exhaustive_category_ids": [], "license": 0})
        for c, src_index, rle, bbox, area in objects:
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": CATEGORIES[c].id, "bbox": bbox, "area": area,
                "segmentation": rle, "iscrowd": 0, "source": [CATEGORIES[c].dataset, src_split, int(src_index)],
            })
            ann_id += 1
    return {
        "info": {"description": f"iif offline long-tailed instance-segmentation benchmark, {split} split "
                                "(Fashion-MNIST + MNIST objects; a controlled benchmark, not LVIS)",
                 "version": str(GENERATOR_VERSION)},
        "licenses": [{"id": 0, "name": "MIT (Fashion-MNIST); MNIST terms (Y. LeCun, C. Cortes, C. Burges)", "url": ""}],
        "images": images, "annotations": annotations, "categories": categories,
    }


# ----------------------------------------------------------------------------------------------- public


def _check_options(seed: int, image_size: int, num_train: int, num_val: int, neg_fraction: float,
                   clutter: float = 1.0, object_size: tuple[float, float] = (0.125, 0.375)) -> None:
    _check_seed_and_size(seed, image_size)
    low = minimum_num_train()
    if (not isinstance(num_train, (int, np.integer)) or not low <= num_train <= 200_000
            or not _feasible(_train_image_counts(int(num_train)), int(num_train))):
        raise IIFError(f"num_train must be a whole number in {low}..200000 (fewer images cannot hold the "
                       f"8 frequent categories of > 100 images each); got {num_train!r} (default 2000).")
    low_val = _MIN_VAL_IMAGES_PER_CATEGORY * len(CATEGORIES) // _MAX_CATEGORIES_PER_IMAGE
    if not isinstance(num_val, (int, np.integer)) or not low_val <= num_val <= 100_000:
        raise IIFError(f"num_val must be a whole number in {low_val}..100000 (every category needs >= "
                       f"{_MIN_VAL_IMAGES_PER_CATEGORY} val images); got {num_val!r} (default 400).")
    _check_scene_options(image_size, neg_fraction, clutter, object_size)


def generate(seed: int = 0, *, image_size: int = 128, num_train: int = 2000, num_val: int = 400,
             neg_fraction: float = 1.0, clutter: float = 1.0, object_size: tuple[float, float] = (0.125, 0.375),
             sources: dict[str, tuple[np.ndarray, ...]] | None = None,
             source_root: str | os.PathLike | None = None, download: bool = False,
             sink: Callable[[str, str, bytes], None] | None = None):
    """Build the benchmark: ``({split: (json dict, [(file_name, png bytes)])}, summary)``.

    ``sources`` (``{"fashion-mnist": arrays, "mnist": arrays}`` as ``load_mnist_arrays`` returns them) skips
    loading; otherwise they are found as :func:`iif.data.mnist.load_mnist_arrays` finds them. With
    ``sink``, each PNG goes to ``sink(split, file_name, png_bytes)`` as it is drawn instead of into the
    returned lists (which stay empty), so memory does not grow with the number of images.
    """
    _check_options(seed, image_size, num_train, num_val, neg_fraction, clutter, object_size)
    object_size = (float(object_size[0]), float(object_size[1]))
    if sources is None:
        sources = _load_sources(source_root, download)
    _check_sources(sources)
    train_counts = _train_image_counts(int(num_train))
    val_counts = np.full(len(CATEGORIES), _val_images_per_category(int(num_val)), dtype=np.int64)
    results: dict[str, Any] = {}
    rendered: dict[str, list] = {}
    for split, counts, n in (("train", train_counts, int(num_train)), ("val", val_counts, int(num_val))):
        code = _SPLIT_CODES[split]
        plan_rng = np.random.default_rng([int(seed), code, 0])
        pool = _SourcePool(sources, split, plan_rng)
        plan = _plan_split(split, counts, n, pool, plan_rng)
        files, scenes = [], []
        for i, objects in enumerate(plan):
            img, drawn, _ = _render(objects, int(image_size), pool, np.random.default_rng([int(seed), code, 1, i]),
                                    float(clutter), object_size)
            name, data = f"{_FIRST_IMAGE_ID[split] + i:012d}.png", _png_bytes(img)
            if sink is None:
                files.append((name, data))
            else:
                sink(split, name, data)
            scenes.append(_encode(drawn))
        rendered[split] = (files, scenes)
    train_scenes = rendered["train"][1]
    n_img = np.zeros(len(CATEGORIES), dtype=np.int64)
    n_inst = np.zeros(len(CATEGORIES), dtype=np.int64)
    for objects in train_scenes:
        cats = [obj[0] for obj in objects]
        np.add.at(n_inst, cats, 1)
        n_img[sorted(set(cats))] += 1
    categories = _category_entries(n_img, n_inst)
    for split in ("train", "val"):
        neg_rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], 2])
        ann = _split_json(split, int(image_size), rendered[split][1], categories, float(neg_fraction), neg_rng)
        results[split] = (ann, rendered[split][0])
    options = {"image_size": int(image_size), "num_train": int(num_train), "num_val": int(num_val),
               "neg_fraction": float(neg_fraction), "clutter": float(clutter), "object_size": list(object_size)}
    return results, _summary(seed, options, results)


def _summary(seed: int, options: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    per_cat = _category_summaries(CATEGORIES, results, ("train", "val"))
    cats = results["train"][0]["categories"]
    groups = {g: sum(1 for c in cats if c["frequency"] == g) for g in "rcf"}
    return {
        "format": BENCHMARK_FORMAT, "generator_version": GENERATOR_VERSION, "seed": int(seed),
        "options": options,
        "sources": {"train": "train split of Fashion-MNIST and MNIST", "val": "test split of Fashion-MNIST and MNIST"},
        "splits": {split: {"images": len(results[split][0]["images"]),
                           "instances": len(results[split][0]["annotations"]),
                           "annotations": f"annotations/{split}.json", "images_dir": f"images/{split}",
                           "sha256": hashlib.sha256(_dump(results[split][0])).hexdigest()}
                   for split in ("train", "val")},
        "groups": groups, "categories": per_cat,
        # How to use it: mirrored digits are other glyphs, so no horizontal flips; LVIS's repeat-factor
        # threshold 0.001 means "categories in fewer than 100 images" on LVIS's 100k images, i.e. 100 / num_train.
        "recommended": {"hflip": False, "repeat_factor_threshold": round(100 / options["num_train"], 6)},
    }


def make_benchmark(out: str | os.PathLike, *, seed: int = 0, image_size: int | None = None,
                   num_train: int | None = None, num_val: int | None = None, neg_fraction: float | None = None,
                   clutter: float | None = None, object_size: tuple[float, float] | None = None,
                   source_root: str | os.PathLike | None = None, download: bool = False, force: bool = False,
                   sources: dict[str, tuple[np.ndarray, ...]] | None = None, generator: int | None = None,
                   num_test: int | None = None, distractors: float | None = None) -> dict[str, Any]:
    """Write the benchmark into the new folder ``out`` and return its summary (``BENCHMARK.json``'s content).

    Args:
        generator: 1 (this module) or 2 (:mod:`iif.detection.scenes_v2`: object-like distractors, federated
            labels, train/val/test); None: :data:`DEFAULT_GENERATOR`. An option left None takes the chosen
            version's default (:data:`DEFAULTS` here, ``scenes_v2.DEFAULTS``); ``num_test`` and
            ``distractors`` exist only in version 2.
        out: a new or empty folder (``force=True`` replaces only an earlier ``iif`` output there).
        seed: everything (category placement, source images, layout, colours) follows from it.
        image_size: side of the square images in pixels.
        num_train: train images (>= :func:`minimum_num_train`); the category counts follow the r/c/f design.
        num_val: val images (>= 50); every category is in ``max(10, round(0.09 * num_val))`` of them.
        neg_fraction: fraction of each image's absent categories listed in ``neg_category_ids`` (1: all, so
            every false positive is counted by the LVIS evaluation).
        clutter: 0-1, scales the distractors and the pixel noise (0: clean backgrounds, an easier benchmark).
        object_size: the objects' long side is log-uniform in ``object_size`` x ``image_size`` (16-48 px at 128).
        source_root, download: where to find Fashion-MNIST / MNIST when they are not installed.
        force: replace an earlier ``iif`` output in ``out``.
        sources: preloaded ``{"fashion-mnist": arrays, "mnist": arrays}`` (each ``(train_images, train_labels,
            test_images, test_labels)``, uint8 28x28 images) instead of loading them.

    The folder is built in a staging folder and renamed into place when complete (``iif.outputs.OutputFolder``),
    so ``out`` never holds half a benchmark.
    """
    from ..outputs import OutputFolder

    generator = DEFAULT_GENERATOR if generator is None else generator
    given = {"image_size": image_size, "num_train": num_train, "num_val": num_val, "neg_fraction": neg_fraction,
             "clutter": clutter, "object_size": object_size, "num_test": num_test, "distractors": distractors}
    if generator == 2:
        return scenes_v2.make_benchmark(out, seed=seed, source_root=source_root, download=download, force=force,
                                        sources=sources, **{**scenes_v2.DEFAULTS, **{k: v for k, v in given.items()
                                                                                     if v is not None}})
    if generator != 1 or isinstance(generator, bool):
        raise IIFError(f"generator must be one of {GENERATORS} (the benchmark generator version); got {generator!r}.")
    for key in ("num_test", "distractors"):
        if given.pop(key) is not None:
            raise IIFError(f"{key} exists only in generator 2 (three splits, held-out distractors); add "
                           "generator=2 (--generator 2) or leave it out.")
    image_size, num_train, num_val, neg_fraction, clutter, object_size = (
        DEFAULTS[k] if given[k] is None else given[k] for k in given)
    _check_options(seed, image_size, num_train, num_val, neg_fraction, clutter, object_size)
    folder = OutputFolder(out, command="det-data", force=force)  # refuses a used --out before any work
    if sources is None:
        sources = _load_sources(source_root, download)
    _check_sources(sources)
    with folder as staging:  # a staging folder, renamed into place only when everything below succeeded
        for split in ("train", "val"):
            (staging / "images" / split).mkdir(parents=True)

        def write_png(split: str, name: str, data: bytes) -> None:
            (staging / "images" / split / name).write_bytes(data)

        results, summary = generate(seed, image_size=image_size, num_train=num_train, num_val=num_val,
                                    neg_fraction=neg_fraction, clutter=clutter, object_size=object_size,
                                    sources=sources, sink=write_png)
        (staging / "annotations").mkdir()
        for split in ("train", "val"):
            (staging / "annotations" / f"{split}.json").write_bytes(_dump(results[split][0]))
        (staging / "BENCHMARK.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="ascii")
    return summary


# ----------------------------------------------------------------------------------------------- validation


def validate_benchmark(root: str | os.PathLike, generator: int | None = None) -> None:
    """Check a benchmark folder written by :func:`make_benchmark`; raise :class:`IIFError` listing problems.

    ``generator``: the version the caller needs (None: any); a folder of another version is refused with the
    command that writes the right one. A version-2 folder is checked by ``scenes_v2.validate_benchmark``.

    Checks ``BENCHMARK.json``; each split's json against the LVIS v1 rules (unique ids, known image and
    category ids, boxes positive and inside the image, compressed-RLE masks of the image size whose area is
    ``area`` and whose tight box is ``bbox``, ``iscrowd`` 0, ``neg_category_ids`` disjoint from the
    annotated categories); every listed image on disk with the listed size; the train categories'
    ``image_count``/``instance_count``/``frequency`` equal to the counts of the train annotations
    (``ClassFrequency.from_coco(..., check_lvis=True)``); the val json carrying the train categories (as
    LVIS does); and ``BENCHMARK.json``'s per-category counts equal to the annotations'.
    """
    root = Path(root)
    marker = root / "BENCHMARK.json"
    if not marker.is_file():
        raise IIFError(f"{root} is not a detection benchmark folder (no BENCHMARK.json); create one with "
                       "`iif det-data --out DIR`.")
    try:
        summary = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, json.JSONDecodeError) as exc:
        raise IIFError(f"{marker} cannot be read ({exc}); regenerate the benchmark with `iif det-data`.") from None
    if not isinstance(summary, dict) or summary.get("format") != BENCHMARK_FORMAT:
        raise IIFError(f"{marker} is not an iif benchmark marker (format != {BENCHMARK_FORMAT!r}); "
                       "regenerate the benchmark with `iif det-data`.")
    version = summary.get("generator_version")
    if generator is not None and version != generator:
        raise IIFError(f"{root} was written by benchmark generator version {version}, version {generator} is needed "
                       f"here; write one with `iif det-data --generator {generator} --out NEW_DIR`.")
    if version == 2:
        return scenes_v2.validate_benchmark(root, summary)
    anns, problems = _read_splits(root, ("train", "val"))
    if not problems:
        problems += _train_count_problems(anns)
        if anns["val"]["categories"] != anns["train"]["categories"]:
            problems.append("val.json's categories differ from train.json's (both must carry the train counts)")
        problems += _summary_count_problems(summary, anns, ("train", "val"))
    if problems:
        raise IIFError(f"{root}: invalid benchmark: {_fmt(problems, 4)}; regenerate it with `iif det-data`.")
