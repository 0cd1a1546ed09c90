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

Eval fast path (``cond.fast``, set by the generator in eval mode without autograd): BatchNorm
with running statistics is a per-channel affine ``x * a + b``, so it folds into the
modulation. CLADE becomes one gather from a [classes, 2C] table and one multiply-add,
SPADE one conv with 2C outputs (gamma and beta convs side by side, BatchNorm folded into
their weights) and one multiply-add. Same result up to rounding (tests/models/test_fast_paths.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fast import (class_affine, conv2d_cached, conv_eval, data_dependent_choices, eval_cache, has_user_hooks,
                   leaky_relu_output, onehot_conv, onehot_conv_applies, syncs_allowed, tap_indices, tensor_key)


class Conditioning:
    """Label information for one generator call, resized once per resolution.

    The official code resizes the full one-hot map in every norm layer (18 times per
    forward pass, 151+ channels each). Here every resolution is computed once and shared
    by all layers at that resolution, and CLADE only ever resizes the label *index* map.
    """

    fast = False  # the generator sets True in its eval fast path (see models/fast.py)

    def __init__(self, semantic: torch.Tensor, class_nc: int, has_edge: bool,
                 dist: torch.Tensor | None = None):
        self.semantic = semantic
        self.class_nc = class_nc
        self.has_edge = has_edge
        self.dist = dist
        self._label = self._max = None
        self._cache: dict = {}

    def _memo(self, key, compute):
        # Sizes as ints: under torch.jit tracing (fvcore) x.shape holds 0-dim tensors that
        # hash by identity, and the cache would never hit, unlike in eager execution.
        kind, size, *rest = key
        key = (kind, tuple(int(s) for s in size), *rest)
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _resize(self, t: torch.Tensor, size) -> torch.Tensor:
        # The fast path picks pixels by index; the plain path keeps interpolate, the op the
        # official code runs and the FLOP counters see.
        return _nearest_gather(t, size) if self.fast else _nearest(t, size)

    def semantic_at(self, size) -> torch.Tensor:
        """The full semantic map (one-hot + edge), nearest-resized to ``size``."""
        size = tuple(size)
        return self._memo(("semantic", size), lambda: self._resize(self.semantic, size))

    def label_at(self, size) -> torch.Tensor:
        """Class index map [N, H, W] (long) at ``size``; argmax of the class channels."""
        size = tuple(size)
        if self._label is None:
            # argmax commutes with nearest resizing (both pick pixels), so take it once.
            # max(1) returns the first maximal index like argmax, at about half its cost.
            self._max, self._label = self.semantic[:, : self.class_nc].max(1, keepdim=True)
        if self.fast:
            return self._memo(("label", size), lambda: _nearest_gather(self._label, size)[:, 0])
        # float32 holds class ids exactly; interpolate has no integer kernel on every device.
        return self._memo(("label", size), lambda: _nearest(self._label.float(), size).long()[:, 0])

    def edge_at(self, size) -> torch.Tensor:
        """Instance-edge channel [N, 1, H, W] at ``size``."""
        size = tuple(size)
        return self._memo(("edge", size), lambda: self._resize(self.semantic[:, -1:], size))

    def dist_at(self, size) -> torch.Tensor:
        """ICPE map [N, 2, H, W] at ``size``."""
        size = tuple(size)
        return self._memo(("dist", size), lambda: self._resize(self.dist, size))

    def one_hot_at(self, size) -> bool:
        """Whether the class channels at ``size`` are exactly one-hot (then convs may gather).

        Checked on the full-resolution map once when asked at full size (every resized map
        picks pixels of it), else on the resized map.
        """
        if not data_dependent_choices():
            return False  # compiled code and CUDA graphs keep the convolutions
        size = tuple(size)
        full = tuple(self.semantic.shape[-2:])
        if ("one_hot", full) in self._cache:
            return self._cache[("one_hot", full)]
        if size == full:
            self.label_at(full)  # its max(1) gives the per-pixel maxima
            classes = self.semantic[:, : self.class_nc]
            return self._memo(("one_hot", size), lambda: _is_one_hot(classes, self._max))
        return self._memo(("one_hot", size), lambda: _is_one_hot(self.semantic_at(size)[:, : self.class_nc]))

    def taps_at(self, size, kernel_size: int) -> torch.Tensor:
        """Row indices of a one-hot conv (see ``models.fast.tap_indices``) at ``size``."""
        size = tuple(size)
        return self._memo(("taps", size, kernel_size),
                          lambda: tap_indices(self.label_at(size), kernel_size, self.class_nc))


def _nearest(t: torch.Tensor, size) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="nearest")


