"""In-memory image datasets kept as one uint8 tensor (digits, MNIST, Fashion-MNIST, CIFAR)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import IIFError

__all__ = ["TensorImageDataset"]


class TensorImageDataset(Dataset):
    """uint8 ``images (N, C, H, W)`` + int64 ``targets (N,)`` + an optional per-sample ``transform``.

    ``dataset[i]`` returns ``(transform(images[i]), int(targets[i]))``; without a transform the image is
    scaled to float32 in ``[0, 1]``. ``mean``/``std`` are the dataset's normalisation statistics and
    ``flip`` whether horizontal flips are label-preserving, so a trainer can move ``images`` to the GPU
    once and call :func:`iif.data.batch_augment` per batch instead of using the per-sample path.
    CIFAR-10-LT is 12,406 x 3,072 bytes = 38 MB here.
    """

    def __init__(self, images, targets, transform: Callable | None = None, *,
                 class_names: Sequence[str] | None = None, mean: Sequence[float] = (0.0,),
                 std: Sequence[float] = (1.0,), flip: bool = True) -> None:
        images = torch.as_tensor(images)
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise IIFError(f"images must be a uint8 (N, C, H, W) tensor; got {images.dtype} {tuple(images.shape)}.")
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise IIFError(f"need one target per image; got {tuple(targets.shape)} targets for {images.shape[0]} images.")
        self.images = images.contiguous()
        self.targets = targets
        self.transform = transform
        self.class_names = list(class_names) if class_names is not None else None
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.flip = bool(flip)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        img = self.images[i]
        img = self.transform(img) if self.transform is not None else img.float().div_(255.0)
        return img, int(self.targets[i])

    def subset(self, indices, transform: Callable | None = None) -> "TensorImageDataset":
        """A new dataset of the given rows (copied), with ``transform`` (default: this one's)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return TensorImageDataset(self.images[idx], self.targets[idx],
                                  transform if transform is not None else self.transform,
                                  class_names=self.class_names, mean=self.mean, std=self.std, flip=self.flip)

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"TensorImageDataset(n={n}, shape=({c}, {h}, {w}), classes={int(self.targets.max()) + 1 if n else 0})"
