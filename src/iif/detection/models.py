"""torchvision detectors built without downloads, for from-scratch training or a user's own checkpoint.

:func:`build_detector` builds Mask R-CNN / Faster R-CNN on a ResNet-FPN backbone, or SSD300-VGG16, with
``weights=None`` and ``weights_backbone=None`` (nothing is fetched). ``num_classes`` is the number of
foreground categories C; torchvision puts the background at logit 0, so the box classifier has C+1 outputs.

Normalisation. torchvision's ``resnet_fpn_backbone`` defaults to ``FrozenBatchNorm2d``, which is right for
fine-tuning ImageNet weights but is an identity with random init: a from-scratch backbone would train with no
normalisation at all. Here ``norm="bn"`` (trainable ``BatchNorm2d``, the default without a checkpoint) or
``norm="gn"`` (GroupNorm, 32 groups, for tiny per-GPU batches) is used for from-scratch training, and
``norm="frozen_bn"`` (the default when a ``checkpoint`` or ``backbone_weights`` is given) reproduces
torchvision's fine-tuning setup.

Pretrained start. ``backbone_weights`` loads a ResNet state dict in torchvision's format (``conv1.weight``,
``bn1.*``, ``layer1.0.conv1.weight``, ..., ``fc.*``; what ``torchvision.models.resnet50(...).state_dict()``
and torchvision's weights files hold, and what :mod:`iif.detection.pretrain` writes) into the backbone's
ResNet before the FPN is put on it (:func:`load_backbone_weights`); the ``fc`` head is ignored. A torchvision
weights name (``ResNet50_Weights.IMAGENET1K_V1``) is fetched through torchvision (needs a network, or
torch hub's cache).

The RPN/RoI settings the CPU benchmark needs (input size, proposals, sampled RoIs, anchor sizes, FPN width)
are explicit keyword arguments; :data:`DETECTION_PRESETS` holds the configurations used by ``iif det-bench``
(read from YAML, :mod:`iif.detection.bench_presets`).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import IIFError
from .archs import ARCHS, NORMS, is_from_scratch
from .components import apply_thresholds, check_components
from .mask_heads import build_mask_predictor

__all__ = ["ARCHS", "DETECTION_PRESETS", "build_detector", "load_detector_checkpoint", "input_memory_estimate",
           "check_input_memory", "physical_memory_bytes", "load_backbone_weights", "backbone_weights_state",
           "is_from_scratch"]

# ARCHS, NORMS, FROM_SCRATCH and is_from_scratch are plain data in archs.py (the config validator reads them
# without torch); re-exported here.

# Configurations of iif det-bench (``DETECTION_PRESETS``): read from the packaged bench_detection.yaml, which names
# each preset's det-train config (cpu-quick: det_bench_softmax.yaml, gpu: det_bench_gpu.yaml; what was measured
# and why these settings: the comments there and docs/detection.md, "Presets"). Keys: build_detector keyword
# arguments under "model", train_detector ones under "train", torch threads under "threads", the eval batch
# size under "predict", and "measured". Built on first use (iif.detection.bench_presets.detection_presets).
#
# THE SWITCH to a pretrained start for det-bench (issue 15) is model.backbone_weights in det_bench_softmax.yaml
# (the cpu-quick preset and the base of every det_bench_* config): None (from scratch) keeps every recorded v1
# number reproducible. BENCH_BACKBONE_WEIGHTS reads it back.


DETECTION_PRESETS: dict[str, dict[str, Any]]  # declared only: module __getattr__ below builds it on first use
BENCH_BACKBONE_WEIGHTS: str | None


def __getattr__(name: str) -> Any:
    """``DETECTION_PRESETS`` and ``BENCH_BACKBONE_WEIGHTS``, built from the YAML once, on first use."""
    if name in ("DETECTION_PRESETS", "BENCH_BACKBONE_WEIGHTS") and "DETECTION_PRESETS" not in globals():
        from .bench_presets import detection_presets

        globals()["DETECTION_PRESETS"] = detection_presets()
    if name == "DETECTION_PRESETS":
        return globals()[name]
    if name == "BENCH_BACKBONE_WEIGHTS":
        return globals()["DETECTION_PRESETS"]["cpu-quick"]["model"].get("backbone_weights")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _norm_layer(norm: str):
    from torchvision.ops.misc import FrozenBatchNorm2d

    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    return lambda channels: nn.GroupNorm(32, channels)


def _resnet(depth: str, norm: str) -> nn.Module:
    from torchvision.models import resnet

    layer = _norm_layer(norm)
    if depth == "r10":
        return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], norm_layer=layer)
    if depth == "x101_64x4d":  # ResNeXt-101 64x4d (Xie et al.): R101's stages, each 3x3 conv in 64 groups of width 4
        return resnet.ResNet(resnet.Bottleneck, [3, 4, 23, 3], groups=64, width_per_group=4, norm_layer=layer)
    fn = {"r18": resnet.resnet18, "r34": resnet.resnet34, "r50": resnet.resnet50, "r101": resnet.resnet101}[depth]
    return fn(weights=None, norm_layer=layer)


def _fpn_backbone(depth: str, norm: str, fpn_channels: int, returned_layers: Sequence[int], trainable_layers: int,
                  weights: Any = None, log=print):
    """ResNet + FPN (P_k for the returned stages, plus a max-pooled extra level), as torchvision's
    ``resnet_fpn_backbone`` but with the chosen norm and FPN width; ``weights`` (a ``backbone_weights``
    value) is loaded into the whole ResNet first, as torchvision does, so stages the FPN does not use are
    checked too."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    body = _resnet(depth, norm)
    if not is_from_scratch(weights):
        load_backbone_weights(body, weights, depth=depth, log=log)
    if not 0 <= trainable_layers <= 5:
        raise IIFError(f"trainable_layers must be 0..5; got {trainable_layers}.")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, p in body.named_parameters():
        if all(not name.startswith(t) for t in trainable):
            p.requires_grad_(False)
    returned = sorted(int(r) for r in returned_layers)
    if not returned or any(r not in (1, 2, 3, 4) for r in returned):
        raise IIFError(f"returned_layers must be a non-empty subset of (1, 2, 3, 4); got {tuple(returned_layers)}.")
    stage_channels = body.inplanes // 8  # 64 (BasicBlock) or 256 (Bottleneck) at layer1
    return_layers = {f"layer{r}": str(i) for i, r in enumerate(returned)}
    in_channels = [stage_channels * 2 ** (r - 1) for r in returned]
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())


