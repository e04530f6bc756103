"""Training stages and ``fit``: the stage orchestration in small named steps.

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

A stage (end-to-end, decoupled stage 1 or 2) is :func:`_run_stage`: build (:func:`_build_stage`),
restore (``--resume``, :func:`_restore_stage`), the epoch loop (:func:`_train_epoch`, :func:`_validate` on
the ``val`` split every ``eval.every`` epochs, :func:`_save_epoch` writing ``best.pt`` and ``last.pt``),
then :func:`_final_evaluation`: the checkpoint ``eval.select`` names (best on validation, or last) is scored
once on ``eval.split`` (normally ``test``); each method's metrics carry a ``selection`` entry saying which
checkpoint and epoch. One epoch is :func:`iif.train.epoch.train_one_epoch`; batches come from
:mod:`iif.data.batches`; evaluation is :mod:`iif.train.evaluation`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data.batches import make_train_batches
from ..errors import IIFError
from ..outputs import (abandoned_on_failure, check_run_folder, finish_run_folder, made_by_run, prepare_run_folder,
                       refuse_overlap)
from ..resources import check_image_memory, check_threads, set_threads, training_threads
# the one runtime of both tasks: schedule, device, DDP set-up, checkpoint state and the resume rule
from ..runtime import NonFiniteLoss, WarmupSchedule, resolve_device, training_state
from ..runtime.distributed import (DistInfo, barrier, cleanup_distributed, gather_rng_states, join_process_group,
                                   on_main_rank, per_rank_batch, seed_rank_stream, wrap_ddp)
from .advice import check_backbone_advice, check_config_advice, loader_workers
from .build import StageSpec, build_criterion, build_model_for, build_splits, config_inputs
from .checkpoint import check_resume_compatible, load_checkpoint, restore_training_state, save_checkpoint
from .config import TrainConfig, config_hash, config_to_dict, load_config, save_config, validate_config
from .epoch import train_one_epoch
from .run_log import TensorBoardLogger, scalar_metrics, write_history_csv, write_json
from .decoupled import cached_feature_batches, prepare_decoupled_model, set_stage_train_mode
from .strategies import build_adjuster, trainable_parameters
from .evaluation import (checkpoint_preprocess, evaluate, evaluate_checkpoint, extract_features, loss_adjuster,
                         metrics_document, predict)
from .inference import eval_split

__all__ = [
    "TrainResult",
    "StageSpec",
    "fit",
    "retrain_classifier",
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
    # Which checkpoint the final metrics come from: select (best|last), checkpoint (file name), epoch,
    # selected_on (the validation metric), val_score, split. None when no stage evaluated (stopped early).
    selection: dict | None = None


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
        out_dir: where checkpoints (``last.pt``, and ``best.pt`` when there is a val split), ``metrics.csv``,
            ``config.yaml`` and ``final_metrics.json`` go (default ``cfg.runtime.out_dir``; None writes nothing).
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
        refuse_overlap({"--out": out}, config_inputs(cfg))
        check_run_folder(out, "train", force=force and not resume, resume=resume)
    dev = resolve_device(cfg.runtime.device)
    # Fail before joining the process group, so every rank stops with the same message instead of hanging.
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    per_rank_batch(cfg.optim.batch_size, world)
    if cfg.strategy.name == "decoupled":
        per_rank_batch(StageSpec.decoupled(cfg).batch_size, world)
    dev, info = join_process_group(dev)  # iif.runtime: the process group and this rank's GPU
    old_threads, threads = torch.get_num_threads(), None
    try:
        if splits is None:
            splits = build_splits(cfg)
        _check_splits(splits)
        _check_memory(cfg, splits, world)  # one line with the estimate, before any model or batch is allocated
        # iif.resources: runtime.threads (iif train --threads) clamped to the usable CPUs; unset, a run writing its
        # own folder (iif train) takes the default rule (1 thread for small CPU sets), while a call without one
        # (the bench's rows, which set their threads around it) keeps the caller's count
        threads = (training_threads(cfg.runtime.threads, len(splits.train.targets), dev.type, "runtime.threads")
                   if out is not None else check_threads(cfg.runtime.threads, "runtime.threads"))
        set_threads(threads)
        check_config_advice(cfg, splits, recipe=out is not None)  # iif.train.advice: data notes; e2e IIF on few images
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
        # failed before its first checkpoint (e.g. a refused checkpoint): rank 0 leaves nothing behind
        with abandoned_on_failure(work, created=made_by_run(work, out, existed), written=START_FILES,
                                  owner=info.is_main):
            result = runners[strategy](work)
        return _finish_out(result, work, out, info)
    finally:
        if threads is not None:  # a library call leaves the caller's thread count as it found it
            torch.set_num_threads(old_threads)
        cleanup_distributed(info)


#: Files a run writes before its first checkpoint; a run failing then removes them with its folder.
START_FILES = ("config.yaml", "metrics.csv")


def _prepare_out(out: Path, force: bool, resume: bool, info: DistInfo) -> Path:
    """The folder this run writes into (rank 0 decides, every rank learns it): ``out`` itself, or a
    staging folder beside it when ``force`` replaces an earlier output (see :func:`iif.outputs.prepare_run_folder`)."""
    return Path(on_main_rank(info, lambda: str(prepare_run_folder(out, "train", force=force and not resume,
                                                                   resume=resume))))


def _finish_out(result: TrainResult, work: Path, out: Path, info: DistInfo) -> TrainResult:
    """A finished run: mark it so and, if it was staged, swap it in under ``out``; paths follow it there."""
    if not result.finished:
        return result  # stopped early: `--resume` finds ``work`` (staged or not) and continues it
    if info.is_main:  # the swap checks ``out`` again: still ours, of this command, and no input
        finish_run_folder(work, out, inputs=config_inputs(result.config) if result.config is not None else None)
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


def _check_memory(cfg: TrainConfig, splits, world: int) -> None:
    """Refuse an image size and batch sizes whose input tensors alone exceed this machine's memory
    (:func:`iif.resources.check_image_memory`): the training batch per rank, then the evaluation batch."""
    size, ch = int(splits.image_size), int(splits.in_channels)
    check_image_memory(per_rank_batch(cfg.optim.batch_size, world), size, ch)
    check_image_memory(int(cfg.eval.batch_size), size, ch, what="an evaluation batch", batch_key="eval.batch_size")


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


def retrain_classifier(cfg, splits, stage1_state: dict, *, out_dir: str | os.PathLike | None = None,
                       device: str | torch.device | None = None, resume: bool = False, force: bool = False,
                       info=None) -> TrainResult:
    """Stage 2 of the decoupled strategy: ``stage1_state`` (a model state dict) with its classifier retrained
    per ``cfg.decoupled`` (:mod:`iif.train.decoupled` prepares the model; this runs the one stage loop).

    Returns the :class:`TrainResult` of the stage: the model (with the retrained classifier), its
    history and final metrics (``adjusted`` holds ``w * z`` for the IIF loss), and the checkpoint when
    ``out_dir`` is given (``stage: stage2``; ``iif eval`` reads it). ``info`` is the process group of a
    distributed run (set by :func:`fit`).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device or cfg.runtime.device)
    out = Path(out_dir) if out_dir is not None else None
    return _run_stage(cfg, splits, StageSpec.decoupled(cfg), out, dev, info or DistInfo(), resume, force,
                      init_state=stage1_state)


