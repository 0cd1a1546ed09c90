"""Reference vs fused generator latency, measured through the public call ``model(semantic)``.

    python run_analysis.py bench --compare            # as part of the bench stage
    python -m analysis.speed.variants --out reports/speed      # alone (options: --help)

For each preset, norm and batch size, these variants are timed round-robin in one
:func:`analysis.speed.bench.time_interleaved` call, so their ratios come from the same machine state:

- ``official-equiv``: the reference generator fed like the official code, which resizes the
  whole one-hot map in every norm layer and takes the argmax there (fp32);
- ``reference``: ``G.eval()`` (models/generator.py): label map resized once per resolution,
  spectral norm recomputed every call, BatchNorm then modulation (fp32);
- ``fused``: ``models.fuse_for_inference(G)`` (models/fusion.py; fp32);
- ``fused-bf16``: the same computing in bf16 (``G_fast(semantic, dtype=torch.bfloat16)``);
- ``compiled`` (``--compile``): ``models.fast.accelerate(G_fast, compile=True)`` (inductor,
  freezing; on CUDA ``compiled-bf16``: bf16 with ``mode="reduce-overhead"``, i.e. CUDA graphs);
- on CUDA also ``reference-bf16-autocast`` and ``fused-bf16-cudagraph`` (CUDA graph replay).

``--train`` also times a full training iteration (G step with every loss, D step) under the
recipes of :data:`TRAIN_VARIANTS`: fp32 eager with the official spectral norm (weights divided
by sigma), then one change at a time: spectral norm on the inputs (``models.spectral``),
channels_last, bf16 autocast (:func:`compare_training`, ``tables/speed_train.csv``).

On CPU the process's allocator is tuned first (``models.fast.tune_cpu_allocator``; it speeds
up every variant by ~20%, the official-equivalent one included; ``--default-malloc`` skips it).

Each variant is then also timed alone, back to back (``alone_median_ms``), as a deployment
loop runs it: interleaving lets the other variants evict its weights from the last-level
cache (measured: fused CLADE 0.30 s alone vs 0.38 s interleaved on the 2-core CPU).

Every variant's output is compared with the reference fp32 output (``max_abs_diff``) against a
stated tolerance (fp32 1e-4; bf16 :data:`BF16_TOLERANCE`). Weights are the official
initialisation with BatchNorm running statistics calibrated on one random label map, so
activations have realistic scale (untrained running statistics make them explode and the
tanh output saturate, where any comparison is meaningless).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

import models.generator as generator_module
from models import build_generator, fuse_for_inference
from models.fast import accelerate, tune_cpu_allocator

from analysis.speed.bench import environment, summarize_times, time_interleaved
from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.costs.formulas import closed_form_generator_costs
from analysis.costs.layers import generator_inputs
from analysis.options import CompareOptions, OptionParser, add_options, options_from_args
from analysis.speed.train_step import TRAIN_LOSS_TOLERANCE, compare_training

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
# bf16 keeps 8 mantissa bits (relative rounding 2^-9 per op); over ~60 layers the generator's
# tanh output (range [-1, 1]) moves by up to a few 1e-2 on calibrated random weights.
BF16_TOLERANCE = 5e-2

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from NVIDIA's datasheets
# (H100 SXM5 / PCIe, H200 SXM, A100 SXM). Matched by substring of the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "A100": 312.0}

COLUMNS = ["preset", "norm", "batch", "variant", "dtype", "median_ms", "p90_ms", "min_ms", "n",
           "speedup_vs_reference", "speedup_vs_official_equiv", "alone_median_ms", "alone_speedup_vs_official_equiv",
           "first_call_ms",
           "max_abs_diff", "tolerance", "within_tolerance",
           "gmacs", "achieved_tflops", "peak_tflops", "peak_source", "fraction_of_peak", "device", "device_name", "threads", "torch",
           "cpu_allocator_tuned", "loadavg_start", "loadavg_end"]


# ----------------------------------------------------------------------------- inputs, models
class OfficialConditioning:
    """Mixin giving a Conditioning the official data path: resize the whole one-hot map in
    every norm layer (no sharing across layers) and take the argmax there."""

    def semantic_at(self, size):
        return F.interpolate(self.semantic, size=tuple(size), mode="nearest")

    def label_at(self, size):
        return self.semantic_at(size)[:, : self.class_nc].argmax(1)

    def edge_at(self, size):
        return self.semantic_at(size)[:, -1:]

    def dist_at(self, size):
        return F.interpolate(self.dist, size=tuple(size), mode="nearest")


@contextlib.contextmanager
def official_data_path():
    """Within the block, generators feed their norm layers like the official code."""
    original = generator_module.Conditioning
    generator_module.Conditioning = type("OfficialConditioning", (OfficialConditioning, original), {})
    try:
        yield
    finally:
        generator_module.Conditioning = original


@torch.no_grad()
def calibrate_batchnorm(G: torch.nn.Module, inputs: dict) -> torch.nn.Module:
    """Set every BatchNorm's running statistics to those of one train-mode forward of ``inputs``
    (cumulative average, one batch); returns G in eval mode."""
    bns = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    G.train()(**inputs)
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return G.eval()


def peak_tflops(device) -> float:
    """Dense bf16 peak of a known CUDA device (:data:`PEAK_BF16_TFLOPS`), else NaN."""
    device = torch.device(device)
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return float("nan")


@functools.lru_cache(maxsize=None)
def measured_matmul_tflops(device: str, dtype: str, n: int = 2048, repeats: int = 5) -> float:
    """TFLOP/s of one n x n x n matmul in ``dtype`` ("fp32" / "bf16") on ``device``, median of
    ``repeats`` after a warm-up: the practical dense peak where no datasheet value applies."""
    torch_dtype = torch.bfloat16 if dtype.startswith("bf16") else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=torch_dtype) for _ in range(2))
    times = time_interleaved({"mm": lambda: torch.mm(a, b)}, warmup=1, repeats=repeats, device=device)["mm"]
    return 2 * n ** 3 / (summarize_times(times)["median_ms"] / 1e3) / 1e12


def peak_for(device, dtype: str) -> tuple[float, str]:
    """(peak TFLOP/s, where it comes from) for rows computing in ``dtype`` on ``device``: the
    datasheet for bf16 on a known GPU, else :func:`measured_matmul_tflops`."""
    datasheet = peak_tflops(device)
    if dtype.startswith("bf16") and not math.isnan(datasheet):
        return datasheet, "NVIDIA datasheet, dense bf16"
    kind = "bf16" if dtype.startswith("bf16") else "fp32"
    return measured_matmul_tflops(str(device), kind), f"measured 2048^3 {kind} matmul on this device"


def _gmacs(config) -> float:
    try:
        return closed_form_generator_costs(config)["macs"] / 1e9
    except Exception:  # the cost model is optional here
        return float("nan")


# ----------------------------------------------------------------------------- variants
def variants(G, inputs: dict, device, *, compile: bool = False) -> dict:
    """name -> (dtype label, zero-argument call): the reference G and its fused conversion."""
    cuda = torch.device(device).type == "cuda"
    G_fast = fuse_for_inference(G)

    def call(model, dtype=None, autocast=None, official=False):
        def run():
            with torch.no_grad(), (official_data_path() if official else contextlib.nullcontext()), \
                    torch.autocast(torch.device(device).type, dtype=autocast, enabled=autocast is not None):
                return model(**inputs) if dtype is None else model(**inputs, dtype=dtype)
        return run

    fns = {"official-equiv": ("fp32", call(G, official=True)),
           "reference": ("fp32", call(G)),
           "fused": ("fp32", call(G_fast)),
           "fused-bf16": ("bf16", call(G_fast, dtype=torch.bfloat16))}
    if cuda:
        fns["reference-bf16-autocast"] = ("bf16-autocast", call(G, autocast=torch.bfloat16))
        fns["fused-bf16-cudagraph"] = ("bf16", call(accelerate(G_fast, dtype=torch.bfloat16, cuda_graphs=True)))
    if compile and cuda:  # inductor with CUDA graphs, bf16
        fns["compiled-bf16"] = ("bf16", call(accelerate(G_fast, dtype=torch.bfloat16, compile=True,
                                                        compile_mode="reduce-overhead")))
    elif compile:
        fns["compiled"] = ("fp32", call(accelerate(G_fast, compile=True)))
    return fns


def compare_generator(preset: str, norm: str, batch: int, *, device="cpu", repeats: int = 10, warmup: int = 2,
                      compile: bool = False, seed: int = 0, allocator_tuned: bool = False,
                      **overrides) -> pd.DataFrame:
    """Rows of :data:`COLUMNS` for one generator: every variant timed in one interleaved run."""
    G = build_generator(preset, norm, device=device, **overrides)
    (semantic,), kwargs = generator_inputs(G.config, batch, device=device, seed=seed)
    inputs = {"semantic": semantic, **kwargs}
    calibrate_batchnorm(G, inputs)
    fns = variants(G, inputs, device, compile=compile)
    outputs, first_call_ms = {}, {}
    for name, (_, fn) in fns.items():   # the first call also compiles / captures: timed apart
        start = time.perf_counter()
        outputs[name] = fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        first_call_ms[name] = (time.perf_counter() - start) * 1e3
    load_start = os.getloadavg()[0]
    times = time_interleaved({name: fn for name, (_, fn) in fns.items()}, warmup=warmup, repeats=repeats,
                             device=device)
    # Each variant alone, back to back, as a deployment loop runs it: its weights can stay in
    # the last-level cache, which the interleaved run denies it (the other variants evict them).
    alone = {name: summarize_times(time_interleaved({name: fn}, warmup=1, repeats=repeats, device=device)[name])
             for name, (_, fn) in fns.items()}
    load_end = os.getloadavg()[0]
    reference = outputs["reference"].float()
    env = environment(device)
    gmacs = _gmacs(G.config) * batch
    summaries = {name: summarize_times(times[name]) for name in fns}
    rows = []
    for name, (dtype, _) in fns.items():
        s = summaries[name]
        diff = float((outputs[name].float() - reference).abs().max())
        tolerance = FP32_TOLERANCE if dtype == "fp32" else BF16_TOLERANCE
        peak, peak_source = peak_for(device, dtype)
        achieved = 2 * gmacs / s["median_ms"]  # GMAC/ms = TMAC/s
        rows.append({"preset": preset, "norm": norm, "batch": batch, "variant": name, "dtype": dtype, **s,
                     "speedup_vs_reference": summaries["reference"]["median_ms"] / s["median_ms"],
                     "speedup_vs_official_equiv": summaries["official-equiv"]["median_ms"] / s["median_ms"],
                     "alone_median_ms": alone[name]["median_ms"], "first_call_ms": first_call_ms[name],
                     "alone_speedup_vs_official_equiv": alone["official-equiv"]["median_ms"] / alone[name]["median_ms"],
                     "max_abs_diff": diff, "tolerance": tolerance, "within_tolerance": diff <= tolerance,
                     "gmacs": gmacs, "achieved_tflops": achieved, "peak_tflops": peak, "peak_source": peak_source,
                     "fraction_of_peak": achieved / peak, **env, "cpu_allocator_tuned": allocator_tuned,
                     "loadavg_start": load_start, "loadavg_end": load_end})
    return pd.DataFrame(rows)[COLUMNS]


def compare(presets, norms, batch_sizes, *, device="cpu", repeats: int = 10, warmup: int = 2,
            compile: bool = False, tune_allocator: bool = True, **overrides) -> pd.DataFrame:
    """:func:`compare_generator` for every preset, norm and batch size, concatenated.

    ``tune_allocator``: on CPU, first call ``models.fast.tune_cpu_allocator`` (process-wide:
    every variant, the official-equivalent one included, then runs with it).
    """
    tuned = tune_allocator and torch.device(device).type == "cpu" and tune_cpu_allocator()
    tables = []
    for preset in presets:
        for batch in batch_sizes:
            for norm in norms:
                log.info("speed compare: %s %s batch %d on %s", preset, norm, batch, device)
                tables.append(compare_generator(preset, norm, batch, device=device, repeats=repeats,
                                                warmup=warmup, compile=compile, allocator_tuned=bool(tuned),
                                                **overrides))
    return pd.concat(tables, ignore_index=True)


# ----------------------------------------------------------------------------- report
def format_table(df: pd.DataFrame) -> str:
    """The comparison as a Markdown table (latency, ratios, differences)."""
    show = df[["preset", "norm", "batch", "variant", "dtype", "median_ms", "p90_ms", "speedup_vs_reference",
               "speedup_vs_official_equiv", "alone_median_ms", "alone_speedup_vs_official_equiv",
               "max_abs_diff", "tolerance", "achieved_tflops", "fraction_of_peak"]]
    return show.to_markdown(index=False, floatfmt=".3g")


def speed_figure(df: pd.DataFrame):
    """Bars of median latency per norm and variant, one panel per (preset, batch)."""
    groups = list(df.groupby(["preset", "batch"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for ax, ((preset, batch), part) in zip(axes[0], groups):
        names = list(dict.fromkeys(part["variant"]))
        norms = list(dict.fromkeys(part["norm"]))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            rows = part[part["variant"] == name].set_index("norm").reindex(norms)
            xs = [j + i * width for j in range(len(norms))]
            bars = ax.bar(xs, rows["median_ms"], width, label=name)
            for bar, ratio in zip(bars, rows["speedup_vs_official_equiv"]):
                ax.annotate(f"{ratio:.1f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(norms))], norms)
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"{preset}, batch {batch}, {part['device'].iloc[0]}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _settings(ctx) -> dict:
    """The resolved ``ctx.compare`` options under the keys the tables' meta.json records."""
    c = ctx.compare
    return {"presets": list(c.presets), "norms": list(c.norms), "batch_sizes": list(c.batch_sizes),
            "repeats": c.repeats, "warmup": c.warmup, "compile": c.compile, "tune_allocator": not c.default_malloc,
            "train": c.train, "train_batch_size": c.train_batch_size, "train_repeats": c.train_repeats,
            "vgg_weights": c.vgg_weights, "overrides": c.overrides or {}}