def _default_anchor_sizes(n_levels: int) -> tuple[tuple[int, ...], ...]:
    # torchvision's (32, 64, 128, 256, 512) for P2-P6, shifted to the levels actually returned.
    return tuple((32 * 2 ** i,) for i in range(n_levels))


def build_detector(arch: str, num_classes: int, *, masks: bool = True, min_size: int = 800, max_size: int = 1333,
                   rpn_pre_nms_top_n_train: int = 2000, rpn_post_nms_top_n_train: int = 2000,
                   rpn_pre_nms_top_n_test: int = 1000, rpn_post_nms_top_n_test: int = 1000,
                   rpn_batch_size_per_image: int = 256, box_batch_size_per_image: int = 512,
                   box_detections_per_img: int = 300, box_score_thresh: float = 1e-4,
                   anchor_sizes: Sequence[Sequence[int]] | None = None, aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                   returned_layers: Sequence[int] = (1, 2, 3, 4), fpn_channels: int = 256,
                   representation_size: int = 1024, mask_layers: Sequence[int] | None = None, mask_roi_size: int = 14,
                   class_agnostic_mask: bool = False, norm: str | None = None, trainable_layers: int | None = None,
                   checkpoint: str | os.PathLike | None = None, backbone_weights: str | os.PathLike | None = None,
                   mask_predictor: str = "standard", box_nms_thresh: float | None = None,
                   mask_thresh: float | None = None, log=print) -> nn.Module:
    """A torchvision detector for ``num_classes`` foreground categories, built without any download.

    Args:
        arch: one of :data:`ARCHS` (``maskrcnn_r50_fpn``, ``fasterrcnn_r18_fpn``, ``ssd300_vgg16``, ...).
        num_classes: foreground categories C; the box classifier has C+1 logits, background at index 0.
        masks: for ``maskrcnn_*`` archs, ``False`` drops the mask branch (a Faster R-CNN on the same backbone).
        min_size, max_size: the transform resizes each image so its short side is ``min_size`` (long side at
            most ``max_size``); set both to the image size for small images (torchvision's 800 would upsample
            a 128-px image six-fold). SSD300 always works at 300x300 and ignores them.
        rpn_pre_nms_top_n_*/rpn_post_nms_top_n_*: proposals kept per image (per FPN level before NMS, in
            total after NMS), in training and at test time.
        rpn_batch_size_per_image: anchors sampled per image for the RPN loss.
        box_batch_size_per_image: RoIs sampled per image for the box/mask losses (25% foreground).
        box_detections_per_img: detections kept per image (300 for LVIS-style evaluation; SSD: the same).
        box_score_thresh: minimum class score of a detection (1e-4 keeps the rare-class tail for LVIS AP).
        anchor_sizes: one tuple of sizes (pixels of the resized image) per FPN level, including the pooled
            extra level; default 32, 64, ... for the returned levels, as torchvision's P2-P6.
        returned_layers: ResNet stages (1-4) fed to the FPN; ``(2, 3, 4)`` drops the stride-4 level.
        fpn_channels: FPN width (torchvision: 256); the RoI heads scale with it.
        representation_size: width of the box head's two fully connected layers (torchvision: 1024).
        mask_layers: channels of the mask head's convolutions (torchvision: four of 256). At test time the mask
            head runs on every kept detection (``box_detections_per_img`` per image), so its width dominates
            inference cost on small images.
        mask_roi_size: side of the RoI features fed to the mask head (torchvision: 14; masks come out at
            twice this).
        class_agnostic_mask: one mask channel shared by every category (detectron2's ``CLS_AGNOSTIC_MASK``,
            mmdetection's ``class_agnostic``) instead of torchvision's one per category. A category with a
            handful of training images otherwise gets a mask channel that is barely trained, so its mask AP
            stays near 0 whatever its classification: the offline v2 benchmark uses it so that AP_r measures
            what a margin changes (docs/detection.md). :class:`ClassAgnosticMaskPredictor`.
        norm: ``"bn"`` (trainable BatchNorm2d), ``"gn"`` (GroupNorm) or ``"frozen_bn"``; default ``"bn"``
            from scratch and ``"frozen_bn"`` with a checkpoint or backbone weights (torchvision's fine-tuning).
        trainable_layers: ResNet stages that train (5 = all); default 5 from scratch, 3 with a checkpoint or
            backbone weights.
        checkpoint: a local torchvision checkpoint (a state dict, or a dict with ``"model"``), read with
            ``torch.load(weights_only=True)``; see :func:`load_detector_checkpoint`. Loaded after
            ``backbone_weights``, so it wins where both set a tensor.
        backbone_weights: the pretrained start of the ResNet backbone: a local file holding a torchvision-format
            ResNet state dict (read with ``torch.load(weights_only=True)``; the ``fc`` head is ignored), or a
            torchvision weights name such as ``"ResNet50_Weights.IMAGENET1K_V1"`` (downloaded by torchvision);
            ``None``, ``"none"`` or ``"from_scratch"``: random init. ``"pretrained"`` (the cached pretraining of
            an ``iif det-data`` benchmark) must be resolved to its file first
            (:func:`iif.detection.pretrain.resolve_backbone_weights`; det-train and det-bench do it). ResNet-FPN
            archs only.
        mask_predictor, box_nms_thresh, mask_thresh: Table XV's components (:mod:`iif.detection.components`):
            ``"standard"`` or ``"normalised"`` (Seesaw's) mask logits; the final NMS IoU (None: the arch's); the
            evaluated masks' probability threshold (None: 0.5). The paper's last Table XV row: NMS 0.3, mask 0.4.
        log: where the checkpoint report goes.
    """
    norm, trainable_layers = _checked_build_args(
        arch, num_classes, norm=norm, trainable_layers=trainable_layers, checkpoint=checkpoint,
        backbone_weights=backbone_weights, sizes=(("min_size", min_size), ("max_size", max_size),
                                                  ("fpn_channels", fpn_channels),
                                                  ("representation_size", representation_size),
                                                  ("box_detections_per_img", box_detections_per_img),
                                                  ("box_batch_size_per_image", box_batch_size_per_image)))
    check_components(arch, mask_predictor=mask_predictor, box_nms_thresh=box_nms_thresh, mask_thresh=mask_thresh,
                     class_agnostic_mask=class_agnostic_mask)
    model = _build_arch(arch, num_classes, masks, norm, trainable_layers, locals(), log=log)
    apply_thresholds(model, box_nms_thresh=box_nms_thresh, mask_thresh=mask_thresh)
    if checkpoint is not None:
        load_detector_checkpoint(model, checkpoint, log=log)
    return model


