"""IIF cross-entropy (paper Eq. 15): ``CE(w * z, y)``, with a fused fast path and the online form.

The gradient with respect to the logits is Eq. 16, ``dL/dz_i = w_i (q_i - 1[i = y])`` with
``q = softmax(w * z)`` (divided by the number of samples for the mean). The composed form
``F.cross_entropy(z * w, y)`` costs an extra full pass forward (the product) and two backward (the
product's gradient and the dense one-hot gradient of ``nll_loss``). :class:`_FusedIIFCrossEntropy`
builds ``q = softmax(w * z)`` in place in the product's buffer, keeps it, and turns it into the
gradient in place: one multiply and one scatter. It covers the common case (hard labels, no class
``weight``, no label smoothing, any reduction, ``ignore_index``); everything else takes the composed
path, which the tests check agrees with it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..adjusters import check_background, expand_class_vector, weighted_logits
from ..errors import IIFError
from ..weights import VARIANT_TABLE
from ._common import (
    check_label_smoothing,
    check_loss_finite,
    check_reduction,
    class_weight,
    is_soft,
    validate_inputs,
)
from .base import LossBase

__all__ = ["iif_cross_entropy", "IIFLoss", "online_smooth_weights"]


def _softmax_and_loss(
    z: torch.Tensor, w: torch.Tensor, idx: torch.Tensor, native: bool, ignored: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``q = softmax(w * z)`` built in place in the product's buffer, with the target entries set to 0,
    ``rest = sum_{c != y} q_c`` ``(N, 1)``, the per-sample loss ``-log q_y`` ``(N, 1)`` (0 for the rows
    ``ignored`` marks, an ``(N, 1)`` mask) and, when the route computed it anyway, the loss total (a 0-dim
    tensor, else None).

    The loss is computed as ``log1p(rest / q_y)``, which equals ``-log q_y`` (``q_y + rest = 1``) but
    keeps full relative precision at both ends: ``rest`` is a sum of positive terms (no ``1 - q_y``
    cancellation) when the target wins (a loss of 1e-20 comes out as 1e-20, not 0), and no subnormal
    ``q_y`` is taken a log of when the target loses by a logit gap of ~100 or more. The backward pass
    writes ``q_y - 1 = -rest`` into the zeroed target entries (Eq. 16).

    One ``(N, C)`` buffer only: a second one costs page faults on CPU. ``native=True`` runs torch's fused
    softmax kernel in place (CPU, last dimension: it reads each element before writing it); rows whose
    ``rest / q_y`` overflowed (``q_y`` below ~1e-39: a loss above ~89, float32) are recomputed with a
    log-sum-exp (one host read, free on CPU). ``native=False`` shifts, exponentiates and normalises with
    in-place ops and picks the exact form per row without any host sync (for GPUs).
    """
    q = z * w
    if native:
        torch.softmax(q, 1, out=q)
        qy = q.gather(1, idx)
        q.scatter_(1, idx, 0.0)
        rest = q.sum(dim=1, keepdim=True)
        loss = rest.div(qy).log1p_()
        if ignored is not None:
            loss.masked_fill_(ignored, 0.0)
        total = loss.sum()
        if math.isfinite(total.item()):
            return q, rest, loss, total
        # q_y underflowed (or the inputs are not finite): those rows from a log-sum-exp
        zw = z * w
        lse = torch.logsumexp(zw, 1, keepdim=True) - zw.gather(1, idx)
        loss = torch.where(torch.isfinite(loss), loss, lse)
        return q, rest, (loss if ignored is None else loss.masked_fill_(ignored, 0.0)), None
    q.sub_(q.amax(dim=1, keepdim=True))
    shifted_y = q.gather(1, idx)  # z_y w_y - max <= 0
    q.exp_()
    ey = q.gather(1, idx)
    q.scatter_(1, idx, 0.0)
    rest_e = q.sum(dim=1, keepdim=True)  # sum_{c != y} exp(z_c w_c - max)
    row_sum = rest_e + ey  # >= 1: the maximum's term is 1
    q.div_(row_sum)
    # Target ahead (rest < e_y, loss < ln 2): log1p(rest / e_y). Otherwise ln(row_sum) - shifted_y, a sum of
    # two non-negative terms, exact also when e_y underflowed.
    loss = torch.where(rest_e < ey, torch.log1p(rest_e / ey), torch.log(row_sum) - shifted_y)
    return q, rest_e / row_sum, (loss if ignored is None else loss.masked_fill_(ignored, 0.0)), None


_SCALED = [None]  # (w, w._version, scale, w * scale): a one-entry cache for the CPU backward