def _run_posthoc(cfg, splits, out, dev, info, resume, force) -> TrainResult:
    p = cfg.posthoc
    if p.checkpoint:
        ckpt = load_checkpoint(p.checkpoint)
        model = build_model_for(cfg, splits)
        from ..models import load_state

        load_state(model, ckpt["model"])
        model.to(dev)
        result = TrainResult(model, splits, list(ckpt.get("history", [])), {}, out, Path(ckpt["path"]), cfg)
    else:  # the selected checkpoint is scored once on eval.split, post-hoc adjusters included
        return _run_stage(cfg, splits, StageSpec.main(cfg), out, dev, info, resume, force, posthoc=p.adjusters)
    counts = splits.freq.image_counts
    adjusters = {spec: build_adjuster(spec, counts, result.model) for spec in p.adjusters}
    ds = eval_split(splits, cfg.eval.split)
    e = cfg.eval
    metrics = evaluate(result.model, ds, counts, dev, adjusters=adjusters, batch_size=e.batch_size, many=e.many,
                       few=e.few, bins=e.bins, amp=cfg.runtime.amp, info=info, resident=cfg.data.resident)
    result.final_metrics = metrics
    if out is not None and info.is_main:
        write_json(out / "final_metrics.json", metrics_document(metrics, splits))
    return result


# ----------------------------------------------------------------------------------------------- one stage

#: File names in a run folder: the latest epoch (what ``--resume`` continues) and the best on validation.
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


