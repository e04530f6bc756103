"""Batched crop+flip(+Cutout) on a resident uint8 dataset vs the per-sample torchvision v2 path.

Prints images/s of both, side by side, for a CIFAR-10-LT-sized set (12,406 x 3x32x32), and checks the
batched result on the device against a per-image replay of the same random draws.
Run: PYTHONPATH=src python benchmarks/bench_data_batch_augment.py
"""

import time

import torch
import torch.nn.functional as F

from iif.data import NORMALIZE, batch_augment, build_transform

dev = "cuda" if torch.cuda.is_available() else "cpu"
mean, std = NORMALIZE["cifar10-lt"]
images = torch.randint(0, 256, (12406, 3, 32, 32), dtype=torch.uint8)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


# Correctness on the device: replay the generator's draws per image.
x = images[:64].to(dev)
g = torch.Generator(device=dev).manual_seed(1)
out = batch_augment(x, mean, std, generator=g)
g = torch.Generator(device=dev).manual_seed(1)
oy = torch.randint(0, 9, (64,), device=dev, generator=g)
ox = torch.randint(0, 9, (64,), device=dev, generator=g)
fl = torch.rand(64, device=dev, generator=g) < 0.5
m, s = torch.tensor(mean, device=dev).view(3, 1, 1), torch.tensor(std, device=dev).view(3, 1, 1)
err = 0.0
for i in range(64):
    ref = F.pad(x[i], (4, 4, 4, 4))[:, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
    ref = ref.flip(-1) if fl[i] else ref
    err = max(err, (out[i] - (ref.float() / 255 - m) / s).abs().max().item())
print(f"device={dev} max |batched - per-image replay| = {err:.2e}")

# Batched, resident on the device, batch 512, one epoch.
res = images.to(dev)
g = torch.Generator(device=dev).manual_seed(0)
for cut in (0, 16):
    batch_augment(res[:512], mean, std, cutout=cut, generator=g)
    sync()
    t = time.perf_counter()
    for reps in range(5):
        for b in range(0, len(res), 512):
            batch_augment(res[b:b + 512], mean, std, cutout=cut, generator=g)
    sync()
    r = 5 * len(res) / (time.perf_counter() - t)
    rate = r if cut == 0 else rate
    print(f"batched crop+flip{'+cutout16' if cut else ''} on {dev}: {r:,.0f} img/s")

# Per-sample torchvision v2 path on one CPU core (what a DataLoader worker does per image).
tf = build_transform("basic", mean, std, image_size=32)
n = 3000
t = time.perf_counter()
for i in range(n):
    tf(images[i])
per = n / (time.perf_counter() - t)
print(f"per-sample v2 crop+flip, 1 CPU process: {per:,.0f} img/s; batched crop+flip/per-sample ratio: {rate / per:,.1f}x")
tf = build_transform("autoaugment", mean, std, image_size=32)
t = time.perf_counter()
for i in range(1000):
    tf(images[i])
print(f"per-sample v2 crop+flip+AutoAugment+Cutout16, 1 CPU process: {1000 / (time.perf_counter() - t):,.0f} img/s")