def run_compare(ctx: RunContext) -> StageResult:
    """Time the reference generators and their fused conversions on ``ctx.device``; write tables/speed_compare.csv and
    figures/speed_compare.png (and tables/speed_train.csv with ``train``); return them with a summary."""
    s = _settings(ctx)
    torch.manual_seed(ctx.seed)
    df = compare(s["presets"], s["norms"], s["batch_sizes"], device=ctx.device, repeats=s["repeats"],
                 warmup=s["warmup"], compile=s["compile"], tune_allocator=s["tune_allocator"], **s["overrides"])
    print(format_table(df))
    ctx.write_table(df, "speed_compare", settings=s, fp32_tolerance=FP32_TOLERANCE, bf16_tolerance=BF16_TOLERANCE,
                    peak_tflops_source="bf16 on a known GPU: NVIDIA datasheets, dense tensor-core peak (no "
                                       "sparsity): " + ", ".join(f"{k} {v:g}" for k, v in PEAK_BF16_TFLOPS.items())
                                       + "; otherwise a 2048^3 matmul measured in the same dtype on this device",
                    weights="official init; BatchNorm running statistics calibrated on one random label map",
                    timing="variants of one generator interleaved round-robin (analysis.speed.bench.time_interleaved)")
    ctx.write_figure(speed_figure(df), "speed_compare")
    fused = df[df["variant"] == "fused"]
    tables = [TableRef("tables/speed_compare.csv",
                       "Latency of the official-equivalent and reference generators and of the fused "
                       "model (models.fuse_for_inference) per preset, norm and batch (median/p90 ms "
                       "interleaved, and median timed alone), with speedups and the max abs output "
                       "difference to the reference against the stated tolerance; fraction_of_peak: "
                       "achieved TFLOP/s (the reference program's fvcore MACs over the time; the fused "
                       "model skips some, e.g. one-hot convs become gathers, so it can pass 1) over the "
                       "peak named in peak_source.",
                       ("preset", "norm", "batch", "variant", "median_ms", "speedup_vs_official_equiv",
                        "alone_median_ms", "alone_speedup_vs_official_equiv", "max_abs_diff", "fraction_of_peak"))]
    figures = [FigureRef("figures/speed_compare.png",
                         "Median latency per norm and variant (reference or fused model); labels give the speedup "
                         "over the official-equivalent path measured in the same run.")]
    summary = {
        "fused_speedup_vs_official_equiv": {f"{r.preset}/{r.norm}/b{r.batch}": round(r.speedup_vs_official_equiv, 2)
                                            for r in fused.itertuples()},
        "all_within_tolerance": bool(df["within_tolerance"].all()),
        "device": ctx.device,
    }
    if s["train"]:
        train = run_compare_training(ctx, s)
        tables += train.tables
        summary.update(train.summary)
    return StageResult(tables=tables, figures=figures, summary=summary)