def _build_arch(arch: str, num_classes: int, masks: bool, norm: str, trainable_layers: int, a: dict,
                log=print) -> nn.Module:
    """The detector of ``arch``'s family, from :func:`build_detector`'s arguments ``a`` (checked)."""
    family, depth = ARCHS[arch]
    if family == "ssd":
        return _build_ssd(num_classes, a["box_detections_per_img"], a["box_score_thresh"], norm)
    if family == "yolov3":  # Darknet + three-scale head, objectness x softmax scores (iif.detection.yolo)
        from .yolo import build_yolov3

        return build_yolov3(depth, num_classes, a, norm, log=log)
    if family == "cascade_maskrcnn":  # Mask R-CNN's parts with three box stages (iif.detection.cascade)
        from .cascade import to_cascade

        return to_cascade(_build_rcnn("maskrcnn", depth, num_classes, masks, norm, trainable_layers, a, log=log),
                          num_classes, int(a["representation_size"]))
    if family == "htc":  # the cascade with a mask head per stage, interleaved, mask flow (iif.detection.htc)
        from .cascade import to_cascade
        from .htc import to_htc

        return to_htc(to_cascade(_build_rcnn("maskrcnn", depth, num_classes, masks, norm, trainable_layers, a,
                                             log=log), num_classes, int(a["representation_size"])))
    return _build_rcnn(family, depth, num_classes, masks, norm, trainable_layers, a, log=log)


