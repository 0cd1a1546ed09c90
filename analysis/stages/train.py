"""Stage 'train': SPADE, CLADE and CLADE-ICPE (and SPADE variants) under one recipe, seeds and budget.

Every training run gets the same small generator width, discriminator, batch size, number of
steps and data order; ``--train-seeds K`` repeats each run with seeds ``--seed + k`` (weights and
data order), so that every quality number gets an interval over seeds. Besides the methods:

- ``spade-1x1``: SPADE with 1x1 modulation convs (purely per-pixel, so purely semantic at the
  input resolution), trained and scored like the methods (``--train-kernel-variants``);
- ``spade-mask<f>`` / ``clade-mask<f>``: SPADE and CLADE trained (and later scored) on label maps
  ``f`` times coarser, nearest-upsampled to the output size (``--train-mask-factor``), the
  "especially for high-resolution masks" comparison.

The official recipe is used (hinge + feature matching, TTUR; the learning rate decays linearly to 0
over the second half of the steps, the papers' schedule); the VGG loss only when its weights are on
disk, which the outputs say. What is scored and exported is the exponential moving average of the
generator's weights over about the last tenth of the steps (``--train-ema-horizon``) with its
BatchNorm statistics re-estimated on 8 fixed training batches (``--train-bn-estimation-batches``;
``training.batch_norm_stats``): with the running averages, SPADE's score on the known-answer scenes
jumped between 0.59 and 2.89 from one curve point to the next (steps 300-450, ngf 16). On a CPU the
runs train side by side, one per core on one thread each (``--train-workers``;
``analysis.stages.train_workers``).

Writes ``checkpoints/<run>/`` for seed 0 (so ``checkpoints/<norm>/`` stays the seed-0 model other
code loads) and ``checkpoints/<run>-s<k>/``
for seed k, each with ``latest_net_G.pth``, ``generator.json`` and ``variant.json`` (method label,
norm, seed, steps, kernel size, mask resolution: what the eval stage needs to group it);
``tables/train_log_<run>.csv``, ``tables/training.csv`` and ``figures/train_losses.png``.
SPADE's 1x1 and coarse-mask variants are off in the default budget (``--budget long`` trains them).
A killed run resumes from ``train/<run>/checkpoint.pt`` (``--force`` starts over); a finished one
keeps only its exported generator (``--train-keep-state`` keeps the checkpoint too).

Learning curves: every ``--train-curve-every`` steps each run is scored on fixed synthetic val
scenes with the known-answer metrics (``analysis.quality.learning_curves``), written as
``tables/learning_curves.csv`` and ``figures/learning_curves.png``; ``tables/convergence.csv`` says
per method and metric whether it converged by the stated rule (comparisons of unconverged methods
get no verdict).

Budget of work: every run trains ``--train-steps`` (equal for all compared runs). At start each
kind of run times three steps (after one untimed) on a throwaway trainer: the predicted time is logged, with a warning
when it exceeds ``--train-expected-minutes``, and an ETA after every run. A cap
(``--train-max-seconds``, off by default) limits the first, slowest run (SPADE); every run then trains
the steps it reached; ``stages/train.json`` records it under ``time_cap``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict
from typing import Callable

import matplotlib.pyplot as plt
import pandas as pd
import torch

from torch.utils.data import Dataset, default_collate

from data.datasets import SYNTHETIC_VAL_FIRST_INDEX
from data.neighbourhood import coarsen_labels
from data.synthetic import SyntheticScenes
from fileio import write_json_atomic
from training.checkpoint_store import SettingsMismatchError, has_checkpoint, remove_training_state
from models.presets import generator_config
from models.registry import norm_spec
from training.trainer import Trainer, TrainRecipe, discriminator_config_for
from training.vgg import VGGWeightsMissingError, resolve_vgg_weights

from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.quality.learning_curves import (CONVERGENCE_RULE, CurveImages, convergence_table, curve_figure,
                                              curve_images, score_point)
from analysis.quality.seeds import VARIANT_FILE
from analysis.speed.train_budget import TrainingEta, probe_step_seconds
from analysis.stages.train_workers import WorkerPlan, run_jobs, worker_plan
from analysis.options import options_dict

log = logging.getLogger(__name__)

CURVE_FILE = "learning_curve.json"  # a run's learning-curve rows so far, in train/<run>/ (kept for a resume)


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
    for name in ("lr_decay_start", "ema_horizon"):
        if not s[name] <= 1:
            raise ValueError(f"--train-{name.replace('_', '-')} {s[name]:g}: expected a fraction of the steps, "
                             f"from 0 to 1")
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


def stage_recipe(s: dict, *, use_vgg: bool, seed: int) -> TrainRecipe:
    """The stage's recipe for ``s["planned_steps"]`` steps: the official one, the rate decaying linearly to 0
    from ``lr_decay_start`` of the steps, the EMA generator over ``ema_horizon`` of them and BatchNorm
    statistics re-estimated on ``bn_estimation_batches`` training batches."""
    steps = s["planned_steps"]
    decay_start = round(s["lr_decay_start"] * steps)
    ema_steps = s["ema_horizon"] * steps
    return TrainRecipe(use_vgg=use_vgg, batch_size=s["batch_size"], seed=seed,
                       decay_start_step=decay_start, decay_steps=steps - decay_start, ema=ema_steps > 0,
                       ema_decay=1 - 1 / max(1.0, ema_steps) if ema_steps > 0 else TrainRecipe.ema_decay,
                       bn_estimation_batches=s["bn_estimation_batches"])


def make_trainer(ctx, norm: str, s: dict, use_vgg: bool, vgg_path, *, overrides: dict | None = None,
                 seed_index: int = 0) -> Trainer:
    """A fresh trainer of one run: the stage's widths, size, batch and recipe, seed ``ctx.seed + seed_index``."""
    g_config = generator_config(ctx.preset, norm, **{"ngf": s["ngf"], "crop_size": s["crop_size"],
                                                     **(overrides or {})})
    return Trainer(g_config=g_config, d_config=discriminator_config_for(g_config, ndf=s["ndf"]),
                   recipe=stage_recipe(s, use_vgg=use_vgg, seed=ctx.seed + seed_index), device=ctx.device,
                   vgg_weights=vgg_path)


