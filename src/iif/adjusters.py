"""Logit adjusters: the margin methods of the paper's Table IV, one small ``nn.Module`` each.

Every adjuster maps logits ``z`` of shape ``(..., C)`` to adjusted logits of the same shape:

| adjuster | adjustment | paper |
|---|---|---|
| :class:`PostHocIIF` | ``z' = w * z`` | Eq. 13 (post-process IIF, Table IV "IIF") |
| :class:`LogitAdjustment` | ``z' = z - tau * ln p`` | Table IV "Log. Adj. PostHoc" (Menon et al.) |
| :class:`LogitAdjustment` ``form="bayes"`` | ``z'_c = z_c - tau ln p_c - ln sum_j p_j^(1-tau)``, background 0 | detection (C + 1 softmax) |
| :class:`NorCal` | ``z'_c = z_c - gamma ln n_c``, background 0 | NorCal (Pan et al., NeurIPS 2021) |
| :class:`BalancedSoftmaxOffset` | ``z' = z + ln n`` | Table IV "Balanced Softmax" |
| :class:`LearnableWeightScaling` | ``z' = alpha * z`` | Table IV "LWS" (Kang et al.) |
| :func:`tau_normalize` | rows ``W_i / ||W_i||^tau`` | tau-norm (Kang et al.), acts on the classifier weight |

Detection classifiers predict ``C + 1`` logits, one of them the background. Built with
``background="first"`` (torchvision: index 0) or ``"last"`` (mmdetection: index ``C``) an adjuster
accepts ``(..., C + 1)`` logits and leaves the background logit unchanged (paper section IV-A.3).

Each module has a functional twin (:func:`posthoc_iif`, :func:`logit_adjustment`,
:func:`balanced_softmax_offset`) so that a one-off adjustment needs no module.

Precision: adjustments are computed in float32 (float64 for float64 logits) and returned in the logits'
dtype, so bfloat16 / float16 logits are multiplied or shifted once in float32 and rounded once; a
bfloat16 product would round the weights to 8 bits first. :func:`weighted_logits` (``w * z`` in that
compute dtype) is the one multiply behind post-hoc IIF, :class:`iif.IIFLoss` (Eq. 15 is
``CE(weighted_logits(z, w), y)``) and detection's end-to-end IIF.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .errors import IIFError
from .weights import CountsLike, as_counts, as_weight_vector, iif_weights, refuse_zero_counts

__all__ = [
    "PostHocIIF",
    "LogitAdjustment",
    "NorCal",
    "norcal_gamma",
    "LA_FORMS",
    "bayes_la_offsets",
    "BalancedSoftmaxOffset",
    "LearnableWeightScaling",
    "tau_normalize",
    "posthoc_iif",
    "logit_adjustment",
    "balanced_softmax_offset",
    "detection_scores",
    "weighted_logits",
    "expand_class_vector",
    "check_background",
    "log_counts",
    "log_prior",
]

_BACKGROUNDS = (None, "first", "last")


def check_background(background: Optional[str]) -> Optional[str]:
    """Validate a ``background`` argument (``None``, ``"first"`` or ``"last"``) and return it."""
    if background not in _BACKGROUNDS:
        raise IIFError(
            f"background must be None (no background class), 'first' (torchvision, index 0) or "
            f"'last' (mmdetection, index C); got {background!r}."
        )
    return background


def expand_class_vector(
    vec: torch.Tensor,
    num_logits: int,
    background: Optional[str],
    fill: float,
    what: str = "weights",
) -> torch.Tensor:
    """Return ``vec`` laid out over ``num_logits`` logit columns, or raise if the sizes disagree.

    Without a background, ``vec`` must have exactly ``num_logits`` entries. With ``background="first"``
    or ``"last"``, ``vec`` holds the ``C`` foreground entries and ``fill`` (the identity of the
    adjustment: 1 for a multiplicative weight, 0 for an additive offset) is inserted at the background
    position, so ``num_logits`` must be ``C + 1``; a ``vec`` that already has ``num_logits`` entries is
    taken to include the background entry (e.g. ``iif_weights(..., background="first")``).
    """
    c = int(vec.shape[-1])
    if background is None:
        if num_logits != c:
            raise IIFError(
                f"logits have {num_logits} classes in their last dimension but the {what} have {c}; "
                f"expected logits of shape (..., {c}). For detection logits with a background column "
                "pass background='first' or 'last'."
            )
        return vec
    if num_logits == c + 1:
        pad = vec.new_full((1,), fill)
        return torch.cat([pad, vec]) if background == "first" else torch.cat([vec, pad])
    if num_logits == c:
        return vec
    raise IIFError(
        f"logits have {num_logits} classes in their last dimension but the {what} cover {c} classes "
        f"with background={background!r}; expected {c + 1} ({c} foreground classes + 1 background "
        f"logit {background}), or {c} if the {what} already include the background entry."
    )


def _as_logits(logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise IIFError(f"logits must be a torch.Tensor of shape (..., C); got {type(logits).__name__}.")
    if logits.dim() == 0:
        raise IIFError("logits must have at least one dimension (the classes, last); got a scalar.")
    if not logits.is_floating_point():
        raise IIFError(f"logits must be floating point; got dtype {logits.dtype}. Cast with .float().")
    return logits


def _vector(values, what: str) -> torch.Tensor:
    """A 1-D tensor of finite per-class values (weights): float64 stays float64, the rest is float32."""
    return as_weight_vector(values, what)


def log_counts(counts: CountsLike, what: str = "counts") -> np.ndarray:
    """``ln n`` of validated counts; zero counts would give ``-inf`` offsets, so they are refused."""
    n = as_counts(counts, what)
    refuse_zero_counts(n, f"{what}: ln(n) is -inf, which would make those logits infinite,")
    return np.log(n)


def compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """The dtype adjustments and the IIF loss compute in: float64 for float64 logits, else float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def weighted_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``w * z`` (Eq. 13) in :func:`compute_dtype` (float32 for bfloat16 / float16 / float32 logits), in that dtype.

    ``weights`` must already be laid out over the last dimension (see :func:`expand_class_vector`).
    """
    cd = compute_dtype(logits)
    return logits.to(cd) * weights.to(device=logits.device, dtype=cd)


def log_prior(counts: CountsLike) -> np.ndarray:
    """``ln p_c`` with ``p_c = n_c / sum n`` (the training label prior of logit adjustment)."""
    logn = log_counts(counts)
    return logn - math.log(float(np.exp(logn).sum()))


#: The forms of logit adjustment's offset (see :func:`bayes_la_offsets`).
LA_FORMS: tuple[str, ...] = ("bayes", "prior")


def _check_la_form(form: str) -> str:
    if form not in LA_FORMS:
        raise IIFError(f"form (logit adjustment's offset) must be 'bayes' (-tau ln p_c - ln sum_j p_j^(1-tau): the "
                       f"Bayes correction of a C + 1 softmax detector, background 0) or 'prior' (-tau ln p_c); "
                       f"got {form!r}.")
    return form


def bayes_la_offsets(counts: CountsLike, tau: float = 1.0) -> np.ndarray:
    """Foreground offsets of the Bayes logit adjustment of a ``C + 1`` softmax detector (float64, length ``C``).

    A detector trained with a background share ``pi`` and foreground prior ``p_c = n_c / sum n`` has
    posterior ``P(c | x) ∝ (1 - pi) p_c f_c(x)``. Re-weighting to the foreground prior
    ``q_c = p_c^(1 - tau) / sum_j p_j^(1 - tau)`` (uniform ``1 / C`` at ``tau = 1``) at the *same* background
    share multiplies class ``c``'s posterior by ``q_c / p_c`` and the background's by 1, i.e. adds

        ``ln(q_c / p_c) = -tau ln p_c - ln sum_j p_j^(1 - tau)``   (``= -ln(C p_c)`` at ``tau = 1``)

    to foreground logit ``c`` and 0 to the background logit. The plain ``-tau ln p_c`` (``form="prior"``)
    is this plus ``ln sum_j p_j^(1 - tau)`` on every foreground logit (``ln C`` at ``tau = 1``), which a
    classification softmax ignores but a detector does not: it lifts every class against the background.
    """
    tau = float(tau)
    if not math.isfinite(tau):
        raise IIFError(f"tau must be a finite number (1.0 is the Bayes-optimal choice); got {tau!r}.")
    lp = log_prior(counts)
    a = (1.0 - tau) * lp
    log_norm = float(a.max() + np.log(np.exp(a - a.max()).sum()))
    return -tau * lp - log_norm


# ----------------------------------------------------------------------------------------------------
# Functional forms
# ----------------------------------------------------------------------------------------------------


def posthoc_iif(logits: torch.Tensor, weights, background: Optional[str] = None) -> torch.Tensor:
    """Post-process IIF, paper Eq. 13: ``z'_c = w_c * z_c`` (background logit times 1)."""
    z = _as_logits(logits)
    if isinstance(weights, torch.Tensor) and weights.dim() == 1:
        w = weights  # trusted fast path: no host round trip for a device tensor
    else:
        w = _vector(weights, "IIF weights")
    w = expand_class_vector(w, z.shape[-1], check_background(background), 1.0, "IIF weights")
    return weighted_logits(z, w).to(z.dtype)


