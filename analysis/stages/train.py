"""Stage 'train': SPADE, CLADE and CLADE-ICPE trained under one recipe, data order and budget.

Each method gets the same small generator width, discriminator, batch size, number of steps,
seed and data order (the synthetic scenes, or ``--dataroot``). The official recipe is used
(hinge + feature matching, TTUR); the VGG loss only when its weights are on disk, which the
outputs say. Writes ``checkpoints/<norm>/`` (official ``latest_net_G.pth`` + ``generator.json``),
``tables/train_log_<norm>.csv``, ``tables/training.csv`` and ``figures/train_losses.png``.
A killed run resumes from ``train/<norm>/checkpoint.pt`` (``--force`` starts over); a finished one
keeps only its exported generator (``--train-keep-state`` keeps the checkpoint too).

Budget: ``--train-steps`` per method, with a wall-clock cap per method so that a busy machine
still finishes the pipeline in time. SPADE trains first (it is the slowest); if it hits the
cap, CLADE and CLADE-ICPE train the same number of steps it reached, and ``training.csv``
says so (``planned_steps``, ``stopped_by_time_cap``).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict

import matplotlib.pyplot as plt
import pandas as pd
import torch

from data.datasets import build_dataset
from data.synthetic import SyntheticScenes
from models.checkpoint_store import SettingsMismatchError, has_checkpoint, remove_training_state
from models.presets import generator_config
from models.registry import norm_spec
from models.trainer import Trainer, TrainRecipe, discriminator_config_for
from models.vgg import VGGWeightsMissingError, resolve_vgg_weights

from ..context import RunContext
from ..options import options_dict

log = logging.getLogger(__name__)


def settings(ctx: RunContext) -> dict:
    """The resolved train options as a dict, with ``planned_steps`` (the budget before a time cap
    shortens it) and ``max_seconds`` None for no cap (the option's 0)."""
    s = options_dict(ctx.train)
    return {**s, "max_seconds": None if s["max_seconds"] == 0 else s["max_seconds"], "planned_steps": s["steps"]}


def vgg_status(path=None) -> tuple[bool, str]:
    """(use VGG, text for the outputs): on only when the weights file is present."""
    try:
        return True, f"on ({resolve_vgg_weights(path)})"
    except VGGWeightsMissingError:
        return False, "off (weights not found)"


def training_dataset(ctx, norm: str, s: dict, size: tuple[int, int]):
    """Identical samples and order for every method; ICPE maps only where they are used."""
    with_dist = norm_spec(norm).needs_icpe
    # One pass over new scenes; sized by the planned budget so a cap never changes the order.
    num_samples = s["planned_steps"] * s["batch_size"]
    if ctx.dataroot is None:
        return SyntheticScenes(num_samples, size=size, seed=ctx.seed, with_dist=with_dist)
    return build_dataset(ctx.preset, ctx.dataroot, "train", crop_size=s["crop_size"],
                         with_dist=with_dist, seed=ctx.seed)


def train_one(ctx, norm: str, s: dict, use_vgg: bool, vgg_path, *, name: str | None = None,
              overrides: dict | None = None) -> dict:
    """Train (or resume) one method, export it, and return its training.csv row + log.

    A variant of ``norm`` trains under the same recipe with ``overrides`` (generator options,
    official names, e.g. ``{"spade_kernel_size": 1}``) and its own ``name`` for its folders
    (``checkpoints/<name>/``, ``train/<name>/``) and tables (default: ``norm``).
    """
    name = name or norm
    g_config = generator_config(ctx.preset, norm, **{"ngf": s["ngf"], "crop_size": s["crop_size"],
                                                     **(overrides or {})})
    recipe = TrainRecipe(use_vgg=use_vgg, batch_size=s["batch_size"], seed=ctx.seed)
    trainer = Trainer(g_config=g_config, d_config=discriminator_config_for(g_config, ndf=s["ndf"]),
                      recipe=recipe, device=ctx.device, vgg_weights=vgg_path)
    work = ctx.out / "train" / name
    if ctx.force and work.exists():
        shutil.rmtree(work)
    if has_checkpoint(work):
        try:
            trainer.load_checkpoint(work)
        except SettingsMismatchError as exc:
            raise SettingsMismatchError(f"{exc} --force discards {work} and trains anew.", exc.differences) from None
    start = time.perf_counter()
    history = trainer.fit(training_dataset(ctx, norm, s, g_config.output_size), steps=s["steps"], out_dir=work,
                          log_every=max(1, s["steps"] // 50), save_every=max(1, s["steps"] // 4),
                          sample_every=max(1, s["steps"] // 2), max_seconds=s["max_seconds"],
                          num_workers=0)
    trainer.export_generator(ctx.checkpoint_dir(name))
    if not ctx.train.keep_state:
        # Later stages read only the exported generator: drop D and the optimizer state.
        log.info("[train] %s: removed the finished run's training state (%.1f MB; --train-keep-state keeps it)",
                 name, remove_training_state(work) / 1e6)
    df = pd.DataFrame(history)
    ctx.write_table(df, f"train_log_{name}", norm=norm, generator=asdict(g_config), recipe=asdict(recipe))
    tail = df.tail(max(1, len(df) // 10))  # last ~10% of the logged rows
    head = df.head(max(1, len(df) // 10))
    losses = [c for c in ("GAN", "GAN_Feat", "VGG", "D_Fake", "D_real", "img_L1") if c in df]
    row = {"norm": name, "steps": trainer.step, "planned_steps": s["planned_steps"],
           "stopped_by_time_cap": trainer.stopped_early, "seconds": round(trainer.train_seconds, 1),
           "precision": trainer.precision,
           "images_per_s": round(trainer.step * s["batch_size"] / max(trainer.train_seconds, 1e-9), 2),
           "g_params": sum(p.numel() for p in trainer.G.parameters()),
           **{f"{c}_start": round(float(head[c].mean()), 4) for c in losses},
           **{f"{c}_end": round(float(tail[c].mean()), 4) for c in losses}}
    log.info("[train] %s: %d steps in %.0f s (this call %.0f s)", name, trainer.step,
             trainer.train_seconds, time.perf_counter() - start)
    return {"row": row, "log": df}


def loss_figure(logs: dict[str, pd.DataFrame], vgg_text: str):
    """Loss curves of the methods side by side (one panel per loss)."""
    panels = [("GAN_Feat", "G feature matching (x10)"), ("img_L1", "|generated - real| (not trained)"),
              ("GAN", "G hinge loss"), ("D", "D loss (fake + real)")]
    if any("VGG" in df for df in logs.values()):
        panels.insert(1, ("VGG", "G VGG loss (x10)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        for norm, df in logs.items():
            y = df["D_Fake"] + df["D_real"] if key == "D" else df.get(key)
            if y is None:
                continue
            ax.plot(df["step"], y.rolling(3, min_periods=1).mean(), label=norm)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Training losses, same recipe and data order (VGG loss: {vgg_text})", fontsize=10)
    fig.tight_layout()
    return fig


def run(ctx: RunContext) -> dict:
    s = settings(ctx)
    threads = torch.get_num_threads()
    if ctx.train.threads is not None:
        torch.set_num_threads(ctx.train.threads)
    use_vgg, vgg_text = vgg_status(ctx.train.vgg_weights)
    log.info("[train] %s, steps %d, batch %d, ngf %d, ndf %d, %dx%d, vgg: %s", ", ".join(s["norms"]),
             s["steps"], s["batch_size"], s["ngf"], s["ndf"], s["crop_size"], s["crop_size"], vgg_text)
    results = {}
    budget = dict(s)
    try:
        for norm in s["norms"]:
            results[norm] = train_one(ctx, norm, budget, use_vgg, ctx.train.vgg_weights)
            done = results[norm]["row"]["steps"]
            if results[norm]["row"]["stopped_by_time_cap"] and done < budget["steps"]:
                # Same budget for every method: the next ones stop where the capped one did.
                log.warning("[train] %s hit the %.0f s cap at step %d; the remaining methods train "
                            "%d steps too", norm, s["max_seconds"], done, done)
                budget["steps"] = done
    finally:
        torch.set_num_threads(threads)
    table = pd.DataFrame([r["row"] for r in results.values()]).assign(vgg=vgg_text)
    ctx.write_table(table, "training", settings=s, vgg=vgg_text,
                    dataset=str(ctx.dataroot) if ctx.dataroot else "synthetic scenes")
    ctx.write_figure(loss_figure({n: r["log"] for n, r in results.items()}, vgg_text), "train_losses")
    return {
        "settings": s, "vgg": vgg_text, "steps": budget["steps"],
        "checkpoints": {n: str(ctx.checkpoint_dir(n)) for n in s["norms"]},
        "results": table.to_dict(orient="records"),
        "figures": [{"file": "figures/train_losses.png",
                     "caption": f"Training losses of {', '.join(s['norms'])} under the same recipe, "
                                f"data order and {budget['steps']}-step budget (VGG loss {vgg_text})."}],
        "tables": [{"file": "tables/training.csv",
                    "caption": "Steps, seconds, images/s and mean losses over the first and last 10% "
                               "of training for each method."}]
                  + [{"file": f"tables/train_log_{n}.csv", "caption": f"Logged losses of {n} during training."}
                     for n in s["norms"]],
    }
