"""Cascade Mask R-CNN (Cai & Vasconcelos, CVPR 2018 / TPAMI 2019) from torchvision's Mask R-CNN parts.

:func:`to_cascade` turns a torchvision ``MaskRCNN`` / ``FasterRCNN`` (as :func:`iif.detection.build_detector`
builds it) into a cascade by replacing its ``roi_heads`` with :class:`CascadeRoIHeads`: the same backbone, RPN,
box RoI pool and mask branch, and three box stages. Stage ``t`` (t = 1, 2, 3):

* trains on RoIs labelled with its own IoU threshold ``u_t`` = 0.5 / 0.6 / 0.7 (foreground iff IoU >= u_t with
  a ground-truth box, the rest background; 512 RoIs per image, 25% foreground, ground truths added as
  proposals), the sampling of the cascade paper's Sec. 4;
* regresses boxes class-agnostically (one ``(dx, dy, dw, dh)`` per RoI, as the published configs'
  ``reg_class_agnostic=True``), encoded with its own weights (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)
  (the inverse of the published target standard deviations 0.1/0.2, 0.05/0.1, 0.033/0.067): the deltas
  shrink from stage to stage, so each stage's targets are scaled up to a comparable size;
* takes as proposals the previous stage's sampled RoIs moved by that stage's regression (detached; the
  ground-truth boxes added by the previous sampler dropped), which is what "each stage refines the boxes of the
  previous one" means (paper Eq. 5-6: ``b^t = f_t(x, b^{t-1})``);
* contributes ``lambda_t * (L_cls + L_loc)`` to the loss with the published stage weights ``lambda`` = 1, 0.5,
  0.25 (paper Eq. 8; ``L_cls`` cross-entropy, ``L_loc`` torchvision's smooth L1 with beta 1/9 over the
  positives divided by the sampled RoIs).

At test time the proposals go through the three stages in turn, each on the boxes the previous one produced;
a RoI's class scores are the mean of the three stages' softmaxes (the paper's "ensemble" of classifiers,
Sec. 4.2 of the TPAMI version: every stage classifies the final stage's inputs' ancestors, and averaging their
probabilities helps), and its box is the third stage's regression. Per-class score threshold, NMS and top-k
follow torchvision's ``postprocess_detections``. The mask head (one, torchvision's) trains on the third stage's
foreground RoIs and runs on the final detections. mmdetection 2.x differs in two places: it averages the
stages' logits (then one softmax) and has one mask head per stage, averaged at test time; both are noted in
docs/detection.md.

Margins: every stage's box predictor is a ``MarginBoxPredictor`` after :func:`iif.detection.use_margin` (the
attribute names of the stages are :data:`CascadeRoIHeads.extra_stage_predictors`), so IIF's ``w * z`` (paper
Eq. 13-15) reaches each stage's cross-entropy and each stage's inference softmax, as ``when`` picks.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError
from .margins_predictor import _SeesawOffset

__all__ = ["CascadeRoIHeads", "CascadeBoxPredictor", "to_cascade", "STAGE_IOUS", "STAGE_LOSS_WEIGHTS",
           "STAGE_BOX_WEIGHTS"]

#: The IoU threshold that makes a RoI foreground, per stage (Cai & Vasconcelos, Sec. 4).
STAGE_IOUS = (0.5, 0.6, 0.7)
#: The stages' loss weights (the published cascade configs: 1, 0.5, 0.25).
STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)
#: The box coder weights per stage, 1 / the published target standard deviations.
STAGE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


class CascadeBoxPredictor(nn.Module):
    """A stage's predictor: ``cls_score`` (``C + 1`` logits, background first, as torchvision's
    ``FastRCNNPredictor``) and a class-agnostic ``bbox_pred`` (4 deltas per RoI). Initialised as the published
    heads: normal weights with std 0.01 (classifier) and 0.001 (regressor), zero biases."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        for layer, std in ((self.cls_score, 0.01), (self.bbox_pred, 0.001)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


def _roi_heads_base():
    from torchvision.models.detection.roi_heads import RoIHeads

    return RoIHeads


