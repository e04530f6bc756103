"""Distributed data parallel plumbing for ``torchrun`` (torchvision-reference style, kept small), the one DDP
set-up of both tasks (issue 16, "one runtime"; moved here from ``iif.train.distributed``, which re-exports it).

``torchrun --nproc_per_node N -m iif.cli train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (nccl on GPU, gloo on
CPU). Without those variables everything runs as a single process (rank 0 of 1).

* :func:`join_process_group`: the device (:func:`iif.runtime.resolve_device`), the process group, and this
  rank's GPU (``cuda:LOCAL_RANK``) under torchrun: ``iif train``, ``train_detector`` and ``iif det-train``;
* :func:`on_main_rank`: a value rank 0 computes (a run folder it prepares) that every rank learns, or the
  one-line error rank 0 met, raised on every rank so none waits for the others;
* :func:`rank_share`: this rank's share of an epoch's index list (padded by wrapping around to a multiple of
  the ranks), what every sampler of both tasks hands to its ``DataLoader``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from ..errors import IIFError
from .checkpoint import capture_rng
from .device import resolve_device

__all__ = ["DistInfo", "init_distributed", "current_group", "join_process_group", "wrap_ddp", "seed_rank_stream",
           "on_main_rank", "padded_to_multiple",
           "rank_share", "cleanup_distributed", "per_rank_batch", "all_gather_cat", "all_reduce_sum", "barrier",
           "gather_rng_states"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (if set)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    try:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    except ValueError as exc:
        raise IIFError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (set by torchrun); got {exc}.") from exc
    if world <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=local)
    if dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, initialized_here=True)


def current_group() -> DistInfo:
    """Rank and world size of the process group already joined (by :func:`init_distributed` or the caller), or
    rank 0 of 1 when there is none: what code handed a model or sampler under torchrun reads (detection's
    ``predict`` and ``RepeatFactorSampler``)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size())
    return DistInfo()


def join_process_group(device: str | torch.device | None) -> tuple[torch.device, DistInfo]:
    """``(device, info)`` of this process: ``device`` resolved (:func:`iif.runtime.resolve_device`), the process
    group joined (:func:`init_distributed`), and on CUDA under torchrun this rank's GPU ``cuda:LOCAL_RANK``."""
    dev = resolve_device(device)
    info = init_distributed(dev)
    if dev.type == "cuda" and info.distributed:
        dev = torch.device("cuda", info.local_rank)
    return dev, info


def wrap_ddp(module: torch.nn.Module, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` under torchrun (on this rank's GPU, or CPU/gloo), else itself."""
    if not info.distributed:
        return module
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


def seed_rank_stream(seed: int, info: DistInfo) -> None:
    """Seed this rank's own torch stream (augmentation, RoI sampling, dropout) for a run that starts fresh:
    ``seed + 1000 * rank + 1``, so ranks draw differently and rank 0 differs from the model-initialisation seed.
    A resumed run restores its streams from the checkpoint instead."""
    torch.manual_seed(seed + 1000 * info.rank + 1)


def on_main_rank(info: DistInfo, make: Callable[[], Any]) -> Any:
    """``make()`` on rank 0, its value (any picklable object) broadcast to every rank.

    An :class:`IIFError` of rank 0 is raised on every rank with its message (so the others stop with the same
    line instead of waiting for rank 0); a single process just calls ``make()``. Other ranks return whatever
    rank 0 computed, without calling ``make``."""
    if not info.distributed:
        return make()
    value, problem = None, None
    if info.is_main:
        try:
            value = make()
        except IIFError as exc:
            problem = str(exc)
    box = [(problem, value)]
    dist.broadcast_object_list(box, src=0)
    problem, value = box[0]
    if problem is not None:
        raise IIFError(problem)
    return value


def padded_to_multiple(indices, num_replicas: int):
    """``indices`` (a 1-D numpy array or torch tensor) padded by wrapping around to its start up to a multiple of
    ``num_replicas``, as ``torch.utils.data.DistributedSampler`` pads; an empty list stays empty."""
    n = len(indices)
    pad = -n % num_replicas if n else 0
    if not pad:
        return indices
    if isinstance(indices, torch.Tensor):
        return torch.cat([indices, indices.repeat(math.ceil(pad / n))[:pad]])
    return np.concatenate([indices, np.resize(indices, pad)])


def rank_share(indices, rank: int, num_replicas: int):
    """This rank's share of an epoch's index list (the same list on every rank): the list padded
    (:func:`padded_to_multiple`), then every ``num_replicas``-th index from position ``rank``. Every rank gets
    the same length; the shares are disjoint apart from the padding. The samplers of both tasks (the
    classification ones of :mod:`iif.data.samplers`, detection's ``RepeatFactorSampler``) hand this to their
    ``DataLoader``."""
    return padded_to_multiple(indices, num_replicas)[rank::num_replicas]


def cleanup_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """The per-process batch; the global batch must divide evenly so every step sees the same batch."""
    if global_batch < 1:
        raise IIFError(f"optim.batch_size must be >= 1; got {global_batch}.")
    if global_batch % world_size:
        raise IIFError(
            f"global batch size {global_batch} is not divisible by the world size {world_size}; set "
            f"optim.batch_size to a multiple of {world_size} (e.g. {(global_batch // world_size + 1) * world_size}) "
            "or change --nproc_per_node.")
    return global_batch // world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        t = t.clone()
        dist.all_reduce(t)
    return t


def all_gather_cat(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0 (ranks may hold different lengths)."""
    if not info.distributed:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's RNG states (:func:`iif.runtime.checkpoint.capture_rng`), in rank order, on every rank, so a
    checkpoint written by rank 0 resumes each rank exactly."""
    mine = capture_rng()
    if not info.distributed:
        return [mine]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    return gathered