@dataclass
class _StageRun:
    """What one stage's steps share: built by :func:`_build_stage`, advanced by the epoch loop."""

    cfg: TrainConfig
    spec: StageSpec
    splits: Any
    out: Path | None
    dev: torch.device
    info: DistInfo
    model: nn.Module
    criterion: nn.Module
    sampler: Any
    batches: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    forward: Callable[[torch.Tensor], torch.Tensor]
    channels_last: bool
    config_hash: str
    # The loss's own decision rule, scored beside the raw logits ({"adjusted": fn} or {}).
    adjusters: dict
    start_epoch: int = 0
    history: list = field(default_factory=list)
    # Model selection: {"epoch", "score", "metric", "logits"} of the best validation score so far, and the
    # model weights of that epoch (on the CPU).
    best: dict | None = None
    best_state: dict | None = None

    def path(self, name: str) -> Path | None:
        return self.out / name if self.out is not None else None


def _run_stage(cfg: TrainConfig, splits, spec: StageSpec, out: Path | None, dev: torch.device, info: DistInfo,
               resume: bool, force: bool, init_state: dict | None = None, posthoc: list | tuple = ()) -> TrainResult:
    """Train one stage and evaluate it once: build, restore (``--resume``), the epoch loop (train, validate,
    keep ``best.pt`` and ``last.pt``), then the selected checkpoint scored on ``eval.split``, with the
    post-hoc adjusters ``posthoc`` (``iif:smooth``, ``la:1.0``...) beside the raw logits."""
    run = _build_stage(cfg, splits, spec, out, dev, info, init_state)
    _restore_stage(run, resume, force)
    if out is not None and info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    val = _validation_split(run)
    tb = TensorBoardLogger(out / "tb" if out is not None and info.is_main else None, cfg.runtime.tensorboard)
    try:
        for epoch in range(run.start_epoch, spec.epochs):
            stop = cfg.runtime.stop_after_epoch
            if stop is not None and epoch >= stop:
                log.info("stopping after epoch %d (runtime.stop_after_epoch)", epoch)
                return TrainResult(run.model, splits, run.history, {}, out, run.path(LAST_CHECKPOINT), cfg,
                                   run.criterion, finished=False)
            row = _train_epoch(run, epoch)
            improved = _validate(run, val, epoch, row)
            run.history.append(row)
            _log_epoch(run, row)
            _save_epoch(run, epoch + 1, improved, row, tb)
    finally:
        tb.close()
    metrics, selection = _final_evaluation(run, posthoc)
    check_backbone_advice(metrics, splits.num_classes, run.spec.loss, recipe=out is not None)  # iif.train.advice
    if out is not None and info.is_main:
        write_json(out / "final_metrics.json", metrics_document(metrics, splits))
    return TrainResult(run.model, splits, run.history, metrics, out, run.path(selection["checkpoint"]), cfg,
                       run.criterion, selection=selection)


def _build_stage(cfg: TrainConfig, splits, spec: StageSpec, out: Path | None, dev: torch.device, info: DistInfo,
                 init_state: dict | None) -> _StageRun:
    """Model (seeded, stage-1 weights loaded for stage 2), loss, sampler, batches, SGD, schedule, scaler."""
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
    batches = make_train_batches(splits.train, sampler, batch, dev, resident=cfg.data.resident,
                                 num_workers=loader_workers(cfg.data.num_workers, len(splits.train)))  # CPU-capped
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
    ddp = wrap_ddp(trained, dev, info)  # iif.runtime, as detection's
    if spec.frozen_backbone:
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                f = model.features(x)
            return ddp(f)
    else:
        forward = ddp
    if spec.frozen_backbone:  # features computed once when exact (no augmentation...): iif.train.decoupled
        cached = cached_feature_batches(model, splits.train, sampler, batch, dev, legacy=spec.legacy,
                                        mixup_alpha=spec.mixup_alpha, amp=rt.amp, distributed=info.distributed,
                                        resident=cfg.data.resident, eval_batch_size=cfg.eval.batch_size)
        batches, forward = (cached, ddp) if cached is not None else (batches, forward)
    loss_adj = loss_adjuster(criterion)
    return _StageRun(cfg, spec, splits, out, dev, info, model, criterion, sampler, batches, optimizer, scheduler,
                     scaler, forward, use_cl, h, {"adjusted": loss_adj} if loss_adj is not None else {})


