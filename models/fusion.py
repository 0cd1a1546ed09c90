"""``fuse_for_inference(G)``: a one-time conversion of a generator into a faster equivalent.

Like ``torch.nn.utils.fusion.fuse_conv_bn_eval``, the conversion reads G's weights once and
returns a new module (G is left unchanged and usable) whose fused layers hold what they
need as buffers computed at conversion time:

- BatchNorm with running statistics is a per-channel affine ``x * a + b`` and folds into the
  modulation: CLADE becomes one gather from a [classes, 2C] table (3C with ICPE) and one
  multiply-add (``models.fast.class_affine``), SPADE one conv with 2C outputs (gamma and beta
  convs side by side, BatchNorm folded into their weights) and one multiply-add;
- spectral norm is divided into the conv weights once; weights are cast and (on CPU)
  prepacked once per compute dtype and input shape; the residual add is fused into the last
  conv of a block, leaky_relu runs in place;
- convs on the exact one-hot map (``fc``, SPADE's ``mlp_shared``) become row gathers, and
  label maps are resized by picking indices (:class:`FusedConditioning`).

The fused model computes what ``G.eval()`` computes (fp32 within 1e-4, tested) and takes
``dtype=torch.bfloat16`` to compute in bf16. Conversion dispatches on the exact type
(``type(m) is SPADE``): a subclass, a layer with a ``modulation_override`` or an unknown
class is copied unfused and keeps its own forward. Hooks registered on G are not carried
over. Convert again after changing G's weights.

    G_fast = fuse_for_inference(G)
    image = G_fast(semantic, dtype=torch.bfloat16)
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResnetBlock
from .fast import (class_affine, conv2d_prepared, conv_weight, data_dependent_choices, onehot_conv,
                   onehot_conv_rows, tap_indices)
from .generator import Generator, check_generator_inputs, input_features, run_blocks, up_blocks
from .norms import CLADE, SPADE, ClassAffine, Conditioning

# Folding x * a + b (b = -mean * a) cancels digits when |b| is large; past this bound the
# fused layer subtracts the mean first (an extra elementwise pass), keeping fp32 within ~1e-5.
FOLD_MAX_SHIFT = 100.0


class FusedConditioning(Conditioning):
    """Conditioning that resizes by picking indices (any dtype; reads only the rows and
    columns kept, where interpolate copies a whole 151-channel map to shrink it to 8x8),
    and knows whether the class channels are exactly one-hot (then convs may gather)."""

    def resize(self, t: torch.Tensor, size) -> torch.Tensor:
        if tuple(t.shape[-2:]) == tuple(size):
            return t
        rows = _nearest_source(t.shape[-2], size[0], t.device)
        cols = _nearest_source(t.shape[-1], size[1], t.device)
        return t.index_select(-2, rows).index_select(-1, cols)

    def label_at(self, size) -> torch.Tensor:
        full = self._memo("label", self.semantic.shape[-2:], lambda s: self._max_and_label()[1])
        return self._memo("label", size, lambda s: self.resize(full, s))[:, 0]

    def _max_and_label(self):
        # max(1) returns the first maximal index like argmax; the maxima serve the one-hot check.
        return self._memo("max", self.semantic.shape[-2:],
                          lambda s: self.semantic[:, : self.class_nc].max(1, keepdim=True))

    def one_hot_at(self, size) -> bool:
        """Whether the class channels at ``size`` are exactly one-hot. Checked on the
        full-resolution map once that is known (every resized map picks pixels of it)."""
        if not data_dependent_choices():
            return False  # compiled code and CUDA graphs keep the convolutions
        full = tuple(self.semantic.shape[-2:])
        if ("one_hot", full) in self._cache:
            return self._cache[("one_hot", full)]
        if tuple(size) == full:
            maxima = self._max_and_label()[0]
            return self._memo("one_hot", full, lambda s: _is_one_hot(self.semantic[:, : self.class_nc], maxima))
        return self._memo("one_hot", size, lambda s: _is_one_hot(self.semantic_at(s)[:, : self.class_nc]))

    def taps_at(self, size, kernel_size: int) -> torch.Tensor:
        """Row indices of a one-hot conv (see ``models.fast.tap_indices``) at ``size``."""
        return self._memo(f"taps{kernel_size}", size,
                          lambda s: tap_indices(self.label_at(s), kernel_size, self.class_nc))


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


class _Prepared(nn.Module):
    """A module with a store of dtype/layout-specific copies of its buffers, emptied
    whenever the buffers move (``.to()``, ``.cuda()``...)."""

    def __init__(self):
        super().__init__()
        self._prepared: dict = {}

    def _apply(self, fn, recurse=True):
        self._prepared = {}
        return super()._apply(fn, recurse)

    def prepared(self, key, make):
        """``make()``, stored under ``key`` (recomputed while compiling: nothing stored)."""
        if torch.compiler.is_compiling():
            return make()
        if key not in self._prepared:
            self._prepared[key] = make()
        return self._prepared[key]


class FusedConv(_Prepared):
    """A stride-1 'same' conv with its effective weight (spectral norm divided) as a buffer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, padding: int):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.padding = padding

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "FusedConv":
        return cls(conv_weight(conv), conv.bias, conv.padding[0])

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return conv2d_prepared(x, self.weight, self.bias, self.padding, self._prepared, residual)


