"""CPU speed of Cascade Mask R-CNN against Mask R-CNN at the offline benchmark's size (issue 17, Performance).

Three measurements, each repeated ``--repeats`` times in alternation (A B A B ...), one thread, medians:

1. training img/s of one SGD step (batch ``--batch``, 128-px images, 3 objects each with masks) with det-bench's
   cpu-quick model settings (det_bench_softmax.yaml: r10, FPN 128 on P3-P5, ...): ``maskrcnn_r10_fpn`` vs
   ``cascade_maskrcnn_r10_fpn``, and the cascade with and without IIF in the loss (``use_margin('iif',
   when='train_and_test')``, raw weights): the margin's step cost as a ratio;
2. inference s/image (batch 1, masks on) with the same settings, softmax vs IIF on the cascade too;
3. inference s/image at 128 px of ``maskrcnn_r50_fpn`` vs ``cascade_maskrcnn_r50_fpn`` with torchvision's head
   sizes (FPN 256, 1024-wide box head, 4 x 256 mask head, 1000 test proposals, 100 detections).

Weights are random (nothing is downloaded), so every image yields the full 100 detections and the mask head
runs on all of them in both architectures. ``python benchmarks/bench_cascade_speed.py [--repeats 3]``.
"""

from __future__ import annotations

import json

import torch
from det_timing import COUNTS, alternated, medians, paired, preset_kwargs, random_scenes, timing_args

from iif.detection import build_detector
from iif.detection.margins import use_margin


def _model(arch: str, kw: dict, margin: bool):
    torch.manual_seed(0)
    model = build_detector(arch, 10, **kw)
    if margin:
        use_margin(model, "iif", COUNTS, variant="raw")
    return model


def main() -> None:
    args = timing_args(__doc__.splitlines()[0], repeats=3, images=4)
    preset = preset_kwargs()
    r50 = dict(min_size=128, max_size=128, box_detections_per_img=100)
    cases = {
        "maskrcnn_r10_fpn": ("maskrcnn_r10_fpn", preset, False),
        "cascade_maskrcnn_r10_fpn": ("cascade_maskrcnn_r10_fpn", preset, False),
        "cascade_maskrcnn_r10_fpn+iif": ("cascade_maskrcnn_r10_fpn", preset, True),
        "maskrcnn_r50_fpn": ("maskrcnn_r50_fpn", r50, False),
        "cascade_maskrcnn_r50_fpn": ("cascade_maskrcnn_r50_fpn", r50, False),
    }
    models = {name: _model(*spec) for name, spec in cases.items()}
    images, targets = random_scenes(args.batch, 0)
    train, infer = alternated(models, [n for n in cases if "r10" in n], images, targets, args.repeats, args.steps,
                              args.images, lr=1e-3)
    med = medians(train, infer)
    c, i = "cascade_maskrcnn_r10_fpn", "cascade_maskrcnn_r10_fpn+iif"
    med["iif_step_cost_ratio (softmax/iif img/s, paired median)"] = paired(train[c], train[i])
    med["r10_train_ratio (maskrcnn/cascade img/s, paired median)"] = paired(train["maskrcnn_r10_fpn"], train[c])
    med["iif_infer_cost_ratio (iif/softmax s, paired median)"] = paired(infer[i], infer[c])
    med["r50_infer_ratio (cascade/maskrcnn s, paired median)"] = paired(infer["cascade_maskrcnn_r50_fpn"],
                                                                         infer["maskrcnn_r50_fpn"])
    med["r10_infer_ratio (cascade/maskrcnn s, paired median)"] = paired(infer[c], infer["maskrcnn_r10_fpn"])
    print(json.dumps({k: round(v, 3) for k, v in med.items()}, indent=1))
    print(json.dumps({"train": train, "infer": infer}))


if __name__ == "__main__":
    main()
