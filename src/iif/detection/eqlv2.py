"""Equalization Loss v2 (Tan et al., 'Equalization Loss v2: A New Gradient Balance Approach for Long-tailed
Object Detection', CVPR 2021) as a detection method of :func:`iif.detection.use_margin` (``method="eqlv2"``,
``when="train"``).

EQLv2 trains the box classifier as ``C`` independent sigmoid classifiers (the background has no classifier of
its own: a background RoI has the all-zero target) and balances, per class ``j``, the positive and the negative
gradients with the ratio ``g_j`` of the positive to the negative gradient magnitudes accumulated over the
iterations so far (paper Sec. 3.3):

    f(g) = 1 / (1 + exp(-gamma (g - mu)))                       (Eq. 8, the mapping function)
    r_j = f(g_j),   q_j = 1 + alpha (1 - r_j)                   (Eq. 7: negative and positive weights)
    L = (1 / N) sum_i sum_j w_ij BCE(z_ij, y_ij),   w_ij = q_j y_ij + r_j (1 - y_ij)

with the published ``gamma = 12``, ``mu = 0.8``, ``alpha = 4``. After each iteration the weighted gradient
magnitudes ``|dBCE/dz_ij| w_ij = |sigmoid(z_ij) - y_ij| w_ij`` are added to the positive (``y_ij = 1``) and the
negative (``y_ij = 0``) accumulators of class ``j``, and ``g_j = pos_j / (neg_j + 1e-10)``. At the first
iteration nothing is accumulated and every weight is 1 (the authors' code). Under ``torch.distributed`` the
per-iteration sums are all-reduced, so every rank keeps the same ``g``.

In a torchvision R-CNN (background logit at index 0) the loss reads the ``C`` foreground logits; the
background logit gets no gradient. :func:`use_margin` installs three things on ``model.roi_heads``: the
:class:`EQLv2Adjuster` inside the :class:`~iif.detection.margins.MarginBoxPredictor` (it keeps the RoI logits
of the training forward), a tap of ``select_training_samples`` (the RoIs' labels), and a ``forward`` that
replaces torchvision's cross-entropy ``loss_classifier`` by the EQLv2 loss. At inference the detections are
scored ``sigmoid(z_c)`` per foreground class (:func:`postprocess_sigmoid`: torchvision's per-class threshold,
small-box removal, NMS at ``roi_heads.nms_thresh`` and top-k, with sigmoid instead of softmax scores).
Calling :func:`use_margin` with another method removes all three.

The accumulators are buffers of the adjuster, outside the model's ``state_dict`` (whose keys stay the plain
model's); ``iif det-train`` saves them beside it (:func:`margin_state`, ``last.pt``'s ``"margin_state"``) and
restores them on ``--resume``, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
import types
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError

__all__ = ["EQLv2Loss", "EQLv2Adjuster", "eqlv2_map", "postprocess_sigmoid", "EQLV2_DEFAULTS", "margin_state",
           "load_margin_state"]

#: The published hyper-parameters (Tan et al. 2021, Sec. 4.1).
EQLV2_DEFAULTS = {"gamma": 12.0, "mu": 0.8, "alpha": 4.0}


def eqlv2_map(g: torch.Tensor, gamma: float, mu: float) -> torch.Tensor:
    """The mapping function of Eq. 8: ``1 / (1 + exp(-gamma (g - mu)))``."""
    return torch.sigmoid(gamma * (g - mu))


def _hyper(params: Optional[dict]) -> dict[str, float]:
    """EQLv2's ``gamma``, ``mu``, ``alpha`` (the published values unless ``params`` sets them), checked."""
    out = dict(EQLV2_DEFAULTS)
    for key, value in (params or {}).items():
        if key not in out:
            raise IIFError(f"method 'eqlv2' has no parameter {key!r}; its parameters are gamma=12.0, mu=0.8, "
                           "alpha=4.0 (Tan et al. 2021).")
        try:
            v = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError):
            v = float("nan")
        if not (math.isfinite(v) and v >= 0):
            raise IIFError(f"eqlv2 parameter {key!r} must be a finite number >= 0; got {value!r} "
                           f"(published: {key}={EQLV2_DEFAULTS[key]}).")
        out[key] = v
    return out