class CascadeRoIHeads(_roi_heads_base()):
    """torchvision's ``RoIHeads`` with three box stages (module docstring). Stage 1 keeps torchvision's names
    (``box_head``, ``box_predictor``; what :func:`iif.detection.use_margin` and the reports read), stages 2 and 3
    are ``box_head_2``/``box_predictor_2`` and ``box_head_3``/``box_predictor_3``."""

    #: The attributes holding the box predictors of stages 2.. (use_margin switches them like ``box_predictor``).
    extra_stage_predictors = ("box_predictor_2", "box_predictor_3")

    def __init__(self, box_roi_pool: nn.Module, box_heads: list[nn.Module], box_predictors: list[nn.Module], *,
                 batch_size_per_image: int, positive_fraction: float, score_thresh: float, nms_thresh: float,
                 detections_per_img: int, mask_roi_pool: Optional[nn.Module] = None,
                 mask_head: Optional[nn.Module] = None, mask_predictor: Optional[nn.Module] = None,
                 stage_ious=STAGE_IOUS, stage_loss_weights=STAGE_LOSS_WEIGHTS,
                 stage_box_weights=STAGE_BOX_WEIGHTS) -> None:
        from torchvision.models.detection._utils import BoxCoder, Matcher

        n = len(stage_ious)
        if not (n == 3 == len(box_heads) == len(box_predictors) == len(stage_loss_weights) == len(stage_box_weights)):
            raise IIFError("a cascade has three stages here: give three box heads, predictors, IoU thresholds, loss "
                           "weights and box weights.")
        super().__init__(box_roi_pool, box_heads[0], box_predictors[0], stage_ious[0], stage_ious[0],
                         batch_size_per_image, positive_fraction, stage_box_weights[0], score_thresh, nms_thresh,
                         detections_per_img, mask_roi_pool=mask_roi_pool, mask_head=mask_head,
                         mask_predictor=mask_predictor)
        self.box_head_2, self.box_predictor_2 = box_heads[1], box_predictors[1]
        self.box_head_3, self.box_predictor_3 = box_heads[2], box_predictors[2]
        self.stage_ious = tuple(float(u) for u in stage_ious)
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        # IoU >= u_t: foreground, else background (no ignored band, no low-quality matches).
        self.stage_matchers = [Matcher(u, u, allow_low_quality_matches=False) for u in self.stage_ious]
        self.stage_coders = [BoxCoder(tuple(float(v) for v in w)) for w in stage_box_weights]

    def stage(self, t: int) -> tuple[nn.Module, nn.Module]:
        """``(box_head, box_predictor)`` of stage ``t`` (0, 1, 2)."""
        if t == 0:
            return self.box_head, self.box_predictor
        return getattr(self, f"box_head_{t + 1}"), getattr(self, f"box_predictor_{t + 1}")

    # ------------------------------------------------------------------------------------------ stages
    def run_stage(self, t: int, features, boxes: list[torch.Tensor], image_shapes,
                  labels: Optional[list[torch.Tensor]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``t``'s ``(class_logits, box_deltas)`` for the RoIs ``boxes`` (one tensor per image); the
        logits are what the stage's predictor returns (adjusted when a margin acts). ``labels`` (training) are
        handed to a Seesaw margin, which needs each RoI's class."""
        head, predictor = self.stage(t)
        x = head(self.box_roi_pool(features, boxes, image_shapes))
        adjuster = getattr(predictor, "adjuster", None)
        if labels is not None and isinstance(adjuster, _SeesawOffset):
            adjuster.labels = torch.cat(labels)
        return predictor(x)

    def decode(self, t: int, deltas: torch.Tensor, boxes: list[torch.Tensor], image_shapes) -> list[torch.Tensor]:
        """Boxes moved by stage ``t``'s class-agnostic deltas (its coder weights), clipped to each image."""
        from torchvision.ops import boxes as box_ops

        moved = self.stage_coders[t].decode_single(deltas, torch.cat(boxes))
        out = []
        for b, shape in zip(moved.split([len(b) for b in boxes]), image_shapes):
            out.append(box_ops.clip_boxes_to_image(b, shape))
        return out

    def sample(self, t: int, proposals: list[torch.Tensor], targets: list[dict]):
        """Stage ``t``'s training RoIs: ``(boxes, labels, regression_targets, matched_gt, is_gt)`` per image.
        Ground-truth boxes are appended to the proposals; a RoI is foreground (its gt's label) iff its IoU with
        some gt is >= ``stage_ious[t]``; ``fg_bg_sampler`` draws ``batch_size_per_image`` RoIs (25% foreground
        at most); regression targets are the stage's encoding of the matched gt box."""
        from torchvision.ops import boxes as box_ops

        out = []
        for props, target in zip(proposals, targets):
            gt, gt_labels = target["boxes"].to(props.dtype), target["labels"]
            rois = torch.cat([props, gt])
            is_gt = torch.zeros(len(rois), dtype=torch.bool, device=rois.device)
            is_gt[len(props):] = True
            if gt.numel() == 0:
                matched = torch.full((len(rois),), -1, dtype=torch.int64, device=rois.device)
            else:
                matched = self.stage_matchers[t](box_ops.box_iou(gt, rois))
            labels = torch.where(matched >= 0, gt_labels[matched.clamp(min=0)] if gt.numel() else matched,
                                 torch.zeros_like(matched))
            pos, neg = self.fg_bg_sampler([labels])
            keep = torch.where(pos[0] | neg[0])[0]
            m = matched[keep].clamp(min=0)
            gt_boxes = gt[m] if gt.numel() else torch.zeros((len(keep), 4), dtype=rois.dtype, device=rois.device)
            targets_t = self.stage_coders[t].encode_single(gt_boxes, rois[keep])
            out.append((rois[keep], labels[keep], targets_t, m, is_gt[keep]))
        return tuple(list(x) for x in zip(*out))

    # --------------------------------------------------------------------------------------- forward
    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            if targets is None:
                raise IIFError("a cascade detector in training mode needs targets; call model(images, targets), "
                               "or model.eval() for inference.")
            return [], self._train_losses(features, proposals, image_shapes, targets)
        return self._detect(features, proposals, image_shapes), {}

    def _train_losses(self, features, proposals, image_shapes, targets) -> dict[str, torch.Tensor]:
        """``lambda_t * (L_cls^t + L_loc^t)`` per stage (paper Eq. 8) and the mask loss on stage 3's foreground."""
        losses: dict[str, torch.Tensor] = {}
        boxes = [p.detach() for p in proposals]
        for t in range(3):
            rois, labels, reg_targets, matched, is_gt = self.sample(t, boxes, targets)
            logits, deltas = self.run_stage(t, features, rois, image_shapes, labels)
            cls_loss, box_loss = _stage_loss(logits, deltas, torch.cat(labels), torch.cat(reg_targets))
            weight = self.stage_loss_weights[t]
            losses[f"loss_classifier_s{t + 1}"] = weight * cls_loss
            losses[f"loss_box_reg_s{t + 1}"] = weight * box_loss
            if t < 2:
                moved = self.decode(t, deltas.detach(), rois, image_shapes)
                boxes = [b[~g] for b, g in zip(moved, is_gt)]  # the next sampler adds the gt boxes again
        if self.has_mask():
            losses["loss_mask"] = self._mask_loss(features, rois, labels, matched, image_shapes, targets)
        return losses

    def _mask_loss(self, features, rois, labels, matched, image_shapes, targets) -> torch.Tensor:
        from torchvision.models.detection.roi_heads import maskrcnn_loss

        if any("masks" not in t for t in targets):
            raise IIFError("a cascade mask detector trains on targets with 'masks'; load the data with masks, or "
                           "build the detector with masks=False.")
        pos = [torch.where(lab > 0)[0] for lab in labels]
        x = self.mask_head(self.mask_roi_pool(features, [r[p] for r, p in zip(rois, pos)], image_shapes))
        logits = self.mask_predictor(x)
        return maskrcnn_loss(logits, [r[p] for r, p in zip(rois, pos)], [t["masks"] for t in targets],
                             [t["labels"] for t in targets], [m[p] for m, p in zip(matched, pos)])

    def cascade_scores(self, features, proposals, image_shapes):
        """``(scores, boxes)`` per image before NMS: ``scores`` the mean over the three stages of the softmax of
        each stage's (margin-adjusted) logits, ``(n, C + 1)``; ``boxes`` the third stage's regressed boxes."""
        boxes = list(proposals)
        total: Optional[torch.Tensor] = None
        for t in range(3):
            logits, deltas = self.run_stage(t, features, boxes, image_shapes)
            probs = F.softmax(logits, dim=-1)
            total = probs if total is None else total + probs
            boxes = self.decode(t, deltas, boxes, image_shapes)
        sizes = [len(b) for b in boxes]
        return list((total / 3.0).split(sizes)), boxes

    def _detect(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        from torchvision.models.detection.roi_heads import maskrcnn_inference

        scores, boxes = self.cascade_scores(features, proposals, image_shapes)
        result = [self._postprocess(s, b, shape) for s, b, shape in zip(scores, boxes, image_shapes)]
        if self.has_mask():
            x = self.mask_head(self.mask_roi_pool(features, [r["boxes"] for r in result], image_shapes))
            masks = maskrcnn_inference(self.mask_predictor(x), [r["labels"] for r in result])
            for r, m in zip(result, masks):
                r["masks"] = m
        return result

    def _postprocess(self, scores: torch.Tensor, boxes: torch.Tensor, shape) -> dict[str, torch.Tensor]:
        """torchvision's ``postprocess_detections`` for one image with one box per RoI: every foreground class
        of every RoI a candidate, scores > ``score_thresh``, boxes wider and taller than 1e-2, per-class NMS at
        ``nms_thresh``, the ``detections_per_img`` best."""
        from torchvision.ops import boxes as box_ops

        n, c = scores.shape
        labels = torch.arange(1, c, device=scores.device).expand(n, c - 1).reshape(-1)
        s = scores[:, 1:].reshape(-1)
        b = boxes[:, None, :].expand(n, c - 1, 4).reshape(-1, 4)
        keep = torch.where(s > self.score_thresh)[0]
        b, s, labels = b[keep], s[keep], labels[keep]
        keep = box_ops.remove_small_boxes(b, min_size=1e-2)
        b, s, labels = b[keep], s[keep], labels[keep]
        keep = box_ops.batched_nms(b, s, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": b[keep], "scores": s[keep], "labels": labels[keep]}


def _stage_loss(logits: torch.Tensor, deltas: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stage's cross-entropy on its (adjusted) logits and smooth L1 (beta 1/9, torchvision's) on the
    foreground RoIs' class-agnostic deltas, summed and divided by the number of sampled RoIs."""
    cls_loss = F.cross_entropy(logits, labels)
    pos = torch.where(labels > 0)[0]
    box_loss = F.smooth_l1_loss(deltas[pos], targets[pos], beta=1 / 9, reduction="sum") / max(labels.numel(), 1)
    return cls_loss, box_loss


def to_cascade(model: nn.Module, num_classes: int, representation_size: int) -> nn.Module:
    """Replace a torchvision ``FasterRCNN`` / ``MaskRCNN``'s ``roi_heads`` by :class:`CascadeRoIHeads` (in
    place; returns ``model``): its box RoI pool, stage-1 box head, sampler settings, thresholds and mask branch
    are kept; stages 2 and 3 get new ``TwoMLPHead`` box heads of the same size; every stage gets a
    :class:`CascadeBoxPredictor` for ``num_classes`` foreground classes."""
    from torchvision.models.detection.faster_rcnn import TwoMLPHead

    old = model.roi_heads
    in_features = old.box_head.fc6.in_features
    heads = [old.box_head] + [TwoMLPHead(in_features, representation_size) for _ in range(2)]
    predictors = [CascadeBoxPredictor(representation_size, num_classes + 1) for _ in range(3)]
    model.roi_heads = CascadeRoIHeads(
        old.box_roi_pool, heads, predictors, batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
        positive_fraction=old.fg_bg_sampler.positive_fraction, score_thresh=old.score_thresh,
        nms_thresh=old.nms_thresh, detections_per_img=old.detections_per_img, mask_roi_pool=old.mask_roi_pool,
        mask_head=old.mask_head, mask_predictor=old.mask_predictor)
    return model
