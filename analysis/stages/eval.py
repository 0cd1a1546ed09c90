"""Eval stage: quality of each trained generator next to what it costs, and the ROI plots.

    python run_analysis.py eval --out reports/default
    python run_analysis.py eval --checkpoints ckpts --preset ade20k --dataroot ADEChallengeData2016 \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth --segmenter upernet101_ade20k.pt

For every generator folder (``latest_net_G.pth`` + ``generator.json``) under the checkpoints
root (--checkpoints, default ``<out>/checkpoints``): the three methods' ``<norm>/`` first, then
any other subfolder, named after it (e.g. ``spade-1x1/``), then each ``--checkpoint [NAME=]PATH``.
All must read the same label layout and draw images of one size. For each: generate the val
split's images from its label maps, score them with a segmenter (the papers' network of the preset
from its released weights with ``--segmenter paper --segmenter-weights PATH``, a TorchScript file,
or a proxy trained here on the real training images) and a Frechet distance (FID with the Inception weights, else on the
proxy segmenter's features), count params / GMACs and time a forward pass round-robin with the
others. A CLADE-ICPE generator gets the val ICPE maps computed in the mode it was trained with
(``icpe_mode`` of its generator.json; "official" for a release folder).
Seeds and variants: a folder's ``variant.json`` (written by the train stage) names its run,
method, seed, steps, SPADE kernel size and mask resolution; coarse-mask runs are scored on label
maps coarsened the way they were trained. Every model gets a ``quality_seeds`` row with bootstrap
intervals over the images (``analysis.quality.seeds``); ``evaluation.csv`` holds one row per run
with the mean over its seeds and a Student-t interval; every 3x3 SPADE seed at full mask
resolution is also scored with its gamma/beta replaced by class means (``ablation_quality``), and
``neighbourhood`` gives the share of single-class 5x5 windows (what one SPADE gamma value sees) at each
generator resolution.
Generation uses the fused model (``models.fuse_for_inference``); the ablation the reference one.
Writes ``tables/evaluation.csv`` (+ .md), ``quality_seeds.csv``, ``ablation_quality.csv``,
``neighbourhood.csv``, ``tables/roi.csv``, ``tables/roi_modulation.csv`` (+ .md) and the figures
``eval_samples``, ``roi_quality_vs_cost``, ``roi_modulation``. The module is over 400 lines: the
stage, its folder discovery and its per-seed scoring share the run's loaded data and segmenter.
"""
from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from data.labels import make_semantic
from data.neighbourhood import SPADE_WINDOW, coarsen_labels, single_class_fraction
from models import fuse_for_inference, load_generator_dir, norm_spec, registered_norms, release
from models.checkpoint import GENERATOR_WEIGHTS, load_generator
from models.presets import label_config
from training.sample_grid import colorize_labels

from analysis.quality import fid_protocol
from analysis.quality import metrics
from analysis.quality import seeds
from analysis.report import roi
from analysis.quality import segmenters
from analysis.quality.segmenter_names import is_paper_segmenter, paper_segmenter_name, parse_size
from analysis.quality import stats
from analysis.quality.metric_scales import KNOWN_ANSWER, SCALES
from analysis.speed.bench import reference_kernel_ms, summarize_times, time_interleaved
from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.costs.layers import generator_inputs, is_modulation, layer_costs
from analysis.options import EvalOptions
from analysis.probe.variance import capture_modulation_statistics

log = logging.getLogger(__name__)
# Generator folders that are not a registered norm's name but have a display name of their own.
CONVERTED_NAMES = {"spade-to-clade": "SPADE converted to CLADE",
                   "spade-to-clade-ft": "SPADE converted to CLADE, fine-tuned"}


def method_name(name: str) -> str:
    """Display name of the generator folder ``name``: its norm's label, or the converted models'."""
    return norm_spec(name).label if name in registered_norms() else CONVERTED_NAMES.get(name, name)


# --- generators ---------------------------------------------------------------------------

def generator_folders(ctx: RunContext) -> dict[str, Path]:
    """{name: folder} of the generators to score, in table order: ``<checkpoints>/<norm>/`` of
    the registered methods (registry order), then the root's other subfolders holding
    ``latest_net_G.pth`` (sorted, named after the folder)."""
    root = ctx.checkpoint_root
    norms = registered_norms()
    folders = {n: ctx.checkpoint_dir(n) for n in norms if (ctx.checkpoint_dir(n) / GENERATOR_WEIGHTS).is_file()}
    others = sorted(p for p in root.iterdir() if p.name not in norms and (p / GENERATOR_WEIGHTS).is_file()) \
        if root.is_dir() else []
    return folders | {p.name: p for p in others}


