"""Write the small long-tailed ImageFolder tree docs/training.md ("Your own images") measures on.

    python benchmarks/make_folder_tree.py OUT_DIR

Fashion-MNIST images (Debian's dataset-fashion-mnist, /usr/share/datasets/fashion-mnist, or FASHION_DIR)
padded to 32x32 and saved as RGB PNGs: OUT_DIR/train/<class>/ holds int(80 * 10^(-k/9)) images of class k
(80 -> 8, exp long tail, 323 images), OUT_DIR/test/<class>/ 8 per class (80 images); no val/. numpy seed 0.
"""

import argparse
import os
import sys

import numpy as np
from PIL import Image

from iif.data.mnist import read_idx

NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def main(out: str, src: str = os.environ.get("FASHION_DIR", "/usr/share/datasets/fashion-mnist")) -> None:
    xtr, ytr = read_idx(f"{src}/train-images-idx3-ubyte.gz"), read_idx(f"{src}/train-labels-idx1-ubyte.gz")
    xte, yte = read_idx(f"{src}/t10k-images-idx3-ubyte.gz"), read_idx(f"{src}/t10k-labels-idx1-ubyte.gz")
    rng = np.random.RandomState(0)
    counts = [int(80 * 10 ** (-k / 9)) for k in range(10)]

    def save(img, split, k, j):
        d = os.path.join(out, split, NAMES[k])
        os.makedirs(d, exist_ok=True)
        Image.fromarray(np.pad(img, 2)).convert("RGB").save(os.path.join(d, f"{j:04d}.png"))

    for k in range(10):
        for j, i in enumerate(rng.permutation(np.where(ytr == k)[0])[:counts[k]]):
            save(xtr[i], "train", k, j)
        for j, i in enumerate(rng.permutation(np.where(yte == k)[0])[:8]):
            save(xte[i], "test", k, j)
    print(f"wrote {sum(counts)} train images ({counts}) and 80 test images under {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="folder to create (must not exist yet)")
    a = ap.parse_args()
    if os.path.exists(a.out_dir):
        sys.exit(f"make_folder_tree: {a.out_dir} already exists; pick a new folder.")
    main(a.out_dir)
