"""Builders of the official networks with the official initialisation.

    G = build_generator("ade20k", "clade")              # official architecture
    D = build_discriminator("ade20k", device="meta")    # no memory, e.g. to count parameters
"""
from __future__ import annotations

import torch

from .discriminator import MultiscaleDiscriminator
from .encoder import ConvEncoder
from .generator import Generator
from .init import init_official
from .presets import GeneratorConfig, discriminator_config, generator_config


def build_generator_from_config(config: GeneratorConfig, device=None) -> Generator:
    """Generator for a resolved config, with the official initialisation."""
    with torch.device(device or "cpu"):
        return init_official(Generator(config))


def build_generator(preset: str, norm: str, device=None, **overrides) -> Generator:
    """Generator of ``preset`` with modulation ``norm`` (a registered norm: spade | clade | clade-icpe | ...).

    ``overrides`` use official option names (label_nc, ngf, crop_size, ...);
    ``device='meta'`` builds without memory, e.g. to count parameters.
    """
    return build_generator_from_config(generator_config(preset, norm, **overrides), device)


def build_discriminator(preset: str, device=None, **overrides) -> MultiscaleDiscriminator:
    """Official multiscale discriminator for ``preset`` (input: semantic map + image)."""
    with torch.device(device or "cpu"):
        return init_official(MultiscaleDiscriminator(discriminator_config(preset, **overrides)))


def build_encoder(config: GeneratorConfig, device=None) -> ConvEncoder:
    """VAE image encoder matching a generator config (used when ``use_vae``)."""
    with torch.device(device or "cpu"):
        return init_official(ConvEncoder(config.ngf, config.crop_size, config.z_dim))
