"""The three modulation layers side by side: SPADE, CLADE and CLADE-ICPE.

All share one interface: ``norm(x, cond)`` with ``cond`` a :class:`Conditioning`, and
``norm.modulation(cond, size) -> (scale, shift)`` such that the output is
``param_free_norm(x) * scale + shift`` (CLADE with instance maps then appends one
edge-feature channel). Setting ``norm.modulation_override`` to a function with the same
signature replaces scale and shift (used by the probe's ablations; fast paths step aside). Module and parameter names are the official ones, so official
checkpoints load without a mapping.

- SPADE:      scale = 1 + conv(relu(conv(segmap))),  shift = conv(relu(conv(segmap)))
- CLADE:      scale = gamma[class],                  shift = beta[class]
- CLADE-ICPE: scale = gamma[class] * (1 + w . icpe), shift = beta[class] * (1 + w' . icpe)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Conditioning:
    """Label information for one generator call, resized once per resolution.

    The official code resizes the full one-hot map in every norm layer (18 times per
    forward pass, 151+ channels each). Here every resolution is computed once and shared
    by all layers at that resolution, and CLADE only ever resizes the label *index* map.
    """

    def __init__(self, semantic: torch.Tensor, class_nc: int, has_edge: bool,
                 dist: torch.Tensor | None = None):
        self.semantic = semantic
        self.class_nc = class_nc
        self.has_edge = has_edge
        self.dist = dist
        self._label = None
        self._cache: dict = {}

    def _memo(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def semantic_at(self, size) -> torch.Tensor:
        """The full semantic map (one-hot + edge), nearest-resized to ``size``."""
        size = tuple(size)
        return self._memo(("semantic", size), lambda: _nearest(self.semantic, size))

    def label_at(self, size) -> torch.Tensor:
        """Class index map [N, H, W] (long) at ``size``; argmax of the class channels."""
        size = tuple(size)
        if self._label is None:
            # argmax commutes with nearest resizing (both pick pixels), so take it once.
            self._label = self.semantic[:, : self.class_nc].argmax(1, keepdim=True)
        return self._memo(("label", size), lambda: _nearest_index(self._label, size))

    def edge_at(self, size) -> torch.Tensor:
        """Instance-edge channel [N, 1, H, W] at ``size``."""
        size = tuple(size)
        return self._memo(("edge", size), lambda: _nearest(self.semantic[:, -1:], size))

    def dist_at(self, size) -> torch.Tensor:
        """ICPE map [N, 2, H, W] at ``size``."""
        size = tuple(size)
        return self._memo(("dist", size), lambda: _nearest(self.dist, size))


def _nearest(t: torch.Tensor, size) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="nearest")


def _nearest_index(label: torch.Tensor, size) -> torch.Tensor:
    # float32 holds class ids exactly; interpolate has no integer kernel on every device.
    return _nearest(label.float(), size).long()[:, 0]


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (a standard module, so SyncBatchNorm conversion works) or InstanceNorm."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    return nn.InstanceNorm2d(channels, affine=False)


class ModulatedNorm(nn.Module):
    """Base of the modulation layers: ``param_free_norm(x) * scale + shift``."""

    modulation_override = None  # callable(cond, size) -> (scale, shift), or None

    def modulation(self, cond: Conditioning, size):
        raise NotImplementedError

    def scale_shift(self, cond: Conditioning, size):
        """(scale, shift) used by forward: the override when set, else ``modulation``."""
        fn = self.modulation_override or self.modulation
        return fn(cond, size)


class SPADE(ModulatedNorm):
    """Spatially-adaptive normalisation: gamma/beta predicted by convs from the segmap."""

    def __init__(self, channels: int, semantic_nc: int, hidden: int = 128,
                 kernel_size: int = 3, norm: str = "batch"):
        super().__init__()
        pad = kernel_size // 2
        self.param_free_norm = param_free_norm(norm, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(semantic_nc, hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size, padding=pad)

    def modulation(self, cond: Conditioning, size):
        actv = self.mlp_shared(cond.semantic_at(size))
        return 1 + self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        scale, shift = self.scale_shift(cond, x.shape[-2:])
        return self.param_free_norm(x) * scale + shift


class ClassAffine(nn.Module):
    """CLADE's per-class gamma/beta tables, optionally scaled by the ICPE map (1x1 convs)."""

    def __init__(self, class_nc: int, channels: int, icpe: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(class_nc, channels))
        self.bias = nn.Parameter(torch.empty(class_nc, channels))
        nn.init.uniform_(self.weight)
        nn.init.zeros_(self.bias)
        self.icpe = icpe
        if icpe:
            self.dist_conv_w = nn.Conv2d(2, 1, kernel_size=1)
            self.dist_conv_b = nn.Conv2d(2, 1, kernel_size=1)

    def forward(self, label: torch.Tensor, dist: torch.Tensor | None = None):
        """Per-pixel (gamma, beta) [N, C, H, W] for a class index map [N, H, W]."""
        # embedding gives [N, H, W, C]; the permuted view is channels_last, no copy.
        gamma = F.embedding(label, self.weight).permute(0, 3, 1, 2)
        beta = F.embedding(label, self.bias).permute(0, 3, 1, 2)
        if self.icpe:
            gamma = gamma * (1 + self.dist_conv_w(dist))
            beta = beta * (1 + self.dist_conv_b(dist))
        return gamma, beta


class CLADE(ModulatedNorm):
    """Class-adaptive normalisation (``icpe=True``: CLADE-ICPE).

    With instance maps (``edge=True``) a 1x1 conv of the instance-edge map is appended as
    one extra output channel, as in the official code.
    """

    def __init__(self, channels: int, class_nc: int, edge: bool = False, icpe: bool = False,
                 norm: str = "batch"):
        super().__init__()
        self.param_free_norm = param_free_norm(norm, channels)
        self.class_specified_affine = ClassAffine(class_nc, channels, icpe)
        self.edge = edge
        if edge:
            self.inst_conv = nn.Conv2d(1, 1, kernel_size=1)

    def modulation(self, cond: Conditioning, size):
        dist = cond.dist_at(size) if self.class_specified_affine.icpe else None
        return self.class_specified_affine(cond.label_at(size), dist)

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        scale, shift = self.scale_shift(cond, x.shape[-2:])
        out = self.param_free_norm(x) * scale + shift
        if self.edge:
            out = torch.cat((out, self.inst_conv(cond.edge_at(x.shape[-2:]))), dim=1)
        return out


def build_norm(config, channels: int) -> nn.Module:
    """The modulation layer that ``config.norm`` names, for ``channels`` feature channels."""
    if config.norm == "spade":
        return SPADE(channels, config.semantic_nc, config.spade_hidden,
                     config.spade_kernel_size, config.param_free_norm)
    return CLADE(channels, config.class_nc, edge=not config.no_instance,
                 icpe=config.norm == "clade-icpe", norm=config.param_free_norm)


def extra_channels(config) -> int:
    """Channels a norm layer adds to its input (CLADE's instance-edge feature)."""
    return int(config.norm != "spade" and not config.no_instance)


