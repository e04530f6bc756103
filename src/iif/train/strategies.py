"""The paper's three ways to use IIF in classification (Fig. 3, §V-B3; docs/method.md).

* ``e2e``: train the whole model with any loss (IIF cross-entropy Eq. 15, or a baseline).
* ``decoupled``: stage 1 trains with plain CE; stage 2 loads it, optionally re-initialises the
  classifier, freezes the backbone (weights AND BatchNorm statistics, i.e. eval mode) and retrains
  only the classifier with the IIF loss (:mod:`iif.train.decoupled`; ``legacy=True`` trains what the
  authors' code trains).
* ``posthoc``: a softmax model evaluated with an adjuster: ``iif:<variant>`` (``w * z``, Eq. 13-14;
  ``iif:<variant>^<gamma>`` multiplies by ``w ** gamma``, the exponent ``iif bench``'s tuned row picks),
  ``la:<tau>`` or ``logit_adjustment:<tau>`` (logit adjustment ``z - tau ln p``), ``taunorm:<tau>`` (rows
  ``w_i / ||w_i||^tau``, bias dropped). The kinds are post-hoc methods of :mod:`iif.methods`; a method
  defined there (or with :func:`iif.register_method`) with an ``infer`` transform and no special
  implementation is ``NAME[:value]`` (the value of its first parameter) or ``NAME:a=0.5,b=2``.

This module holds the adjuster parsing and tau-norm; the decoupled stage is :mod:`iif.train.decoupled`, the
loops live in :mod:`iif.train.engine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import IIFError
from ..logit_transforms import resolve
from ..methods import all_methods, get_method, parse_params

__all__ = ["ADJUSTER_KINDS", "PosthocKind", "IIF_KIND", "LA_KIND", "TAUNORM_KIND", "NONE_KIND", "parse_adjuster", "iif_power", "build_adjuster", "tau_norm_head", "trainable_parameters"]

#: The built-in adjuster kinds as specs spell them; each is a post-hoc method of :mod:`iif.methods` (``la`` is
#: ``logit_adjustment``, ``none`` is ``softmax``) whose definition names its special implementation here
#: (:data:`IIF_KIND`, :data:`LA_KIND`, :data:`TAUNORM_KIND`, :data:`NONE_KIND`); names and aliases are accepted
#: as well, and so is any post-hoc method without one (``NAME[:value]``, its ``infer`` transform).
ADJUSTER_KINDS = ("iif", "la", "taunorm", "none")

# (features, logits) -> adjusted logits
Adjuster = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PosthocKind:
    """A special post-hoc implementation (a method definition's ``posthoc`` impl): the argument when the spec
    has none, its check ``(arg, spec, kind)``, and the builder ``(arg, spec, counts, model) -> Adjuster``."""

    default: str
    check: Callable[[str, str, str], None]
    build: Callable[[str, str, torch.Tensor, Optional[nn.Module]], Adjuster]


def _check_number(arg: str, spec: str, kind: str) -> None:
    try:
        float(arg)
    except ValueError:
        raise IIFError(f"adjuster {spec!r}: {arg!r} is not a number; write e.g. {kind}:1.0.") from None


def _check_iif(arg: str, spec: str) -> None:
    iif_power(arg, spec)


def _build_iif(arg: str, spec: str, counts: torch.Tensor, model) -> Adjuster:
    from ..adjusters import PostHocIIF
    from ..weights import iif_weights

    variant, gamma = iif_power(arg, spec)
    if gamma == 1.0:
        module = PostHocIIF.from_counts(counts, variant=variant)
    else:  # (w ** gamma) * z, the weights raised in float64 as iif.bench.posthoc.iif_adjusted does
        module = PostHocIIF(iif_weights(counts, variant, dtype=torch.float64).pow(gamma))
    return lambda features, logits: module.to(logits.device)(logits)


def _build_la(arg: str, spec: str, counts: torch.Tensor, model) -> Adjuster:
    from ..adjusters import LogitAdjustment

    module = LogitAdjustment(counts, tau=float(arg))
    return lambda features, logits: module.to(logits.device)(logits)


def _build_taunorm(arg: str, spec: str, counts: torch.Tensor, model) -> Adjuster:
    # tau-norm rescales the classifier rows, so it needs the model's head and the features.
    tau_head = tau_norm_head(getattr(model, "classifier", None), float(arg), spec)
    return lambda features, logits: tau_head.to(features.device)(features.to(tau_head.weight.dtype))


#: ``iif:<variant>[^<gamma>]``: post-process IIF, ``w * z`` (Eq. 13-14).
IIF_KIND = PosthocKind("smooth", lambda arg, spec, kind: _check_iif(arg, spec), _build_iif)
#: ``la:<tau>``: post-hoc logit adjustment, ``z - tau ln p``.
LA_KIND = PosthocKind("1.0", _check_number, _build_la)
#: ``taunorm:<tau>``: classifier rows ``w_i / ||w_i||^tau``, bias dropped.
TAUNORM_KIND = PosthocKind("1.0", _check_number, _build_taunorm)
#: ``none``: the logits as they are (its argument, if any, is ignored).
NONE_KIND = PosthocKind("", lambda arg, spec, kind: None, lambda arg, spec, counts, model: lambda features, logits: logits)


def _posthoc_method(kind: str, spec: str):
    """The post-hoc :class:`~iif.methods.Method` that ``kind`` names, or the one-line unknown-adjuster error."""
    try:
        return get_method(kind, "posthoc")
    except IIFError:
        raise IIFError(f"unknown adjuster {spec!r}; use iif:<variant> (e.g. iif:smooth, or iif:normit^0.25 for "
                       "the weights to a power), la:<tau> or logit_adjustment:<tau> (e.g. la:1.0), taunorm:<tau> "
                       f"(e.g. taunorm:1.0), none, or a registered method NAME[:value].{_suggest(kind)}") from None


def parse_adjuster(spec: str) -> tuple[str, str]:
    """Split ``"iif:smooth"`` / ``"iif:normit^0.25"`` / ``"la:1.0"`` / ``"taunorm:1.0"`` into (kind, argument).

    The one parser of adjuster specs (``iif eval --adjust``, ``iif predict --adjust``, ``posthoc.adjusters``,
    the bench's ``reproduce`` commands). An IIF argument is ``variant`` or ``variant^gamma`` with a finite
    ``gamma > 0`` (:func:`iif_power`). The kind is a post-hoc method of :mod:`iif.methods`; a method with a
    special implementation (:class:`PosthocKind`) returns its own spelling (``la``, ``none``), any other its
    canonical name with an argument of :func:`iif.methods.parse_params` (``NAME``, ``NAME:0.5``,
    ``NAME:a=0.5,b=2``), checked here."""
    kind, _, arg = str(spec).partition(":")
    method = _posthoc_method(kind.strip().lower(), spec)
    impl = method.implementation("posthoc")
    if impl is None:  # the generic adjuster of the method's infer transform
        parse_params(method, arg, spec)
        return method.name, arg.strip()
    special: PosthocKind = resolve(impl)
    key = method.spelling("posthoc")
    arg = arg.strip() or special.default
    special.check(arg, spec, key)
    return key, arg


def _suggest(kind: str) -> str:
    """`` Did you mean 'x'?`` for a misspelt adjuster kind, from the kinds and the post-hoc method names."""
    import difflib

    names = [*ADJUSTER_KINDS, *(s for m in all_methods() if "posthoc" in m.tasks for s in m.accepts("posthoc"))]
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
    """An adjuster function ``(features, logits) -> logits`` for ``spec`` (see module docstring): the method's
    special implementation (:class:`PosthocKind`) or, without one, the
    :class:`~iif.logit_transforms.TransformAdjuster` of its ``infer`` transform."""
    kind, arg = parse_adjuster(spec)
    counts = torch.as_tensor(train_counts, dtype=torch.float64)
    method = get_method(kind, "posthoc")
    impl = method.implementation("posthoc")
    if impl is not None:
        return resolve(impl).build(arg, spec, counts, model)
    from ..logit_transforms import TransformAdjuster

    module = TransformAdjuster(method, counts, parse_params(method, arg, spec), phase="infer")
    return lambda features, logits: module.to(logits.device)(logits)


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
