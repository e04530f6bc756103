"""Classifier heads: ``head(features (N, D)) -> logits (N, C)``.

Every head exposes ``weight`` (C, D), ``in_features``, ``num_classes`` and ``reset_parameters()``, so
the decoupled strategies (cRT, LWS, tau-norm; Kang et al. 2020, paper Table IV) can re-initialise or
retrain a head on cached features. A functional core (``cosine_logits``, ``normed_logits``) sits under
thin ``nn.Module``s.

Names for :func:`build_head`: ``linear``, ``cosine``, ``normed_linear``, ``tau_norm``, ``lws``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..adjusters import LearnableWeightScaling, tau_normalize
from ..errors import IIFError

__all__ = [
    "HEADS",
    "cosine_logits",
    "normed_logits",
    "LinearHead",
    "CosineHead",
    "NormedLinearHead",
    "TauNormHead",
    "LWSHead",
    "LWSClassifier",
    "build_head",
]


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """OLTR cosine classifier (docs/method.md#models): ``s * x_hat @ W_hat^T``.

    ``x_hat = (||x|| / (1 + ||x||)) * x / ||x||`` squashes the feature norm into [0, 1) and ``W_hat`` has
    unit rows. ``x_hat`` equals ``x / (1 + ||x||)``, which we compute directly because it is exact and
    stays finite for a zero feature vector.
    """
    x_hat = features / (1.0 + features.norm(dim=1, keepdim=True))
    return F.linear(x_hat, F.normalize(weight, dim=1)) * scale


def normed_logits(features: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Scaled cosine similarity (LDAM's ``NormedLinear``): ``s * (x / ||x||) @ (W / ||W_rows||)^T``."""
    return F.linear(F.normalize(features, dim=1), F.normalize(weight, dim=1)) * scale


def _uniform_rows_(weight: torch.Tensor) -> None:
    """U(-1/sqrt(D), 1/sqrt(D)) initialisation, as OLTR initialises its cosine classifier."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class LinearHead(nn.Linear):
    """Plain dot-product classifier ``x W^T + b`` (``nn.Linear`` with the head interface)."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True) -> None:
        super().__init__(in_features, num_classes, bias=bias)

    @property
    def num_classes(self) -> int:
        return self.out_features


class CosineHead(nn.Module):
    """OLTR-style cosine classifier (docs/method.md#models; paper Sec. V-B uses s = 16 for CIFAR/ImageNet-LT).

    Fixed scale: ``logits = scale * x_hat W_hat^T`` with ``scale`` default 16.
    Learnable scale (``learnable_scale=True``, used for Places-LT): a parameter ``s`` initialised to
    ``scale`` (default 5) and the effective scale is ``s**2``, which keeps it positive.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float | None = None,
        learnable_scale: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.learnable_scale = bool(learnable_scale)
        default = 5.0 if self.learnable_scale else 16.0
        self.init_scale = float(default if scale is None else scale)
        if not math.isfinite(self.init_scale) or self.init_scale <= 0:
            raise IIFError(f"cosine head scale must be a positive number, got {scale!r}; pass e.g. scale=16.")
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        if self.learnable_scale:
            self.s = nn.Parameter(torch.tensor(self.init_scale))
        self.reset_parameters()

    @property
    def scale(self) -> torch.Tensor | float:
        """The multiplier applied to the cosine: ``s**2`` when learnable, the fixed ``scale`` otherwise."""
        return self.s * self.s if self.learnable_scale else self.init_scale

    def reset_parameters(self) -> None:
        _uniform_rows_(self.weight)
        if self.learnable_scale:
            with torch.no_grad():
                self.s.fill_(self.init_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return cosine_logits(features, self.weight, self.scale)

    def extra_repr(self) -> str:
        kind = f"s={self.init_scale} (learnable, effective s^2)" if self.learnable_scale else f"scale={self.init_scale}"
        return f"in_features={self.in_features}, num_classes={self.num_classes}, {kind}"


class NormedLinearHead(nn.Module):
    """Cosine similarity times a fixed ``scale`` (LDAM's ``NormedLinear``, Cao et al. 2019).

    Default ``scale=30`` is the ``s`` of the LDAM paper, so the head works with plain cross-entropy.
    If a loss applies its own scale to the logits (as the original LDAM code does), build this head with
    ``scale=1`` so the scale is not applied twice.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        if not math.isfinite(float(scale)) or scale <= 0:
            raise IIFError(f"normed_linear head scale must be a positive number, got {scale!r}; pass e.g. scale=30.")
        self.in_features = in_features
        self.num_classes = num_classes
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_rows_(self.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return normed_logits(features, self.weight, self.scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}"


class TauNormHead(nn.Module):
    """Linear head whose rows are tau-normalised at inference (Kang et al. 2020, paper Table IV).

    In training mode it is a plain linear classifier (with its bias, if it has one); in eval mode it uses
    ``iif.adjusters.tau_normalize(weight, tau)``, i.e. ``w_i / ||w_i||^tau``, and drops the bias, as Kang et
    al.'s ``tau_norm.py`` and :func:`iif.train.strategies.tau_norm_head` do (docs/method.md#decoupled-training).
    ``tau`` is a plain attribute, so it can be swept on a validation set without retraining. No bias by
    default: tau-norm rebalances through the weight norms only.
    """

    def __init__(self, in_features: int, num_classes: int, tau: float = 1.0, bias: bool = False) -> None:
        super().__init__()
        if not math.isfinite(float(tau)) or tau < 0:
            raise IIFError(f"tau_norm head needs a finite tau >= 0, got {tau!r}; typical values lie in [0, 2].")
        self.in_features = in_features
        self.num_classes = num_classes
        self.tau = float(tau)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.bias = nn.Parameter(torch.empty(num_classes)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Linear, so a tau_norm head trains exactly like a linear one.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The weight the forward pass uses now: raw in training mode, tau-normalised in eval mode."""
        return self.weight if self.training else tau_normalize(self.weight, self.tau)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.effective_weight(), self.bias if self.training else None)

    @classmethod
    def from_linear(cls, linear: nn.Module, tau: float = 1.0) -> "TauNormHead":
        """A tau-norm head holding a copy of a trained linear head's weight (and bias, if it has one: used in
        training mode, dropped in eval mode)."""
        weight = linear.weight.detach()
        bias = getattr(linear, "bias", None)
        head = cls(weight.shape[1], weight.shape[0], tau=tau, bias=bias is not None)
        head = head.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            head.weight.copy_(weight)
            if bias is not None:
                head.bias.copy_(bias.detach())
        return head

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, tau={self.tau}, bias={self.bias is not None}"


class LWSClassifier(nn.Module):
    """A classifier followed by one learned scale per class, ``alpha_c * z_c`` (LWS, Kang et al. 2020, paper
    Table IV): the one LWS classifier of the package (``iif.adjusters.LearnableWeightScaling`` on a head's
    logits).

    Wraps any head (linear, cosine...) because it scales the head's logits; ``weight`` is the head's, so
    weight-norm plots and tau-norm still see the classifier rows. The scales start at 1, on the head's device
    and dtype. With ``freeze`` (the decoupled recipe, :mod:`iif.train.decoupled`) only the scales learn.
    The head is the sub-module ``head`` (state-dict keys ``head.*``, ``lws.scale``); :class:`LWSHead` names
    its linear head ``linear``.
    """

    #: the attribute (and state-dict prefix) of the wrapped head
    inner = "head"

    def __init__(self, head: nn.Module, *, freeze: bool = True) -> None:
        super().__init__()
        weight = getattr(head, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise IIFError(f"LWS needs a classifier with a (classes, features) weight; {type(head).__name__} has none.")
        setattr(self, self.inner, head.requires_grad_(False) if freeze else head)
        self.lws = LearnableWeightScaling(int(weight.shape[0])).to(device=weight.device, dtype=weight.dtype)

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self, self.inner).weight

    def reset_parameters(self) -> None:
        """The scales back to 1 (the wrapped head keeps its weights)."""
        with torch.no_grad():
            self.lws.scale.fill_(1.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.lws(getattr(self, self.inner)(features))


class LWSHead(LWSClassifier):
    """Linear head followed by learnable weight scaling ``alpha_c * z_c`` (LWS, Kang et al. 2020): the head
    ``lws`` of :func:`build_head`, an :class:`LWSClassifier` around its own ``nn.Linear`` (named ``linear``).

    For the decoupled recipe use :meth:`from_linear`, which copies a trained linear head and freezes it so
    only ``alpha`` learns.
    """

    inner = "linear"

    def __init__(self, in_features: int, num_classes: int, bias: bool = True) -> None:
        super().__init__(nn.Linear(in_features, num_classes, bias=bias), freeze=False)
        self.in_features = in_features
        self.num_classes = num_classes

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        super().reset_parameters()

    @classmethod
    def from_linear(cls, linear: nn.Module, freeze_linear: bool = True) -> "LWSHead":
        """An LWS head around a copy of ``linear``; with ``freeze_linear`` only the scales are trainable."""
        weight = linear.weight.detach()
        bias = getattr(linear, "bias", None)
        head = cls(weight.shape[1], weight.shape[0], bias=bias is not None)
        head = head.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            head.linear.weight.copy_(weight)
            if bias is not None:
                head.linear.bias.copy_(bias.detach())
        head.linear.requires_grad_(not freeze_linear)
        return head


HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "cosine": CosineHead,
    "normed_linear": NormedLinearHead,
    "tau_norm": TauNormHead,
    "lws": LWSHead,
}


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise IIFError(f"{what} must be a positive integer, got {value!r}.")
    return value


def head_options(name: str) -> tuple[str, ...]:
    """The keyword options head ``name`` accepts besides ``in_features`` and ``num_classes``."""
    cls = _head_class(name)
    params = list(inspect.signature(cls.__init__).parameters)
    return tuple(p for p in params if p not in ("self", "in_features", "num_classes"))


def _head_class(name: str) -> type[nn.Module]:
    try:
        return HEADS[str(name).lower()]
    except KeyError:
        raise IIFError(f"Unknown head {name!r}; choose one of {sorted(HEADS)}.") from None


def build_head(name: str, in_features: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build classifier head ``name`` mapping ``in_features``-d features to ``num_classes`` logits.

    ``kwargs`` are the head's options (``cosine``: ``scale``, ``learnable_scale``; ``normed_linear``:
    ``scale``; ``tau_norm``: ``tau``, ``bias``; ``linear``/``lws``: ``bias``).
    """
    cls = _head_class(name)
    _check_positive_int(in_features, "in_features")
    _check_positive_int(num_classes, "num_classes")
    allowed = head_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise IIFError(f"Head {name!r} does not accept option(s) {unknown}; it accepts {list(allowed)}.")
    return cls(in_features, num_classes, **kwargs)
