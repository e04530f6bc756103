"""``digits-lt``: scikit-learn's bundled 8x8 digits (1,797 images) made long-tailed. Needs no download."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import IIFError
from ._small import check_kwargs, longtail_tensor_splits
from .splits import DatasetSplits

__all__ = ["build_digits_lt", "load_digits_uint8", "DIGITS_DEFAULTS"]

# n_max=100 of the ~138 images per class left after the test split; ratio 20 keeps 5 images in the tail
# class (ratio 100 would leave 1). Test 40/class, val 20/class (drawn from pool images not in train).
DIGITS_DEFAULTS = {"n_max": 100, "imbalance_ratio": 20.0, "test_per_class": 40, "val_per_class": 20}


def load_digits_uint8() -> tuple[torch.Tensor, np.ndarray]:
    """All 1,797 digits as uint8 ``(N, 1, 8, 8)`` (sklearn's 0..16 grey levels scaled to 0..255) + labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return torch.from_numpy(img), d.target.astype(np.int64)


def build_digits_lt(root=None, imbalance_ratio=None, profile="exp", seed=0, augment="none", val_per_class=None,
                    **kw) -> DatasetSplits:
    """Per class: ``test_per_class`` images to a balanced test set (numpy seed ``seed``), the rest form a
    pool; the long-tailed train set is drawn from the pool (``n_max``, exp/step profile), the balanced
    validation set from the pool images not drawn. Flips are off (mirrored digits are other glyphs);
    crops pad by 1 pixel."""
    check_kwargs("digits-lt", kw, ("n_max", "test_per_class"))
    n_max = int(kw.pop("n_max", DIGITS_DEFAULTS["n_max"]))
    test_per_class = int(kw.pop("test_per_class", DIGITS_DEFAULTS["test_per_class"]))
    ratio = DIGITS_DEFAULTS["imbalance_ratio"] if imbalance_ratio is None else imbalance_ratio
    vpc = DIGITS_DEFAULTS["val_per_class"] if val_per_class is None else int(val_per_class)
    images, targets = load_digits_uint8()
    rng = np.random.RandomState(int(seed))
    test_idx = []
    for c in range(10):
        idx = np.where(targets == c)[0]
        rng.shuffle(idx)
        test_idx.append(idx[:test_per_class])
    test_idx = np.concatenate(test_idx)
    pool = np.setdiff1d(np.arange(len(targets)), test_idx)
    if n_max + vpc > int(np.bincount(targets[pool]).min()):
        raise IIFError(f"digits-lt has only {int(np.bincount(targets[pool]).min())} pool images in its smallest "
                       f"class; n_max={n_max} + val_per_class={vpc} does not fit. Lower n_max, val_per_class "
                       "or test_per_class.")
    pool_t = torch.from_numpy(pool)
    return longtail_tensor_splits(
        "digits-lt", images[pool_t], targets[pool], images[torch.from_numpy(test_idx)], targets[test_idx],
        num_classes=10, n_max=n_max, imbalance_ratio=ratio, profile=profile, seed=seed, val_per_class=vpc,
        augment=augment, class_names=[str(i) for i in range(10)], flip=False, padding=1, kw=kw)
