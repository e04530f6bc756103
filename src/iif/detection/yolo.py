"""YOLOv3 with torchvision's detector conventions, so ``iif det-train`` / ``det-eval`` and :func:`use_margin`
drive it as they drive Faster R-CNN and SSD (paper Tables XVII-XVIII, Fig. 6).

``model(images, targets)`` in training mode takes a list of ``(3, H, W)`` float images in [0, 1] and target
dicts (``boxes`` x1, y1, x2, y2 in image pixels, ``labels`` 1..C) and returns the loss dict of
:mod:`iif.detection.yolo_loss` (``loss_box``: CIoU, ``loss_obj``: focal, ``loss_cls``: cross-entropy);
``model(images)`` in eval mode returns one ``{"boxes", "labels", "scores"}`` dict per image, in the image's
own pixels, labels 1..C.

Input. Every image is resized (bilinear, no letterbox, as torchvision's SSD transform) to a square of side
``input_size`` (a multiple of 32, the network's largest stride). Multi-scale training (Appendix: "multi-scale
training at 640-pixel input"): with ``multiscale=True`` each training batch draws its side uniformly from the
multiples of 32 in ``[0.75, 1.25] x input_size`` (torch's RNG, so a resumed run draws the same sizes). The
anchors are YOLOv3's nine COCO anchors (pixels at a 416 input) scaled by ``input_size / 416``, three per scale.

Class scores. YOLOv3 separates objectness from classification: the score of class c at a prediction is
``sigmoid(o) * softmax(z')_c`` with ``z'`` the class logits after the margin (``w * z`` for IIF, paper Eq.
13-14: "score = objectness x softmax(w z)"). Predictions with a score above ``score_thresh`` (at most
``pre_nms_top_n`` per image) go through class-wise NMS (``torchvision.ops.batched_nms``, IoU ``nms_thresh``)
and the best ``detections_per_img`` are kept.

The margin. There is no background class: the class logits pass through :class:`BackgroundSlot`, which puts a
constant 0 column in front of the C logits (index 0, where torchvision detectors keep the background) so that
:func:`iif.detection.use_margin` wraps it as it wraps a box predictor and its adjusters (IIF weights,
Balanced Softmax / logit adjustment offsets, NorCal, methods defined by transforms) act on columns 1..C as
they do on a ``C + 1`` detector; the model then drops that column. IIF's background weight is 1 and the
additive offsets leave it at 0, so the column stays 0 and the C logits are exactly ``w * z`` / ``z + ln n``.
A background prior (``background_margin=True``), Seesaw (it needs RoI labels) and the cosine classifier are
refused (:meth:`YOLOv3.margin_site` gives the kind ``"yolo"``).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError
from .yolo_loss import assign_targets, decode_boxes, yolo_losses
from .yolo_net import Darknet, YOLOv3Head

__all__ = ["YOLOv3", "BackgroundSlot", "COCO_ANCHORS", "STRIDES"]

#: YOLOv3's COCO anchors (w, h) in pixels of a 416 input, finest scale (stride 8) first.
COCO_ANCHORS = (((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)), ((116, 90), (156, 198), (373, 326)))
STRIDES = (8, 16, 32)


class BackgroundSlot(nn.Module):
    """``(..., C)`` class logits -> ``(..., C + 1)`` with a 0 column at index 0: the place a margin adjuster
    built for a ``C + 1`` detector expects the background. No parameters; :attr:`num_columns` is ``C + 1``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_columns = int(num_classes) + 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.new_zeros(z.shape[:-1] + (1,)), z], dim=-1)