def learning_curve_images(ctx, config, s: dict, mask_factor: int = 1) -> CurveImages | None:
    """The fixed val scenes every run of this stage is scored on during training (the first
    ``curve_images`` of the synthetic val split of ``ctx.seed``, given to the generator as it was
    trained: coarsened for a coarse-mask run); None without the built-in scenes or curves."""
    if ctx.dataroot is not None or s["curve_images"] == 0:
        return None
    icpe = dict(with_dist=True, icpe_mode=config.icpe_mode) if norm_spec(config.norm).needs_icpe else \
        dict(with_dist=False)
    scenes = SyntheticScenes(s["curve_images"], size=config.output_size, seed=ctx.seed,
                             first_index=SYNTHETIC_VAL_FIRST_INDEX, **icpe)
    return curve_images(scenes, CoarseMasks(scenes, mask_factor) if mask_factor > 1 else None)


def learning_curve(trainer, work, images: CurveImages | None, *, run: str, method: str, seed_index: int):
    """(rows, on_step) of one run's learning curve: the rows scored so far (a resumed run's from
    ``train/<run>/learning_curve.json``, up to its checkpoint's step; step 0 scored now for a new
    run) and the ``fit(on_step=)`` callback that adds one row and saves the rows."""
    if images is None:
        return [], None
    path = work / CURVE_FILE
    rows = [r for r in json.loads(path.read_text()) if r["step"] <= trainer.step] \
        if trainer.step > 0 and path.is_file() else []

    def on_step(t) -> None:
        rows.append({"run": run, "method": method, "seed": seed_index, "step": t.step,
                     "images_seen": t.step * t.recipe.batch_size * t.world_size,
                     "train_seconds": round(t.train_seconds, 2), **score_point(t.generator_for_eval, images)})
        write_json_atomic(path, rows)

    if not rows:
        on_step(trainer)
    return rows, on_step


