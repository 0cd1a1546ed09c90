"""Stage 'train': SPADE, CLADE and CLADE-ICPE (and SPADE variants) under one recipe, seeds and budget.

Every training run gets the same small generator width, discriminator, batch size, number of
steps and data order; ``--train-seeds K`` repeats each run with seeds ``--seed + k`` (weights and
data order), so that every quality number gets an interval over seeds. Besides the methods:

- ``spade-1x1``: SPADE with 1x1 modulation convs (purely per-pixel, so purely semantic at the
  input resolution), trained and scored like the methods (``--train-kernel-variants``);
- ``spade-mask<f>`` / ``clade-mask<f>``: SPADE and CLADE trained (and later scored) on label maps
  ``f`` times coarser, nearest-upsampled to the output size (``--train-mask-factor``), the
  "especially for high-resolution masks" comparison.

The official recipe is used (hinge + feature matching, TTUR); the VGG loss only when its weights
are on disk, which the outputs say. Writes ``checkpoints/<run>/`` for seed 0 (so
``checkpoints/<norm>/`` stays the seed-0 model other code loads) and ``checkpoints/<run>-s<k>/``
for seed k, each with ``latest_net_G.pth``, ``generator.json`` and ``variant.json`` (method label,
norm, seed, steps, kernel size, mask resolution: what the eval stage needs to group it);
``tables/train_log_<run>.csv``, ``tables/training.csv`` and ``figures/train_losses.png``.
A killed run resumes from ``train/<run>/checkpoint.pt`` (``--force`` starts over); a finished one
keeps only its exported generator (``--train-keep-state`` keeps the checkpoint too).

Budget: ``--train-steps`` per run with a wall-clock cap per run. SPADE trains first (the slowest);
if a run hits the cap, every later run trains as many steps as it reached, and ``training.csv``
says so (``planned_steps``, ``steps``, ``stopped_by_time_cap``). Measured on the loaded 2-core CPU
(one thread, crop 32, batch 8, ngf 16): SPADE about 0.16 s per step, CLADE about 0.10 s, so the
default 3 seeds x 6 runs x 150 steps take about 6 minutes.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict

import matplotlib.pyplot as plt
import pandas as pd
import torch

from torch.utils.data import Dataset

from data.neighbourhood import coarsen_labels
from data.synthetic import SyntheticScenes
from fileio import write_json_atomic
from training.checkpoint_store import SettingsMismatchError, has_checkpoint, remove_training_state
from models.presets import generator_config
from models.registry import norm_spec
from training.trainer import Trainer, TrainRecipe, discriminator_config_for
from training.vgg import VGGWeightsMissingError, resolve_vgg_weights

from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.quality.seeds import VARIANT_FILE
from analysis.options import options_dict

log = logging.getLogger(__name__)


class CoarseMasks(Dataset):
    """A dataset whose label and instance maps are ``factor`` times coarser, nearest-upsampled."""

    def __init__(self, dataset, factor: int):
        self.dataset, self.factor = dataset, factor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        for key in ("label", "instance"):
            if torch.is_tensor(item.get(key)):
                item[key] = coarsen_labels(item[key], self.factor)
        return item


def training_runs(s: dict) -> list[dict]:
    """The runs of one seed, slowest (SPADE) first: the methods, the 1x1 SPADE, the coarse-mask pair.
    Each: name, norm, method (display label), overrides (generator options), mask_factor."""
    runs = [{"name": n, "norm": n, "method": norm_spec(n).label, "overrides": {}, "mask_factor": 1}
            for n in s["norms"]]
    if s["kernel_variants"] and "spade" in s["norms"]:
        runs.append({"name": "spade-1x1", "norm": "spade", "method": "SPADE 1x1",
                     "overrides": {"spade_kernel_size": 1}, "mask_factor": 1})
    if s["mask_factor"] > 1:
        runs += [{"name": f"{n}-mask{s['mask_factor']}", "norm": n, "method": norm_spec(n).label, "overrides": {},
                  "mask_factor": s["mask_factor"]} for n in ("spade", "clade") if n in s["norms"]]
    return sorted(runs, key=lambda r: r["norm"] != "spade")


def run_folder_name(name: str, seed_index: int) -> str:
    """``<name>`` for seed 0 (where other code loads ``checkpoints/<norm>/``), ``<name>-s<k>`` after."""
    return name if seed_index == 0 else f"{name}-s{seed_index}"


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


def training_dataset(ctx, config, s: dict, *, seed: int | None = None, mask_factor: int = 1):
    """Identical samples and order for every method of one seed, at ``config``'s output size; ICPE
    maps only where they are used, in the generator's mode (``config.icpe_mode``)."""
    icpe = dict(with_dist=True, icpe_mode=config.icpe_mode) if norm_spec(config.norm).needs_icpe else \
        dict(with_dist=False)
    seed = ctx.seed if seed is None else seed
    # One pass over new scenes; sized by the planned budget so a cap never changes the order.
    num_samples = s["planned_steps"] * s["batch_size"]
    if ctx.dataroot is None:
        dataset = SyntheticScenes(num_samples, size=config.output_size, seed=seed, **icpe)
    else:
        dataset = ctx.dataset("train", crop_size=s["crop_size"], seed=seed, **icpe)
    return dataset if mask_factor == 1 else CoarseMasks(dataset, mask_factor)