class EQLv2Loss(nn.Module):
    """The EQLv2 classification loss over ``C`` sigmoid classifiers, with its gradient statistics (module doc).

    Call it with the ``(N, C)`` foreground logits and the ``(N,)`` labels in ``0..C`` (0: background, the
    all-zero target); it returns the scalar loss and, in training mode, adds this batch's weighted gradient
    magnitudes to ``pos_grad`` / ``neg_grad`` (after the loss is computed: the weights of an iteration come
    from the iterations before it).
    """

    #: The buffers a det-train checkpoint carries (:func:`margin_state`) so that a resumed run is exact.
    accumulators = ("pos_grad", "neg_grad", "started")

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.gamma, self.mu, self.alpha = float(gamma), float(mu), float(alpha)
        self.register_buffer("pos_grad", torch.zeros(self.num_classes, dtype=torch.float64))
        self.register_buffer("neg_grad", torch.zeros(self.num_classes, dtype=torch.float64))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def ratio(self) -> torch.Tensor:
        """``g_j``: accumulated positive over negative gradient magnitude (``pos / (neg + 1e-10)``)."""
        return self.pos_grad / (self.neg_grad + 1e-10)

    def class_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, r)``: the positive and negative weight of each class (Eq. 7); 1 before the first update."""
        if not bool(self.started):
            one = torch.ones_like(self.pos_grad)
            return one, one.clone()
        r = eqlv2_map(self.ratio(), self.gamma, self.mu)
        return 1.0 + self.alpha * (1.0 - r), r

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes or labels.shape[0] != logits.shape[0]:
            raise IIFError(f"EQLv2Loss takes (N, {self.num_classes}) foreground logits and N labels in "
                           f"0..{self.num_classes}; got logits {tuple(logits.shape)} and {labels.shape[0]} labels.")
        n = logits.shape[0]
        target = torch.zeros_like(logits)
        fg = labels > 0
        target[fg.nonzero().flatten(), labels[fg].long() - 1] = 1.0
        q, r = self.class_weights()
        weight = (q.to(logits.dtype) * target + r.to(logits.dtype) * (1.0 - target)).detach()
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = (bce * weight).sum() / max(n, 1)
        if self.training:
            self._accumulate(logits.detach(), target, weight)
        return loss

    @torch.no_grad()
    def _accumulate(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> None:
        grad = (torch.sigmoid(logits) - target).abs() * weight
        stats = torch.stack([(grad * target).sum(0), (grad * (1.0 - target)).sum(0)]).to(torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        self.pos_grad += stats[0]
        self.neg_grad += stats[1]
        self.started.fill_(True)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, mu={self.mu}, alpha={self.alpha}"


class EQLv2Adjuster(nn.Module):
    """The adjuster :func:`use_margin` puts in the box predictor for ``"eqlv2"``: the logits pass unchanged; in
    training it computes the EQLv2 loss of the RoIs (labels from the ``select_training_samples`` tap) and keeps
    it for the ``roi_heads.forward`` that replaces ``loss_classifier``."""

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0) -> None:
        super().__init__()
        self.loss = EQLv2Loss(num_classes, gamma, mu, alpha)
        self.labels: Optional[torch.Tensor] = None
        self.pending: Optional[torch.Tensor] = None

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.training:
            labels, self.labels = self.labels, None
            if labels is None or labels.shape[0] != logits.shape[0]:
                raise IIFError("the eqlv2 loss needs the RoI labels of this batch, which use_margin taps from "
                               "roi_heads.select_training_samples; call the detector itself in training mode "
                               "(model(images, targets)), not its box predictor alone.")
            self.pending = self.loss(logits[:, 1:], labels.to(logits.device))
        return logits

    def take_loss(self) -> torch.Tensor:
        out, self.pending = self.pending, None
        if out is None:
            raise IIFError("the eqlv2 box head ran without its loss; rebuild the margin with use_margin.")
        return out


# ------------------------------------------------------------------------------------------ roi_heads hooks


def _adjuster(roi_heads: nn.Module) -> Optional[EQLv2Adjuster]:
    adj = getattr(roi_heads.box_predictor, "adjuster", None)
    return adj if isinstance(adj, EQLv2Adjuster) else None


def _select_and_tap(roi_heads: nn.Module, proposals, targets):
    out = type(roi_heads).select_training_samples(roi_heads, proposals, targets)
    adj = _adjuster(roi_heads)
    if adj is not None:
        adj.labels = torch.cat(list(out[2]))
    return out


def _forward(roi_heads: nn.Module, features, proposals, image_shapes, targets=None):
    result, losses = type(roi_heads).forward(roi_heads, features, proposals, image_shapes, targets)
    adj = _adjuster(roi_heads)
    if roi_heads.training and adj is not None:
        losses["loss_classifier"] = adj.take_loss()
    return result, losses


def postprocess_sigmoid(roi_heads: nn.Module, class_logits: torch.Tensor, box_regression: torch.Tensor,
                        proposals, image_shapes):
    """torchvision's ``RoIHeads.postprocess_detections`` with the score of class ``c`` ``sigmoid(z_c)`` (a
    sigmoid classifier, EQLv2) instead of the softmax over ``C + 1`` logits: decode and clip each class's box,
    drop scores ``<= score_thresh`` and boxes under 0.01 px, per-class NMS at ``nms_thresh``, keep the
    ``detections_per_img`` best."""
    from torchvision.ops import boxes as box_ops

    num_classes = class_logits.shape[-1]
    per_image = [p.shape[0] for p in proposals]
    pred_boxes = roi_heads.box_coder.decode(box_regression, proposals)
    pred_scores = torch.sigmoid(class_logits[:, 1:])
    out_boxes, out_scores, out_labels = [], [], []
    for boxes, scores, shape in zip(pred_boxes.split(per_image), pred_scores.split(per_image), image_shapes):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)[:, 1:].reshape(-1, 4)
        labels = torch.arange(1, num_classes, device=class_logits.device).repeat(scores.shape[0])
        scores = scores.reshape(-1)
        keep = torch.where(scores > roi_heads.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.batched_nms(boxes, scores, labels, roi_heads.nms_thresh)[: roi_heads.detections_per_img]
        out_boxes.append(boxes[keep])
        out_scores.append(scores[keep])
        out_labels.append(labels[keep])
    return out_boxes, out_scores, out_labels


_HOOKS = {"select_training_samples": _select_and_tap, "forward": _forward,
          "postprocess_detections": postprocess_sigmoid}


def hook_eqlv2(roi_heads: nn.Module) -> None:
    """Install the three instance-level hooks of the module docstring (bound methods: a deepcopy rebinds)."""
    for name, fn in _HOOKS.items():
        roi_heads.__dict__[name] = types.MethodType(fn, roi_heads)


def unhook_eqlv2(roi_heads: nn.Module) -> None:
    """Remove the hooks of :func:`hook_eqlv2` (only those it installed)."""
    for name, fn in _HOOKS.items():
        bound = roi_heads.__dict__.get(name)
        if isinstance(bound, types.MethodType) and bound.__func__ is fn:
            del roi_heads.__dict__[name]


def _build_eqlv2(model: nn.Module, kind: str, num_logits: int, method: str, freq: Any, *,
                 params: Optional[dict] = None, **_: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The detection implementation of ``"eqlv2"`` (:mod:`iif.methods`): an :class:`EQLv2Adjuster` for a
    torchvision ``RoIHeads`` detector (the counts are not used: EQLv2 balances by the gradients it sees)."""
    from torchvision.models.detection.roi_heads import RoIHeads

    heads = getattr(model, "roi_heads", None)
    if kind != "rcnn" or type(heads) is not RoIHeads:
        what = (f"its {type(heads).__name__} (several box stages)" if heads is not None
                else f"{type(model).__name__} has no RoI heads")
        raise IIFError(f"method='eqlv2' replaces the box classification loss of torchvision's one-stage RoIHeads "
                       f"(Faster / Mask R-CNN); {what} is not one. Use a fasterrcnn_* or maskrcnn_* arch.")
    hp = _hyper(params)
    return EQLv2Adjuster(num_logits - 1, **hp), dict(hp)


_build_eqlv2.takes_params = True  # type: ignore[attr-defined]  # use_margin passes params= (gamma, mu, alpha)


def margin_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The training-time accumulators of ``model``'s margin (buffers listed in a module's ``accumulators``, e.g.
    EQLv2's gradient sums), by module path: what a checkpoint needs besides the ``state_dict``."""
    return {f"{name}.{b}": getattr(mod, b).detach().cpu().clone()
            for name, mod in model.named_modules() for b in getattr(mod, "accumulators", ())}


def load_margin_state(model: nn.Module, state: Optional[dict]) -> None:
    """Copy :func:`margin_state`'s tensors back into ``model``'s accumulators (entries it lacks are left alone:
    a checkpoint from before they were saved)."""
    for name, mod in model.named_modules():
        for b in getattr(mod, "accumulators", ()):
            value = (state or {}).get(f"{name}.{b}")
            if value is not None:
                getattr(mod, b).copy_(value)
