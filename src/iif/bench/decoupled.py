"""Decoupled classifier retraining on cached features (stage 2 of paper Fig. 3, left; Kang et al. 2020).

Stage 1 (plain softmax CE end to end) is trained once; its backbone is frozen, so the features of every
training image never change and the stage-2 head can be trained on a cached ``(N, D)`` feature matrix
in a few hundred mini-batch steps, with no image ever forwarded again. That is what makes all
decoupled rows of ``iif bench`` cost less than one backbone epoch.

Methods (all start from the trained stage-1 head unless noted):

* IIF (paper Eq. 15-16): retrain the head with the IIF cross-entropy, random sampling, and predict
  with ``w * z`` (SPEC section 3: models trained with the IIF loss are evaluated on ``w * z``).
* cRT: re-initialise the head and retrain it with plain CE under class-balanced sampling.
* LWS: keep the head frozen and learn one scale per class, ``alpha_c * z_c``, with CE under
  class-balanced sampling.
* tau-norm: no training; rows of the weight divided by ``||w_c||^tau``.

Retraining starts from the stage-1 head for IIF because that is what the authors' code does in practice
(its re-initialisation is overwritten by the checkpoint load, SPEC section 3); ``reinit=True`` gives the
re-initialised variant.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..adjusters import LearnableWeightScaling, tau_normalize
from ..data import build_sampler
from ..errors import IIFError
from ..frequency import ClassFrequency
from ..losses import build_loss

__all__ = [
    "HeadTrainConfig",
    "batch_indices",
    "retrain_head",
    "head_logits",
    "iif_decoupled",
    "crt",
    "lws",
    "tau_norm_logits",
    "head_weight_norms",
]


@dataclass
class HeadTrainConfig:
    """Optimisation of a head on cached features: SGD with momentum and a cosine learning-rate decay."""

    steps: int = 300
    batch_size: int = 256
    # Cap on passes over the cached training set: a 250-image set needs far fewer than 300 steps.
    max_epochs: int = 30
    min_steps: int = 100
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


def batch_indices(targets: np.ndarray, sampler: str, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """``(steps, batch_size)`` training indices drawn epoch after epoch from :func:`iif.data.build_sampler`.

    Using the library's samplers keeps one definition of "random" and "class-balanced" sampling.
    """
    s = build_sampler(sampler, list(map(int, targets)), seed=seed)
    need = steps * batch_size
    chunks, have, epoch = [], 0, 0
    while have < need:
        s.set_epoch(epoch)
        idx = torch.as_tensor(list(iter(s)), dtype=torch.long)
        if idx.numel() == 0:
            raise IIFError("The sampler yielded no indices; the training split is empty.")
        chunks.append(idx)
        have += idx.numel()
        epoch += 1
    return torch.cat(chunks)[:need].view(steps, batch_size)


def retrain_head(
    module: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampler: str = "random",
    cfg: HeadTrainConfig | None = None,
) -> nn.Module:
    """Train the trainable parameters of ``module`` (features -> logits) on cached features in place."""
    cfg = cfg or HeadTrainConfig()
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise IIFError("The head has no trainable parameters to retrain.")
    batch = min(cfg.batch_size, len(labels))
    steps = min(cfg.steps, max(cfg.min_steps, math.ceil(cfg.max_epochs * len(labels) / batch)))
    idx = batch_indices(labels.cpu().numpy(), sampler, steps, batch, cfg.seed)
    idx = idx.to(features.device)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    module.train()
    for step in range(steps):
        b = idx[step]
        loss = loss_fn(module(features[b]), labels[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    module.eval()
    return module


@torch.no_grad()
def head_logits(module: nn.Module, features: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Logits of ``module`` on cached features, in chunks (eval mode)."""
    module.eval()
    return torch.cat([module(features[i:i + batch_size]) for i in range(0, len(features), batch_size)]) if len(features) else features.new_zeros((0,))


def iif_decoupled(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    freq: ClassFrequency,
    variant: str,
    cfg: HeadTrainConfig | None = None,
    reinit: bool = False,
) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """Decoupled IIF: a copy of ``head`` retrained with the IIF loss (Eq. 15), random sampling.

    Returns the retrained head and the inference map ``logits -> w * logits`` (the loss's ``adjust_logits``).
    """
    new = copy.deepcopy(head)
    if reinit:
        new.reset_parameters()
    new.requires_grad_(True)
    loss = build_loss("iif", freq, variant=variant).to(features.device)
    retrain_head(new, features, labels, loss, sampler="random", cfg=cfg)
    return new, loss.adjust_logits


def crt(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, cfg: HeadTrainConfig | None = None) -> nn.Module:
    """cRT (Kang et al. 2020): re-initialised head retrained with CE under class-balanced sampling."""
    new = copy.deepcopy(head)
    new.reset_parameters()
    new.requires_grad_(True)
    return retrain_head(new, features, labels, F.cross_entropy, sampler="class_balanced", cfg=cfg)


def lws(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, cfg: HeadTrainConfig | None = None) -> nn.Module:
    """LWS (Kang et al. 2020; paper Table IV ``z'_i = alpha_i z_i``): frozen head, learned per-class scales.

    Works on any head (linear or cosine) because it scales the head's logits.
    """
    frozen = copy.deepcopy(head).requires_grad_(False)
    module = nn.Sequential(frozen, LearnableWeightScaling(int(frozen.weight.shape[0]))).to(features.device)
    return retrain_head(module, features, labels, F.cross_entropy, sampler="class_balanced", cfg=cfg)


@torch.no_grad()
def tau_norm_logits(head: nn.Module, features: torch.Tensor, tau: float) -> torch.Tensor:
    """tau-norm (Kang et al. 2020): logits of ``head`` with rows ``w_c / ||w_c||^tau`` and no bias.

    On a cosine head the rows are normalised anyway, so tau-norm leaves its predictions unchanged.
    """
    new = copy.deepcopy(head)
    new.weight.copy_(tau_normalize(new.weight, tau))
    if getattr(new, "bias", None) is not None:
        new.bias.zero_()
    return head_logits(new, features)


@torch.no_grad()
def head_weight_norms(head: nn.Module) -> np.ndarray:
    """L2 norm of each class's weight row (paper Fig. 5)."""
    return head.weight.detach().norm(dim=1).cpu().double().numpy()
