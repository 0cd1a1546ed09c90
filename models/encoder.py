"""The official VAE image encoder (``use_vae``): image -> (mu, logvar) of z."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spectral import maybe_spectral


def _layer(cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
    return nn.Sequential(maybe_spectral(conv, True), nn.InstanceNorm2d(cout, affine=False))


class ConvEncoder(nn.Module):
    """Stride-2 spectral/instance-norm convs down to 4x4, then linear heads for mu and logvar.

    Official layout: six convs on a 256x256 resize when crop_size >= 256. The official
    five-conv variant for smaller crops cannot run (it also resizes to 256, leaving 8x8
    for a 4x4 head); here it resizes to 128 instead, which keeps the same parameters.
    """

    def __init__(self, ngf: int = 64, crop_size: int = 256, z_dim: int = 256):
        super().__init__()
        self.input_size = 256 if crop_size >= 256 else 128
        self.layer1 = _layer(3, ngf)
        self.layer2 = _layer(ngf, ngf * 2)
        self.layer3 = _layer(ngf * 2, ngf * 4)
        self.layer4 = _layer(ngf * 4, ngf * 8)
        self.layer5 = _layer(ngf * 8, ngf * 8)
        if crop_size >= 256:
            self.layer6 = _layer(ngf * 8, ngf * 8)
        self.fc_mu = nn.Linear(ngf * 8 * 4 * 4, z_dim)
        self.fc_var = nn.Linear(ngf * 8 * 4 * 4, z_dim)

    def conv_layers(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name.startswith("layer")]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = (self.input_size, self.input_size)
        x = image if image.shape[-2:] == size else F.interpolate(image, size=size, mode="bilinear")
        first, *rest = self.conv_layers()
        x = first(x)
        for layer in rest:
            x = layer(F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)
