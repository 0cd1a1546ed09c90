"""Networks of the toolkit: SPADE, CLADE and CLADE-ICPE generators, discriminator, encoder.

    G = build_generator("ade20k", "clade")              # official architecture (the reference)
    D = build_discriminator("ade20k")
    load_official_checkpoint(G, "latest_net_G.pth")
    G_fast = fuse_for_inference(G)                      # one-time conversion for inference
    register_norm("my-norm", MyNorm)                    # a ModulatedNorm of your own (models/registry.py)
"""
from __future__ import annotations

from torch import nn

from .build import build_discriminator, build_encoder, build_generator, build_generator_from_config
from .checkpoint import (CheckpointMismatchError, load_generator_dir, load_official_checkpoint,
                         save_generator_dir, save_state_dict_atomic)
from .discriminator import MultiscaleDiscriminator
from .encoder import ConvEncoder
from .generator import Generator
from .fusion import fuse_for_inference
from .norms import CLADE, SPADE, Conditioning, ModulatedNorm
from .presets import (OFFICIAL_PRESETS, PRESETS, DiscriminatorConfig, GeneratorConfig,
                      discriminator_config, generator_config)
from .registry import NormSpec, norm_spec, register_norm, registered_norms, unregister_norm

__all__ = [
    "build_generator", "build_discriminator", "build_encoder", "build_generator_from_config",
    "load_official_checkpoint", "save_state_dict_atomic", "CheckpointMismatchError",
    "save_generator_dir", "load_generator_dir",
    "Generator", "MultiscaleDiscriminator", "ConvEncoder", "SPADE", "CLADE", "Conditioning",
    "ModulatedNorm", "fuse_for_inference", "NormSpec", "norm_spec", "register_norm", "registered_norms",
    "unregister_norm",
    "GeneratorConfig", "DiscriminatorConfig", "generator_config", "discriminator_config",
    "PRESETS", "OFFICIAL_PRESETS", "count_parameters",
]


def count_parameters(module: nn.Module) -> int:
    """Number of ``nn.Parameter`` elements (spectral-norm u/v and BN stats are buffers)."""
    return sum(p.numel() for p in module.parameters())
