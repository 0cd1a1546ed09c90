"""The three modulation layers side by side: SPADE, CLADE and CLADE-ICPE.

All share one interface: ``norm(x, cond)`` with ``cond`` a :class:`Conditioning`, and
``norm.modulation(cond, size) -> (scale, shift)`` such that the output is
``param_free_norm(x) * scale + shift`` (CLADE with instance maps then appends one
edge-feature channel). Setting ``norm.modulation_override`` to a function with the same
signature replaces scale and shift (the probe's ablations use it). Module and parameter
names are the official ones, so official checkpoints load without a mapping.

- SPADE:      scale = 1 + conv(relu(conv(segmap))),  shift = conv(relu(conv(segmap)))
- CLADE:      scale = gamma[class],                  shift = beta[class]
- CLADE-ICPE: scale = gamma[class] * (1 + w . icpe), shift = beta[class] * (1 + w' . icpe)

These are the reference definitions; ``models.fusion.fuse_for_inference`` converts a
generator once into a faster equivalent for inference (BatchNorm folded into the tables).
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
        self._cache: dict = {}

    def _memo(self, kind: str, size, compute):
        # Sizes as ints: under torch.jit tracing (fvcore) x.shape holds 0-dim tensors that
        # hash by identity, and the cache would never hit, unlike in eager execution.
        key = (kind, tuple(int(s) for s in size))
        if key not in self._cache:
            self._cache[key] = compute(key[1])
        return self._cache[key]

    def resize(self, t: torch.Tensor, size) -> torch.Tensor:
        """Nearest resizing, as the official code does it (``F.interpolate``)."""
        if tuple(t.shape[-2:]) == tuple(size):
            return t
        return F.interpolate(t, size=size, mode="nearest")

    def semantic_at(self, size) -> torch.Tensor:
        """The full semantic map (one-hot + edge), nearest-resized to ``size``."""
        return self._memo("semantic", size, lambda s: self.resize(self.semantic, s))

    def label_at(self, size) -> torch.Tensor:
        """Class index map [N, H, W] (long) at ``size``; argmax of the class channels."""
        # argmax commutes with nearest resizing (both pick pixels), so take it once; max(1)
        # returns the first maximal index like argmax, at about half its cost. float32
        # holds class ids exactly; interpolate has no integer kernel on every device.
        full = self._memo("argmax", self.semantic.shape[-2:],
                          lambda s: self.semantic[:, : self.class_nc].max(1, keepdim=True)[1])
        return self._memo("label", size, lambda s: self.resize(full.float(), s).long())[:, 0]

    def edge_at(self, size) -> torch.Tensor:
        """Instance-edge channel [N, 1, H, W] at ``size``."""
        return self._memo("edge", size, lambda s: self.resize(self.semantic[:, -1:], s))

    def dist_at(self, size) -> torch.Tensor:
        """ICPE map [N, 2, H, W] at ``size``."""
        return self._memo("dist", size, lambda s: self.resize(self.dist, s))


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (a standard module, so SyncBatchNorm conversion works) or InstanceNorm."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    return nn.InstanceNorm2d(channels, affine=False)


class ModulatedNorm(nn.Module):
    """Base of the modulation layers: ``param_free_norm(x) * scale + shift``.

    A subclass sets ``self.param_free_norm`` and implements ``modulation(cond, size)``. When its
    registry entry has ``edge_channel`` and the config has instance maps, the toolkit gives the
    layer ``inst_conv`` (``models.registry.build_norm``), a 1x1 conv of the instance-edge map
    appended here as one more output channel, as the official CLADE does.
    """

    modulation_override = None  # callable(cond, size) -> (scale, shift), or None

    def __init__(self):
        super().__init__()
        self.inst_conv: nn.Module | None = None  # set by models.registry.build_norm (see above)

    def modulation(self, cond: Conditioning, size) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement modulation(cond, size) -> (scale, shift)")

    def modulation_parts(self) -> list[str]:
        """Names of the child modules that compute the modulation: their parameters and MACs are
        this layer's modulation cost (``analysis.costs.layers``); the others count as backbone.
        Default: every child but the parameter-free norm (which has a cost role of its own)."""
        return [name for name, _ in self.named_children() if name != "param_free_norm"]

    def forward(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        scale, shift = (self.modulation_override or self.modulation)(cond, x.shape[-2:])
        out = self.param_free_norm(x) * scale + shift
        if self.inst_conv is not None:
            out = torch.cat((out, self.inst_conv(cond.edge_at(x.shape[-2:])).to(out.dtype)), dim=1)
        return out


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

    With instance maps the registry gives it the edge-feature channel (``inst_conv``, see
    :class:`ModulatedNorm`), as the official code does.
    """

    def __init__(self, channels: int, class_nc: int, icpe: bool = False, norm: str = "batch"):
        super().__init__()
        self.param_free_norm = param_free_norm(norm, channels)
        self.class_specified_affine = ClassAffine(class_nc, channels, icpe)

    def modulation(self, cond: Conditioning, size):
        dist = cond.dist_at(size) if self.class_specified_affine.icpe else None
        return self.class_specified_affine(cond.label_at(size), dist)