def _checked_build_args(arch: str, num_classes: Any, *, norm: str | None, trainable_layers: int | None,
                        checkpoint: str | os.PathLike | None, backbone_weights: str | os.PathLike | None,
                        sizes: Sequence[tuple[str, Any]]) -> tuple[str, int]:
    """:func:`build_detector`'s argument checks, in its order (arch, classes, backbone weights, norm, checkpoint,
    the ``(name, value)`` ``sizes`` >= 1); returns the ``norm`` and ``trainable_layers`` to build with (their
    defaults depend on whether training starts from a checkpoint or backbone weights)."""
    if arch not in ARCHS:
        raise IIFError(f"unknown detector arch {arch!r}; use one of {', '.join(ARCHS)}.")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise IIFError(f"num_classes must be a positive int (foreground categories); got {num_classes!r}.")
    pretrained = not is_from_scratch(backbone_weights)
    if pretrained and ARCHS[arch][0] == "ssd":
        raise IIFError(f"backbone_weights is set ({backbone_weights}) but {arch} has a VGG16 backbone; backbone "
                       "weights are for the ResNet-FPN archs (maskrcnn_*/fasterrcnn_*): set backbone_weights=null.")
    if pretrained and str(backbone_weights).strip() == "pretrained" and not os.path.isfile(backbone_weights):
        raise IIFError("backbone_weights 'pretrained' names the cached pretraining of an iif det-data benchmark and "
                       "must be resolved to its file first: call iif.detection.pretrain.resolve_backbone_weights("
                       "'pretrained', arch=..., data_root=BENCH), or use det-train / det-bench with that data.")
    norm = norm or ("frozen_bn" if checkpoint is not None or pretrained else "bn")
    if norm not in NORMS:
        raise IIFError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}.")
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise IIFError(f"detector checkpoint {checkpoint} does not exist; pass a local .pth/.pt file.")
    for name, value in sizes:
        if int(value) < 1:
            raise IIFError(f"{name} must be >= 1; got {value}.")
    if trainable_layers is None:
        trainable_layers = 3 if checkpoint is not None or pretrained else 5
    return norm, trainable_layers


