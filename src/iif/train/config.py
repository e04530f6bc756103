"""Training configuration: a nested dataclass schema loaded from YAML with ``dotted.key=value`` overrides.

A config is a :class:`TrainConfig` with one section per concern (``data``, ``model``, ``loss``,
``optim``, ``schedule``, ``strategy``, ``decoupled``, ``posthoc``, ``eval``, ``runtime``). It is loaded
with :func:`load_config` from a packaged config's short name (``cifar100_lt_decoupled``), a YAML path or
a plain dict; command-line overrides such as ``optim.lr=0.05`` are parsed with ``yaml.safe_load`` so
``0.05`` is a float, ``[360, 380]`` a list and ``null`` None. An unknown key is an :class:`IIFError`
that names the key and suggests the nearest valid one.

:func:`config_hash` fingerprints everything that changes the computation (not the output folder, the
progress bar or the device), so ``--resume`` can refuse a checkpoint written under a different config.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import IIFError
from ..validation import MAX_SEED, at_least, check, is_finite, momentum, nonnegative, one_of, suggest

__all__ = [
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "ScheduleConfig",
    "StrategyConfig",
    "DecoupledConfig",
    "PosthocConfig",
    "EvalConfig",
    "RuntimeConfig",
    "TrainConfig",
    "load_config",
    "load_sections",
    "merge_overrides",
    "read_config_yaml",
    "validate_config",
    "apply_overrides",
    "config_to_dict",
    "config_hash",
    "packaged_configs",
    "resolve_config_path",
    "save_config",
]


@dataclass
class DataConfig:
    """What to train on: the arguments of :func:`iif.data.build_datasets` plus loading options."""

    name: str = "digits-lt"
    root: str | None = None
    # None: the dataset's own default (CIFAR/ImageNet-style builders: 100; digits-lt: 20; folder: keep as is).
    imbalance_ratio: float | None = None
    profile: str = "exp"
    seed: int = 0
    augment: str = "none"
    val_per_class: int | None = None
    # Extra keyword arguments for build_datasets (e.g. ``train_list``/``test_list`` for ``folder``).
    options: dict = field(default_factory=dict)
    sampler: str = "random"
    # Mixup factor alpha (paper §V-B2 uses 0.2); 0 disables mixup.
    mixup_alpha: float = 0.0
    num_workers: int = 4
    # Keep a TensorImageDataset as one uint8 tensor on the training device and augment whole batches there
    # (about 4x faster on a GPU than a per-sample DataLoader). Only used when its recipe is batchable
    # (crop/flip/cutout); AutoAugment/RandAugment fall back to the DataLoader.
    resident: bool = True
    # Open and decode every image file of a folder/list dataset once before training (results cached by
    # path, size and mtime, see :mod:`iif.data.verify`); false skips the check.
    verify_images: bool = True
    # List datasets: follow list-file paths that are absolute or climb out of ``root`` with ``..``.
    allow_outside_root: bool = False


@dataclass
class ModelConfig:
    """Arguments of :func:`iif.models.build_model`."""

    arch: str = "small_cnn"
    head: str = "linear"
    pretrained: bool = False
    # Keyword arguments for the head (e.g. ``scale: 16`` for the cosine head) and for the backbone.
    kwargs: dict = field(default_factory=dict)
    backbone_kwargs: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    """Arguments of :func:`iif.losses.build_loss`."""

    name: str = "ce"
    # IIF weight variant (Table III) for losses that use one (iif, iif_csl).
    variant: str = "smooth"
    # Normalisation of those weights: "mean" (unit mean, the end-to-end recipe: keeps the model's logit scale,
    # docs/method.md#iif-loss), a number p (divide by the p-norm, the authors' --iif_norm p) or null (paper's weights).
    norm: float | str | None = None
    label_smoothing: float = 0.0
    kwargs: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """SGD with momentum; ``batch_size`` is the global batch (divided among DDP ranks)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    batch_size: int = 64


@dataclass
class ScheduleConfig:
    """Epochs and learning-rate schedule (stepped every iteration)."""

    epochs: int = 10
    # ``multistep``, ``cosine`` or ``constant``.
    name: str = "multistep"
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1


@dataclass
class StrategyConfig:
    """Which of the paper's three IIF strategies (Fig. 3): ``e2e``, ``decoupled`` or ``posthoc``."""

    name: str = "e2e"


