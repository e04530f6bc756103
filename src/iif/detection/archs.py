"""The detector names and backbone choices of :func:`iif.detection.build_detector`, as plain data (no torch):
the detection config's validator (:mod:`iif.detection.config`) checks against them without importing the
model code, and :mod:`iif.detection.models` (which re-exports them) builds from them."""

from __future__ import annotations

from typing import Any

__all__ = ["ARCHS", "NORMS", "FROM_SCRATCH", "is_from_scratch", "has_masks", "has_resnet_backbone"]

# arch -> (family, backbone). r10 is torchvision's BasicBlock ResNet with one block per stage (half of R18's
# depth), a small backbone for from-scratch CPU runs.
ARCHS: dict[str, tuple[str, str]] = {
    "maskrcnn_r10_fpn": ("maskrcnn", "r10"),
    "maskrcnn_r18_fpn": ("maskrcnn", "r18"),
    "maskrcnn_r34_fpn": ("maskrcnn", "r34"),
    "maskrcnn_r50_fpn": ("maskrcnn", "r50"),
    "maskrcnn_r101_fpn": ("maskrcnn", "r101"),
    # ResNeXt-101 64x4d (torchvision's ResNet with 64 groups of width 4 in each bottleneck's 3x3 conv): the X101 of
    # the paper's Table XIII (M.X101), as the authors' mmdetection configs name it
    # (mask_rcnn_x101_64x4d_fpn_sample1e-3_mstrain_1x_lvis_v1).
    "maskrcnn_x101_64x4d_fpn": ("maskrcnn", "x101_64x4d"),
    "fasterrcnn_r10_fpn": ("fasterrcnn", "r10"),
    "fasterrcnn_r18_fpn": ("fasterrcnn", "r18"),
    "fasterrcnn_r34_fpn": ("fasterrcnn", "r34"),
    "fasterrcnn_r50_fpn": ("fasterrcnn", "r50"),
    "fasterrcnn_r101_fpn": ("fasterrcnn", "r101"),
    "ssd300_vgg16": ("ssd", "vgg16"),
    # YOLOv3 (iif.detection.yolo): Darknet-53, and a narrow shallow Darknet for CPU tests (width 1/4, one block
    # per stage; same three scales and anchors).
    "yolov3_darknet53": ("yolov3", "darknet53"),
    "yolov3_tiny_cpu": ("yolov3", "darknet_tiny"),
    # Cascade Mask R-CNN (iif.detection.cascade): three box stages on the Mask R-CNN parts.
    "cascade_maskrcnn_r10_fpn": ("cascade_maskrcnn", "r10"),
    "cascade_maskrcnn_r50_fpn": ("cascade_maskrcnn", "r50"),
    "cascade_maskrcnn_r101_fpn": ("cascade_maskrcnn", "r101"),
    # Hybrid Task Cascade (iif.detection.htc): the cascade with a mask head per stage, interleaved, with mask
    # information flow; no semantic branch (our data has no semantic segmentation).
    "htc_r10_fpn": ("htc", "r10"),
    "htc_r50_fpn": ("htc", "r50"),
    "htc_r101_fpn": ("htc", "r101"),
}

NORMS = ("bn", "gn", "frozen_bn")

#: The values of ``backbone_weights`` that mean "random init".
FROM_SCRATCH = ("none", "from_scratch", "null", "")


def is_from_scratch(weights: Any) -> bool:
    """True for a ``backbone_weights`` value that means random init: None, ``"none"``, ``"from_scratch"``."""
    return weights is None or (isinstance(weights, str) and weights.strip().lower() in FROM_SCRATCH)


def has_masks(arch: str) -> bool:
    """True for an arch with a mask branch (the ``maskrcnn``, ``cascade_maskrcnn`` and ``htc`` families): the one rule
    for whether a run loads and scores masks (det-bench and det-train; ``fasterrcnn_*`` and ``ssd300_vgg16`` score boxes)."""
    return ARCHS.get(arch, ("",))[0] in ("maskrcnn", "cascade_maskrcnn", "htc")


def has_resnet_backbone(arch: str) -> bool:
    """True for an arch on a torchvision ResNet (r10 ... r101, and ResNeXt-101 64x4d, the same ``ResNet`` class with
    grouped 3x3 convs and the same state dict names): the backbones ``backbone_weights`` takes ResNet-format weights
    for, and the cached balanced pretraining (``pretrained``) is built for (not SSD's VGG nor YOLOv3's Darknet)."""
    return ARCHS.get(arch, ("", ""))[1] in ("r10", "r18", "r34", "r50", "r101", "x101_64x4d")
