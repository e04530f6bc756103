"""CPU step cost of FASA (iif.detection.fasa) at the offline benchmark's size.

One SGD step (batch ``--batch``, 128-px images, 3 objects each with masks) of ``maskrcnn_r10_fpn`` with det-bench's
cpu-quick model settings (det_bench_softmax.yaml) and IIF in the loss, with and without ``use_fasa`` (10 classes,
long-tailed counts, ``prob_scale`` 10 so several virtual features are drawn each step); the two alternate
``--repeats`` times (A B A B ...), one thread; printed: the median img/s of each and the paired median ratio.
Weights are random (nothing is downloaded). ``python benchmarks/bench_fasa_speed.py [--repeats 5]``.
"""

from __future__ import annotations

import json
import statistics

import torch
from det_timing import COUNTS, paired, preset_kwargs, random_scenes, sgd, timing_args, train_ips

from iif.detection import build_detector
from iif.detection.fasa import use_fasa
from iif.detection.margins import use_margin


def _model(fasa: bool):
    kw = preset_kwargs()
    torch.manual_seed(0)
    model = build_detector("maskrcnn_r10_fpn", 10, **kw)
    use_margin(model, "iif", COUNTS, variant="raw")
    if fasa:
        use_fasa(model, COUNTS, prob_scale=10.0)
    return model


def main() -> None:
    args = timing_args(__doc__.splitlines()[0], repeats=5)
    models = {"iif": _model(False), "iif+fasa": _model(True)}
    images, targets = random_scenes(args.batch, 0)
    for m in models.values():  # warm-up, not timed
        train_ips(m, sgd(m, 1e-3), images, targets, 1)
    ips: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            ips[name].append(train_ips(m, sgd(m, 1e-3), images, targets, args.steps))
    out = {f"train_img_per_s/{n}": statistics.median(v) for n, v in ips.items()}
    out["fasa_step_cost_ratio (iif/iif+fasa img/s, paired median)"] = paired(ips["iif"], ips["iif+fasa"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