def _nearest_gather(t: torch.Tensor, size) -> torch.Tensor:
    """The pixels :func:`_nearest` picks, by index: any dtype, reads only the rows
    and columns kept (interpolate copies a whole 151-channel map to shrink it to 8x8)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    rows = _nearest_source(t.shape[-2], size[0], t.device)
    cols = _nearest_source(t.shape[-1], size[1], t.device)
    return t.index_select(-2, rows).index_select(-1, cols)


def _nearest_source(n_in: int, n_out: int, device) -> torch.Tensor:
    # The source index nearest interpolation picks per output index, computed by interpolate
    # itself on a ramp, so the rounding is the same.
    ramp = torch.arange(n_in, dtype=torch.float32, device=device).view(1, 1, n_in)
    return F.interpolate(ramp, size=n_out, mode="nearest").view(n_out).long()


def _is_one_hot(classes: torch.Tensor, maxima: torch.Tensor | None = None) -> bool:
    # One nonzero per pixel and that one equal to 1 <=> the max is 1 and the nonzero count
    # equals the pixel count.
    maxima = classes.amax(1) if maxima is None else maxima
    pixels = classes.numel() // max(classes.shape[1], 1)
    return bool((maxima == 1).all()) and bool(torch.count_nonzero(classes) == pixels)


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (a standard module, so SyncBatchNorm conversion works) or InstanceNorm."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    return nn.InstanceNorm2d(channels, affine=False)


# Folding x * a + b (b = -mean * a) cancels digits when |b| is large; past this bound the
# fast path subtracts the mean first (an extra elementwise pass), keeping fp32 within ~1e-5.
FOLD_MAX_SHIFT = 100.0


def foldable(norm: nn.Module) -> bool:
    """BatchNorm in eval mode with running statistics: a per-channel affine ``x * a + b``.

    Batch statistics (training, ``track_running_stats=False``) and InstanceNorm are not.
    """
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training
            and norm.running_var is not None)


def batchnorm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(a, b, center), float32 per channel, with ``norm(x) == (x - center) * a + b``.

    ``center`` is None (fully folded: ``norm(x) == x * a + b``) unless the fold would lose
    precision (see ``FOLD_MAX_SHIFT``); then it is the running mean. ``norm`` must be
    :func:`foldable`.
    """
    a = torch.rsqrt(norm.running_var.float() + norm.eps)
    mean = norm.running_mean.float()
    b = torch.zeros_like(a)
    if norm.affine:
        a, b = a * norm.weight.float(), norm.bias.float()
    folded_b = b - mean * a
    if not syncs_allowed() or bool(folded_b.abs().max() <= FOLD_MAX_SHIFT):
        return a, folded_b, None
    return a, b, mean


def _norm_key(norm: nn.Module):
    return tensor_key(*(getattr(norm, n, None) for n in ("running_mean", "running_var", "weight", "bias")))


