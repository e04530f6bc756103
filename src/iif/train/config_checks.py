"""Range checks of a :class:`~iif.train.config.TrainConfig`, one function per section; :func:`validate_config`
runs them in the order of the sections, so the first bad key is named."""

from __future__ import annotations

import math
from typing import Any

from ..errors import IIFError
from ..validation import MAX_SEED, at_least, check, is_finite, method_spelling, momentum, nonnegative, one_of, suggest
from .config_schema import (DataConfig, DecoupledConfig, EvalConfig, LossConfig, ModelConfig, OptimConfig,
                            PosthocConfig, RuntimeConfig, ScheduleConfig, TrainConfig)


#: ``eval.select``: which checkpoint the final evaluation uses.
SELECT_CHOICES = ("best", "last")
#: ``eval.metric``: the validation score that picks ``best.pt`` (higher is better).
SELECT_METRICS = ("class_avg", "top1")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Range-check every value of ``cfg`` before any data is read or any model built.

    Raises :class:`IIFError` naming the first bad key (dotted, e.g. ``schedule.epochs``), what it must be and
    an example fix. Names of datasets, losses, variants, samplers and augment recipes are checked against
    the registries; architectures and heads are checked when the model is built. Returns ``cfg``.

    The sections are checked in this order, each by its own function: ``data``, ``model``, ``loss``,
    ``optim``, ``schedule``, ``strategy``, ``decoupled``, ``posthoc``, ``eval``, ``runtime``.
    """
    _check_data(cfg.data)
    _check_model(cfg.model)
    _check_loss(cfg.loss)
    _check_optim(cfg.optim)
    _check_schedule(cfg.schedule)
    one_of("strategy.name", cfg.strategy.name, ("e2e", "decoupled", "posthoc"))
    _check_decoupled(cfg.decoupled)
    _check_posthoc(cfg.posthoc)
    _check_eval(cfg.eval)
    _check_runtime(cfg.runtime)
    return cfg


def _check_variant(key: str, v: Any) -> None:
    """An IIF variant name (paper Eq. 10-12, Table III), or a refusal listing them."""
    from ..weights import VARIANTS, canonical_variant

    try:
        canonical_variant(v)
    except (IIFError, TypeError, AttributeError):
        raise IIFError(f"config key {key!r} is {v!r}; use one of {', '.join(VARIANTS)}.{suggest(str(v), VARIANTS)}") from None


def _check_data(d: DataConfig) -> None:
    from ..data.longtail import PROFILES
    from ..data.registry import DATASETS
    from ..data.samplers import SAMPLERS
    from ..data.transforms import AUGMENTS

    one_of("data.name", d.name, DATASETS)
    if d.imbalance_ratio is not None:
        check(is_finite(d.imbalance_ratio) and d.imbalance_ratio >= 1, "data.imbalance_ratio", d.imbalance_ratio,
              "a number >= 1 (n_max / n_min) or null for the dataset's default", "100")
    one_of("data.profile", d.profile, PROFILES)
    at_least("data.seed", d.seed, 0, "0", MAX_SEED)
    one_of("data.augment", d.augment, AUGMENTS)
    if d.val_per_class is not None:
        at_least("data.val_per_class", d.val_per_class, 0, "20")
    one_of("data.sampler", d.sampler, SAMPLERS)
    nonnegative("data.mixup_alpha", d.mixup_alpha, "0.2")
    at_least("data.num_workers", d.num_workers, 0, "4")


def _check_model(m: ModelConfig) -> None:
    check(isinstance(m.arch, str) and bool(m.arch.strip()), "model.arch", m.arch, "an architecture name", "resnet32")
    check(isinstance(m.head, str) and bool(m.head.strip()), "model.head", m.head, "a head name", "linear")


def _check_loss(lo: LossConfig) -> None:
    from ..losses.registry import LOSSES

    lo.name = method_spelling(lo.name, "loss")  # canonical names and aliases too (iif.methods)
    one_of("loss.name", str(lo.name).lower(), LOSSES)
    _check_variant("loss.variant", lo.variant)
    check(lo.norm is None or lo.norm == "mean" or (not isinstance(lo.norm, (bool, str)) and is_finite(lo.norm) and lo.norm > 0),
          "loss.norm", lo.norm, "mean, a positive number p (p-norm) or null", "mean")
    check(is_finite(lo.label_smoothing) and 0 <= lo.label_smoothing < 1, "loss.label_smoothing", lo.label_smoothing,
          "in [0, 1)", "0.1")


def _check_optim(o: OptimConfig) -> None:
    # lr = 0 is allowed: it freezes the weights while BatchNorm statistics still update (a diagnostic).
    nonnegative("optim.lr", o.lr, "0.1")
    momentum("optim.momentum", o.momentum)
    nonnegative("optim.weight_decay", o.weight_decay, "5e-4")
    if o.nesterov and o.momentum == 0:
        raise IIFError("config key 'optim.nesterov' is true but optim.momentum is 0; Nesterov needs momentum > 0 "
                       "(set optim.momentum=0.9 or optim.nesterov=false).")
    at_least("optim.batch_size", o.batch_size, 1, "128")


def _check_schedule(s: ScheduleConfig) -> None:
    at_least("schedule.epochs", s.epochs, 1, "10")
    one_of("schedule.name", s.name, ("multistep", "cosine", "constant"))
    for i, ms in enumerate(s.milestones):
        if not (isinstance(ms, int) and not isinstance(ms, bool) and 0 < ms < 2**31):
            raise IIFError(f"config key 'schedule.milestones' must list whole epoch numbers >= 1; entry {i} is {ms!r}. "
                           "Set e.g. schedule.milestones=[30,40].")
    check(is_finite(s.gamma) and s.gamma > 0, "schedule.gamma", s.gamma, "a positive finite number (lr factor at each milestone)", "0.1")
    check(is_finite(s.warmup_epochs) and 0 <= s.warmup_epochs <= s.epochs, "schedule.warmup_epochs", s.warmup_epochs,
          f"in [0, schedule.epochs={s.epochs}]", "5")
    check(is_finite(s.warmup_start_factor) and 0 < s.warmup_start_factor <= 1, "schedule.warmup_start_factor",
          s.warmup_start_factor, "in (0, 1]", "0.1")


def _check_decoupled(dc: DecoupledConfig) -> None:
    """Stage 2 of the decoupled strategy."""
    from ..data.samplers import SAMPLERS
    from ..losses.registry import LOSSES

    one_of("decoupled.method", dc.method, ("retrain", "lws"))
    at_least("decoupled.epochs", dc.epochs, 1, "10")
    nonnegative("decoupled.lr", dc.lr, "1e-4")
    momentum("decoupled.momentum", dc.momentum)
    nonnegative("decoupled.weight_decay", dc.weight_decay, "1e-4")
    if dc.batch_size is not None:
        at_least("decoupled.batch_size", dc.batch_size, 1, "128")
    one_of("decoupled.schedule", dc.schedule, ("multistep", "cosine", "constant"))
    dc.loss = method_spelling(dc.loss, "loss")
    one_of("decoupled.loss", str(dc.loss).lower(), LOSSES)
    _check_variant("decoupled.variant", dc.variant)
    one_of("decoupled.sampler", dc.sampler, SAMPLERS)
    nonnegative("decoupled.mixup_alpha", dc.mixup_alpha, "0")


def _check_posthoc(ph: PosthocConfig) -> None:
    from .strategies import parse_adjuster

    for spec in ph.adjusters:
        if not isinstance(spec, str):
            raise IIFError(f"config key 'posthoc.adjusters' must list strings such as iif:smooth or la:1.0; got {spec!r}.")
        kind, arg = parse_adjuster(spec)
        if kind == "iif":
            _check_variant("posthoc.adjusters", arg)
        elif kind in ("la", "taunorm"):
            check(math.isfinite(float(arg)), "posthoc.adjusters", spec, "a finite tau", "[la:1.0]")


def _check_eval(ev: EvalConfig) -> None:
    one_of("eval.split", ev.split, ("test", "val"))
    one_of("eval.select", ev.select, SELECT_CHOICES)
    one_of("eval.metric", ev.metric, SELECT_METRICS)
    at_least("eval.batch_size", ev.batch_size, 1, "256")
    at_least("eval.every", ev.every, 0, "1")  # 0: evaluate only after the last epoch
    if ev.many is not None:
        at_least("eval.many", ev.many, 0, "100")
    if ev.few is not None:
        at_least("eval.few", ev.few, 0, "20")
    if ev.many is not None and ev.few is not None and ev.few > ev.many:
        raise IIFError(f"config key 'eval.few' ({ev.few}) must not exceed eval.many ({ev.many}); leave both null "
                       "for the default rule (100 and 20, or 50 and 15 when no class has more than 100 images).")
    at_least("eval.bins", ev.bins, 1, "15")


def _check_runtime(rt: RuntimeConfig) -> None:
    at_least("runtime.seed", rt.seed, 0, "0", MAX_SEED)
    dev = str(rt.device)
    base, _, index = dev.partition(":")
    if base not in ("auto", "cpu", "cuda") or (index and (base != "cuda" or not index.isdigit())):
        raise IIFError(f"config key 'runtime.device' is {rt.device!r}; use auto, cpu, cuda or cuda:N (e.g. cuda:1).")
    one_of("runtime.amp", rt.amp, ("none", "bf16", "fp16"))
    at_least("runtime.log_every", rt.log_every, 1, "20")
    if rt.stop_after_epoch is not None:
        at_least("runtime.stop_after_epoch", rt.stop_after_epoch, 1, "1")
    if rt.threads is not None:  # the upper end is clamped to the usable CPUs when training starts (iif.resources)
        at_least("runtime.threads", rt.threads, 1, "1")
