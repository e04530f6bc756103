"""The paper's Fig. 6 for detectors of ``iif det-train`` (Faster / Mask R-CNN, Cascade Mask R-CNN / HTC, SSD,
YOLOv3): one detection's class scores and Grad-CAMs (and a heatmap: a cascade's RoI scores, SSD's anchor
class scores, YOLOv3's objectness).

Fig. 6 (iii) shows the class scores of the confident region, (iv) Grad-CAM. For a two-stage detector the
region is one detection: the highest-scoring box (or the highest-scoring box of the asked class). Its class
scores are the softmax over the ``C + 1`` logits (background first) that the box head gives the RPN proposal
the detection was regressed from (``box_roi_pool`` -> ``box_head`` -> ``box_predictor``, the margin that
``use_margin`` installed applied as at inference, e.g. ``w * z`` for IIF, Eq. 13), with the background
column dropped, as torchvision's post-processing does: the detection's own score is one of them. Grad-CAM is taken on the last stage of the backbone's
ResNet body (the map every FPN level is built from) for that box's class logit, through captum's
``LayerGradCam``.

Cascade Mask R-CNN and HTC (:mod:`iif.detection.cascade`, :mod:`iif.detection.htc`) score a RoI with all
three stages: stage ``t`` pools the RoI's stage-``t`` box (the proposal, then the boxes stages 1 and 2
regressed), and the RoI's class scores are the mean over the stages of the softmax of each stage's
margin-adjusted ``C + 1`` logits (``w * z_t`` for IIF); its box is the third stage's. Its explanation:

* the RoI: of the RPN's proposals, the one whose third-stage box and mean score of the detection's class
  match the detection (the detector's own computation, :meth:`CascadeRoIHeads.cascade_scores`, redone with
  each stage's boxes kept);
* class scores (Fig. 6 iii): that RoI's mean softmax, background dropped, so the detection's score is the
  predicted class's bar (``ClassMaps.logits`` holds their logarithms: a cascade has no one logit vector);
* the heatmap: at each pixel, the highest score of the predicted class over the RoIs whose third-stage box
  covers it (every RoI, before the score threshold and NMS), the cascade's counterpart of YOLOv3's
  objectness map;
* Grad-CAM (Fig. 6 iv) of that RoI's mean score of the class on the last stage of the backbone's ResNet body,
  the stages' boxes held fixed (RoIAlign passes no gradient to its boxes).

YOLOv3 (:class:`iif.detection.yolo.YOLOv3`, Fig. 6's own detector) has no RoI: every cell of every scale
predicts ``A = 3`` anchors, each with an objectness logit ``o`` and C class logits ``z``. Its explanation:

* the objectness ("confidence") heatmap of Fig. 6 (ii): ``sigmoid(o)``, the max over the anchors, one map per
  scale (strides 8, 16, 32), each upsampled bilinearly to the image (the network sees the image stretched to
  its square input, so the grid covers the whole image); the panel shows their pixel-wise max;
* the best detection (of ``target`` when given): the (cell, anchor, class) of the highest score
  ``sigmoid(o) * softmax(z')_c`` (``z'`` the margin-adjusted logits, ``w * z`` for IIF, Eq. 13-14), the pair
  class-wise NMS always keeps; its class scores (Fig. 6 iii) are ``sigmoid(o) * softmax(z')`` at that cell
  and anchor, so the detection's own score is the predicted class's bar;
* Grad-CAM (Fig. 6 iv) of that class score on the finest-scale input of the head, Darknet's stride-8 map C3,
  which every scale is computed from (a detection at any scale has a gradient there), upsampled to the image.

SSD (torchvision's ``SSD``, the ``ssd300_vgg16`` arch) has no RoI either: each location of each of its
detection feature maps predicts ``A`` anchors, each with ``C + 1`` class logits (background first), to which
the run's margin applies (:func:`iif.detection.use_margin` wraps ``head.classification_head``; ``w * z`` for
IIF). Its explanation:

* the best detection (of ``target`` when given): the (anchor, class) of the highest ``softmax(z')_c``, the
  pair torchvision's post-processing (per-class top-k, class-wise NMS) always keeps; its class scores
  (Fig. 6 iii) are that anchor's softmax without the background column;
* the class-score heatmap of the predicted class: on each detection map, the max over the anchors at each
  location of ``softmax(z')_c``, upsampled bilinearly to the image (SSD sees the image stretched to its
  fixed square input); the panel shows their pixel-wise max (``ClassMaps.level_maps`` holds each map's);
* Grad-CAM (Fig. 6 iv) of that anchor's class score on ``backbone.features``, SSD300's stride-8 VGG16 trunk
  up to conv4_3 (the first detection map, before its L2 normalisation; every later map is computed from
  it), upsampled to the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import IIFError
from .explain import ClassMaps, grad_cam, spatial_layer

__all__ = ["load_detector_run", "explain_detection", "explain_yolo", "explain_ssd"]

PathLike = str | os.PathLike


def load_detector_run(checkpoint: PathLike, device: str = "cpu") -> tuple[torch.nn.Module, list[str], str]:
    """``(model in eval mode, category names, label)`` of an ``iif det-train`` run folder or a checkpoint in one
    (its ``config.yaml`` beside it; the categories and their counts from the run's training json)."""
    from .detection.config import load_detection_config
    from .detection.runs import build_from_config, load_train_set
    from .detection.runs_folder import CONFIG_FILE
    from .runtime import load_checkpoint

    path = Path(checkpoint)
    ckpt_path = path / "last.pt" if path.is_dir() else path
    cfg_path = ckpt_path.parent / CONFIG_FILE
    if not cfg_path.is_file():
        raise IIFError(f"{ckpt_path.parent} has no {CONFIG_FILE}; iif explain rebuilds a detector from the config "
                       "iif det-train saved beside its checkpoint: give the run folder.")
    cfg = load_detection_config(cfg_path)
    freq = load_train_set(cfg).freq  # the categories (names, in the model's order) and the counts of the margin
    names = [str(n) for n in freq.class_names]
    model = build_from_config(cfg, len(names), freq, log=lambda *a, **k: None, load_checkpoint=False)
    state = load_checkpoint(ckpt_path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise IIFError(f"{ckpt_path} does not fit the model of {cfg_path} ({str(exc).splitlines()[0]}); give the "
                       "checkpoint of that run.") from None
    label = f"{cfg.margin.method} {cfg.model.arch} ({ckpt_path.name})"
    return model.to(device).eval(), names, label


class _BoxLogits(torch.nn.Module):
    """Transformed image batch -> the ``(1, C + 1)`` class logits of one box (pooled again from the features)."""

    def __init__(self, model: torch.nn.Module, box: torch.Tensor, image_sizes) -> None:
        super().__init__()
        self.model, self.box, self.image_sizes = model, box, image_sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        roi = self.model.roi_heads
        feats = self.model.backbone(x)
        pooled = roi.box_roi_pool(feats, [self.box[None]], self.image_sizes)
        out = roi.box_predictor(roi.box_head(pooled))
        return (out[0] if isinstance(out, tuple) else out).float()


def _proposal_of(model: torch.nn.Module, images, box_t: torch.Tensor, label: int, score: float) -> torch.Tensor:
    """The RPN proposal a detection came from: torchvision decodes each proposal's class-``label`` box and scores
    it with the softmax of the proposal's logits, so the proposal whose decoded box and score are closest to the
    detection's (in the resized input) is the one; its logits give the detection's score exactly."""
    from torchvision.ops import clip_boxes_to_image

    roi = model.roi_heads
    with torch.no_grad():
        feats = model.backbone(images.tensors)
        proposals = model.rpn(images, feats)[0][0]
        logits, reg = roi.box_predictor(roi.box_head(roi.box_roi_pool(feats, [proposals], images.image_sizes)))
        boxes = roi.box_coder.decode(reg, [proposals]).reshape(len(proposals), -1, 4)[:, label]
        boxes = clip_boxes_to_image(boxes, images.image_sizes[0])
        err = (boxes - box_t).abs().amax(1) + (torch.softmax(logits.float(), -1)[:, label] - score).abs()
    return proposals[int(err.argmin())]


def _pick(det: dict, target: int | None) -> int:
    scores, labels = det["scores"], det["labels"]
    keep = torch.arange(len(scores)) if target is None else torch.nonzero(labels == target + 1).flatten()
    if len(keep) == 0:
        return -1
    return int(keep[int(torch.argmax(scores[keep]))])



def _no_box(image, target: int | None, class_names) -> IIFError:
    what = f"of class {class_names[target]!r} " if target is not None else ""
    return IIFError(f"the detector finds no box {what}in {image}; try another image, or lower "
                    "model.box_score_thresh in the run's config.")


def _best_pair(scores: torch.Tensor, target: int | None, thresh: float, image, class_names) -> tuple[int, int]:
    """``(prediction, class)`` of the highest of a one-stage detector's ``(M, C)`` scores (of column ``target``
    when given), as its post-processing would keep it; the no-box error when it is not above ``thresh``."""
    if target is None:
        which, pred = divmod(int(torch.argmax(scores)), scores.shape[1])
    else:
        which, pred = int(torch.argmax(scores[:, target])), int(target)
    if not float(scores[which, pred]) > thresh:
        raise _no_box(image, target, class_names)
    return which, pred

def explain_detection(model: torch.nn.Module, class_names: list[str], image: PathLike, target: int | None = None,
                      label: str = "detector", checkpoint: str = "") -> ClassMaps:
    """Class scores and Grad-CAMs (predicted and ``target`` class) of the best detection (of ``target`` when
    given) in ``image`` (see the module docstring); ``ClassMaps.box`` is its ``[x0, y0, x1, y1]``."""
    from .detection.yolo import YOLOv3
    from .explain import check_image_channels
    from .predict import load_image

    from .detection.cascade import CascadeRoIHeads

    from torchvision.models.detection.ssd import SSD

    if isinstance(model, YOLOv3):
        return explain_yolo(model, class_names, image, target, label, checkpoint)
    if isinstance(model, SSD):
        return explain_ssd(model, class_names, image, target, label, checkpoint)
    roi = getattr(model, "roi_heads", None)
    cascade = isinstance(roi, CascadeRoIHeads)  # scores with all its stages: its stage 1 alone would mislead
    if not all(hasattr(roi, a) for a in ("box_roi_pool", "box_head", "box_predictor")) or not hasattr(model, "transform"):
        raise IIFError(f"iif explain handles RoI detectors (Faster / Mask R-CNN, Cascade Mask R-CNN, HTC), SSD and "
                       f"YOLOv3 only; {type(model).__name__} is none of them (give an iif det-train run of one).")
    check_image_channels(image, 3)
    img = torch.from_numpy(np.asarray(load_image(image, 3), np.float32) / 255.0).permute(2, 0, 1)
    dev = next(model.parameters()).device
    with torch.no_grad():
        det = model([img.to(dev)])[0]
    i = _pick(det, target)
    if i < 0:
        raise _no_box(image, target, class_names)
    box = det["boxes"][i].detach()
    images, _ = model.transform([img.to(dev)])
    (h0, w0), (h1, w1) = img.shape[-2:], images.image_sizes[0]
    box_t = box * torch.tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0], device=box.device)
    if cascade:
        return _explain_cascade(model, class_names, img, images, det, i, box_t, target, label, checkpoint)
    proposal = _proposal_of(model, images, box_t, int(det["labels"][i]), float(det["scores"][i]))
    head = _BoxLogits(model, proposal, images.image_sizes).eval()
    with torch.no_grad():
        logits = head(images.tensors)[0].cpu()
    scores = torch.softmax(logits, 0)[1:]
    pred = int(det["labels"][i]) - 1
    _, layer, _ = spatial_layer(model.backbone.body, images.tensors)
    cams = grad_cam(head, layer, images.tensors, [c + 1 for c in [pred] + ([target] if target is not None else [])])
    return ClassMaps(checkpoint=str(checkpoint), label=label, class_names=list(class_names), logits=logits[1:].numpy(),
                     scores=scores.numpy(), predicted=pred, target=target, image=img.permute(1, 2, 0).numpy(),
                     layer=_layer_name(model.backbone.body, layer), score_map=None,
                     gradcam={c - 1: _to_image(m, (h1, w1), images.tensors.shape[-2:], (h0, w0)) for c, m in cams.items()},
                     box=[float(v) for v in box.cpu()], proposal=[float(v) for v in proposal.cpu()])


