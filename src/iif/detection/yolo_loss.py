"""YOLOv3's target assignment, box decoding and training losses, as the paper trained it (Appendix, "YOLOv3":
focal loss for objectness, complete IoU for the boxes, cross-entropy for the classes).

Assignment (Redmon & Farhadi): each ground-truth box goes to the one anchor, among all ``S x A`` (three scales
x three anchors), whose shape best matches its own (the IoU of the two boxes put on one centre,
``min(w, w_a) min(h, h_a) / (w h + w_a h_a - min(w, w_a) min(h, h_a))``), at the grid cell of that anchor's
scale that holds the box centre. That (scale, anchor, cell) is a positive; every other one is a negative for
objectness. There is no "ignore" band: the focal loss down-weights the easy negatives instead. Two objects
that land on the same (scale, anchor, cell) both train its box and class terms (rare at the benchmark's
sizes).

Decoding, for offsets ``(t_x, t_y, t_w, t_h)`` at cell ``(g_x, g_y)`` of stride ``s`` and anchor
``(w_a, h_a)`` (pixels of the network input):
``c_x = (sigmoid(t_x) + g_x) s``, ``c_y = (sigmoid(t_y) + g_y) s``, ``w = w_a exp(t_w)``, ``h = h_a exp(t_h)``
(``t_w, t_h`` clamped at ``ln(1000 / 16)``, torchvision's box-coder bound, so exp never overflows).

Losses, each summed and divided by the number of positives P (at least 1):

* ``loss_box = sum_pos (1 - CIoU(decoded, gt)) / P``  (``torchvision.ops.complete_box_iou_loss``),
* ``loss_obj = sum_all FL(o, 1[pos]) / P``  (``torchvision.ops.sigmoid_focal_loss``, alpha 0.25, gamma 2),
* ``loss_cls = sum_pos CE(z', y) / P`` where ``z'`` are the class logits after the margin
  (:func:`iif.detection.use_margin`: ``w * z`` for IIF, paper Eq. 15; ``z + ln n`` for Balanced Softmax).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["anchor_shape_iou", "assign_targets", "decode_boxes", "yolo_losses", "MAX_LOG_WH"]

#: clamp of t_w, t_h before exp (torchvision's BoxCoder: ln(1000 / 16))
MAX_LOG_WH = math.log(1000.0 / 16)


def anchor_shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``(G, K)`` IoU of ``G`` box shapes ``(w, h)`` with ``K`` anchor shapes, both centred on one point."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return inter / union.clamp_min(1e-12)


def assign_targets(targets: Sequence[dict], anchors: torch.Tensor, strides: Sequence[int],
                   grids: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """The positives of each scale: ``{"image", "anchor", "gy", "gx", "boxes", "labels"}`` (one row each).

    ``targets``: per image ``boxes`` (x1, y1, x2, y2 in pixels of the network input) and ``labels`` (1..C);
    ``anchors``: ``(S, A, 2)`` shapes in pixels; ``strides``/``grids``: each scale's stride and ``(H, W)``."""
    n_scales, n_anchors = anchors.shape[:2]
    flat = anchors.reshape(-1, 2)
    dev = flat.device
    rows = [(i, t["boxes"].to(dev, torch.float32).reshape(-1, 4), t["labels"].to(dev).reshape(-1))
            for i, t in enumerate(targets)]
    img = torch.cat([torch.full((len(lab),), i, dtype=torch.long, device=dev) for i, _, lab in rows])
    boxes = torch.cat([b for _, b, _ in rows])
    labels = torch.cat([lab for _, _, lab in rows]).long()
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp_min(1e-6)
    best = anchor_shape_iou(wh, flat).argmax(dim=1) if len(boxes) else torch.zeros(0, dtype=torch.long, device=dev)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    out = []
    for s in range(n_scales):
        sel = (best // n_anchors) == s
        h, w = grids[s]
        cell = torch.div(centre[sel], float(strides[s]), rounding_mode="floor").long()
        out.append({"image": img[sel], "anchor": best[sel] % n_anchors,
                    "gx": cell[:, 0].clamp(0, w - 1), "gy": cell[:, 1].clamp(0, h - 1),
                    "boxes": boxes[sel], "labels": labels[sel]})
    return out


def decode_boxes(t: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor, anchor_wh: torch.Tensor,
                 stride: float) -> torch.Tensor:
    """``(..., 4)`` offsets -> ``(..., 4)`` boxes x1, y1, x2, y2 (module docstring); ``gx, gy, anchor_wh``
    broadcast against ``t[..., 0]`` / ``t[..., :2]``."""
    cx = (torch.sigmoid(t[..., 0]) + gx) * stride
    cy = (torch.sigmoid(t[..., 1]) + gy) * stride
    w = anchor_wh[..., 0] * torch.exp(t[..., 2].clamp(max=MAX_LOG_WH))
    h = anchor_wh[..., 1] * torch.exp(t[..., 3].clamp(max=MAX_LOG_WH))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def yolo_losses(preds: Sequence[torch.Tensor], assigned: Sequence[dict], anchors: torch.Tensor,
                strides: Sequence[int], class_logits: Callable[[torch.Tensor], torch.Tensor], *,
                focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> dict[str, torch.Tensor]:
    """``{"loss_box", "loss_obj", "loss_cls"}`` (module docstring) of the head's per-scale outputs ``preds``
    (``(N, A, H, W, 5 + C)``) against :func:`assign_targets`' positives; ``class_logits`` maps the raw class
    logits ``(P, C)`` to the ones the loss sees (the margin)."""
    from torchvision.ops import complete_box_iou_loss, sigmoid_focal_loss

    ref = preds[0]
    n_pos = sum(int(a["image"].numel()) for a in assigned)
    denom = float(max(n_pos, 1))
    box_sum = ref.new_zeros(())
    obj_sum = ref.new_zeros(())
    pos_logits, pos_labels = [], []
    for p, a, anc, stride in zip(preds, assigned, anchors, strides):
        idx = (a["image"], a["anchor"], a["gy"], a["gx"])
        obj_target = torch.zeros_like(p[..., 4])
        obj_target[idx] = 1.0
        obj_sum = obj_sum + sigmoid_focal_loss(p[..., 4], obj_target, alpha=focal_alpha, gamma=focal_gamma,
                                               reduction="sum")
        if a["image"].numel():
            cell = p[idx]
            pred_box = decode_boxes(cell[:, :4], a["gx"].to(cell), a["gy"].to(cell), anc[a["anchor"]].to(cell),
                                    float(stride))
            box_sum = box_sum + complete_box_iou_loss(pred_box, a["boxes"].to(cell), reduction="sum")
            pos_logits.append(cell[:, 5:])
            pos_labels.append(a["labels"] - 1)
    if pos_logits:
        z = class_logits(torch.cat(pos_logits))
        cls_sum = F.cross_entropy(z, torch.cat(pos_labels), reduction="sum")
    else:  # keep the class branch in the graph (DDP needs every parameter used)
        cls_sum = ref[..., 5:].sum() * 0.0
    return {"loss_box": box_sum / denom, "loss_obj": obj_sum / denom, "loss_cls": cls_sum / denom}
