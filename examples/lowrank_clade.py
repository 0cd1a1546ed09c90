"""CLADE with low-rank class tables. A plugin: copy, edit, pass it with ``--plugin``.

    python run_analysis.py --plugin examples/lowrank_clade.py --train-norms spade,clade,lowrank-clade

    scale = 1 + U_gamma[class] @ V_gamma,   shift = U_beta[class] @ V_beta

with ``U`` [classes, RANK] and ``V`` [RANK, C]: CLADE's [classes, C] tables constrained to rank
``RANK``, so a layer holds 2 * RANK * (classes + C) table entries instead of 2 * classes * C
(ADE20K, C = 1024, rank 8: 18,800 instead of 309,248). Classes share RANK directions of
modulation: fewer parameters, possibly lower quality, which is the trade the report measures.

``U`` starts random and ``V`` at zero, so every layer starts as the identity modulation
(scale 1, shift 0) and both factors get gradients from the first step on (both zero would be a
saddle). With instance maps the toolkit appends CLADE's edge-feature channel (``edge_channel=True``:
a 1x1 conv of the instance-edge map, ``models.norms.ModulatedNorm``), so it drops into the same
generator as CLADE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import ModulatedNorm, register_norm
from models.norms import param_free_norm

RANK = 8  # rank of the class tables


class LowRankClassAffine(nn.Module):
    """Per-class scale and shift from rank-``rank`` factors (index 0: gamma, 1: beta)."""

    def __init__(self, class_nc: int, channels: int, rank: int = RANK):
        super().__init__()
        self.class_factors = nn.Parameter(torch.randn(2, class_nc, rank) / rank ** 0.5)
        self.channel_factors = nn.Parameter(torch.zeros(2, rank, channels))

    def tables(self) -> torch.Tensor:
        """[2, classes, C]: the full gamma table (minus its 1) and the beta table."""
        return torch.bmm(self.class_factors, self.channel_factors)

    def forward(self, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel (scale, shift) [N, C, H, W] for a class index map [N, H, W]."""
        gamma, beta = self.tables()
        return (1 + F.embedding(label, gamma).permute(0, 3, 1, 2),
                F.embedding(label, beta).permute(0, 3, 1, 2))


class LowRankCLADE(ModulatedNorm):
    """CLADE with rank-``RANK`` class tables (see the module docstring)."""

    def __init__(self, channels: int, config):
        super().__init__()
        self.param_free_norm = param_free_norm(config.param_free_norm, channels)
        self.lowrank_affine = LowRankClassAffine(config.class_nc, channels)

    def modulation(self, cond, size):
        return self.lowrank_affine(cond.label_at(size))


register_norm("lowrank-clade", LowRankCLADE, label=f"CLADE low-rank (r={RANK})", color="#e377c2",
              edge_channel=True, class_adaptive=True, key_markers=("lowrank_affine",))
