"""Decoupled classifier retraining: stage 2 of the paper's decoupled strategy (Fig. 3, left; section V-B3).

Stage 1 trains the whole model with plain softmax cross-entropy. Stage 2 loads it, freezes the backbone and
retrains only the classifier with the recipe of the config's ``decoupled:`` section: for the paper, the IIF
cross-entropy (Eq. 15) with random sampling, 20 epochs at lr 1e-4 on CIFAR-LT, and prediction with
``w * z`` (Eq. 13). The same stage runs the classifier re-balancing baselines of Kang et al. (2020) that the
paper compares with (Table VII); each is a set of ``decoupled.*`` settings (:func:`method_overrides`):

=========  ==========================================================================================
IIF        ``decoupled.loss=iif decoupled.variant=<v>`` (sampler and re-init from the config: random, no)
cRT        ``decoupled.loss=ce decoupled.sampler=class_balanced decoupled.reinit=true``
LWS        ``decoupled.method=lws decoupled.loss=ce decoupled.sampler=class_balanced``: the classifier
           stays frozen and one scale per class, ``alpha_c * z_c``, is learned (paper Table IV)
=========  ==========================================================================================

tau-norm trains nothing: it is :func:`iif.train.strategies.tau_norm_head` (``iif eval --adjust taunorm:tau``).

:func:`iif.train.retrain_classifier` (defined in :mod:`iif.train.engine`, with the stage loop it runs; this
module holds the pieces it uses) is the one implementation: ``iif train <dataset>_decoupled`` runs it after
stage 1 (or on ``decoupled.stage1_checkpoint``), and ``iif bench`` runs it on its softmax backbone, so every
decoupled row of the bench is what ``iif train`` trains with the same settings. It trains with the same
loop as every stage: per-epoch checkpoints, exact resume, DDP. When the frozen
backbone sees no augmentation, the training features are computed once (:func:`cached_feature_batches`):
the same inputs in the same order, so the same classifier to float rounding, without a backbone pass per step.

Freezing (docs/method.md, "Decoupled training"):

* default: load the stage-1 weights, then re-initialise the classifier if ``decoupled.reinit``; the backbone
  gets no gradients and stays in eval mode (BatchNorm statistics fixed); every classifier parameter trains
  (a learnable cosine scale included).
* ``decoupled.legacy=true`` trains exactly what the authors' code trains: the re-initialisation runs before
  the checkpoint load (so the load overwrites it), the whole model stays in train mode (BatchNorm running
  statistics keep moving), and only the classifier's ``weight`` and ``bias`` train (a learnable cosine scale
  stays at its stage-1 value).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import IIFError
from ..models.heads import LWSClassifier  # the one LWS classifier (LWSHead is the same module around a linear head)
from .inference import predict

__all__ = [
    "DECOUPLED_METHODS",
    "RETRAIN_METHODS",
    "LWSClassifier",
    "method_overrides",
    "reinit_classifier",
    "prepare_decoupled_model",
    "shape_stage2_model",
    "set_stage_train_mode",
    "FeatureBatches",
    "cached_feature_batches",
]

#: Compute the frozen backbone's training features once when that is exact (:func:`cached_feature_batches`).
CACHE_FEATURES = True

#: ``decoupled.method``: ``retrain`` trains the classifier's parameters, ``lws`` only per-class logit scales.
DECOUPLED_METHODS: tuple[str, ...] = ("retrain", "lws")

#: The classifier-retraining methods by the name a results table gives them.
RETRAIN_METHODS: tuple[str, ...] = ("IIF", "cRT", "LWS")


def method_overrides(method: str, variant: str | None = None) -> list[str]:
    """The ``decoupled.*`` overrides that turn a config's stage 2 into ``method`` (``IIF``, ``cRT``, ``LWS``).

    Only what defines the method is set; the schedule (epochs, lr, batch size, momentum, weight decay) and, for
    IIF, the sampler and re-init stay the config's. ``variant`` is the IIF weight variant (``smooth``...).
    """
    if method == "IIF":
        return ["decoupled.method=retrain", "decoupled.loss=iif", f"decoupled.variant={variant or 'smooth'}"]
    if method == "cRT":
        return ["decoupled.method=retrain", "decoupled.loss=ce", "decoupled.sampler=class_balanced",
                "decoupled.reinit=true"]
    if method == "LWS":
        return ["decoupled.method=lws", "decoupled.loss=ce", "decoupled.sampler=class_balanced",
                "decoupled.reinit=false"]
    raise IIFError(f"unknown decoupled method {method!r}; use one of {', '.join(RETRAIN_METHODS)}.")


def reinit_classifier(model: nn.Module) -> None:
    """Re-initialise every parameter of ``model.classifier`` (cRT-style classifier re-training)."""
    found = False
    for m in model.classifier.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
            found = True
    if not found:
        raise IIFError(f"cannot re-initialise classifier {type(model.classifier).__name__}: it has no "
                       "reset_parameters(); set decoupled.reinit=false.")


def _check_method(d: Any) -> str:
    method = getattr(d, "method", "retrain")
    if method not in DECOUPLED_METHODS:
        raise IIFError(f"unknown decoupled.method {method!r}; use retrain or lws.")
    if method == "lws" and d.legacy:
        raise IIFError("decoupled.method=lws has no legacy form (the authors' code retrains the classifier); "
                       "set decoupled.legacy=false.")
    return method


def shape_stage2_model(model: nn.Module, d: Any) -> nn.Module:
    """Give ``model`` the structure a stage-2 checkpoint of settings ``d`` holds (LWS wraps the classifier), so
    its weights load; used when a stage-2 checkpoint is restored (``iif eval``)."""
    if _check_method(d) == "lws" and not isinstance(model.classifier, LWSClassifier):
        model.classifier = LWSClassifier(model.classifier)
    return model


def prepare_decoupled_model(model: nn.Module, stage1_state: dict, d: Any) -> nn.Module:
    """Load stage-1 weights into ``model`` and freeze what stage 2 (settings ``d``, a ``decoupled:`` section)
    does not train; see the module docstring for the default and the legacy order."""
    from ..models import freeze_backbone, load_state

    method = _check_method(d)
    if d.legacy:
        if d.reinit:
            reinit_classifier(model)  # the authors' order: overwritten by the load just below
        load_state(model, stage1_state)
        trained = {"classifier.weight", "classifier.bias"}
        for name, p in model.named_parameters():
            p.requires_grad_(name in trained)
        return model
    load_state(model, stage1_state)
    if d.reinit:
        reinit_classifier(model)
    freeze_backbone(model)
    if method == "lws":
        model.classifier = LWSClassifier(model.classifier)
    return model


def set_stage_train_mode(model: nn.Module, frozen_backbone: bool, legacy: bool) -> None:
    """Training mode for a stage: the whole model, or (stage 2) only the classifier.

    With a frozen backbone the backbone stays in eval mode, so BatchNorm running statistics do not move;
    ``legacy`` keeps the whole model in train mode (the authors' code: BN statistics keep updating).
    """
    model.train()
    if frozen_backbone and not legacy:
        from ..models import set_backbone_eval

        set_backbone_eval(model)


class FeatureBatches:
    """Stage-2 training batches of precomputed features: the sampler's order cut into ``batch_size`` chunks,
    exactly the batches the image path builds (:mod:`iif.data.batches`), with features instead of images."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, sampler, batch_size: int) -> None:
        self.features, self.targets, self.sampler, self.batch_size = features, targets, sampler, int(batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long, device=self.features.device)
        for start in range(0, order.numel(), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.features[idx], self.targets[idx]


def cached_feature_batches(model: nn.Module, dataset, sampler, batch_size: int, device: torch.device, *,
                           legacy: bool, mixup_alpha: float, amp: str, distributed: bool,
                           resident: bool = True, eval_batch_size: int = 512) -> FeatureBatches | None:
    """The training features of a frozen backbone computed once, as :class:`FeatureBatches`, when that changes
    nothing: backbone in eval mode (not ``legacy``, whose BatchNorm statistics move), no augmentation (an
    in-memory dataset whose recipe has no crop, flip or cutout), no mixup (it mixes images), no autocast, one
    process. Otherwise None, and stage 2 forwards every batch through the backbone. The classifier then
    trains on the same inputs in the same order; tests/test_train_strategies.py checks the weights match.
    """
    if not CACHE_FEATURES or legacy or mixup_alpha > 0 or amp not in ("none", "", None) or distributed or not resident:
        return None
    from ..data.batches import batch_recipe

    recipe = batch_recipe(dataset)
    if recipe is None or recipe["crop"] or recipe["flip"] or recipe["cutout"]:
        return None
    features, _, targets = predict(model, dataset, device, eval_batch_size, resident=True)
    return FeatureBatches(features.to(device), targets.to(device), sampler, batch_size)
