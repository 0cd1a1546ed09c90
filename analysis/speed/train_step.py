"""Training-step speed of the trainer's recipes, interleaved from the same weights.

    python -m analysis.speed.variants --train --presets ade20k      # (CLI: analysis.speed.variants)
    df = compare_training("ade20k", "clade", batch=1)      # one row per recipe of TRAIN_VARIANTS
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import torch

from models.fast import native_bf16
from models.presets import generator_config
from training.trainer import Trainer, TrainRecipe, discriminator_config_for
from training.vgg import SLICES, VGG19_FILE, VGG19Features

from analysis.speed.bench import environment, summarize_times, synthetic_batch, time_interleaved


# Trainer recipes compared by compare_training (training.trainer.TrainRecipe options).
# fp32-eager is the official computation (spectral norm divides the weights); the next three
# add one change each; the last is the TrainRecipe default, the one before it the default
# with the official spectral norm.
TRAIN_VARIANTS = {
    "fp32-eager": dict(amp=False, channels_last=False, spectral_input_scaling=False),
    "fp32-sn-input-scaling": dict(amp=False, channels_last=False),
    "fp32-channels-last": dict(amp=False, channels_last=True),
    "bf16-autocast": dict(amp=True, channels_last=False),
    "bf16-channels-last-official-sn": dict(amp=True, channels_last=True, spectral_input_scaling=False),
    "bf16-channels-last": dict(amp=True, channels_last=True),
}
# First-step losses of a variant vs fp32-eager from the same weights and batch (relative).
TRAIN_LOSS_TOLERANCE = {"fp32": 1e-3, "bf16-autocast": 5e-2}   # by Trainer.precision
TRAIN_COLUMNS = ["preset", "norm", "batch", "variant", "dtype", "spectral_input_scaling", "channels_last", "compiled",
                 "use_vgg", "vgg_weights",
                 "median_ms", "p90_ms", "images_per_s", "speedup_vs_fp32_eager", "first_step_max_rel_loss_diff",
                 "loss_tolerance", "within_tolerance", "device", "device_name", "threads", "torch"]


def timing_vgg_weights(folder: Path) -> Path:
    """A VGG19 weights file with random weights (torchvision layout) in ``folder``: the
    perceptual loss then costs what it costs in training, but means nothing. Timing only."""
    state = VGG19Features().state_dict()
    mapped = {key.replace(f"slice{i}.", "features.", 1): value
              for i in range(1, len(SLICES) + 1) for key, value in state.items() if key.startswith(f"slice{i}.")}
    path = Path(folder) / VGG19_FILE
    torch.save(mapped, path)
    return path


def compare_training(preset: str, norm: str, batch: int, *, device="cpu", repeats: int = 3, warmup: int = 1,
                     use_vgg: bool = True, vgg_weights=None, compile: bool = False, seed: int = 0,
                     **overrides) -> pd.DataFrame:
    """Rows of :data:`TRAIN_COLUMNS`: one full training iteration (``Trainer.train_step``: G step
    with every loss, then D step) under each recipe of :data:`TRAIN_VARIANTS` (+ compiled),
    timed interleaved in one run. bf16 variants only where bf16 is native
    (``models.fast.native_bf16``). Every trainer starts from the same weights (same seed), so
    the first step's losses are compared with fp32-eager's against :data:`TRAIN_LOSS_TOLERANCE`.
    ``vgg_weights``: the real file, or None for random weights (:func:`timing_vgg_weights`).
    """
    bf16 = native_bf16(device)
    recipes = {k: v for k, v in TRAIN_VARIANTS.items() if not v["amp"] or bf16}
    if compile:
        recipes[f"{'bf16' if bf16 else 'fp32'}-channels-last-compiled"] = dict(amp=bf16, channels_last=True, compile=True)
    config = generator_config(preset, norm, **overrides)
    data = synthetic_batch(config, batch, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        vgg_file = vgg_weights or (timing_vgg_weights(Path(tmp)) if use_vgg else None)
        trainers = {name: Trainer(g_config=config, d_config=discriminator_config_for(config), device=device,
                                  vgg_weights=vgg_file,
                                  recipe=TrainRecipe(use_vgg=use_vgg, batch_size=batch, seed=seed, **options))
                    for name, options in recipes.items()}
    first = {name: trainer.train_step(data) for name, trainer in trainers.items()}  # also compiles
    times = time_interleaved({name: (lambda t=trainer: t.train_step(data)) for name, trainer in trainers.items()},
                             warmup=warmup, repeats=repeats, device=device)
    env = environment(device)
    summaries = {name: summarize_times(times[name]) for name in trainers}
    reference = first["fp32-eager"]
    rows = []
    for name, trainer in trainers.items():
        tolerance = TRAIN_LOSS_TOLERANCE[trainer.precision]
        diff = max(abs(first[name][k] - reference[k]) / max(1.0, abs(reference[k])) for k in reference)
        s = summaries[name]
        rows.append({"preset": preset, "norm": norm, "batch": batch, "variant": name,
                     "dtype": trainer.precision,
                     "spectral_input_scaling": trainer.recipe.spectral_input_scaling,
                     "channels_last": trainer.recipe.channels_last, "compiled": trainer.recipe.compile,
                     "use_vgg": use_vgg, "vgg_weights": "none" if not use_vgg else (
                         str(vgg_weights) if vgg_weights else "random (timing only)"),
                     "median_ms": s["median_ms"], "p90_ms": s["p90_ms"],
                     "images_per_s": batch / (s["median_ms"] / 1e3),
                     "speedup_vs_fp32_eager": summaries["fp32-eager"]["median_ms"] / s["median_ms"],
                     "first_step_max_rel_loss_diff": diff, "loss_tolerance": tolerance,
                     "within_tolerance": diff <= tolerance, **env})
    return pd.DataFrame(rows)[TRAIN_COLUMNS]
