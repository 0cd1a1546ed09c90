"""The SPADE / CLADE / CLADE-ICPE generator (official SPADEGenerator, norm chosen by config)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResnetBlock
from .norms import Conditioning
from .presets import GeneratorConfig
from .registry import norm_spec


class Generator(nn.Module):
    """Label map -> image. Call ``G(semantic, z=None, dist=None)``.

    ``semantic``: [N, semantic_nc, H, W] one-hot over the classes (+ dontcare) with the
    instance-edge channel last (see ``data.labels.make_semantic``); ``dist``: [N, 2, H, W]
    ICPE map, required for CLADE-ICPE; ``z``: [N, z_dim] when ``use_vae``.

    This is the reference computation in every mode; ``models.fuse_for_inference(G)`` returns
    a faster equivalent for inference (with ``dtype=torch.bfloat16`` support).
    """

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
        check_generator_inputs(self.config, semantic, z, dist)

    def forward(self, semantic: torch.Tensor, z: torch.Tensor | None = None,
                dist: torch.Tensor | None = None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        self.check_inputs(semantic, z, dist)
        cfg = self.config
        cond = Conditioning(semantic, cfg.class_nc, has_edge=not cfg.no_instance, dist=dist)
        if dtype is not None and dtype != semantic.dtype:
            raise ValueError(f"dtype={dtype}: the reference generator computes in its input's dtype; "
                             f"use models.fuse_for_inference(G)(semantic, dtype=...) for inference, "
                             f"torch.autocast for training")
        x = run_blocks(self, input_features(self, semantic, z), cond)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.tanh(x)

    def up_blocks(self) -> list[nn.Module]:
        return up_blocks(self)


def check_generator_inputs(cfg: GeneratorConfig, semantic: torch.Tensor, z=None, dist=None) -> None:
    """Raise ValueError naming what was expected if the inputs do not fit ``cfg``."""
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
    spec = norm_spec(cfg.norm)
    if spec.needs_icpe:
        expected = (semantic.shape[0], 2, *cfg.output_size)
        if dist is None:
            raise ValueError(f"{spec.label} needs dist=<ICPE map [N, 2, H, W]> computed in the mode it was "
                             f"trained with: data.icpe.icpe_map_batch(label, mode={cfg.icpe_mode!r})")
        if tuple(dist.shape) != expected:
            raise ValueError(f"dist has shape {tuple(dist.shape)}; expected {expected}")
    if z is not None and (not cfg.use_vae or z.shape[-1] != cfg.z_dim):
        raise ValueError(f"z has shape {tuple(z.shape)}; this generator "
                         + (f"expects [N, {cfg.z_dim}]" if cfg.use_vae else "has use_vae=False and takes no z"))


def data_icpe_mode(data) -> str | None:
    """The ICPE mode of the maps ``data`` holds: ``data.icpe_mode`` of a dataset built with
    ``with_dist=True`` (also behind ``.dataset`` wrappers: DataLoader, Subset), a batch dict's
    ``"icpe_mode"`` entry (a string, or one per item after collation); "none" for a dataset built
    without ICPE maps (its ``dist`` entries are zeros); None when ``data`` does not say."""
    seen = set()
    while data is not None and id(data) not in seen:
        seen.add(id(data))
        if isinstance(data, dict):
            mode = data.get("icpe_mode")
            modes = {mode} if isinstance(mode, str) else set(mode) if isinstance(mode, (list, tuple)) else set()
            return ", ".join(sorted(modes)) or None
        mode = getattr(data, "icpe_mode", None)
        if isinstance(mode, str):
            return mode if getattr(data, "with_dist", True) else "none"
        data = getattr(data, "dataset", None)
    return None


def check_icpe_data(cfg: GeneratorConfig, data, what: str = "the data") -> None:
    """Raise ValueError when ``data`` (a dataset, DataLoader or batch dict) holds ICPE maps of
    another mode than the one ``cfg``'s generator was trained with, or none at all."""
    spec = norm_spec(cfg.norm)
    found = data_icpe_mode(data)
    if not spec.needs_icpe or found is None or found == cfg.icpe_mode:
        return
    if found == "none":
        raise ValueError(f"{what} was built without ICPE maps (with_dist=False: its 'dist' entries are zeros), but "
                         f"this {spec.label} generator reads them; build it with with_dist=True, "
                         f"icpe_mode={cfg.icpe_mode!r}")
    raise ValueError(f"{what} holds ICPE maps computed in mode {found!r}, but this {spec.label} generator was "
                     f"trained with mode {cfg.icpe_mode!r} (GeneratorConfig.icpe_mode); build the data with "
                     f"icpe_mode={cfg.icpe_mode!r}")


def input_features(net: nn.Module, semantic: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """The first feature map of ``net`` (a Generator or its fused conversion): ``fc`` of z
    (drawn when None) with ``use_vae``, else ``fc`` of the segmap resized to the latent size."""
    cfg = net.config
    if cfg.use_vae:
        if z is None:
            z = torch.randn(semantic.shape[0], cfg.z_dim, dtype=semantic.dtype, device=semantic.device)
        return net.fc(z).view(-1, 16 * cfg.ngf, net.sh, net.sw)
    return net.fc(F.interpolate(semantic, size=(net.sh, net.sw), mode="nearest"))


def up_blocks(net: nn.Module) -> list[nn.Module]:
    """The upsampling residual blocks of a generator (or its fused conversion), in call order."""
    names = ["up_0", "up_1", "up_2", "up_3"] + (["up_4"] if hasattr(net, "up_4") else [])
    return [getattr(net, n) for n in names]


def run_blocks(net: nn.Module, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The residual blocks of ``net`` (a Generator or its fused conversion) with their
    upsamplings, from the first feature map to the input of ``conv_img``."""
    x = net.head_0(x, cond)
    x = net.G_middle_0(_up(x), cond)
    if net.config.num_upsampling_layers in ("more", "most"):
        x = _up(x)
    x = net.G_middle_1(x, cond)
    for block in up_blocks(net):
        x = block(_up(x), cond)
    return x


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")
