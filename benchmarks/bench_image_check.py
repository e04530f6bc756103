"""Time the pre-training image check (:func:`iif.data.verify.verify_images`) on a synthetic list dataset.

Writes N tiny JPEG files (default 100,000, 16x16, ~0.7 KB each) and an ImageNet-LT style list file into a
temporary folder, then times:

* ``list``  : :func:`iif.data.lists.validate_list` (parse, label range, root confinement, file exists);
* ``cold``  : the first image check (every file decoded; the cache is written);
* ``warm``  : the same check again (one ``os.stat`` per file against the cache);

and prints one line per step. Usage::

    python benchmarks/bench_image_check.py [--n 100000] [--dir /tmp/iif-image-check] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of image files (default 100000)")
    ap.add_argument("--dir", default=None, help="work folder (default: a new temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    from PIL import Image

    from iif.data.lists import validate_list
    from iif.data.verify import verify_images

    work = args.dir or tempfile.mkdtemp(prefix="iif-image-check-")
    made = args.dir is None
    root = os.path.join(work, "images")
    os.makedirs(root, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(buf, format="JPEG", quality=90)
    blob = buf.getvalue()
    t0 = time.perf_counter()
    lines = []
    for i in range(args.n):
        sub = f"c{i % 1000:03d}"
        if i < 1000:
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        rel = f"{sub}/{i:07d}.jpg"
        with open(os.path.join(root, rel), "wb") as f:
            f.write(blob)
        lines.append(f"{rel} {i % 1000}\n")
    list_path = os.path.join(work, "train.txt")
    with open(list_path, "w") as f:
        f.writelines(lines)
    print(f"wrote {args.n} files of {len(blob)} bytes in {time.perf_counter() - t0:.1f}s under {root}")

    cache = os.path.join(work, "cache")
    t0 = time.perf_counter()
    samples = validate_list(list_path, root, 1000)
    print(f"list  : validate_list of {len(samples)} lines  {time.perf_counter() - t0:.2f}s")
    paths = [p for p, _ in samples]
    cold = verify_images(paths, cache_dir=cache)
    print(f"cold  : decoded {cold.decoded} files  {cold.seconds:.2f}s  ({1e6 * cold.seconds / max(cold.files, 1):.0f} us/file)")
    for k in range(2):
        warm = verify_images(paths, cache_dir=cache)
        print(f"warm{k + 1} : {warm.cached} unchanged, {warm.decoded} decoded  {warm.seconds:.2f}s")
    if made and not args.keep:
        shutil.rmtree(work)  # our own temporary folder


if __name__ == "__main__":
    main()
