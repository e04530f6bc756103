"""Forward passes of a trained model over a split: ``(features, logits, labels)`` in the split's order.

The bottom of the scoring code: :mod:`iif.train.decoupled` (features cached once for stage 2) and
:mod:`iif.train.evaluation` (metrics, checkpoints) both run :func:`predict`, and :mod:`iif.train.engine`
imports both, so it lives here, below all three (docs/ARCHITECTURE.md, "Layering rules").
:mod:`iif.train.evaluation` and :mod:`iif.train` re-export :func:`predict` and :func:`extract_features`::

    from iif.train import extract_features
    feats, logits, labels = extract_features(model, splits.test, "cpu", batch_size=256)
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.batches import make_eval_batches
from ..errors import IIFError
from ..runtime import autocast
from .distributed import DistInfo, all_gather_cat

__all__ = ["predict", "extract_features", "eval_split"]


def eval_split(splits, name: str):
    """The dataset ``splits.<name>`` (``test``, ``val``, ...); a split the dataset lacks is refused with the fix."""
    ds = getattr(splits, name, None)
    if ds is None:
        raise IIFError(f"this dataset has no {name!r} split; set eval.split to 'test' (or give val_per_class).")
    return ds


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
    batches, indices = make_eval_batches(dataset, batch_size, device, info, num_workers, resident)
    feats, outs, labels = [], [], []
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
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
