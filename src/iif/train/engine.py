"""The training loop: ``train_one_epoch`` / ``evaluate`` in the torchvision-reference style, and ``fit``.

Programmatic API (used by ``iif train``/``iif eval`` and by ``iif bench``)::

    from iif.train import load_config, fit, extract_features, evaluate_checkpoint
    cfg = load_config("digits_lt_decoupled", ["schedule.epochs=3"])
    result = fit(cfg, out_dir="runs/x")       # -> TrainResult
    result.model, result.splits, result.history, result.final_metrics, result.out_dir
    feats, logits, labels = extract_features(result.model, result.splits.test, "cpu", batch_size=256)

``fit`` accepts ``splits=`` (a prebuilt :class:`iif.data.DatasetSplits`) so a benchmark can train many
methods on one dataset without rebuilding it. ``final_metrics`` maps a method name (``raw``,
``adjusted`` when the loss changes the decision rule, and one entry per post-hoc adjuster such as
``iif:smooth``) to the :func:`iif.metrics.evaluate_logits` dict.

Data paths: a :class:`iif.data.TensorImageDataset` whose per-sample recipe is crop/flip/cutout is kept
as one uint8 tensor on the training device and augmented a whole batch at a time with
:func:`iif.data.batch_augment` (SPEC §6); anything else goes through a ``DataLoader`` with workers. Both
draw their order from :func:`iif.data.build_sampler` with ``set_epoch`` every epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import IIFError
from ..outputs import abandon_run_folder, check_run_folder, finish_run_folder, prepare_run_folder
from .advice import check_config_advice, loader_workers
from .checkpoint import check_resume_compatible, load_checkpoint, restore_rng, save_checkpoint
from .config import TrainConfig, config_hash, config_to_dict, load_config, save_config, validate_config
from .distributed import (DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed,
                          gather_rng_states, per_rank_batch)
from .run_log import TensorBoardLogger, scalar_metrics, write_history_csv, write_json
from .decoupled import prepare_decoupled_model, retrain_classifier, set_stage_train_mode
from .strategies import build_adjuster, trainable_parameters
from .evaluation import (_eval_split, checkpoint_preprocess, evaluate, evaluate_checkpoint, extract_features,
                         loss_adjuster, predict)

__all__ = [
    "TrainResult",
    "StageSpec",
    "fit",
    "train_one_epoch",
    "evaluate",
    "predict",
    "extract_features",
    "evaluate_checkpoint",
    "build_splits",
    "build_model_for",
    "resolve_device",
    "WarmupSchedule",
]

log = logging.getLogger("iif.train")


# ----------------------------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What :func:`fit` returns."""

    model: nn.Module
    splits: Any
    history: list[dict]
    final_metrics: dict[str, dict]
    out_dir: Path | None
    checkpoint: Path | None = None
    config: TrainConfig | None = None
    criterion: nn.Module | None = None
    # False when the run stopped early (runtime.stop_after_epoch), e.g. to be resumed later.
    finished: bool = True


@dataclass
class StageSpec:
    """One training stage (end-to-end, decoupled stage 1 or stage 2) with everything that differs between them."""

    name: str
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    batch_size: int
    schedule: str
    milestones: list
    gamma: float
    warmup_epochs: float
    warmup_start_factor: float
    loss: str
    loss_kwargs: dict
    sampler: str
    mixup_alpha: float
    label_smoothing: float
    frozen_backbone: bool = False
    legacy: bool = False
    extra_hash: dict = field(default_factory=dict)

    @classmethod
    def main(cls, cfg: TrainConfig, name: str = "e2e") -> "StageSpec":
        kw = dict(cfg.loss.kwargs)
        if cfg.loss.name in ("iif", "iif_csl"):
            kw.setdefault("variant", cfg.loss.variant)
        return cls(name, cfg.schedule.epochs, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay,
                   cfg.optim.nesterov, cfg.optim.batch_size, cfg.schedule.name, list(cfg.schedule.milestones),
                   cfg.schedule.gamma, cfg.schedule.warmup_epochs, cfg.schedule.warmup_start_factor, cfg.loss.name,
                   kw, cfg.data.sampler, cfg.data.mixup_alpha, cfg.loss.label_smoothing)

    @classmethod
    def decoupled(cls, cfg: TrainConfig) -> "StageSpec":
        d = cfg.decoupled
        kw = dict(d.loss_kwargs)
        if d.loss in ("iif", "iif_csl"):
            kw.setdefault("variant", d.variant)
        return cls("stage2", d.epochs, d.lr, d.momentum, d.weight_decay, False, d.batch_size or cfg.optim.batch_size,
                   d.schedule, [], 0.1, 0.0, 1.0, d.loss, kw, d.sampler, d.mixup_alpha, 0.0,
                   frozen_backbone=True, legacy=d.legacy)


