"""Input checks and ``F.cross_entropy``-compatible reductions shared by every loss.

All losses follow :func:`torch.nn.functional.cross_entropy`'s conventions for ``weight``, ``reduction``,
``ignore_index`` and ``label_smoothing`` and accept either hard labels ``(N,)`` or soft targets
``(N, C)`` (mixup / CutMix). The helpers here reproduce those conventions exactly so that a loss built
from per-class terms (focal) or per-sample scales (cost-sensitive) reduces like torch would.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..errors import IIFError

__all__ = [
    "REDUCTIONS",
    "check_reduction",
    "check_label_smoothing",
    "class_weight",
    "validate_inputs",
    "is_soft",
    "reduce_per_sample",
    "ce_from_terms",
]

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise IIFError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}.")
    return reduction


def check_label_smoothing(label_smoothing: float) -> float:
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise IIFError(f"label_smoothing must be a number in [0, 1]; got {label_smoothing!r}.") from None
    if not (0.0 <= eps <= 1.0):
        raise IIFError(f"label_smoothing must lie in [0, 1] (0 disables it); got {label_smoothing!r}.")
    return eps


def class_weight(weight) -> Optional[torch.Tensor]:
    """Validate a per-class ``weight`` (as in ``F.cross_entropy``) and return it as a float32 tensor."""
    if weight is None:
        return None
    w = torch.as_tensor(weight).detach().to(torch.float32)
    if w.dim() != 1 or w.numel() == 0:
        raise IIFError(f"weight must be a 1-D tensor with one entry per class; got shape {tuple(w.shape)}.")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise IIFError("weight must hold finite, non-negative per-class values; found NaN, inf or a negative entry.")
    return w


def is_soft(target: torch.Tensor) -> bool:
    """Soft targets are floating-point ``(N, C)`` class probabilities; hard targets are integer ``(N,)``."""
    return target.is_floating_point()


def _finite_message(t: torch.Tensor, what: str) -> str:
    nan = int(torch.isnan(t).sum())
    inf = int(torch.isinf(t).sum())
    first = torch.nonzero(~torch.isfinite(t))[0].tolist()
    return (
        f"{what} contain {nan} NaN and {inf} inf values (first at index {tuple(first)}) that reach the loss; "
        "the model has diverged or its input is broken: lower the learning rate, add gradient clipping, "
        "check the data and the mixed-precision setup. (check_finite=False skips this check.)"
    )


def validate_inputs(
    logits: torch.Tensor,
    target: torch.Tensor,
    num_classes: Optional[int],
    ignore_index: int,
    check_labels: bool,
    want_ignored: bool = False,
) -> tuple[bool, Optional[bool]]:
    """Check shapes always, and that hard labels lie in range when asked (one host sync on GPU).

    Finite logits are checked after the loss by :func:`check_loss_finite`, where it is nearly free.

    Args:
        num_classes: expected size of the class dimension, or None when the caller checks it.
        want_ignored: also report whether any hard label equals ``ignore_index`` (it comes for free
            with ``check_labels``).

    Returns:
        ``(soft, any_ignored)`` where ``any_ignored`` is None unless it was computed.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise IIFError("logits and target must be torch tensors: logits (N, C), target (N,) labels or (N, C) probabilities.")
    if logits.dim() != 2:
        raise IIFError(f"logits must have shape (N, C); got {tuple(logits.shape)}. Flatten extra dimensions first.")
    if not logits.is_floating_point():
        raise IIFError(f"logits must be floating point; got {logits.dtype}.")
    n, c = logits.shape
    if num_classes is not None and c != num_classes:
        raise IIFError(
            f"logits have {c} classes in their last dimension but this loss was built for {num_classes}; "
            f"expected logits of shape (N, {num_classes})."
        )
    soft = is_soft(target)
    if soft:
        if target.shape != logits.shape:
            raise IIFError(
                f"soft targets must have the logits' shape {tuple(logits.shape)}; got {tuple(target.shape)}."
            )
    else:
        if target.dim() != 1 or target.shape[0] != n:
            raise IIFError(
                f"target must hold one class index per sample, shape ({n},), or probabilities of shape ({n}, {c}); "
                f"got shape {tuple(target.shape)}."
            )
        if target.dtype != torch.long:
            raise IIFError(f"target labels must be class indices of dtype torch.long; got {target.dtype}. Use target.long().")

    check_targets = not soft and (check_labels or want_ignored) and n > 0
    if not check_targets:
        return soft, None
    # The labels' min and max (one small reduction, one transfer) screen the range; the exact,
    # slower check only runs when the screen finds something.
    values = torch.stack(torch.aminmax(target)).tolist()
    k = 0
    any_ignored = None
    if check_targets:
        lo, hi = values[k], values[k + 1]
        if not (lo <= ignore_index <= hi):
            any_ignored = False
        if check_labels and (lo < 0 or hi >= c):
            out_of_range = (target != ignore_index) & ((target < 0) | (target >= c))
            if bool(out_of_range.any()):
                idx = int(torch.nonzero(out_of_range)[0])
                bad = int(target[idx])
                raise IIFError(
                    f"target label {bad} (sample {idx}) is out of range for {c} classes: labels must lie in "
                    f"[0, {c - 1}] or equal ignore_index={ignore_index}. Check the label mapping / num_classes."
                )
        if any_ignored is None:
            any_ignored = bool((target == ignore_index).any())
    return soft, any_ignored