def _scaled_weights(w: torch.Tensor, scale: float) -> torch.Tensor:
    hit = _SCALED[0]
    if hit is not None and hit[0] is w and hit[1] == w._version and hit[2] == scale:
        return hit[3]
    out = w * scale
    _SCALED[0] = (w, w._version, scale, out)
    return out


class _FusedIIFCrossEntropy(torch.autograd.Function):
    """``CE(w * z, y)`` with hard labels: forward keeps ``q = softmax(w * z)``, backward reuses it in place.

    Every tensor op costs a dispatch and every fresh ``(N, C)`` buffer page faults, which matters at
    typical sizes, so both passes use one buffer and few ops: forward the product, an in-place softmax,
    a gather, the row sums without the target and a log1p; backward 3 ops (write ``q_y - 1``, build
    ``w * grad / N``, scale).
    """

    @staticmethod
    def forward(ctx, logits, target, w, ignore_index: int, reduction: str, any_ignored: Optional[bool], check_finite: bool):
        in_dtype = logits.dtype
        # Low-precision logits are computed in float32, as autocast does for cross_entropy.
        z = logits if in_dtype in (torch.float32, torch.float64) else logits.float()
        if w.dtype != z.dtype or w.device != z.device:
            w = w.to(device=z.device, dtype=z.dtype)
        masked = any_ignored is None or any_ignored
        if masked:
            ignored = target == ignore_index
            idx = target.masked_fill(ignored, 0).unsqueeze(1)
        else:
            ignored = None
            idx = target.unsqueeze(1)
        q, rest, loss, total = _softmax_and_loss(
            z, w, idx, native=z.device.type == "cpu", ignored=ignored.unsqueeze(1) if masked else None
        )
        n = z.shape[0]
        denom = None
        # loss is (N, 1) here, 0 for ignored rows; total is its sum when the route computed it
        if check_finite and total is None:
            total = loss.sum()
            check_loss_finite(total, logits, target)  # the loss is the screen: no pass over the logits
        if reduction == "none":
            out = loss.squeeze(1)
        else:
            out = loss.sum() if total is None else total
            if reduction == "mean":
                if masked:
                    denom = n - ignored.sum()
                    out = out / denom
                else:
                    out = out.mul_(1.0 / n)
        # Intermediates (neither inputs nor outputs) may live on ctx; q is private to this node.
        ctx.q, ctx.rest, ctx.idx, ctx.w, ctx.ignored, ctx.denom = q, rest, idx, w, ignored, denom
        ctx.reduction, ctx.in_dtype, ctx.n = reduction, in_dtype, n
        return out

    @staticmethod
    def backward(ctx, grad):
        q = ctx.q
        if torch.is_grad_enabled():  # create_graph=True: the in-place gradient has no graph of its own
            raise RuntimeError("The fused IIF loss does not support double backward; build it with fused=False.")
        if q is None:
            raise RuntimeError(
                "The fused IIF loss reuses its saved softmax in place, so its graph cannot be backpropagated "
                "twice (retain_graph=True). Build the loss with fused=False for that."
            )
        ctx.q = None
        if grad.dtype != q.dtype:
            grad = grad.to(q.dtype)
        # Eq. 16: dL_i/dz_ic = g_i * w_c * (q_ic - 1[c = y_i]); the target entries (zeroed in forward) get
        # q_y - 1 = -rest, then one scaling pass.
        q.scatter_(1, ctx.idx, ctx.rest.neg_())
        ctx.rest = None
        if ctx.reduction == "none":
            q.mul_(ctx.w)
            q.mul_(grad.unsqueeze(1))
        elif q.device.type == "cpu" and ctx.denom is None:
            # w_c * grad / N folded into one (C,) vector, reused while w, grad and N repeat (every step
            # of a training loop): reading a CPU scalar is free, a tensor op is not.
            scale = grad.item() / (ctx.n if ctx.reduction == "mean" else 1)
            q.mul_(_scaled_weights(ctx.w, scale))
        else:
            if ctx.reduction == "mean":
                grad = grad / (ctx.denom if ctx.denom is not None else ctx.n)
            q.mul_(ctx.w * grad)  # w_c * grad / N folded into one (C,) vector
        if ctx.ignored is not None:
            q.masked_fill_(ctx.ignored.unsqueeze(1), 0.0)
        return (q if q.dtype == ctx.in_dtype else q.to(ctx.in_dtype)), None, None, None, None, None, None


def _check_fused(fused) -> object:
    if fused not in ("auto", True, False):
        raise IIFError(f"fused must be 'auto', True or False; got {fused!r}.")
    return fused