def logit_adjustment(
    logits: torch.Tensor, counts: CountsLike, tau: float = 1.0, background: Optional[str] = None,
    form: str = "prior",
) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al., Table IV): ``z'_c = z_c - tau * ln p_c``, ``p = n / sum n``.

    ``form="bayes"`` uses :func:`bayes_la_offsets` (the correct offsets next to a background logit; without
    a background both forms give the same softmax, they differ by a constant).
    """
    z = _as_logits(logits)
    off = bayes_la_offsets(counts, tau) if _check_la_form(form) == "bayes" else -float(tau) * log_prior(counts)
    offset = torch.as_tensor(off, dtype=torch.float64)
    offset = expand_class_vector(offset, z.shape[-1], check_background(background), 0.0, "counts")
    return _shifted(z, offset)


def balanced_softmax_offset(logits: torch.Tensor, counts: CountsLike, background: Optional[str] = None) -> torch.Tensor:
    """Balanced Softmax's training-time offset (Ren et al., Table IV): ``z'_c = z_c + ln n_c``."""
    z = _as_logits(logits)
    offset = torch.as_tensor(log_counts(counts), dtype=torch.float64)
    offset = expand_class_vector(offset, z.shape[-1], check_background(background), 0.0, "counts")
    return _shifted(z, offset)


def _shifted(z: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``z + offset`` computed in :func:`compute_dtype`, returned in ``z``'s dtype."""
    cd = compute_dtype(z)
    return (z.to(cd) + offset.to(device=z.device, dtype=cd)).to(z.dtype)


