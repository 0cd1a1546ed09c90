"""Probe stage: how much of each modulation layer's gamma / beta is semantic, positional, residual.

    python run_analysis.py probe --out reports/default            # trained checkpoints/<norm>/
    python run_analysis.py probe --checkpoints ckpts              # ckpts/<name>/ of any names
    python run_analysis.py probe --preset ade20k --checkpoint latest_net_G.pth --probe-norm spade

Probes every generator folder (``latest_net_G.pth`` + ``generator.json``) under the checkpoint
root (``ctx.checkpoint_dir``): spade, clade, clade-icpe first, then any other folder. The
kernel-size ablation (a purely per-pixel SPADE) is one more folder:

    python train.py --preset synthetic --norm spade --spade_kernel_size 1 --steps 3000 --batch-size 8
    cp -r runs/0000N-synthetic-spade/generator reports/default/checkpoints/spade-k1
    python run_analysis.py probe --out reports/default --force

``--checkpoint PATH`` (also spelled ``--probe-checkpoint``) probes one generator instead: a
folder with ``generator.json``, or an official-format ``.pth`` built from ``--preset`` and
``--probe-norm`` (read from its keys when omitted; a CLADE-ICPE one is fed official-mode ICPE
maps, as the official code computes them). Every generator's ICPE maps are computed in its
``icpe_mode`` (``analysis.probe.variance.position_mode``). Images: the val split (synthetic scenes
``seed + 1000`` like the eval stage, or ``--dataroot``). A generator whose classes or size differ from the synthetic scenes' and no
``--dataroot`` is probed on synthetic label maps remapped to random classes of its preset and
resized: a stand-in, flagged in the tables' meta and the captions.

Writes ``tables/probe_layers.csv`` (one row per model, layer, param), ``probe_channels.csv.gz``,
``probe_resolutions.csv``, ``probe_ablation.csv`` and the figures ``probe_ratio_bars``,
``probe_heatmap_<model>``, ``probe_gamma_maps_<model>``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from models import NORMS, build_generator, load_generator_dir, load_official_checkpoint
from models.checkpoint import GENERATOR_CONFIG, GENERATOR_WEIGHTS, read_state_dict
from models.presets import OFFICIAL_ICPE_MODE
from data.presets import DATASETS
from data.synthetic import SyntheticScenes

from analysis.probe import variance
from analysis.probe.ablation import ablation_effects
from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.options import ProbeOptions
from analysis.quality.seeds import VARIANT_FILE
from analysis.probe.figures import plot_modulation_maps, plot_ratio_bars, plot_ratio_heatmap

log = logging.getLogger(__name__)
VAL_SEED_OFFSET = 1000  # the eval stage's synthetic val split
SYNTHETIC = DATASETS["synthetic"]


# --- which generators ------------------------------------------------------------------------

def infer_options(state: dict) -> dict:
    """``norm`` (spade | clade | clade-icpe) and ``ngf`` of an official generator state_dict."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any("mlp_shared" in k for k in state):
        norm = "spade"
    elif any("class_specified_affine" in k for k in state):
        norm = "clade-icpe" if any("dist_conv_w" in k for k in state) else "clade"
    else:
        raise ValueError(f"cannot tell the modulation of a state_dict with keys like {list(state)[:4]}; "
                         f"expected an official generator (pass --probe-norm)")
    conv = state.get("head_0.conv_1.weight_orig", state.get("head_0.conv_1.weight"))
    return {"norm": norm} | ({"ngf": conv.shape[0] // 16} if conv is not None else {})


def load_checkpoint(path: Path, preset: str, norm: str | None, device) -> torch.nn.Module:
    """Generator from a folder with generator.json, or from an official-format .pth
    (``preset``'s architecture with ``norm`` and ngf read from the file unless given; a
    CLADE-ICPE one with the official code's ICPE mode)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / GENERATOR_CONFIG).is_file() and (path.is_dir() or path.name == GENERATOR_WEIGHTS):
        return load_generator_dir(folder, device)
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} has no {GENERATOR_CONFIG}; pass the .pth file itself "
                                f"with --preset and --probe-norm")
    state, source = read_state_dict(path)
    options = infer_options(state) | ({"norm": norm} if norm else {})
    generator = build_generator(preset, **options, icpe_mode=OFFICIAL_ICPE_MODE)
    if generator.config.icpe_mode is not None:
        log.info("probe: %s has no %s; its ICPE maps are computed in mode %r, as the official code's",
                 path, GENERATOR_CONFIG, generator.config.icpe_mode)
    return load_official_checkpoint(generator, state, source=source).to(device)


def find_generators(ctx: RunContext, opts: ProbeOptions) -> dict[str, tuple[str, torch.nn.Module]]:
    """{model name: (source, generator)} to probe."""
    if opts.checkpoint is not None:
        generator = load_checkpoint(opts.checkpoint, ctx.preset, opts.norm, ctx.device)
        cfg = generator.config
        kernel = f"-k{cfg.spade_kernel_size}" if cfg.norm == "spade" and cfg.spade_kernel_size != 3 else ""
        return {cfg.norm + kernel: (str(opts.checkpoint), generator)}
    root = ctx.checkpoint_dir(NORMS[0]).parent
    folders = [ctx.checkpoint_dir(n) for n in NORMS]
    if root.is_dir():
        folders += sorted(p for p in root.iterdir() if p.is_dir() and p not in folders)
    found = {p.name: (str(p), load_generator_dir(p, ctx.device)) for p in folders
             if (p / GENERATOR_CONFIG).is_file() and (p / GENERATOR_WEIGHTS).is_file()}
    if not found:
        raise FileNotFoundError(
            f"no trained generator under {str(root)!r}: expected <dir>/<norm>/{GENERATOR_WEIGHTS} and "
            f"{GENERATOR_CONFIG} for norm in {list(NORMS)}. Run `python run_analysis.py train` first, "
            f"pass --checkpoints DIR, or probe one file with --checkpoint PATH")
    return found


# --- which images ----------------------------------------------------------------------------

def probe_batches(ctx: RunContext, config, images: int, batch_size: int) -> tuple[list[dict], str, bool]:
    """(batches of val samples for ``config``, description, whether they are a stand-in); their
    ICPE maps are in the generator's mode (``variance.position_mode``)."""
    h, w = config.output_size
    mode = variance.position_mode(config)
    if ctx.dataroot is not None:
        dataset = ctx.dataset("val", with_dist=True, icpe_mode=mode, max_samples=images)
        items = [dataset[i] for i in range(min(images, len(dataset)))]
        return _stack(items, batch_size), f"{ctx.dataroot} val, first {len(items)} images", False
    seed = ctx.seed + VAL_SEED_OFFSET
    native = (config.label_nc == SYNTHETIC["label_nc"]
              and config.contain_dontcare_label == SYNTHETIC["contain_dontcare_label"] and h == w)
    if native:
        scenes = SyntheticScenes(images, size=h, seed=seed, with_dist=True, icpe_mode=mode)
        items = [scenes[i] for i in range(images)]
        return _stack(items, batch_size), f"SyntheticScenes(seed={seed}, size={h}) val", False
    scenes = SyntheticScenes(images, size=SYNTHETIC["crop_size"], seed=seed, with_dist=False)
    rng = torch.Generator().manual_seed(seed)
    items = [_remap(scenes[i], config, rng) for i in range(images)]
    description = (f"STAND-IN: SyntheticScenes(seed={seed}) label maps with their "
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
                run: str | None = None, seed: int = 0):
    """(channels, ablation, maps figure) of one generator; the ablation on ``ablation_images``
    (default ``opts.ablation_images``), each layer alone too when ``per_layer``. ``run`` / ``seed``:
    the training run and seed it belongs to (several seeds of one run give intervals)."""
    cfg = generator.config
    stats = variance.capture_modulation_statistics(generator, batches, basis=opts.basis)
    ids = dict(model=name, run=run or name, seed=seed, norm=cfg.norm,
               spade_kernel_size=cfg.spade_kernel_size if cfg.norm == "spade" else pd.NA)
    channels = variance.variance_decomposition(stats, opts.exclude_dontcare).assign(**ids)
    count = ablation_images or opts.ablation_images
    ablation_batches = batches[: max(1, -(-count // batch_size))]
    ablation = ablation_effects(generator, stats, ablation_batches, per_layer=per_layer).assign(**ids)
    maps = variance.modulation_maps(generator, batches[0], map_layers(stats))
    figure = plot_modulation_maps(maps, channels, cfg.class_nc,
                                  title=f"{name}: gamma (scale) maps of one val image next to its label map"
                                        + (" (STAND-IN label map)" if stand_in else ""))
    return channels, ablation, figure


def run(ctx: RunContext) -> StageResult:
    opts = ctx.probe
    generators = find_generators(ctx, opts)
    channels, ablations, sources, data, stand_in = [], [], {}, {}, False
    figures, counts = [], {}
    for name, (source, generator) in generators.items():
        cfg = generator.config
        variant_file = Path(source) / VARIANT_FILE
        variant = json.loads(variant_file.read_text()) if variant_file.is_file() else {}
        if variant.get("mask_factor", 1) > 1:   # trained on coarse masks: the eval stage scores it
            log.info("probe: %s skipped (trained on %s masks)", name, variant.get("mask_resolution"))
            continue
        seed = int(variant.get("seed", 0))
        run_name = name[:-len(f"-s{seed}")] if seed and name.endswith(f"-s{seed}") else name
        batch_size = 8 if cfg.output_size[0] * cfg.output_size[1] <= 128 * 128 else 2
        # A --probe-checkpoint is full-size: fewer images, ablation of all layers at once (seconds per pass).
        images = opts.checkpoint_images if opts.checkpoint else opts.images
        budget = (dict(ablation_images=2, per_layer=opts.checkpoint_per_layer) if opts.checkpoint
                  else dict(per_layer=seed == 0))   # per layer once per run; every seed for 'all'
        budget.update(run=run_name, seed=seed)
        batches, description, is_stand_in = probe_batches(ctx, cfg, images, batch_size)
        log.info("probe: %s (%s) on %s", name, source, description)
        model_channels, ablation, maps_figure = probe_model(name, generator, batches, opts, batch_size,
                                                            is_stand_in, **budget)
        counts[name] = {"images": images, "ablation_images": budget.get("ablation_images", opts.ablation_images),
                        "per_layer_ablation": budget.get("per_layer", True)}
        channels.append(model_channels)
        ablations.append(ablation)
        sources[name], data[name], stand_in = source, description, stand_in or is_stand_in
        note = " Stand-in label maps (no real dataset)." if is_stand_in else ""
        if seed:
            plt.close(maps_figure)
            continue
        figures.append(FigureRef(str(ctx.write_figure(maps_figure, f"probe_gamma_maps_{name}").relative_to(ctx.out)),
                                 f"{name}: the three highest-variance gamma channels of the three "
                                 f"highest-resolution layers for one image, beside its label map.{note}"))
        figures.append(FigureRef(str(ctx.write_figure(plot_ratio_heatmap(model_channels, name),
                                                      f"probe_heatmap_{name}").relative_to(ctx.out)),
                                 f"{name}: semantic ratio of every channel of every modulation layer "
                                 f"(channels sorted within each layer).{note}"))
    kernel = {"spade_kernel_size": "Int64"}  # nullable integer: a SPADE option, NA for CLADE
    channels = pd.concat(channels, ignore_index=True).astype(kernel)
    layers = variance.layer_summary(channels)
    resolutions = variance.resolution_summary(channels)
    ablation = pd.concat(ablations, ignore_index=True).astype(kernel)
    note = " Stand-in label maps (no real dataset)." if stand_in else ""
    # A model whose ratio is 1 in every layer (CLADE: per-class tables) gets a line of text, not a panel.
    first_seed = layers[layers.seed == 0]   # one panel per run; every seed is in the tables
    constant = [m for m, g in first_seed.groupby("model", sort=False)
                if g.semantic_ratio_weighted.dropna().between(1 - 1e-6, 1 + 1e-6).all()]
    drawn = first_seed[~first_seed.model.isin(constant)] if len(constant) < first_seed.model.nunique() else first_seed
    constant = [m for m in constant if m not in set(drawn.model)]
    figures.insert(0, FigureRef(str(ctx.write_figure(plot_ratio_bars(drawn), "probe_ratio_bars").relative_to(ctx.out)),
                                "Share of each modulation layer's gamma / beta variance explained by the "
                                f"class (semantic), by position within the class region (ICPE "
                                f"regression) and neither, layers by depth.{note}"
                                + (f" Not drawn: {', '.join(constant)}, whose semantic share is 1 in every layer "
                                   f"by construction (gamma / beta are per-class tables)." if constant else "")))
    meta = dict(models=sources, data=data, stand_in=stand_in, images={n: c["images"] for n, c in counts.items()},
                ablation_images={n: c["ablation_images"] for n, c in counts.items()}, basis=variance.BASES[opts.basis],
                dontcare="excluded" if opts.exclude_dontcare else "kept as a class",
                positions="ICPE map given to the generator, in the mode a CLADE-ICPE generator was trained "
                          "with (else corrected), nearest-resized to each layer",
                icpe_modes={n: generators[n][1].config.icpe_mode for n in counts},
                ratios="population variances pooled over pixels of all images; NaN where total variance is 0")
    captions = {
        "probe_layers": "Per modulation layer and parameter (gamma / beta): semantic, positional and residual "
                        "shares of the variance, channel means and variance-weighted.",
        "probe_channels": "The same decomposition for every channel of every modulation layer.",
        "probe_resolutions": "Variance shares aggregated per resolution stage.",
        "probe_ablation": "Change of the output (mean absolute difference, PSNR) when gamma / beta are replaced "
                          "by their per-class means (all layers, then one layer at a time where the notes say so) or ICPE's positional "
                          "input is removed.",
    }
    ratios = ["semantic_ratio", "positional_ratio", "residual_ratio"]
    shown = {  # what report.md shows of each table (the CSV keeps every column)
        "probe_layers": ["model", "layer", "resolution", "param", *ratios, "semantic_ratio_weighted"],
        "probe_channels": ["model", "layer", "resolution", "param", "channel", *ratios],
        "probe_resolutions": ["model", "resolution", "param", *ratios, "semantic_ratio_weighted", "layers"],
    }
    tables = []
    for df, table in ((layers, "probe_layers"), (channels, "probe_channels"),
                      (resolutions, "probe_resolutions"), (ablation, "probe_ablation")):
        path = ctx.write_table(df, table, bulk=table == "probe_channels", **meta).relative_to(ctx.out)
        tables.append(TableRef(str(path), captions[table] + note, shown.get(table)))
    overall = layers.groupby(["model", "param"], sort=False)["semantic_ratio_weighted"].mean()
    probed = "; ".join(f"{n}: {c['images']} images, ablation on {c['ablation_images']}"
                       + ("" if c["per_layer_ablation"] else " (all layers at once only; --probe-checkpoint-per-layer "
                                                              "for each layer alone)") for n, c in counts.items())
    return StageResult(
        summary={"models": list(generators), "images": counts, "stand_in": stand_in,
                 "semantic_ratio_weighted_mean_over_layers": {f"{m}/{p}": round(v, 4) for (m, p), v in overall.items()}},
        notes=[f"Probed: {probed} (more with --probe-images / --probe-checkpoint-images)."],
        figures=figures, tables=tables)
