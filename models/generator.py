"""The SPADE / CLADE / CLADE-ICPE generator (official SPADEGenerator, norm chosen by config)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResnetBlock
from .fast import conv_eval, leaky_relu_output, onehot_conv, onehot_conv_applies
from .norms import Conditioning
from .presets import GeneratorConfig


class Generator(nn.Module):
    """Label map -> image. Call ``G(semantic, z=None, dist=None)``.

    ``semantic``: [N, semantic_nc, H, W] one-hot over the classes (+ dontcare) with the
    instance-edge channel last (see ``data.labels.make_semantic``); ``dist``: [N, 2, H, W]
    ICPE map, required for CLADE-ICPE; ``z``: [N, z_dim] when ``use_vae``.

    In eval mode without autograd (``torch.no_grad()`` / ``torch.inference_mode()``) the
    call takes a fast path with the same result (models/fast.py); ``dtype=torch.bfloat16``
    then computes in bf16 (output in the input's dtype). ``G.fast_eval = False`` turns the
    fast path off.
    """

    fast_eval = True  # take the eval fast path when eval mode and no autograd

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        nf = config.ngf
        self.sh, self.sw = config.latent_size
        if config.use_vae:
            self.fc = nn.Linear(config.z_dim, 16 * nf * self.sh * self.sw)
        else:
            self.fc = nn.Conv2d(config.semantic_nc, 16 * nf, 3, padding=1)
        self.head_0 = ResnetBlock(16 * nf, 16 * nf, config)
        self.G_middle_0 = ResnetBlock(16 * nf, 16 * nf, config)
        self.G_middle_1 = ResnetBlock(16 * nf, 16 * nf, config)
        self.up_0 = ResnetBlock(16 * nf, 8 * nf, config)
        self.up_1 = ResnetBlock(8 * nf, 4 * nf, config)
        self.up_2 = ResnetBlock(4 * nf, 2 * nf, config)
        self.up_3 = ResnetBlock(2 * nf, 1 * nf, config)
        final_nc = nf
        if config.num_upsampling_layers == "most":
            self.up_4 = ResnetBlock(nf, nf // 2, config)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)

    def check_inputs(self, semantic: torch.Tensor, z=None, dist=None) -> None:
        """Raise ValueError naming what was expected if the inputs do not fit this config."""
        cfg = self.config
        if semantic.dim() != 4 or semantic.shape[1] != cfg.semantic_nc:
            raise ValueError(
                f"semantic has shape {tuple(semantic.shape)}; expected [N, {cfg.semantic_nc}, H, W] "
                f"(label_nc={cfg.label_nc} + dontcare={int(cfg.contain_dontcare_label)} "
                f"+ instance edge={int(not cfg.no_instance)})")
        if tuple(semantic.shape[-2:]) != cfg.output_size:
            raise ValueError(
                f"semantic has spatial size {tuple(semantic.shape[-2:])}; this generator "
                f"(crop_size={cfg.crop_size}, aspect_ratio={cfg.aspect_ratio}, "
                f"num_upsampling_layers={cfg.num_upsampling_layers!r}) produces {cfg.output_size}")
        if cfg.norm == "clade-icpe":
            expected = (semantic.shape[0], 2, *cfg.output_size)
            if dist is None:
                raise ValueError("CLADE-ICPE needs dist=<ICPE map [N, 2, H, W]> "
                                 "(see data.icpe.icpe_map)")
            if tuple(dist.shape) != expected:
                raise ValueError(f"dist has shape {tuple(dist.shape)}; expected {expected}")
        if z is not None and (not cfg.use_vae or z.shape[-1] != cfg.z_dim):
            raise ValueError(f"z has shape {tuple(z.shape)}; this generator "
                             + (f"expects [N, {cfg.z_dim}]" if cfg.use_vae else "has use_vae=False and takes no z"))

    def uses_fast_path(self, semantic: torch.Tensor | None = None) -> bool:
        """Whether a call now takes the eval fast path (eval mode, no autograd, not tracing,
        real tensors: meta inputs, as used to count FLOPs, take the plain path)."""
        return (self.fast_eval and not self.training and not torch.is_grad_enabled()
                and not torch.jit.is_tracing() and not (semantic is not None and semantic.is_meta))

    def forward(self, semantic: torch.Tensor, z: torch.Tensor | None = None,
                dist: torch.Tensor | None = None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        self.check_inputs(semantic, z, dist)
        cfg = self.config
        cond = Conditioning(semantic, cfg.class_nc, has_edge=not cfg.no_instance, dist=dist)
        if self.uses_fast_path(semantic):
            out = self._forward_fast(cond, z, dtype or semantic.dtype)
            # An explicit compute dtype still returns the input's dtype; under autocast the
            # output keeps the dtype autocast gives it, as on the plain path.
            return out if dtype is None else out.to(semantic.dtype)
        if dtype is not None and dtype != semantic.dtype:
            raise ValueError(f"dtype={dtype} applies to the eval fast path only (G.eval() under "
                             f"torch.no_grad(), G.fast_eval=True); for training use torch.autocast")
        if cfg.use_vae:
            if z is None:
                z = torch.randn(semantic.shape[0], cfg.z_dim, dtype=semantic.dtype, device=semantic.device)
            x = self.fc(z).view(-1, 16 * cfg.ngf, self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(semantic, size=(self.sh, self.sw), mode="nearest"))

        x = self.head_0(x, cond)
        x = self.G_middle_0(_up(x), cond)
        if cfg.num_upsampling_layers in ("more", "most"):
            x = _up(x)
        x = self.G_middle_1(x, cond)
        for block in self.up_blocks():
            x = block(_up(x), cond)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.tanh(x)

    def _forward_fast(self, cond: Conditioning, z, dtype: torch.dtype) -> torch.Tensor:
        cfg = self.config
        semantic = cond.semantic
        cond.fast = True
        if cfg.use_vae:
            if z is None:
                z = torch.randn(semantic.shape[0], cfg.z_dim, dtype=semantic.dtype, device=semantic.device)
            x = self.fc(z).view(-1, 16 * cfg.ngf, self.sh, self.sw)
        else:
            size = (self.sh, self.sw)
            if cond.one_hot_at(size) and onehot_conv_applies(self.fc, cfg.class_nc, cond.has_edge):
                edge = cond.edge_at(size) if cond.has_edge else None
                x = onehot_conv(self.fc, cond.taps_at(size, self.fc.kernel_size[0]), size,
                                cfg.class_nc, edge, dtype)
            else:
                x = conv_eval(self.fc, cond.semantic_at(size).to(dtype).contiguous(memory_format=torch.channels_last))
        x = x.to(dtype).contiguous(memory_format=torch.channels_last)

        x = self.head_0(x, cond)
        x = self.G_middle_0(_up(x), cond)
        if cfg.num_upsampling_layers in ("more", "most"):
            x = _up(x)
        x = self.G_middle_1(x, cond)
        blocks = self.up_blocks()
        for block in blocks:
            x = block(_up(x), cond)
        x = conv_eval(self.conv_img, leaky_relu_output(blocks[-1], x))
        return torch.tanh_(x).contiguous()

    def up_blocks(self) -> list[nn.Module]:
        names = ["up_0", "up_1", "up_2", "up_3"] + (["up_4"] if hasattr(self, "up_4") else [])
        return [getattr(self, n) for n in names]


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")
