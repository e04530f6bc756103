"""Training and inference loops for torchvision detectors (the shape of torchvision's references/detection).

:func:`train_detector` is one plain loop: SGD with momentum and weight decay, a linear warm-up over the first
``warmup_iters`` iterations, step decay (x ``gamma``) at the epoch ``milestones``, optional gradient-norm
clipping, a non-finite-loss check that stops with a clear error, and one checkpoint per epoch written
atomically to ``out_dir/last.pt``. ``resume=True`` continues from that checkpoint exactly: model, optimizer,
scheduler, AMP scaler and every RNG state (stored as tensors and plain lists, so the file loads with
``torch.load(weights_only=True)``) are restored, and the per-epoch data order is a function of (seed, epoch),
so the resumed weights equal an uninterrupted run's. Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) the
process group is joined (gloo on CPU, nccl on GPU) and left open for :func:`predict`, the model is wrapped in
``DistributedDataParallel`` and the data sharded by rank; BatchNorm statistics stay per rank (convert with
``nn.SyncBatchNorm.convert_sync_batchnorm`` before the call for tiny per-GPU batches). Checked by hand with
``torchrun --nproc_per_node 2`` on CPU: identical weights on both ranks, each image once per epoch.

:func:`predict` runs a detector over a dataset and returns LVIS/COCO result dicts.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import IIFError
from ..resources import peak_rss_mb
# the one runtime of both tasks: schedule, step, device, DDP set-up, checkpoint state and the resume rule
from ..runtime import (AMP, NonFiniteLoss, WarmupSchedule, autocast, check_finite_loss, check_same_settings,
                       load_checkpoint, optimizer_step, resolve_device, restore_training_state, settings_hash,
                       training_state)
from ..runtime.distributed import (DistInfo, all_reduce_sum, current_group, gather_rng_states, join_process_group,
                                   seed_rank_stream, wrap_ddp)
from ..runtime.progress import EpochSums
from ..outputs import atomic_torch_save  # the one home of atomic writes
from .data import collate
from .eqlv2 import load_margin_state, margin_state

__all__ = ["DetectionSchedule", "train_detector", "train_one_epoch", "predict"]

#: The detection configuration of the one schedule (:class:`iif.runtime.WarmupSchedule`): warm-up in iterations
#: from ``warmup_factor``, multiplied by the step decay at epoch ``milestones``; called with the old keywords
#: ``(iters_per_epoch, warmup_iters, milestones, gamma, warmup_factor)``.
DetectionSchedule = WarmupSchedule.detection


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
            for t in targets]


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _check_args(dataset, epochs: int, batch_size: int, lr: float, warmup_iters: int, milestones, amp: str,
                clip_grad_norm, num_workers: int) -> None:
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise IIFError(f"dataset must be map-style (len and ds[i] -> (image, target)); got {type(dataset).__name__}.")
    if len(dataset) == 0:
        raise IIFError("the training dataset is empty; check the annotation json and image root.")
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("warmup_iters", warmup_iters, 0),
                             ("num_workers", num_workers, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise IIFError(f"{name} must be an int >= {low}; got {value!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise IIFError(f"lr must be a positive number; got {lr!r}.")
    if any(int(m) < 1 for m in milestones):
        raise IIFError(f"milestones are epochs >= 1; got {tuple(milestones)}.")
    if amp not in AMP:
        raise IIFError(f"unknown amp {amp!r}; use one of {', '.join(AMP)}.")
    if clip_grad_norm is not None and not (clip_grad_norm > 0):
        raise IIFError(f"clip_grad_norm must be positive or None; got {clip_grad_norm!r}.")


@dataclass
class _DetRun:
    """What the steps of one :func:`train_detector` call share (built by :func:`_build_run`)."""

    model: nn.Module
    net: nn.Module  # the model, DDP-wrapped under torchrun
    loader: Any
    sampler: Any
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    dev: torch.device
    info: DistInfo
    settings: dict
    settings_hash: str
    epochs: int
    amp: str
    clip_grad_norm: float | None
    log: Callable[[str], Any]
    log_every: int
    out: Path | None
    history: list = field(default_factory=list)

    @property
    def checkpoint(self) -> Path | None:
        return self.out / "last.pt" if self.out is not None else None


def train_detector(
    model: nn.Module,
    dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    warmup_iters: int = 0,
    warmup_factor: float = 1e-3,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    clip_grad_norm: float | None = None,
    sampler=None,
    device: str | torch.device = "cpu",
    amp: str = "none",
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    log: Callable[[str], Any] = print,
    log_every: int = 0,
    num_workers: int = 0,
    seed: int = 0,
    stop_after_epoch: int | None = None,
    epoch_end: Callable[[nn.Module, int], dict | None] | None = None,
) -> dict:
    """Train ``model`` (a torchvision detector in train mode returns its loss dict) on ``dataset``.

    Args:
        model: Faster/Mask R-CNN or SSD (e.g. from :func:`iif.detection.build_detector`, possibly switched
            with ``use_margin`` before this call, since the optimizer is built here).
        dataset: map-style, ``ds[i] -> (image float (3,H,W) in [0,1], target dict)``.
        epochs, batch_size: epochs in total (also when resuming) and the global batch (divided over ranks).
        lr, momentum, weight_decay: SGD; ``lr`` is the peak learning rate for the global batch.
        warmup_iters, warmup_factor: linear warm-up from ``lr * warmup_factor`` over the first iterations.
        milestones, gamma: the learning rate is multiplied by ``gamma`` at the start of each milestone epoch.
        clip_grad_norm: clip the global gradient norm to this value (None: no clipping).
        sampler: an epoch-aware sampler (``set_epoch``), e.g. ``RepeatFactorSampler``, already sharded by rank
            under DDP; default: every image once per epoch in a (seed, epoch)-seeded random order, sharded.
        device, amp: where to train (``auto``, ``cpu``, ``cuda``, ``cuda:N``; :func:`iif.runtime.resolve_device`),
            and ``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA) autocast.
        out_dir: where ``last.pt`` is written after every epoch (atomically); None writes nothing.
        resume: continue from ``out_dir/last.pt`` if it exists (same settings required), else start fresh.
        log, log_every: a callable for progress lines, every ``log_every`` iterations (0: per epoch only).
        num_workers, seed: DataLoader workers; the seed of the data order and of the first epoch's RNG.
        stop_after_epoch: return after this many epochs are done (tests and time-limited runs), checkpoint kept.
        epoch_end: ``epoch_end(model, epoch)`` on every rank after each epoch's training, before its checkpoint
            (e.g. FASA's sampling adaptation, :class:`iif.detection.fasa.FASAAdaptation`); a dict it returns joins
            the epoch's history row. It must leave the training RNG streams as it found them.

    Returns:
        ``{"history": [per-epoch rows: epoch, lr, loss and each loss term, images, seconds, images_per_s],
        "epochs_done": int, "finished": bool, "checkpoint": path or None, "peak_rss_mb": float}``.
    """
    milestones = tuple(int(m) for m in milestones)
    _check_args(dataset, epochs, batch_size, lr, warmup_iters, milestones, amp, clip_grad_norm, num_workers)
    dev, info = _join(device, batch_size)
    settings = {"epochs_planned": epochs, "batch_size": batch_size, "lr": lr, "momentum": momentum,
                "weight_decay": weight_decay, "warmup_iters": warmup_iters, "warmup_factor": warmup_factor,
                "milestones": list(milestones), "gamma": gamma, "clip_grad_norm": clip_grad_norm, "amp": amp,
                "seed": seed, "world_size": info.world_size, "images": len(dataset),
                "sampler": type(sampler).__name__ if sampler is not None else "default"}
    run = _build_run(model, dataset, settings, sampler, dev, info, num_workers, log, log_every, out_dir)
    start_epoch = _restore(run, resume, out_dir, seed)
    if run.out is not None and run.info.is_main:
        run.out.mkdir(parents=True, exist_ok=True)

    finished = _run_epochs(run, start_epoch, epochs, stop_after_epoch, epoch_end)
    history = run.history
    return {"history": history, "epochs_done": history[-1]["epoch"] if history else start_epoch,
            "finished": finished, "checkpoint": str(run.checkpoint) if run.checkpoint is not None else None,
            "peak_rss_mb": peak_rss_mb()}


def _run_epochs(run: _DetRun, start_epoch: int, epochs: int, stop_after_epoch: int | None, epoch_end) -> bool:
    """Epochs ``start_epoch .. epochs-1``: train, ``epoch_end`` (its dict joins the history row), then the
    checkpoint. False when ``stop_after_epoch`` cut the run short."""
    for epoch in range(start_epoch, epochs):
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return False
        row = train_one_epoch(run, epoch)
        if epoch_end is not None:
            row.update(epoch_end(_unwrap(run.model), epoch) or {})
        run.history.append(row)
        if run.out is not None:
            state = _checkpoint_state(run, epoch + 1)  # every rank joins the RNG gather
            if run.info.is_main:
                atomic_torch_save(state, run.checkpoint)
    return True


def _join(device, batch_size: int) -> tuple[torch.device, DistInfo]:
    """The device and the process group (:func:`iif.runtime.distributed.join_process_group`: this rank's GPU
    under torchrun), then the check that the global batch divides over the ranks."""
    dev, info = join_process_group(device)
    if batch_size % info.world_size:
        raise IIFError(f"batch_size {batch_size} is not divisible by the world size {info.world_size}; use a multiple "
                       f"of {info.world_size}.")
    return dev, info


def _build_run(model: nn.Module, dataset, settings: dict, sampler, dev: torch.device, info: DistInfo,
               num_workers: int, log, log_every: int, out_dir) -> _DetRun:
    """Data loader, SGD, the schedule (:class:`iif.runtime.WarmupSchedule`), the fp16 scaler and the DDP
    wrapper, from ``settings`` (also hashed here: resume requires the same hash)."""
    per_rank = settings["batch_size"] // info.world_size
    check_hash = settings_hash({k: v for k, v in settings.items() if k != "epochs_planned"})

    from torch.utils.data import DataLoader, DistributedSampler

    if sampler is None:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=settings["seed"], drop_last=False)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate, drop_last=False, persistent_workers=False)
    iters = len(loader)
    if iters == 0:
        raise IIFError(f"the sampler yields no batches of {per_rank} images; lower batch_size or check the sampler.")

    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise IIFError("the detector has no trainable parameters; check trainable_layers.")
    optimizer = torch.optim.SGD(params, lr=settings["lr"], momentum=settings["momentum"],
                                weight_decay=settings["weight_decay"])
    schedule = WarmupSchedule.detection(iters, settings["warmup_iters"], settings["milestones"], settings["gamma"],
                                        settings["warmup_factor"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler("cuda") if settings["amp"] == "fp16" else None
    net = wrap_ddp(model, dev, info)  # iif.runtime, as classification's
    return _DetRun(model, net, loader, sampler, params, optimizer, scheduler, scaler, dev, info, settings, check_hash,
                   settings["epochs_planned"], settings["amp"], settings["clip_grad_norm"], log, log_every,
                   Path(out_dir) if out_dir is not None else None)


def _restore(run: _DetRun, resume: bool, out_dir, seed: int) -> int:
    """``resume``: continue from ``last.pt`` (same settings hash required); otherwise seed this rank's stream.
    Returns the first epoch to train."""
    path = run.checkpoint
    if not (resume and path is not None and path.is_file()):
        if resume and run.info.is_main:
            run.log(f"no checkpoint in {out_dir}; starting from scratch")
        seed_rank_stream(seed, run.info)  # iif.runtime: per-rank streams (augmentation, RoI sampling)
        return 0
    ckpt = load_checkpoint(path, map_location="cpu")
    check_same_settings(ckpt.get("settings_hash"), run.settings_hash, missing_ok=False, message=(
        f"cannot resume from {path}: it was trained with other settings ({ckpt.get('settings')}); use the same "
        "batch size, lr, schedule, seed, world size and dataset, or start in a new out_dir."))
    start_epoch, run.history = restore_training_state(ckpt, run.model, run.optimizer, run.scheduler, run.scaler,
                                                      run.info.rank)
    load_margin_state(_unwrap(run.model), ckpt.get("margin_state"))  # EQLv2's gradient sums (eqlv2.py)
    if run.info.is_main:
        run.log(f"resumed from {path} after epoch {start_epoch}")
    return start_epoch


def _checkpoint_state(run: _DetRun, epoch_done: int, extra: dict | None = None) -> dict:
    """``last.pt`` (and ``nan.pt``): weights, optimizer, schedule, scaler, every rank's RNG, history, settings."""
    return {**training_state(run.model, run.optimizer, run.scheduler, run.scaler, epoch_done,
                             gather_rng_states(run.info)),  # iif.runtime, classification's too
            "history": run.history, "settings": run.settings, "settings_hash": run.settings_hash,
            "margin_state": margin_state(_unwrap(run.model)), **(extra or {})}


def train_one_epoch(run: _DetRun, epoch: int) -> dict:
    """One pass over the loader (torchvision references' ``train_one_epoch``): forward under autocast, the
    loss terms in float32 and summed, the non-finite stop, the update (:func:`iif.runtime.optimizer_step`:
    clipping, SGD, per-iteration LR); returns the epoch's row (mean of each term over every rank's images)."""
    info, dev = run.info, run.dev
    if hasattr(run.sampler, "set_epoch"):
        run.sampler.set_epoch(epoch)
    run.net.train()
    reduce = functools.partial(all_reduce_sum, info=info) if info.distributed else None  # every rank stops together
    sums = EpochSums(dev)  # iif.runtime: reduced over the ranks once, classification's too
    for step, (images, targets) in enumerate(run.loader):
        images = [im.to(dev, non_blocking=True) for im in images]
        targets = _to_device(targets, dev)
        with autocast(dev, run.amp, key="amp"):
            losses = run.net(images, targets)
        losses = {k: v.float() for k, v in losses.items()}
        loss = sum(losses.values())
        try:
            check_finite_loss(loss, epoch, step, reduce=reduce, terms=losses)
        except NonFiniteLoss as exc:
            _stop_on_nan(run, exc)
        optimizer_step(loss, run.optimizer, run.scheduler, scaler=run.scaler, clip_grad_norm=run.clip_grad_norm,
                       params=run.params)
        n = len(images)
        sums.count(n)
        for k, v in (("loss", loss), *losses.items()):
            sums.add(k, v.detach().double() * n)
        if run.log_every and info.is_main and step % run.log_every == 0:
            run.log(f"epoch {epoch + 1}/{run.epochs} iter {step + 1}/{len(run.loader)} loss "
                    f"{float(loss.detach()):.4f} lr {run.optimizer.param_groups[0]['lr']:.3g}")
    totals, images, seconds = sums.reduce(info)
    keys = sorted(totals)
    images_total = max(images, 1.0)
    row = {"epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"],
           **{k: totals[k] / images_total for k in keys},
           "images": int(images), "seconds": seconds, "images_per_s": images_total / max(seconds, 1e-9)}
    if info.is_main:
        run.log(f"epoch {epoch + 1}/{run.epochs} loss {row['loss']:.4f} "
                + " ".join(f"{k[5:] if k.startswith('loss_') else k} {row[k]:.3f}" for k in keys if k != "loss")
                + f" | {row['images_per_s']:.2f} img/s, {seconds:.0f} s")
    return row


