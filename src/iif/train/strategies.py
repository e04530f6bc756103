"""The paper's three ways to use IIF in classification (Fig. 3, §V-B3; docs/method.md).

* ``e2e``: train the whole model with any loss (IIF cross-entropy Eq. 15, or a baseline).
* ``decoupled``: stage 1 trains with plain CE; stage 2 loads it, optionally re-initialises the
  classifier, freezes the backbone (weights AND BatchNorm statistics, i.e. eval mode) and retrains
  only the classifier with the IIF loss (:mod:`iif.train.decoupled`; ``legacy=True`` trains what the
  authors' code trains).
* ``posthoc``: a softmax model evaluated with an adjuster: ``iif:<variant>`` (``w * z``, Eq. 13-14;
  ``iif:<variant>^<gamma>`` multiplies by ``w ** gamma``, the exponent ``iif bench``'s tuned row picks),
  ``la:<tau>`` or ``logit_adjustment:<tau>`` (logit adjustment ``z - tau ln p``), ``taunorm:<tau>`` (rows
  ``w_i / ||w_i||^tau``, bias dropped). The kinds are post-hoc methods of :mod:`iif.methods`.

This module holds the adjuster parsing and tau-norm; the decoupled stage is :mod:`iif.train.decoupled`, the
loops live in :mod:`iif.train.engine`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import IIFError
from ..methods import canonical_method, spelling

__all__ = ["ADJUSTER_KINDS", "parse_adjuster", "iif_power", "build_adjuster", "tau_norm_head", "trainable_parameters"]

#: The adjuster kinds as specs spell them; each is a post-hoc method of :mod:`iif.methods` (``la`` is
#: ``logit_adjustment``, ``none`` is ``softmax``), whose names and aliases are accepted as well.
ADJUSTER_KINDS = ("iif", "la", "taunorm", "none")

# (features, logits) -> adjusted logits
Adjuster = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parse_adjuster(spec: str) -> tuple[str, str]:
    """Split ``"iif:smooth"`` / ``"iif:normit^0.25"`` / ``"la:1.0"`` / ``"taunorm:1.0"`` into (kind, argument).

    The one parser of adjuster specs (``iif eval --adjust``, ``iif predict --adjust``, ``posthoc.adjusters``,
    the bench's ``reproduce`` commands). An IIF argument is ``variant`` or ``variant^gamma`` with a finite
    ``gamma > 0`` (:func:`iif_power`)."""
    kind, _, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in ADJUSTER_KINDS:  # an alias of the one method vocabulary (iif.methods): logit_adjustment -> la
        try:
            kind = spelling(canonical_method(kind, "posthoc"), "posthoc")
        except IIFError:
            raise IIFError(f"unknown adjuster {spec!r}; use iif:<variant> (e.g. iif:smooth, or iif:normit^0.25 for "
                           "the weights to a power), la:<tau> or logit_adjustment:<tau> (e.g. la:1.0), taunorm:<tau> "
                           f"(e.g. taunorm:1.0) or none.{_suggest(kind)}") from None
    if kind == "iif":
        arg = arg.strip() or "smooth"
        iif_power(arg, spec)
    elif kind in ("la", "taunorm"):
        arg = arg.strip() or "1.0"
        try:
            float(arg)
        except ValueError:
            raise IIFError(f"adjuster {spec!r}: {arg!r} is not a number; write e.g. {kind}:1.0.") from None
    return kind, arg


def _suggest(kind: str) -> str:
    """`` Did you mean 'x'?`` for a misspelt adjuster kind, from the kinds and the post-hoc method names."""
    import difflib

    from ..methods import METHODS

    names = [*ADJUSTER_KINDS, *(s for m in METHODS if "posthoc" in m.tasks for s in m.accepts("posthoc"))]
    close = difflib.get_close_matches(kind, list(dict.fromkeys(names)), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def iif_power(arg: str, spec: str | None = None) -> tuple[str, float]:
    """``(variant, gamma)`` of an IIF adjuster argument: ``"smooth"`` -> ``("smooth", 1.0)``,
    ``"normit^0.25"`` -> ``("normit", 0.25)``. The variant itself is checked when the weights are built."""
    variant, hat, power = str(arg).partition("^")
    variant = variant.strip()
    if not hat:
        return variant, 1.0
    try:
        gamma = float(power)
    except ValueError:
        gamma = math.nan
    if not variant or not math.isfinite(gamma) or gamma <= 0:
        raise IIFError(f"adjuster {spec or 'iif:' + arg!r}: write iif:<variant>^<gamma> with a number gamma > 0 "
                       f"(the IIF weights to that power), e.g. iif:normit^0.25; got {arg!r}.")
    return variant, gamma


def build_adjuster(spec: str, train_counts, model: nn.Module | None = None) -> Adjuster:
    """An adjuster function ``(features, logits) -> logits`` for ``spec`` (see module docstring)."""
    kind, arg = parse_adjuster(spec)
    counts = torch.as_tensor(train_counts, dtype=torch.float64)
    if kind == "none":
        return lambda features, logits: logits
    if kind == "iif":
        from ..adjusters import PostHocIIF
        from ..weights import iif_weights

        variant, gamma = iif_power(arg, spec)
        if gamma == 1.0:
            module = PostHocIIF.from_counts(counts, variant=variant)
        else:  # (w ** gamma) * z, the weights raised in float64 as iif.bench.posthoc.iif_adjusted does
            module = PostHocIIF(iif_weights(counts, variant, dtype=torch.float64).pow(gamma))
        return lambda features, logits: module.to(logits.device)(logits)
    if kind == "la":
        from ..adjusters import LogitAdjustment

        module = LogitAdjustment(counts, tau=float(arg))
        return lambda features, logits: module.to(logits.device)(logits)
    # tau-norm rescales the classifier rows, so it needs the model's head and the features.
    tau_head = tau_norm_head(getattr(model, "classifier", None), float(arg), spec)
    return lambda features, logits: tau_head.to(features.device)(features.to(tau_head.weight.dtype))


@torch.no_grad()
def tau_norm_head(head: nn.Module | None, tau: float, spec: str = "taunorm") -> nn.Module:
    """tau-norm (Kang et al. 2020): a copy of ``head`` (eval mode) whose rows are ``w_c / ||w_c||^tau``
    (:func:`iif.adjusters.tau_normalize`) and whose bias is dropped, as Kang et al.'s ``tau_norm.py`` does.

    The head's own forward is kept, so a cosine head (rows normalised anyway) predicts as before; ``tau = 0``
    on a linear head is the trained head without its bias. The one tau-norm of ``iif eval --adjust
    taunorm:tau``, ``iif train`` (``posthoc.adjusters``) and ``iif bench``.
    """
    import copy

    from ..adjusters import tau_normalize

    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise IIFError(f"adjuster {spec!r} needs a model whose classifier has a (C, D) weight (a linear head); "
                       "this model has none. Use iif:<variant> or la:<tau> instead.")
    new = copy.deepcopy(head).eval()
    new.weight.copy_(tau_normalize(weight.detach(), tau))
    bias = getattr(new, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.zero_()
    return new


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
