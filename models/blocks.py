"""The residual block shared by the three generators (official SPADEResnetBlock)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norms import Conditioning
from .registry import build_norm, norm_spec
from .spectral import maybe_spectral


class ResnetBlock(nn.Module):
    """norm -> leaky_relu -> conv, twice, plus a shortcut (learned when fin != fout).

    Layout for a block with fin=1024, fout=512:

        x --norm_0--lrelu--conv_0(3x3, fin->fmid)--norm_1--lrelu--conv_1(3x3, fmid->fout)--+--> out
        x --norm_s--conv_s(1x1, fin->fout, no bias)--------------------------------------/
    """

    def __init__(self, fin: int, fout: int, config):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        extra = norm_spec(config.norm).extra_channels(config)
        sn = config.spectral
        self.conv_0 = maybe_spectral(nn.Conv2d(fin + extra, fmiddle, 3, padding=1), sn)
        self.conv_1 = maybe_spectral(nn.Conv2d(fmiddle + extra, fout, 3, padding=1), sn)
        if self.learned_shortcut:
            self.conv_s = maybe_spectral(nn.Conv2d(fin + extra, fout, 1, bias=False), sn)
        self.norm_0 = build_norm(config, fin)
        self.norm_1 = build_norm(config, fmiddle)
        if self.learned_shortcut:
            self.norm_s = build_norm(config, fin)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return x_s + dx
