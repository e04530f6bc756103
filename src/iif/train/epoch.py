"""One training epoch: forward under autocast, loss in float32, backward, SGD and LR steps; progress output.

The step's pieces (autocast, the non-finite-loss stop, the update) are :mod:`iif.runtime`'s, shared with
detection.

``train_one_epoch`` is the torchvision-reference loop the stage orchestration (:mod:`iif.train.engine`)
calls once per epoch. Progress: on a terminal a tqdm bar (removed when the epoch ends); when stderr is
not a terminal (a log file, a CI job) no bar at all, so logs get only the one line per epoch the
engine writes (``iif.train`` logger).
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TextIO

import torch
from torch import nn

from ..runtime import NonFiniteLoss, autocast, check_finite_loss, optimizer_step
from ..runtime.progress import EpochSums
from .distributed import DistInfo, all_reduce_sum

# NonFiniteLoss and autocast live in iif.runtime (one of each for both tasks); named here for old imports.
__all__ = ["NonFiniteLoss", "train_one_epoch", "autocast", "progress_bar"]


def train_one_epoch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches,
    device: torch.device,
    epoch: int,
    *,
    num_classes: int,
    mixup_alpha: float = 0.0,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    info: DistInfo | None = None,
    progress: bool = False,
    log_every: int = 20,
    desc: str | None = None,
) -> dict[str, float]:
    """One pass over ``batches``: forward (under autocast), loss in float32, backward, SGD step, LR step.

    ``forward`` maps images to logits (the DDP-wrapped model, or frozen features + head in stage 2).
    Mixup (if ``mixup_alpha > 0``) turns targets into soft targets fed to the loss. Raises
    :class:`NonFiniteLoss` (before the update) when the loss is NaN/inf. Returns the mean loss,
    accuracy (argmax vs the hard label), images seen and images/s, summed over all ranks.
    """
    from ..data import mixup_batch

    info = info or DistInfo()
    # every rank must stop together on a NaN/inf loss, or the others hang in the next all-reduce
    reduce = functools.partial(all_reduce_sum, info=info) if info.distributed else None
    sums = EpochSums(device, ("loss", "correct"))  # iif.runtime: reduced over the ranks once, detection's too
    bar = progress_bar(batches, progress, desc or f"epoch {epoch + 1}")
    show = not isinstance(bar, _NoBar)  # postfix values cost a host sync: only for a visible bar
    for step, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if mixup_alpha > 0:
            x, target = mixup_batch(x, y, mixup_alpha, num_classes)
        with autocast(device, amp):
            logits = forward(x)
        loss = criterion(logits.float(), target)
        check_finite_loss(loss, epoch, step, reduce=reduce)  # iif.runtime: NonFiniteLoss before the update
        optimizer_step(loss, optimizer, scheduler, scaler=scaler)
        n = y.shape[0]
        sums.count(n)
        sums.add("loss", loss.detach().double() * n)
        sums.add("correct", (logits.detach().argmax(1) == y).sum().double())
        if show and (step % max(log_every, 1) == 0):
            seen = sums.seen
            bar.set_postfix(loss=f"{sums.sums['loss'].item() / seen:.4f}",
                            acc=f"{100 * sums.sums['correct'].item() / seen:.1f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    totals, images, seconds = sums.reduce(info)
    total_seen = max(images, 1.0)
    return {"train_loss": totals["loss"] / total_seen, "train_acc": 100.0 * totals["correct"] / total_seen,
            "images": int(images), "seconds": seconds, "images_per_s": images / max(seconds, 1e-9)}


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable, enabled: bool, desc: str, stream: TextIO | None = None):
    """A tqdm bar over ``iterable`` when ``enabled`` and ``stream`` (default ``sys.stderr``) is a terminal;
    otherwise a silent pass-through with the same ``set_postfix`` method, so a log file gets no bar
    updates (the engine logs one line per epoch instead)."""
    stream = sys.stderr if stream is None else stream
    if not enabled or not _is_terminal(stream):
        return _NoBar(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, file=stream)


class _NoBar:
    """``progress_bar`` when no bar is shown: iterates, ignores ``set_postfix``."""

    def __init__(self, iterable) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **kw) -> None:
        pass
