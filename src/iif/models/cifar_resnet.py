"""CIFAR ResNets (He et al. 2016, Sec. 4.2) with optional Squeeze-and-Excitation (Hu et al. 2018).

Three stages of ``n`` BasicBlocks with 16/32/64 channels (depth = 6n + 2; ResNet-32 has n = 5),
option-A shortcuts (strided subsampling plus zero channels, no parameters) and Kaiming initialisation.
The SE variant (paper Sec. IV, SPEC section 5: SE-ResNet-32, reduction r = 4) puts the SE module after
``bn2`` and before the residual addition, with average squeeze and sigmoid excitation.

The backbone returns pooled features ``(N, 64)``; the classifier head is attached by
:func:`iif.models.build_model`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError

__all__ = ["option_a_shortcut", "ShortcutA", "SqueezeExcite", "CifarBasicBlock", "CifarResNet", "kaiming_init_"]


def option_a_shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """He et al.'s option-A identity shortcut: subsample by ``stride`` and zero-pad the new channels.

    The extra channels are split as evenly as possible before and after the existing ones (the layout
    of the widely used CIFAR ResNet code, so block outputs line up with it). No parameters.
    """
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra < 0:
        raise IIFError(f"option-A shortcut cannot shrink channels ({x.shape[1]} -> {out_channels}).")
    if extra:
        # F.pad pads dims from the last backwards: (W_left, W_right, H_top, H_bottom, C_front, C_back).
        x = F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
    return x


class ShortcutA(nn.Module):
    """Module wrapper of :func:`option_a_shortcut`."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return option_a_shortcut(x, self.out_channels, self.stride)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, stride={self.stride}"


def SqueezeExcite(channels: int, reduction: int) -> nn.Module:
    """SE module of Hu et al.: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with ``C // r`` hidden units.

    torchvision's ``SqueezeExcitation`` implements exactly this (1x1 convs with bias act as the FC
    layers on the pooled vector); imported here so ``import iif`` does not require torchvision.
    """
    from torchvision.ops import SqueezeExcitation

    return SqueezeExcitation(channels, max(1, channels // reduction))


class CifarBasicBlock(nn.Module):
    """3x3-3x3 residual block; ``se_reduction`` adds an SE module after ``bn2`` (before the add)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, se_reduction: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction else nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ShortcutA(out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


def kaiming_init_(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan_out, ReLU, as torchvision's ResNet), BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet(nn.Module):
    """CIFAR ResNet backbone ``(N, C_in, H, W) -> (N, widths[-1])``; any input size (global pooling)."""

    def __init__(
        self,
        depth: int = 32,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise IIFError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}.")
        if len(widths) < 1 or any(int(w) < 1 for w in widths):
            raise IIFError(f"CIFAR ResNet widths must be positive channel counts, one per stage; got {widths!r}.")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.se_reduction = se_reduction
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        prev = widths[0]
        for i, width in enumerate(widths):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(CifarBasicBlock(prev, width, stride, se_reduction))
                prev = width
            stages.append(nn.Sequential(*layers))
        self.num_stages = len(stages)
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.feature_dim = prev
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        # flatten (not view) so channels_last tensors work.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
