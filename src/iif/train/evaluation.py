"""Scoring a trained model: logits and features of a split, metrics with post-hoc adjusters, a checkpoint.

Moved out of :mod:`iif.train.engine` (which keeps the training loop). Public names are re-exported by
:mod:`iif.train`::

    from iif.train import predict, extract_features, evaluate, evaluate_checkpoint
    feats, logits, labels = extract_features(model, splits.test, "cpu", batch_size=256)
    metrics = evaluate_checkpoint("runs/x/last.pt", adjust=["iif:smooth", "la:1.0"])
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

from ..errors import IIFError
from .checkpoint import load_checkpoint
from .config import load_config
from .distributed import DistInfo, all_gather_cat
from .strategies import build_adjuster

__all__ = ["predict", "extract_features", "evaluate", "loss_adjuster", "evaluate_checkpoint"]


def _engine():
    # The loop's building blocks (batching, autocast, model/data builders) live in engine.py, which imports
    # this module; importing them at call time keeps the two modules free of an import cycle.
    from . import engine

    return engine


@torch.no_grad()
def predict(model: nn.Module, dataset, device: str | torch.device, batch_size: int = 256, *, amp: str = "none",
            channels_last: bool = False, info: DistInfo | None = None, num_workers: int = 0,
            resident: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features, logits, labels)`` of ``dataset`` in its order (float32, on CPU), model in eval mode.

    With DDP every rank scores ``rank::world`` and the results are gathered and put back in order.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    eng = _engine()
    batches, indices = eng.make_eval_batches(dataset, batch_size, device, info, num_workers, resident)
    feats, outs, labels = [], [], []
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with eng._autocast(device, amp):
            f = model.features(x)
            z = model.classifier(f)
        feats.append(f.float())
        outs.append(z.float())
        labels.append(torch.as_tensor(y, device=device).long())
    model.train(was_training)
    d = getattr(model, "feature_dim", None)
    c = None
    f = torch.cat(feats) if feats else torch.zeros(0, d or 0, device=device)
    z = torch.cat(outs) if outs else torch.zeros(0, c or 0, device=device)
    y = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=device)
    if indices is not None and info is not None and info.distributed:
        pos = torch.as_tensor(indices, dtype=torch.long, device=device)
        f, z, y, pos = (all_gather_cat(t, info) for t in (f, z, y, pos))
        order = torch.argsort(pos)
        f, z, y = f[order], z[order], y[order]
    return f.cpu(), z.cpu(), y.cpu()


def extract_features(model: nn.Module, dataset, device: str | torch.device | None = None,
                     batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features (N, D), logits (N, C), labels (N,))`` of ``dataset`` on CPU: eval mode, no augmentation.

    ``device`` (default: where the model's parameters are) is where the forward passes run; the model is
    moved there if it is elsewhere.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    model.to(device)
    return predict(model, dataset, device, batch_size)


def evaluate(model: nn.Module, dataset, train_counts, device: torch.device, *, adjusters: dict[str, Callable] | None = None,
             batch_size: int = 256, many: int = 100, few: int = 20, bins: int = 10, amp: str = "none",
             channels_last: bool = False, info: DistInfo | None = None, resident: bool = True,
             num_workers: int = 0) -> dict[str, dict]:
    """Metrics of the raw logits and of every adjusted version, side by side.

    ``adjusters`` maps a name (``adjusted`` for the loss's own decision rule, ``iif:smooth``...) to a
    function ``(features, logits) -> logits``. Returns ``{"raw": metrics, name: metrics, ...}``.
    """
    from ..metrics import evaluate_logits

    f, z, y = predict(model, dataset, device, batch_size, amp=amp, channels_last=channels_last, info=info,
                      resident=resident, num_workers=num_workers)
    out = {"raw": evaluate_logits(z, y, train_counts, many, few, bins)}
    for name, fn in (adjusters or {}).items():
        with torch.no_grad():
            out[name] = evaluate_logits(fn(f, z), y, train_counts, many, few, bins)
    return out


def loss_adjuster(criterion: nn.Module | None) -> Callable | None:
    """The loss's own inference rule (``adjust_logits``), e.g. ``w * z`` for the IIF loss (SPEC §3)."""
    fn = getattr(criterion, "adjust_logits", None)
    if fn is None:
        return None
    from ..losses import LossBase

    if isinstance(criterion, LossBase) and type(criterion).adjust_logits is LossBase.adjust_logits:
        return None  # identity: "adjusted" would repeat "raw"

    def apply(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return fn(logits)

    return apply


def _eval_split(splits, name: str):
    ds = getattr(splits, name, None)
    if ds is None:
        raise IIFError(f"this dataset has no {name!r} split; set eval.split to 'test' (or give val_per_class).")
    return ds


def evaluate_checkpoint(path: str | os.PathLike, adjust: list[str] | tuple = (), split: str = "test",
                        device: str | None = None, batch_size: int | None = None, splits=None) -> dict[str, dict]:
    """Rebuild the model and data a checkpoint was trained with and score it: raw logits, the loss's own
    adjusted logits (if its loss has one) and each ``adjust`` spec (``iif:smooth``, ``la:1.0``, ``taunorm:1.0``)."""
    ckpt = load_checkpoint(path)
    if "config" not in ckpt:
        raise IIFError(f"{ckpt['path']} holds only weights (no config); evaluate it with fit(strategy=posthoc, "
                       "posthoc.checkpoint=...) and a config that describes the model.")
    cfg = load_config(ckpt["config"])
    eng = _engine()
    dev = eng.resolve_device(device or cfg.runtime.device)
    if splits is None:
        splits = eng.build_splits(cfg)
    model = eng.build_model_for(cfg, splits)
    from ..models import load_state

    load_state(model, ckpt["model"])
    model.to(dev)
    counts = splits.freq.image_counts
    stored = ckpt.get("class_counts")
    if stored is not None and [int(c) for c in counts] != [int(c) for c in stored]:
        raise IIFError(f"the dataset rebuilt from {ckpt['path']}'s config has other class counts than at training "
                       "time; check data.root and data.* settings.")
    adjusters: dict[str, Callable] = {}
    stage = ckpt.get("stage", "e2e")
    spec = eng.StageSpec.decoupled(cfg) if stage == "stage2" else eng.StageSpec.main(cfg, stage)
    try:
        own = loss_adjuster(eng.build_criterion(spec, splits.freq))
    except IIFError:
        own = None
    if own is not None:
        adjusters["adjusted"] = own
    for a in adjust:
        adjusters[a] = build_adjuster(a, counts, model)
    e = cfg.eval
    return evaluate(model, _eval_split(splits, split), counts, dev, adjusters=adjusters,
                    batch_size=batch_size or e.batch_size, many=e.many, few=e.few, bins=e.bins,
                    resident=cfg.data.resident)
