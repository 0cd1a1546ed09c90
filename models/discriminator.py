"""The official multiscale PatchGAN discriminator (spectral norm + instance norm)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spectral import maybe_spectral
from .presets import DiscriminatorConfig


def _spectral_instance(conv_in: int, conv_out: int, stride: int) -> nn.Sequential:
    # The official 'spectralinstance' layer drops the conv bias (the norm cancels it).
    conv = nn.Conv2d(conv_in, conv_out, 4, stride=stride, padding=2, bias=False)
    return nn.Sequential(maybe_spectral(conv, True), nn.InstanceNorm2d(conv_out, affine=False))


class NLayerDiscriminator(nn.Module):
    """One scale: conv(s2) -> [spectral conv + instance norm](s2, last one s1) x (n-1) -> conv."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        nf = config.ndf
        layers = [nn.Sequential(nn.Conv2d(config.input_nc, nf, 4, stride=2, padding=2),
                                nn.LeakyReLU(0.2))]
        for n in range(1, config.n_layers_D):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == config.n_layers_D - 1 else 2
            layers.append(nn.Sequential(_spectral_instance(nf_prev, nf, stride), nn.LeakyReLU(0.2)))
        layers.append(nn.Sequential(nn.Conv2d(nf, 1, 4, stride=1, padding=2)))
        for i, layer in enumerate(layers):
            self.add_module(f"model{i}", layer)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All intermediate features; the last one is the patch prediction."""
        features = []
        for layer in self.children():
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` patch discriminators on the input downsampled by 2 between scales."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        for i in range(config.num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(config))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x = cat(semantic, image) -> per scale, the list of features (prediction last)."""
        if x.dim() != 4 or x.shape[1] != self.config.input_nc:
            raise ValueError(f"discriminator input has shape {tuple(x.shape)}; expected "
                             f"[N, {self.config.input_nc}, H, W] (semantic {self.config.semantic_nc} "
                             f"+ image {self.config.output_nc} channels)")
        results = []
        for d in self.children():
            results.append(d(x))
            x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
        return results