def train_one(ctx, norm: str, s: dict, use_vgg: bool, vgg_path, *, name: str | None = None,
              overrides: dict | None = None, seed_index: int = 0, mask_factor: int = 1,
              method: str | None = None) -> dict:
    """Train (or resume) one method, export it, and return its training.csv row + log.

    A variant of ``norm`` trains under the same recipe with ``overrides`` (generator options,
    official names, e.g. ``{"spade_kernel_size": 1}``) and its own ``name`` for its folders
    (``checkpoints/<name>/``, ``train/<name>/``) and tables (default: ``norm``). ``seed_index`` k
    trains with seed ``ctx.seed + k``; ``mask_factor`` > 1 on coarser label maps (:class:`CoarseMasks`).
    """
    name = name or norm
    g_config = generator_config(ctx.preset, norm, **{"ngf": s["ngf"], "crop_size": s["crop_size"],
                                                     **(overrides or {})})
    seed = ctx.seed + seed_index
    recipe = TrainRecipe(use_vgg=use_vgg, batch_size=s["batch_size"], seed=seed)
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
    data = training_dataset(ctx, g_config, s, seed=seed, mask_factor=mask_factor)
    history = trainer.fit(data, steps=s["steps"], out_dir=work,
                          log_every=max(1, s["steps"] // 50), save_every=max(1, s["steps"] // 4),
                          sample_every=max(1, s["steps"] // 2), max_seconds=s["max_seconds"],
                          num_workers=0, label=name)
    trainer.export_generator(ctx.checkpoint_dir(name))
    h, w = g_config.output_size
    write_json_atomic(ctx.checkpoint_dir(name) / VARIANT_FILE, {
        "method": method or norm_spec(norm).label, "norm": norm, "seed": seed_index, "steps": trainer.step,
        "planned_steps": s["planned_steps"], "spade_kernel_size": g_config.spade_kernel_size,
        "mask_factor": mask_factor, "mask_resolution": f"{h // mask_factor}x{w // mask_factor}"})
    if not ctx.train.keep_state:
        # Later stages read only the exported generator: drop D and the optimizer state.
        log.info("[train] %s: removed the finished run's training state (%.1f MB; --train-keep-state keeps it)",
                 name, remove_training_state(work) / 1e6)
    df = pd.DataFrame(history)
    ctx.write_table(df, f"train_log_{name}", norm=norm, generator=asdict(g_config), recipe=asdict(recipe))
    tail = df.tail(max(1, len(df) // 10))  # last ~10% of the logged rows
    head = df.head(max(1, len(df) // 10))
    losses = [c for c in ("GAN", "GAN_Feat", "VGG", "D_Fake", "D_real", "img_L1") if c in df]
    row = {"run": name, "method": method or norm_spec(norm).label, "norm": norm, "seed": seed_index,
           "spade_kernel_size": g_config.spade_kernel_size, "mask_factor": mask_factor, "steps": trainer.step, "planned_steps": s["planned_steps"],
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


def run(ctx: RunContext) -> StageResult:
    s = settings(ctx)
    threads = torch.get_num_threads()
    if ctx.train.threads is not None:
        torch.set_num_threads(ctx.train.threads)
    use_vgg, vgg_text = vgg_status(ctx.train.vgg_weights)
    runs = training_runs(s)
    log.info("[train] %s x %d seeds, steps %d, batch %d, ngf %d, ndf %d, %dx%d, vgg: %s",
             ", ".join(r["name"] for r in runs), s["seeds"], s["steps"], s["batch_size"], s["ngf"], s["ndf"],
             s["crop_size"], s["crop_size"], vgg_text)
    results = {}
    budget = dict(s)
    try:
        for k in range(s["seeds"]):
            for r in runs:
                name = run_folder_name(r["name"], k)
                results[name] = train_one(ctx, r["norm"], budget, use_vgg, ctx.train.vgg_weights, name=name,
                                          overrides=r["overrides"], seed_index=k, mask_factor=r["mask_factor"],
                                          method=r["method"])
                done = results[name]["row"]["steps"]
                if results[name]["row"]["stopped_by_time_cap"] and done < budget["steps"]:
                    # Same budget for every run: the later ones stop where the capped one did.
                    log.warning("[train] %s hit the %.0f s cap at step %d; the remaining runs train "
                                "%d steps too", name, s["max_seconds"], done, done)
                    budget["steps"] = done
    finally:
        torch.set_num_threads(threads)
    table = pd.DataFrame([r["row"] for r in results.values()]).assign(vgg=vgg_text)
    ctx.write_table(table, "training", settings=s, vgg=vgg_text,
                    dataset=str(ctx.dataroot) if ctx.dataroot else "synthetic scenes")
    first = [r["name"] for r in runs]
    ctx.write_figure(loss_figure({n: results[n]["log"] for n in first}, vgg_text), "train_losses")
    steps = sorted(set(table.steps))
    capped = bool(table.stopped_by_time_cap.any())
    budget_text = (f"{s['planned_steps']} steps planned per run, {'/'.join(map(str, steps))} run"
                   + (f" (cut by the {s['max_seconds']:.0f} s time cap)" if capped else "")
                   + f", {s['seeds']} seed(s), batch {s['batch_size']}, {s['crop_size']}x{s['crop_size']}, ngf {s['ngf']}")
    return StageResult(
        summary={"settings": s, "vgg": vgg_text, "steps": budget["steps"], "budget": budget_text,
                 "checkpoints": {n: str(ctx.checkpoint_dir(n)) for n in results},
                 "results": table.to_dict(orient="records")},
        notes=[f"Budget: {budget_text}; {len(results)} training runs, "
               f"{table.seconds.sum():.0f} s of training in all."]
              + ([f"Unequal steps: {table.groupby('run').steps.first().to_dict()}"] if len(steps) > 1 else []),
        figures=[FigureRef("figures/train_losses.png",
                           f"Training losses of seed 0's runs ({', '.join(first)}) under the same recipe, "
                           f"data order and {budget['steps']}-step budget (VGG loss {vgg_text}).")],
        tables=[TableRef("tables/training.csv",
                         f"Every training run (method, seed, steps run of {s['planned_steps']} planned, "
                         "time-cap flag, seconds, images/s, mean losses over the first and last 10% of "
                         "training).",
                         ("run", "method", "seed", "steps", "planned_steps", "stopped_by_time_cap", "seconds",
                          "images_per_s"))]
               + [TableRef(f"tables/train_log_{n}.csv", f"Logged losses of {n} (seed 0) during training.")
                  for n in first],
    )
