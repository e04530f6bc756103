"""One training step's pieces, shared by classification (:mod:`iif.train.epoch`) and detection
(:mod:`iif.detection.engine`): the autocast context, the non-finite-loss stop and the update (backward,
optional gradient clipping, optimizer and LR steps, with or without an fp16 gradient scaler).

    with autocast(device, amp):
        loss = criterion(model(x).float(), y)
    check_finite_loss(loss, epoch, step, reduce=None)        # NonFiniteLoss before any update
    optimizer_step(loss, optimizer, scheduler, scaler=None, clip_grad_norm=None)
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterable, Mapping

import torch

from ..errors import IIFError

__all__ = ["AMP", "autocast", "NonFiniteLoss", "check_finite_loss", "optimizer_step"]

#: The mixed-precision settings (``runtime.amp`` of both tasks' configs, ``amp=`` of the Python API).
AMP = ("none", "bf16", "fp16")


def autocast(device: torch.device, amp: str, key: str = "runtime.amp"):
    """The autocast context of ``amp``: none (also ``""``, None, False), bf16 (any device) or fp16 (CUDA only).

    ``key`` names the setting in the error messages (``runtime.amp`` in a config, ``amp`` in a call)."""
    if amp in ("none", "", None, False):
        return contextlib.nullcontext()
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        if device.type != "cuda":
            raise IIFError(f"{key}=fp16 needs a CUDA device; use {key}=bf16 on CPU or {key}=none.")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    raise IIFError(f"unknown {key} {amp!r}; use none, bf16 or fp16.")


class NonFiniteLoss(Exception):
    """The loss became NaN or inf at ``epoch`` / ``step`` (0-based; raised before the optimizer step).

    ``value`` is the loss, ``terms`` its named parts as floats (a detector's loss dict; empty otherwise). Each
    task turns it into its one-line :class:`iif.errors.IIFError` after saving ``nan.pt``."""

    def __init__(self, epoch: int, step: int, value: float, terms: Mapping[str, float] | None = None) -> None:
        super().__init__(f"loss is {value} at epoch {epoch + 1}, step {step + 1}")
        self.epoch, self.step, self.value = epoch, step, value
        self.terms = dict(terms or {})


def check_finite_loss(loss: torch.Tensor, epoch: int, step: int, *,
                      reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      terms: Mapping[str, torch.Tensor] | None = None) -> None:
    """Raise :class:`NonFiniteLoss` when ``loss`` is NaN or inf (one host sync per step).

    Under DDP pass ``reduce`` (a sum over ranks, e.g. ``iif.train.distributed.all_reduce_sum`` bound to the
    process group): every rank then stops together, or the others would hang in the next all-reduce."""
    bad = ~torch.isfinite(loss.detach())
    if reduce is not None:
        bad = reduce(bad.to(torch.float32)) > 0
    if bool(bad):
        raise NonFiniteLoss(epoch, step, float(loss.detach()),
                            {k: float(v.detach()) for k, v in (terms or {}).items()})


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler=None, *,
                   scaler: torch.amp.GradScaler | None = None, clip_grad_norm: float | None = None,
                   params: Iterable[torch.Tensor] | None = None) -> None:
    """The update of one iteration: zero the gradients, backward (scaled under fp16), clip the global gradient
    norm of ``params`` to ``clip_grad_norm`` (after unscaling; None: no clipping), optimizer step, then the
    per-iteration LR step of ``scheduler`` (if given)."""
    if clip_grad_norm is not None and params is None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
    if scheduler is None:
        return
    if scaler is not None:
        with warnings.catch_warnings():
            # fp16: the scaler skips the optimizer step while it calibrates; the schedule still advances.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            scheduler.step()
    else:
        scheduler.step()
