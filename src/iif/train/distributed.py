"""Distributed data parallel plumbing for ``torchrun``: :mod:`iif.runtime.distributed`, the one DDP set-up of
both tasks (issue 16, "one runtime"), re-exported here under the names classification has always used.

``torchrun --nproc_per_node N -m iif.cli train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_distributed` reads them and joins the process group (nccl on GPU, gloo on CPU). Without those
variables everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

from ..runtime.distributed import (DistInfo, all_gather_cat, all_reduce_sum, barrier, cleanup_distributed,
                                   gather_rng_states, init_distributed, join_process_group, on_main_rank,
                                   per_rank_batch)

__all__ = ["DistInfo", "init_distributed", "join_process_group", "on_main_rank", "cleanup_distributed",
           "per_rank_batch", "all_gather_cat", "all_reduce_sum", "barrier", "gather_rng_states"]
