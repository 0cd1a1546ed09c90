"""DRN-D-105 ``DRNSeg`` (github.com/fyu/drn, ``drn.py`` + ``segment.py``): the Cityscapes segmenter of
the SPADE / CLADE papers.

The module and attribute names are the reference's, so the released ``drn-d-105_ms_cityscapes.pth``
(keys ``base.<i>.*``, ``seg.*``, ``up.weight``) loads unmapped. ``base`` is the DRN without its
average pool and classifier (``list(drn.children())[:-2]``): nine stages, output stride 8,
dilations 2 and 4 in stages 5 and 6 instead of striding, and the degridding conv stages 7 and 8
without residuals. ``seg`` maps the 512 features to the 19 Cityscapes train ids; ``up`` is a
fixed depthwise transposed conv (bilinear kernel, x8).

    net = DRNSeg(19).eval()
    logits = net.logits(x)        # [N, 19, ceil(H/8), ceil(W/8)], x normalised as net.protocol says
    full = net(x)                 # [N, 19, 8 ceil(H/8), 8 ceil(W/8)]: ``up`` applied (argmax = the reference's)
"""
from __future__ import annotations

import torch
from torch import nn

from analysis.quality.paper_segmenters.bottleneck import EXPANSION, residual_stage

# Channels and block counts of drn_d_105: DRN(Bottleneck, [1, 1, 3, 4, 23, 3, 1, 1], arch='D').
CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
LAYERS = (1, 1, 3, 4, 23, 3, 1, 1)


def conv_stage(inplanes: int, channels: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """DRN-D's plain conv stages (``_make_conv_layers``): [conv 3x3, BN, ReLU] x convs."""
    modules = []
    for i in range(convs):
        modules += [nn.Conv2d(inplanes if i == 0 else channels, channels, 3, stride if i == 0 else 1,
                              padding=dilation, dilation=dilation, bias=False),
                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


def bilinear_up_weight(classes: int, kernel: int = 16) -> torch.Tensor:
    """The fixed kernel of ``up`` (``fill_up_weights``): one bilinear tent per class channel."""
    f = -(-kernel // 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    tent = 1 - (torch.arange(kernel, dtype=torch.float64) / f - c).abs()
    return (tent[:, None] * tent[None, :]).float().expand(classes, 1, kernel, kernel).clone()


class DRNSeg(nn.Module):
    """DRN-D-105 + 1x1 classifier + fixed x8 transposed-conv upsampling (``segment.py``'s DRNSeg)."""

    output_stride = 8

    def __init__(self, classes: int = 19):
        super().__init__()
        c = CHANNELS
        stages = [nn.Sequential(nn.Conv2d(3, c[0], 7, 1, padding=3, bias=False), nn.BatchNorm2d(c[0]),
                                nn.ReLU(inplace=True)),
                  conv_stage(c[0], c[0], LAYERS[0]),
                  conv_stage(c[0], c[1], LAYERS[1], stride=2),
                  residual_stage(c[1], c[2], LAYERS[2], stride=2),
                  residual_stage(c[2] * EXPANSION, c[3], LAYERS[3], stride=2),
                  residual_stage(c[3] * EXPANSION, c[4], LAYERS[4], dilation=2),
                  residual_stage(c[4] * EXPANSION, c[5], LAYERS[5], dilation=4),
                  conv_stage(c[5] * EXPANSION, c[6], LAYERS[6], dilation=2),
                  conv_stage(c[6], c[7], LAYERS[7])]
        self.base = nn.Sequential(*stages)
        self.seg = nn.Conv2d(c[7], classes, 1, bias=True)
        self.up = nn.ConvTranspose2d(classes, classes, 16, stride=8, padding=4, groups=classes, bias=False)
        with torch.no_grad():
            self.up.weight.copy_(bilinear_up_weight(classes))
        self.up.weight.requires_grad_(False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits at 1/8 of the input size: ``seg(base(x))``."""
        return self.seg(self.base(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``up(logits)``: the scores whose argmax ``segment.py test`` takes (its LogSoftmax keeps the argmax)."""
        return self.up(self.logits(x))
