"""CIFAR ResNets (He et al. 2016, Sec. 4.2) with optional Squeeze-and-Excitation (Hu et al. 2018).

Three stages of ``n`` BasicBlocks with 16/32/64 channels (depth = 6n + 2; ResNet-32 has n = 5),
option-A shortcuts (strided subsampling plus zero channels, no parameters). The SE variant is the
paper's CIFAR backbone (Sec. V-B; docs/method.md#models): SE-ResNet-32 with reduction r = 4, the SE module
after ``bn2`` and before the residual addition, average squeeze and sigmoid excitation.

``style`` picks which code the network follows:

- ``"official"`` (default): the authors' CIFAR code (``resnet_cifar.py`` of the IIF repository, built on
  LDAM-DRW's): SE excitation by two fully connected layers *without bias*, and every convolution and
  fully connected layer initialised Kaiming-normal with fan-in (``init.kaiming_normal_`` defaults).
  SE-ResNet-32 with the cosine head over 100 classes then has 483,344 parameters.
- ``"torchvision"``: torchvision's ``SqueezeExcitation`` (1x1 convolutions with biases) and torchvision
  ResNet's initialisation (Kaiming-normal with fan-out, zero biases); 700 more parameters for
  SE-ResNet-32. This is the library's SE-ResNet-32 before 2026-11-27: use it to load those checkpoints.

The backbone returns pooled features ``(N, 64)``; the classifier head is attached by
:func:`iif.models.build_model`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import IIFError

__all__ = [
    "STYLES",
    "option_a_shortcut",
    "ShortcutA",
    "BiasFreeSqueezeExcite",
    "SqueezeExcite",
    "CifarBasicBlock",
    "CifarResNet",
    "kaiming_init_",
    "official_init_",
]

STYLES: tuple[str, ...] = ("official", "torchvision")


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


class BiasFreeSqueezeExcite(nn.Module):
    """SE module of the authors' CIFAR code: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, FCs without bias.

    ``fc1`` maps ``C -> C // r`` and ``fc2`` maps back, both ``nn.Linear(..., bias=False)``: ``2 C^2 / r``
    parameters per block.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


def SqueezeExcite(channels: int, reduction: int, style: str = "official") -> nn.Module:
    """SE module of Hu et al. with ``C // r`` hidden units in the given ``style`` (see the module docstring).

    ``"official"``: :class:`BiasFreeSqueezeExcite`. ``"torchvision"``: ``torchvision.ops.SqueezeExcitation``
    (1x1 convs with bias act as the FC layers on the pooled vector), imported here so ``import iif`` does
    not require torchvision.
    """
    if style == "official":
        return BiasFreeSqueezeExcite(channels, reduction)
    if style == "torchvision":
        from torchvision.ops import SqueezeExcitation

        return SqueezeExcitation(channels, max(1, channels // reduction))
    raise IIFError(f"Unknown CIFAR ResNet style {style!r}; choose one of {list(STYLES)} (default 'official').")


class CifarBasicBlock(nn.Module):
    """3x3-3x3 residual block; ``se_reduction`` adds an SE module of ``style`` after ``bn2`` (before the add)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        se_reduction: int | None = None,
        style: str = "official",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction, style) if se_reduction else nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = ShortcutA(out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


def official_init_(module: nn.Module) -> None:
    """The authors' CIFAR init: Kaiming-normal (fan-in, gain sqrt(2)) for every Conv2d and Linear weight.

    This is ``torch.nn.init.kaiming_normal_`` with its defaults, applied as ``_weights_init`` does in the
    LDAM-DRW / IIF ``resnet_cifar.py``; biases and BatchNorm keep PyTorch's defaults (BN weight 1, bias 0).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


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
        style: str = "official",
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise IIFError(f"Unknown CIFAR ResNet style {style!r}; choose one of {list(STYLES)} (default 'official').")
        if depth < 8 or (depth - 2) % 6:
            raise IIFError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...), got {depth}.")
        if len(widths) < 1 or any(int(w) < 1 for w in widths):
            raise IIFError(f"CIFAR ResNet widths must be positive channel counts, one per stage; got {widths!r}.")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.se_reduction = se_reduction
        self.style = style
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        prev = widths[0]
        for i, width in enumerate(widths):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(CifarBasicBlock(prev, width, stride, se_reduction, style))
                prev = width
            stages.append(nn.Sequential(*layers))
        self.num_stages = len(stages)
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.feature_dim = prev
        if style == "official":
            official_init_(self)
        else:
            kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        # flatten (not view) so channels_last tensors work.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)
