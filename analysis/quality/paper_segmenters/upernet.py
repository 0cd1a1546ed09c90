"""ResNet-101 encoder + UPerNet decoder (github.com/CSAILVision/semantic-segmentation-pytorch,
``mit_semseg/models``, config ``ade20k-resnet101-upernet``): the ADE20K segmenter of the papers.

Two modules named as the released files are keyed: ``encoder`` (``encoder_epoch_50.pth``: the
deep-stem ResNet-101 of ``mit_semseg/models/resnet.py`` without pool and classifier: three 3x3
stem convs, max pool, four bottleneck stages, output stride 32) and ``decoder``
(``decoder_epoch_50.pth``: UPerNet with a pyramid pooling module over the last stage, an FPN over
the four stages, fpn_dim 512, 150 classes). The released networks use SynchronizedBatchNorm2d,
which at eval is plain BatchNorm2d with the same keys.

    net = UPerNetSegmenter().eval()
    logits = net.logits(x)     # [N, 150, H/4, W/4]: the decoder's conv_last output, before softmax
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from analysis.quality.paper_segmenters.bottleneck import residual_stage

LAYERS = (3, 4, 23, 3)             # resnet101
FPN_INPLANES = (256, 512, 1024, 2048)
POOL_SCALES = (1, 2, 3, 6)


def conv3x3_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ResnetEncoder(nn.Module):
    """``mit_semseg`` ``Resnet(resnet101)``: the four stages' outputs (strides 4, 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True)
        self.conv3, self.bn3, self.relu3 = nn.Conv2d(64, 128, 3, 1, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = residual_stage(128, 64, LAYERS[0])
        self.layer2 = residual_stage(256, 128, LAYERS[1], stride=2)
        self.layer3 = residual_stage(512, 256, LAYERS[2], stride=2)
        self.layer4 = residual_stage(1024, 512, LAYERS[3], stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.maxpool(self.relu3(self.bn3(self.conv3(x))))
        out = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            out.append(x)
        return out


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class UPerNet(nn.Module):
    """``mit_semseg`` ``UPerNet`` (arch ``upernet``: fc_dim 2048, fpn_dim 512); returns ``conv_last``'s logits."""

    def __init__(self, num_class: int = 150, fc_dim: int = 2048, fpn_dim: int = 512):
        super().__init__()
        self.ppm_pooling = nn.ModuleList(nn.AdaptiveAvgPool2d(s) for s in POOL_SCALES)
        self.ppm_conv = nn.ModuleList(nn.Sequential(nn.Conv2d(fc_dim, 512, 1, bias=False), nn.BatchNorm2d(512),
                                                    nn.ReLU(inplace=True)) for _ in POOL_SCALES)
        self.ppm_last_conv = conv3x3_bn_relu(fc_dim + len(POOL_SCALES) * 512, fpn_dim)
        self.fpn_in = nn.ModuleList(nn.Sequential(nn.Conv2d(c, fpn_dim, 1, bias=False), nn.BatchNorm2d(fpn_dim),
                                                  nn.ReLU(inplace=True)) for c in FPN_INPLANES[:-1])
        self.fpn_out = nn.ModuleList(nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim)) for _ in FPN_INPLANES[:-1])
        self.conv_last = nn.Sequential(conv3x3_bn_relu(len(FPN_INPLANES) * fpn_dim, fpn_dim),
                                       nn.Conv2d(fpn_dim, num_class, 1))

    def forward(self, conv_out: list[torch.Tensor]) -> torch.Tensor:
        conv5 = conv_out[-1]
        ppm = [conv5] + [conv(_resize(pool(conv5), conv5.shape[2:]))
                         for pool, conv in zip(self.ppm_pooling, self.ppm_conv)]
        f = self.ppm_last_conv(torch.cat(ppm, 1))
        features = [f]
        for i in reversed(range(len(conv_out) - 1)):   # top-down: lateral branch + upsampled coarser level
            lateral = self.fpn_in[i](conv_out[i])
            f = lateral + _resize(f, lateral.shape[2:])
            features.append(self.fpn_out[i](f))
        features.reverse()   # finest first
        size = features[0].shape[2:]
        fusion = torch.cat([features[0]] + [_resize(t, size) for t in features[1:]], 1)
        return self.conv_last(fusion)


class UPerNetSegmenter(nn.Module):
    """``encoder`` + ``decoder`` as ``SegmentationModule`` holds them (state_dict keys ``encoder.*``, ``decoder.*``)."""

    output_stride = 4

    def __init__(self, num_class: int = 150):
        super().__init__()
        self.encoder = ResnetEncoder()
        self.decoder = UPerNet(num_class)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits at 1/4 of the input size (input sides multiples of 32, as the reference pads them)."""
        return self.decoder(self.encoder(x))

    forward = logits