class YOLOv3(nn.Module):
    """YOLOv3 for ``num_classes`` foreground categories (module docstring). Built by
    :func:`iif.detection.build_detector` (archs ``yolov3_darknet53`` and ``yolov3_tiny_cpu``).

    Args:
        num_classes: C.
        backbone: ``"darknet53"`` or ``"darknet_tiny"`` (:data:`iif.detection.yolo_net.DARKNET_SPECS`).
        input_size: side of the square network input, rounded up to a multiple of 32.
        anchors: ``(3, 3, 2)`` anchor shapes in pixels of ``input_size``; default the COCO anchors scaled.
        norm: ``bn``, ``gn`` or ``frozen_bn``.
        score_thresh, nms_thresh, detections_per_img, pre_nms_top_n: inference (module docstring).
        multiscale: draw each training batch's input side from [0.75, 1.25] x ``input_size``.
    """

    def __init__(self, num_classes: int, *, backbone: str = "darknet53", input_size: int = 416,
                 anchors: Optional[Sequence] = None, norm: str = "bn", score_thresh: float = 1e-4,
                 nms_thresh: float = 0.45, detections_per_img: int = 300, pre_nms_top_n: int = 1000,
                 multiscale: bool = True) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise IIFError(f"num_classes must be a positive int (foreground categories); got {num_classes!r}.")
        self.num_classes = num_classes
        self.input_size = int(math.ceil(int(input_size) / 32) * 32)
        self.backbone = Darknet(backbone, norm)
        self.head = YOLOv3Head(self.backbone.out_channels, num_classes, 3, norm)
        self.class_logits: nn.Module = BackgroundSlot(num_classes)
        if anchors is None:
            anchors = [[(w * self.input_size / 416, h * self.input_size / 416) for w, h in level]
                       for level in COCO_ANCHORS]
        anc = torch.as_tensor(anchors, dtype=torch.float32)
        if anc.shape != (3, 3, 2) or not bool((anc > 0).all()):
            raise IIFError(f"YOLOv3 anchors must be 3 scales x 3 anchors of positive (w, h); got shape "
                           f"{tuple(anc.shape)}.")
        self.register_buffer("anchors", anc, persistent=False)
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_img, self.pre_nms_top_n = int(detections_per_img), int(pre_nms_top_n)
        self.multiscale = bool(multiscale)

    def margin_site(self) -> tuple[str, nn.Module, str]:
        """``(kind, parent, attribute)`` of the module :func:`iif.detection.use_margin` wraps."""
        return "yolo", self, "class_logits"

    def adjusted_class_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The C class logits as the loss (training mode) or the scores (eval mode) see them: through the
        margin wrapper, if any, with the constant background column dropped."""
        return self.class_logits(z)[..., 1:]

    def _batch(self, images: Sequence[torch.Tensor], side: int) -> torch.Tensor:
        if not len(images):
            raise IIFError("YOLOv3 got no images; pass a non-empty list of (3, H, W) tensors.")
        for im in images:
            if im.dim() != 3 or im.shape[0] != 3:
                raise IIFError(f"YOLOv3 takes (3, H, W) images; got shape {tuple(im.shape)}.")
        return torch.cat([F.interpolate(im[None].float(), size=(side, side), mode="bilinear", align_corners=False)
                          for im in images])

    def _train_side(self) -> int:
        if not self.multiscale:
            return self.input_size
        low = max(1, math.ceil(0.75 * self.input_size / 32))
        high = max(low, math.floor(1.25 * self.input_size / 32))
        return 32 * int(torch.randint(low, high + 1, ()).item())

    def forward(self, images: Sequence[torch.Tensor], targets: Optional[Sequence[dict]] = None) -> Any:
        if self.training:
            if targets is None or len(targets) != len(images):
                raise IIFError("YOLOv3 in training mode needs one target dict (boxes, labels) per image.")
            side = self._train_side()
            x = self._batch(images, side)
            preds = self.head(self.backbone(x))
            scaled = [{"boxes": _scale_boxes(t["boxes"], side / im.shape[-1], side / im.shape[-2]),
                       "labels": t["labels"]} for im, t in zip(images, targets)]
            grids = [(p.shape[2], p.shape[3]) for p in preds]
            assigned = assign_targets(scaled, self.anchors, STRIDES, grids)
            return yolo_losses(preds, assigned, self.anchors, STRIDES, self.adjusted_class_logits)
        side = self.input_size
        preds = self.head(self.backbone(self._batch(images, side)))
        return self.postprocess(preds, [tuple(im.shape[-2:]) for im in images], side)

    def decode(self, preds: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(boxes (N, M, 4) in input pixels, objectness (N, M), class probabilities (N, M, C))`` over all
        ``M`` predictions of the three scales: ``sigmoid(o)`` and ``softmax(z')`` (``z'`` after the margin)."""
        boxes, obj, probs = [], [], []
        for p, anc, stride in zip(preds, self.anchors, STRIDES):
            n, a, h, w, _ = p.shape
            gy, gx = torch.meshgrid(torch.arange(h, device=p.device, dtype=p.dtype),
                                    torch.arange(w, device=p.device, dtype=p.dtype), indexing="ij")
            b = decode_boxes(p[..., :4], gx, gy, anc.to(p)[None, :, None, None, :], float(stride))
            boxes.append(b.reshape(n, -1, 4))
            obj.append(torch.sigmoid(p[..., 4]).reshape(n, -1))
            probs.append(torch.softmax(self.adjusted_class_logits(p[..., 5:]), dim=-1).reshape(n, -1, self.num_classes))
        return torch.cat(boxes, 1), torch.cat(obj, 1), torch.cat(probs, 1)

    def postprocess(self, preds: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]], side: int) -> list[dict]:
        """Per image: scores ``objectness x softmax(z')``, threshold, top-k, class-wise NMS, boxes back in the
        image's pixels (module docstring)."""
        from torchvision.ops import batched_nms, clip_boxes_to_image

        boxes, obj, probs = self.decode(preds)
        out = []
        for i, (h, w) in enumerate(sizes):
            scores = (obj[i][:, None] * probs[i]).flatten()
            keep = torch.nonzero(scores > self.score_thresh).squeeze(1)
            if keep.numel() > self.pre_nms_top_n:
                keep = keep[scores[keep].topk(self.pre_nms_top_n).indices]
            which, cls = torch.div(keep, self.num_classes, rounding_mode="floor"), keep % self.num_classes
            b = clip_boxes_to_image(boxes[i][which], (side, side))
            b = _scale_boxes(b, w / side, h / side)
            s = scores[keep]
            kept = batched_nms(b, s, cls, self.nms_thresh)[: self.detections_per_img]
            out.append({"boxes": b[kept], "labels": cls[kept] + 1, "scores": s[kept]})
        return out


