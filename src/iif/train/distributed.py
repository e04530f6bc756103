"""Distributed data parallel plumbing for ``torchrun`` (torchvision-reference style, kept small).

``torchrun --nproc_per_node N -m iif.cli train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (nccl on GPU, gloo on
CPU). Without those variables everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import IIFError

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "per_rank_batch", "all_gather_cat", "all_reduce_sum", "barrier", "gather_rng_states"]


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
    """Every rank's RNG states (:func:`iif.train.checkpoint.capture_rng`), in rank order, on every rank, so a
    checkpoint written by rank 0 resumes each rank exactly."""
    from .checkpoint import capture_rng

    mine = capture_rng()
    if not info.distributed:
        return [mine]
    import torch.distributed as dist

    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    return gathered
