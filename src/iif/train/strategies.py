"""The paper's three ways to use IIF in classification (Fig. 3, §V-B3, SPEC §3).

* ``e2e``: train the whole model with any loss (IIF cross-entropy Eq. 15, or a baseline).
* ``decoupled``: stage 1 trains with plain CE; stage 2 loads it, optionally re-initialises the
  classifier, freezes the backbone (weights AND BatchNorm statistics, i.e. eval mode) and retrains
  only the classifier with the IIF loss. ``legacy=True`` reproduces the authors' code instead: the
  re-init runs BEFORE the load (so it is overwritten) and BN statistics keep updating.
* ``posthoc``: a softmax model evaluated with an adjuster: ``iif:<variant>`` (``w * z``, Eq. 13-14),
  ``la:<tau>`` (logit adjustment ``z - tau ln p``), ``taunorm:<tau>`` (rows ``w_i / ||w_i||^tau``).

This module holds the model surgery and the adjuster parsing; the loops live in :mod:`iif.train.engine`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import IIFError

__all__ = ["ADJUSTER_KINDS", "parse_adjuster", "build_adjuster", "reinit_classifier", "prepare_decoupled_model",
           "set_stage_train_mode", "trainable_parameters"]

ADJUSTER_KINDS = ("iif", "la", "taunorm", "none")

# (features, logits) -> adjusted logits
Adjuster = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parse_adjuster(spec: str) -> tuple[str, str]:
    """Split ``"iif:smooth"`` / ``"la:1.0"`` / ``"taunorm:1.0"`` into (kind, argument)."""
    kind, _, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in ADJUSTER_KINDS:
        raise IIFError(f"unknown adjuster {spec!r}; use iif:<variant> (e.g. iif:smooth), la:<tau> (e.g. la:1.0), "
                       "taunorm:<tau> (e.g. taunorm:1.0) or none.")
    if kind == "iif":
        arg = arg.strip() or "smooth"
    elif kind in ("la", "taunorm"):
        arg = arg.strip() or "1.0"
        try:
            float(arg)
        except ValueError:
            raise IIFError(f"adjuster {spec!r}: {arg!r} is not a number; write e.g. {kind}:1.0.") from None
    return kind, arg


def build_adjuster(spec: str, train_counts, model: nn.Module | None = None) -> Adjuster:
    """An adjuster function ``(features, logits) -> logits`` for ``spec`` (see module docstring)."""
    kind, arg = parse_adjuster(spec)
    counts = torch.as_tensor(train_counts, dtype=torch.float64)
    if kind == "none":
        return lambda features, logits: logits
    if kind == "iif":
        from ..adjusters import PostHocIIF

        module = PostHocIIF.from_counts(counts, variant=arg)
        return lambda features, logits: module.to(logits.device)(logits)
    if kind == "la":
        from ..adjusters import LogitAdjustment

        module = LogitAdjustment(counts, tau=float(arg))
        return lambda features, logits: module.to(logits.device)(logits)
    # tau-norm rescales the classifier rows, so it needs the model's head and the features.
    head = getattr(model, "classifier", None)
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or head.weight.dim() != 2:
        raise IIFError(f"adjuster {spec!r} needs a model whose classifier has a (C, D) weight (a linear head); "
                       "this model has none. Use iif:<variant> or la:<tau> instead.")
    from ..models.heads import TauNormHead

    tau_head = TauNormHead.from_linear(head, tau=float(arg)).eval()
    return lambda features, logits: tau_head.to(features.device)(features.to(tau_head.weight.dtype))


def reinit_classifier(model: nn.Module) -> None:
    """Re-initialise every parameter of ``model.classifier`` (cRT-style classifier re-training)."""
    head = model.classifier
    found = False
    for m in head.modules():
        if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
            m.reset_parameters()
            found = True
    if not found:
        raise IIFError(f"cannot re-initialise classifier {type(head).__name__}: it has no reset_parameters(); "
                       "set decoupled.reinit=false.")


def prepare_decoupled_model(model: nn.Module, stage1_state: dict, *, reinit: bool, legacy: bool) -> nn.Module:
    """Load stage-1 weights into ``model`` and freeze its backbone for stage 2 (SPEC §3).

    Correct order (default): load, then re-init the classifier if asked. ``legacy``: re-init first and
    load afterwards, so the re-init is silently overwritten, as the authors' code does.
    """
    from ..models import freeze_backbone, load_state

    if legacy:
        if reinit:
            reinit_classifier(model)
        load_state(model, stage1_state)
        # The authors freeze the weights but leave the model in train mode: BN statistics keep moving.
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))
    else:
        load_state(model, stage1_state)
        if reinit:
            reinit_classifier(model)
        freeze_backbone(model)
    return model


def set_stage_train_mode(model: nn.Module, frozen_backbone: bool, legacy: bool) -> None:
    """Training mode for a stage: whole model, or (stage 2) only the classifier.

    With a frozen backbone the backbone stays in eval mode so BatchNorm running statistics do not move;
    ``legacy`` keeps the whole model in train mode (the authors' behaviour: BN statistics keep updating).
    """
    model.train()
    if frozen_backbone and not legacy:
        from ..models import set_backbone_eval

        set_backbone_eval(model)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