# ----------------------------------------------------------------------------------------------- building blocks


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; asking for cuda without one is an IIFError."""
    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise IIFError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N (e.g. cuda:1).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IIFError("runtime.device is cuda but no CUDA device is available; use --device cpu.")
    return dev


def build_splits(cfg: TrainConfig):
    """``iif.data.build_datasets`` with the config's data section (list files are validated there), then,
    unless ``data.verify_images`` is false, every image file decoded once (:mod:`iif.data.verify`)."""
    from ..data import build_datasets
    from ..data.lists import LIST_DATASETS
    from ..data.verify import verify_split_images

    d = cfg.data
    options = dict(d.options)
    if d.allow_outside_root and d.name in LIST_DATASETS:
        options.setdefault("allow_outside_root", True)
    splits = build_datasets(d.name, root=d.root, imbalance_ratio=d.imbalance_ratio, profile=d.profile, seed=d.seed,
                            augment=d.augment, val_per_class=d.val_per_class, **options)
    if d.verify_images:
        verify_split_images(splits)
    return splits


def build_model_for(cfg: TrainConfig, splits) -> nn.Module:
    from ..models import build_model

    m = cfg.model
    return build_model(m.arch, splits.num_classes, m.head, splits.in_channels, pretrained=m.pretrained,
                       backbone_kwargs=dict(m.backbone_kwargs), **dict(m.kwargs))


def build_criterion(spec: StageSpec, freq) -> nn.Module:
    from ..losses import build_loss

    kw = dict(spec.loss_kwargs)
    if spec.label_smoothing:
        kw["label_smoothing"] = spec.label_smoothing
    # The loop checks the loss for NaN/inf itself (and saves a checkpoint); labels were checked when the
    # dataset was built. Skipping the loss's own checks saves a host sync per step on a GPU.
    kw.setdefault("check_finite", False)
    kw.setdefault("check_labels", False)
    return build_loss(spec.loss, freq, **kw)


class WarmupSchedule:
    """Learning-rate factor per iteration: linear warm-up, then multistep / cosine / constant.

    ``milestones`` are epochs (paper §V-B1: 360 and 380 of 400 for CIFAR-LT). A plain callable object, so
    ``LambdaLR.state_dict`` stores it and resume needs nothing else.
    """

    def __init__(self, iters_per_epoch: int, epochs: int, name: str = "multistep", milestones=(), gamma: float = 0.1,
                 warmup_epochs: float = 0.0, warmup_start_factor: float = 0.1) -> None:
        if name not in ("multistep", "cosine", "constant"):
            raise IIFError(f"unknown schedule {name!r}; use multistep, cosine or constant.")
        self.iters_per_epoch = max(int(iters_per_epoch), 1)
        self.total = self.iters_per_epoch * max(int(epochs), 1)
        self.name = name
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup = int(round(float(warmup_epochs) * self.iters_per_epoch))
        self.start = float(warmup_start_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.start + (1.0 - self.start) * step / self.warmup
        if self.name == "multistep":
            epoch = step // self.iters_per_epoch
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.name == "cosine":
            t = (step - self.warmup) / max(self.total - self.warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        return 1.0


# ----------------------------------------------------------------------------------------------- batches


_BATCHABLE = {"RandomCrop", "RandomHorizontalFlip", "ToDtype", "Normalize", "Cutout", "ToImage", "ToTensor"}


def batch_recipe(dataset) -> dict | None:
    """If ``dataset`` is a TensorImageDataset whose transform :func:`iif.data.batch_augment` can reproduce
    (crop with padding, flip, cutout, normalise with the dataset's mean/std), the batch_augment options;
    otherwise None (use the per-sample DataLoader path)."""
    from ..data import TensorImageDataset

    if not isinstance(dataset, TensorImageDataset):
        return None
    recipe = {"crop": False, "padding": 0, "flip": False, "cutout": 0, "mean": dataset.mean, "std": dataset.std}
    tf = dataset.transform
    if tf is None:  # images / 255, no normalisation
        recipe.update(mean=(0.0,), std=(1.0,))
        return recipe
    ops = getattr(tf, "transforms", None)
    if ops is None:
        return None
    for op in ops:
        kind = type(op).__name__
        if kind not in _BATCHABLE:
            return None
        if kind == "RandomCrop":
            pad = getattr(op, "padding", 0) or 0
            pad = pad if isinstance(pad, int) else (pad[0] if len(set(pad)) == 1 else None)
            if pad is None or getattr(op, "pad_if_needed", False):
                return None
            recipe.update(crop=pad > 0, padding=int(pad))
        elif kind == "RandomHorizontalFlip":
            if abs(float(getattr(op, "p", 0.5)) - 0.5) > 1e-9:
                return None
            recipe["flip"] = True
        elif kind == "Cutout":
            recipe["cutout"] = int(op.size)
        elif kind == "Normalize":
            recipe.update(mean=tuple(op.mean), std=tuple(op.std))
    return recipe


class ResidentBatches:
    """A TensorImageDataset held on ``device`` as uint8; each epoch yields augmented float batches.

    The order comes from the sampler (this rank's share), the augmentation from
    :func:`iif.data.batch_augment` on the device: no per-sample Python, no host-to-device copies.
    """

    def __init__(self, dataset, recipe: dict, sampler, batch_size: int, device: torch.device, train: bool) -> None:
        self.images = dataset.images.to(device)
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long).to(device)
        self.recipe = recipe
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = device
        self.train = train

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else self.images.shape[0]
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from ..data import batch_augment

        if self.sampler is not None:
            order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        else:
            order = torch.arange(self.images.shape[0], device=self.device)
        r = self.recipe
        for start in range(0, order.numel(), self.batch_size):
            idx = order[start:start + self.batch_size]
            x = batch_augment(self.images[idx], r["mean"], r["std"], crop=self.train and r["crop"],
                              padding=r["padding"], flip=self.train and r["flip"],
                              cutout=r["cutout"] if self.train else 0)
            yield x, self.targets[idx]


def make_train_batches(dataset, sampler, batch_size: int, device: torch.device, cfg: TrainConfig):
    recipe = batch_recipe(dataset) if cfg.data.resident else None
    if recipe is not None:
        return ResidentBatches(dataset, recipe, sampler, batch_size, device, train=True)
    workers = loader_workers(cfg.data.num_workers, len(dataset))  # capped by the CPUs, 0 for small sets
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       pin_memory=device.type == "cuda", drop_last=False,
                                       persistent_workers=False)


def make_eval_batches(dataset, batch_size: int, device: torch.device, info: DistInfo | None = None,
                      num_workers: int = 0, resident: bool = True):
    """Eval batches in dataset order; with DDP each rank takes indices ``rank::world`` (gathered later)."""
    indices = None
    if info is not None and info.distributed:
        indices = list(range(info.rank, len(dataset), info.world_size))
    recipe = batch_recipe(dataset) if resident else None
    if recipe is not None:
        return ResidentBatches(dataset, recipe, indices, batch_size, device, train=False), indices
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, indices)
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       pin_memory=device.type == "cuda"), indices


# ----------------------------------------------------------------------------------------------- one epoch


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss is {value} at epoch {epoch + 1}, step {step + 1}")
        self.epoch, self.step, self.value = epoch, step, value


def _autocast(device: torch.device, amp: str):
    if amp in ("none", "", None, False):
        return contextlib.nullcontext()
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        if device.type != "cuda":
            raise IIFError("runtime.amp=fp16 needs a CUDA device; use runtime.amp=bf16 on CPU.")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    raise IIFError(f"unknown runtime.amp {amp!r}; use none, bf16 or fp16.")


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
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    start = time.perf_counter()
    bar = _progress(batches, progress, desc or f"epoch {epoch + 1}")
    for step, (x, y) in enumerate(bar):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        target = y
        if mixup_alpha > 0:
            x, target = mixup_batch(x, y, mixup_alpha, num_classes)
        with _autocast(device, amp):
            logits = forward(x)
        loss = criterion(logits.float(), target)
        bad = ~torch.isfinite(loss.detach())
        if info.distributed:  # every rank must stop together, or the others hang in all-reduce
            bad = all_reduce_sum(bad.to(torch.float32), info) > 0
        if bool(bad):
            raise NonFiniteLoss(epoch, step, float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scaler is not None:
            with warnings.catch_warnings():
                # fp16: the scaler skips the optimizer step while it calibrates; the schedule still advances.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
                scheduler.step()
        else:
            scheduler.step()
        n = y.shape[0]
        seen += n
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == y).sum().double()
        if progress and (step % max(log_every, 1) == 0):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{100 * correct.item() / seen:.1f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    totals = all_reduce_sum(torch.stack([loss_sum, correct, torch.tensor(float(seen), dtype=torch.float64, device=device)]), info)
    total_seen = max(float(totals[2]), 1.0)
    return {"train_loss": float(totals[0]) / total_seen, "train_acc": 100.0 * float(totals[1]) / total_seen,
            "images": int(totals[2]), "seconds": seconds, "images_per_s": float(totals[2]) / max(seconds, 1e-9)}


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return _NoBar(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


class _NoBar:
    def __init__(self, iterable) -> None:
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **kw) -> None:
        pass


# ----------------------------------------------------------------------------------------------- fit


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(cfg: TrainConfig | str | dict, out_dir: str | os.PathLike | None = None, *, resume: bool = False,
        force: bool = False, device: str | None = None, splits=None) -> TrainResult:
    """Train (and evaluate) according to ``cfg.strategy.name``; see the module docstring.

    Args:
        cfg: a :class:`TrainConfig`, a packaged config name / YAML path, or a dict.
        out_dir: where checkpoints (``last.pt``), ``metrics.csv``, ``config.yaml`` and ``final_metrics.json``
            go (default ``cfg.runtime.out_dir``; None writes nothing).
        resume: continue the run in ``out_dir`` (exactly: same final weights as an uninterrupted run); only a
            folder iif started is continued, and a replacement staged by a killed ``force`` run is found.
        force: with ``resume``, resume even if the config hash differs; without, replace an earlier iif
            output in ``out_dir``: the new run is built in a staging folder beside it and swapped in when
            it finishes (:func:`iif.outputs.prepare_run_folder`), so the old output stays until then.
        device: overrides ``cfg.runtime.device``.
        splits: prebuilt datasets (skips ``build_datasets``).
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else load_config(cfg)
    if device is not None:
        cfg.runtime.device = device
    validate_config(cfg)  # every value range-checked before any folder, data or model is touched
    out = out_dir if out_dir is not None else cfg.runtime.out_dir
    out = Path(out) if out is not None else None
    if out is not None:  # the output-folder policy, checked before any work (changes nothing)
        check_run_folder(out, "train", force=force and not resume, resume=resume)
    dev = resolve_device(cfg.runtime.device)
    # Fail before joining the process group, so every rank stops with the same message instead of hanging.
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    per_rank_batch(cfg.optim.batch_size, world)
    if cfg.strategy.name == "decoupled":
        per_rank_batch(StageSpec.decoupled(cfg).batch_size, world)
    info = init_distributed(dev)
    if dev.type == "cuda" and info.distributed:
        dev = torch.device("cuda", info.local_rank)
    try:
        if splits is None:
            splits = build_splits(cfg)
        _check_splits(splits)
        check_config_advice(cfg, len(splits.train.targets))  # iif.train.advice: e.g. e2e IIF on a small set
        strategy = cfg.strategy.name
        runners = {"e2e": lambda w: _run_stage(cfg, splits, StageSpec.main(cfg), w, dev, info, resume, force),
                   "decoupled": lambda w: _run_decoupled(cfg, splits, w, dev, info, resume, force),
                   "posthoc": lambda w: _run_posthoc(cfg, splits, w, dev, info, resume, force)}
        if strategy not in runners:
            raise IIFError(f"unknown strategy.name {strategy!r}; use e2e, decoupled or posthoc.")
        if out is None:
            return runners[strategy](None)
        existed = out.exists()
        work = _prepare_out(out, force, resume, info)
        try:
            result = runners[strategy](work)
        except BaseException:
            if info.is_main:  # failed before writing anything (e.g. a refused checkpoint): leave no empty folder
                abandon_run_folder(work, created=not existed or os.path.abspath(work) != os.path.abspath(out))
            raise
        return _finish_out(result, work, out, info)
    finally:
        cleanup_distributed(info)


def _prepare_out(out: Path, force: bool, resume: bool, info: DistInfo) -> Path:
    """The folder this run writes into (rank 0 decides, every rank learns it): ``out`` itself, or a
    staging folder beside it when ``force`` replaces an earlier output (see :func:`iif.outputs.prepare_run_folder`)."""
    work = prepare_run_folder(out, "train", force=force and not resume, resume=resume) if info.is_main else None
    if info.distributed:
        import torch.distributed as dist

        box = [None if work is None else str(work)]
        dist.broadcast_object_list(box, src=0)
        work = Path(box[0])
    assert work is not None
    return work


def _finish_out(result: TrainResult, work: Path, out: Path, info: DistInfo) -> TrainResult:
    """A finished run: mark it so and, if it was staged, swap it in under ``out``; paths follow it there."""
    if not result.finished:
        return result  # stopped early: `--resume` finds ``work`` (staged or not) and continues it
    if info.is_main:
        finish_run_folder(work, out)
    if info.distributed:
        barrier(info)
    if os.path.abspath(work) != os.path.abspath(out):
        result.out_dir = out
        if result.checkpoint is not None:
            try:
                result.checkpoint = out / Path(result.checkpoint).relative_to(work)
            except ValueError:  # a checkpoint given by the config, outside the run folder
                pass
    return result


def _check_splits(splits) -> None:
    from ..data.longtail import check_nonempty

    check_nonempty(splits.train.targets, splits.num_classes, getattr(splits, "class_names", None), split="train")


def _run_decoupled(cfg, splits, out, dev, info, resume, force) -> TrainResult:
    d = cfg.decoupled
    if d.stage1_checkpoint:
        stage1 = load_checkpoint(d.stage1_checkpoint)
        stage1_path = Path(stage1["path"])
    else:
        s1 = _run_stage(cfg, splits, StageSpec.main(cfg, "stage1"), out / "stage1" if out else None, dev, info,
                        resume, force)
        if not s1.finished:
            return s1
        stage1 = {"model": {k: v.detach().cpu().clone() for k, v in s1.model.state_dict().items()}}
        stage1_path = s1.checkpoint
    log.info("decoupled stage 2 from %s (method=%s, reinit=%s, legacy=%s)", stage1_path, d.method, d.reinit, d.legacy)
    return retrain_classifier(cfg, splits, stage1["model"], out_dir=out, device=dev, resume=resume, force=force,
                              info=info)


def _run_posthoc(cfg, splits, out, dev, info, resume, force) -> TrainResult:
    p = cfg.posthoc
    if p.checkpoint:
        ckpt = load_checkpoint(p.checkpoint)
        model = build_model_for(cfg, splits)
        from ..models import load_state

        load_state(model, ckpt["model"])
        model.to(dev)
        result = TrainResult(model, splits, list(ckpt.get("history", [])), {}, out, Path(ckpt["path"]), cfg)
    else:
        result = _run_stage(cfg, splits, StageSpec.main(cfg), out, dev, info, resume, force)
        if not result.finished:
            return result
    counts = splits.freq.image_counts
    adjusters = {spec: build_adjuster(spec, counts, result.model) for spec in p.adjusters}
    ds = _eval_split(splits, cfg.eval.split)
    e = cfg.eval
    metrics = evaluate(result.model, ds, counts, dev, adjusters=adjusters, batch_size=e.batch_size, many=e.many,
                       few=e.few, bins=e.bins, amp=cfg.runtime.amp, info=info, resident=cfg.data.resident)
    result.final_metrics = metrics
    if out is not None and info.is_main:
        write_json(out / "final_metrics.json", metrics)
    return result


def _run_stage(cfg: TrainConfig, splits, spec: StageSpec, out: Path | None, dev: torch.device, info: DistInfo,
               resume: bool, force: bool, init_state: dict | None = None) -> TrainResult:
    """Train one stage with per-epoch checkpoints, then evaluate raw and adjusted logits."""
    rt = cfg.runtime
    if rt.deterministic:
        torch.use_deterministic_algorithms(True)
    batch = per_rank_batch(spec.batch_size, info.world_size)
    h = config_hash(cfg) + ("" if spec.name in ("e2e",) else f"-{spec.name}")
    # Same initial weights on every rank (DDP also broadcasts rank 0's); per-rank streams afterwards.
    _seed_everything(rt.seed)
    model = build_model_for(cfg, splits)
    if init_state is not None:
        prepare_decoupled_model(model, init_state, cfg.decoupled)
    model.to(dev)
    use_cl = rt.channels_last and dev.type == "cuda"
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    criterion = build_criterion(spec, splits.freq).to(dev)

    from ..data import build_sampler

    sampler = build_sampler(spec.sampler, splits.train.targets, num_replicas=info.world_size, rank=info.rank,
                            seed=rt.seed, total_epochs=spec.epochs)
    batches = make_train_batches(splits.train, sampler, batch, dev, cfg)
    params = trainable_parameters(model)
    if not params:
        raise IIFError("the model has no trainable parameters for this stage; check the head and decoupled settings.")
    optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                                nesterov=spec.nesterov)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(
        len(batches), spec.epochs, spec.schedule, spec.milestones, spec.gamma, spec.warmup_epochs,
        spec.warmup_start_factor))
    scaler = torch.amp.GradScaler("cuda") if rt.amp == "fp16" else None

    # The module that carries gradients: whole model end-to-end, only the head when the backbone is frozen.
    trained = model.classifier if spec.frozen_backbone else model
    ddp = trained
    if info.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel(trained, device_ids=[dev.index] if dev.type == "cuda" else None)
    if spec.frozen_backbone:
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                f = model.features(x)
            return ddp(f)
    else:
        forward = ddp

    start_epoch, history = 0, []
    ckpt_path = out / "last.pt" if out is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        check_resume_compatible(ckpt, h, force)
        from ..models import load_state

        load_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"])
        history = list(ckpt.get("history", []))
        rng = ckpt.get("rng_per_rank") or [ckpt.get("rng")]
        if rng and rng[min(info.rank, len(rng) - 1)] is not None:
            restore_rng(rng[min(info.rank, len(rng) - 1)])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)
    else:
        torch.manual_seed(rt.seed + 1000 * info.rank + 1)

    if out is not None and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    tb = TensorBoardLogger(out / "tb" if out is not None and info.is_main else None, rt.tensorboard)

    loss_adj = loss_adjuster(criterion)
    adjusters = {"adjusted": loss_adj} if loss_adj is not None else {}
    counts = splits.freq.image_counts
    eval_ds = _eval_split(splits, cfg.eval.split)
    e = cfg.eval
    metrics: dict[str, dict] = {}

    def state(epoch_done: int, extra: dict | None = None) -> dict:
        rngs = gather_rng_states(info)
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch_done,
                "rng": rngs[0], "rng_per_rank": rngs, "config": config_to_dict(cfg), "config_hash": h,
                "class_counts": [int(c) for c in counts], "history": history, "stage": spec.name,
                "arch": {"arch": cfg.model.arch, "head": cfg.model.head, "num_classes": splits.num_classes},
                "preprocess": checkpoint_preprocess(splits),  # iif predict: eval transform + class names
                **(extra or {})}

    for epoch in range(start_epoch, spec.epochs):
        if rt.stop_after_epoch is not None and epoch >= rt.stop_after_epoch:
            log.info("stopping after epoch %d (runtime.stop_after_epoch)", epoch)
            tb.close()
            return TrainResult(model, splits, history, metrics, out, ckpt_path, cfg, criterion, finished=False)
        sampler.set_epoch(epoch)
        if hasattr(criterion, "set_epoch"):
            criterion.set_epoch(epoch)
        set_stage_train_mode(model, spec.frozen_backbone, spec.legacy)
        try:
            stats = train_one_epoch(forward, criterion, optimizer, scheduler, batches, dev, epoch,
                                    num_classes=splits.num_classes, mixup_alpha=spec.mixup_alpha, amp=rt.amp,
                                    scaler=scaler, channels_last=use_cl, info=info,
                                    progress=rt.progress and info.is_main, log_every=rt.log_every,
                                    desc=f"{spec.name} {epoch + 1}/{spec.epochs}")
        except NonFiniteLoss as exc:
            where = out / "nan.pt" if out is not None else None
            if where is not None:
                st = state(epoch, {"nan_step": exc.step})
                if info.is_main:
                    save_checkpoint(where, st)
            raise IIFError(
                f"training stopped: {exc} (stage {spec.name}). "
                + (f"Saved the weights before that step to {where}. " if where else "")
                + "Lower optim.lr, add warm-up (schedule.warmup_epochs), set runtime.amp=none, or check the data.") from None
        row = {"stage": spec.name, "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **stats}
        last = epoch + 1 == spec.epochs
        if last or (e.every > 0 and (epoch + 1) % e.every == 0):
            metrics = evaluate(model, eval_ds, counts, dev, adjusters=adjusters, batch_size=e.batch_size,
                               many=e.many, few=e.few, bins=e.bins, amp=rt.amp, channels_last=use_cl, info=info,
                               resident=cfg.data.resident)
            for name, m in metrics.items():
                row.update(scalar_metrics(m, name))
        history.append(row)
        if info.is_main:
            log.info("%s epoch %d/%d loss %.4f acc %.2f %s", spec.name, epoch + 1, spec.epochs, row["train_loss"],
                     row["train_acc"], f"test top1 {row['raw_top1']:.2f}" if "raw_top1" in row else "")
        st = state(epoch + 1) if out is not None else None
        if out is not None and info.is_main:
            save_checkpoint(ckpt_path, st)
            write_history_csv(out / "metrics.csv", history)
            tb.log(row, epoch + 1)
    if not metrics:  # resumed a finished run: evaluate once more
        metrics = evaluate(model, eval_ds, counts, dev, adjusters=adjusters, batch_size=e.batch_size, many=e.many,
                           few=e.few, bins=e.bins, amp=rt.amp, channels_last=use_cl, info=info,
                           resident=cfg.data.resident)
    if out is not None and info.is_main:
        write_json(out / "final_metrics.json", metrics)
    tb.close()
    return TrainResult(model, splits, history, metrics, out, ckpt_path, cfg, criterion)