class _CascadeScores(torch.nn.Module):
    """Transformed image batch -> the ``(1, C + 1)`` cascade scores of one RoI: the mean over the three stages
    of the softmax of each stage's (margin-adjusted) logits, stage ``t`` pooling the RoI's stage-``t`` box
    (``chain[t]``, held fixed: the regressions that moved it are not differentiated, as RoIAlign passes no
    gradient to its boxes)."""

    def __init__(self, model: torch.nn.Module, chain: list[torch.Tensor], image_sizes) -> None:
        super().__init__()
        self.model, self.chain, self.image_sizes = model, chain, image_sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        roi = self.model.roi_heads
        feats = self.model.backbone(x)
        probs = [torch.softmax(roi.run_stage(t, feats, [b[None]], self.image_sizes)[0].float(), dim=-1)
                 for t, b in enumerate(self.chain)]
        return sum(probs) / len(probs)


def _cascade_rois(model: torch.nn.Module, images) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(scores (n, C + 1), chain)`` of every RPN proposal, as :meth:`CascadeRoIHeads.cascade_scores` computes
    them: ``chain[t]`` the ``(n, 4)`` boxes stage ``t`` pools (``chain[0]`` the proposals), ``chain[3]`` the
    third stage's regressed boxes, the detections' boxes before NMS."""
    roi = model.roi_heads
    with torch.no_grad():
        feats = model.backbone(images.tensors)
        boxes = [model.rpn(images, feats)[0][0]]
        chain, total = [boxes[0]], None
        for t in range(3):
            logits, deltas = roi.run_stage(t, feats, boxes, images.image_sizes)
            probs = torch.softmax(logits, dim=-1)
            total = probs if total is None else total + probs
            boxes = roi.decode(t, deltas, boxes, images.image_sizes)
            chain.append(boxes[0])
    return total / 3.0, chain


def _box_score_map(boxes: torch.Tensor, scores: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)``: at each pixel the highest of ``scores`` over the ``boxes`` (image pixels) whose area covers
    the pixel's centre; 0 where no box does."""
    heat = np.zeros(tuple(int(v) for v in size), np.float32)
    h, w = heat.shape
    for k in torch.argsort(scores).tolist():  # ascending: a higher score overwrites a lower one
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.ceil(x1 - 0.5)), w)
        r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.ceil(y1 - 0.5)), h)
        if c1 > c0 and r1 > r0:
            heat[r0:r1, c0:c1] = float(scores[k])
    return heat