@dataclass
class DecoupledConfig:
    """Stage 2 of the decoupled strategy (paper §V-B3): retrain only the classifier with the IIF loss.

    Stage 1 is the top-level config (normally plain CE); ``stage1_checkpoint`` skips it.
    """

    stage1_checkpoint: str | None = None
    # retrain (the classifier's parameters; IIF, cRT) or lws (frozen classifier, one learned scale per class).
    method: str = "retrain"
    epochs: int = 20
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int | None = None
    schedule: str = "constant"
    loss: str = "iif"
    variant: str = "smooth"
    loss_kwargs: dict = field(default_factory=dict)
    sampler: str = "random"
    mixup_alpha: float = 0.0
    # Re-initialise the classifier after loading the stage-1 weights.
    reinit: bool = False
    # Reproduce the authors' code: re-init BEFORE the load (so it is overwritten) and BN stats keep updating.
    legacy: bool = False


@dataclass
class PosthocConfig:
    """Post-process strategy: a softmax model evaluated with adjusters (``iif:smooth``, ``la:1.0``, ``taunorm:1.0``).

    ``checkpoint`` evaluates an existing model instead of training one first.
    """

    checkpoint: str | None = None
    adjusters: list = field(default_factory=lambda: ["iif:smooth"])


@dataclass
class EvalConfig:
    """Model selection on the validation split and the one final evaluation (docs/training.md).

    Every ``every`` epochs (and after the last) the model is scored on the ``val`` split; ``best.pt`` keeps
    the epoch with the highest ``metric`` there, ``last.pt`` the latest. After training, the checkpoint
    ``select`` names (``best`` or ``last``) is evaluated once on ``split`` (normally ``test``). The metric
    is read from the logits the loss predicts with: ``adjusted`` when the loss has its own decision rule
    (the IIF loss: ``w * z``, paper Eq. 13), ``raw`` otherwise. Without a val split (``data.val_per_class=0``)
    there is nothing to select on: the last epoch is used and the log says so.
    """

    # The split of the final report, evaluated once with the selected checkpoint.
    split: str = "test"
    # ``best`` (highest val ``metric``) or ``last`` (the final epoch).
    select: str = "best"
    # ``class_avg`` (mean per-class accuracy, i.e. balanced accuracy) or ``top1``; equal on a balanced val set.
    metric: str = "class_avg"
    batch_size: int = 256
    # Validate every N epochs (0: only after the last epoch).
    every: int = 1
    # Shot-group thresholds; None follows iif.metrics.shot_thresholds (100/20, or 50/15 when no class > 100).
    many: int | None = None
    few: int | None = None
    bins: int = 10


