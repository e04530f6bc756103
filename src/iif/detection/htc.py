"""Hybrid Task Cascade (Chen et al., 'Hybrid Task Cascade for Instance Segmentation', CVPR 2019) on the Cascade
Mask R-CNN of :mod:`iif.detection.cascade` (paper Table XIII's HTC rows).

:func:`to_htc` turns the cascade that :func:`iif.detection.cascade.to_cascade` builds into an HTC by replacing
its ``roi_heads`` with :class:`HTCRoIHeads`, a :class:`~iif.detection.cascade.CascadeRoIHeads` (the same three
box stages: IoU 0.5 / 0.6 / 0.7, box coder weights, stage loss weights ``lambda`` = 1, 0.5, 0.25, the mean of
the stages' softmaxes at test time, the margin on every stage's classifier) with one mask head per stage and
the two changes of the HTC paper's Sec. 3.1:

* **Interleaved execution** (HTC Eq. 3): stage ``t``'s mask head trains on stage ``t``'s *refined* boxes, the
  RoIs its box branch sampled moved by its regression (gts dropped), relabelled at the stage's IoU threshold
  ``u_t`` and resampled with the gts added (what the authors' mmdetection ``HTCRoIHead`` does), not on the
  RoIs the box branch saw. The same refined boxes are stage ``t + 1``'s proposals, as in the cascade.
* **Mask information flow** (HTC Eq. 4): ``m_t = M_t(F(x_t, m_{t-1}^-))`` with
  ``F(x_t, m_{t-1}^-) = x_t + G_t(m_{t-1}^-)``: stage ``t``'s mask head gets the RoI features ``x_t`` plus
  ``G_t`` (a 1x1 convolution followed by a ReLU, mmdetection's ``conv_res``; Eq. 4 writes only the convolution)
  of the previous stage's mask-head features (after its convolutions, before the upsampling) on the **same**
  RoIs, which in turn come from the stages before it: stage 3's mask runs heads 1, 2, 3 in a chain. The chain is
  not detached, so stage 3's mask loss trains heads 1 and 2 too.

The loss adds ``lambda_t * L_mask^t`` per stage (HTC Eq. 2, the box stages' weights), ``loss_mask_s1/2/3``. At
test time the boxes and scores are the cascade's; the masks are stage 3's, ``M_3`` on the final detections
with the flow through ``M_1`` and ``M_2`` (mmdetection averages the three stages' mask probabilities instead;
noted in docs/detection.md).

Not built: HTC's semantic segmentation branch (Sec. 3.3, its stuff-segmentation features fused into every
RoI). It needs pixel-level semantic labels, which this project's data (COCO-style instance annotations, the
offline benchmark, LVIS) does not carry; an HTC here is the paper's "HTC without semantic branch".

Module names: stage 1 keeps torchvision's ``mask_head`` / ``mask_predictor`` (``mask_roi_pool`` is shared);
stages 2, 3 add ``mask_head_2/3``, ``mask_predictor_2/3`` and the flow convolutions ``mask_flow_2/3``.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..errors import IIFError
from .cascade import CascadeRoIHeads, _stage_loss

__all__ = ["HTCRoIHeads", "MaskFlow", "to_htc"]


class MaskFlow(nn.Module):
    """HTC's ``G_t`` (Eq. 4): a 1x1 convolution from the previous mask head's feature width to the RoI features'
    width, then a ReLU (mmdetection's ``conv_res``); Kaiming-normal weights (fan out), zero bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class HTCRoIHeads(CascadeRoIHeads):
    """:class:`~iif.detection.cascade.CascadeRoIHeads` with HTC's per-stage mask heads, interleaved training and
    mask information flow (module docstring). ``mask_heads``, ``mask_predictors``: three each (stage 1 first);
    ``mask_flows``: two (stages 2 and 3); all empty for a box-only model."""

    def __init__(self, box_roi_pool: nn.Module, box_heads: list[nn.Module], box_predictors: list[nn.Module], *,
                 mask_heads: list[nn.Module] = (), mask_predictors: list[nn.Module] = (),
                 mask_flows: list[nn.Module] = (), mask_roi_pool: Optional[nn.Module] = None, **kw) -> None:
        masks = mask_roi_pool is not None
        if masks and not (len(mask_heads) == len(mask_predictors) == 3 and len(mask_flows) == 2):
            raise IIFError("an HTC has three mask stages: give three mask heads, three mask predictors and two "
                           "flow convolutions (or no mask branch at all).")
        super().__init__(box_roi_pool, box_heads, box_predictors, mask_roi_pool=mask_roi_pool,
                         mask_head=mask_heads[0] if masks else None,
                         mask_predictor=mask_predictors[0] if masks else None, **kw)
        if masks:
            for t in (1, 2):
                setattr(self, f"mask_head_{t + 1}", mask_heads[t])
                setattr(self, f"mask_predictor_{t + 1}", mask_predictors[t])
                setattr(self, f"mask_flow_{t + 1}", mask_flows[t - 1])

    def mask_stage(self, t: int) -> tuple[nn.Module, nn.Module, Optional[nn.Module]]:
        """``(mask_head, mask_predictor, flow)`` of stage ``t`` (0, 1, 2); stage 0 has no flow (None)."""
        if t == 0:
            return self.mask_head, self.mask_predictor, None
        return (getattr(self, f"mask_head_{t + 1}"), getattr(self, f"mask_predictor_{t + 1}"),
                getattr(self, f"mask_flow_{t + 1}"))

    def mask_logits(self, t: int, features, rois: list[torch.Tensor], image_shapes) -> torch.Tensor:
        """Stage ``t``'s mask logits on ``rois`` (HTC Eq. 4): the RoI features ``x`` go through mask heads 1..t
        in a chain, head ``s`` fed ``x + G_s(f_{s-1})`` (``f_{s-1}`` the previous head's output on the same
        RoIs; head 1 fed ``x``); stage ``t``'s predictor turns ``f_t`` into ``(n, C + 1, 2S, 2S)`` logits."""
        x = self.mask_roi_pool(features, rois, image_shapes)
        feat: Optional[torch.Tensor] = None
        for s in range(t + 1):
            head, _, flow = self.mask_stage(s)
            feat = head(x if feat is None else x + flow(feat))
        return self.mask_stage(t)[1](feat)

    # --------------------------------------------------------------------------------------- training
    def _train_losses(self, features, proposals, image_shapes, targets) -> dict[str, torch.Tensor]:
        """Per stage ``t``: ``lambda_t (L_cls + L_loc)`` on its sampled RoIs (the cascade's), then its boxes
        refined (gts dropped), and with masks ``lambda_t * L_mask`` on those refined boxes relabelled and
        resampled at ``u_t`` (interleaved execution, HTC Eq. 2-3); the refined boxes feed stage ``t + 1``."""
        if self.has_mask() and any("masks" not in t for t in targets):
            raise IIFError("an HTC detector trains on targets with 'masks'; load the data with masks, or build it "
                           "with masks=False.")
        losses: dict[str, torch.Tensor] = {}
        boxes = [p.detach() for p in proposals]
        for t in range(3):
            rois, labels, reg_targets, _, is_gt = self.sample(t, boxes, targets)
            logits, deltas = self.run_stage(t, features, rois, image_shapes, labels)
            cls_loss, box_loss = _stage_loss(logits, deltas, torch.cat(labels), torch.cat(reg_targets))
            weight = self.stage_loss_weights[t]
            losses[f"loss_classifier_s{t + 1}"] = weight * cls_loss
            losses[f"loss_box_reg_s{t + 1}"] = weight * box_loss
            moved = self.decode(t, deltas.detach(), rois, image_shapes)
            boxes = [b[~g] for b, g in zip(moved, is_gt)]  # the next sampler adds the gt boxes again
            if self.has_mask():
                losses[f"loss_mask_s{t + 1}"] = weight * self._stage_mask_loss(t, features, boxes, image_shapes,
                                                                               targets)
        return losses

    def _stage_mask_loss(self, t: int, features, refined: list[torch.Tensor], image_shapes,
                         targets) -> torch.Tensor:
        """Stage ``t``'s mask loss (torchvision's per-pixel binary cross-entropy on the gt class's channel) on
        the foreground of ``refined`` relabelled and resampled at the stage's IoU threshold."""
        from torchvision.models.detection.roi_heads import maskrcnn_loss

        rois, labels, _, matched, _ = self.sample(t, refined, targets)
        pos = [torch.where(lab > 0)[0] for lab in labels]
        fg = [r[p] for r, p in zip(rois, pos)]
        logits = self.mask_logits(t, features, fg, image_shapes)
        return maskrcnn_loss(logits, fg, [tg["masks"] for tg in targets], [tg["labels"] for tg in targets],
                             [m[p] for m, p in zip(matched, pos)])

    # -------------------------------------------------------------------------------------- inference
    def _detect(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        """The cascade's detections (mean of the stages' softmaxes, stage 3's boxes); masks from stage 3's
        predictor with the flow through mask heads 1 and 2, on the detections."""
        from torchvision.models.detection.roi_heads import maskrcnn_inference

        scores, boxes = self.cascade_scores(features, proposals, image_shapes)
        result = [self._postprocess(s, b, shape) for s, b, shape in zip(scores, boxes, image_shapes)]
        if self.has_mask():
            logits = self.mask_logits(2, features, [r["boxes"] for r in result], image_shapes)
            for r, m in zip(result, maskrcnn_inference(logits, [r["labels"] for r in result])):
                r["masks"] = m
        return result


def _fresh(module: nn.Module) -> nn.Module:
    """A copy of a mask head or predictor with new weights: torchvision's mask-branch initialisation
    (Kaiming normal, fan out, for every (transposed) convolution; zero biases), drawn from the global RNG."""
    new = copy.deepcopy(module)
    for m in new.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return new


def _width(module: nn.Module, first: bool) -> int:
    """Input channels of the first (``first``) or output channels of the last convolution in ``module``."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise IIFError(f"cannot build HTC's mask flow: {type(module).__name__} has no convolution to size it by.")
    return convs[0].in_channels if first else convs[-1].out_channels


def to_htc(model: nn.Module) -> nn.Module:
    """Replace a cascade's ``roi_heads`` (:func:`iif.detection.cascade.to_cascade`) by :class:`HTCRoIHeads`, in
    place; returns ``model``. Its box stages, RoI pools, sampler and thresholds are kept; its mask head and
    predictor are stage 1's, stages 2 and 3 get fresh copies and a :class:`MaskFlow` each (from the mask head's
    output width to its input width). A model without a mask branch stays a box-only cascade (HTC without
    masks is Cascade R-CNN)."""
    old = model.roi_heads
    if not isinstance(old, CascadeRoIHeads):
        raise IIFError(f"to_htc needs a cascade (iif.detection.cascade.to_cascade); got {type(old).__name__}.")
    mask: dict = {}
    if old.has_mask():
        head, pred = old.mask_head, old.mask_predictor
        flows = [MaskFlow(_width(head, first=False), _width(head, first=True)) for _ in range(2)]
        mask = dict(mask_roi_pool=old.mask_roi_pool, mask_heads=[head, _fresh(head), _fresh(head)],
                    mask_predictors=[pred, _fresh(pred), _fresh(pred)], mask_flows=flows)
    model.roi_heads = HTCRoIHeads(
        old.box_roi_pool, [old.stage(t)[0] for t in range(3)], [old.stage(t)[1] for t in range(3)],
        batch_size_per_image=old.fg_bg_sampler.batch_size_per_image,
        positive_fraction=old.fg_bg_sampler.positive_fraction, score_thresh=old.score_thresh,
        nms_thresh=old.nms_thresh, detections_per_img=old.detections_per_img, stage_ious=old.stage_ious,
        stage_loss_weights=old.stage_loss_weights, stage_box_weights=[c.weights for c in old.stage_coders], **mask)
    return model
