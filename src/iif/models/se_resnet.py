"""ImageNet-size SE-ResNets built on torchvision's ResNet (paper Sec. V-B; docs/method.md#models).

SE-ResNet-50, SE-ResNeXt-50 (32x4d) and SE-ResNet-152 with reduction r = 16, average squeeze and sigmoid
excitation (Hu et al. 2018). We reuse ``torchvision.models.resnet.ResNet`` and only subclass its
``Bottleneck`` to add the SE module after ``bn3`` and before the residual addition, as the paper states
("the ResNet implementation follows official PyTorch implementation").

``style="official"`` (default) uses the SE module of the authors' ``resnet_pytorch.py``: two fully connected
layers without bias, left at PyTorch's default ``nn.Linear`` initialisation (torchvision's ResNet init only
touches convolutions and BatchNorm). ``style="torchvision"`` uses ``torchvision.ops.SqueezeExcitation``
(1x1 convolutions with biases), the library's form before 2026-11-27.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from ..errors import IIFError
from .cifar_resnet import STYLES, SqueezeExcite

__all__ = ["SEBottleneck", "se_resnet_backbone", "SE_RESNET_SPECS"]


class SEBottleneck(Bottleneck):
    """torchvision ``Bottleneck`` with an SE module (``C // reduction`` hidden units) after ``bn3``."""

    reduction: int = 16
    style: str = "official"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.se = SqueezeExcite(self.bn3.num_features, self.reduction, self.style)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


# name -> (blocks per stage, groups, width per group)
SE_RESNET_SPECS: dict[str, tuple[list[int], int, int]] = {
    "se_resnet50": ([3, 4, 6, 3], 1, 64),
    "se_resnext50_32x4d": ([3, 4, 6, 3], 32, 4),
    "se_resnet152": ([3, 8, 36, 3], 1, 64),
}


def _block_with(reduction: int, style: str) -> Callable[..., SEBottleneck]:
    # ResNet reads ``block.expansion`` and instantiates ``block(...)``, so a subclass carries r and the style.
    if reduction == SEBottleneck.reduction and style == SEBottleneck.style:
        return SEBottleneck
    name = f"SEBottleneckR{reduction}{style.capitalize()}"
    return type(name, (SEBottleneck,), {"reduction": reduction, "style": style})


def se_resnet_backbone(
    name: str,
    in_channels: int = 3,
    reduction: int = 16,
    zero_init_residual: bool = False,
    style: str = "official",
) -> tuple[ResNet, int]:
    """Build SE-ResNet ``name`` without its ``fc`` (replaced by Identity); returns (backbone, feature_dim).

    The backbone maps ``(N, in_channels, H, W)`` to pooled ``(N, 2048)`` features. ``style``: ``"official"``
    (bias-free SE FCs, the authors' code) or ``"torchvision"`` (``SqueezeExcitation`` with biases).
    """
    if style not in STYLES:
        raise IIFError(f"Unknown SE-ResNet style {style!r}; choose one of {list(STYLES)} (default 'official').")
    layers, groups, width = SE_RESNET_SPECS[name]
    model = ResNet(
        _block_with(reduction, style),
        layers,
        groups=groups,
        width_per_group=width,
        zero_init_residual=zero_init_residual,
    )
    feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model, feature_dim