def _build_rcnn(family: str, depth: str, num_classes: int, masks: bool, norm: str, trainable_layers: int,
                a: dict, log=print) -> nn.Module:
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = _fpn_backbone(depth, norm, int(a["fpn_channels"]), a["returned_layers"], trainable_layers,
                             a.get("backbone_weights"), log=log)
    n_levels = len(tuple(a["returned_layers"])) + 1  # + the max-pooled extra level
    sizes = tuple(tuple(int(s) for s in level) for level in (a["anchor_sizes"] or _default_anchor_sizes(n_levels)))
    if len(sizes) != n_levels:
        raise IIFError(f"anchor_sizes has {len(sizes)} levels but the FPN returns {n_levels} (returned_layers "
                       f"{tuple(a['returned_layers'])} + the pooled level); give one tuple of sizes per level.")
    ratios = (tuple(float(r) for r in a["aspect_ratios"]),) * n_levels
    anchors = AnchorGenerator(sizes, ratios)
    ch = backbone.out_channels
    rpn_head = RPNHead(ch, anchors.num_anchors_per_location()[0])
    names = [str(i) for i in range(n_levels - 1)]
    box_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    rep = int(a["representation_size"])
    kwargs = dict(
        min_size=int(a["min_size"]), max_size=int(a["max_size"]),
        rpn_anchor_generator=anchors, rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=int(a["rpn_pre_nms_top_n_train"]),
        rpn_post_nms_top_n_train=int(a["rpn_post_nms_top_n_train"]),
        rpn_pre_nms_top_n_test=int(a["rpn_pre_nms_top_n_test"]),
        rpn_post_nms_top_n_test=int(a["rpn_post_nms_top_n_test"]),
        rpn_batch_size_per_image=int(a["rpn_batch_size_per_image"]),
        box_roi_pool=box_pool, box_head=TwoMLPHead(ch * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes + 1),
        box_batch_size_per_image=int(a["box_batch_size_per_image"]),
        box_detections_per_img=int(a["box_detections_per_img"]), box_score_thresh=float(a["box_score_thresh"]),
    )
    if family == "maskrcnn" and masks:
        layers = tuple(int(c) for c in (a["mask_layers"] or (256, 256, 256, 256)))
        mask_head = MaskRCNNHeads(ch, layers, 1)  # torchvision's plain conv mask head
        return MaskRCNN(backbone, num_classes=None,
                        mask_roi_pool=MultiScaleRoIAlign(featmap_names=names, output_size=int(a["mask_roi_size"]),
                                                         sampling_ratio=2),
                        mask_head=mask_head,
                        mask_predictor=(ClassAgnosticMaskPredictor(layers[-1], layers[-1], num_classes + 1)
                                        if a["class_agnostic_mask"] else
                                        build_mask_predictor(a["mask_predictor"], layers[-1], num_classes + 1)),
                        **kwargs)
    return FasterRCNN(backbone, num_classes=None, **kwargs)


