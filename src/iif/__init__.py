"""iif: Inverse Image Frequency for long-tailed image recognition (Alexandridis et al., IEEE TIP 2023).

The core (weights, frequencies, adjusters, losses, metrics) is re-exported here and needs only torch,
numpy and scipy. Training, datasets, models and the bench live in the sub-packages ``iif.data``,
``iif.models``, ``iif.train`` and ``iif.bench`` (they need the ``train`` extra: torchvision, pyyaml, ...).
:func:`register_method` defines a new method once (its logit transforms, :mod:`iif.methods`) for every task.
"""

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import IIFError

# Public name -> the sub-module that defines it. The names are resolved on first use (PEP 562 module
# ``__getattr__``) so that ``import iif`` -- and with it ``iif --version`` / ``iif --help`` -- does not pay
# for importing torch (about 2 s on a 2-core machine); ``from iif import X`` and ``iif.X`` work as before.
_LAZY = {
    "BalancedSoftmaxOffset": "adjusters",
    "LearnableWeightScaling": "adjusters",
    "LogitAdjustment": "adjusters",
    "PostHocIIF": "adjusters",
    "detection_scores": "adjusters",
    "tau_normalize": "adjusters",
    "ClassFrequency": "frequency",
    "BalancedSoftmaxLoss": "losses",
    "ClassBalancedLoss": "losses",
    "CrossEntropyLoss": "losses",
    "FocalLoss": "losses",
    "IIFCostSensitiveLoss": "losses",
    "IIFLoss": "losses",
    "LDAMLoss": "losses",
    "LogitAdjustedLoss": "losses",
    "build_loss": "losses",
    "iif_cross_entropy": "losses",
    "evaluate_logits": "metrics",
    "register_method": "methods",
    "unregister_method": "methods",
    "VARIANTS": "weights",
    "iif_weights": "weights",
}

# Sub-modules that ``import iif`` used to import eagerly, so ``import iif; iif.losses.build_loss`` keeps working.
_SUBMODULES = ("adjusters", "frequency", "losses", "metrics", "outputs", "readers", "weights")

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .adjusters import (BalancedSoftmaxOffset, LearnableWeightScaling, LogitAdjustment, PostHocIIF,
                            detection_scores, tau_normalize)
    from .frequency import ClassFrequency
    from .losses import (BalancedSoftmaxLoss, ClassBalancedLoss, CrossEntropyLoss, FocalLoss, IIFCostSensitiveLoss,
                         IIFLoss, LDAMLoss, LogitAdjustedLoss, build_loss, iif_cross_entropy)
    from .methods import register_method, unregister_method
    from .metrics import evaluate_logits
    from .weights import VARIANTS, iif_weights


def __getattr__(name: str):
    """Import the sub-module that defines public ``name`` (or the sub-module ``name`` of
    :data:`_SUBMODULES`) on first access and cache it here."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import sets the attribute too
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


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
    "register_method",
    "unregister_method",
    "__version__",
]