def _explain_cascade(model, class_names, img, images, det, i, box_t, target, label, checkpoint) -> ClassMaps:
    """A Cascade Mask R-CNN / HTC detection (module docstring): the RoI it came from, its cascade scores,
    the predicted class's box-score map and the Grad-CAMs of its cascade score."""
    (h0, w0), (h1, w1) = img.shape[-2:], images.image_sizes[0]
    lab, score = int(det["labels"][i]), float(det["scores"][i])
    scores, chain = _cascade_rois(model, images)
    err = (chain[3] - box_t).abs().amax(1) + (scores[:, lab].float() - score).abs()
    k = int(err.argmin())
    head = _CascadeScores(model, [b[k] for b in chain[:3]], images.image_sizes).eval()
    with torch.no_grad():
        probs = head(images.tensors)[0].cpu()
    pred = lab - 1
    _, layer, _ = spatial_layer(model.backbone.body, images.tensors)
    cams = grad_cam(head, layer, images.tensors, [c + 1 for c in [pred] + ([target] if target is not None else [])])
    to_image = torch.tensor([w0 / w1, h0 / h1, w0 / w1, h0 / h1], device=chain[3].device)
    return ClassMaps(checkpoint=str(checkpoint), label=label, class_names=list(class_names),
                     logits=torch.log(probs[1:].clamp_min(1e-38)).numpy(), scores=probs[1:].numpy(), predicted=pred,
                     target=target, image=img.permute(1, 2, 0).numpy(), layer=_layer_name(model.backbone.body, layer),
                     score_map=_box_score_map((chain[3] * to_image).cpu(), scores[:, lab].float().cpu(), (h0, w0)),
                     gradcam={c - 1: _to_image(m, (h1, w1), images.tensors.shape[-2:], (h0, w0)) for c, m in cams.items()},
                     box=[float(v) for v in det["boxes"][i].cpu()], proposal=[float(v) for v in chain[0][k].cpu()])


