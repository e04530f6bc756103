"""Time the annotation and image checks ``iif det-train`` runs before training (issue 14's performance bar).

    python benchmarks/bench_det_checks.py BENCH [--repeats 3]

BENCH is a folder written by ``iif det-data`` (default 2000 train / 400 val images). Prints, as the minimum
over the repeats (wall and CPU seconds):

* ``startup``: ``iif det-train det_bench_softmax data.root=BENCH`` in this process, from before ``import iif``
  to its first training step (``train_detector`` is replaced by a stop), and the part of it spent in
  :func:`iif.detection.validate_annotations` (train and val json, masks, boxes, RLE, files and image headers);
* ``per 10k annotations``: ``validate_annotations`` on a json of exactly 10,000 annotations (the training
  json's annotations repeated with new ids, RLE masks), without and with the image files and headers.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

_T0 = (time.perf_counter(), time.process_time())


class _Stop(Exception):
    pass


def startup(root: str) -> dict[str, float]:
    from iif.cli import main
    from iif.detection import data as D
    from iif.detection import engine

    spent = {"wall": 0.0, "cpu": 0.0}
    original = D.validate_annotations

    def timed(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent["wall"] += time.perf_counter() - w
            spent["cpu"] += time.process_time() - c

    def stop(*args, **kwargs):
        raise _Stop

    D.validate_annotations, engine.train_detector = timed, stop
    with tempfile.TemporaryDirectory() as tmp:
        try:
            main(["det-train", "det_bench_softmax", f"data.root={root}", "--out", str(Path(tmp) / "run"), "--quiet"])
        except _Stop:
            pass
        else:
            raise SystemExit("det-train did not reach training; check BENCH")
    D.validate_annotations = original
    return {"startup_wall": time.perf_counter() - _T0[0], "startup_cpu": time.process_time() - _T0[1],
            "checks_wall": spent["wall"], "checks_cpu": spent["cpu"]}


def per_10k(root: str) -> dict[str, float]:
    from iif.detection import validate_annotations

    train = json.loads((Path(root) / "annotations" / "train.json").read_text())
    anns = []
    while len(anns) < 10_000:
        for a in train["annotations"]:
            if len(anns) == 10_000:
                break
            b = copy.copy(a)
            b["id"] = len(anns) + 1
            anns.append(b)
    big = dict(train, annotations=anns)
    out = {}
    for name, image_root in (("json_only", None), ("with_files", Path(root) / "images" / "train")):
        w, c = time.perf_counter(), time.process_time()
        validate_annotations(big, image_root, masks=True)
        out[f"{name}_wall"], out[f"{name}_cpu"] = time.perf_counter() - w, time.process_time() - c
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    first = startup(args.bench)  # the first run pays the imports: that is det-train's start-up
    rows = [per_10k(args.bench) for _ in range(args.repeats)]
    best = {k: min(r[k] for r in rows) for k in rows[0]}
    print(f"startup to the first training step: {first['startup_wall']:.2f} s wall / {first['startup_cpu']:.2f} "
          f"CPU-s; validate_annotations (train + val): {first['checks_wall']:.3f} s wall / {first['checks_cpu']:.3f} "
          f"CPU-s = {100 * first['checks_cpu'] / first['startup_cpu']:.1f}% of the start-up CPU time")
    print(f"10,000 annotations: json checks {best['json_only_wall']:.3f} s wall / {best['json_only_cpu']:.3f} CPU-s; "
          f"with files and headers ({len(json.loads((Path(args.bench) / 'annotations' / 'train.json').read_text())['images'])} "
          f"images) {best['with_files_wall']:.3f} s wall / {best['with_files_cpu']:.3f} CPU-s")
