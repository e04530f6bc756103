"""The logit transforms of the method definitions (:mod:`iif.methods`), and the generic adjuster built from them.

A method's ``train`` / ``infer`` transform is ``fn(logits, counts, **params) -> logits`` (see :mod:`iif.methods`).
This module holds the built-in ones, each the functional form of :mod:`iif.adjusters` it names, so a definition's
transform and the method's special implementation compute the same numbers:

| transform | logits | method, phase | paper |
|---|---|---|---|
| :func:`identity` | ``z`` | softmax, both | |
| :func:`iif_scale` | ``w^gamma * z`` | IIF, both | Eq. 13 (inference), Eq. 15 (in the loss) |
| :func:`add_log_counts` | ``z + ln n`` | Balanced Softmax, train | Ren et al. 2020 |
| :func:`add_log_prior` | ``z + tau ln p`` | logit adjustment, train | Menon et al. 2021, Eq. 10 |
| :func:`subtract_log_prior` | ``z - tau ln p`` | logit adjustment, infer | Menon et al. 2021, Eq. 9 |
| :func:`subtract_log_counts` | ``z - gamma ln n`` | NorCal, infer | Pan et al. 2021 |

:func:`resolve` turns a ``"module:function"`` reference into the function; :func:`apply_transform` runs one
transform on the foreground columns of a set of logits (the background column, if any, untouched);
:class:`TransformAdjuster` is the ``nn.Module`` that ``--adjust NAME`` and :func:`iif.detection.use_margin` build
for a method without a special implementation of that task.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from .adjusters import (balanced_softmax_offset, check_background, compute_dtype, log_counts, log_prior,
                        logit_adjustment, posthoc_iif)
from .errors import IIFError
from .methods import PHASES, Method, check_params, get_method
from .weights import CountsLike, as_counts, iif_weights

__all__ = ["identity", "iif_scale", "add_log_counts", "add_log_prior", "subtract_log_prior", "subtract_log_counts",
           "resolve", "method_transform", "apply_transform", "TransformAdjuster"]


# ---------------------------------------------------------------------------------------------- built-in transforms


def identity(logits: torch.Tensor, counts: CountsLike) -> torch.Tensor:
    """Plain softmax: ``z``."""
    return logits


def iif_scale(logits: torch.Tensor, counts: CountsLike, variant: str = "smooth", gamma: float = 1.0) -> torch.Tensor:
    """IIF, paper Eq. 13 / 15: ``w * z`` with the ``variant`` weights of Table III (``w ** gamma * z`` for
    ``gamma != 1``, the weights raised in float64 as ``--adjust iif:<variant>^<gamma>`` does)."""
    if float(gamma) == 1.0:
        w = iif_weights(counts, variant)
    else:
        w = iif_weights(counts, variant, dtype=torch.float64).pow(float(gamma))
    return posthoc_iif(logits, w)


def add_log_counts(logits: torch.Tensor, counts: CountsLike) -> torch.Tensor:
    """Balanced Softmax's training logits (Ren et al. 2020): ``z + ln n``."""
    return balanced_softmax_offset(logits, counts)


def add_log_prior(logits: torch.Tensor, counts: CountsLike, tau: float = 1.0) -> torch.Tensor:
    """The logit-adjusted loss's logits (Menon et al. 2021, Eq. 10): ``z + tau ln p``, ``p = n / sum n``."""
    cd = compute_dtype(logits)
    offset = torch.as_tensor(float(tau) * log_prior(counts), dtype=torch.float32)  # LogitAdjustedLoss's buffer
    return (logits.to(cd) + offset.to(device=logits.device, dtype=cd)).to(logits.dtype)