class _CellScores(torch.nn.Module):
    """YOLOv3 input batch -> the ``(1, C)`` scores ``sigmoid(o) * softmax(z')`` of one (scale, anchor, cell)."""

    def __init__(self, model: torch.nn.Module, level: int, anchor: int, row: int, col: int) -> None:
        super().__init__()
        self.model, self.at = model, (level, anchor, row, col)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level, a, r, c = self.at
        p = self.model.head(self.model.backbone(x))[level][:, a, r, c].float()
        return torch.sigmoid(p[:, 4:5]) * torch.softmax(self.model.adjusted_class_logits(p[:, 5:]), dim=-1)


def explain_yolo(model: torch.nn.Module, class_names: list[str], image: PathLike, target: int | None = None,
                 label: str = "YOLOv3", checkpoint: str = "") -> ClassMaps:
    """Objectness heatmaps, class scores and Grad-CAMs of YOLOv3's best detection (of ``target`` when given)
    in ``image`` (module docstring). ``ClassMaps.objectness`` maps each stride to its ``(H, W)`` map,
    ``ClassMaps.cell`` names the detection's scale, anchor and cell."""
    from torchvision.ops import clip_boxes_to_image

    from .detection.yolo import STRIDES
    from .explain import check_image_channels
    from .predict import load_image

    check_image_channels(image, 3)
    img = torch.from_numpy(np.asarray(load_image(image, 3), np.float32) / 255.0).permute(2, 0, 1)
    dev = next(model.parameters()).device
    side = int(model.input_size)
    (h0, w0) = img.shape[-2:]
    x = model._batch([img.to(dev)], side)
    with torch.no_grad():
        preds = model.head(model.backbone(x))
        boxes, obj, probs = model.decode(preds)
    scores = (obj[0][:, None] * probs[0]).float().cpu()  # (M, C): every (prediction, class) pair's score
    which, pred = _best_pair(scores, target, model.score_thresh, image, class_names)
    level, rest = 0, which
    while rest >= preds[level][0, ..., 0].numel():
        rest -= preds[level][0, ..., 0].numel()
        level += 1
    a, r, c = (int(v) for v in np.unravel_index(rest, tuple(preds[level].shape[1:4])))
    box = clip_boxes_to_image(boxes[0][which][None].float(), (side, side))[0].cpu()
    box = box * torch.tensor([w0 / side, h0 / side, w0 / side, h0 / side])
    objectness = {int(s): _resize(torch.sigmoid(p[0, ..., 4]).amax(0), (h0, w0)) for s, p in zip(STRIDES, preds)}
    with torch.no_grad():
        logits = model.adjusted_class_logits(preds[level][0, a, r, c, 5:][None].float())[0].cpu()
    head = _CellScores(model, level, a, r, c).eval()
    cams = grad_cam(head, model.backbone.stages[2], x, [pred] + ([target] if target is not None else []))
    return ClassMaps(checkpoint=str(checkpoint), label=label, class_names=list(class_names), logits=logits.numpy(),
                     scores=scores[which].numpy(), predicted=pred, target=target, image=img.permute(1, 2, 0).numpy(),
                     layer="backbone.stages.2 (C3, stride 8)", score_map=np.maximum.reduce(list(objectness.values())),
                     gradcam={k: _resize(m, (h0, w0)) for k, m in cams.items()},
                     box=[float(v) for v in box], objectness=objectness,
                     cell={"stride": int(STRIDES[level]), "anchor": a, "row": r, "col": c})