def load_generators(ctx: RunContext, device) -> tuple[dict, dict[str, Path]]:
    """({name: generator}, {name: its folder}) of every generator to score: the checkpoint root's
    folders, the official release folders there (``models.release``), then each ``--checkpoint``
    (``models.checkpoint.load_generator``)."""
    skip = set(release.release_folders(ctx.checkpoint_root))   # official release folders: no generator.json
    folders = {name: f for name, f in generator_folders(ctx).items() if f not in skip}
    releases = release.discover_generators(ctx.checkpoint_root, ctx.preset, taken=folders)
    generators = {name: load_generator_dir(folder, device) for name, folder in folders.items()}
    generators |= {name: release.load_release_generator(entry, device) for name, entry in releases.items()}
    folders |= {name: entry.path.parent for name, entry in releases.items()}
    for name, path in ctx.given_generators().items():
        if name in folders and folders[name].resolve() == (path if path.is_dir() else path.parent).resolve():
            continue
        if name in folders:
            raise ValueError(f"--checkpoint {path}: its name {name!r} names its table row and is taken by "
                             f"{folders[name]}; pass --checkpoint OTHER_NAME={path}")
        generators[name] = load_generator(path, ctx.preset, device=device)
        folders[name] = path if path.is_dir() else path.parent
    return {name: g.eval() for name, g in generators.items()}, folders


def check_compatible(generators: dict, folders: dict[str, Path]) -> None:
    """Raise unless every generator reads the first one's label layout and draws its image size
    (they are all scored on the same val label maps)."""
    first_name, first = next(iter(generators.items()))
    for name, generator in generators.items():
        for what, found, expected in (
                ("label layout", label_config(generator.config), label_config(first.config)),
                ("output size (height, width)", generator.config.output_size, first.config.output_size)):
            if found != expected:
                raise ValueError(f"generator folder {folders[name]}: {what} is {found}, expected {expected} like "
                                 f"{folders[first_name]} (the first generator of this run); every generator is "
                                 f"scored on the same val label maps, so evaluate this one in a run of its own")


# --- data ---------------------------------------------------------------------------------

def dist_key(mode: str) -> str:
    """The samples' key of the ICPE maps computed in ``mode`` (``dist_official``, ``dist_corrected``)."""
    return f"dist_{mode}"


def icpe_modes(generators: dict) -> list[str]:
    """The ICPE modes the CLADE-ICPE generators among ``generators`` were trained with."""
    return sorted({g.config.icpe_mode for g in generators.values() if norm_spec(g.config.norm).needs_icpe})


def load_samples(ctx: RunContext, phase: str, count: int, size: int, *, icpe_modes=(),
                 skip: int = 0) -> dict[str, torch.Tensor] | None:
    """Stacked ``label``, ``instance``, ``image`` of items ``skip .. skip + count`` of
    ``ctx.dataset(phase)`` (the synthetic scenes' train or val stream when
    there is no --dataroot), and for each of ``icpe_modes`` the dataset's ICPE maps computed in
    that mode under :func:`dist_key`; None when the split has fewer items."""
    def dataset(**icpe):
        if phase == "val":
            return ctx.val_split(skip + count, size, **icpe)
        return ctx.dataset(phase, crop_size=size, seed=ctx.seed, max_samples=skip + count, **icpe)

    modes = list(icpe_modes)
    first = dataset(**(dict(with_dist=True, icpe_mode=modes[0]) if modes else {}))
    if len(first) < skip + count:
        return None
    indices = range(skip, skip + count)
    items = [first[i] for i in tqdm(indices, desc=f"{phase} samples", leave=False)]
    samples = {k: torch.stack([item[k] for item in items]) for k in ("label", "instance", "image")
               if items[0].get(k) is not None}
    expected = seeds.expected_images([item.get("path", "") for item in items], size)
    if expected is not None:   # built-in scenes: the law's E[image | layout], the known answer
        samples["expected"] = expected
    if modes:
        samples[dist_key(modes[0])] = torch.stack([item["dist"] for item in items])
    for mode in modes[1:]:   # another pass over the same items (same seed: same crops and flips)
        other = dataset(with_dist=True, icpe_mode=mode)
        samples[dist_key(mode)] = torch.stack([other[i]["dist"] for i in indices])
    return samples


def generator_samples(generator, samples: dict) -> dict:
    """``samples`` for ``generator``: a CLADE-ICPE generator's ``dist`` is the ICPE maps of the mode it
    was trained with (``config.icpe_mode``); the maps of other modes are left out."""
    cfg = generator.config
    out = {k: v for k, v in samples.items() if not k.startswith("dist")}
    if norm_spec(cfg.norm).needs_icpe:
        key = dist_key(cfg.icpe_mode)
        if key not in samples:
            found = sorted(k.removeprefix("dist_") for k in samples if k.startswith("dist_"))
            raise ValueError(f"the samples hold ICPE maps of modes {found}, but this {norm_spec(cfg.norm).label} "
                             f"generator was trained with mode {cfg.icpe_mode!r}; load them with "
                             f"icpe_modes=[{cfg.icpe_mode!r}]")
        out["dist"] = samples[key]
    return out