def _fused_ok(soft: bool, weight, label_smoothing: float, logits: torch.Tensor, fused) -> bool:
    if fused is False or soft or weight is not None or label_smoothing != 0.0 or logits.dim() != 2:
        return False
    # "auto": the fused kernel on CPU, where it saves whole passes over memory. A GPU is launch-bound at
    # typical sizes, and the composed form's few native kernels beat the fused kernel's Python backward
    # there (measured on an H100, see docs/losses.md); fused=True forces it anyway.
    return fused is True or logits.device.type == "cpu"


def _optimistic(logits: torch.Tensor, ignore_index: int) -> bool:
    """Whether labels may go unchecked into the CPU kernel: its gather raises on any label outside
    ``[0, C)``, which covers the ignore_index too when that lies outside the class range."""
    return logits.device.type == "cpu" and not (0 <= ignore_index < logits.shape[-1])


def _iif_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    w_full: torch.Tensor,
    weight: Optional[torch.Tensor],
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
    fused,
    soft: bool,
    any_ignored: Optional[bool],
    check_finite: bool,
    check_labels: bool = False,
) -> torch.Tensor:
    if _fused_ok(soft, weight, label_smoothing, logits, fused):
        if any_ignored is None and _optimistic(logits, ignore_index):
            # CPU gather checks its index bounds: try the unmasked kernel first, and only when a label is
            # out of range (an ignored one, or a bad one) look at the labels at all.
            try:
                return _FusedIIFCrossEntropy.apply(logits, target, w_full, ignore_index, reduction, False, check_finite)
            except (RuntimeError, IndexError):
                if check_labels:
                    validate_inputs(logits, target, None, ignore_index, True)  # raises IIFError on a bad label
                any_ignored = bool((target == ignore_index).any())
                if not any_ignored:
                    raise
        return _FusedIIFCrossEntropy.apply(logits, target, w_full, ignore_index, reduction, any_ignored, check_finite)
    # float64 logits keep float64; float32 and low-precision logits are weighted in float32 (a
    # half-precision product would round the weights), as the fused kernel does.
    zw = weighted_logits(logits, w_full)
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=zw.dtype)
    if soft:
        target = target.to(zw.dtype)
    out = F.cross_entropy(
        zw, target, weight=weight, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    return check_loss_finite(out, logits, target) if check_finite else out


def iif_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    iif_weights: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    background: Optional[str] = None,
    fused="auto",
    check_finite: bool = True,
    check_labels: bool = True,
) -> torch.Tensor:
    """IIF cross-entropy, paper Eq. 15: ``F.cross_entropy(iif_weights * logits, target, ...)``.

    Args:
        logits: ``(N, C)`` (or ``(N, C + 1)`` with a background column).
        target: class indices ``(N,)`` or soft targets ``(N, C)``.
        iif_weights: the ``C`` IIF weights (``iif.iif_weights``); with ``background`` the background
            weight 1 is inserted, or pass ``C + 1`` weights that already include it.
        weight, reduction, ignore_index, label_smoothing: as in ``F.cross_entropy``.
        background: ``None``, ``"first"`` or ``"last"`` (detection, paper section IV-A.3).
        fused: ``"auto"`` (default) uses the fused autograd kernel on CPU when the options allow it
            (same values, faster) and the composed form elsewhere; ``True`` forces the kernel wherever
            the options allow, ``False`` never uses it.
        check_finite / check_labels: raise on NaN/inf logits reaching the loss / labels out of range
            (each a host sync on GPU).

    The gradient is Eq. 16: ``w_i (q_i - 1[i = y])`` per sample with ``q = softmax(w * z)``.

    Precision: computed in float32 for float32 and low-precision logits (the weights rounded to float32
    once), in float64 for float64 logits (pass float64 weights to keep every digit). The fused path's
    value is exact to float32 rounding for any logits (docs/losses.md#precision).
    """
    reduction = check_reduction(reduction)
    label_smoothing = check_label_smoothing(label_smoothing)
    weight = class_weight(weight)
    _check_fused(fused)
    w = iif_weights if isinstance(iif_weights, torch.Tensor) else torch.as_tensor(iif_weights)
    if not w.is_floating_point():
        w = w.to(torch.float32)
    if w.dim() != 1:
        raise IIFError(f"iif_weights must be a 1-D tensor with one weight per class; got shape {tuple(w.shape)}.")
    num_logits = logits.shape[-1] if isinstance(logits, torch.Tensor) and logits.dim() else 0
    w_full = expand_class_vector(w, num_logits, check_background(background), 1.0, "IIF weights")
    opt = (
        fused is not False and weight is None and label_smoothing == 0.0 and isinstance(logits, torch.Tensor)
        and logits.dim() == 2 and isinstance(target, torch.Tensor) and not target.is_floating_point()
        and _optimistic(logits, ignore_index)
    )
    soft, any_ignored = validate_inputs(logits, target, None, ignore_index, check_labels and not opt)
    if weight is not None and weight.shape[0] != logits.shape[1]:
        raise IIFError(f"weight has {weight.shape[0]} entries but the logits have {logits.shape[1]} classes.")
    return _iif_ce(
        logits, target, w_full, weight, reduction, ignore_index, label_smoothing, fused, soft, any_ignored,
        check_finite, check_labels,
    )


