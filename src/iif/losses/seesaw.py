"""Seesaw loss (Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021).

For a sample of class ``i`` the softmax's denominator weighs every other class ``j`` by ``S_ij``:

    L = -ln( e^{z_i} / (e^{z_i} + sum_{j != i} S_ij e^{z_j}) ),      S_ij = M_ij * C_ij

* mitigation factor ``M_ij = (N_j / N_i)^p`` if ``N_j < N_i`` else 1, with ``N`` the number of training
  samples of each class seen so far (accumulated during training, the current batch included), so a
  frequent class ``i`` pushes a rarer class ``j`` down less;
* compensation factor ``C_ij = (sigma_j / sigma_i)^q`` if ``sigma_j > sigma_i`` else 1, with ``sigma`` the
  (detached) softmax probabilities, so a class that the sample is misclassified as is penalised more.

``S_ii = 1``, so the loss equals cross-entropy on the logits ``z_j + ln S_ij`` (``j != i``), ``z_i``; that is
what :func:`seesaw_logits` returns and :class:`SeesawLoss` feeds to ``F.cross_entropy``. Defaults
``p = 0.8``, ``q = 2.0`` (the paper's). Counts are clamped to at least 1 and ``sigma_i`` to at least
``eps`` (0.01) before the ratios, as the authors' mmdetection code does.

Background (``background="first"`` or ``"last"``, a ``C + 1`` detection softmax). The paper's detector
adds an objectness branch and applies the seesaw factors among the ``C`` foreground classes only; here,
on torchvision's ``C + 1`` head, the factors act among the foreground columns of a foreground sample
(``sigma`` is the softmax over the foreground logits, ``N`` counts foreground samples), the background
column keeps factor 1, and a background sample gets plain cross-entropy. See docs/losses.md.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..adjusters import check_background
from ..errors import IIFError
from ._common import finite_number
from .base import LossBase

__all__ = ["SeesawLoss", "seesaw_logits"]


def _foreground_view(num_logits: int, target: torch.Tensor, background: Optional[str], ignore_index: int):
    """``(columns slice, foreground label of each row, rows that are foreground samples)``."""
    if background is None:
        cols = slice(0, num_logits)
        fg_label = target
        is_fg = target != ignore_index
    elif background == "first":
        cols = slice(1, num_logits)
        fg_label = target - 1
        is_fg = (target >= 1) & (target != ignore_index)
    else:
        cols = slice(0, num_logits - 1)
        fg_label = target
        is_fg = (target < num_logits - 1) & (target >= 0) & (target != ignore_index)
    return cols, torch.where(is_fg, fg_label, torch.zeros_like(fg_label)), is_fg


def seesaw_logits(logits: torch.Tensor, target: torch.Tensor, counts: torch.Tensor, p: float = 0.8, q: float = 2.0,
                  eps: float = 1e-2, background: Optional[str] = None, ignore_index: int = -100) -> torch.Tensor:
    """The logits whose cross-entropy is the seesaw loss: ``z_j + ln S_ij`` for ``j != i``, ``z_i`` kept.

    Args:
        logits: ``(N, C)`` (or ``(N, C + 1)`` with a background column).
        target: ``(N,)`` hard labels (in the logits' column order; background 0 for ``"first"``).
        counts: ``(C,)`` accumulated foreground sample counts ``N`` (clamped to >= 1 here).
        p, q: the mitigation and compensation exponents (0 turns a factor off).
        eps: lower clamp of ``sigma_i`` in the compensation ratio.
        background: ``None``, ``"first"`` or ``"last"``.

    Rows of background samples (and ignored rows) are returned unchanged. The compensation factor uses
    detached probabilities, so gradients flow through the logits only.
    """
    background = check_background(background)
    cols, lab, is_fg = _foreground_view(logits.shape[-1], target, background, ignore_index)
    z = logits[:, cols]
    c = z.shape[-1]
    if counts.shape[0] != c:
        raise IIFError(f"seesaw counts have {counts.shape[0]} entries but the logits have {c} foreground columns; "
                       "keep one count per foreground class.")
    cd = torch.float64 if z.dtype == torch.float64 else torch.float32  # factors in float32 under AMP
    onehot = F.one_hot(lab.long(), c).to(cd)
    log_s = torch.zeros(z.shape, dtype=cd, device=z.device)
    if p > 0:
        n = counts.to(device=z.device, dtype=cd).clamp(min=1)
        ratio = n[None, :] / n[:, None]  # [i, j] = N_j / N_i
        log_m = torch.where(ratio < 1, p * torch.log(ratio), torch.zeros_like(ratio))
        log_s = log_s + log_m[lab.long()]
    if q > 0:
        sigma = torch.softmax(z.detach().to(cd), dim=-1)
        own = sigma.gather(1, lab.long()[:, None]).clamp(min=eps)
        ratio = sigma / own
        log_s = log_s + torch.where(ratio > 1, q * torch.log(ratio), torch.zeros_like(ratio))
    log_s = log_s * (1 - onehot) * is_fg[:, None].to(cd)
    out = logits.clone()
    out[:, cols] = z + log_s.to(z.dtype)
    return out


class SeesawLoss(LossBase):
    """Seesaw loss (module docstring), with the per-class sample counts accumulated in training mode.

    Args:
        num_classes: ``C``, the foreground classes (the logits have ``C``, or ``C + 1`` with a background).
        p: mitigation exponent (paper: 0.8).
        q: compensation exponent (paper: 2.0).
        eps: lower clamp of ``sigma_i`` (mmdetection's 0.01).
        background: ``None``, ``"first"`` (torchvision, index 0) or ``"last"`` (mmdetection, index ``C``).
        **kwargs: :class:`LossBase` options (``weight``, ``reduction``, ``ignore_index``, ...).

    ``cum_samples`` (a buffer, saved in the state dict) holds ``N``; each forward in training mode adds the
    batch's foreground labels before the loss is computed, as the authors' code does. Soft targets are
    refused (the factors need a class per sample).
    """

    def __init__(self, num_classes: int, p: float = 0.8, q: float = 2.0, eps: float = 1e-2,
                 background: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise IIFError(f"num_classes must be a positive integer (the foreground classes); got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.p = finite_number(p, "p (seesaw mitigation exponent, paper 0.8)", nonneg=True)
        self.q = finite_number(q, "q (seesaw compensation exponent, paper 2.0)", nonneg=True)
        self.eps = finite_number(eps, "eps", positive=True)
        self.background = check_background(background)
        self.register_buffer("cum_samples", torch.zeros(self.num_classes, dtype=torch.float64))

    def expected_classes(self) -> Optional[int]:
        return self.num_classes + (0 if self.background is None else 1)

    def accumulate(self, target: torch.Tensor) -> None:
        """Add the foreground labels of ``target`` to ``cum_samples``."""
        _, lab, is_fg = _foreground_view(self.expected_classes(), target, self.background, self.ignore_index)
        with torch.no_grad():
            self.cum_samples += torch.bincount(lab[is_fg].long(), minlength=self.num_classes).to(
                device=self.cum_samples.device, dtype=self.cum_samples.dtype)

    def adjusted(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The seesaw logits of ``logits`` for ``target`` with the current counts (no accumulation)."""
        return seesaw_logits(logits, target, self.cum_samples, self.p, self.q, self.eps, self.background,
                             self.ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft, _ = self._validate(logits, target)
        if soft:
            raise IIFError("SeesawLoss needs hard labels (its factors are per target class); got soft targets. "
                           "Use ce or iif with mixup / label smoothing targets.")
        if self.training:
            self.accumulate(target)
        out = F.cross_entropy(self.adjusted(logits, target), target, weight=self._weight(logits),
                              reduction=self.reduction, ignore_index=self.ignore_index,
                              label_smoothing=self.label_smoothing)
        return self._finite(out, logits, target)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, p={self.p}, q={self.q}, eps={self.eps}, "
                f"background={self.background!r}, {super().extra_repr()}")
