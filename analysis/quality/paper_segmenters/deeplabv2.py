"""DeepLabV2 ResNet-101 with multi-scale inputs (github.com/kazuto1011/deeplab-pytorch,
``libs/models``: ``MSC(DeepLabV2(182, [3, 4, 23, 3], [6, 12, 18, 24]), scales=[0.5, 0.75])``): the
COCO-Stuff segmenter of the papers.

Names follow the reference, so ``deeplabv2_resnet101_msc-cocostuff164k-100000.pth`` (keys
``base.layer1.conv1.conv.weight`` ...) loads unmapped: ``base`` is the MSRA ResNet-101 (7x7 stem
with a ceil-mode max pool, stride on the 1x1 ``reduce`` conv, output stride 8 with dilations 2
and 4) and the ASPP head (four dilated 3x3 convs, summed). ``MSC`` runs ``base`` on the input and
on copies resized by 0.5 and 0.75 and takes the pixel-wise max of the logits at the full-scale
size.

    net = MSC(DeepLabV2(182)).eval()
    logits = net.logits(x)     # [N, 182, ceil(H/8), ceil(W/8)], x = BGR in [0, 255] minus the Caffe mean
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_BLOCKS = (3, 4, 23, 3)
ATROUS_RATES = (6, 12, 18, 24)
MSC_SCALES = (0.5, 0.75)


class _ConvBnReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, dilation: int, relu: bool = True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout, eps=1e-5))
        if relu:
            self.add_module("relu", nn.ReLU())


class _Bottleneck(nn.Module):
    """MSRA bottleneck: the stride sits on the 1x1 ``reduce`` conv."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, downsample: bool):
        super().__init__()
        mid = cout // 4
        self.reduce = _ConvBnReLU(cin, mid, 1, stride, 0, 1)
        self.conv3x3 = _ConvBnReLU(mid, mid, 3, 1, dilation, dilation)
        self.increase = _ConvBnReLU(mid, cout, 1, 1, 0, 1, relu=False)
        self.shortcut = _ConvBnReLU(cin, cout, 1, stride, 0, 1, relu=False) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.increase(self.conv3x3(self.reduce(x))) + self.shortcut(x))


class _ResLayer(nn.Sequential):
    def __init__(self, n_layers: int, cin: int, cout: int, stride: int, dilation: int):
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"block{i + 1}", _Bottleneck(cin if i == 0 else cout, cout, stride if i == 0 else 1,
                                                         dilation, downsample=i == 0))


class _Stem(nn.Sequential):
    def __init__(self, cout: int):
        super().__init__()
        self.add_module("conv1", _ConvBnReLU(3, cout, 7, 2, 3, 1))
        self.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling: the sum of four dilated 3x3 convs (children ``c0`` .. ``c3``)."""

    def __init__(self, cin: int, cout: int, rates):
        super().__init__()
        for i, rate in enumerate(rates):
            self.add_module(f"c{i}", nn.Conv2d(cin, cout, 3, 1, padding=rate, dilation=rate, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(stage(x) for stage in self.children())


class DeepLabV2(nn.Sequential):
    """Dilated ResNet-101 + ASPP, output stride 8."""

    def __init__(self, n_classes: int = 182, n_blocks=N_BLOCKS, atrous_rates=ATROUS_RATES):
        super().__init__()
        ch = [64 * 2 ** p for p in range(6)]
        self.add_module("layer1", _Stem(ch[0]))
        self.add_module("layer2", _ResLayer(n_blocks[0], ch[0], ch[2], 1, 1))
        self.add_module("layer3", _ResLayer(n_blocks[1], ch[2], ch[3], 2, 1))
        self.add_module("layer4", _ResLayer(n_blocks[2], ch[3], ch[4], 1, 2))
        self.add_module("layer5", _ResLayer(n_blocks[3], ch[4], ch[5], 1, 4))
        self.add_module("aspp", _ASPP(ch[5], n_classes, atrous_rates))


class MSC(nn.Module):
    """Multi-scale inputs; at eval the pixel-wise max over the scales (1 and ``scales``)."""

    output_stride = 8

    def __init__(self, base: nn.Module, scales=MSC_SCALES):
        super().__init__()
        self.base = base
        self.scales = tuple(scales)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel-wise max of the logits of ``x`` and of ``x`` resized by each scale, at the full-scale size."""
        logits = self.base(x)
        size = logits.shape[2:]
        for p in self.scales:
            scaled = self.base(F.interpolate(x, scale_factor=p, mode="bilinear", align_corners=False))
            logits = torch.maximum(logits, F.interpolate(scaled, size=size, mode="bilinear", align_corners=False))
        return logits

    forward = logits
