"""Cross-checks of the per-layer counts: torch's FlopCounterMode, the official numbers, and the
cost of one training iteration counted by running the trainer's own loss functions.

    training_step_gmacs(generator_config("synthetic", "clade"))   # g_step, d_step, vgg, train_step
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models import build_encoder, build_generator_from_config
from training import losses
from models.discriminator import MultiscaleDiscriminator
from training.losses import VGGLoss
from models.presets import canonical_norm, canonical_preset
from training.recipe import TrainRecipe, discriminator_config_for
from training.vgg import VGG19Features

from analysis.costs.layers import MATRIX_OPS, generator_inputs


def flop_counter_gmacs(model: nn.Module, inputs: tuple, *, kwargs: dict | None = None) -> dict:
    """GMACs per op of one eval forward, from ``torch.utils.flop_counter.FlopCounterMode``.

    FlopCounterMode counts 2 flops per multiply-add and only matrix ops (convolution, mm,
    addmm, bmm, attention); the values here are its flops / 2. Works on the meta device,
    so full-size models cost no compute: ``build_generator(..., device="meta")``.
    """
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs, **(kwargs or {}))
    return {str(op).removeprefix("aten.").removesuffix(".default"): flops / 2e9
            for op, flops in counter.get_flop_counts()["Global"].items()}


def matrix_gmacs(table: pd.DataFrame) -> float:
    """GMACs of convolutions and matrix products in a :func:`layer_costs` table."""
    return sum(v for op, v in table.attrs["gmacs_by_op"].items() if op in MATRIX_OPS)


def flop_counter_crosscheck(table: pd.DataFrame, model: nn.Module, inputs: tuple, *,
                            kwargs: dict | None = None) -> dict:
    """FlopCounterMode total (as GMACs) against fvcore's conv / linear GMACs of ``table``."""
    counted = sum(flop_counter_gmacs(model, inputs, kwargs=kwargs).values())
    fvcore = matrix_gmacs(table)
    return {"gmacs_flopcounter": counted, "gmacs_fvcore_matrix_ops": fvcore,
            "rel_error": abs(counted - fvcore) / fvcore}


def load_reference_costs(reference_dir) -> pd.DataFrame:
    """The official generator / discriminator counts from ``<reference_dir>/README.md``.

    Columns: preset, norm ('discriminator' for D), params, gmacs_fvcore, modulation_params,
    modulation_gmacs_fvcore (NaN for D). Raises FileNotFoundError if the file is absent.
    """
    text = (Path(reference_dir) / "README.md").read_text()
    rows = []
    number = lambda s: float(s.replace(",", ""))
    for m in re.finditer(r"^\|\s*(\w+)\s*\|\s*(spade|clade|clade_icpe)\s*\|\s*([\d,]+)\s*\|\s*([\d.]+)\s*\|"
                         r"\s*([\d,]+)\s*\|\s*([\d.]+)\s*\|", text, flags=re.M):
        rows.append({"preset": canonical_preset(m[1]), "norm": canonical_norm(m[2]), "params": int(number(m[3])),
                     "gmacs_fvcore": number(m[4]), "modulation_params": int(number(m[5])),
                     "modulation_gmacs_fvcore": number(m[6])})
    for m in re.finditer(r"(cityscapes|ade20k|coco) ([\d,]+)(?: params)? / (\d+\.\d+)", text):
        rows.append({"preset": canonical_preset(m[1]), "norm": "discriminator", "params": int(number(m[2])),
                     "gmacs_fvcore": number(m[3])})
    if not rows:
        raise ValueError(f"no cost table found in {reference_dir}/README.md")
    return pd.DataFrame(rows)


def training_step_gmacs(config, *, recipe: TrainRecipe | None = None, batch: int = 1, d_config=None) -> dict:
    """Matrix-op GMACs of one official training iteration, counted by running it.

    Runs, on the meta device (shapes only, no compute) under FlopCounterMode, the trainer's
    own loss functions (:func:`training.losses.generator_losses` and
    :func:`training.losses.discriminator_losses`, as ``training.trainer.Trainer.train_step``
    does) and their backward: a generator step (encoder when ``config.use_vae``, G in train
    mode, D frozen on ``cat(fake, real)``, the recipe's loss terms) and a discriminator step
    (G without grad, D on ``cat(fake.detach(), real)``). ``recipe`` (default: the official
    :class:`TrainRecipe`) decides the loss terms, e.g. ``use_vgg``. Counts convolutions and
    matrix products only (FlopCounterMode flops / 2); elementwise work and the optimizer
    updates are not included. ``d_config``: the discriminator (default: the official one for
    ``config``'s labels). Returns GMACs for ``g_forward`` (eval), ``g_step``, ``d_step``,
    ``vgg`` (its share of the G step) and ``train_step``.
    """
    recipe = recipe or TrainRecipe()

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 2e9

    G = build_generator_from_config(config, "meta")
    E = build_encoder(config, "meta") if config.use_vae else None
    with torch.device("meta"):
        D = MultiscaleDiscriminator(d_config or discriminator_config_for(config))
        vgg_loss = VGGLoss(VGG19Features()) if recipe.use_vgg else None
    (semantic,), kwargs = generator_inputs(config, batch, device="meta")
    real = torch.empty(batch, 3, *config.output_size, device="meta")
    shared = dict(recipe=recipe, dist=kwargs.get("dist"), encoder=E)

    def generator_step(vgg):
        losses.generator_losses(G, D, semantic, real, vgg_loss=vgg, **shared).total.backward()

    def discriminator_step():
        losses.discriminator_losses(G, D, semantic, real, **shared).total.backward()

    G.eval()
    with torch.no_grad():
        g_forward = count(lambda: G(semantic, **kwargs))
    for net in (G, D, E):
        if net is not None:
            net.train()
    g_step = count(lambda: generator_step(vgg_loss))
    vgg_part = g_step - count(lambda: generator_step(None)) if vgg_loss is not None else 0.0
    d_step = count(discriminator_step)
    return {"g_forward": g_forward, "g_step": g_step, "d_step": d_step, "vgg": vgg_part,
            "train_step": g_step + d_step}