class ClassAgnosticMaskPredictor(nn.Module):
    """torchvision's mask predictor (2x transposed conv, ReLU, 1x1 conv) with ONE output channel, returned
    expanded (a view, no copy) to the ``num_classes`` (C+1) channels torchvision's ``maskrcnn_loss`` and
    ``maskrcnn_inference`` index by label: every category reads, and trains, the same mask logits."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.relu = nn.ReLU(inplace=True)
        self.mask_fcn_logits = nn.Conv2d(dim_reduced, 1, 1, 1, 0)
        for name, param in self.named_parameters():  # torchvision's MaskRCNNPredictor initialisation
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mask_fcn_logits(self.relu(self.conv5_mask(x)))
        return logits.expand(-1, self.num_classes, -1, -1)


def _build_ssd(num_classes: int, detections: int, score_thresh: float, norm: str) -> nn.Module:
    from torchvision.models.detection import ssd300_vgg16

    # VGG16 has no normalisation layers; torchvision's SSD300 recipe trains it as is.
    return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                        detections_per_img=int(detections), score_thresh=float(score_thresh))


# ------------------------------------------------------------------------------------------------- memory


def physical_memory_bytes() -> int | None:
    """The memory this process can have: physical RAM (``os.sysconf``: pages * page size), or a lower cgroup
    limit (:func:`iif.resources.memory_limit`, the rule ``iif train``'s check uses too); None where unreadable."""
    from ..resources import memory_limit

    return memory_limit()


def input_memory_estimate(image_hw, *, min_size: int, max_size: int, batch_size: int, fpn_channels: int = 256,
                          returned_layers: Sequence[int] = (1, 2, 3, 4)) -> int:
    """Bytes of one R-CNN batch's float32 image tensor and FPN feature maps, a lower bound of what the
    forward pass allocates (activations, gradients and the backbone's own feature maps come on top).

    Each image is resized as torchvision's ``GeneralizedRCNNTransform`` does (scale ``min(min_size / short
    side, max_size / long side)``) and the batch is padded to a multiple of 32; the estimate is for a batch of
    ``batch_size`` images the size of the data's largest resized image (``image_hw``: ``(height, width)``
    rows). The FPN has one map of ``fpn_channels`` per returned ResNet stage r (stride 2^(r+1)) plus the
    max-pooled extra level.
    """
    hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
    if not len(hw):
        return 0
    scale = np.minimum(float(min_size) / hw.min(axis=1), float(max_size) / hw.max(axis=1))
    rh, rw = np.floor(hw[:, 0] * scale), np.floor(hw[:, 1] * scale)
    big = int(np.argmax(rh * rw))
    ph, pw = math.ceil(rh[big] / 32) * 32, math.ceil(rw[big] / 32) * 32
    pixels = float(ph) * pw
    strides = [2 ** (int(r) + 1) for r in returned_layers]
    strides.append(2 * max(strides))  # the pooled level
    fpn = sum(math.ceil(ph / st) * math.ceil(pw / st) for st in strides) * float(fpn_channels)
    return int(4 * batch_size * (3 * pixels + fpn))


def check_input_memory(image_hw, *, arch: str, min_size: int, max_size: int, batch_size: int,
                       fpn_channels: int = 256, returned_layers: Sequence[int] = (1, 2, 3, 4),
                       device: str = "cpu", what: str = "training", keys: str = "model.min_size/model.max_size",
                       batch_key: str = "schedule.batch_size") -> int:
    """Refuse (:class:`IIFError`, with the estimate) sizes whose :func:`input_memory_estimate` alone exceeds
    the memory of ``device`` (physical memory on CPU, the GPU's total memory on CUDA): such a run would try to
    allocate it and die (``model.min_size=100000`` asked for 120 GB). Checked before anything big is built.
    SSD300 works at 300x300 whatever the sizes, so it is not checked. Returns the estimate in bytes."""
    if ARCHS.get(arch, ("",))[0] == "ssd":
        return 0
    need = input_memory_estimate(image_hw, min_size=min_size, max_size=max_size, batch_size=batch_size,
                                 fpn_channels=fpn_channels, returned_layers=returned_layers)
    have, where = physical_memory_bytes(), "the memory this machine gives it"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        have = torch.cuda.get_device_properties(index if index is not None else 0).total_memory
        where = f"the memory of {device}"
    if have is not None and need > have:
        gb = 1024 ** 3
        raise IIFError(f"{what} with model.min_size={min_size}, model.max_size={max_size} and "
                       f"{batch_size} images per batch needs at least {need / gb:.1f} GiB for one batch's image "
                       f"tensor and FPN features alone, more than {where} ({have / gb:.1f} GiB); lower {keys} "
                       f"(about the images' size) or {batch_key}.")
    return need


# ----------------------------------------------------------------------------------------------- checkpoints

_ADAPTABLE = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.",
              "head.classification_head.",
              "roi_heads.box_predictor_2.cls_score.", "roi_heads.box_predictor_3.cls_score.",  # cascade stages
              "roi_heads.mask_predictor_2.mask_fcn_logits.", "roi_heads.mask_predictor_3.mask_fcn_logits.")  # HTC