class ModulatedNorm(nn.Module):
    """Base of the modulation layers: ``param_free_norm(x) * scale + shift``."""

    modulation_override = None  # callable(cond, size) -> (scale, shift), or None

    def modulation(self, cond: Conditioning, size):
        raise NotImplementedError

    def scale_shift(self, cond: Conditioning, size):
        """(scale, shift) used by forward: the override when set, else ``modulation``."""
        fn = self.modulation_override or self.modulation
        return fn(cond, size)

    def forward_activated(self, x: torch.Tensor, cond: Conditioning, negative_slope: float) -> torch.Tensor:
        """``leaky_relu(self(x, cond), negative_slope)``, fused into the modulation where the eval
        fast path allows (the residual blocks' fast path calls this)."""
        return leaky_relu_output(self, self(x, cond), negative_slope)

    def fused(self, cond: Conditioning) -> bool:
        """Whether forward takes the eval fast path (never when an override is set)."""
        return cond.fast and self.modulation_override is None and not self.training


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
        if self.fused(cond):
            return self._forward_fused(x, cond)
        scale, shift = self.scale_shift(cond, x.shape[-2:])
        return self.param_free_norm(x) * scale + shift

    def _shared_actv(self, cond: Conditioning, size, dtype) -> torch.Tensor:
        conv = self.mlp_shared[0]
        if (not has_user_hooks(self.mlp_shared) and cond.one_hot_at(cond.semantic.shape[-2:])
                and onehot_conv_applies(conv, cond.class_nc, cond.has_edge)):
            edge = cond.edge_at(size) if cond.has_edge else None
            actv = onehot_conv(conv, cond.taps_at(size, conv.kernel_size[0]), size, cond.class_nc, edge, dtype)
            return actv.relu_()
        segmap = cond.semantic_at(size).to(dtype).contiguous(memory_format=torch.channels_last)
        if has_user_hooks(self.mlp_shared):
            return self.mlp_shared(segmap)
        return conv_eval(conv, segmap).relu_()

    def _forward_fused(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        # bn(x) * (1 + gamma) + beta with bn(x) = x * a + b
        #   = x * conv(actv; a * Wg, a * (1 + bg)) + conv(actv; b * Wg + Wb, b * (1 + bg) + bb)
        # so one conv with 2C outputs gives the scale and shift of one multiply-add.
        if has_user_hooks(self.mlp_gamma) or has_user_hooks(self.mlp_beta):
            scale, shift = self.modulation(cond, x.shape[-2:])
            return self.param_free_norm(x) * scale + shift
        norm = self.param_free_norm
        fold = foldable(norm)

        def folded():
            wg, bg = self.mlp_gamma.weight.float(), self.mlp_gamma.bias.float()
            wb, bb = self.mlp_beta.weight.float(), self.mlp_beta.bias.float()
            a, b, center = batchnorm_affine(norm) if fold else (torch.ones_like(bg), torch.zeros_like(bg), None)
            weight = torch.cat([a[:, None, None, None] * wg, b[:, None, None, None] * wg + wb])
            bias = torch.cat([a * (1 + bg), b * (1 + bg) + bb])
            return (weight, bias), center
        key = (tensor_key(self.mlp_gamma.weight, self.mlp_gamma.bias, self.mlp_beta.weight,
                          self.mlp_beta.bias), _norm_key(norm), fold)
        weight_bias, center = eval_cache(self, "folded", key, folded)
        x = _normalise_input(norm, x, fold, center)
        actv = self._shared_actv(cond, x.shape[-2:], x.dtype)
        gb = conv2d_cached(self, "gamma_beta", key, lambda: weight_bias, actv, self.mlp_gamma.padding[0])
        c = x.shape[1]
        return torch.addcmul(gb[:, c:], x, gb[:, :c])


def _normalise_input(norm: nn.Module, x: torch.Tensor, fold: bool, center) -> torch.Tensor:
    """What the folded modulation multiplies: x itself, x - mean, or norm(x) (not foldable)."""
    if not fold:
        return norm(x)
    return x if center is None else x - center.to(x.dtype)[:, None, None]


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

    def icpe_scales(self, dist: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 2]: ``1 + dist_conv_w(dist)`` and ``1 + dist_conv_b(dist)`` as one small matmul
        (channels last, as :func:`models.fast.class_affine` reads them)."""
        if has_user_hooks(self.dist_conv_w) or has_user_hooks(self.dist_conv_b):
            return torch.cat([1 + self.dist_conv_w(dist), 1 + self.dist_conv_b(dist)], 1).permute(0, 2, 3, 1)
        convs = (self.dist_conv_w, self.dist_conv_b)
        weight = torch.cat([conv.weight.reshape(1, 2) for conv in convs]).t()  # [2 inputs, 2 outputs]
        bias = 1 + torch.cat([conv.bias for conv in convs])
        rows = dist.permute(0, 2, 3, 1)
        return torch.addmm(bias.to(dist.dtype), rows.reshape(-1, 2), weight.to(dist.dtype)).view(*rows.shape[:3], 2)


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
        if self.fused(cond) and not has_user_hooks(self.class_specified_affine):
            return self._forward_fused(x, cond)
        scale, shift = self.scale_shift(cond, x.shape[-2:])
        out = self.param_free_norm(x) * scale + shift
        if self.edge:
            out = torch.cat((out, self.inst_conv(cond.edge_at(x.shape[-2:])).to(out.dtype)), dim=1)
        return out

    def forward_activated(self, x: torch.Tensor, cond: Conditioning, negative_slope: float) -> torch.Tensor:
        if self.fused(cond) and not (has_user_hooks(self) or has_user_hooks(self.class_specified_affine)):
            return self._forward_fused(x, cond, negative_slope)
        return super().forward_activated(x, cond, negative_slope)

    def _forward_fused(self, x: torch.Tensor, cond: Conditioning, negative_slope: float | None = None) -> torch.Tensor:
        # bn(x) * gamma[c] + beta[c] with bn(x) = x * a + b is x * (a * gamma)[c] + (b * gamma + beta)[c]:
        # one gather from a [classes, 2C] table and one multiply-add (models.fast.class_affine).
        # With ICPE, out = (x * (a * gamma)[c] + (b * gamma)[c]) * (1 + w.icpe) + beta[c] * (1 + w'.icpe).
        size = x.shape[-2:]
        affine_module = self.class_specified_affine
        norm = self.param_free_norm
        fold = foldable(norm)
        icpe = affine_module.icpe
        dtype = x.dtype

        def tables():
            gamma, beta = affine_module.weight.float(), affine_module.bias.float()
            a, b, center = batchnorm_affine(norm) if fold else (torch.ones_like(gamma[0]), torch.zeros_like(gamma[0]), None)
            parts = [gamma * a, gamma * b, beta] if icpe else [gamma * a, gamma * b + beta]
            return torch.cat(parts, 1).to(dtype), center
        key = (tensor_key(affine_module.weight, affine_module.bias), _norm_key(norm), fold, dtype)
        table, center = eval_cache(self, "tables", key, tables)
        x = _normalise_input(norm, x, fold, center)
        scales = affine_module.icpe_scales(cond.dist_at(size)) if icpe else None
        edge = self._edge_feature(cond.edge_at(size)) if self.edge else None
        return class_affine(x, cond.label_at(size), table, scales=scales, extra=edge,
                            negative_slope=negative_slope)

    def _edge_feature(self, edge: torch.Tensor) -> torch.Tensor:
        # inst_conv is a 1x1 conv from one channel to one: w * edge + b, without a conv call.
        conv = self.inst_conv
        if has_user_hooks(conv):
            return conv(edge)
        return torch.addcmul(conv.bias.view(1, 1, 1, 1), edge, conv.weight.view(1, 1, 1, 1))


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
