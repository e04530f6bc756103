"""Shared recipe for the in-memory long-tailed benchmarks (digits, MNIST, Fashion-MNIST, CIFAR)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import IIFError
from .longtail import longtail_counts, longtail_train_val
from .splits import DatasetSplits, finish_splits
from .tensor_dataset import TensorImageDataset
from .transforms import NORMALIZE, build_transform

_TRANSFORM_KEYS = ("cutout", "policy", "randaugment_n", "randaugment_m")


def transforms_for(name: str, augment: str, image_size: int, flip: bool, padding: int, kw: dict):
    """(train, eval) per-sample transforms for a tensor dataset; ``kw`` may hold cutout/policy/randaugment_*."""
    mean, std = NORMALIZE[name]
    opts = {k: kw[k] for k in _TRANSFORM_KEYS if k in kw}
    train_tf = build_transform(augment, mean, std, train=True, image_size=image_size, kind="tensor", flip=flip,
                               padding=padding, **opts)
    eval_tf = build_transform("none", mean, std, train=False, image_size=image_size, kind="tensor")
    return train_tf, eval_tf


def download(name: str, root: str, fetch: Callable[[], Any]) -> Any:
    """Run a torchvision download ``fetch()``; a failure (network, disk, checksum) becomes one IIFError that
    says how to retry. torchvision checks the md5 of what is there first, so running the same command again
    fetches only what is missing or corrupt."""
    try:
        return fetch()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # URLError/HTTPError/socket timeouts are OSErrors; bad checksums RuntimeErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IIFError(f"downloading {name} into {root} failed ({type(exc).__name__}: {reason}); check the network "
                       f"and free disk space, then run the same command again (files already verified are kept; "
                       f"a partial archive is checked and fetched again), or put the files in {root} by hand and "
                       "drop data.options.download=true (download=True in Python).") from None


def check_kwargs(name: str, kw: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(kw) - set(allowed) - set(_TRANSFORM_KEYS))
    if unknown:
        raise IIFError(f"dataset {name!r} does not take option(s) {', '.join(unknown)}; it accepts "
                       f"{', '.join(sorted(set(allowed) | set(_TRANSFORM_KEYS)))}.")


def longtail_tensor_splits(name: str, train_images: torch.Tensor, train_targets: np.ndarray,
                           test_images: torch.Tensor, test_targets: np.ndarray, *, num_classes: int, n_max: int,
                           imbalance_ratio: float, profile: str, seed: int, val_per_class: int, augment: str,
                           class_names: Sequence[str], flip: bool, padding: int, kw: dict) -> DatasetSplits:
    """Long-tailed train (the LDAM-DRW draw, numpy seed ``seed``), a balanced validation set holding every
    class and disjoint from train (:func:`iif.data.longtail.longtail_train_val`: unselected training images,
    seed ``seed + 1``; a class with too few left, such as CIFAR-LT's head, gives the missing ones from the
    end of its draw), and the given balanced test set. ``val_per_class=0``: no validation, exact draw."""
    mean, std = NORMALIZE[name]
    train_tf, eval_tf = transforms_for(name, augment, int(train_images.shape[-1]), flip, padding, kw)
    counts = longtail_counts(n_max, num_classes, imbalance_ratio, profile)
    tr_idx, va_idx, _ = longtail_train_val(train_targets, counts, seed, val_per_class, num_classes)
    common = dict(class_names=class_names, mean=mean, std=std, flip=flip)
    full = TensorImageDataset(train_images, train_targets, None, **common)
    train = full.subset(tr_idx, train_tf)
    val = full.subset(va_idx, eval_tf) if va_idx is not None else None
    test = TensorImageDataset(test_images, test_targets, eval_tf, **common)
    return finish_splits(name, train, val, test, num_classes, int(train_images.shape[1]),
                         int(train_images.shape[-1]), class_names, mean, std)
