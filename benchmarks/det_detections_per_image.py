"""Issue 15 lever: the same trained softmax detectors scored with 100 vs 300 detections per image (LVIS
evaluates 300; det-bench's cpu-quick preset keeps 100), on the v2 benchmark's val and test splits.

Reads the detectors an `iif det-bench` run keeps in its staging folder (``STAGE/resume/seed<k>/softmax.pt``;
copy them out before the run ends, or point at an interrupted run's staging) and the run's settings.json for
the model keys. Prints one JSON line per (split, seed, detections): AP, AP_r/c/f, TIDE's ΔAP_FP and its
background error, false positives at score >= 0.3, seconds.

    OMP_NUM_THREADS=1 python benchmarks/det_detections_per_image.py STAGE SETTINGS_JSON --seeds 0,1,2
"""

import argparse
import json
import time
from pathlib import Path

import torch

from iif.detection.bench import _evaluate
from iif.detection.data import load_detection_dataset
from iif.detection.engine import predict
from iif.detection.models import build_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", type=Path)
    ap.add_argument("settings", type=Path, help="the run's settings.json (model keys, arch, data folder)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--detections", default="100,300")
    args = ap.parse_args()
    torch.set_num_threads(1)
    saved = json.loads(args.settings.read_text())
    st, root = saved["settings"], Path(saved["meta"]["data"])
    model_kw = dict(st["model"], backbone_weights=None)  # the kept state dict holds every weight
    train = load_detection_dataset(root / "annotations/train.json", root / "images/train", train=True, masks=False,
                                   hflip=False)
    counts = train.freq.image_counts
    for split in args.splits.split(","):
        ds = load_detection_dataset(root / f"annotations/{split}.json", root / f"images/{split}", train=False,
                                    masks=False, hflip=False)
        gt = json.loads((root / f"annotations/{split}.json").read_text())
        for seed in (int(x) for x in args.seeds.split(",")):
            blob = torch.load(args.stage / "resume" / f"seed{seed}" / "softmax.pt", map_location="cpu",
                              weights_only=True)
            model = build_detector(st["arch"], len(ds.category_ids), **model_kw)
            model.load_state_dict(blob["state_dict"])
            for n in (int(x) for x in args.detections.split(",")):
                model.roi_heads.detections_per_img = n
                t0 = time.time()
                res = predict(model, ds, device="cpu", batch_size=4, masks=False)
                ev = _evaluate(gt, res, False, 0.3, counts)
                print(json.dumps({"split": split, "seed": seed, "detections": n, **{k: ev[k] for k in (
                    "AP", "APr", "APc", "APf", "dAP_FP", "false_positives")}, "bkg": ev["tide"]["dAP_Bkg"],
                    "s": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