def subtract_log_prior(logits: torch.Tensor, counts: CountsLike, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc logit adjustment (Menon et al. 2021, Eq. 9): ``z - tau ln p`` (:func:`iif.adjusters.logit_adjustment`)."""
    return logit_adjustment(logits, counts, tau=tau)


def subtract_log_counts(logits: torch.Tensor, counts: CountsLike, gamma: float = 1.0) -> torch.Tensor:
    """NorCal (Pan et al. 2021) as logits: ``z - gamma ln n`` (next to an untouched background logit, the
    softmax of these divides each foreground score by ``n^gamma`` and renormalises)."""
    cd = compute_dtype(logits)
    offset = torch.as_tensor(-float(gamma) * log_counts(counts), dtype=torch.float32)  # NorCal's buffer
    return (logits.to(cd) + offset.to(device=logits.device, dtype=cd)).to(logits.dtype)


# ---------------------------------------------------------------------------------------------- dispatch


def resolve(ref: Union[str, Callable[..., Any], None]) -> Optional[Callable[..., Any]]:
    """The function (or object) a definition names: a callable as is, ``"module:attribute"`` imported on use."""
    if ref is None or callable(ref):
        return ref
    module, _, attr = str(ref).partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise IIFError(f"method reference {ref!r} does not resolve ({exc}); write 'package.module:function'.") from None


def method_transform(method: Union[str, Method], phase: str) -> Optional[Callable[..., torch.Tensor]]:
    """The ``"train"`` or ``"infer"`` transform of ``method`` (a name or a :class:`~iif.methods.Method`), or None."""
    m = method if isinstance(method, Method) else get_method(method)
    return resolve(m.transform(phase))


def apply_transform(fn: Callable[..., torch.Tensor], logits: torch.Tensor, counts: torch.Tensor,
                    params: Mapping[str, Any], background: Optional[str] = None, method: str = "method") -> torch.Tensor:
    """``fn(z, counts, **params)`` on the ``C`` foreground columns of ``logits`` (all columns without a
    ``background``; ``"first"``/``"last"``: that column untouched), computed in float32 (float64 for float64
    logits) and returned in the logits' dtype. ``counts`` is a float64 tensor of ``C`` entries."""
    if not isinstance(logits, torch.Tensor) or logits.dim() == 0 or not logits.is_floating_point():
        raise IIFError(f"method {method!r}: logits must be a floating-point tensor of shape (..., C).")
    fg = logits if background is None else (logits[..., 1:] if background == "first" else logits[..., :-1])
    c = int(counts.shape[0])
    if fg.shape[-1] != c:
        extra = " foreground" if background is not None else ""
        raise IIFError(f"method {method!r}: the logits have {fg.shape[-1]}{extra} class columns but the counts cover "
                       f"{c} classes; pass the counts of the model's classes.")
    out = fn(fg.to(compute_dtype(logits)), counts.to(device=logits.device), **params)
    if not isinstance(out, torch.Tensor) or out.shape != fg.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise IIFError(f"method {method!r}: its transform returned {got}, not logits of shape {tuple(fg.shape)}; "
                       "return fn(logits, counts, **params) with the logits' shape.")
    out = out.to(logits.dtype)
    if background is None:
        return out
    bg = logits[..., :1] if background == "first" else logits[..., -1:]
    return torch.cat([bg, out] if background == "first" else [out, bg], dim=-1)


class TransformAdjuster(nn.Module):
    """A method's transforms on the class logits, from its definition alone (the generic implementation).

    ``phase="train"`` / ``"infer"`` applies that transform always (the loss; ``--adjust``); ``phase=None``
    follows the module's mode: ``train`` in training mode, ``infer`` in eval mode (the detection margin, whose
    :class:`~iif.detection.MarginBoxPredictor` calls it only in the phases ``when`` picks). A phase without a
    transform leaves the logits as they are.

    Args:
        method: a method name (any spelling) or a :class:`~iif.methods.Method`.
        counts: the ``C`` per-class training counts (a float64 buffer, follows ``.to(device)``).
        params: the method's parameters (checked; the rest take their defaults).
        background: ``None``, ``"first"`` or ``"last"``: where a background column sits (left untouched).
        phase: ``None``, ``"train"`` or ``"infer"``.
    """

    def __init__(self, method: Union[str, Method], counts: CountsLike, params: Optional[Mapping[str, Any]] = None,
                 background: Optional[str] = None, phase: Optional[str] = None) -> None:
        super().__init__()
        m = method if isinstance(method, Method) else get_method(method)
        if phase is not None and phase not in PHASES:
            raise IIFError(f"phase must be None (follow the mode), 'train' or 'infer'; got {phase!r}.")
        self.method = m.name
        self.params = check_params(m, params)
        self.background = check_background(background)
        self.phase = phase
        self.fns = {ph: resolve(m.transform(ph)) for ph in PHASES}
        if phase is not None and self.fns[phase] is None:
            raise IIFError(f"method {m.name!r} has no {phase} transform; define one in its iif.methods entry.")
        self.register_buffer("counts", torch.as_tensor(as_counts(counts), dtype=torch.float64))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        fn = self.fns[self.phase or ("train" if self.training else "infer")]
        if fn is None:
            return logits
        return apply_transform(fn, logits, self.counts, self.params, self.background, self.method)

    def extra_repr(self) -> str:
        cfg = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"method={self.method!r}, num_classes={self.counts.shape[0]}, background={self.background!r}{cfg}"
