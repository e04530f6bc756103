"""Training throughput (images/s) of ResNet-32 on 32x32 inputs: our trainer vs a plain reference loop.

Both loops train the same model (``iif.models.build_model("resnet32", 10)``) with the same batch size and
SGD on the same random uint8 images, measured one after the other in this run:

* reference: ``torch.utils.data.DataLoader`` over a ``TensorDataset`` of pre-normalised float images
  (shuffled, ``--workers`` workers, no augmentation), forward / CE / backward / step;
* ours: ``iif.train.fit`` on a ``TensorImageDataset`` with the crop+flip recipe, which the trainer keeps
  resident on the device and augments a whole batch at a time (``iif.data.batch_augment``), plus
  channels_last on a GPU and optional bf16 autocast (``--amp bf16``). Ours does MORE work per image
  (random crop + flip) than the reference.

The first epoch of each is a warm-up and is not timed. Prints images/s of both and the ratio.

    python benchmarks/bench_train_throughput.py --device cpu --images 2048 --epochs 2
    python benchmarks/bench_train_throughput.py --device cuda --images 12406 --batch-size 512 --epochs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from iif.data import DatasetSplits, TensorImageDataset, build_transform
from iif.frequency import ClassFrequency
from iif.models import build_model
from iif.train import fit, load_config

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def reference_images_per_s(images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch: int, epochs: int,
                           workers: int) -> float:
    x = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=batch, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model("resnet32", 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    rate = 0.0
    for epoch in range(epochs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, seen = time.perf_counter(), 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += yb.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - start)  # the last (warm) epoch counts
    return rate


def ours_images_per_s(images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch: int, epochs: int,
                      amp: str) -> float:
    tf = build_transform("basic", MEAN, STD, train=True, image_size=32, kind="tensor")
    train = TensorImageDataset(images, labels, tf, mean=MEAN, std=STD)
    test = TensorImageDataset(images[:batch], labels[:batch], build_transform("none", MEAN, STD, train=False),
                              mean=MEAN, std=STD)
    freq = ClassFrequency.from_labels(labels, num_classes=10)
    splits = DatasetSplits(train, None, test, freq, 10, 3, 32, [str(i) for i in range(10)], MEAN, STD, "random")
    cfg = load_config(None, [
        "model.arch=resnet32", "loss.name=ce", f"optim.batch_size={batch}", f"schedule.epochs={epochs}",
        "schedule.name=constant", "eval.every=0", "runtime.progress=false", "runtime.tensorboard=false",
        f"runtime.amp={amp}", f"runtime.device={device.type}"])
    res = fit(cfg, splits=splits)
    return res.history[-1]["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per loop; all but the first are timed (last one)")
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--amp", default="none", choices=("none", "bf16"), help="autocast for our trainer")
    args = ap.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, args.images)).long()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    ref = reference_images_per_s(images, labels, device, args.batch_size, args.epochs, args.workers)
    ours = ours_images_per_s(images, labels, device, args.batch_size, args.epochs, args.amp)
    print(f"device: {name}; ResNet-32, {args.images} images 32x32, batch {args.batch_size}, torch {torch.__version__}")
    print(f"reference DataLoader(TensorDataset), {args.workers} workers, fp32: {ref:10.1f} img/s")
    print(f"iif trainer (resident + batch crop/flip{', bf16' if args.amp == 'bf16' else ''}):   {ours:10.1f} img/s")
    print(f"ratio ours / reference: {ours / ref:.2f}x")


if __name__ == "__main__":
    main()