def _restore_stage(run: _StageRun, resume: bool, force: bool) -> None:
    """``--resume``: continue from ``last.pt`` exactly (weights, optimizer, schedule, RNG, history, best score)
    and reload the best weights from ``best.pt``; otherwise seed this rank's training stream."""
    path = run.path(LAST_CHECKPOINT)
    if not (resume and path is not None and path.is_file()):
        seed_rank_stream(run.cfg.runtime.seed, run.info)  # iif.runtime: per-rank streams, as detection's
        return
    ckpt = load_checkpoint(path)
    check_resume_compatible(ckpt, run.config_hash, force)
    from ..models import load_state

    run.start_epoch, run.history = restore_training_state(ckpt, run.model, run.optimizer, run.scheduler, run.scaler,
                                                          run.info.rank, load_model=load_state)
    run.best = ckpt.get("best")
    if run.best is not None:
        best_path = run.path(BEST_CHECKPOINT)
        if not best_path.is_file():
            raise IIFError(f"cannot resume from {path}: it records the best validation epoch "
                           f"{run.best['epoch']} but {best_path} is missing; restore that file or start a new run.")
        run.best_state = _cpu_state(load_checkpoint(best_path)["model"])
    log.info("resumed from %s at epoch %d", path, run.start_epoch)


def _train_epoch(run: _StageRun, epoch: int) -> dict:
    """One epoch of training; a NaN/inf loss saves ``nan.pt`` (the weights before that step) and stops."""
    cfg, spec, info = run.cfg, run.spec, run.info
    rt = cfg.runtime
    run.sampler.set_epoch(epoch)
    if hasattr(run.criterion, "set_epoch"):
        run.criterion.set_epoch(epoch)
    set_stage_train_mode(run.model, spec.frozen_backbone, spec.legacy)
    try:
        stats = train_one_epoch(run.forward, run.criterion, run.optimizer, run.scheduler, run.batches, run.dev, epoch,
                                num_classes=run.splits.num_classes, mixup_alpha=spec.mixup_alpha, amp=rt.amp,
                                scaler=run.scaler, channels_last=run.channels_last, info=info,
                                progress=rt.progress and info.is_main, log_every=rt.log_every,
                                desc=f"{spec.name} {epoch + 1}/{spec.epochs}")
    except NonFiniteLoss as exc:
        where = run.path("nan.pt")
        if where is not None:
            st = _checkpoint_state(run, epoch, {"nan_step": exc.step})
            if info.is_main:
                save_checkpoint(where, st)
        raise IIFError(
            f"training stopped: {exc} (stage {spec.name}). "
            + (f"Saved the weights before that step to {where}. " if where else "")
            + "Lower optim.lr, add warm-up (schedule.warmup_epochs), set runtime.amp=none, or check the data.") from None
    return {"stage": spec.name, "epoch": epoch + 1, "lr": run.optimizer.param_groups[0]["lr"], **stats}


def _validation_split(run: _StageRun):
    """The split model selection scores (``val``), or None (logged) when the dataset has none."""
    val = getattr(run.splits, "val", None)
    if val is not None and len(val) > 0:
        return val
    if run.info.is_main:
        log.info("%s: no validation split (data.val_per_class=0 or none in the data): no model selection, the "
                 "last epoch is evaluated on %s", run.spec.name, run.cfg.eval.split)
    return None


def _validate(run: _StageRun, val, epoch: int, row: dict) -> bool:
    """Every ``eval.every`` epochs and after the last: score ``val``, add ``val_*`` columns to ``row``, and
    remember the weights when the selection score beats every earlier one. Returns whether it did."""
    e, spec = run.cfg.eval, run.spec
    last = epoch + 1 == spec.epochs
    if val is None or not (last or (e.every > 0 and (epoch + 1) % e.every == 0)):
        return False
    metrics = evaluate(run.model, val, run.splits.freq.image_counts, run.dev, adjusters=run.adjusters,
                       batch_size=e.batch_size, many=e.many, few=e.few, bins=e.bins, amp=run.cfg.runtime.amp,
                       channels_last=run.channels_last, info=run.info, resident=run.cfg.data.resident)
    for name, m in metrics.items():
        row.update(scalar_metrics(m, f"val_{name}"))
    logits = "adjusted" if "adjusted" in metrics else "raw"
    score = float(metrics[logits][e.metric])
    row["val_score"] = score
    if run.best is not None and not score > float(run.best["score"]):  # ties keep the earlier epoch
        return False
    run.best = {"epoch": epoch + 1, "score": score, "metric": e.metric, "logits": logits}
    run.best_state = _cpu_state(run.model.state_dict())
    return True


