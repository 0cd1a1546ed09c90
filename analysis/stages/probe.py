"""Probe stage: how much of each modulation layer's gamma / beta is semantic, positional, residual.

    python run_analysis.py probe --out reports/default            # trained checkpoints/<norm>/
    python run_analysis.py probe --checkpoints ckpts              # ckpts/<name>/ of any names
    python run_analysis.py probe --preset ade20k --checkpoint 30_net_G.pth

Probes every generator folder (``latest_net_G.pth`` + ``generator.json``) under the checkpoint
root (``ctx.checkpoint_dir``): spade, clade, clade-icpe first, then any other folder. The
kernel-size ablation (a purely per-pixel SPADE) is one more folder:

    python train.py --preset synthetic --norm spade --spade_kernel_size 1 --steps 3000 --batch-size 8
    cp -r runs/0000N-synthetic-spade/generator reports/default/checkpoints/spade-k1
    python run_analysis.py probe --out reports/default --force

``--checkpoint [NAME=]PATH`` (repeatable) probes one more generator, named NAME (default: its
folder's name): a folder with ``generator.json``, or an official-format ``.pth`` or release folder
built from ``--preset`` (norm, width and instance edge read from its keys by
``models.checkpoint.inspect``; a CLADE-ICPE one is fed official-mode ICPE maps, as the official
code computes them). Every generator's ICPE maps are computed in its
``icpe_mode`` (``analysis.probe.variance.position_mode``). Images: the first ``--probe-images`` of
the run's val split (``RunContext.val_split``: the images the convert and eval stages use too). A
generator whose classes or size differ from the synthetic scenes' and no ``--dataroot`` is probed
on synthetic label maps remapped to random classes of its preset and resized: a stand-in, flagged
in the tables' meta and the captions. A coarse-mask run (``variant.json``: ``mask_factor`` > 1)
is probed on those label maps made as coarse as it was trained on.

Every probed generator's untrained twin (same architecture, the initial weights of its training
seed) is probed on the same label maps: the baseline that the label geometry alone gives
(``analysis.probe.verdicts``).

Writes ``tables/probe_layers.csv`` (one row per model, layer, param), ``probe_channels.csv.gz``,
``probe_resolutions.csv``, ``probe_ablation.csv``, ``probe_shares.csv`` (class share per model,
seed and layer, trained and untrained), ``probe_verdicts.csv`` (one verdict per run and layer) and
the figures ``probe_ratio_bars``, ``probe_share_vs_untrained``, ``probe_heatmap_<model>``,
``probe_gamma_maps_<model>``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from models import load_generator_dir, registered_norms
from models.checkpoint import GENERATOR_CONFIG, GENERATOR_WEIGHTS, load_generator
from data.neighbourhood import coarsen_labels
from data.presets import DATASETS, canonical_preset

from analysis.probe import variance
from analysis.probe.ablation import ablation_effects
from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.options import ProbeOptions
from analysis.quality.seeds import VARIANT_FILE
from analysis.probe.figures import (plot_modulation_maps, plot_ratio_bars, plot_ratio_heatmap,
                                    plot_share_against_untrained)
from analysis.probe.verdicts import (NEGLIGIBLE_RELATIVE_STD, SUPPORTED, VERDICT_COLUMNS, layer_shares,
                                     probe_verdicts, untrained_twin)

log = logging.getLogger(__name__)
SYNTHETIC = DATASETS["synthetic"]


# --- which generators ------------------------------------------------------------------------

def find_generators(ctx: RunContext) -> dict[str, tuple[str, torch.nn.Module, bool]]:
    """{model name: (source, generator, given with --checkpoint)} to probe: the generator folders
    under the checkpoint root (the registered norms' first), then each ``--checkpoint``."""
    root = ctx.checkpoint_root
    folders = [ctx.checkpoint_dir(n) for n in registered_norms()]
    if root.is_dir():
        folders += sorted(p for p in root.iterdir() if p.is_dir() and p not in folders)
    found = {p.name: (str(p), load_generator_dir(p, ctx.device), False) for p in folders
             if (p / GENERATOR_CONFIG).is_file() and (p / GENERATOR_WEIGHTS).is_file()}
    for name, path in ctx.given_generators().items():
        if name in found:
            raise ValueError(f"--checkpoint {path}: the name {name!r} is taken by {found[name][0]}; pass "
                             f"--checkpoint OTHER_NAME={path}")
        found[name] = (str(path), load_generator(path, ctx.preset, device=ctx.device), True)
    if not found:
        raise FileNotFoundError(
            f"no trained generator under {str(root)!r}: expected <dir>/<norm>/{GENERATOR_WEIGHTS} and "
            f"{GENERATOR_CONFIG} for norm in {list(registered_norms())}. Run `python run_analysis.py train` first, "
            f"pass --checkpoints DIR, or probe one generator with --checkpoint PATH")
    return found


# --- which images ----------------------------------------------------------------------------

def probe_batches(ctx: RunContext, config, images: int, batch_size: int) -> tuple[list[dict], str, bool]:
    """(batches of val samples for ``config``, description, whether they are a stand-in); their
    ICPE maps are in the generator's mode (``variance.position_mode``)."""
    h, w = config.output_size
    mode = variance.position_mode(config)
    native = (config.label_nc == SYNTHETIC["label_nc"]
              and config.contain_dontcare_label == SYNTHETIC["contain_dontcare_label"] and h == w)
    source = f"{ctx.dataroot} val" if ctx.dataroot is not None else f"synthetic scenes val split (seed {ctx.seed})"
    if ctx.dataroot is not None or native:
        # The custom preset's classes and size are the generator's (its generator.json), not a preset's.
        labels = (dict(label_nc=config.label_nc, contain_dontcare_label=config.contain_dontcare_label,
                       load_size=config.crop_size)
                  if ctx.dataroot is not None and canonical_preset(ctx.preset) == "custom" else {})
        dataset = ctx.val_split(images, config.crop_size, synthetic=ctx.dataroot is None, with_dist=True,
                                icpe_mode=mode, **labels)
        items = [dataset[i] for i in range(min(images, len(dataset)))]
        return _stack(items, batch_size), f"{source}, first {len(items)} images", False
    scenes = ctx.val_split(images, SYNTHETIC["crop_size"], synthetic=True, with_dist=False)
    rng = torch.Generator().manual_seed(ctx.seed)
    items = [_remap(scenes[i], config, rng) for i in range(images)]
    description = (f"STAND-IN: {source} label maps with their "
                   f"{SYNTHETIC['label_nc']} classes mapped to random classes of label_nc="
                   f"{config.label_nc} per image and resized to {h}x{w} (no real dataset given)")
    return _stack(items, batch_size), description, True


def _remap(item: dict, config, rng: torch.Generator) -> dict:
    """Synthetic sample with random target classes per image, nearest-resized to the output
    size, with its ICPE map recomputed at that size in the generator's mode."""
    n = SYNTHETIC["label_nc"]
    if config.label_nc >= n:
        targets = torch.randperm(config.label_nc, generator=rng)[:n]
    else:
        targets = torch.randint(config.label_nc, (n,), generator=rng)
    dontcare = config.label_nc if config.contain_dontcare_label else None
    table = torch.cat((targets, torch.tensor([config.label_nc if dontcare is not None else int(targets[0])])))

    def resize(t):
        return torch.nn.functional.interpolate(t[None].float(), size=config.output_size, mode="nearest")[0].long()
    label = table[resize(item["label"])]
    dist = variance.label_icpe(label, config)[0]
    return {"label": label, "instance": resize(item["instance"]), "dist": dist}


def coarsen_batches(batches: list[dict], factor: int, config) -> list[dict]:
    """``batches`` with label and instance maps ``factor`` times coarser, nearest-upsampled (as a
    coarse-mask run was trained and is scored), ICPE maps recomputed from the coarse labels."""
    out = []
    for batch in batches:
        coarse = {k: coarsen_labels(v, factor) if k in ("label", "instance") else v for k, v in batch.items()}
        if "dist" in batch:
            coarse["dist"] = variance.label_icpe(coarse["label"][:, 0], config)
        out.append(coarse)
    return out


def _stack(items: list[dict], batch_size: int) -> list[dict]:
    keys = [k for k in ("label", "instance", "dist") if items[0].get(k) is not None]
    return [{k: torch.stack([it[k] for it in items[i:i + batch_size]]) for k in keys}
            for i in range(0, len(items), batch_size)]


# --- the stage -------------------------------------------------------------------------------

def map_layers(stats: variance.ProbeStatistics, count: int = 3) -> list[str]:
    """The first layer of each of the ``count`` highest resolutions (for the example maps)."""
    first = {}
    for name, layer in stats.layers.items():
        first.setdefault(layer.resolution, name)
    return [first[r] for r in sorted(first, key=lambda r: r[0] * r[1])[-count:]]


def probe_model(name: str, generator, batches: list[dict], opts: ProbeOptions, batch_size: int,
                stand_in: bool = False, *, ablation_images: int | None = None, per_layer: bool = True,
                run: str | None = None, seed: int = 0, mask_factor: int = 1):
    """(channels, ablation, maps figure) of one generator; the ablation on ``ablation_images``
    (default ``opts.ablation_images``), each layer alone too when ``per_layer``. ``run`` / ``seed``:
    the training run and seed it belongs to (several seeds of one run give intervals);
    ``mask_factor``: how much coarser than the output its label maps are."""
    cfg = generator.config
    stats = variance.capture_modulation_statistics(generator, batches, basis=opts.basis)
    ids = dict(model=name, run=run or name, seed=seed, norm=cfg.norm,
               spade_kernel_size=cfg.spade_kernel_size if cfg.norm == "spade" else pd.NA, mask_factor=mask_factor)
    channels = variance.variance_decomposition(stats, opts.exclude_dontcare).assign(**ids)
    count = ablation_images or opts.ablation_images
    ablation_batches = batches[: max(1, -(-count // batch_size))]
    ablation = ablation_effects(generator, stats, ablation_batches, per_layer=per_layer).assign(**ids)
    maps = variance.modulation_maps(generator, batches[0], map_layers(stats))
    figure = plot_modulation_maps(maps, channels, cfg.class_nc,
                                  title=f"{name}: gamma (scale) maps of one val image next to its label map"
                                        + (" (STAND-IN label map)" if stand_in else ""))
    return channels, ablation, figure


def probe_untrained_twin(generator, seed: int, batches: list[dict], opts: ProbeOptions,
                         ids: pd.DataFrame) -> pd.DataFrame:
    """Channel table of ``generator``'s untrained twin (initial weights of training seed ``seed``)
    on the same ``batches``, with the trained model's identifying columns from ``ids``."""
    stats = variance.capture_modulation_statistics(untrained_twin(generator, seed), batches, basis=opts.basis,
                                                   progress=False)
    columns = [k for k in variance.MODEL_KEYS if k in ids.columns]
    return variance.variance_decomposition(stats, opts.exclude_dontcare).assign(**ids[columns].iloc[0].to_dict())


def verdict_notes(verdicts: pd.DataFrame) -> list[str]:
    """One line per run: how many of its layers support 'the modulation is semantic'."""
    notes = []
    for model, g in verdicts.groupby("model", sort=False):
        judged = g[~g["verdict"].str.startswith("no verdict")]
        if judged.empty:
            notes.append(f"Probe verdicts, {model}: no layer judged ({', '.join(sorted(set(g['verdict'])))}).")
            continue
        supported = judged[judged["verdict"] == SUPPORTED]
        notes.append(f"Probe verdicts, {model}: class share above the untrained twin's in {len(supported)} of "
                     f"{len(judged)} judged layers" + (f" ({', '.join(supported['resolution'].unique())})"
                                                       if len(supported) else "")
                     + f"; {len(g) - len(judged)} layer(s) without a verdict.")
    return notes


@dataclass
class ProbedModel:
    """What probing one generator gave: its channel tables (trained and untrained twin), ablation,
    gamma-map figure, the images it saw and how many."""

    channels: pd.DataFrame
    untrained: pd.DataFrame
    ablation: pd.DataFrame
    maps_figure: plt.Figure
    description: str
    stand_in: bool
    seed: int
    counts: dict


def probe_generator(ctx: RunContext, name: str, source: str, generator, given: bool) -> ProbedModel:
    """Probe one generator (and its untrained twin) on the run's val label maps, coarsened as it
    was trained when its ``variant.json`` says so."""
    opts, cfg = ctx.probe, generator.config
    variant_file = Path(source) / VARIANT_FILE
    variant = json.loads(variant_file.read_text()) if variant_file.is_file() else {}
    mask_factor = int(variant.get("mask_factor", 1))
    seed = int(variant.get("seed", 0))
    run_name = name[:-len(f"-s{seed}")] if seed and name.endswith(f"-s{seed}") else name
    batch_size = 8 if cfg.output_size[0] * cfg.output_size[1] <= 128 * 128 else 2
    # A --checkpoint is full-size: fewer images, ablation of all layers at once (seconds per pass).
    images = opts.checkpoint_images if given else opts.images
    budget = (dict(ablation_images=2, per_layer=opts.checkpoint_per_layer) if given
              else dict(per_layer=seed == 0))   # per layer once per run; every seed for 'all'
    budget.update(run=run_name, seed=seed, mask_factor=mask_factor)
    batches, description, stand_in = probe_batches(ctx, cfg, images, batch_size)
    if mask_factor > 1:
        batches = coarsen_batches(batches, mask_factor, cfg)
        description += f", label maps {mask_factor}x coarser ({variant.get('mask_resolution')}) as trained"
    log.info("probe: %s (%s) on %s", name, source, description)
    channels, ablation, maps_figure = probe_model(name, generator, batches, opts, batch_size, stand_in, **budget)
    # the training seed of variant seed k is --seed + k (analysis.stages.train)
    untrained = probe_untrained_twin(generator, ctx.seed + seed, batches, opts, channels)
    counts = {"images": images, "ablation_images": budget.get("ablation_images", opts.ablation_images),
              "per_layer_ablation": budget.get("per_layer", True)}
    return ProbedModel(channels, untrained, ablation, maps_figure, description, stand_in, seed, counts)


def model_figures(ctx: RunContext, name: str, probed: ProbedModel) -> list[FigureRef]:
    """The gamma maps and channel heatmap of a run's first seed (other seeds: none)."""
    if probed.seed:
        plt.close(probed.maps_figure)
        return []
    note = " Stand-in label maps (no real dataset)." if probed.stand_in else ""
    return [FigureRef(str(ctx.write_figure(probed.maps_figure, f"probe_gamma_maps_{name}").relative_to(ctx.out)),
                      f"{name}: the three highest-variance gamma channels of the three "
                      f"highest-resolution layers for one image, beside its label map.{note}"),
            FigureRef(str(ctx.write_figure(plot_ratio_heatmap(probed.channels, name),
                                           f"probe_heatmap_{name}").relative_to(ctx.out)),
                      f"{name}: semantic ratio of every channel of every modulation layer "
                      f"(channels sorted within each layer).{note}")]


NEGLIGIBLE_RULE = (f"modulation std (over pixels, RMS over channels, gamma and beta together) below "
                   f"{NEGLIGIBLE_RELATIVE_STD:.3g} (2^-8, bf16's relative rounding) of the std of the normalised "
                   f"activation it scales (RMS)")


def summary_figures(ctx: RunContext, layers: pd.DataFrame, verdicts: pd.DataFrame, note: str) -> list[FigureRef]:
    """The share-vs-untrained figure and the ratio bars of every run's first seed."""
    # A model whose ratio is 1 in every layer (CLADE: per-class tables) gets a line of text, not a panel.
    first_seed = layers[layers.seed == 0]   # one panel per run; every seed is in the tables
    constant = [m for m, g in first_seed.groupby("model", sort=False)
                if g.semantic_ratio_weighted.dropna().between(1 - 1e-6, 1 + 1e-6).all()]
    drawn = first_seed[~first_seed.model.isin(constant)] if len(constant) < first_seed.model.nunique() else first_seed
    constant = [m for m in constant if m not in set(drawn.model)]
    return [FigureRef(str(ctx.write_figure(plot_ratio_bars(drawn), "probe_ratio_bars").relative_to(ctx.out)),
                      "Share of each modulation layer's gamma / beta variance explained by the "
                      f"class (semantic), by position within the class region (ICPE "
                      f"regression) and neither, layers by depth; hatched 'no variance': negligible "
                      f"modulation ({NEGLIGIBLE_RULE}), whose shares are ratios of rounding noise.{note}"
                      + (f" Not drawn: {', '.join(constant)}, whose semantic share is 1 in every layer "
                         f"by construction (gamma / beta are per-class tables)." if constant else "")),
            FigureRef(str(ctx.write_figure(plot_share_against_untrained(verdicts),
                                           "probe_share_vs_untrained").relative_to(ctx.out)),
                      "Class share of each layer's gamma / beta variance (against positional and "
                      "residual variance together), trained with its 95% interval over seeds, beside "
                      "the untrained twin of the same seeds on the same label maps (what the label "
                      f"geometry alone gives). Hatched: negligible modulation ({NEGLIGIBLE_RULE}), "
                      f"no verdict.{note}")]


CAPTIONS = {
    "probe_verdicts": "Per run and layer: class share over seeds (logit-t 95% interval, inside [0, 1]), the "
                      "untrained twin's share (same seeds, same label maps) and the verdict: 'supported' when the "
                      "interval lies above the untrained share; no verdict where the modulation is negligible "
                      f"({NEGLIGIBLE_RULE}), where the untrained share is already 1 (class-only by "
                      "construction: CLADE's tables), where one class was seen, or with one seed.",
    "probe_layers": "Per modulation layer and parameter (gamma / beta): semantic, positional and residual "
                    "shares of the variance, channel means and variance-weighted.",
    "probe_shares": "Class share of each layer's gamma / beta variance (pooled, against all other variance) "
                    "per model and seed, beside its untrained twin's; modulation std, activation RMS, classes seen and "
                    "whether the modulation is negligible.",
    "probe_channels": "The same decomposition for every channel of every modulation layer.",
    "probe_resolutions": "Variance shares aggregated per resolution stage.",
    "probe_ablation": "Change of the output (mean absolute difference, PSNR) when gamma / beta are replaced "
                      "by their per-class means (all layers, then one layer at a time where the notes say so) or ICPE's positional "
                      "input is removed.",
}
_RATIOS = ["semantic_ratio", "positional_ratio", "residual_ratio"]
# What report.md shows of each table (the CSV keeps every column).
SHOWN = {
    "probe_verdicts": VERDICT_COLUMNS,
    "probe_layers": ["model", "layer", "resolution", "param", *_RATIOS, "semantic_ratio_weighted"],
    "probe_channels": ["model", "layer", "resolution", "param", "channel", *_RATIOS],
    "probe_resolutions": ["model", "resolution", "param", *_RATIOS, "semantic_ratio_weighted", "layers"],
}


def run(ctx: RunContext) -> StageResult:
    opts = ctx.probe
    generators = find_generators(ctx)
    probed = {name: probe_generator(ctx, name, source, generator, given)
              for name, (source, generator, given) in generators.items()}
    figures = [ref for name, p in probed.items() for ref in model_figures(ctx, name, p)]
    stand_in = any(p.stand_in for p in probed.values())
    counts = {name: p.counts for name, p in probed.items()}
    kernel = {"spade_kernel_size": "Int64"}  # nullable integer: a SPADE option, NA for CLADE
    channels = pd.concat([p.channels for p in probed.values()], ignore_index=True).astype(kernel)
    shares = layer_shares(channels)
    untrained_shares = layer_shares(pd.concat([p.untrained for p in probed.values()], ignore_index=True).astype(kernel))
    verdicts = probe_verdicts(shares, untrained_shares)
    shares = shares.merge(untrained_shares[["model", "layer", "share_class"]], on=["model", "layer"],
                          suffixes=("", "_untrained"))
    layers = variance.layer_summary(channels).merge(shares[["model", "layer", "negligible"]], on=["model", "layer"])
    note = " Stand-in label maps (no real dataset)." if stand_in else ""
    figures = summary_figures(ctx, layers, verdicts, note) + figures
    meta = dict(models={n: generators[n][0] for n in probed}, data={n: p.description for n, p in probed.items()},
                stand_in=stand_in, images={n: c["images"] for n, c in counts.items()},
                ablation_images={n: c["ablation_images"] for n, c in counts.items()}, basis=variance.BASES[opts.basis],
                dontcare="excluded" if opts.exclude_dontcare else "kept as a class",
                positions="ICPE map given to the generator, in the mode a CLADE-ICPE generator was trained "
                          "with (else corrected), nearest-resized to each layer",
                icpe_modes={n: generators[n][1].config.icpe_mode for n in counts},
                ratios="population variances pooled over pixels of all images; NaN where total variance is 0")
    frames = {"probe_verdicts": verdicts, "probe_layers": layers, "probe_shares": shares, "probe_channels": channels,
              "probe_resolutions": variance.resolution_summary(channels),
              "probe_ablation": pd.concat([p.ablation for p in probed.values()], ignore_index=True).astype(kernel)}
    tables = [TableRef(str(ctx.write_table(df, table, bulk=table == "probe_channels", **meta).relative_to(ctx.out)),
                       CAPTIONS[table] + note, SHOWN.get(table)) for table, df in frames.items()]
    overall = layers.groupby(["model", "param"], sort=False)["semantic_ratio_weighted"].mean()
    probed_text = "; ".join(f"{n}: {c['images']} images, ablation on {c['ablation_images']}"
                            + ("" if c["per_layer_ablation"] else " (all layers at once only; "
                                                                   "--probe-checkpoint-per-layer for each layer alone)")
                            for n, c in counts.items())
    return StageResult(
        summary={"models": list(generators), "images": counts, "stand_in": stand_in,
                 "semantic_ratio_weighted_mean_over_layers": {f"{m}/{p}": round(v, 4) for (m, p), v in overall.items()}},
        notes=[f"Probed: {probed_text} (more with --probe-images / --probe-checkpoint-images).",
               *verdict_notes(verdicts)],
        figures=figures, tables=tables)
