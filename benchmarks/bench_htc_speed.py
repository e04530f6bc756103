"""CPU speed of Hybrid Task Cascade against Cascade Mask R-CNN and Mask R-CNN at the offline benchmark's size.

The measurement helpers, data and settings are bench_cascade_speed.py's (det_timing.py's and its ``_model``): one
thread, 128-px images, random weights (every image keeps 100 detections, so the mask heads run on all of them),
repeats alternated, medians and paired-median ratios:

1. training img/s of one SGD step with det-bench's cpu-quick settings (r10): ``maskrcnn_r10_fpn``,
   ``cascade_maskrcnn_r10_fpn``, ``htc_r10_fpn`` and ``htc_r10_fpn`` with IIF on every stage (raw weights);
2. inference s/image (batch 1, masks on) of the same;
3. inference s/image of ``maskrcnn_r50_fpn`` vs ``htc_r50_fpn`` with torchvision's head sizes.

``python benchmarks/bench_htc_speed.py [--repeats 3]``.
"""

from __future__ import annotations

import json

from bench_cascade_speed import _model
from det_timing import alternated, medians, paired, preset_kwargs, random_scenes, timing_args


def main() -> None:
    args = timing_args(__doc__.splitlines()[0], repeats=3, images=4)
    preset = preset_kwargs()
    r50 = dict(min_size=128, max_size=128, box_detections_per_img=100)
    cases = {"maskrcnn_r10_fpn": ("maskrcnn_r10_fpn", preset, False),
             "cascade_maskrcnn_r10_fpn": ("cascade_maskrcnn_r10_fpn", preset, False),
             "htc_r10_fpn": ("htc_r10_fpn", preset, False), "htc_r10_fpn+iif": ("htc_r10_fpn", preset, True),
             "maskrcnn_r50_fpn": ("maskrcnn_r50_fpn", r50, False), "htc_r50_fpn": ("htc_r50_fpn", r50, False)}
    models = {name: _model(*spec) for name, spec in cases.items()}
    images, targets = random_scenes(args.batch, 0)
    train, infer = alternated(models, [n for n in cases if "r10" in n], images, targets, args.repeats, args.steps,
                              args.images, lr=1e-3)
    med = medians(train, infer)
    h = "htc_r10_fpn"
    med["r10 step time htc/maskrcnn"] = paired(train["maskrcnn_r10_fpn"], train[h])
    med["r10 step time htc/cascade"] = paired(train["cascade_maskrcnn_r10_fpn"], train[h])
    med["r10 step time iif/softmax (htc)"] = paired(train[h], train[h + "+iif"])
    med["r10 inference htc/maskrcnn"] = paired(infer[h], infer["maskrcnn_r10_fpn"])
    med["r10 inference htc/cascade"] = paired(infer[h], infer["cascade_maskrcnn_r10_fpn"])
    med["r10 inference iif/softmax (htc)"] = paired(infer[h + "+iif"], infer[h])
    med["r50 inference htc/maskrcnn"] = paired(infer["htc_r50_fpn"], infer["maskrcnn_r50_fpn"])
    print(json.dumps({k: round(v, 3) for k, v in med.items()}, indent=1))
    print(json.dumps({"train": train, "infer": infer}))


if __name__ == "__main__":
    main()