def _scale_boxes(boxes: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float32, device=boxes.device)
    return boxes.reshape(-1, 4).float() * scale


def build_yolov3(backbone: str, num_classes: int, a: dict, norm: str, *, log=print) -> YOLOv3:
    """:func:`iif.detection.build_detector` for the ``yolov3`` family, from its keyword arguments ``a``:
    ``min_size`` is the input side (``max_size`` and the R-CNN keys do not apply), ``box_score_thresh`` and
    ``box_detections_per_img`` the inference thresholds, ``anchor_sizes`` (optional) three levels of three
    sizes (square anchors, pixels of the input, finest level first), ``backbone_weights`` a local file holding
    a state dict of the Darknet (:class:`iif.detection.yolo_net.Darknet`'s keys, e.g. ``model.backbone`` of a
    trained YOLOv3 saved with ``state_dict()``)."""
    from .archs import is_from_scratch

    anchors = None
    if a.get("anchor_sizes") is not None:
        levels = [list(level) if isinstance(level, (list, tuple)) else [level] for level in a["anchor_sizes"]]
        if len(levels) != 3 or any(len(level) != 3 for level in levels):
            raise IIFError(f"YOLOv3 takes anchor_sizes as 3 levels of 3 sizes (finest first, e.g. "
                           f"[[10,16,33],[30,62,59],[116,156,373]]); got {a['anchor_sizes']!r}.")
        anchors = [[(float(s), float(s)) for s in level] for level in levels]
    model = YOLOv3(num_classes, backbone=backbone, input_size=int(a["min_size"]), anchors=anchors, norm=norm,
                   score_thresh=float(a["box_score_thresh"]), detections_per_img=int(a["box_detections_per_img"]))
    weights = a.get("backbone_weights")
    if not is_from_scratch(weights):
        _load_darknet(model.backbone, weights, log=log)
    return model


def _load_darknet(darknet: nn.Module, weights: Any, *, log=print) -> None:
    """Load a local Darknet state-dict file into ``darknet``; every key must match by name and shape."""
    import os
    from pathlib import Path

    from ..runtime.checkpoint import safe_load

    if not os.path.isfile(str(weights)):
        raise IIFError(f"YOLOv3 backbone_weights must be a local file holding a Darknet state dict; {weights!r} is "
                       "not a file (torchvision names and 'pretrained' are ResNet weights): set backbone_weights=null "
                       "or pass such a file.")
    state = safe_load(Path(str(weights)), "cpu")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    state = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in dict(state).items()}
    own = darknet.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise IIFError(f"backbone weights {weights} do not fit the Darknet of this YOLOv3 ({len(bad)} tensors missing "
                       f"or mis-shaped, first {bad[0]}); give the state dict of the same Darknet (arch and norm).")
    darknet.load_state_dict({k: state[k] for k in own})
    log(f"backbone weights {weights}: loaded {len(own)} tensors into the Darknet")