def train_one(ctx, norm: str, s: dict, use_vgg: bool, vgg_path, *, name: str | None = None,
              overrides: dict | None = None, seed_index: int = 0, mask_factor: int = 1,
              method: str | None = None, label: str | None = None, max_seconds: float | None = None,
              progress: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) one method, export it, and return its training.csv row, log and learning curve.

    A variant of ``norm`` trains under the same recipe with ``overrides`` (generator options,
    official names, e.g. ``{"spade_kernel_size": 1}``) and its own ``name`` for its folders
    (``checkpoints/<name>/``, ``train/<name>/``) and tables (default: ``norm``). ``seed_index`` k
    trains with seed ``ctx.seed + k``; ``mask_factor`` > 1 on coarser label maps (:class:`CoarseMasks`).
    ``label``: the run without its seed (``spade-1x1``; default ``name``), as the learning curve names it.
    ``max_seconds``: a wall-clock cap of this run (None: none). ``progress(step)``: called with the
    steps done at every learning-curve point (a worker's report; the run then shows no progress bar).
    """
    name = name or norm
    trainer = make_trainer(ctx, norm, s, use_vgg, vgg_path, overrides=overrides, seed_index=seed_index)
    g_config, recipe, seed = trainer.g_config, trainer.recipe, trainer.recipe.seed
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
    if recipe.bn_estimation_batches:
        trainer.keep_estimation_batches(data)   # step 0 is scored as every later step (fit reuses them)
    label = label or name
    images = learning_curve_images(ctx, g_config, s, mask_factor)
    curve, score = learning_curve(trainer, work, images, run=label, method=method or norm_spec(norm).label,
                                  seed_index=seed_index)

    def on_step(t) -> None:
        if score is not None:
            score(t)
        if progress is not None:
            progress(t.step)

    history = trainer.fit(data, steps=s["steps"], out_dir=work,
                          log_every=max(1, s["steps"] // 50), save_every=max(1, s["steps"] // 4),
                          sample_every=max(1, s["steps"] // 2), max_seconds=max_seconds, num_workers=0,
                          progress=progress is None, on_step=on_step,
                          on_step_every=s["curve_every"] if score is not None else max(1, s["steps"] // 50),
                          label=name)
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
    return {"row": row, "log": df, "curve": curve}


def train_job(*, ctx: RunContext, run: dict, seed_index: int, budget: dict, use_vgg: bool,
              max_seconds: float | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """One entry of ``training_runs`` at one seed (:func:`train_one`), as a worker runs it; the
    result also carries ``skipped``, the dataset samples left out (``ctx.take_skipped()``)."""
    result = train_one(ctx, run["norm"], budget, use_vgg, ctx.train.vgg_weights,
                       name=run_folder_name(run["name"], seed_index), overrides=run["overrides"],
                       seed_index=seed_index, mask_factor=run["mask_factor"], method=run["method"],
                       label=run["name"], max_seconds=max_seconds, progress=progress)
    return {**result, "skipped": ctx.take_skipped()}


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


def predict_seconds(ctx, runs: list[dict], s: dict, use_vgg: bool, vgg_path) -> dict[str, float]:
    """Predicted seconds of every training run (by folder name) on this machine: each kind of run
    (method or variant) trains three timed steps (after one untimed) and scores its learning-curve scenes once, on a
    throwaway trainer; times the planned steps and curve points."""
    predicted = {}
    points = (s["steps"] // s["curve_every"] if s["curve_every"] else 0) + 2
    for r in runs:
        trainer = make_trainer(ctx, r["norm"], s, use_vgg, vgg_path, overrides=r["overrides"])
        data = training_dataset(ctx, trainer.g_config, {**s, "planned_steps": 1}, mask_factor=r["mask_factor"])
        batch = default_collate([data[i] for i in range(min(len(data), s["batch_size"]))])
        per_step = probe_step_seconds(lambda t=trainer: t, batch)
        images = learning_curve_images(ctx, trainer.g_config, s, r["mask_factor"])
        start = time.perf_counter()
        if images is not None:
            score_point(trainer.generator_for_eval, images)
        per_point = time.perf_counter() - start
        for k in range(s["seeds"]):
            predicted[run_folder_name(r["name"], k)] = s["steps"] * per_step + points * per_point
        log.info("[train] %s: %.3f s per step measured (%.2f s per learning-curve point)", r["name"], per_step,
                 per_point)
    return predicted


def check_pace(eta: TrainingEta, expected_minutes: float) -> str | None:
    """The warning (logged, and returned for the record) when the predicted training time exceeds
    ``expected_minutes`` (0: no check)."""
    minutes = eta.wall_predicted / 60
    if expected_minutes == 0 or minutes <= expected_minutes:
        return None
    text = (f"this machine is slower than the budget assumes: the {len(eta.predicted)} training runs are predicted "
            f"to take {minutes:.1f} min, not the {expected_minutes:g} min expected on an idle 2-core CPU (a busy "
            f"machine?). Every planned step is trained anyway; fewer steps (--train-steps) or a cap "
            f"(--train-max-seconds, applied equally to every run and stated in the report) finish sooner.")
    log.warning("[train] %s", text)
    return text


def train_all(ctx, runs: list[dict], s: dict, use_vgg: bool, plan: WorkerPlan,
              eta: TrainingEta) -> tuple[dict[str, dict], dict]:
    """Train every run at every seed, the longest predicted first (``plan.workers`` at once), and return
    ({run folder: train_one's result} in seed and ``runs`` order, the budget they trained). With a time
    cap the first of ``runs`` (SPADE when trained, the slowest) at seed 0 trains alone first; every other
    run then trains the steps it reached (equal steps)."""
    order = sorted(((r, k) for k in range(s["seeds"]) for r in runs),
                   key=lambda rk: -eta.predicted[run_folder_name(rk[0]["name"], rk[1])])
    budget = dict(s)
    results: dict[str, dict] = {}
    start = time.perf_counter()

    def jobs(pairs, max_seconds=None) -> dict:
        return {run_folder_name(r["name"], k): (train_job, dict(ctx=ctx, run=r, seed_index=k, budget=dict(budget),
                                                                  use_vgg=use_vgg, max_seconds=max_seconds))
                for r, k in pairs}

    def finished(name: str, result: dict) -> None:
        results[name] = result
        ctx.record_skipped(result.pop("skipped"))
        eta.finished(name, result["row"]["seconds"])
        log.info("[train] %s: %d steps in %.0f s; %d/%d runs done, %.0f s so far, about %.0f s left", name,
                 result["row"]["steps"], result["row"]["seconds"], len(results), len(eta.predicted),
                 time.perf_counter() - start, eta.remaining_seconds())

    if s["max_seconds"] is not None:
        first = (runs[0], 0)   # the first of training_runs: SPADE, the slowest, when it is trained
        order = [rk for rk in order if rk != first]
        for name, result in run_jobs(jobs([first], s["max_seconds"]), WorkerPlan(1, plan.threads),
                                     total_steps=s["steps"]):
            finished(name, result)
            row = result["row"]
            if row["stopped_by_time_cap"] and row["steps"] < budget["steps"]:
                log.warning("[train] %s reached step %d of %d within the %.0f s cap; every run trains %d steps",
                            name, row["steps"], budget["steps"], s["max_seconds"], row["steps"])
                eta.predicted = {n: v * row["steps"] / budget["steps"] for n, v in eta.predicted.items()}
                budget["steps"] = row["steps"]
    for name, result in run_jobs(jobs(order), plan, total_steps=budget["steps"] * len(order)):
        finished(name, result)
    canonical = [run_folder_name(r["name"], k) for k in range(s["seeds"]) for r in runs]
    return {name: results[name] for name in canonical}, budget


def run(ctx: RunContext) -> StageResult:
    s = settings(ctx)
    use_vgg, vgg_text = vgg_status(ctx.train.vgg_weights)
    runs = training_runs(s)
    plan = worker_plan(ctx.device, s["workers"], s["threads"], len(runs) * s["seeds"])
    log.info("[train] %s x %d seeds, steps %d, batch %d, ngf %d, ndf %d, %dx%d, vgg: %s; %s",
             ", ".join(r["name"] for r in runs), s["seeds"], s["steps"], s["batch_size"], s["ngf"], s["ndf"],
             s["crop_size"], s["crop_size"], vgg_text, plan.describe())
    threads = torch.get_num_threads()
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)   # the probe then times a run's pace
    try:
        eta = TrainingEta(predict_seconds(ctx, runs, s, use_vgg, ctx.train.vgg_weights), workers=plan.workers)
        log.info("[train] %d runs, predicted %.1f min on this machine (%.1f min of compute)", len(eta.predicted),
                 eta.wall_predicted / 60, eta.total_predicted / 60)
        pace_warning = check_pace(eta, s["expected_minutes"])
        start = time.perf_counter()
        results, budget = train_all(ctx, runs, s, use_vgg, plan, eta)
        wall = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    table = pd.DataFrame([r["row"] for r in results.values()]).assign(
        vgg=vgg_text, runs_at_once=plan.workers, threads=plan.threads or threads)
    ctx.write_table(table, "training", settings=s, vgg=vgg_text,
                    dataset=str(ctx.dataroot) if ctx.dataroot else "synthetic scenes")
    first = [r["name"] for r in runs]
    ctx.write_figure(loss_figure({n: results[n]["log"] for n in first}, vgg_text), "train_losses")
    steps = sorted(set(table.steps))
    capped = bool(table.stopped_by_time_cap.any())
    time_cap = {"max_seconds": s["max_seconds"], "cut": capped, "planned_steps": s["planned_steps"],
                "steps": budget["steps"],
                "rule": "the cap limits the first (slowest) run; every run then trains the steps it reached"}
    budget_text = (f"{s['planned_steps']} steps planned per run, {'/'.join(map(str, steps))} run"
                   + (f" (cut by the {s['max_seconds']:.0f} s time cap)" if capped else "")
                   + f", {s['seeds']} seed(s), batch {s['batch_size']}, {s['crop_size']}x{s['crop_size']}, "
                     f"ngf {s['ngf']}, ndf {s['ndf']}")
    label_of = {run_folder_name(r["name"], k): r["name"] for r in runs for k in range(s["seeds"])}
    per_method = table.assign(label=table.run.map(label_of)).groupby("label", sort=False).seconds.mean()
    notes = [f"Budget: {budget_text}; {len(results)} training runs, {table.seconds.sum():.0f} s of training in all, "
             f"{plan.describe()}: {wall:.0f} s wall-clock (predicted {eta.wall_predicted:.0f} s at start); mean "
             f"seconds per run at equal steps: "
             + ", ".join(f"{n} {v:.0f} s" for n, v in per_method.items()) + "."]
    notes += [f"Unequal steps: {table.groupby('run').steps.first().to_dict()}"] if len(steps) > 1 else []
    notes += [f"Warning at start: {pace_warning}"] if pace_warning else []
    tables = [TableRef("tables/training.csv",
                       f"Every training run (method, seed, steps run of {s['planned_steps']} planned, "
                       "time-cap flag, seconds, images/s, mean losses over the first and last 10% of training).",
                       ("run", "method", "seed", "steps", "planned_steps", "stopped_by_time_cap", "seconds",
                        "images_per_s"))]
    figures = [FigureRef("figures/train_losses.png",
                         f"Training losses of seed 0's runs ({', '.join(first)}) under the same recipe, "
                         f"data order and {budget['steps']}-step budget (VGG loss {vgg_text}).")]
    summary = {"settings": s, "vgg": vgg_text, "steps": budget["steps"], "budget": budget_text, "time_cap": time_cap,
               "predicted_seconds": round(eta.wall_predicted, 1), "wall_seconds": round(wall, 1),
               "workers": plan.workers, "threads": plan.threads or threads, "pace_warning": pace_warning,
               "checkpoints": {n: str(ctx.checkpoint_dir(n)) for n in results},
               "results": table.to_dict(orient="records")}
    curves = pd.DataFrame([row for r in results.values() for row in r["curve"]])
    if len(curves):
        convergence = convergence_table(curves)
        ctx.write_table(curves, "learning_curves", scenes=f"first {s['curve_images']} synthetic val scenes of seed "
                        f"{ctx.seed}", every=s["curve_every"])
        ctx.write_table(convergence, "convergence", rule=CONVERGENCE_RULE)
        labels = {r["name"]: r["method"] if r["name"] == r["norm"] else r["name"] for r in runs}
        ctx.write_figure(curve_figure(curves, labels), "learning_curves")
        shading = convergence[convergence.metric == "shading_error"]
        summary["converged"] = {m: bool(c) for m, c in zip(shading.method, shading.converged)}
        notes.append("Converged (shading error; " + CONVERGENCE_RULE + "): "
                     + ", ".join(f"{m} {'yes' if c else 'no'}" for m, c in summary["converged"].items()) + ".")
        tables += [TableRef("tables/learning_curves.csv",
                            f"Known-answer metrics of every run on {s['curve_images']} fixed synthetic val scenes "
                            f"every {s['curve_every']} steps (0 = the law; 1 = flat instances for the shading "
                            f"error, one mean colour for the base-colour error).",
                            ("run", "seed", "step", "images_seen", "train_seconds", "shading_error",
                             "base_colour_error")),
                   TableRef("tables/convergence.csv",
                            f"Whether each method converged, per metric ({CONVERGENCE_RULE}).",
                            ("method", "metric", "converged", "last_quarter_change", "seed_spread", "tolerance",
                             "steps"))]
        figures.append(FigureRef("figures/learning_curves.png",
                                 "Known-answer learning curves (log scale): seed mean and the band from the best to "
                                 "the worst seed, per run, on fixed val scenes (lower is better; 0 = the law)."))
    return StageResult(
        summary=summary, notes=notes, figures=figures,
        tables=tables + [TableRef(f"tables/train_log_{n}.csv", f"Logged losses of {n} (seed 0) during training.")
                         for n in first],
    )
