"""Epoch-seeded, rank-sharded samplers for long-tailed training (Kang et al., 2020, "Decoupling").

Every rank builds the same global index list from ``seed + epoch`` and takes the slice
``[rank::num_replicas]`` (:func:`iif.runtime.distributed.rank_share`, the share detection's
``RepeatFactorSampler`` takes too); the global list has ``ceil(N / num_replicas) * num_replicas`` entries, so each
rank yields the same number of samples. ``random`` is a permutation padded by wrapping around to its start
(like ``torch.utils.data.DistributedSampler``): every index appears once per epoch across ranks, plus at
most ``num_replicas - 1`` repeats. The others draw with replacement from per-image probabilities
``p_j ∝ q(y_j) / n_{y_j}`` where ``q`` is the class distribution:

- ``class_balanced``: ``q_c = 1 / C``;
- ``sqrt``: ``q_c ∝ sqrt(n_c)``;
- ``progressive``: ``q_c(t) = (1 - t/T) n_c / N + (t/T) / C`` for epoch ``t`` of ``T = total_epochs``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import IIFError
from ..runtime.distributed import padded_to_multiple, rank_share

__all__ = ["SAMPLERS", "EpochSampler", "RandomShardSampler", "ClassAwareSampler", "build_sampler"]

SAMPLERS = ("random", "class_balanced", "sqrt", "progressive")


class EpochSampler(Sampler[int]):
    """Base: the rank's shard of ``global_indices(epoch)``; call ``set_epoch`` before each epoch."""

    def __init__(self, targets, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
        if t.ndim != 1 or t.size == 0:
            raise IIFError(f"a sampler needs a non-empty 1-D list of class labels; got shape {t.shape}.")
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise IIFError(f"need num_replicas >= 1 and 0 <= rank < num_replicas; got rank={rank}, "
                           f"num_replicas={num_replicas}.")
        self.targets = t.astype(np.int64)
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.epoch = 0
        self.num_samples = math.ceil(len(self.targets) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def global_indices(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self):
        return iter(rank_share(self.global_indices(), self.rank, self.num_replicas).tolist())

    def __len__(self) -> int:
        return self.num_samples


class RandomShardSampler(EpochSampler):
    """Instance-balanced: a fresh permutation each epoch, padded by wrapping to a multiple of the ranks."""

    def global_indices(self) -> torch.Tensor:
        """This epoch's permutation, padded by wrapping around to ``total_size`` (a multiple of the ranks)."""
        return padded_to_multiple(torch.randperm(len(self.targets), generator=self._generator()), self.num_replicas)


class ClassAwareSampler(EpochSampler):
    """Draws ``total_size`` images per epoch with replacement, class ``c`` with probability ``q_c``."""

    def __init__(self, targets, mode: str, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 total_epochs: int | None = None) -> None:
        super().__init__(targets, num_replicas, rank, seed)
        if mode == "progressive" and (total_epochs is None or int(total_epochs) < 1):
            raise IIFError("the progressive sampler needs total_epochs >= 1 (it moves from instance- to "
                           f"class-balanced over them); got total_epochs={total_epochs}.")
        self.mode = mode
        self.total_epochs = int(total_epochs) if total_epochs is not None else None
        self.counts = np.bincount(self.targets)

    def class_probs(self, epoch: int | None = None) -> np.ndarray:
        """``q_c`` over the classes present (absent classes get 0) at ``epoch`` (default: the current one)."""
        n = self.counts.astype(np.float64)
        present = n > 0
        if self.mode == "class_balanced":
            q = present / present.sum()
        elif self.mode == "sqrt":
            q = np.sqrt(n) / np.sqrt(n).sum()
        else:
            t = min(self.epoch if epoch is None else int(epoch), self.total_epochs) / self.total_epochs
            q = (1 - t) * n / n.sum() + t * present / present.sum()
        return q

    def global_indices(self) -> torch.Tensor:
        q = self.class_probs()
        per_image = q[self.targets] / self.counts[self.targets]
        return torch.multinomial(torch.as_tensor(per_image, dtype=torch.float64), self.total_size,
                                 replacement=True, generator=self._generator())


def build_sampler(name: str, targets, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                  total_epochs: int | None = None) -> EpochSampler:
    """A sampler by name: ``random``, ``class_balanced``, ``sqrt`` or ``progressive`` (see module doc)."""
    if name == "random":
        return RandomShardSampler(targets, num_replicas, rank, seed)
    if name in SAMPLERS:
        return ClassAwareSampler(targets, name, num_replicas, rank, seed, total_epochs)
    raise IIFError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}.")