def detection_scores(logits: torch.Tensor, weights, background: str = "first") -> torch.Tensor:
    """Detection class scores with IIF (paper section IV-A.3): ``softmax(w * z)`` over ``C + 1`` logits, background dropped.

    Args:
        logits: ``(..., C + 1)`` RoI classifier logits including the background logit.
        weights: the ``C`` foreground IIF weights (or ``C + 1`` including the background weight).
        background: where the background logit sits: ``"first"`` (torchvision) or ``"last"`` (mmdetection).

    Returns:
        ``(..., C)`` foreground probabilities (they sum to 1 minus the background probability), in the
        logits' dtype (computed in float32 for low-precision logits).
    """
    if background not in ("first", "last"):
        raise IIFError(f"detection_scores needs background='first' or 'last'; got {background!r}.")
    z = _as_logits(logits)
    w = weights if isinstance(weights, torch.Tensor) and weights.dim() == 1 else _vector(weights, "IIF weights")
    w = expand_class_vector(w, z.shape[-1], background, 1.0, "IIF weights")
    probs = torch.softmax(weighted_logits(z, w), dim=-1).to(z.dtype)
    return probs[..., 1:] if background == "first" else probs[..., :-1]


def tau_normalize(weight: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """tau-normalised classifier weights (Kang et al. 2020): row ``w_i / ||w_i||^tau``.

    ``weight`` is ``(C, D)`` (or ``(C, ...)``, each class's slice taken as one row); ``tau = 0`` returns the
    weight unchanged, ``tau = 1`` gives unit-norm rows.
    """
    norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return weight / norms.pow(tau).view(-1, *([1] * (weight.dim() - 1)))


# ----------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------


class _VectorAdjuster(nn.Module):
    """Shared machinery: one per-class vector (a buffer) combined with the logits."""

    _fill = 0.0
    _what = "values"

    def __init__(self, vec: torch.Tensor, background: Optional[str]) -> None:
        super().__init__()
        self.background = check_background(background)
        self.register_buffer("vec", vec)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes ``C``."""
        return int(self.vec.shape[0])

    def full_vector(self, num_logits: int) -> torch.Tensor:
        """The per-class vector laid out over ``num_logits`` columns (background entry inserted)."""
        return expand_class_vector(self.vec, num_logits, self.background, self._fill, self._what)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, background={self.background!r}"


class PostHocIIF(_VectorAdjuster):
    """Post-process IIF (paper Eq. 13, section IV-A.4): ``z' = w * z`` at inference.

    Train with plain cross-entropy, then take ``argmax(PostHocIIF(w)(z))``; no retraining is needed.

    Args:
        weights: the ``C`` IIF weights (e.g. ``iif.iif_weights(counts, "smooth")``).
        background: ``None``, ``"first"`` or ``"last"``: with a background the module takes ``C + 1``
            logits and multiplies the background logit by 1.
    """

    _fill = 1.0
    _what = "IIF weights"

    def __init__(self, weights, background: Optional[str] = None) -> None:
        super().__init__(_vector(weights, "IIF weights"), background)

    @property
    def weights(self) -> torch.Tensor:
        return self.vec

    @classmethod
    def from_counts(
        cls,
        counts: CountsLike,
        variant: str = "smooth",
        total: float | None = None,
        background: Optional[str] = None,
        **iif_kwargs,
    ) -> "PostHocIIF":
        """Build from per-class image counts with :func:`iif.iif_weights` (``norm``, ``allow_negative`` pass through)."""
        return cls(iif_weights(counts, variant, total=total, **iif_kwargs), background=background)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        z = _as_logits(logits)
        return weighted_logits(z, self.full_vector(z.shape[-1])).to(z.dtype)


class _AdditiveAdjuster(_VectorAdjuster):
    """An adjuster that adds a per-class offset to the foreground logits."""

    @property
    def offset(self) -> torch.Tensor:
        """The additive per-class offset (foreground classes)."""
        return self.vec

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        z = _as_logits(logits)
        return _shifted(z, self.full_vector(z.shape[-1]))


class LogitAdjustment(_AdditiveAdjuster):
    """Post-hoc logit adjustment (Menon et al. 2021, Table IV): ``z' = z - tau * ln p``, ``p_c = n_c / sum n``.

    ``form="prior"`` (default here) is that offset; ``form="bayes"`` adds ``-ln sum_j p_j^(1 - tau)`` to
    it (:func:`bayes_la_offsets`), the correct offset of a ``C + 1`` softmax detector whose background
    logit keeps offset 0 (``iif.detection.use_margin`` uses it by default). Without a background logit
    the two forms differ by a constant and give the same softmax.
    """

    _what = "counts"

    def __init__(self, counts: CountsLike, tau: float = 1.0, background: Optional[str] = None,
                 form: str = "prior") -> None:
        tau = float(tau)
        if not math.isfinite(tau):
            raise IIFError(f"tau must be a finite number (1.0 is the Bayes-optimal choice); got {tau!r}.")
        off = bayes_la_offsets(counts, tau) if _check_la_form(form) == "bayes" else -tau * log_prior(counts)
        super().__init__(torch.as_tensor(off, dtype=torch.float32), background)
        self.tau = tau
        self.form = form

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}, form={self.form!r}"


def norcal_gamma(gamma: Any) -> float:
    """``gamma`` as NorCal's exponent on the class counts: a finite number >= 0, else an :class:`IIFError`."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        g = float("nan")
    if isinstance(gamma, bool) or not (math.isfinite(g) and g >= 0):
        raise IIFError(f"gamma (NorCal's exponent on the class counts) must be a finite number >= 0, e.g. 1.0 "
                       f"(0 leaves the scores unchanged); got {gamma!r}.")
    return g


class NorCal(_AdditiveAdjuster):
    """NorCal (Pan et al., NeurIPS 2021), post-hoc: foreground scores divided by ``n_c^gamma``, renormalised.

    On a ``C + 1`` softmax detector NorCal rescales each foreground probability ``s_c`` to
    ``s_c / n_c^gamma``, leaves the background probability ``s_bg`` as it is, and renormalises all
    ``C + 1`` so they sum to 1. That is exactly the softmax of the logits ``z_c - gamma ln n_c`` with the
    background logit unchanged, which this module returns (``softmax`` of its output gives NorCal's
    scores). ``n`` are the training counts (instances in the paper); ``gamma >= 0`` (0: no change) is
    chosen on validation data.
    """

    _what = "counts"

    def __init__(self, counts: CountsLike, gamma: float = 1.0, background: Optional[str] = None) -> None:
        g = norcal_gamma(gamma)
        super().__init__(torch.as_tensor(-g * log_counts(counts), dtype=torch.float32), background)
        self.gamma = g

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


class BalancedSoftmaxOffset(_AdditiveAdjuster):
    """Balanced Softmax offset (Ren et al. 2020, Table IV): ``z' = z + ln n``; used inside the loss only."""

    _what = "counts"

    def __init__(self, counts: CountsLike, background: Optional[str] = None) -> None:
        super().__init__(torch.as_tensor(log_counts(counts), dtype=torch.float32), background)


class LearnableWeightScaling(nn.Module):
    """LWS (Kang et al. 2020, paper Table IV): ``z'_i = alpha_i * z_i`` with learnable ``alpha`` (init 1).

    With ``background="first"|"last"`` it takes ``C + 1`` logits and leaves the background logit as is
    (its scale is fixed to 1, not learned).
    """

    def __init__(self, num_classes: int, background: Optional[str] = None) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 1:
            raise IIFError(f"num_classes must be a positive integer; got {num_classes!r}.")
        self.background = check_background(background)
        self.scale = nn.Parameter(torch.ones(int(num_classes)))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        z = _as_logits(logits)
        return z * expand_class_vector(self.scale, z.shape[-1], self.background, 1.0, "LWS scales")

    def extra_repr(self) -> str:
        return f"num_classes={self.scale.shape[0]}, background={self.background!r}"
