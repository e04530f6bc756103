"""Cost of the outputs-never-touch-inputs check (:func:`iif.outputs.refuse_overlap`).

Two calls timed: the one ``iif det-train`` makes (one ``--out``, three inputs: data root, model checkpoint,
train json; mean of 1000 calls) and one as ``iif predict`` makes when given N image files one by one
(``--out`` against N inputs; best of 5). Each input costs one ``os.path.realpath`` and one ``stat``.

    OMP_NUM_THREADS=1 python benchmarks/bench_overlap_check.py [N]   (default N = 10000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from iif.outputs import refuse_overlap


def main(n: int = 10000) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        imgs = root / "imgs"
        imgs.mkdir()
        paths = []
        for i in range(n):
            p = imgs / f"{i}.png"
            p.write_bytes(b"")
            paths.append(("the image input", p))
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            refuse_overlap({"--out": root / "pred.csv"}, paths + [("the checkpoint", root / "c.pt")])
            best = min(best, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(1000):
            refuse_overlap({"--out": root / "run"}, [("data.root", imgs), ("model.checkpoint", root / "c.pt"),
                                                     ("data.train_json", root / "t.json")])
        small = (time.perf_counter() - t) / 1000
    print(f"det-train-sized call (3 inputs): {small * 1e6:.0f} us; predict-sized call ({n} image files): "
          f"{best * 1e3:.1f} ms (best of 5)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10000)
