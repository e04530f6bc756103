"""The per-epoch figures both trainers report (classification's ``train_one_epoch`` in :mod:`iif.train.epoch`,
detection's in :mod:`iif.detection.engine`): sums kept on the device during the epoch (no host sync per step),
then one all-reduce over the ranks, so every rank's images count and every rank gets the same numbers.

    sums = EpochSums(device)
    for step, batch in enumerate(loader):
        ...
        sums.add("loss", loss.detach().double() * n)
        sums.count(n)
    totals, images, seconds = sums.reduce(info)       # {"loss": sum over every rank}, images, seconds

Each task turns the totals into its own row and its own progress line (classification: a tqdm bar on a
terminal plus one ``iif.train`` log line per epoch; detection: a ``log`` callable every ``log_every``
iterations and once per epoch); those formats are the tasks' own (docs/ARCHITECTURE.md, "One runtime").
"""

from __future__ import annotations

import time

import torch

from .distributed import DistInfo, all_reduce_sum

__all__ = ["EpochSums"]


class EpochSums:
    """Running float64 sums of an epoch on ``device`` and the images seen, reduced over the ranks once; ``keys``
    start at 0 (so an epoch without a batch still reports them), others when first added."""

    def __init__(self, device: torch.device, keys: tuple[str, ...] = ()) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {k: torch.zeros((), dtype=torch.float64, device=device) for k in keys}
        self.seen = 0
        self.start = time.perf_counter()

    def add(self, key: str, value: torch.Tensor) -> None:
        """Add ``value`` (a float64 scalar tensor on the device: a loss times the batch size, a count) to ``key``."""
        old = self.sums.get(key)
        if old is None:
            old = torch.zeros((), dtype=torch.float64, device=self.device)
        self.sums[key] = old + value

    def count(self, n: int) -> None:
        """``n`` more images seen by this rank."""
        self.seen += int(n)

    def reduce(self, info=None) -> tuple[dict[str, float], float, float]:
        """``(totals, images, seconds)``: each key's sum over every rank
        (:func:`iif.runtime.distributed.all_reduce_sum`, keys in the order first added), the images every rank
        saw, and this rank's seconds since the sums were made (after waiting for a CUDA device to finish)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.start
        keys = list(self.sums)
        seen = torch.tensor(float(self.seen), dtype=torch.float64, device=self.device)
        totals = all_reduce_sum(torch.stack([self.sums[k] for k in keys] + [seen]), info or DistInfo())
        return {k: float(totals[i]) for i, k in enumerate(keys)}, float(totals[-1]), seconds