def load_detector_checkpoint(model: nn.Module, path: str | os.PathLike, *, log=print) -> dict[str, list[str]]:
    """Load a local torchvision detector checkpoint into ``model``; returns ``{"loaded": [...], "skipped": [...]}``.

    The file is a state dict or a dict with ``"model"`` (torchvision references and iif both write that),
    read with ``torch.load(weights_only=True)``: nothing in it can run code. Class-specific layers (the box
    predictor, the mask predictor's last conv, SSD's classification head) whose shapes differ from ``model``
    (another class count) keep their fresh initialisation and are reported as skipped; any other missing,
    unexpected or mis-shaped tensor is an error, because the checkpoint is then for another architecture.
    """
    from ..runtime.checkpoint import load_checkpoint

    state = load_checkpoint(path)["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IIFError(f"checkpoint {path} is not a state dict of tensors (or a dict with one under 'model').")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    skipped, mismatched = [], []
    keep = {}
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            (skipped if k.startswith(_ADAPTABLE) else mismatched).append(f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}")
            continue
        keep[k] = v
    # num_batches_tracked is absent from FrozenBatchNorm2d checkpoints and harmless to lack.
    missing = [k for k in own if k not in keep and not k.endswith("num_batches_tracked")
               and not any(s.startswith(k + " ") for s in skipped)]
    unexpected = [k for k in keep if k not in own and not k.endswith("num_batches_tracked")]
    if mismatched or missing or unexpected:
        parts = []
        for what, names in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)):
            if names:
                parts.append(f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} ({len(names)})")
        raise IIFError(f"checkpoint {path} does not fit {type(model).__name__} ({'; '.join(parts)}); build the "
                       "detector with the arch, norm and FPN settings the checkpoint was trained with.")
    model.load_state_dict({k: v for k, v in keep.items() if k in own}, strict=False)
    report = {"loaded": sorted(k for k in keep if k in own), "skipped": skipped}
    if skipped:
        log(f"checkpoint {path}: loaded {len(report['loaded'])} tensors; kept fresh init for the class-specific "
            f"layers whose class count differs: {', '.join(s.split(' ')[0] for s in skipped)}")
    return report


# ------------------------------------------------------------------------------------------- backbone weights

# torchvision's weights enum for each ResNet depth (r10 has none: use a local file or the cached pretraining).
_TORCHVISION_ENUMS = {"r18": "ResNet18_Weights", "r34": "ResNet34_Weights", "r50": "ResNet50_Weights",
                      "r101": "ResNet101_Weights", "x101_64x4d": "ResNeXt101_64X4D_Weights"}
_WEIGHTS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_Weights\.[A-Za-z0-9_]+$")
_FIX = ("pass a torchvision-format ResNet state dict file, a torchvision weights name (e.g. "
        "ResNet50_Weights.IMAGENET1K_V1), 'pretrained' (the cached pretraining of an iif det-data benchmark) or "
        "null (from scratch)")


def _depth_name(depth: str) -> str:
    return {"r10": "ResNet-10 (BasicBlock, one block per stage)", "r18": "ResNet-18", "r34": "ResNet-34",
            "r50": "ResNet-50", "r101": "ResNet-101", "x101_64x4d": "ResNeXt-101 64x4d"}.get(depth, depth)


def backbone_weights_state(weights: str | os.PathLike, *, depth: str | None = None) -> tuple[dict, str]:
    """``(state dict, description)`` of a ``backbone_weights`` value: a local file read with
    ``torch.load(weights_only=True)`` (a state dict of tensors; a dict holding one under ``"state_dict"`` or
    ``"model"`` is accepted, ``module.`` prefixes are stripped), or a torchvision weights name, fetched with
    torchvision's ``get_state_dict`` (a download unless torch hub's cache has it). ``depth`` (``"r50"``...) checks
    that a weights name is for that ResNet. Every problem is an :class:`IIFError` naming the fix."""
    spec = os.fspath(weights)
    if os.path.isfile(spec):
        from ..runtime.checkpoint import safe_load

        try:
            obj = safe_load(Path(spec), "cpu")
        except IIFError as exc:
            raise IIFError(f"backbone weights {spec} cannot be read as a weights file ({str(exc).rstrip('.')}); "
                           f"{_FIX}.") from None
        for key in ("state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if (not isinstance(obj, dict) or not obj
                or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
            raise IIFError(f"backbone weights {spec} is not a state dict of tensors (it holds "
                           f"{type(obj).__name__}{' (empty)' if isinstance(obj, dict) and not obj else ''}); {_FIX}.")
        return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}, spec
    if os.path.isdir(spec):
        raise IIFError(f"backbone weights {spec} is a folder; {_FIX}.")
    if not _WEIGHTS_NAME.match(spec.strip()):
        raise IIFError(f"backbone weights file {spec} does not exist; {_FIX}.")
    name = spec.strip()
    enum_name = name.split(".")[0]
    from torchvision.models import get_weight

    try:
        w = get_weight(name)
    except (ValueError, KeyError, AttributeError, TypeError):
        known = _TORCHVISION_ENUMS.get(depth or "", "ResNet50_Weights")
        raise IIFError(f"unknown torchvision weights name {name!r}; use e.g. {known}.IMAGENET1K_V1 (torchvision's "
                       f"{known} lists them), a local weights file, 'pretrained' or null.") from None
    if depth is not None and _TORCHVISION_ENUMS.get(depth) != enum_name:
        want = _TORCHVISION_ENUMS.get(depth)
        fix = (f"use {want}.IMAGENET1K_V1" if want else
               "torchvision has no weights for it: use a local file or 'pretrained'")
        raise IIFError(f"backbone weights {name} are for another network than the {_depth_name(depth)} backbone; "
                       f"{fix}, or an arch whose backbone {enum_name} fits.")
    try:
        state = w.get_state_dict(progress=False)
    except Exception as exc:  # no network (URLError, OSError, ...) or a corrupt download in torch hub's cache
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise IIFError(f"cannot fetch torchvision weights {name} ({detail}); download {w.url} on a machine with "
                       "network access and pass the file as backbone_weights.") from None
    return dict(state), name