def check_loss_finite(out: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, total: Optional[float] = None) -> torch.Tensor:
    """Raise :class:`IIFError` when NaN/inf logits (or soft targets) reach the loss; return ``out``.

    The screen is the loss itself: a non-finite logit that affects the loss makes it NaN or inf (one
    sum and one transfer, ``total`` when the caller has it already). Only then are the inputs scanned,
    so a ``-inf`` logit used as a mask (a class that contributes exactly 0) is allowed, and a loss
    that overflowed from finite inputs is returned as is.
    """
    if total is None:
        total = (out if out.dim() == 0 else out.sum()).item()
    if math.isfinite(total):
        return out
    if not bool(torch.isfinite(logits).all()):
        raise IIFError(_finite_message(logits, "logits"))
    if target.is_floating_point() and not bool(torch.isfinite(target).all()):
        raise IIFError(_finite_message(target, "soft targets"))
    return out


def reduce_per_sample(
    per_sample: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor],
    reduction: str,
    ignore_index: int,
) -> torch.Tensor:
    """Reduce per-sample losses like ``F.cross_entropy``: the ``mean`` of hard labels divides by the sum of
    ``weight[y]`` over non-ignored samples (their count without a weight); soft targets divide by ``N``."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if is_soft(target):
        return per_sample.sum() / per_sample.shape[0]
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum()
    else:
        safe = target.masked_fill(~valid, 0)
        denom = (weight.to(per_sample.dtype)[safe] * valid).sum()
    return per_sample.sum() / denom


def ce_from_terms(
    terms: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cross-entropy-style loss from per-class terms ``terms[i, c]`` with torch's option semantics.

    With ``terms = -log_softmax(z)`` this equals ``F.cross_entropy(z, target, weight, ...)``; other
    terms (e.g. focal ``-(1 - q)^gamma log q``) reuse the same handling of label smoothing, soft targets,
    ``ignore_index`` and weighted means. ``sample_scale`` multiplies each sample's loss after the
    per-class weighting and before the reduction (it does not change the ``mean`` denominator).
    """
    n, c = terms.shape
    eps = label_smoothing
    wt = weight.to(device=terms.device, dtype=terms.dtype) if weight is not None else None
    if is_soft(target):
        t = target.to(terms.dtype)
        if eps:
            t = t * (1.0 - eps) + eps / c
        if wt is not None:
            t = t * wt
        per = (t * terms).sum(1)
    else:
        valid = target != ignore_index
        safe = target.masked_fill(~valid, 0)
        per = terms.gather(1, safe[:, None]).squeeze(1)
        if wt is not None:
            per = per * wt[safe]
        if eps:
            smooth = (terms * wt).sum(1) if wt is not None else terms.sum(1)
            per = (1.0 - eps) * per + (eps / c) * smooth
        per = per.masked_fill(~valid, 0.0)
    if sample_scale is not None:
        per = per * sample_scale
    return reduce_per_sample(per, target, wt, reduction, ignore_index)


def hard_or_soft_gather(vec: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-sample value of a per-class vector: ``vec[y]`` for labels (0 where ignored), ``target @ vec`` for soft targets."""
    vec = vec.to(target.device)
    if is_soft(target):
        return target.to(vec.dtype) @ vec
    valid = target != ignore_index
    return vec[target.masked_fill(~valid, 0)] * valid


def finite_number(value, name: str, positive: bool = False, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise IIFError(f"{name} must be a number; got {value!r}.") from None
    if not math.isfinite(v) or (positive and v <= 0) or (nonneg and v < 0):
        need = "a positive" if positive else "a non-negative" if nonneg else "a finite"
        raise IIFError(f"{name} must be {need} finite number; got {value!r}.")
    return v
