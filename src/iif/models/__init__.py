"""Backbones and classifier heads (docs/ARCHITECTURE.md, "Models"; user guide in docs/models.md).

``build_model(arch, num_classes, head="linear", in_channels=3, **head_kwargs)`` returns an
:class:`ImageClassifier` with ``features(x) -> (N, D)``, ``classifier``, ``feature_dim`` and
``forward(x) = classifier(features(x))``.
"""

from .cifar_resnet import CifarResNet, option_a_shortcut
from .factory import (
    ARCHS,
    ImageClassifier,
    build_backbone,
    build_model,
    freeze_backbone,
    load_state,
    replace_head,
    set_backbone_eval,
    unfreeze_backbone,
)
from .heads import (
    HEADS,
    CosineHead,
    LinearHead,
    LWSClassifier,
    LWSHead,
    NormedLinearHead,
    TauNormHead,
    build_head,
    cosine_logits,
    normed_logits,
)
from .small_cnn import SmallCNN

__all__ = [
    "ARCHS",
    "HEADS",
    "ImageClassifier",
    "build_model",
    "build_backbone",
    "build_head",
    "replace_head",
    "freeze_backbone",
    "unfreeze_backbone",
    "set_backbone_eval",
    "load_state",
    "LinearHead",
    "CosineHead",
    "NormedLinearHead",
    "TauNormHead",
    "LWSHead",
    "LWSClassifier",
    "cosine_logits",
    "normed_logits",
    "CifarResNet",
    "SmallCNN",
    "option_a_shortcut",
]