def _stop_on_nan(run: _DetRun, exc: NonFiniteLoss) -> None:
    """Save the weights before the bad step to ``nan.pt`` (when there is an out_dir) and stop with one line."""
    terms = ", ".join(f"{k}={v:.4g}" for k, v in exc.terms.items())
    where = None
    if run.out is not None:
        where = run.out / "nan.pt"
        state = _checkpoint_state(run, exc.epoch, {"nan_step": exc.step})  # every rank joins the RNG gather
        if run.info.is_main:
            atomic_torch_save(state, where)
    raise IIFError(
        f"training stopped: the loss is not finite at epoch {exc.epoch + 1}, iteration {exc.step + 1} ({terms}). "
        + (f"Saved the weights before that step to {where}. " if where else "")
        + "Lower lr, lengthen warmup_iters, set clip_grad_norm, use amp='none', or check the boxes.") from None


@torch.no_grad()
def predict(model: nn.Module, dataset, *, device: str | torch.device = "cpu", batch_size: int = 8,
            masks: bool | None = None, amp: str = "none", num_workers: int = 0) -> list[dict]:
    """LVIS/COCO result dicts (``image_id``, ``category_id`` (json id), ``bbox`` [x, y, w, h], ``score`` and,
    with masks, ``segmentation`` RLE) of ``model`` on every image of ``dataset``.

    ``dataset`` is a :class:`iif.detection.DetectionDataset` (its ``category_ids`` map label k to the json id
    ``category_ids[k-1]``). ``masks=None`` writes segmentations when the model predicts masks; ``masks=False``
    on a Mask R-CNN skips its mask branch (boxes only, several times faster on small images). Masks are
    encoded batch by batch, so memory stays at one batch of full-size mask probabilities: the mask head
    runs on ``batch_size x box_detections_per_img`` RoIs at once, so keep ``batch_size`` small on CPU
    (measured: batch 16 of 128-px images with 300 detections each peaked at 6.8 GB, batch 4 at 2.4 GB). Under torchrun each
    rank predicts a strided share and the results are gathered on every rank.
    """
    from torch.utils.data import DataLoader, Subset

    from .components import mask_threshold
    from .data import detections_to_results

    if not isinstance(batch_size, int) or batch_size < 1:
        raise IIFError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    if amp not in AMP:
        raise IIFError(f"unknown amp {amp!r}; use one of {', '.join(AMP)}.")
    category_ids = getattr(dataset, "category_ids", None)
    if category_ids is None:
        raise IIFError(f"{type(dataset).__name__} has no category_ids (label k -> json id); use "
                       "iif.detection.load_detection_dataset.")
    dev = resolve_device(device)
    group = current_group()  # iif.runtime: under torchrun each rank predicts a strided share
    part = dataset
    if group.distributed:
        part = Subset(dataset, list(range(group.rank, len(dataset), group.world_size)))
    model = _unwrap(model).to(dev).eval()
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    results: list[dict] = []
    roi_heads = getattr(model, "roi_heads", None)
    has_mask = bool(roi_heads is not None and roi_heads.has_mask())
    if masks and not has_mask:
        raise IIFError(f"masks=True but {type(model).__name__} has no mask branch; use masks=False for box detectors.")
    use_masks = has_mask if masks is None else bool(masks)
    # Boxes only from a Mask R-CNN: skip its mask branch, which at test time runs on every kept detection
    # (box_detections_per_img of them) and costs more than the rest of the model on small images.
    saved_pool = roi_heads.mask_roi_pool if has_mask and not use_masks else None
    if saved_pool is not None:
        roi_heads.mask_roi_pool = None
    try:
        for images, targets in loader:
            images = [im.to(dev) for im in images]
            with autocast(dev, amp, key="amp"):
                outputs = model(images)
            outputs = [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()}
                       for o in outputs]
            ids = [int(t["image_id"]) for t in targets]
            results.extend(detections_to_results(outputs, ids, list(category_ids), masks=use_masks,
                                                 mask_thresh=mask_threshold(model)))
    finally:
        if saved_pool is not None:
            roi_heads.mask_roi_pool = saved_pool
    if group.distributed:
        import torch.distributed as dist

        gathered: list = [None] * group.world_size
        dist.all_gather_object(gathered, results)
        results = [r for part_results in gathered for r in part_results]
    return results