class _AnchorScores(torch.nn.Module):
    """SSD input batch -> the ``(1, C + 1)`` softmax of the (margin-adjusted) class logits of one anchor."""

    def __init__(self, model: torch.nn.Module, anchor: int) -> None:
        super().__init__()
        self.model, self.anchor = model, anchor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = list(self.model.backbone(x).values())
        return torch.softmax(self.model.head.classification_head(feats)[:, self.anchor].float(), dim=-1)


def _ssd_layer(model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    """The map SSD's Grad-CAM is taken on: ``backbone.features`` (VGG16 up to conv4_3, stride 8, SSD300's first
    detection map before its L2 normalisation, every later map computed from it) when the backbone has it,
    else the backbone's last module whose output is the first detection map."""
    features = getattr(model.backbone, "features", None)
    if isinstance(features, torch.nn.Module):
        return "backbone.features", features
    raise IIFError(f"iif explain takes SSD's Grad-CAM on backbone.features (torchvision's SSD300 VGG16); "
                   f"{type(model.backbone).__name__} has none: build the detector with model.arch=ssd300_vgg16.")


def explain_ssd(model: torch.nn.Module, class_names: list[str], image: PathLike, target: int | None = None,
                label: str = "SSD", checkpoint: str = "") -> ClassMaps:
    """Class-score heatmaps, class scores and Grad-CAMs of SSD's best detection (of ``target`` when given) in
    ``image`` (module docstring). ``ClassMaps.level_maps`` maps each detection feature map (``"HxW"``) to its
    heatmap; ``ClassMaps.cell`` names the detection's map, row, column and anchor."""
    from torchvision.ops import clip_boxes_to_image

    from .explain import check_image_channels
    from .predict import load_image

    check_image_channels(image, 3)
    img = torch.from_numpy(np.asarray(load_image(image, 3), np.float32) / 255.0).permute(2, 0, 1)
    dev = next(model.parameters()).device
    (h0, w0) = img.shape[-2:]
    images, _ = model.transform([img.to(dev)])
    with torch.no_grad():
        feats = list(model.backbone(images.tensors).values())
        out = model.head(feats)
        anchors = model.anchor_generator(images, feats)[0]
        probs = torch.softmax(out["cls_logits"][0].float(), dim=-1)  # (anchors, C + 1): the adjusted logits' softmax
        boxes = model.box_coder.decode_single(out["bbox_regression"][0], anchors)
    fg = probs[:, 1:].cpu()
    which, pred = _best_pair(fg, target, model.score_thresh, image, class_names)
    (h1, w1) = images.image_sizes[0]
    box = clip_boxes_to_image(boxes[which][None].float(), (h1, w1))[0].cpu()
    box = box * torch.tensor([w0 / w1, h0 / h1, w0 / w1, h0 / h1])
    per_loc = model.anchor_generator.num_anchors_per_location()
    level_maps, start, cell = {}, 0, None
    for f, a in zip(feats, per_loc):
        h, w = f.shape[-2:]
        block = fg[start:start + h * w * a, pred].reshape(h, w, a)  # torchvision's order: row, column, anchor
        level_maps[f"{h}x{w}"] = _resize(block.amax(-1), (h0, w0))  # SSD's input is the whole image, stretched
        if start <= which < start + h * w * a:
            r, c, k = (int(v) for v in np.unravel_index(which - start, (h, w, a)))
            cell = {"map": f"{h}x{w}", "row": r, "col": c, "anchor": k}
        start += h * w * a
    with torch.no_grad():
        logits = out["cls_logits"][0, which].float().cpu()
    name, layer = _ssd_layer(model)
    head = _AnchorScores(model, which).eval()
    cams = grad_cam(head, layer, images.tensors, [c + 1 for c in [pred] + ([target] if target is not None else [])])
    return ClassMaps(checkpoint=str(checkpoint), label=label, class_names=list(class_names), logits=logits[1:].numpy(),
                     scores=fg[which].numpy(), predicted=pred, target=target, image=img.permute(1, 2, 0).numpy(),
                     layer=name, score_map=np.maximum.reduce(list(level_maps.values())),
                     gradcam={c - 1: _resize(m, (h0, w0)) for c, m in cams.items()},
                     box=[float(v) for v in box], cell=cell, level_maps=level_maps)


def _resize(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    import torch.nn.functional as F

    return F.interpolate(m[None, None].float().cpu(), size=tuple(int(v) for v in size), mode="bilinear",
                         align_corners=False)[0, 0].numpy()


def _layer_name(root: torch.nn.Module, layer: torch.nn.Module) -> str:
    return next((f"backbone.body.{n}" for n, m in root.named_modules() if m is layer), "backbone.body")


def _to_image(cam: torch.Tensor, valid: tuple[int, int], padded, original: tuple[int, int]) -> np.ndarray:
    """A map over the padded, resized batch -> the original image's pixels (crop the padding, resize back)."""
    import torch.nn.functional as F

    full = F.interpolate(cam[None, None].float().cpu(), size=tuple(padded), mode="bilinear", align_corners=False)
    crop = full[..., :int(valid[0]), :int(valid[1])]
    return F.interpolate(crop, size=tuple(original), mode="bilinear", align_corners=False)[0, 0].numpy()