def _log_epoch(run: _StageRun, row: dict) -> None:
    """The one line per epoch (``iif.train`` logger; what a log file gets instead of a progress bar)."""
    if not run.info.is_main:
        return
    val = ""
    if "val_score" in row and run.best is not None:
        val = (f" val {run.best['metric']} {row['val_score']:.2f} (best {float(run.best['score']):.2f} "
               f"at epoch {run.best['epoch']})")
    log.info("%s epoch %d/%d loss %.4f acc %.2f%s %.0f img/s %.1fs", run.spec.name, row["epoch"], run.spec.epochs,
             row["train_loss"], row["train_acc"], val, row.get("images_per_s", 0.0), row.get("seconds", 0.0))


def _save_epoch(run: _StageRun, epochs_done: int, improved: bool, row: dict, tb) -> None:
    """``best.pt`` (when this epoch is the new best) then ``last.pt``, ``metrics.csv`` and TensorBoard.

    best.pt is written first: a run killed between the two resumes from the older last.pt, redoes this
    epoch exactly and writes best.pt again."""
    if run.out is None:
        return
    st = _checkpoint_state(run, epochs_done)  # every rank: gathers the per-rank RNG states
    if not run.info.is_main:
        return
    if improved:
        save_checkpoint(run.path(BEST_CHECKPOINT), st)
    save_checkpoint(run.path(LAST_CHECKPOINT), st)
    write_history_csv(run.out / "metrics.csv", run.history)
    tb.log(row, epochs_done)


def _checkpoint_state(run: _StageRun, epochs_done: int, extra: dict | None = None) -> dict:
    """Everything ``--resume``, ``iif eval`` and ``iif predict`` need (see :mod:`iif.train.checkpoint`)."""
    cfg, splits = run.cfg, run.splits
    return {**training_state(run.model, run.optimizer, run.scheduler, run.scaler, epochs_done,
                             gather_rng_states(run.info), rank0_rng=True),  # iif.runtime, detection's too
            "config": config_to_dict(cfg), "config_hash": run.config_hash,
            "class_counts": [int(c) for c in splits.freq.image_counts], "history": run.history,
            "stage": run.spec.name, "best": run.best,
            "arch": {"arch": cfg.model.arch, "head": cfg.model.head, "num_classes": splits.num_classes},
            "preprocess": checkpoint_preprocess(splits),  # iif predict: eval transform + class names
            **(extra or {})}


def _final_evaluation(run: _StageRun, posthoc: list | tuple = ()) -> tuple[dict[str, dict], dict]:
    """Load the selected weights (``eval.select``: best on val, or last) and score ``eval.split`` once, the
    post-hoc adjusters ``posthoc`` built from those weights (τ-norm reads the classifier).

    Returns the metrics (each method's dict carries a ``selection`` entry) and the selection: which
    checkpoint, which epoch, the validation metric and score that chose it."""
    e = run.cfg.eval
    if e.select == "best" and run.best_state is not None:
        run.model.load_state_dict(run.best_state)
        b = run.best
        selection = {"select": "best", "checkpoint": BEST_CHECKPOINT, "epoch": int(b["epoch"]),
                     "selected_on": f"val {b['metric']} of {b['logits']} logits", "val_score": float(b["score"])}
    else:
        why = "eval.select=last" if e.select == "last" else "no validation score (no val split)"
        selection = {"select": "last", "checkpoint": LAST_CHECKPOINT, "epoch": run.spec.epochs,
                     "selected_on": why, "val_score": None}
    selection["split"] = e.split
    counts = run.splits.freq.image_counts
    adjusters = {**run.adjusters, **{a: build_adjuster(a, counts, run.model) for a in posthoc}}
    metrics = evaluate(run.model, eval_split(run.splits, e.split), counts, run.dev,
                       adjusters=adjusters, batch_size=e.batch_size, many=e.many, few=e.few, bins=e.bins,
                       amp=run.cfg.runtime.amp, channels_last=run.channels_last, info=run.info,
                       resident=run.cfg.data.resident)
    if run.info.is_main:
        shown = "adjusted" if "adjusted" in metrics else "raw"  # the logits the model predicts with (w * z for IIF)
        log.info("%s: %s checkpoint (epoch %d, %s) scored on %s: top1 %.2f (%s logits)", run.spec.name,
                 selection["select"], selection["epoch"], selection["selected_on"], e.split, metrics[shown]["top1"], shown)
    for m in metrics.values():
        m["selection"] = dict(selection)
    return metrics, selection


def _cpu_state(state: dict) -> dict:
    """A detached CPU copy of a state dict (the best weights kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v for k, v in state.items()}
