"""A small CNN for tiny images (8x8 digits, 28x28 MNIST / Fashion-MNIST, 32x32), fast on CPU.

Three conv-BN-ReLU layers with ``width``, ``2*width`` and ``4*width`` channels; the first two are each
followed by a 2x2 max-pool (``ceil_mode`` so an odd or tiny map never shrinks to zero), and global
average pooling makes the backbone accept any input size. Features are ``(N, 4*width)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import IIFError
from .cifar_resnet import kaiming_init_

__all__ = ["SmallCNN"]


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Backbone ``(N, in_channels, H, W) -> (N, 4 * width)`` for any ``H, W >= 1``."""

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise IIFError(f"small_cnn width must be a positive integer (e.g. 32), got {width!r}.")
        self.width = width
        self.body = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.feature_dim = 4 * width
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
