"""Loss functions for long-tailed recognition, each functional + ``nn.Module`` (see docs/losses.md).

``IIFLoss`` / :func:`iif_cross_entropy` is the paper's Eq. 15; the rest are the baselines it is compared
with (Table IV-V). All share ``F.cross_entropy``'s options, ``adjust_logits`` and ``set_epoch``.
"""

from .base import CrossEntropyLoss, LossBase
from .iif_loss import IIFLoss, iif_cross_entropy, online_smooth_weights
from .margin import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss, ldam_margins
from .registry import LOSSES, VARIANT_LOSSES, build_loss
from .seesaw import SeesawLoss, seesaw_logits
from .transform import InferTransformLoss, TransformLoss, transform_loss
from .reweighting import (
    CB_LOSSES,
    ClassBalancedLoss,
    FocalLoss,
    IIFCostSensitiveLoss,
    class_balanced_weights,
    focal_loss,
    sigmoid_focal_loss,
)

__all__ = [
    "LossBase",
    "CrossEntropyLoss",
    "IIFLoss",
    "iif_cross_entropy",
    "online_smooth_weights",
    "IIFCostSensitiveLoss",
    "BalancedSoftmaxLoss",
    "LogitAdjustedLoss",
    "LDAMLoss",
    "ldam_margins",
    "ClassBalancedLoss",
    "CB_LOSSES",
    "class_balanced_weights",
    "sigmoid_focal_loss",
    "FocalLoss",
    "focal_loss",
    "SeesawLoss",
    "seesaw_logits",
    "TransformLoss",
    "InferTransformLoss",
    "transform_loss",
    "LOSSES",
    "VARIANT_LOSSES",
    "build_loss",
]
