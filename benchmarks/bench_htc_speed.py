"""CPU speed of Hybrid Task Cascade against Cascade Mask R-CNN and Mask R-CNN at the offline benchmark's size.

The measurement helpers, data and settings are bench_cascade_speed.py's (imported): one thread, 128-px images,
random weights (every image keeps 100 detections, so the mask heads run on all of them), repeats alternated,
medians and paired-median ratios:

1. training img/s of one SGD step with det-bench's cpu-quick settings (r10): ``maskrcnn_r10_fpn``,
   ``cascade_maskrcnn_r10_fpn``, ``htc_r10_fpn`` and ``htc_r10_fpn`` with IIF on every stage (raw weights);
2. inference s/image (batch 1, masks on) of the same;
3. inference s/image of ``maskrcnn_r50_fpn`` vs ``htc_r50_fpn`` with torchvision's head sizes.

``python benchmarks/bench_htc_speed.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from bench_cascade_speed import _data, _infer_s, _model, _preset_kwargs, _train_ips


def _paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--images", type=int, default=4, help="images per inference timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = _preset_kwargs()
    r50 = dict(min_size=128, max_size=128, box_detections_per_img=100)
    cases = {"maskrcnn_r10_fpn": ("maskrcnn_r10_fpn", preset, False),
             "cascade_maskrcnn_r10_fpn": ("cascade_maskrcnn_r10_fpn", preset, False),
             "htc_r10_fpn": ("htc_r10_fpn", preset, False), "htc_r10_fpn+iif": ("htc_r10_fpn", preset, True),
             "maskrcnn_r50_fpn": ("maskrcnn_r50_fpn", r50, False), "htc_r50_fpn": ("htc_r50_fpn", r50, False)}
    models = {name: _model(*spec) for name, spec in cases.items()}
    images, targets = _data(args.batch, 0)
    train: dict[str, list[float]] = {n: [] for n in cases if "r10" in n}
    infer: dict[str, list[float]] = {n: [] for n in cases}
    for name in infer:  # warm-up, not timed
        if name in train:
            _train_ips(models[name], images, targets, 1)
        _infer_s(models[name], images[:1])
    for _ in range(args.repeats):
        for name in train:
            train[name].append(_train_ips(models[name], images, targets, args.steps))
        for name in infer:
            infer[name].append(_infer_s(models[name], images[: args.images]))
    med = {f"train_img_per_s/{n}": statistics.median(v) for n, v in train.items()}
    med.update({f"infer_s_per_image/{n}": statistics.median(v) for n, v in infer.items()})
    h = "htc_r10_fpn"
    med["r10 step time htc/maskrcnn"] = _paired(train["maskrcnn_r10_fpn"], train[h])
    med["r10 step time htc/cascade"] = _paired(train["cascade_maskrcnn_r10_fpn"], train[h])
    med["r10 step time iif/softmax (htc)"] = _paired(train[h], train[h + "+iif"])
    med["r10 inference htc/maskrcnn"] = _paired(infer[h], infer["maskrcnn_r10_fpn"])
    med["r10 inference htc/cascade"] = _paired(infer[h], infer["cascade_maskrcnn_r10_fpn"])
    med["r10 inference iif/softmax (htc)"] = _paired(infer[h + "+iif"], infer[h])
    med["r50 inference htc/maskrcnn"] = _paired(infer["htc_r50_fpn"], infer["maskrcnn_r50_fpn"])
    print(json.dumps({k: round(v, 3) for k, v in med.items()}, indent=1))
    print(json.dumps({"train": train, "infer": infer}))


if __name__ == "__main__":
    main()
