"""``iif det-eval RUN_OR_CHECKPOINT [section.key=value ...] [--data DIR] [--margin SPEC] [--out results.json] [--detections dets.json]``.

Rebuilds the detector of an ``iif det-train`` run from the ``config.yaml`` it saved and the weights of its
``last.pt`` (or the checkpoint given; read with ``torch.load(weights_only=True)``), predicts the val set (of
``--data DIR`` if given: a benchmark, LVIS v1 or COCO folder) and prints det-bench's row keys (AP, AP50, AP75,
APr, APc, APf, APb, dAP_FP, false_positives). ``--margin iif:raw:image`` switches the trained detector to
another margin after loading (post-hoc unless a 4th field says ``train_and_test``): METHOD[:VARIANT or
TAU[:image|object[:WHEN]]], e.g. ``iif:base10:object``, ``logit_adjustment:1.0``, ``norcal:0.5`` (gamma), ``softmax``.
"""

from __future__ import annotations

import argparse

from ..errors import IIFError


def register(subparsers) -> None:
    p = subparsers.add_parser("det-eval", help="evaluate a det-train run (optionally with another margin)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="det-train run folder, or a checkpoint file inside one")
    p.add_argument("overrides", nargs="*",
                   help="dotted overrides, e.g. eval.masks=false data.max_val_images=100; of the model keys, the "
                        "prediction-time ones (min_size, max_size, rpn_*_test, box_detections_per_img, "
                        "box_score_thresh, cosine_scale) are applied, the others refused, as are schedule.* and the "
                        "training-only data keys")
    p.add_argument("--data", help="evaluate on the val split of this data folder instead of the run's")
    p.add_argument("--margin", help="switch the margin before predicting, e.g. iif:raw:image (post-hoc)")
    p.add_argument("--out", help="write the metrics to this json file (atomically)")
    p.add_argument("--detections", help="also write the detections (LVIS/COCO result dicts) to this json file")
    p.add_argument("--device", help="override runtime.device (auto, cpu, cuda, cuda:N)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..detection.runs import evaluate_run, format_metrics

    if args.out is not None and not args.out.strip():
        raise IIFError("--out is empty; give a file name such as results.json.")
    metrics = evaluate_run(args.run, data=args.data, margin=args.margin, overrides=args.overrides, out=args.out,
                           device=args.device, detections_out=args.detections, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_metrics(metrics))
    if args.out:
        print(f"metrics in {args.out}")
    return 0
