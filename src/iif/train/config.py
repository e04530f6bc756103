"""Training configuration: a nested dataclass schema loaded from YAML with ``dotted.key=value`` overrides.

A config is a :class:`TrainConfig` with one section per concern (``data``, ``model``, ``loss``,
``optim``, ``schedule``, ``strategy``, ``decoupled``, ``posthoc``, ``eval``, ``runtime``). It is loaded
with :func:`load_config` from a packaged config's short name (``cifar100_lt_decoupled``), a YAML path or
a plain dict; command-line overrides such as ``optim.lr=0.05`` are parsed with ``yaml.safe_load`` so
``0.05`` is a float, ``[360, 380]`` a list and ``null`` None. An unknown key is an :class:`IIFError`
that names the key and suggests the nearest valid one.

:func:`config_hash` fingerprints everything that changes the computation (not the output folder, the
progress bar or the device), so ``--resume`` can refuse a checkpoint written under a different config.

The schema (the section dataclasses) is in :mod:`iif.train.config_schema`, the loader every config shares in
:mod:`iif.train.config_loading` and the range checks in :mod:`iif.train.config_checks`; this module holds
what is specific to the classification config and re-exports the rest, so ``from iif.train.config import X``
is the import path.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..runtime.checkpoint import settings_hash
from .config_checks import SELECT_CHOICES, SELECT_METRICS, validate_config
from .config_loading import (DETECTION_PREFIX, load_sections, merge_overrides, packaged_configs, read_config_yaml,
                             resolve_config_path)
from .config_schema import (DataConfig, DecoupledConfig, EvalConfig, LossConfig, ModelConfig, OptimConfig,
                            PosthocConfig, RuntimeConfig, ScheduleConfig, StrategyConfig, TrainConfig)

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
    return settings_hash(d)  # iif.runtime: the one fingerprint a resume must match (detection's too)


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (value parsed by ``yaml.safe_load``) to ``cfg`` in place, then
    :func:`validate_config` the result.

    ``section.key.sub=value`` sets one entry of a dict field (e.g. ``model.kwargs.scale=16``).
    """
    return validate_config(merge_overrides(cfg, overrides))


def load_config(source: str | os.PathLike | Mapping | TrainConfig | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Build a :class:`TrainConfig` from defaults, a YAML file/short name or dict, then ``overrides``.

    A YAML file may start with ``base: other_config`` to inherit another (packaged or relative) config.
    """
    return load_sections(TrainConfig, source, overrides, validate_config)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically."""
    import yaml

    from .checkpoint import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
