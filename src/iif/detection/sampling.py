"""Repeat-factor sampling (Gupta et al., LVIS, CVPR 2019; the paper's RFS rows of Tables XII-XIV).

Each training image ``i`` is repeated ``r_i`` times per epoch on average, where

    f_c = (number of training images containing c) / (number of training images)
    r_c = max(1, sqrt(t / f_c))
    r_i = max over the categories c present in image i of r_c      (1 for an image without annotations)

with threshold ``t`` (0.001 for LVIS). A fractional ``r_i`` is realised in one of two ways
(``RepeatFactorSampler(rounding=...)``, config key ``data.rfs_rounding``):

* ``"stochastic"`` (detectron2's ``RepeatFactorTrainingSampler``, the default): each epoch ``floor(r_i)``
  copies plus one more with probability ``r_i - floor(r_i)``, so ``r_i`` copies on average;
* ``"ceil"`` (mmdetection's ``ClassBalancedDataset``, which the paper's authors trained with): ``ceil(r_i)``
  copies every epoch, so an oversampled image is seen up to one time more per epoch than its factor and
  the epoch is longer (``sum ceil(r_i)`` images instead of ``sum r_i`` on average).

:func:`repeat_factors` computes ``r`` from the annotation json with numpy (an LVIS v1-sized json takes well
under a second after ``json.load``; ``benchmarks/bench_repeat_factors.py``); :class:`RepeatFactorSampler`
draws the per-epoch index list, identically on every rank, and shards it for DDP.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from ..errors import IIFError
from ..frequency import ClassFrequency
from ..readers import index_of as _index_of, int_column as _int_column, read_json as _read_json
from ..runtime.distributed import current_group, rank_share

__all__ = ["repeat_factors", "RepeatFactorSampler", "ROUNDINGS"]

#: How a fractional repeat factor becomes a whole number of copies (module docstring).
ROUNDINGS: tuple[str, ...] = ("stochastic", "ceil")


def repeat_factors(annotations: str | os.PathLike | Mapping[str, Any], threshold: float = 0.001) -> np.ndarray:
    """Per-image repeat factors ``r_i`` of LVIS repeat-factor sampling, in the json's image order.

    Args:
        annotations: a COCO/LVIS training json (path or loaded dict), or a
            :class:`iif.detection.DetectionDataset` (factors of its images, in its order: the json's factors at
            ``dataset.json_positions``).
        threshold: ``t``; categories in fewer than a fraction ``t`` of the images are oversampled
            (``r_c = sqrt(t / f_c)``). LVIS uses 0.001.

    Returns:
        float64 array, one factor >= 1 per image. ``f_c`` counts images over every image of the json
        (``ClassFrequency.from_coco``'s ``image_counts / num_images``); crowd annotations count, as in the
        LVIS paper's category frequencies. detectron2 divides by the images it keeps for training instead;
        on LVIS v1 train every image has annotations, so both agree.
    """
    positions = getattr(annotations, "json_positions", None)
    if positions is not None and hasattr(annotations, "coco"):
        return repeat_factors(annotations.coco.dataset, threshold)[np.asarray(positions, dtype=np.int64)]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            math.isfinite(threshold) and threshold > 0):
        raise IIFError(f"threshold must be a positive number (LVIS uses 0.001); got {threshold!r}.")
    if isinstance(annotations, (str, os.PathLike)):
        data, name = _read_json(annotations), str(annotations)
    else:
        data, name = annotations, "annotation dict"
    freq = ClassFrequency.from_coco(data, name=name)  # validates ids and counts images per category
    images, anns = data["images"], data["annotations"]
    factors = np.ones(len(images), dtype=np.float64)
    if not anns:
        return factors
    fraction = freq.image_counts / max(freq.num_images, 1)
    with np.errstate(divide="ignore"):
        # A category without images has no annotation to look it up: its factor is never used.
        class_factor = np.maximum(1.0, np.sqrt(threshold / np.where(fraction > 0, fraction, np.inf)))
    cat_ids = np.asarray(freq.class_ids, dtype=np.int64)  # sorted
    img_ids = _int_column(images, "id", "images", name)
    img_order = np.argsort(img_ids, kind="stable")
    ci, _ = _index_of(cat_ids, _int_column(anns, "category_id", "annotations", name))
    ii, _ = _index_of(img_ids[img_order], _int_column(anns, "image_id", "annotations", name))
    np.maximum.at(factors, img_order[ii], class_factor[ci])
    return factors


def _default_replicas() -> tuple[int, int]:
    group = current_group()  # iif.runtime: the process group already joined, else 1 and 0
    return group.world_size, group.rank


class RepeatFactorSampler(Sampler[int]):
    """Per-epoch repeat-factor sampling (stochastic or ceil rounding), sharded for DistributedDataParallel.

    For epoch ``e`` a generator seeded by ``(seed, e)`` (the same on every rank) draws
    ``n_i = floor(r_i) + Bernoulli(r_i - floor(r_i))`` copies of each image ``i`` (``rounding="stochastic"``;
    ``E[n_i] = r_i``), or takes ``n_i = ceil(r_i)`` (``rounding="ceil"``); the resulting index list is
    shuffled with the same generator (``shuffle=True``), padded by repeating its start to a multiple of
    ``num_replicas``, and rank ``k`` takes every ``num_replicas``-th index from position ``k``. So every
    rank has the same length, the ranks' lists are disjoint apart from the padding, and their union is the
    epoch's list. ``E[n_i] = r_i``.

    Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``). ``len(sampler)`` is this
    rank's length for the current epoch: the epoch's list is drawn (and cached) the first time either
    ``len`` or ``iter`` needs it, so a ``DataLoader`` asking for its length before iterating gets the length
    it will iterate. The length changes a little from epoch to epoch (its variance is
    ``sum frac(r_i)(1 - frac(r_i))``); :attr:`expected_len` is its mean, for schedules planned in advance.

    Args:
        factors: one repeat factor >= 0 per dataset index (e.g. :func:`repeat_factors`).
        num_replicas, rank: the DDP world size and this process's rank; default: from ``torch.distributed``
            when it is initialised, else 1 and 0.
        seed: the base seed (same on every rank).
        shuffle: shuffle each epoch's list (False keeps the copies of each image together, in index order).
        rounding: ``"stochastic"`` (detectron2, default) or ``"ceil"`` (mmdetection / the paper's authors).
    """

    def __init__(self, factors, *, num_replicas: int | None = None, rank: int | None = None, seed: int = 0,
                 shuffle: bool = True, rounding: str = "stochastic") -> None:
        if rounding not in ROUNDINGS:
            raise IIFError(f"rounding must be 'stochastic' (detectron2: r copies on average) or 'ceil' "
                           f"(mmdetection's ClassBalancedDataset: ceil(r) copies); got {rounding!r}.")
        self.rounding = rounding
        try:
            r = np.asarray(factors, dtype=np.float64)
        except (TypeError, ValueError):
            raise IIFError(f"factors must be numbers, one per image; got {factors!r:.80}.") from None
        if r.ndim != 1 or r.size == 0:
            raise IIFError(f"factors must be a non-empty 1-D array (one per image); got shape {r.shape}.")
        bad = np.flatnonzero(~np.isfinite(r) | (r < 0))
        if bad.size:
            raise IIFError(f"repeat factors must be finite and >= 0; index {int(bad[0])} has {r[bad[0]]!r} "
                           f"({bad.size} bad in all). Compute them with iif.detection.repeat_factors.")
        default_replicas, default_rank = _default_replicas()
        num_replicas = default_replicas if num_replicas is None else num_replicas
        rank = default_rank if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise IIFError(f"num_replicas must be an int >= 1; got {num_replicas!r}.")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise IIFError(f"rank must be an int in 0..{num_replicas - 1}; got {rank!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise IIFError(f"seed must be a non-negative int; got {seed!r}.")
        self.factors = r
        self.num_replicas, self.rank, self.seed, self.shuffle = int(num_replicas), int(rank), int(seed), bool(shuffle)
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose list ``iter`` and ``len`` give (the same on every rank)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise IIFError(f"epoch must be a non-negative int; got {epoch!r}.")
        self.epoch = int(epoch)

    @property
    def expected_len(self) -> float:
        """Mean of ``len`` over epochs for this rank (before padding): ``sum(factors) / num_replicas``
        (``sum(ceil(factors)) / num_replicas`` with ``rounding="ceil"``, every epoch's length)."""
        total = np.ceil(self.factors).sum() if self.rounding == "ceil" else self.factors.sum()
        return float(total) / self.num_replicas

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """The full (all ranks, unpadded) index list of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        if self.rounding == "ceil":
            copies = np.ceil(self.factors).astype(np.int64)
        else:
            whole = np.floor(self.factors)
            copies = whole.astype(np.int64) + (rng.random(self.factors.size) < self.factors - whole)
        indices = np.repeat(np.arange(self.factors.size, dtype=np.int64), copies)
        if self.shuffle:
            indices = rng.permutation(indices)
        return indices

    def _rank_indices(self) -> np.ndarray:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        mine = rank_share(self.epoch_indices(), self.rank, self.num_replicas)  # iif.runtime, as the classification samplers
        self._cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_indices().tolist())

    def __len__(self) -> int:
        return int(self._rank_indices().size)

    def __repr__(self) -> str:
        return (f"RepeatFactorSampler({self.factors.size} images, mean factor {self.factors.mean():.3f}, "
                f"rank {self.rank}/{self.num_replicas}, seed {self.seed}, epoch {self.epoch}, rounding {self.rounding!r})")
