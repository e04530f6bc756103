"""iif: Inverse Image Frequency for long-tailed image recognition (Alexandridis et al., IEEE TIP 2023).

The core (weights, frequencies, adjusters, losses, metrics) is re-exported here and needs only torch,
numpy and scipy. Training, datasets, models and the bench live in the sub-packages ``iif.data``,
``iif.models``, ``iif.train`` and ``iif.bench`` (they need the ``train`` extra: torchvision, pyyaml, ...).
"""

from .adjusters import (
    BalancedSoftmaxOffset,
    LearnableWeightScaling,
    LogitAdjustment,
    PostHocIIF,
    detection_scores,
    tau_normalize,
)
from .errors import IIFError
from .frequency import ClassFrequency
from .losses import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    IIFCostSensitiveLoss,
    IIFLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    build_loss,
    iif_cross_entropy,
)
from .metrics import evaluate_logits
from .weights import VARIANTS, iif_weights

__version__ = "0.1.0"

__all__ = [
    "IIFError",
    "ClassFrequency",
    "VARIANTS",
    "iif_weights",
    "PostHocIIF",
    "LogitAdjustment",
    "BalancedSoftmaxOffset",
    "LearnableWeightScaling",
    "tau_normalize",
    "detection_scores",
    "IIFLoss",
    "iif_cross_entropy",
    "IIFCostSensitiveLoss",
    "CrossEntropyLoss",
    "BalancedSoftmaxLoss",
    "LogitAdjustedLoss",
    "LDAMLoss",
    "ClassBalancedLoss",
    "FocalLoss",
    "build_loss",
    "evaluate_logits",
    "__version__",
]