def load_backbone_weights(resnet: nn.Module, weights: Any, *, depth: str | None = None, log=print) -> dict[str, Any]:
    """Load ``backbone_weights`` (file or torchvision name, :func:`backbone_weights_state`) into a torchvision
    ``ResNet``; returns ``{"source", "loaded", "ignored"}``.

    The classification head (``fc.*``) is ignored, present or not (the detector has none), and so is
    ``num_batches_tracked`` (FrozenBatchNorm2d has no such buffer). Any other tensor must match by name and
    shape both ways: a mis-shaped tensor (a ResNet-18 file for a ResNet-50 backbone), a tensor the backbone
    lacks or a backbone tensor the file lacks is an :class:`IIFError` naming the first one and its shapes,
    raised before anything is copied."""
    state, source = backbone_weights_state(weights, depth=depth)
    own = resnet.state_dict()

    def ignored(k: str) -> bool:
        return k.startswith("fc.") or k.endswith("num_batches_tracked")

    mismatched = [k for k in own if k in state and not ignored(k) and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and not ignored(k)]
    unexpected = [k for k in state if k not in own and not ignored(k)]
    what = f"the {_depth_name(depth)} backbone" if depth else "the backbone's ResNet"
    if (unexpected and not mismatched and not missing and all(k.endswith(("running_mean", "running_var"))
                                                                for k in unexpected)
            and any(isinstance(m, nn.GroupNorm) for m in resnet.modules())):
        raise IIFError(f"backbone weights {source} hold BatchNorm statistics ({unexpected[0]}, ...) that a GroupNorm "
                       "backbone has no place for; build it with norm bn or frozen_bn (model.norm=frozen_bn).")
    if mismatched or missing or unexpected:
        if mismatched:
            k = mismatched[0]
            first = f"{k} is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model"
        elif missing:
            first = f"the file has no {missing[0]}"
        else:
            first = f"the file has {unexpected[0]}, which the model has not"
        counts = ", ".join(f"{n} {w}" for n, w in ((len(mismatched), "mis-shaped"), (len(missing), "missing"),
                                                   (len(unexpected), "unexpected")) if n)
        raise IIFError(f"backbone weights {source} do not fit {what} ({first}; {counts} tensors); give weights "
                       f"of a {_depth_name(depth) if depth else 'ResNet of that depth'} (torchvision's ResNet state "
                       "dict format), or set model.arch to the ResNet depth the file holds.")
    # num_batches_tracked too where both have it (a trainable BatchNorm2d continues the file's count)
    resnet.load_state_dict({k: v for k, v in state.items() if k in own and not k.startswith("fc.")}, strict=False)
    loaded = sorted(k for k in own if k in state and not k.startswith("fc."))
    dropped = sorted(k for k in state if k.startswith("fc."))
    log(f"backbone weights {source}: loaded {len(loaded)} tensors into {what}"
        + (f"; ignored {', '.join(dropped[:3])}{' ...' if len(dropped) > 3 else ''}" if dropped else ""))
    return {"source": source, "loaded": loaded, "ignored": dropped}
