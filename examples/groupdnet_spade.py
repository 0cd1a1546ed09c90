"""GroupDNet-style SPADE: gamma and beta predicted by group convolutions. A plugin: copy, edit, pass
it with ``--plugin``.

    python run_analysis.py --plugin examples/groupdnet_spade.py --train-norms spade,clade,groupdnet-spade

    scale = 1 + conv_g(relu(conv(segmap))),   shift = conv_g'(relu(conv(segmap)))

The shared conv on the segmap is SPADE's; ``conv_g`` / ``conv_g'`` split their hidden input and
their output into ``groups`` groups, each group of C / groups channels predicted from its own
hidden / groups channels, so they cost 1 / groups of SPADE's gamma/beta convs (nearly all of
SPADE's parameters and MACs in the wide layers).

Groups: GroupDNet (Zhu et al., "Semantically Multi-modal Image Synthesis", CVPR 2020) gives every
class its own group in the encoder and decreases the number of groups along the decoder. Per-class
groups here would need the hidden width (128) and the channels divisible by the class count, and
no preset allows it (9, 35, 151 and 183 classes are odd), so this layer keeps GroupDNet's
decreasing groups: ``groups = gcd(hidden, channels // CHANNELS_PER_GROUP)``, i.e. 16 groups in the
1024-channel layers down to 1 (plain SPADE) at 64 channels with ngf 64.
"""
from __future__ import annotations

import math

from torch import nn

from models import ModulatedNorm, register_norm
from models.norms import param_free_norm

CHANNELS_PER_GROUP = 64  # feature channels per group; wider layers get more groups


def group_count(hidden: int, channels: int) -> int:
    """Groups of the gamma/beta convs: a divisor of both ``hidden`` and ``channels``."""
    return math.gcd(hidden, max(1, channels // CHANNELS_PER_GROUP))


class GroupDNetSPADE(ModulatedNorm):
    """SPADE whose gamma/beta convs are group convolutions (see the module docstring)."""

    def __init__(self, channels: int, config):
        super().__init__()
        hidden, k = config.spade_hidden, config.spade_kernel_size
        self.groups = group_count(hidden, channels)
        self.param_free_norm = param_free_norm(config.param_free_norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(config.semantic_nc, hidden, k, padding=k // 2), nn.ReLU())
        self.group_gamma = nn.Conv2d(hidden, channels, k, padding=k // 2, groups=self.groups)
        self.group_beta = nn.Conv2d(hidden, channels, k, padding=k // 2, groups=self.groups)

    def modulation(self, cond, size):
        actv = self.mlp_shared(cond.semantic_at(size))
        return 1 + self.group_gamma(actv), self.group_beta(actv)


register_norm("groupdnet-spade", GroupDNetSPADE, label="GroupDNet-SPADE", color="#8c564b",
              key_markers=("group_gamma",))
