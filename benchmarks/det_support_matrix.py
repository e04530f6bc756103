"""Which detection architecture takes which margin method, phase and training strategy: each cell checked by a
tiny run, not by assumption (issue 17 point 5; the table in docs/detection.md).

For one arch of each family (the R10 / tiny CPU variants: the families' R50 / R101 / Darknet-53 members share
their code) and each cell: a det config of ``model.arch`` plus the cell's ``margin.*`` / ``model.*`` / ``data.*``
keys is loaded and validated (``load_detection_config``), the detector built as det-train builds it
(``runs.build_from_config``, 3 classes with counts 40/8/2), one SGD training step on two 64-px images with a
box (and mask) each, then one inference forward. A cell reads ``yes`` when all of that ran with finite losses,
``refused`` with the first words of the one-line :class:`IIFError` when the config or the build refuses it,
and ``BUG`` (exit 1) on any other exception. ``rfs`` is the sampler (``data.sampler=rfs``): checked through the
config only (the sampler never sees the model).

``OMP_NUM_THREADS=1 python benchmarks/det_support_matrix.py [--archs a,b] [--json out.json]`` prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from iif.detection.config import load_detection_config
from iif.detection.runs import build_from_config
from iif.errors import IIFError
from iif.frequency import ClassFrequency

ARCHS = ("maskrcnn_r10_fpn", "fasterrcnn_r10_fpn", "cascade_maskrcnn_r10_fpn", "htc_r10_fpn", "ssd300_vgg16",
         "yolov3_tiny_cpu")
TINY = ["model.min_size=64", "model.max_size=64", "model.fpn_channels=16", "model.representation_size=32",
        "model.mask_layers=[8]", "model.box_detections_per_img=10", "model.rpn_post_nms_top_n_train=50",
        "model.box_batch_size_per_image=32"]
# column: (header, overrides); the methods at their phases, then the strategies (with IIF where one is needed).
CELLS = [
    ("softmax", ["margin.method=softmax"]),
    ("IIF end-to-end", ["margin.method=iif", "margin.variant=raw", "margin.when=train_and_test"]),
    ("IIF loss only", ["margin.method=iif", "margin.variant=raw", "margin.when=train"]),
    ("IIF post-hoc", ["margin.method=iif", "margin.variant=raw", "margin.when=test"]),
    ("Balanced Softmax (loss)", ["margin.method=balanced_softmax", "margin.when=train"]),
    ("LA loss", ["margin.method=logit_adjustment", "margin.when=train"]),
    ("LA post-hoc", ["margin.method=logit_adjustment", "margin.when=test"]),
    ("NorCal (post-hoc)", ["margin.method=norcal", "margin.when=test"]),
    ("Seesaw (loss)", ["margin.method=seesaw", "margin.when=train"]),
    ("EQLv2 (loss)", ["margin.method=eqlv2", "margin.when=train"]),
    ("cosine cls + IIF", ["margin.method=iif", "margin.variant=raw", "model.cosine_scale=8"]),
    ("decoupled (classifier only) + IIF", ["margin.method=iif", "margin.variant=raw", "model.classifier_only=true"]),
    ("FASA + IIF", ["margin.method=iif", "margin.variant=raw", "model.fasa=true"]),
    ("normalised mask", ["model.mask_predictor=normalised"]),
    ("final NMS IoU 0.3", ["model.box_nms_thresh=0.3"]),
    ("mask threshold 0.4", ["model.mask_thresh=0.4"]),
    ("RFS", ["data.sampler=rfs"]),
    ("Table XV all: base10 IOF + cosine + norm. mask + FASA + NMS 0.3 / mask 0.4",
     ["margin.method=iif", "margin.variant=base10", "margin.by=object", "model.cosine_scale=8",
      "model.mask_predictor=normalised", "model.fasa=true", "model.box_nms_thresh=0.3", "model.mask_thresh=0.4"]),
    ("FASA + EQLv2", ["margin.method=eqlv2", "model.fasa=true"]),
]
COUNTS = np.array([40, 8, 2])


def _freq() -> ClassFrequency:
    return ClassFrequency(COUNTS, COUNTS * 2, 50, int(COUNTS.sum() * 2), task="detection")


def _batch(masks: bool):
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(2):
        images.append(torch.rand(3, 64, 64, generator=g))
        t = {"boxes": torch.tensor([[8.0 + 4 * i, 10.0, 40.0, 44.0]]), "labels": torch.tensor([1 + i])}
        if masks:
            m = torch.zeros(1, 64, 64, dtype=torch.uint8)
            m[0, 10:44, 8 + 4 * i:40] = 1
            t["masks"] = m
        targets.append(t)
    return images, targets


def _checkpoint(arch: str, folder: Path) -> str:
    """A plain detector's state dict (the decoupled stage 2 starts from a stage-1 checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{arch}.pt"
    if not path.exists():
        cfg = load_detection_config(None, [f"model.arch={arch}", *TINY])
        torch.save(build_from_config(cfg, len(COUNTS), _freq(), log=lambda *_: None).state_dict(), path)
    return str(path)


def run_cell(arch: str, overrides: list[str], folder: Path) -> str:
    """'yes', 'refused: ...' or 'BUG: ...' for one arch and one cell."""
    extra = [f"model.checkpoint={_checkpoint(arch, folder)}"] if "model.classifier_only=true" in overrides else []
    try:
        cfg = load_detection_config(None, [f"model.arch={arch}", *TINY, *overrides, *extra])
        if cfg.data.sampler == "rfs":
            return "yes"
        torch.manual_seed(0)
        model = build_from_config(cfg, len(COUNTS), _freq(), log=lambda *_: None)
        images, targets = _batch(masks=hasattr(getattr(model, "roi_heads", None), "mask_roi_pool")
                                 and model.roi_heads.mask_roi_pool is not None)
        model.train()
        losses = model(images, targets)
        total = sum(losses.values())
        if not math.isfinite(float(total.detach())):
            return f"BUG: non-finite loss {float(total.detach())}"
        total.backward()
        model.eval()
        with torch.no_grad():
            model(images)
        return "yes"
    except IIFError as e:
        return f"refused: {str(e)[:160]}"
    except Exception as e:  # noqa: BLE001 - any other failure is a bug to report
        return f"BUG: {type(e).__name__}: {str(e)[:160]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    result: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            result[arch] = {}
            for header, overrides in CELLS:
                result[arch][header] = run_cell(arch, overrides, Path(tmp))
                print(f"{arch} | {header}: {result[arch][header]}", file=sys.stderr, flush=True)
    print("| method / strategy | " + " | ".join(f"`{a}`" for a in archs) + " |")
    print("|---|" + "---|" * len(archs))
    for header, _ in CELLS:
        cells = [result[a][header] for a in archs]
        print(f"| {header} | " + " | ".join("yes" if c == "yes" else ("refused" if c.startswith("refused") else "BUG")
                                          for c in cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 1 if any(c.startswith("BUG") for r in result.values() for c in r.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