def _conv_fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
            and conv.padding[0] == conv.padding[1] and conv.kernel_size[0] == conv.kernel_size[1])


def _fuse_conv(conv: nn.Module) -> nn.Module:
    return FusedConv.from_conv(conv) if _conv_fusable(conv) else _unfused(conv)


def _unfused(module: nn.Module) -> nn.Module:
    """An independent eval-mode copy of a module the fuser does not know."""
    return copy.deepcopy(module).eval().requires_grad_(False)


def _run_conv(conv: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(conv, FusedConv):
        return conv(x, residual)
    out = conv(x.to(_param_dtype(conv, x))).to(x.dtype)
    return out if residual is None else out + residual


def _param_dtype(module: nn.Module, x: torch.Tensor) -> torch.dtype:
    param = next(module.parameters(), None)
    return x.dtype if param is None else param.dtype


class FusedInputConv(_Prepared):
    """A conv on the semantic map (``conv`` must pass ``_conv_fusable``): row gathers when the
    class channels are one-hot (``models.fast.onehot_conv``), else the prepared convolution."""

    def __init__(self, conv: nn.Conv2d, classes: int, has_edge: bool):
        super().__init__()
        self.conv = FusedConv.from_conv(conv)
        self.classes, self.kernel_size = classes, conv.kernel_size[0]
        # The gather needs an odd 'same' kernel whose inputs are the classes (+ the edge).
        k = self.kernel_size
        self.gather = k % 2 == 1 and conv.padding[0] == k // 2 and conv.in_channels == classes + int(has_edge)
        if self.gather:
            self.register_buffer("rows", onehot_conv_rows(self.conv.weight, self.conv.bias, classes))
            self.edge_conv = FusedConv(self.conv.weight[:, classes:], None, self.kernel_size // 2) if has_edge else None

    def forward(self, cond: FusedConditioning, size, dtype: torch.dtype) -> torch.Tensor:
        if self.gather and cond.one_hot_at(size):
            rows = self.prepared(dtype, lambda: self.rows.to(dtype))
            out = onehot_conv(rows, cond.taps_at(size, self.kernel_size), size)
            if self.edge_conv is not None:
                out = out + self.edge_conv(cond.edge_at(size).to(dtype))
            return out
        return self.conv(cond.semantic_at(size).to(dtype).contiguous(memory_format=torch.channels_last))


class FoldedNorm(nn.Module):
    """What a folded modulation multiplies: ``x`` (BatchNorm folded away), ``x - mean``
    (folding would cancel digits, see FOLD_MAX_SHIFT) or ``norm(x)`` (not foldable).
    Build with :meth:`fold`, which also returns the affine ``(a, b)`` to fold into the modulation."""

    def __init__(self, norm: nn.Module | None, center: torch.Tensor | None):
        super().__init__()
        self.norm = norm
        self.register_buffer("center", center)

    @classmethod
    def fold(cls, norm: nn.Module, channels: int) -> tuple["FoldedNorm", torch.Tensor, torch.Tensor]:
        """(module, a, b) with ``norm(x) == module(x) * a + b`` per channel (float32)."""
        if not _foldable(norm):
            return cls(_unfused(norm), None), torch.ones(channels), torch.zeros(channels)
        a = torch.rsqrt(norm.running_var.float() + norm.eps)
        mean = norm.running_mean.float()
        b = torch.zeros_like(a)
        if norm.affine:
            a, b = a * norm.weight.float(), norm.bias.float()
        folded = b - mean * a
        if bool(folded.abs().max() <= FOLD_MAX_SHIFT):
            return cls(None, None), a.detach(), folded.detach()
        return cls(None, mean.detach().clone()), a.detach(), b.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            return self.norm(x)
        return x if self.center is None else x - self.center.to(x.dtype)[:, None, None]


def _foldable(norm: nn.Module) -> bool:
    """BatchNorm with running statistics (its eval mode): a per-channel affine ``x * a + b``."""
    return isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None


class FusedSPADE(nn.Module):
    """SPADE with BatchNorm folded into one conv with 2C outputs:

    bn(x) * (1 + gamma) + beta with bn(x) = x * a + b
      = x * conv(actv; a * Wg, a * (1 + bg)) + conv(actv; b * Wg + Wb, b * (1 + bg) + bb).
    """

    def __init__(self, m: SPADE, classes: int, has_edge: bool):
        super().__init__()
        c = m.mlp_gamma.out_channels
        self.normalise, a, b = FoldedNorm.fold(m.param_free_norm, c)
        self.shared = FusedInputConv(m.mlp_shared[0], classes, has_edge)
        wg, bg = m.mlp_gamma.weight.detach().float(), m.mlp_gamma.bias.detach().float()
        wb, bb = m.mlp_beta.weight.detach().float(), m.mlp_beta.bias.detach().float()
        weight = torch.cat([a[:, None, None, None] * wg, b[:, None, None, None] * wg + wb])
        bias = torch.cat([a * (1 + bg), b * (1 + bg) + bb])
        self.gamma_beta = FusedConv(weight, bias, m.mlp_gamma.padding[0])

    def forward(self, x: torch.Tensor, cond: FusedConditioning, negative_slope: float | None = None) -> torch.Tensor:
        x = self.normalise(x)
        actv = self.shared(cond, x.shape[-2:], x.dtype).relu_()
        gb = self.gamma_beta(actv)
        c = x.shape[1]
        out = torch.addcmul(gb[:, c:], x, gb[:, :c])
        return out if negative_slope is None else F.leaky_relu_(out, negative_slope)


class FusedCLADE(_Prepared):
    """CLADE(-ICPE) as one gather from a per-class table and one multiply-add:

    bn(x) * gamma[c] + beta[c] with bn(x) = x * a + b is x * (a * gamma)[c] + (b * gamma + beta)[c];
    with ICPE, out = (x * (a * gamma)[c] + (b * gamma)[c]) * (1 + w.icpe) + beta[c] * (1 + w'.icpe).
    """

    def __init__(self, m: CLADE):
        super().__init__()
        affine = m.class_specified_affine
        gamma, beta = affine.weight.detach().float(), affine.bias.detach().float()
        self.normalise, a, b = FoldedNorm.fold(m.param_free_norm, gamma.shape[1])
        self.icpe = affine.icpe
        parts = [gamma * a, gamma * b, beta] if self.icpe else [gamma * a, gamma * b + beta]
        self.register_buffer("table", torch.cat(parts, 1))
        if self.icpe:  # 1 + dist_conv_w(dist), 1 + dist_conv_b(dist) as one [2, 2] matmul
            convs = (affine.dist_conv_w, affine.dist_conv_b)
            self.register_buffer("icpe_weight", torch.cat([c.weight.detach().reshape(1, 2) for c in convs]).t().clone())
            self.register_buffer("icpe_bias", 1 + torch.cat([c.bias.detach() for c in convs]))
        self.edge = m.inst_conv is not None
        if self.edge:  # inst_conv is 1x1 from one channel to one: w * edge + b
            self.register_buffer("edge_weight", m.inst_conv.weight.detach().reshape(1, 1, 1, 1).clone())
            self.register_buffer("edge_bias", m.inst_conv.bias.detach().reshape(1, 1, 1, 1).clone())

    def forward(self, x: torch.Tensor, cond: FusedConditioning, negative_slope: float | None = None) -> torch.Tensor:
        size, dtype = x.shape[-2:], x.dtype
        x = self.normalise(x)
        table = self.prepared(dtype, lambda: self.table.to(dtype))
        scales = None
        if self.icpe:
            rows = cond.dist_at(size).permute(0, 2, 3, 1)
            scales = torch.addmm(self.icpe_bias.to(rows.dtype), rows.reshape(-1, 2),
                                 self.icpe_weight.to(rows.dtype)).view(*rows.shape[:3], 2)
        edge = torch.addcmul(self.edge_bias, cond.edge_at(size), self.edge_weight) if self.edge else None
        return class_affine(x, cond.label_at(size), table, scales=scales, extra=edge, negative_slope=negative_slope)


def _fuse_norm(m: nn.Module, config) -> nn.Module:
    """The fused layer for a built-in norm of the exact type, else an unfused copy."""
    if getattr(m, "modulation_override", None) is not None:
        return _unfused(m)
    if type(m) is CLADE and type(m.class_specified_affine) is ClassAffine:
        return FusedCLADE(m)
    if (type(m) is SPADE and type(m.mlp_shared[0]) is nn.Conv2d
            and type(m.mlp_shared[1]) is nn.ReLU and _conv_fusable(m.mlp_gamma) and _conv_fusable(m.mlp_beta)
            and _conv_fusable(m.mlp_shared[0])):
        return FusedSPADE(m, config.class_nc, not config.no_instance)
    return _unfused(m)


def _run_norm(norm: nn.Module, x: torch.Tensor, cond: FusedConditioning,
              negative_slope: float | None = None) -> torch.Tensor:
    if isinstance(norm, (FusedSPADE, FusedCLADE)):
        return norm(x, cond, negative_slope)
    out = norm(x.to(_param_dtype(norm, x)), cond).to(x.dtype)  # an unfused layer in its own dtype
    return out if negative_slope is None else F.leaky_relu(out, negative_slope)


class FusedResnetBlock(nn.Module):
    """ResnetBlock with fused norms and prepared convs, the residual add fused into conv_1."""

    def __init__(self, block: ResnetBlock, config):
        super().__init__()
        self.learned_shortcut = block.learned_shortcut
        names = ["0", "1"] + (["s"] if self.learned_shortcut else [])
        for n in names:
            setattr(self, f"conv_{n}", _fuse_conv(getattr(block, f"conv_{n}")))
            setattr(self, f"norm_{n}", _fuse_norm(getattr(block, f"norm_{n}"), config))

    def forward(self, x: torch.Tensor, cond: FusedConditioning) -> torch.Tensor:
        x_s = _run_conv(self.conv_s, _run_norm(self.norm_s, x, cond)) if self.learned_shortcut else x
        dx = _run_conv(self.conv_0, _run_norm(self.norm_0, x, cond, 0.2))
        dx = _run_norm(self.norm_1, dx, cond, 0.2)
        return _run_conv(self.conv_1, dx, residual=x_s)


def _fuse_block(block: nn.Module, config) -> nn.Module:
    return FusedResnetBlock(block, config) if type(block) is ResnetBlock else _unfused(block)


class FusedGenerator(nn.Module):
    """The inference form of a :class:`Generator` (see the module docstring).

    Call as G: ``G_fast(semantic, z=None, dist=None, *, dtype=None)``; ``dtype`` is the
    compute dtype (output in the input's dtype). Runs without autograd.
    """

    def __init__(self, G: Generator):
        super().__init__()
        cfg = self.config = G.config
        self.sh, self.sw = G.sh, G.sw
        if not cfg.use_vae and _conv_fusable(G.fc):
            self.fc = FusedInputConv(G.fc, cfg.class_nc, not cfg.no_instance)
        else:
            self.fc = _unfused(G.fc)
        for name, child in G.named_children():
            if name not in ("fc", "conv_img"):
                setattr(self, name, _fuse_block(child, cfg))
        self.conv_img = _fuse_conv(G.conv_img)
        self.eval()

    @torch.no_grad()
    def forward(self, semantic: torch.Tensor, z: torch.Tensor | None = None,
                dist: torch.Tensor | None = None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        cfg = self.config
        check_generator_inputs(cfg, semantic, z, dist)
        compute = dtype or semantic.dtype
        cond = FusedConditioning(semantic, cfg.class_nc, has_edge=not cfg.no_instance, dist=dist)
        if isinstance(self.fc, FusedInputConv):
            x = self.fc(cond, (self.sh, self.sw), compute)
        else:   # use_vae's Linear, or an fc the fuser does not know, in its own dtype
            x = input_features(self, semantic, z)
        x = x.to(compute).contiguous(memory_format=torch.channels_last)
        x = run_blocks(self, x, cond)
        last = up_blocks(self)[-1]  # a fused block's output is fresh: activate it in place
        x = F.leaky_relu_(x, 0.2) if isinstance(last, FusedResnetBlock) else F.leaky_relu(x, 0.2)
        x = _run_conv(self.conv_img, x)
        out = torch.tanh_(x).contiguous()
        # An explicit compute dtype still returns the input's dtype; under autocast the
        # output keeps the dtype autocast gives it, as in the reference.
        return out if dtype is None else out.to(semantic.dtype)


def fuse_for_inference(G: nn.Module) -> nn.Module:
    """A new module computing ``G.eval()``'s function faster (see the module docstring).

    G itself is not changed. A module that is not exactly a :class:`Generator` is returned
    as an unfused eval-mode copy.
    """
    if type(G) is not Generator:
        return _unfused(G)
    return FusedGenerator(G)
