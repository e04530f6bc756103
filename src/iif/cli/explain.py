"""iif explain CHECKPOINT IMAGE [--class C] [--compare CHECKPOINT2] --out DIR [--adjust SPEC] [--force]

Where a classifier of iif train looks and what it scores, as Fig. 6 of the paper shows softmax against IIF:
for the image, the class scores (softmax of the logits the decision is made on; by default the rule of the
checkpoint's own loss, w * z for the IIF loss), the class-score heatmap of the predicted class (the
classifier applied at each location of the last feature map) and Grad-CAM of the predicted and of the true
class. --compare adds a second checkpoint (e.g. softmax vs IIF) as a second row of the same figure.

The true class is --class (a name or an index), else the image's folder name when it is a class name.
The image must have the model's channel count (grey or RGB); it is not converted.

A det-train run (Faster / Mask R-CNN) is explained at its best detection (of --class when given): the
class scores of the proposal it came from (with the run's margin) and Grad-CAM on the backbone's last
ResNet stage; --adjust does not apply. A YOLOv3 run: the objectness heatmap (sigmoid objectness, max over
anchors, per scale), the best detection's class scores (objectness x softmax of the margin-adjusted logits
at its cell and anchor) and Grad-CAM on Darknet's stride-8 map C3. A Cascade Mask R-CNN / HTC run: the
class scores of the RoI the detection came from (the mean of the three stages' softmaxes, as the detector
scores), the highest RoI score of the class over the boxes covering each pixel, Grad-CAM as Faster R-CNN's.
An SSD run: the best anchor's class scores (softmax of the margin-adjusted logits), the class's score per
detection map (max over anchors, upsampled) and Grad-CAM on the VGG16 trunk (backbone.features).

Writes DIR/explain.png and DIR/explain.json (classes, scores, where each map peaks) all at once. Needs the
optional extra: pip install "iif[explain]" (captum).
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="class scores, class heatmap and Grad-CAM of an image (paper Fig. 6)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint of iif train (best.pt, last.pt) or its run folder, or an iif det-train run folder")
    p.add_argument("image", help="one image file")
    p.add_argument("--class", dest="target", metavar="C", default=None,
                   help="the true (or asked) class: a class name or index (default: the image's folder name if it "
                        "is a class name)")
    p.add_argument("--compare", metavar="CHECKPOINT2", default=None,
                   help="a second checkpoint shown beside the first (e.g. softmax vs IIF)")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (new, empty, or an earlier iif explain output with --force)")
    p.add_argument("--adjust", metavar="SPEC", default="loss",
                   help="decision rule: loss (default: the checkpoint's own loss rule, w * z for IIF), none (raw "
                        "logits), or an iif predict --adjust spec (iif:<variant>, la:<tau>, taunorm:<tau>)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("--force", action="store_true", help="replace an earlier iif explain output in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import IIFError
    from ..outputs import OutputFolder, atomic_write_json, checkpoint_inputs

    checkpoints = [args.checkpoint] + ([args.compare] if args.compare else [])
    inputs, runs = [("the image", args.image)], []
    for ckpt in checkpoints:
        if not Path(ckpt).exists():
            raise IIFError(f"checkpoint {ckpt} does not exist; pass a checkpoint of iif train (e.g. runs/x/last.pt).")
        i, r = checkpoint_inputs(ckpt)
        inputs += i
        runs += r
    if not Path(args.image).is_file():
        raise IIFError(f"{args.image}: no such image file; give one PNG or JPEG file.")
    folder = OutputFolder(args.out, command="explain", force=args.force, inputs=inputs, run_folders=runs)

    from ..explain import plot_explanations
    from ..reporting import save_figure

    results = [_explain(c, args) for c in checkpoints]
    with folder as staging:
        save_figure(plot_explanations(results, Path(args.image).name), staging / "explain.png")
        atomic_write_json(staging / "explain.json", {"image": str(args.image), "adjust": args.adjust,
                                                     "checkpoints": [m.summary() for m in results]})
    print(f"wrote {Path(args.out) / 'explain.png'} and explain.json", file=sys.stderr)
    return 0


def _explain(checkpoint: str, args: argparse.Namespace):
    """The :class:`iif.explain.ClassMaps` of one checkpoint: a classifier's, or a det-train detector's best box."""
    from ..explain import checkpoint_kind, explain_image, resolve_class

    if checkpoint_kind(checkpoint) == "classifier":
        return explain_image(checkpoint, args.image, args.target, adjust=args.adjust, device=args.device)
    from ..explain_detection import explain_detection, load_detector_run
    from ..runtime import resolve_device

    model, names, label = load_detector_run(checkpoint, str(resolve_device(args.device)))
    return explain_detection(model, names, args.image, resolve_class(args.target, names, args.image), label,
                             checkpoint=str(checkpoint))