def online_smooth_weights(
    target: torch.Tensor, num_logits: int, ignore_index: int = -100, background: Optional[str] = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth IIF weights from one mini-batch's labels (paper section IV-A.2, "online" smooth IIF).

    ``w_c = ln((K + 1) / (n_c + 1)) + 1`` with ``n_c`` the batch count of class ``c`` (the sum of
    probabilities for soft targets) and ``K`` the number of (non-ignored) samples in the batch
    (the ``smooth`` row of :data:`iif.weights.VARIANT_TABLE`). Returns ``(w_full, counts, K)`` in float64;
    the background weight, if any, is 1. No host sync.
    """
    if is_soft(target):
        counts = target.detach().to(torch.float64).sum(0)
        k = counts.new_tensor(float(target.shape[0]))
    else:
        valid = (target != ignore_index).to(torch.float64)
        counts = torch.zeros(num_logits, dtype=torch.float64, device=target.device)
        counts.scatter_add_(0, target.masked_fill(target == ignore_index, 0), valid)
        k = valid.sum()
    w = VARIANT_TABLE["smooth"].weight(counts, k)
    if background == "first":
        w[0] = 1.0
    elif background == "last":
        w[-1] = 1.0
    return w, counts, k


class IIFLoss(LossBase):
    """IIF cross-entropy loss module (paper Eq. 15), a drop-in replacement for ``nn.CrossEntropyLoss``.

    Args:
        weights: the ``C`` IIF weights (``iif.iif_weights(counts, "smooth")`` or ``freq.weights()``).
            With ``background`` the background weight 1 is inserted (or pass ``C + 1`` weights).
        num_classes: number of classes ``C``; needed for the online form.
        online: recompute smooth IIF weights from every mini-batch's label counts (K = batch size,
            paper section IV-A.2) instead of fixed dataset weights.
        variant: the IIF variant for the online form; only ``"smooth"`` is finite for classes missing
            from a batch.
        background: ``None``, ``"first"`` or ``"last"`` for detection logits ``(N, C + 1)``.
        fused: ``"auto"`` (default): the fused autograd kernel on CPU when the options allow (hard
            labels, no ``weight``, no label smoothing), the composed form on GPUs; ``True`` forces
            the kernel wherever the options allow; ``False`` never uses it.
        weight, reduction, ignore_index, label_smoothing, check_finite, check_labels: see
            :class:`iif.losses.LossBase`.

    ``adjust_logits(z)`` returns ``w * z``: a model trained with this loss is evaluated on the adjusted
    logits (Eq. 13-15). In the online form it uses smooth weights of all labels seen in training mode.

    Precision: float64 weights stay float64 (``iif.iif_weights(..., dtype=torch.float64)``); the loss is
    computed in float64 for float64 logits (exact with float64 weights) and in float32 otherwise.
    """

    def __init__(
        self,
        weights=None,
        *,
        num_classes: Optional[int] = None,
        online: bool = False,
        variant: str = "smooth",
        background: Optional[str] = None,
        fused="auto",
        weight=None,
        reduction: str = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        check_finite: bool = True,
        check_labels: bool = True,
    ) -> None:
        super().__init__(weight, reduction, ignore_index, label_smoothing, check_finite, check_labels)
        self.background = check_background(background)
        self.online = bool(online)
        self.fused = _check_fused(fused)
        self.variant = str(variant)
        if self.online:
            if self.variant != "smooth":
                raise IIFError(
                    f"online IIF recomputes weights from each mini-batch, where most classes have zero count; "
                    f"only variant='smooth' is finite then, got {variant!r}."
                )
            if num_classes is None:
                if weights is None:
                    raise IIFError("online IIFLoss needs num_classes=C (the number of foreground classes).")
                num_classes = len(weights)
            c = int(num_classes)
            if c < 1:
                raise IIFError(f"num_classes must be a positive integer; got {num_classes!r}.")
            total = c + (1 if self.background else 0)
            self.register_buffer("iif_weights", torch.ones(c))
            # Label counts seen in training mode, for adjust_logits at inference.
            self.register_buffer("seen_counts", torch.zeros(total, dtype=torch.float64))
            self.register_buffer("seen_total", torch.zeros((), dtype=torch.float64))
        else:
            if weights is None:
                raise IIFError(
                    "IIFLoss needs weights (e.g. iif.iif_weights(counts, 'smooth')) or online=True with num_classes."
                )
            w = torch.as_tensor(weights).detach()
            if w.dtype != torch.float64:  # float64 weights keep their precision (float64 logits use it)
                w = w.to(torch.float32)
            if w.dim() != 1 or w.numel() == 0:
                raise IIFError(f"weights must be a 1-D vector, one IIF weight per class; got shape {tuple(w.shape)}.")
            if not bool(torch.isfinite(w).all()):
                raise IIFError("IIF weights contain NaN or inf; use variant='smooth', which is finite for every count.")
            if bool((w <= 0).any()):
                raise IIFError(
                    "IIF weights must be positive: a weight <= 0 flips or zeroes its logit's sign. "
                    "Use variant 'smooth' or 'raw' (or clamp the weights)."
                )
            if num_classes is not None and int(num_classes) != w.shape[0]:
                raise IIFError(f"num_classes={num_classes} but {w.shape[0]} weights were given.")
            self.register_buffer("iif_weights", w)

    def _full_weights(self, num_logits: int) -> torch.Tensor:
        return expand_class_vector(self.iif_weights, num_logits, self.background, 1.0, "IIF weights")

    def expected_classes(self) -> Optional[int]:
        return None  # checked against the weights (with or without background) in forward

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_logits = logits.shape[-1] if isinstance(logits, torch.Tensor) and logits.dim() else 0
        w_full = self.iif_weights
        if self.background is not None or num_logits != w_full.shape[0]:
            w_full = self._full_weights(num_logits)  # inserts the background weight, or raises
        # On a GPU the value checks sync anyway; learning there whether any label is ignored lets the
        # fused kernel skip its row mask.
        want = logits.device.type != "cpu" and self.fused is True and self.check_labels
        opt = (
            self.fused is not False and not self.online and self.weight is None and self.label_smoothing == 0.0
            and isinstance(logits, torch.Tensor) and logits.dim() == 2 and isinstance(target, torch.Tensor)
            and not target.is_floating_point() and _optimistic(logits, self.ignore_index)
        )
        soft, any_ignored = validate_inputs(
            logits, target, None, self.ignore_index, self.check_labels and not opt, want_ignored=want
        )
        weight = self._weight(logits) if self.weight is not None else None
        if self.online:
            w_full, counts, k = online_smooth_weights(target, num_logits, self.ignore_index, self.background)
            if self.training:
                with torch.no_grad():
                    c = counts.to(self.seen_counts.device)
                    if c.shape[0] == self.seen_counts.shape[0]:
                        self.seen_counts += c
                    else:  # weights given for C classes, background included in the logits
                        self.seen_counts += c[: self.seen_counts.shape[0]]
                    self.seen_total += k.to(self.seen_total.device)
        return _iif_ce(
            logits, target, w_full, weight, self.reduction, self.ignore_index, self.label_smoothing,
            self.fused, soft, any_ignored, self.check_finite, self.check_labels,
        )

    def current_weights(self, num_logits: Optional[int] = None) -> torch.Tensor:
        """The IIF weights inference uses (online: smooth weights of the labels seen so far)."""
        if not self.online:
            w = self.iif_weights
        else:
            if float(self.seen_total) <= 0:
                raise IIFError("online IIFLoss has seen no training labels yet; call it on a training batch first.")
            w = VARIANT_TABLE["smooth"].weight(self.seen_counts, self.seen_total)
            if self.background == "first":
                w = w[1:]
            elif self.background == "last":
                w = w[:-1]
        return w if num_logits is None else expand_class_vector(w, num_logits, self.background, 1.0, "IIF weights")

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """``w * z``: the logits a model trained with IIF is evaluated on (Eq. 13), computed like
        :func:`iif.adjusters.posthoc_iif` (float32 for low-precision logits) and returned in their dtype."""
        w = self.current_weights(logits.shape[-1])
        return weighted_logits(logits, w).to(logits.dtype)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.iif_weights.shape[0]}, online={self.online}, background={self.background!r}, "
            f"fused={self.fused}, {super().extra_repr()}"
        )
