"""Mask predictors beyond torchvision's: the normalised mask predictor of the Seesaw Loss paper (Wang et al.,
'Seesaw Loss for Long-Tailed Instance Segmentation', CVPR 2021), the "Normalised Mask" of the IIF paper's
Table XV (Section IV-B.5).

torchvision's ``MaskRCNNPredictor`` is a 2x transposed convolution, a ReLU and a 1x1 convolution
``mask_fcn_logits`` giving one logit map per class. The normalised predictor replaces that last 1x1 convolution
by a normalised one: at every pixel the feature vector ``x`` (over the channels) and each class's weight
vector ``w_k`` are divided by their L2 norms, and the cosine is multiplied by a temperature ``s``:

    m_k(u, v) = s * <x(u, v) / (||x(u, v)|| + eps), w_k / (||w_k|| + eps)> + b_k

so a rare class's mask logits are not smaller in scale than a frequent class's merely because its weights
were trained on fewer masks. ``s = 20`` and ``eps = 1e-6`` are the values of the Seesaw authors' mmdetection
configurations (``NormedConv2d`` with temperature 20); ``b_k`` is the convolution's bias (kept, as there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError

__all__ = ["NormalisedConv2d", "NormalisedMaskPredictor", "MASK_PREDICTORS"]

#: The values of ``build_detector(mask_predictor=...)`` / det config ``model.mask_predictor``.
MASK_PREDICTORS = ("standard", "normalised")


class NormalisedConv2d(nn.Conv2d):
    """A 1x1 convolution on channel-normalised features with row-normalised weights, times ``temperature``."""

    def __init__(self, in_channels: int, out_channels: int, temperature: float = 20.0, eps: float = 1e-6) -> None:
        super().__init__(in_channels, out_channels, 1)
        t = float(temperature)
        if not (math.isfinite(t) and t > 0):
            raise IIFError(f"the normalised mask predictor's temperature must be a positive number (the Seesaw "
                           f"configs use 20); got {temperature!r}.")
        self.temperature, self.eps = t, float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        w = self.weight / (self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + self.eps)
        return F.conv2d(x * self.temperature, w, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"


class NormalisedMaskPredictor(nn.Module):
    """torchvision's mask predictor (2x transposed conv, ReLU) with :class:`NormalisedConv2d` as its last layer
    (``mask_fcn_logits``); ``num_classes`` counts the background (C + 1), as torchvision's does."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int, temperature: float = 20.0) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)
        self.relu = nn.ReLU(inplace=True)
        self.mask_fcn_logits = NormalisedConv2d(dim_reduced, num_classes, temperature)
        for name, param in self.named_parameters():  # torchvision's MaskRCNNPredictor initialisation
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")
            elif "bias" in name:
                nn.init.zeros_(param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_fcn_logits(self.relu(self.conv5_mask(x)))


def build_mask_predictor(kind: str, in_channels: int, num_classes: int) -> nn.Module:
    """The mask predictor ``build_detector(mask_predictor=kind)`` puts on a Mask R-CNN (``num_classes`` C + 1)."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    if kind == "normalised":
        return NormalisedMaskPredictor(in_channels, in_channels, num_classes)
    if kind == "standard":
        return MaskRCNNPredictor(in_channels, in_channels, num_classes)
    raise IIFError(f"unknown mask_predictor {kind!r}; use one of {', '.join(MASK_PREDICTORS)}.")