@dataclass
class RuntimeConfig:
    """Where and how to run; none of these (except ``seed``, ``amp`` and ``deterministic``) change the result."""

    seed: int = 0
    # ``auto`` picks cuda when available.
    device: str = "auto"
    # ``none``, ``bf16`` (autocast, no scaler) or ``fp16`` (autocast + GradScaler, cuda only).
    amp: str = "none"
    channels_last: bool = True
    out_dir: str | None = None
    progress: bool = True
    tensorboard: bool = True
    log_every: int = 20
    # Stop (as if killed) after this many completed epochs; used to test resume. Not part of the hash.
    stop_after_epoch: int | None = None
    deterministic: bool = False
    # CPU threads for training (iif train --threads); null: 1 on the CPU below 10,000 training images, else
    # torch's default. More than the usable CPUs is clamped with a warning (iif.resources). Not part of the hash.
    threads: int | None = None


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    decoupled: DecoupledConfig = field(default_factory=DecoupledConfig)
    posthoc: PosthocConfig = field(default_factory=PosthocConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# Fields that do not change the numbers a run produces; left out of the resume hash.
_HASH_EXCLUDE = {
    ("runtime", "device"),
    ("runtime", "out_dir"),
    ("runtime", "progress"),
    ("runtime", "tensorboard"),
    ("runtime", "log_every"),
    ("runtime", "stop_after_epoch"),
    ("runtime", "threads"),
    ("data", "num_workers"),
    ("data", "resident"),
    ("data", "root"),
    ("data", "verify_images"),
    ("data", "allow_outside_root"),
    ("eval", "batch_size"),
    ("posthoc", "adjusters"),
}


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (JSON/YAML-safe) of a config."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any, exclude: Iterable[tuple[str, str]] | None = None) -> str:
    """SHA-256 (first 16 hex digits) of every setting that changes what training computes; ``exclude``
    (default: the classification run's) lists the ``(section, key)`` pairs that do not."""
    d = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else copy.deepcopy(dict(cfg))
    for section, key in (_HASH_EXCLUDE if exclude is None else exclude):
        if isinstance(d.get(section), dict):
            d[section].pop(key, None)
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except IIFError as exc:
                errors.append(str(exc))
        raise IIFError(errors[0] if errors else f"{where}: bad value {value!r}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise IIFError(f"config key {where!r} must be true or false; got {value!r}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" as a string
                return float(value)
            except ValueError:
                pass
        raise IIFError(f"config key {where!r} must be a number; got {value!r}.")
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 2**63:
                raise IIFError(f"config key {where!r} is too large ({value:.3g}); it must fit a 64-bit integer.")
            return value
        raise IIFError(f"config key {where!r} must be a whole number; got {value!r}.")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise IIFError(f"config key {where!r} must be a string; got {value!r}.")
    if hint is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise IIFError(f"config key {where!r} must be a list (e.g. [1, 2]); got {value!r}.")
    if hint is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise IIFError(f"config key {where!r} must be a mapping (e.g. {{a: 1}}); got {value!r}.")
    return value


def _set_section(section_obj: Any, values: Mapping, prefix: str) -> None:
    hints = _hints(type(section_obj))
    names = [f.name for f in dataclasses.fields(section_obj)]
    for key, value in values.items():
        where = f"{prefix}.{key}"
        if key not in names:
            raise IIFError(f"unknown config key {where!r}.{suggest(key, names)} Valid keys in {prefix!r}: {', '.join(names)}.")
        setattr(section_obj, key, _coerce(value, hints[key], where))


def _merge(cfg: TrainConfig, data: Mapping) -> None:
    sections = [f.name for f in dataclasses.fields(cfg)]
    for name, values in data.items():
        if name not in sections:
            raise IIFError(f"unknown config section {name!r}.{suggest(name, sections)} Valid sections: {', '.join(sections)}.")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise IIFError(f"config section {name!r} must be a mapping of keys to values; got {values!r}.")
        _set_section(getattr(cfg, name), values, name)


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (value parsed by ``yaml.safe_load``) to ``cfg`` in place, then
    :func:`validate_config` the result.

    ``section.key.sub=value`` sets one entry of a dict field (e.g. ``model.kwargs.scale=16``).
    """
    return validate_config(merge_overrides(cfg, overrides))


def merge_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """:func:`apply_overrides` without the validation, for any dataclass of sections (the classification
    :class:`TrainConfig`, the detection config): parses, type-checks and sets each ``section.key=value``."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise IIFError(f"override {item!r} is not of the form section.key=value (e.g. optim.lr=0.05).")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2:
            raise IIFError(f"override key {key!r} must name a section and a key, e.g. optim.lr=0.05.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except RecursionError:
            raise IIFError(f"override {key.strip()!r}: the value is nested too deeply to read.") from None
        except yaml.YAMLError as exc:
            what = getattr(exc, "problem", None) or type(exc).__name__
            raise IIFError(f"cannot parse the value of override {item!r} ({what}); quote strings and close "
                           "brackets, e.g. schedule.milestones=[30,40].") from None
        if len(parts) == 2:
            _merge(cfg, {parts[0]: {parts[1]: value}})
        else:
            sections = [f.name for f in dataclasses.fields(cfg)]
            if parts[0] not in sections:
                raise IIFError(f"unknown config section {parts[0]!r}.{suggest(parts[0], sections)}")
            section = getattr(cfg, parts[0])
            names = [f.name for f in dataclasses.fields(section)]
            if parts[1] not in names:
                raise IIFError(f"unknown config key {parts[0] + '.' + parts[1]!r}.{suggest(parts[1], names)}")
            current = getattr(section, parts[1])
            if not isinstance(current, dict):
                raise IIFError(f"override {key!r}: {parts[0]}.{parts[1]} is not a mapping, so it has no sub-keys.")
            target = current
            for p in parts[2:-1]:
                target = target.setdefault(p, {})
            target[parts[-1]] = value
    return cfg


# Packaged detection configs carry this prefix (``iif det-train``); the classification commands skip them.
DETECTION_PREFIX = "det_"


def packaged_configs(kind: str = "classification") -> list[str]:
    """Short names of the configs shipped in ``iif/configs``: ``kind="classification"`` (``iif train``),
    ``"detection"`` (``iif det-train``, names starting ``det_``) or ``"all"``."""
    root = resources.files("iif").joinpath("configs")
    try:
        names = sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    if kind == "all":
        return names
    return [n for n in names if n.startswith(DETECTION_PREFIX) == (kind == "detection")]


def resolve_config_path(name_or_path: str | os.PathLike, kind: str = "classification") -> Path:
    """A YAML path, or the packaged config with that short name (``cifar100_lt_decoupled``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    short = p.name[:-5] if p.name.endswith(".yaml") else p.name
    candidate = resources.files("iif").joinpath("configs", f"{short}.yaml")
    if candidate.is_file():
        return Path(str(candidate))
    names = packaged_configs(kind)
    raise IIFError(f"config {str(name_or_path)!r} is neither a file nor a packaged config.{suggest(short, names)} "
                   f"Packaged configs: {', '.join(names) or '(none)'}.")


def load_config(source: str | os.PathLike | Mapping | TrainConfig | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Build a :class:`TrainConfig` from defaults, a YAML file/short name or dict, then ``overrides``.

    A YAML file may start with ``base: other_config`` to inherit another (packaged or relative) config.
    """
    return load_sections(TrainConfig, source, overrides, validate_config)


def load_sections(schema: type, source: Any = None, overrides: Iterable[str] = (), validate: Any = None,
                  kind: str = "classification") -> Any:
    """Defaults of the dataclass ``schema``, then a YAML file / packaged short name (``base:`` chains
    followed) / dict / instance ``source``, then ``section.key=value`` ``overrides``, then ``validate(cfg)``.
    The one loader behind :func:`load_config` and :func:`iif.detection.config.load_detection_config`."""
    cfg = schema()
    if isinstance(source, schema):
        cfg = copy.deepcopy(source)
    elif isinstance(source, Mapping):
        _merge(cfg, dict(source))
    elif source is not None:
        data = read_config_yaml(resolve_config_path(source, kind))
        if kind == "classification" and "margin" in data:
            raise IIFError(f"config {str(source)!r} is a detection config (it has a 'margin' section); run it with "
                           "`iif det-train`.")
        _merge(cfg, data)
    merge_overrides(cfg, overrides)
    return validate(cfg) if validate is not None else cfg


def read_config_yaml(path: str | os.PathLike) -> dict:
    """The sections of a YAML config file with its ``base:`` chain merged in (one-line :class:`IIFError` for
    non-UTF-8 text, bad YAML, nesting too deep, a base cycle)."""
    return _read_yaml_with_base(Path(path))


def _read_yaml_with_base(path: Path, depth: int = 0) -> dict:
    import yaml

    if depth > 8:
        raise IIFError(f"config {path} has a 'base:' chain deeper than 8; look for a cycle.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise IIFError(f"config {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None
    except RecursionError:
        raise IIFError(f"config {path} is nested too deeply to read; a config is sections of key: value pairs.") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        what = getattr(exc, "problem", None) or type(exc).__name__
        raise IIFError(f"config {path} is not valid YAML{at}: {what}; fix the YAML syntax there.") from None
    if not isinstance(data, dict):
        raise IIFError(f"config {path} must be a mapping of sections; got {type(data).__name__}.")
    data.pop("description", None)  # one line shown by `iif train --list`; not a setting, not inherited
    base = data.pop("base", None)
    if base is None:
        return data
    rel = path.parent / (str(base) if str(base).endswith(".yaml") else f"{base}.yaml")
    merged = _read_yaml_with_base(rel if rel.is_file() else resolve_config_path(base), depth + 1)
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically."""
    import yaml

    from .checkpoint import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


# ------------------------------------------------------------------------------------------------ validation
#: ``eval.select``: which checkpoint the final evaluation uses.
SELECT_CHOICES = ("best", "last")
#: ``eval.metric``: the validation score that picks ``best.pt`` (higher is better).
SELECT_METRICS = ("class_avg", "top1")


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Range-check every value of ``cfg`` before any data is read or any model built.

    Raises :class:`IIFError` naming the first bad key (dotted, e.g. ``schedule.epochs``), what it must be and
    an example fix. Names of datasets, losses, variants, samplers and augment recipes are checked against
    the registries; architectures and heads are checked when the model is built. Returns ``cfg``.
    """
    from ..data.longtail import PROFILES
    from ..data.registry import DATASETS
    from ..data.samplers import SAMPLERS
    from ..data.transforms import AUGMENTS
    from ..losses.registry import LOSSES
    from ..weights import VARIANTS, canonical_variant
    from .strategies import parse_adjuster

    def variant(key: str, v: Any) -> None:
        try:
            canonical_variant(v)
        except (IIFError, TypeError, AttributeError):
            raise IIFError(f"config key {key!r} is {v!r}; use one of {', '.join(VARIANTS)}.{suggest(str(v), VARIANTS)}") from None

    d, m, lo, o, s, dc, ph, ev, rt = (cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.schedule, cfg.decoupled,
                                      cfg.posthoc, cfg.eval, cfg.runtime)
    # data
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
    # model
    check(isinstance(m.arch, str) and bool(m.arch.strip()), "model.arch", m.arch, "an architecture name", "resnet32")
    check(isinstance(m.head, str) and bool(m.head.strip()), "model.head", m.head, "a head name", "linear")
    # loss
    one_of("loss.name", str(lo.name).lower(), LOSSES)
    variant("loss.variant", lo.variant)
    check(lo.norm is None or lo.norm == "mean" or (not isinstance(lo.norm, (bool, str)) and is_finite(lo.norm) and lo.norm > 0),
          "loss.norm", lo.norm, "mean, a positive number p (p-norm) or null", "mean")
    check(is_finite(lo.label_smoothing) and 0 <= lo.label_smoothing < 1, "loss.label_smoothing", lo.label_smoothing,
          "in [0, 1)", "0.1")
    # optim
    # lr = 0 is allowed: it freezes the weights while BatchNorm statistics still update (a diagnostic).
    nonnegative("optim.lr", o.lr, "0.1")
    momentum("optim.momentum", o.momentum)
    nonnegative("optim.weight_decay", o.weight_decay, "5e-4")
    if o.nesterov and o.momentum == 0:
        raise IIFError("config key 'optim.nesterov' is true but optim.momentum is 0; Nesterov needs momentum > 0 "
                       "(set optim.momentum=0.9 or optim.nesterov=false).")
    at_least("optim.batch_size", o.batch_size, 1, "128")
    # schedule
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
    # strategy
    one_of("strategy.name", cfg.strategy.name, ("e2e", "decoupled", "posthoc"))
    # decoupled (stage 2)
    one_of("decoupled.method", dc.method, ("retrain", "lws"))
    at_least("decoupled.epochs", dc.epochs, 1, "10")
    nonnegative("decoupled.lr", dc.lr, "1e-4")
    momentum("decoupled.momentum", dc.momentum)
    nonnegative("decoupled.weight_decay", dc.weight_decay, "1e-4")
    if dc.batch_size is not None:
        at_least("decoupled.batch_size", dc.batch_size, 1, "128")
    one_of("decoupled.schedule", dc.schedule, ("multistep", "cosine", "constant"))
    one_of("decoupled.loss", str(dc.loss).lower(), LOSSES)
    variant("decoupled.variant", dc.variant)
    one_of("decoupled.sampler", dc.sampler, SAMPLERS)
    nonnegative("decoupled.mixup_alpha", dc.mixup_alpha, "0")
    # posthoc
    for spec in ph.adjusters:
        if not isinstance(spec, str):
            raise IIFError(f"config key 'posthoc.adjusters' must list strings such as iif:smooth or la:1.0; got {spec!r}.")
        kind, arg = parse_adjuster(spec)
        if kind == "iif":
            variant("posthoc.adjusters", arg)
        elif kind in ("la", "taunorm"):
            check(math.isfinite(float(arg)), "posthoc.adjusters", spec, "a finite tau", "[la:1.0]")
    # eval
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
    # runtime
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
    return cfg
