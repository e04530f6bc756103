"""Write a small long-tailed COCO instances json of one's own: the data docs/detection-training.md's
walk-through ("A COCO json of your own") trains, evaluates and benchmarks on.

    python benchmarks/make_det_json.py OUT_DIR [--train 300] [--val 60] [--size 96] [--seed 0]

Objects pasted onto backgrounds: the ten handwritten digits of scikit-learn's bundled ``load_digits`` (real
8x8 scans, upscaled) and six drawn shapes (square, disc, triangle, ring, cross, bar): 16 categories, each a
random colour on a noisy gradient background, 1-4 objects per image, 14-36 px (at --size 96), never
overlapping (so every mask is the whole object and its box the mask's tight box).

The long tail is exact: category k is in ``TRAIN_IMAGES[k]`` training images (3 frequent > 100, 7 common
11-100, 6 rare 1-10 by LVIS's rule, at --train 300; the counts scale with --train and stay in their group),
and in ``round(0.15 * val)`` validation images each (balanced, so AP_r averages enough instances). Files::

    OUT_DIR/annotations_train.json   OUT_DIR/annotations_val.json   (plain COCO: no LVIS fields)
    OUT_DIR/train/000001.png ...     OUT_DIR/val/000001.png ...

Masks are compressed RLE (pycocotools), ``iscrowd`` 0. The same arguments give the same files.
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

SHAPES = ["square", "disc", "triangle", "ring", "cross", "bar"]
NAMES = [f"digit_{d}" for d in range(10)] + SHAPES
# Training images per category at --train 300: frequent (> 100), common (11-100), rare (1-10), in the
# category order of NAMES shuffled once below so that the groups mix digits and shapes.
TRAIN_IMAGES = [150, 130, 110, 80, 60, 45, 35, 25, 18, 12, 10, 8, 6, 4, 3, 2]
ORDER = [3, 10, 7, 0, 12, 5, 1, 14, 8, 11, 4, 9, 13, 2, 15, 6]  # NAMES index of the k-th count above


def _counts(num_train: int) -> list[int]:
    """Training-image count per category (NAMES order): frequent/common scale with num_train inside their
    LVIS group, rare ones do not."""
    out = [0] * len(NAMES)
    for k, n in enumerate(TRAIN_IMAGES):
        if n > 100:
            m = max(101, round(n * num_train / 300))
        elif n > 10:
            m = min(100, max(11, round(n * num_train / 300)))
        else:
            m = n
        out[ORDER[k]] = min(m, num_train)
    return out


def _shape(name: str, s: int) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    c, r = s / 2, s / 2
    if name == "square":
        m = np.ones((s, s), bool)
    elif name == "disc":
        m = (yy - c) ** 2 + (xx - c) ** 2 <= r * r
    elif name == "triangle":
        m = np.abs(xx - c) <= yy / 2
    elif name == "ring":
        d = (yy - c) ** 2 + (xx - c) ** 2
        m = (d <= r * r) & (d >= (0.55 * r) ** 2)
    elif name == "cross":
        m = (np.abs(xx - c) <= s / 6) | (np.abs(yy - c) <= s / 6)
    else:  # bar
        m = np.abs(yy - c) <= s / 5
    return m


def _object(k: int, s: int, digits, rng) -> np.ndarray:
    """The mask of one object of category k, s x s px (digits: a random scan of that digit, upscaled)."""
    if k < 10:
        img, target = digits
        pick = rng.choice(np.flatnonzero(target == k))
        big = Image.fromarray((img[pick] * 15).astype(np.uint8)).resize((s, s), Image.BILINEAR)
        return np.asarray(big) > 90
    return _shape(SHAPES[k - 10], s)


def _scene(cats: list[int], size: int, digits, rng):
    """An RGB image with one object per entry of ``cats`` and its annotations (category, mask)."""
    from pycocotools import mask as mask_utils

    top, bottom = rng.integers(40, 215, 3), rng.integers(40, 215, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = (top * (1 - t) + bottom * t) * np.ones((size, size, 3)) + rng.normal(0, 12, (size, size, 3))
    taken = np.zeros((size, size), bool)
    anns = []
    for k in cats:
        for _ in range(60):  # a free spot
            s = int(rng.integers(size * 3 // 20, size * 3 // 8 + 1))
            y, x = (int(v) for v in rng.integers(0, size - s + 1, 2))
            if not taken[max(0, y - 2):y + s + 2, max(0, x - 2):x + s + 2].any():
                break
        else:
            continue
        m = np.zeros((size, size), bool)
        m[y:y + s, x:x + s] = _object(k, s, digits, rng)
        if m.sum() < 8:
            continue
        bg = img[m].mean(axis=0)
        colour = np.where(bg > 128, rng.integers(0, 70, 3), rng.integers(185, 256, 3))
        img[m] = colour
        taken[y:y + s, x:x + s] = True
        ys, xs = np.nonzero(m)
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        anns.append({"category_id": k + 1, "bbox": box, "area": float(m.sum()), "iscrowd": 0,
                     "segmentation": {"size": [size, size], "counts": rle["counts"].decode("ascii")}})
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _assign(counts: list[int], num_images: int, rng, cap: int = 4) -> list[list[int]]:
    """Categories per image so that category k is in exactly counts[k] images (each image at most ``cap``,
    filled fewest-first so every image gets at least one when there are enough)."""
    per_image: list[list[int]] = [[] for _ in range(num_images)]
    for k in np.argsort(counts, kind="stable")[::-1]:
        load = np.array([len(c) for c in per_image]) + rng.random(num_images)  # random tie-break
        for i in np.argsort(load)[: counts[k]]:
            if len(per_image[i]) >= cap:
                raise SystemExit("make_det_json: too few images for the counts; raise --train/--val.")
            per_image[i].append(int(k))
    return per_image


def write_split(out: str, split: str, per_image: list[list[int]], size: int, digits, rng) -> dict:
    folder = os.path.join(out, split)
    os.makedirs(folder)
    images, annotations = [], []
    for i, cats in enumerate(per_image, 1):
        img, anns = _scene(cats, size, digits, rng)
        name = f"{i:06d}.png"
        Image.fromarray(img).save(os.path.join(folder, name))
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i, **a})
    categories = [{"id": k + 1, "name": n, "supercategory": "digit" if k < 10 else "shape"}
                  for k, n in enumerate(NAMES)]
    data = {"info": {"description": f"make_det_json.py {split}"}, "images": images, "annotations": annotations,
            "categories": categories}
    with open(os.path.join(out, f"annotations_{split}.json"), "w") as f:
        json.dump(data, f)
    return data


def main(out: str, num_train: int = 300, num_val: int = 60, size: int = 96, seed: int = 0) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    digits = (d.images, d.target)
    rng = np.random.default_rng(seed)
    counts = _counts(num_train)
    train = write_split(out, "train", _assign(counts, num_train, rng), size, digits, rng)
    per_val = max(2, round(0.15 * num_val))
    val = write_split(out, "val", _assign([per_val] * len(NAMES), num_val, rng), size, digits, rng)
    groups = ["r" if n <= 10 else "c" if n <= 100 else "f" for n in counts]
    print(f"wrote {len(train['images'])} train images ({len(train['annotations'])} objects; images per category "
          f"{counts}: {groups.count('r')} rare, {groups.count('c')} common, {groups.count('f')} frequent) and "
          f"{len(val['images'])} val images ({len(val['annotations'])} objects) under {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="folder to create (must not exist yet)")
    ap.add_argument("--train", type=int, default=300, help="training images (default 300, at least 150)")
    ap.add_argument("--val", type=int, default=60, help="validation images (default 60, at least 20)")
    ap.add_argument("--size", type=int, default=96, help="image side in px (default 96, 64-256)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if os.path.exists(a.out_dir):
        sys.exit(f"make_det_json: {a.out_dir} already exists; pick a new folder.")
    if a.train < 150 or a.val < 20 or not 64 <= a.size <= 256:
        sys.exit("make_det_json: needs --train >= 150, --val >= 20 and --size in 64..256.")
    main(a.out_dir, a.train, a.val, a.size, a.seed)
