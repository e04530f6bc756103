"""Dataset registry and :func:`build_datasets`, the one entry point trainers call."""

from __future__ import annotations

from typing import Callable

from ..errors import IIFError
from .cifar import build_cifar10_lt, build_cifar100_lt
from .digits import build_digits_lt
from .folder import build_folder
from .lists import build_imagenet_lt, build_inat2018, build_places_lt
from .longtail import PROFILES
from .mnist import build_fashion_mnist_lt, build_mnist_lt
from .splits import DatasetSplits
from .transforms import AUGMENTS

__all__ = ["DATASETS", "build_datasets"]

DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "digits-lt": build_digits_lt,
    "mnist-lt": build_mnist_lt,
    "fashion-mnist-lt": build_fashion_mnist_lt,
    "cifar10-lt": build_cifar10_lt,
    "cifar100-lt": build_cifar100_lt,
    "imagenet-lt": build_imagenet_lt,
    "places-lt": build_places_lt,
    "inat2018": build_inat2018,
    "folder": build_folder,
}


def build_datasets(name: str, root=None, imbalance_ratio: float | None = None, profile: str = "exp", seed: int = 0,
                   augment: str = "none", val_per_class: int | None = None, **kw) -> DatasetSplits:
    """Train/val/test splits of a registered dataset (see docs/datasets.md).

    ``imbalance_ratio`` None means the dataset's default (100 for CIFAR/MNIST, 20 for digits, none for list
    datasets and ``folder``). ``val_per_class`` None means the dataset's default; 0 gives ``val=None``.
    Extra ``kw`` go to the dataset (e.g. ``n_max``, ``download``, ``list_root``, ``num_classes``,
    ``cutout``, ``policy``). ``freq`` counts the train split; a train split with an empty class raises.
    """
    if name not in DATASETS:
        raise IIFError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
    if profile not in PROFILES:
        raise IIFError(f"unknown long-tail profile {profile!r}; use one of {', '.join(PROFILES)}.")
    if augment not in AUGMENTS:
        raise IIFError(f"unknown augment recipe {augment!r}; use one of {', '.join(AUGMENTS)}.")
    if val_per_class is not None and int(val_per_class) < 0:
        raise IIFError(f"val_per_class must be >= 0; got {val_per_class}.")
    return DATASETS[name](root=root, imbalance_ratio=imbalance_ratio, profile=profile, seed=seed, augment=augment,
                          val_per_class=val_per_class, **kw)
