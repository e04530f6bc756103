"""Building blocks of a training stage, from a config: the stage spec, datasets, model and loss, and the files
a config reads (:func:`config_inputs`); the device and the learning-rate schedule are :mod:`iif.runtime`'s.
:mod:`iif.train.engine` runs stages from them; :mod:`iif.train.evaluation` rebuilds a checkpoint's model and
data with them.

    from iif.train.build import StageSpec, build_splits, build_model_for, build_criterion
    cfg = load_config("digits_lt_e2e")
    splits = build_splits(cfg)
    model = build_model_for(cfg, splits)
    loss = build_criterion(StageSpec.main(cfg), splits.freq)   # the IIF loss, smooth variant
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from ..losses.registry import VARIANT_LOSSES  # the losses that take an IIF weight variant (paper Table III)
from ..runtime import resolve_device  # the one device resolution (iif.runtime); named here for old imports
from .config import TrainConfig

__all__ = ["StageSpec", "VARIANT_LOSSES", "resolve_device", "build_splits", "build_model_for", "build_criterion",
           "config_inputs"]


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
    # The IIF weight variant (paper Table III) for the losses that take one (iif, iif_csl); None otherwise.
    variant: str | None = None
    frozen_backbone: bool = False
    legacy: bool = False

    @classmethod
    def main(cls, cfg: TrainConfig, name: str = "e2e") -> "StageSpec":
        """The top-level sections: end-to-end training, or decoupled stage 1."""
        kw = dict(cfg.loss.kwargs)
        variant = _variant_for(cfg.loss.name, kw, cfg.loss.variant)
        if variant is not None and cfg.loss.norm is not None:
            kw.setdefault("norm", cfg.loss.norm)  # the weights' normalisation (loss.norm), by name
        return cls(name, cfg.schedule.epochs, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay,
                   cfg.optim.nesterov, cfg.optim.batch_size, cfg.schedule.name, list(cfg.schedule.milestones),
                   cfg.schedule.gamma, cfg.schedule.warmup_epochs, cfg.schedule.warmup_start_factor, cfg.loss.name,
                   kw, cfg.data.sampler, cfg.data.mixup_alpha, cfg.loss.label_smoothing, variant)

    @classmethod
    def decoupled(cls, cfg: TrainConfig) -> "StageSpec":
        """Decoupled stage 2 (paper §V-B3): the ``decoupled`` section, backbone frozen."""
        d = cfg.decoupled
        kw = dict(d.loss_kwargs)
        variant = _variant_for(d.loss, kw, d.variant)
        return cls("stage2", d.epochs, d.lr, d.momentum, d.weight_decay, False, d.batch_size or cfg.optim.batch_size,
                   d.schedule, [], 0.1, 0.0, 1.0, d.loss, kw, d.sampler, d.mixup_alpha, 0.0, variant,
                   frozen_backbone=True, legacy=d.legacy)


def _variant_for(loss: str, kwargs: dict, variant: str) -> str | None:
    """The stage's IIF variant: ``loss.kwargs.variant`` if given there (removed from ``kwargs``), else the
    section's ``variant``; None for a loss without one."""
    if str(loss).lower() not in VARIANT_LOSSES:
        return None
    return kwargs.pop("variant", variant)


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
    """The config's model (:func:`iif.models.build_model`) for the classes and channels of ``splits``."""
    from ..models import build_model

    m = cfg.model
    return build_model(m.arch, splits.num_classes, m.head, splits.in_channels, pretrained=m.pretrained,
                       backbone_kwargs=dict(m.backbone_kwargs), **dict(m.kwargs))


def build_criterion(spec: StageSpec, freq) -> nn.Module:
    """The stage's loss (:func:`iif.losses.build_loss`) with its variant, label smoothing and options."""
    from ..losses import build_loss

    kw = dict(spec.loss_kwargs)
    if spec.label_smoothing:
        kw["label_smoothing"] = spec.label_smoothing
    # The loop checks the loss for NaN/inf itself (and saves a checkpoint); labels were checked when the
    # dataset was built. Skipping the loss's own checks saves a host sync per step on a GPU.
    kw.setdefault("check_finite", False)
    kw.setdefault("check_labels", False)
    return build_loss(spec.loss, freq, variant=spec.variant, **kw)


def config_inputs(cfg: TrainConfig) -> list[tuple[str, str]]:
    """``(config key, path)`` of everything a training config reads from disk: ``data.root``, path-valued
    ``data.options`` (list files, found beside ``list_root`` / ``root`` as the list datasets do),
    ``decoupled.stage1_checkpoint`` and ``posthoc.checkpoint``; for :func:`iif.outputs.refuse_overlap`."""
    d = cfg.data
    found: list[tuple[str, str]] = []
    if d.root:
        found.append(("data.root", str(d.root)))
    opts = d.options if isinstance(d.options, dict) else {}
    base = opts.get("list_root") or d.root
    for key, value in sorted(opts.items()):
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            continue
        value = os.path.expanduser(os.fspath(value))
        candidates = [value] + ([os.path.join(os.path.expanduser(str(base)), value)] if base else [])
        hit = next((c for c in candidates if os.path.exists(c)), None)
        if hit is not None:
            found.append((f"data.options.{key}", hit))
    for key, value in (("decoupled.stage1_checkpoint", cfg.decoupled.stage1_checkpoint),
                       ("posthoc.checkpoint", cfg.posthoc.checkpoint)):
        if value:
            found.append((key, str(value)))
    return found