def generate(generator, samples: dict, batch_size: int, device) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] of ``generator`` (eval mode) for the samples' label maps
    (and, for CLADE-ICPE, the ICPE maps of its mode: :func:`generator_samples`)."""
    cfg = generator.config
    samples = generator_samples(generator, samples)
    generator = fuse_for_inference(generator)
    out = []
    with torch.no_grad():
        for i in range(0, len(samples["label"]), batch_size):
            part = {k: v[i:i + batch_size].to(device) for k, v in samples.items()}
            semantic = make_semantic(part["label"], part.get("instance"), cfg)
            dist = part.get("dist") if norm_spec(cfg.norm).needs_icpe else None
            out.append(generator(semantic, dist=dist).clamp(-1, 1).cpu())
    return torch.cat(out)


# --- costs --------------------------------------------------------------------------------

def generator_costs(generators: dict, latency_repeats: int, device) -> pd.DataFrame:
    """Params and GMACs (analysis.costs.layers, batch 1) of each generator, and its median latency
    in ms (batch 1, forward only, no_grad), timed round-robin in this run, with the bench stage's
    reliability check (``latency_reliable``, ``latency_unreliable_reason``: repeats' spread and a
    reference kernel timed before and after, ``stats.summary_reliability``)."""
    rows, calls = [], {}
    for norm, generator in generators.items():
        args, kwargs = generator_inputs(generator.config, device=device)
        table = layer_costs(generator, args, kwargs=kwargs)
        modulation = table[table["role"].map(is_modulation)]
        rows.append({"norm": norm, "params": int(table["params"].sum()),
                     "modulation_params": int(modulation["params"].sum()),
                     "gmacs_fvcore": table["gmacs_fvcore"].sum(),
                     "modulation_gmacs_fvcore": modulation["gmacs_fvcore"].sum(),
                     "gmacs_complete": table["gmacs_complete"].sum()})
        calls[norm] = (lambda g=fuse_for_inference(generator), a=args, k=kwargs: g(*a, **k))  # the fused model
    before = reference_kernel_ms(device)
    with torch.no_grad():
        times = time_interleaved(calls, warmup=3, repeats=latency_repeats, device=device)
    after = reference_kernel_ms(device)
    for row in rows:
        summary = summarize_times(times[row["norm"]])
        check = stats.summary_reliability(summary["p10_ms"], summary["median_ms"], summary["p90_ms"], summary["n"],
                                          before, after)
        row.update(latency_ms=summary["median_ms"], latency_reliable=check.reliable,
                   latency_unreliable_reason=check.reason)
    return pd.DataFrame(rows)


# --- scores -------------------------------------------------------------------------------

def user_segmenter(ctx: RunContext, opts: EvalOptions, device):
    """The --segmenter: a paper network from its released weights (``paper``: the preset's), else the
    TorchScript file with the preset's paper class map and input norm by default."""
    if is_paper_segmenter(opts.segmenter):
        return segmenters.load_paper_segmenter(
            paper_segmenter_name(opts.segmenter, ctx.preset), opts.segmenter_weights, device,
            test_size=parse_size(opts.segmenter_size) if opts.segmenter_size else None,
            img_sizes=opts.segmenter_img_sizes, precision=opts.segmenter_precision,
            channels_last=opts.segmenter_channels_last)
    spec = segmenters.PAPER_SEGMENTERS.get(ctx.preset)
    class_map = opts.segmenter_class_map or (spec.class_map if spec else None)
    input_norm = opts.segmenter_input or (spec.input_norm if spec else "imagenet")
    return segmenters.load_torchscript_segmenter(opts.segmenter, class_map, input_norm, device)


def train_proxy(ctx: RunContext, opts: EvalOptions, label_nc: int, train_samples, device):
    """Proxy segmenter trained on the real training images (labelled proxy everywhere)."""
    log.info("training the proxy segmenter on %d real images (%d steps)", len(train_samples["image"]),
             opts.proxy_steps)
    cap = None if opts.proxy_max_seconds == 0 else opts.proxy_max_seconds   # 0 = no cap
    return segmenters.train_proxy_segmenter(train_samples["image"], train_samples["label"], label_nc,
                                            steps=opts.proxy_steps, seed=ctx.seed, device=device, max_seconds=cap)


def feature_extractors(opts: EvalOptions, proxy, device) -> tuple[dict, list[str]]:
    """{column: (extractor, transform, minimum samples)} and notes on what was left out."""
    extractors = {}
    if proxy is not None:   # warn below 4 samples per feature dimension (FID: 2048 for 2048)
        extractors["fd_proxy_features"] = (proxy.features, None, 4 * proxy.classifier.in_channels)
    try:
        inception = metrics.load_fid_inception(opts.inception_weights, device)
    except metrics.InceptionWeightsMissing as exc:
        log.warning("%s", exc)
        return extractors, [f"FID is n/a: {metrics.FID_WEIGHTS_FILE} was not found (download "
                            f"{metrics.FID_WEIGHTS_URL} into {metrics.hub_weights_path().parent} or pass "
                            f"--inception-weights); fd_proxy_features stands in and is not comparable with FID."]
    extractors["fid"] = (inception, None, metrics.FID_MIN_SAMPLES)
    if not metrics.cleanfid_available():
        return extractors, ["fid_clean is n/a: the optional `cleanfid` package is not installed."]
    extractors["fid_clean"] = (lambda x: inception(x, resize=False), metrics.clean_resize, metrics.FID_MIN_SAMPLES)
    return extractors, []


# --- the stage ----------------------------------------------------------------------------

def run(ctx: RunContext) -> StageResult:
    opts = ctx.eval
    device = torch.device(ctx.device)
    chosen = None if opts.segmenter is None else user_segmenter(ctx, opts, device)   # a wrong file fails first
    generators, folders = load_generators(ctx, device)
    if not generators:
        raise FileNotFoundError(f"no generator folder under {ctx.checkpoint_root} (<norm>/{GENERATOR_WEIGHTS} for "
                                f"norm in {list(registered_norms())}, or any <name>/{GENERATOR_WEIGHTS}); run the "
                                f"train stage first, or pass --checkpoints DIR or --checkpoint PATH")
    check_compatible(generators, folders)
    cfg = next(iter(generators.values())).config
    size = cfg.output_size[0]
    log.info("evaluating %s on %d val images of %dx%d", list(generators), opts.images, *cfg.output_size)

    val = load_samples(ctx, "val", opts.images, size, icpe_modes=icpe_modes(generators))
    floor = load_samples(ctx, "val", opts.images, size, skip=opts.images)
    needs_proxy = opts.segmenter is None or not _inception_present(opts)
    proxy = None
    if needs_proxy:
        train = load_samples(ctx, "train", opts.train_images, size)
        proxy = train_proxy(ctx, opts, cfg.label_nc, train, device)
    segmenter = proxy if chosen is None else chosen
    extractors, notes = feature_extractors(opts, proxy, device)
    official = None
    if opts.fid_protocol == "official" and "fid" in extractors:
        official = fid_protocol.official_reference(
            ctx.preset, extractors["fid"][0], device=device, cache_dir=ctx.out / "cache" / "fid",
            image_size=cfg.output_size, stats_path=opts.fid_train_stats, dataroot=ctx.dataroot,
            train_images=None if ctx.dataroot else opts.train_images, batch_size=opts.batch_size, seed=ctx.seed,
            dataset=(f"{ctx.dataroot}{' (--skip-invalid)' if ctx.skip_invalid else ''}" if ctx.dataroot
                     else f"synthetic scenes, seed {ctx.seed}, train stream"), make_dataset=ctx.dataset)
        extractors["fid"] = (extractors["fid"][0], official.transform, metrics.FID_MIN_SAMPLES)
        notes.append(official.note)
    fixed = {"fid": official.statistics} if official else {}
    suffix = "_proxy" if segmenter.is_proxy else ""

    runs = {name: run_variant(folder, generators[name], name) for name, folder in folders.items()}
    quality, ablation, samples, known = score_runs(ctx, opts, generators, runs, val, floor, segmenter, extractors,
                                                   suffix, device, fixed)
    table = seed_means(quality, known)
    base = {r["run"]: name for name, r in runs.items() if r["seed"] == 0}
    costs = generator_costs({run: generators[name] for run, name in base.items()}, opts.latency_repeats, device)
    table = table.merge(costs.rename(columns={"norm": "run"}), on="run", how="left")
    for column in ("fid", "fid_clean", "fd_proxy_features"):
        if column not in table:
            table[column] = float("nan")
    table = table.rename(columns={"norm": "modulation", "run": "norm"})
    intervals = [c for c in table if c.endswith(("_ci_low", "_ci_high"))]
    order = ["method", "norm", "modulation", "n_seeds", "steps", "mask_resolution", *KNOWN_ANSWER, "fid", "fid_clean",
             "fd_proxy_features", f"miou{suffix}", f"accuracy{suffix}", "params", "modulation_params", "gmacs_fvcore",
             "modulation_gmacs_fvcore", "gmacs_complete", "latency_ms", "latency_reliable",
             "latency_unreliable_reason", *intervals]
    table = table[[c for c in order if c in table]]
    table["n_images"] = opts.images
    table["segmenter"] = segmenter.description
    table["segmenter_kind"] = segmenter.kind
    neighbourhood = single_class_fraction(val["label"], generator_resolutions(cfg)).assign(
        dataset=ctx.preset if ctx.dataroot else "synthetic scenes")
    fid_reference = official.provenance if official else fid_protocol.toolkit_provenance()
    return write_outputs(ctx, opts, table, samples, val["label"][:4], cfg, notes, segmenter, extractors,
                         fid_reference=fid_reference, quality=quality, ablation=ablation, neighbourhood=neighbourhood)


# --- seeds, variants, intervals -----------------------------------------------------------

def run_variant(folder: Path, generator, name: str) -> dict:
    """What the train stage recorded about a checkpoint (``variant.json``), else what its name
    and config say: run (name without the seed suffix), method, norm, seed, steps, kernel size,
    mask factor and resolution."""
    cfg = generator.config
    h, w = cfg.output_size
    info = {"method": method_name(name), "norm": cfg.norm, "seed": 0, "steps": float("nan"),
            "spade_kernel_size": cfg.spade_kernel_size, "mask_factor": 1}
    path = folder / seeds.VARIANT_FILE
    if path.is_file():
        info.update(json.loads(path.read_text()))
    seed = int(info["seed"])
    run = name[:-len(f"-s{seed}")] if seed and name.endswith(f"-s{seed}") else name
    factor = int(info["mask_factor"])
    masks = f"{h // factor}x{w // factor}"
    method = info["method"] + (f" ({masks} masks)" if factor > 1 else "")   # one label per table row
    return {**info, "method": method, "run": run, "seed": seed, "mask_factor": factor, "mask_resolution": masks}


def coarse_samples(samples: dict, factor: int) -> dict:
    """The samples with label and instance maps ``factor`` times coarser (nearest-upsampled)."""
    return {k: coarsen_labels(v, factor) if k in ("label", "instance") else v for k, v in samples.items()}


def generator_resolutions(cfg) -> list[tuple[int, int]]:
    """The feature-map sizes of the generator's norm layers, coarse to fine."""
    h, w = cfg.latent_size
    return [(h * 2 ** i, w * 2 ** i) for i in range(cfg.num_up_layers + 1)]


def score_runs(ctx, opts, generators: dict, runs: dict, val: dict, floor, segmenter, extractors: dict, suffix: str,
               device, fixed: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """(quality_seeds, ablation_quality, sample images by method label, known-answer energies
    {run: [per seed]}): every generator scored with bootstrap intervals over images (and, on the
    built-in scenes, its known-answer errors), the real-vs-real rows, and the class-mean ablation
    of each 3x3 SPADE at full mask resolution (every layer, then each resolution stage). Frechet columns are
    against the real val images, except those in ``fixed`` ({column: ActivationStats}, e.g. the
    official protocol's training-set FID statistics: no bootstrap interval)."""
    real_scores = seeds.image_scores(val["image"], val["label"], segmenter, extractors, opts.batch_size,
                                             device)
    rows, ablation, samples, known = [], [], {"real image": val["image"][:4]}, {}
    for name, generator in tqdm(generators.items(), desc="eval runs"):
        r = runs[name]
        data = val if r["mask_factor"] == 1 else coarse_samples(val, r["mask_factor"])
        images = generate(generator, data, opts.batch_size, device)
        if r["seed"] == 0:
            samples[r["method"]] = images[:4]
        scores = seeds.image_scores(images, val["label"], segmenter, extractors, opts.batch_size, device)
        keys = {k: r[k] for k in ("run", "method", "norm", "seed", "steps", "spade_kernel_size", "mask_resolution")}
        row = {**keys, "images": len(images), **seeds.quality_row(scores, real_scores, extractors,
                                                                          suffix=suffix, seed=ctx.seed, fixed=fixed)}
        if "expected" in val:   # scored against the full-resolution scene, whatever masks the model saw
            energies = seeds.known_answer_energies(images, val["expected"], val["instance"])
            known.setdefault(r["run"], []).append(energies)
            row.update(seeds.known_answer_row(energies, seed=ctx.seed))
        rows.append(row)
        if r["norm"] == "spade" and r["spade_kernel_size"] == 3 and r["mask_factor"] == 1:
            ablation += class_mean_rows(ctx, opts, generator, val, row, real_scores, segmenter, extractors, suffix,
                                        device, fixed)
    real = {"run": "real", "method": "real images", "norm": "real", "seed": 0, "images": len(val["image"]),
            **seeds.quality_row(real_scores, None, extractors, suffix=suffix, seed=ctx.seed)}
    if "expected" in val:   # the real scenes' own texture and noise: what a perfect sampler of the law scores
        real.update(seeds.known_answer_row(seeds.known_answer_energies(val["image"], val["expected"],
                                                                       val["instance"]), seed=ctx.seed))
    if floor is not None:   # other real images against the val images: the Frechet floor (a bias at this count)
        other = seeds.image_scores(floor["image"], floor["label"], None, extractors, opts.batch_size, device)
        real.update(seeds.quality_row(other, real_scores, extractors, suffix=suffix, seed=ctx.seed,
                                              fixed=fixed))
    rows.append(real)
    return pd.DataFrame(rows), pd.DataFrame(ablation), samples, known


def class_mean_rows(ctx, opts, generator, val: dict, unablated: dict, real_scores, segmenter, extractors: dict,
                    suffix: str, device, fixed: dict) -> list[dict]:
    """Rows of ``ablation_quality`` for one SPADE: as trained ('none'), every layer replaced by its
    class means ('all'), then each resolution stage alone ('HxW')."""
    val = generator_samples(generator, val)
    batches = [{k: v[i:i + opts.batch_size] for k, v in val.items()} for i in range(0, len(val["label"]),
                                                                                   opts.batch_size)]
    captured = capture_modulation_statistics(generator, batches, progress=False)
    keys = {"run": unablated["run"], "model": unablated["method"], "norm": "spade", "seed": unablated["seed"],
            "steps": unablated["steps"]}
    metric_columns = {k: v for k, v in unablated.items() if k not in (*keys, "method", "spade_kernel_size",
                                                                       "mask_resolution", "images")}
    out = [{**keys, "ablated": "none", "images": unablated["images"], **metric_columns}]
    stages = {"all": None, **seeds.resolution_stages(captured)}
    for ablated, layers in stages.items():
        images = seeds.ablated_images(generator, val, captured, layers, opts.batch_size, device)
        scores = seeds.image_scores(images, val["label"], segmenter, extractors, opts.batch_size, device)
        row = {**keys, "ablated": ablated, "images": len(images),
               **seeds.quality_row(scores, real_scores, extractors, suffix=suffix, seed=ctx.seed, fixed=fixed)}
        if "expected" in val:
            row.update(seeds.known_answer_row(seeds.known_answer_energies(images, val["expected"], val["instance"]),
                                              seed=ctx.seed))
        out.append(row)
    return out


def seed_means(quality: pd.DataFrame, known: dict | None = None) -> pd.DataFrame:
    """One row per run (method variant): metric means over seeds with intervals (``<metric>_ci_low``
    / ``_ci_high``: Student t over seeds, clipped to the metric's bounds; the known-answer columns
    from ``known`` ({run: [per-seed energies]}): hierarchical bootstrap over seeds and images),
    ``n_seeds``, the steps run; the real row as is."""
    metrics_present = [c for c in quality if c in roi.quality_columns(quality)]
    bounds = {m: SCALES[m].bounds for m in metrics_present}
    summary = stats.seed_summary(quality, metrics_present, by=("run",), bounds=bounds)
    for run, energies in (known or {}).items():
        where = summary.run == run
        for column in energies[0]:
            if f"{column}_ci_low" in summary:
                interval = stats.hierarchical_bootstrap(np.stack([e[column][0] for e in energies]),
                                                        np.stack([e[column][1] for e in energies]),
                                                        bounds=bounds[column])
                summary.loc[where, [f"{column}_ci_low", f"{column}_ci_high"]] = interval.low, interval.high
    summary = summary.rename(columns={f"{m}_mean": m for m in metrics_present})
    first = quality.drop_duplicates("run").set_index("run")
    steps = quality.groupby("run").steps.agg(lambda s: "/".join(str(int(v)) for v in sorted(set(s.dropna()))))
    for column in ("method", "norm", "mask_resolution"):
        summary[column] = summary.run.map(first[column])
    summary["steps"] = summary.run.map(steps)
    return summary


def _inception_present(opts: EvalOptions) -> bool:
    try:
        metrics.find_inception_weights(opts.inception_weights)
        return True
    except metrics.InceptionWeightsMissing:
        return False


def write_outputs(ctx: RunContext, opts: EvalOptions, table: pd.DataFrame, samples: dict, labels, cfg,
                  notes: list, segmenter, extractors: dict, fid_reference: dict | None = None, *,
                  quality: pd.DataFrame, ablation: pd.DataFrame, neighbourhood: pd.DataFrame) -> StageResult:
    """Tables (CSV + Markdown), figures and the stage's result."""
    timing = f"{ctx.device}, {torch.get_num_threads()} CPU threads, batch 1, no_grad"
    write_files(ctx, opts, table, samples, labels, cfg, segmenter, fid_reference, timing,
                quality=quality, ablation=ablation, neighbourhood=neighbourhood)
    method_notes, proxy = eval_notes(opts, table, segmenter, extractors, quality, timing)
    return StageResult(
        summary={"methods": table.loc[table.norm != "real", "norm"].tolist(), "eval_images": opts.images,
                 "segmenter": segmenter.description,
                 **({"segmenter_seconds_per_image": round(segmenter.seconds_per_image, 4)}
                    if getattr(segmenter, "seconds_per_image", None) else {})},
        notes=notes + method_notes, proxy=proxy,
        tables=eval_tables(opts, segmenter, quality, ablation, neighbourhood), figures=list(EVAL_FIGURES))


def write_files(ctx: RunContext, opts: EvalOptions, table: pd.DataFrame, samples: dict, labels, cfg, segmenter,
                fid_reference: dict | None, timing: str, *, quality: pd.DataFrame, ablation: pd.DataFrame,
                neighbourhood: pd.DataFrame) -> None:
    """The stage's tables (CSV, with their meta.json, and Markdown) and figures."""
    protocol = segmenter.record() if isinstance(segmenter, segmenters.PaperSegmenter) else None
    meta = dict(eval_images=opts.images, segmenter=segmenter.description, segmenter_protocol=protocol,
                latency=f"median of {opts.latency_repeats} forward passes ({timing})", fid_reference=fid_reference)
    ctx.write_table(table, "evaluation", **meta)
    ctx.write_table(quality, "quality_seeds", **meta, bootstrap=f"percentile, {stats.N_BOOT} resamples of the images")
    if not ablation.empty:
        ctx.write_table(ablation, "ablation_quality", **meta)
    ctx.write_table(neighbourhood, "neighbourhood", **meta)
    log.info("evaluation (%s):\n%s", segmenter.description,
             roi.to_markdown(table.drop(columns=["segmenter", "segmenter_kind"])))
    roi_table, modulation = roi.roi_table(table), roi.modulation_roi(table)
    ctx.write_table(roi_table, "roi", **meta)
    ctx.write_table(modulation, "roi_modulation", **meta)
    for name, df in (("evaluation", table), ("roi", roi_table), ("roi_modulation", modulation)):
        (ctx.tables_dir / f"{name}.md").write_text(roi.to_markdown(df) + "\n")
    ctx.write_figure(sample_grid(samples, labels, cfg.class_nc), "eval_samples")
    ctx.write_figure(roi.plot_quality_vs_cost(table), "roi_quality_vs_cost")
    ctx.write_figure(roi.plot_modulation_roi(table), "roi_modulation")


def eval_notes(opts: EvalOptions, table: pd.DataFrame, segmenter, extractors: dict, quality: pd.DataFrame,
               timing: str) -> tuple[list[str], list[str]]:
    """(the report's notes on the metrics and the timing, the notes on what stands in for a real metric)."""
    proxy_note = (f"mIoU / accuracy columns ending in _proxy come from {segmenter.description}; "
                  "the 'real images' row is that segmenter on the real val images (its upper bound)."
                  if segmenter.is_proxy else f"mIoU / accuracy from {segmenter.description}.")
    fd_note = (f"fd_proxy_features: Frechet distance between {opts.images} generated and real val images "
               f"on the proxy segmenter's pooled penultimate features (not FID); the 'real images' row "
               f"gives it for {opts.images} other real images, the metric's floor at this sample count "
               f"(an estimator bias, not a threshold).")
    known_note = ("Known answers (built-in scenes, the primary quality columns): shading_error is the share of "
                  "the scenes' positional shading an image misses (0 = the law's expected image, 1 = flat inside "
                  "every instance), base_colour_error the error of the instances' mean colours (1 = one grey-ish "
                  "colour everywhere); the 'real images' row is the real scenes' own texture and noise. Their "
                  "intervals in evaluation.csv resample seeds and images together (hierarchical bootstrap)."
                  if any(c in quality for c in KNOWN_ANSWER) else None)
    unreliable = table[table.latency_reliable.eq(False)]          # the real row has no timing (NaN)
    latency_note = (f"**Unreliable latency** for {', '.join(unreliable.method.astype(str))} "
                    f"({unreliable.latency_unreliable_reason.iloc[0]}): the ROI table and figure draw no latency "
                    f"Pareto front; re-run the eval stage on a quiet machine." if len(unreliable) else
                    "Latency reliable: repeats within their spread limit and the reference kernel steady "
                    "(the bench stage's check).")
    fd = [fd_note] if "fd_proxy_features" in extractors else []
    notes = [n for n in (known_note,) if n] + [proxy_note] + fd + [
        f"Params and GMACs: analysis.costs.layers on the evaluated generators (batch 1); latency_ms: "
        f"median of {opts.latency_repeats} forward passes ({timing}) "
        f"timed round-robin with the other methods in this run.", latency_note]
    return notes, fd + ([proxy_note] if segmenter.is_proxy else [])


def eval_tables(opts: EvalOptions, segmenter, quality: pd.DataFrame, ablation: pd.DataFrame,
                neighbourhood: pd.DataFrame) -> list[TableRef]:
    """The report's entries of the stage's tables."""
    return [
        TableRef("tables/evaluation.csv",
                 f"Quality of each method (mean over its n_seeds training seeds, steps as run; the "
                 f"<metric>_ci_low/_ci_high columns of the CSV give the 95 % interval: Student t over "
                 f"seeds clipped to the metric's bounds, hierarchical bootstrap for the known answers) on "
                 f"{opts.images} val label maps (known answers, Frechet distances, segmentation scores"
                 f" from {segmenter.description}) next to the seed-0 "
                 f"model's params, GMACs and measured latency."),
        TableRef("tables/quality_seeds.csv",
                 f"Every trained model (method, seed, steps run, mask resolution) scored on {opts.images} "
                 f"val label maps, with the 95 % percentile bootstrap interval over those images "
                 f"(<metric>_boot_low/_boot_high in the CSV); the 'real' row is each metric's floor at this "
                 f"image count (reported, not a threshold).",
                 [c for c in ("run", "seed", "steps", "mask_resolution", *roi.quality_columns(quality))
                  if c in quality]),
        *([TableRef("tables/ablation_quality.csv",
                    "Each trained 3x3 SPADE as trained ('none') and with its gamma/beta replaced by their "
                    "class means in every layer ('all') or in the layers of one resolution stage, scored "
                    "like the methods (bootstrap intervals in the CSV).",
                    [c for c in ("run", "seed", "ablated", *roi.quality_columns(ablation)) if c in ablation])]
          if not ablation.empty else []),
        TableRef("tables/neighbourhood.csv",
                 f"Share of pixels whose {SPADE_WINDOW}x{SPADE_WINDOW} neighbourhood holds a single class in "
                 f"the {int(neighbourhood.images.iloc[0])} val label maps, at each resolution of the generator's "
                 "norm layers: one SPADE gamma / beta value depends on that window (two stacked 3x3 convs), so "
                 "there it sees one class only and cannot be more than class-adaptive."),
        TableRef("tables/roi.csv",
                 "Costs and qualities per method; pareto_<cost> says whether no other method is at "
                 "least as cheap on that axis and at least as good on every quality column."),
        TableRef("tables/roi_modulation.csv",
                 "Extra GMACs and parameters each method spends in its modulation layers over the "
                 "cheapest one, and the quality difference they buy (delta_<metric>: negative is "
                 "better for Frechet distances, positive for mIoU and accuracy)."),
    ]


EVAL_FIGURES = [
    FigureRef("figures/eval_samples.png",
              "Val label maps, the real images and each method's generated images for the same maps."),
    FigureRef("figures/roi_quality_vs_cost.png",
              "Quality against GMACs, parameters and measured latency per method, with the "
              "Pareto front dashed and dominated methods drawn as crosses."),
    FigureRef("figures/roi_modulation.png",
              "Quality against the GMACs each method spends in its modulation layers."),
]


# Characters per line of a sample-grid column title: wider would run into the next column at fontsize 8.
TITLE_WIDTH = 14


def sample_grid(samples: dict, labels: torch.Tensor, class_nc: int):
    """Figure: one row per val sample; columns label map, then ``samples`` ({method label: images}),
    each title wrapped to the column's width so that neighbouring titles never overlap."""
    columns = ["label map"] + list(samples)
    titles = [textwrap.fill(name, TITLE_WIDTH, break_on_hyphens=False) for name in columns]
    lines = max(t.count("\n") + 1 for t in titles)
    label_rgb = colorize_labels(labels, class_nc)
    fig, axes = plt.subplots(len(labels), len(columns), squeeze=False,
                             figsize=(1.6 * len(columns), 1.6 * len(labels) + 0.15 * lines))
    for i in range(len(labels)):
        for j, name in enumerate(columns):
            image = label_rgb[i] if j == 0 else (samples[name][i].float().clamp(-1, 1) + 1) / 2
            axes[i, j].imshow(image.permute(1, 2, 0).numpy())
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=8)
    fig.tight_layout()
    return fig