def run_compare_training(ctx: RunContext, s: dict) -> StageResult:
    """:func:`compare_training` for the settings' presets and norms; tables/speed_train.csv."""
    df = pd.concat([compare_training(preset, norm, s["train_batch_size"], device=ctx.device, repeats=s["train_repeats"],
                                     warmup=1, vgg_weights=s["vgg_weights"], compile=s["compile"], seed=ctx.seed,
                                     **s["overrides"])
                    for preset in s["presets"] for norm in s["norms"]], ignore_index=True)
    print(df[["preset", "norm", "batch", "variant", "median_ms", "images_per_s", "speedup_vs_fp32_eager",
              "first_step_max_rel_loss_diff", "loss_tolerance"]].to_markdown(index=False, floatfmt=".3g"))
    ctx.write_table(df, "speed_train", settings=s, loss_tolerance=TRAIN_LOSS_TOLERANCE,
                    timing="recipes of one generator interleaved round-robin (analysis.speed.bench.time_interleaved)")
    best = df.loc[df.groupby("norm", sort=False)["images_per_s"].idxmax()]
    table = TableRef("tables/speed_train.csv",
                     "One full training iteration (G step with GAN, feature-matching and VGG losses, then "
                     "D step) per recipe: fp32 eager (official spectral norm) against spectral norm on the "
                     "inputs, bf16 autocast and channels_last, images/s "
                     "and speedup from one interleaved run; first-step losses against fp32 eager's.",
                     ("preset", "norm", "batch", "variant", "median_ms", "images_per_s", "speedup_vs_fp32_eager",
                      "first_step_max_rel_loss_diff", "within_tolerance"))
    return StageResult(tables=[table], summary={
        "train_best_speedup_vs_fp32_eager": {f"{r.preset}/{r.norm}/b{r.batch}": f"{r.variant} {r.speedup_vs_fp32_eager:.2f}x"
                                             for r in best.itertuples()},
        "train_all_within_tolerance": bool(df["within_tolerance"].all()),
    })


def main(argv=None) -> int:
    parser = OptionParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/speed"), help="output folder (default %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu | cuda (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="the --quick defaults below")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    add_options(parser, CompareOptions)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ctx = RunContext(out=args.out, device=args.device, quick=args.quick,
                     compare=options_from_args(args, CompareOptions))
    run_compare(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
