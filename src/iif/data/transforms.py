"""Augmentation recipes, batched GPU-friendly augmentation and mixup.

Per-sample recipes use ``torchvision.transforms.v2`` (AutoAugment with its CIFAR10/IMAGENET policies,
RandAugment). ``batch_augment`` does crop-with-padding + flip (+ optional Cutout) on a whole uint8 batch with
tensor ops only, so a trainer can keep a small dataset resident on the GPU and augment there.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from ..errors import IIFError

__all__ = ["AUGMENTS", "NORMALIZE", "IMAGENET_MEAN", "IMAGENET_STD", "SMALL_IMAGE_MAX", "Cutout", "build_transform",
           "batch_augment", "mixup_batch"]

AUGMENTS = ("none", "basic", "autoaugment", "randaugment")
#: PIL images at or below this size (px) get pad-and-crop augmentation, larger ones RandomResizedCrop.
SMALL_IMAGE_MAX = 64

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Per-dataset normalisation (mean, std) of the balanced training sets, in [0, 1] pixel units.
NORMALIZE: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits-lt": ((0.3053,), (0.3759,)),          # sklearn digits, 0..16 grey levels rescaled to 0..255
    "mnist-lt": ((0.1307,), (0.3081,)),
    "fashion-mnist-lt": ((0.2860,), (0.3530,)),
    "cifar10-lt": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100-lt": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet-lt": (IMAGENET_MEAN, IMAGENET_STD),
    "places-lt": (IMAGENET_MEAN, IMAGENET_STD),
    "inat2018": (IMAGENET_MEAN, IMAGENET_STD),
    "folder": (IMAGENET_MEAN, IMAGENET_STD),
}


class Cutout(nn.Module):
    """Cutout (DeVries & Taylor, 2017): zero one ``size`` x ``size`` square per image.

    Our own tiny class rather than ``RandomErasing``: Cutout draws the square's *centre* uniformly over the
    whole image and clips the square at the border (so squares near an edge are partial), while
    ``RandomErasing`` only places boxes fully inside the image and sizes them by an area fraction of a
    known image size. Applied after normalisation, so the zeros are the dataset mean, as in the original.
    """

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        if int(size) < 1:
            raise IIFError(f"Cutout size must be >= 1 pixel; got {size}.")
        self.size = int(size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, (1,)))
        cx = int(torch.randint(w, (1,)))
        y0, y1 = max(cy - self.size // 2, 0), min(cy + self.size - self.size // 2, h)
        x0, x1 = max(cx - self.size // 2, 0), min(cx + self.size - self.size // 2, w)
        out = img.clone()
        out[..., y0:y1, x0:x1] = 0
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}"


def _policy(name: str) -> v2.AutoAugmentPolicy:
    try:
        return {"cifar10": v2.AutoAugmentPolicy.CIFAR10, "imagenet": v2.AutoAugmentPolicy.IMAGENET,
                "svhn": v2.AutoAugmentPolicy.SVHN}[name]
    except KeyError:
        raise IIFError(f"unknown AutoAugment policy {name!r}; use cifar10, imagenet or svhn.") from None


def build_transform(augment: str, mean: Sequence[float], std: Sequence[float], *, train: bool = True,
                    image_size: int = 32, kind: str = "tensor", flip: bool = True, padding: int = 4,
                    cutout: int | None = None, policy: str | None = None,
                    randaugment_n: int = 2, randaugment_m: int = 9) -> v2.Compose:
    """A per-sample transform for one of the named recipes.

    ``kind="tensor"``: the input is a uint8 ``(C, H, W)`` tensor (small datasets); crops are
    ``RandomCrop(image_size, padding)``. ``kind="pil"``: the input is a PIL image; for ``image_size`` up to
    :data:`SMALL_IMAGE_MAX` (64) it is resized to ``image_size`` x ``image_size``, and train
    crops are ``RandomCrop(image_size, padding=image_size // 8)``; above that (ImageNet-style) train crops are
    ``RandomResizedCrop(image_size)`` and eval is ``Resize(image_size * 256 / 224)`` + ``CenterCrop(image_size)``.
    Recipes: ``none`` (no augmentation), ``basic`` (crop + flip), ``autoaugment`` (crop + flip + AutoAugment
    CIFAR10 policy for tensors and small PIL images / IMAGENET for larger ones, + Cutout(16) for 32-64 px images, the paper's §V-B2 recipe),
    ``randaugment`` (crop + flip + RandAugment(n, m)). ``cutout`` overrides the Cutout size (0 disables).
    Output: float32 normalised ``(C, H, W)``.
    """
    if augment not in AUGMENTS:
        raise IIFError(f"unknown augment recipe {augment!r}; use one of {', '.join(AUGMENTS)}.")
    if kind not in ("tensor", "pil"):
        raise IIFError(f"kind must be 'tensor' or 'pil'; got {kind!r}.")
    ops: list = []
    if kind == "pil" and image_size <= SMALL_IMAGE_MAX:
        # Small images (CIFAR-like): resized to image_size x image_size (a no-op at that size; the same rule as
        # a small folder tree held in memory), then the tensor recipe's pad-and-crop; RandomResizedCrop would
        # throw away most of a 32-px image.
        ops += [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
        if train and augment != "none":
            ops.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8)))
    elif kind == "pil":
        ops.append(v2.ToImage())
        if not train or augment == "none":
            ops += [v2.Resize(int(round(image_size * 256 / 224)), antialias=True), v2.CenterCrop(image_size)]
        else:
            ops.append(v2.RandomResizedCrop(image_size, antialias=True))
    elif train and augment != "none":
        ops.append(v2.RandomCrop(image_size, padding=padding))
    if train and augment != "none":
        if flip:
            ops.append(v2.RandomHorizontalFlip())
        if augment == "autoaugment":
            small = kind == "tensor" or image_size <= SMALL_IMAGE_MAX
            ops.append(v2.AutoAugment(_policy(policy or ("cifar10" if small else "imagenet"))))
        elif augment == "randaugment":
            ops.append(v2.RandAugment(num_ops=randaugment_n, magnitude=randaugment_m))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and augment != "none":
        cifar_like = kind == "tensor" or image_size <= SMALL_IMAGE_MAX
        size = cutout if cutout is not None else (16 if augment == "autoaugment" and cifar_like and image_size >= 32 else 0)
        if size:
            ops.append(Cutout(size))
    return v2.Compose(ops)


def batch_augment(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, crop: bool = True,
                  padding: int = 4, flip: bool = True, cutout: int = 0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a whole uint8 batch ``(N, C, H, W)`` on its own device; returns float32 normalised.

    Random crop with zero padding (every image its own offset in ``[0, 2*padding]``), horizontal flip with
    probability 1/2, then ``(x/255 - mean) / std``, then optional Cutout of ``cutout`` pixels (square centre
    uniform over the image, clipped at the border, as :class:`Cutout`). Vectorised: crop and flip are one
    ``gather``, no per-sample Python loop. ``generator`` must live on
    the images' device. Pass ``crop=False, flip=False`` to only normalise (evaluation).
    """
    if images.ndim != 4:
        raise IIFError(f"batch_augment expects (N, C, H, W) images; got shape {tuple(images.shape)}.")
    n, ch, h, w = images.shape
    dev = images.device
    m = torch.as_tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    if m.shape[1] not in (1, ch) or s.shape[1] not in (1, ch):
        raise IIFError(f"mean/std have {m.shape[1]}/{s.shape[1]} values for {ch}-channel images; give 1 or {ch}.")
    x = images
    p = int(padding) if crop else 0
    do_flip = None
    if p > 0:
        x = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (n,), device=dev, generator=generator)
    if flip:
        do_flip = torch.rand(n, device=dev, generator=generator) < 0.5
    if p > 0 or flip:
        # Crop and flip as ONE gather over the flattened (padded) plane: row r, column c of the output
        # reads padded[oy + r, ox + c] (or ox + W-1-c when flipped). gather is much faster than 4-D
        # advanced indexing on both CPU and GPU.
        hp, wp = x.shape[-2:]
        r = torch.arange(h, device=dev)
        rows = (oy[:, None] + r) if p > 0 else r.expand(n, h)
        cols = torch.arange(w, device=dev).expand(n, w)
        if do_flip is not None:
            cols = torch.where(do_flip[:, None], (w - 1) - cols, cols)
        if p > 0:
            cols = ox[:, None] + cols
        flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, ch, h * w)
        x = torch.gather(x.reshape(n, ch, hp * wp), 2, flat).view(n, ch, h, w)
    # (x/255 - m)/s as one multiply-add.
    out = torch.addcmul(-m / s, x.float(), 1.0 / (255.0 * s))
    if cutout:
        cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=generator)
        yy = torch.arange(h, device=dev)[None, :, None]
        xx = torch.arange(w, device=dev)[None, None, :]
        half = int(cutout) // 2
        inside = ((yy >= cy - half) & (yy < cy - half + int(cutout)) & (xx >= cx - half) & (xx < cx - half + int(cutout)))
        out = out.masked_fill(inside[:, None], 0.0)
    return out


def mixup_batch(x: torch.Tensor, y: torch.Tensor, alpha: float, num_classes: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al., 2018): one ``lam ~ Beta(alpha, alpha)`` per batch, partner = a random permutation.

    Returns ``(lam * x + (1 - lam) * x[perm], lam * onehot(y) + (1 - lam) * onehot(y[perm]))``; the soft
    targets feed any ``iif.losses`` loss. ``generator`` (CPU or the batch's device) makes it reproducible.
    """
    if not (alpha > 0 and math.isfinite(alpha)):
        raise IIFError(f"mixup alpha must be a positive number; got {alpha!r} (use alpha=0.2 as in the paper's §V-B2, "
                       "or skip mixup).")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise IIFError(f"mixup needs one class index per image; got labels of shape {tuple(y.shape)} for "
                       f"{x.shape[0]} images.")
    # Beta sampling in torch takes no generator, so seed a numpy draw from the torch generator.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator is not None else "cpu"))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator, device=generator.device if generator is not None else "cpu").to(x.device)
    onehot = F.one_hot(y.long(), num_classes).to(x.dtype if x.is_floating_point() else torch.float32)
    return lam * x + (1.0 - lam) * x[perm], lam * onehot + (1.0 - lam) * onehot[perm]
