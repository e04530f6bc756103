"""The layers of YOLOv3 (Redmon & Farhadi, 2018): the Darknet-53 backbone and the three-scale head.

The paper's YOLOv3 rows (Tables XVII-XVIII, Fig. 6; Appendix: "the pre-trained Darknet53 was taken as the
backbone network") use this network; :mod:`iif.detection.yolo` puts the losses and the inference on it.

Darknet-53: a 3x3 stem, then five stages, each a stride-2 3x3 convolution followed by residual blocks
(1x1 to half the width, 3x3 back, added to the input); every convolution is conv + norm + LeakyReLU(0.1).
The published depth has (1, 2, 8, 8, 4) blocks at widths 64 ... 1024. The last three stages (strides 8, 16,
32) feed the head.

Head: on the stride-32 map five convolutions (1x1/3x3 alternating), then a 3x3 and the 1x1 output of
``A * (5 + C)`` channels (A = 3 anchors: 4 box offsets, 1 objectness, C class logits); the five-conv output is
reduced by a 1x1, upsampled x2 and concatenated with the stride-16 map, and so on down to stride 8.

:data:`DARKNET_SPECS` names the published network (``darknet53``) and a narrow, shallow one for CPU tests
(``darknet_tiny``: width 1/4, one block per stage), with the same three scales and anchors.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..errors import IIFError

__all__ = ["DARKNET_SPECS", "Darknet", "YOLOv3Head", "norm_factory"]

#: backbone name -> (stem width, residual blocks per stage). Stage i has width ``stem * 2**(i+1)``.
DARKNET_SPECS: dict[str, tuple[int, tuple[int, ...]]] = {
    "darknet53": (32, (1, 2, 8, 8, 4)),
    "darknet_tiny": (8, (1, 1, 1, 1, 1)),
}


def norm_factory(norm: str) -> Callable[[int], nn.Module]:
    """``bn`` (BatchNorm2d, YOLOv3's), ``frozen_bn`` (torchvision's FrozenBatchNorm2d) or ``gn`` (GroupNorm
    with ``gcd(32, channels)`` groups, so the narrow tiny network has a valid group count)."""
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        from torchvision.ops.misc import FrozenBatchNorm2d

        return FrozenBatchNorm2d
    if norm == "gn":
        return lambda ch: nn.GroupNorm(math.gcd(32, ch), ch)
    raise IIFError(f"unknown norm {norm!r} for YOLOv3; use bn, gn or frozen_bn.")


class ConvNormAct(nn.Sequential):
    """conv (no bias) + norm + LeakyReLU(0.1), Darknet's basic layer; padding keeps the size at stride 1."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), norm(cout),
                         nn.LeakyReLU(0.1, inplace=True))


class DarkResidual(nn.Module):
    """``x + conv3x3(conv1x1(x))``, the 1x1 to half the channels."""

    def __init__(self, ch: int, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.reduce = ConvNormAct(ch, ch // 2, 1, 1, norm)
        self.expand = ConvNormAct(ch // 2, ch, 3, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.expand(self.reduce(x))


class Darknet(nn.Module):
    """Darknet (``name`` in :data:`DARKNET_SPECS`); ``forward`` returns the stride 8, 16 and 32 maps, whose
    channels are :attr:`out_channels`."""

    def __init__(self, name: str = "darknet53", norm: str = "bn") -> None:
        super().__init__()
        if name not in DARKNET_SPECS:
            raise IIFError(f"unknown Darknet {name!r}; use one of {', '.join(DARKNET_SPECS)}.")
        width, blocks = DARKNET_SPECS[name]
        layer = norm_factory(norm)
        self.stem = ConvNormAct(3, width, 3, 1, layer)
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2 ** (i + 1)
            stages.append(nn.Sequential(ConvNormAct(cin, cout, 3, 2, layer),
                                        *[DarkResidual(cout, layer) for _ in range(n)]))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(width * 2 ** (i + 1) for i in (2, 3, 4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 2:
                outs.append(x)
        return outs  # strides 8, 16, 32


def _five_convs(cin: int, ch: int, norm) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(cin, ch, 1, 1, norm), ConvNormAct(ch, 2 * ch, 3, 1, norm),
                         ConvNormAct(2 * ch, ch, 1, 1, norm), ConvNormAct(ch, 2 * ch, 3, 1, norm),
                         ConvNormAct(2 * ch, ch, 1, 1, norm))


class YOLOv3Head(nn.Module):
    """The three-scale head on Darknet's (C3, C4, C5); ``forward`` returns one ``(N, A, H, W, 5 + C)`` tensor
    per scale, finest (stride 8) first: ``[..., :4]`` box offsets ``(tx, ty, tw, th)``, ``[..., 4]`` the
    objectness logit, ``[..., 5:]`` the C class logits.

    The objectness bias starts at ``-ln((1 - 0.01) / 0.01)`` (an initial objectness of 0.01, the prior
    RetinaNet gives its focal-loss classifier, so the focal loss does not start dominated by background)."""

    def __init__(self, in_channels: tuple[int, int, int], num_classes: int, num_anchors: int = 3,
                 norm: str = "bn") -> None:
        super().__init__()
        layer = norm_factory(norm)
        c3, c4, c5 = in_channels
        self.num_classes, self.num_anchors = int(num_classes), int(num_anchors)
        out = self.num_anchors * (5 + self.num_classes)
        # coarse to fine: stride 32, 16, 8
        self.blocks = nn.ModuleList([_five_convs(c5, c5 // 2, layer),
                                     _five_convs(c4 + c5 // 4, c4 // 2, layer),
                                     _five_convs(c3 + c4 // 4, c3 // 2, layer)])
        self.laterals = nn.ModuleList([ConvNormAct(c5 // 2, c5 // 4, 1, 1, layer),
                                       ConvNormAct(c4 // 2, c4 // 4, 1, 1, layer)])
        self.outputs = nn.ModuleList([nn.Sequential(ConvNormAct(c // 2, c, 3, 1, layer), nn.Conv2d(c, out, 1))
                                      for c in (c5, c4, c3)])
        prior = -math.log((1 - 0.01) / 0.01)
        for seq in self.outputs:
            bias = seq[-1].bias.detach().view(self.num_anchors, 5 + self.num_classes)
            bias.zero_()
            bias[:, 4] = prior

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = feats
        outs, x = [], None
        for i, lateral_in in enumerate((c5, c4, c3)):
            if x is not None:
                up = nn.functional.interpolate(self.laterals[i - 1](x), size=lateral_in.shape[-2:], mode="nearest")
                lateral_in = torch.cat([up, lateral_in], dim=1)
            x = self.blocks[i](lateral_in)
            outs.append(self.outputs[i](x))
        n = c3.shape[0]
        shaped = [o.view(n, self.num_anchors, 5 + self.num_classes, o.shape[-2], o.shape[-1]).permute(0, 1, 3, 4, 2)
                  for o in outs]
        return shaped[::-1]  # finest first
