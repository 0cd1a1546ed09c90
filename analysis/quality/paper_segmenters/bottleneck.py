"""The ResNet bottleneck block and its stages, shared by DRN-D-105 and the UPerNet encoder
(the reference repositories' ``Bottleneck`` / ``_make_layer``, with their module names)."""
from __future__ import annotations

import torch
from torch import nn

EXPANSION = 4   # output channels per bottleneck width


class Bottleneck(nn.Module):
    """ResNet bottleneck, stride on the 3x3 conv; ``dilation`` applies to the 3x3 conv (DRN's reference
    passes (d1, d2) and uses d2; UPerNet's ResNet-101 has none)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def residual_stage(inplanes: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``_make_layer``: ``blocks`` bottlenecks, the first with ``stride`` and a projection when the shape
    changes; every block at ``dilation`` (DRN's ``new_level=False`` for its dilated stages)."""
    downsample = None
    if stride != 1 or inplanes != planes * EXPANSION:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * EXPANSION, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes * EXPANSION))
    layers = [Bottleneck(inplanes, planes, stride, downsample, dilation)]
    layers += [Bottleneck(planes * EXPANSION, planes, dilation=dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)
