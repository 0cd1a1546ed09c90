"""Stage 'bench': generator latency / memory, a training-step benchmark and a per-op profile.

Writes tables/bench.csv, tables/bench_profile.csv, tables/bench_train_step.csv (unless
--no-bench-train-step) and figures; ``--compare`` adds the plain-vs-fast comparison of
analysis/speed.py.
"""
from __future__ import annotations

import argparse
import importlib
import logging

import pandas as pd
import torch

from analysis.bench import bench_generators, bench_train_step, forward_fn, memory_method, profile_ops
from analysis.cost_figures import latency_vs_macs, op_breakdown
from analysis.costs import generator_inputs
from models import build_generator, fuse_for_inference
from models.presets import NORMS

log = logging.getLogger(__name__)


def add_arguments(group) -> None:
    group.add_argument("--bench-presets", nargs="+", default=None, metavar="PRESET",
                       help="presets to time (default: ade20k cityscapes coco-stuff; quick: ade20k)")
    group.add_argument("--bench-norms", nargs="+", default=None, metavar="NORM", help="norms (default: all three)")
    group.add_argument("--bench-batch-sizes", nargs="+", type=int, default=None, metavar="N",
                       help="batch sizes (default: 1 on CPU, 1 16 on CUDA)")
    group.add_argument("--bench-dtypes", nargs="+", default=None, choices=["fp32", "bf16", "fp16"],
                       help="autocast dtypes (default: fp32 bf16 on CUDA, fp32 on CPU and in quick mode)")
    group.add_argument("--bench-repeats", type=int, default=None, help="timed calls per model (default 10 on CUDA, 3 on CPU)")
    group.add_argument("--bench-warmup", type=int, default=None, help="untimed calls per model (default 3 on CUDA, 1 on CPU)")
    group.add_argument("--bench-compile", action="store_true",
                       help="also time torch.compile'd generators (slow to compile on CPU)")
    group.add_argument("--bench-train-step", action=argparse.BooleanOptionalAction, default=None,
                       help="time a full training iteration (default: on CUDA, off on CPU and in quick mode)")
    group.add_argument("--compare", action="store_true",
                       help="also run the plain-vs-fast comparison of analysis/speed.py")
    group.add_argument("--compare-train", action="store_true",
                       help="with --compare: also time training iterations per recipe (official fp32 eager vs "
                            "spectral norm on inputs / channels_last / bf16; minutes on a CPU)")


def _option(ctx, name, default):
    value = ctx.extra.get(name)
    return default if value is None else value


def _settings(ctx) -> dict:
    cuda = torch.device(ctx.device).type == "cuda"
    return {
        "presets": _option(ctx, "bench_presets", ["ade20k"] if ctx.quick else ["ade20k", "cityscapes", "coco-stuff"]),
        "norms": _option(ctx, "bench_norms", list(NORMS)),
        "batch_sizes": _option(ctx, "bench_batch_sizes", [1] if ctx.quick or not cuda else [1, 16]),
        # Full-size generators take seconds per call on a 2-core CPU: keep the default run
        # inside its budget there, and measure everything on a GPU.
        "dtypes": _option(ctx, "bench_dtypes", ["fp32", "bf16"] if cuda and not ctx.quick else ["fp32"]),
        "repeats": _option(ctx, "bench_repeats", 10 if cuda else 3),
        "warmup": _option(ctx, "bench_warmup", 3 if cuda else 1),
        "compiled": bool(ctx.extra.get("bench_compile")),
        "train_step": _option(ctx, "bench_train_step", cuda and not ctx.quick),
    }


def _profile(preset: str, norms, device) -> pd.DataFrame:
    tables = []
    for norm in norms:
        G = fuse_for_inference(build_generator(preset, norm, device=device))
        args, kwargs = generator_inputs(G.config, device=device)
        tables.append(profile_ops(forward_fn(G, args, kwargs, device=device), runs=2).assign(preset=preset, norm=norm))
    return pd.concat(tables, ignore_index=True)[["preset", "norm", "op", "calls", "self_ms", "share"]]


def run(ctx) -> dict:
    s = _settings(ctx)
    torch.manual_seed(ctx.seed)
    log.info("bench settings: %s on %s", s, ctx.device)
    meta = dict(settings=s, memory_method=memory_method(ctx.device),
                timing="median / p90 over repeats after warm-up, models interleaved round-robin per "
                       "(preset, batch, dtype); peak_mem_mb excludes weights and inputs")
    bench = bench_generators(s["presets"], s["norms"], s["batch_sizes"], s["dtypes"], s["compiled"], ctx.device,
                             s["repeats"], s["warmup"])
    keys = ["preset", "batch", "dtype", "mode"]
    spade = bench[bench["norm"] == "spade"][keys + ["median_ms"]].rename(columns={"median_ms": "spade_ms"})
    bench["ratio_to_spade"] = bench["median_ms"] / bench[keys].merge(spade, how="left", on=keys)["spade_ms"].to_numpy()
    ctx.write_table(bench, "bench", **meta)
    tables = [{"file": "tables/bench.csv",
               "caption": "Generator forward latency (median, p90 ms) and peak memory per preset, norm, batch, "
                          "dtype and mode, with the ratio to SPADE from the same interleaved run."}]
    figures = []

    first = bench[(bench["batch"] == bench["batch"].min()) & (bench["dtype"] == s["dtypes"][0])
                  & (bench["mode"] == "eager")]
    points = first.assign(gmacs_fvcore=first["gmacs_fvcore"] / first["batch"])
    ctx.write_figure(latency_vs_macs(points, title=f"Latency vs fvcore GMACs ({ctx.device}, batch "
                                                   f"{int(first['batch'].iloc[0])}, {s['dtypes'][0]}, eager)"),
                     "bench_latency_vs_macs")
    figures.append({"file": "figures/bench_latency_vs_macs.png",
                    "caption": "Measured latency against fvcore GMACs per generator; points above the dashed "
                               "'time proportional to GMACs' line are slower than their MAC count predicts."})

    profile = _profile(s["presets"][0], s["norms"], ctx.device)
    ctx.write_table(profile, "bench_profile", **meta)
    ctx.write_figure(op_breakdown(profile), "bench_op_breakdown")
    tables.append({"file": "tables/bench_profile.csv",
                   "caption": "Top aten ops by CPU self time per generator (torch.profiler, batch 1, fp32)."})
    figures.append({"file": "figures/bench_op_breakdown.png",
                    "caption": "Share of profiled time per op for each generator: what dominates besides convolution."})

    summary = {"device": ctx.device, "device_name": bench.device_name.iloc[0], "threads": int(bench.threads.iloc[0]),
               "latency_ms": first[["preset", "norm", "median_ms", "ratio_to_spade"]].to_dict("records"),
               "top_ops": {norm: group.nlargest(3, "share")[["op", "share"]].to_dict("records")
                           for norm, group in profile.groupby("norm")}}
    if s["train_step"]:
        train = bench_train_step(s["presets"][:1], s["norms"], batch_sizes=[min(s["batch_sizes"])], device=ctx.device,
                                 repeats=max(2, s["repeats"] // 3), warmup=1)
        ctx.write_table(train, "bench_train_step", **meta, note="models.trainer.Trainer.train_step without the "
                        "VGG loss (it needs local VGG19 weights)")
        tables.append({"file": "tables/bench_train_step.csv",
                       "caption": "Images per second of a full training iteration (G step + D step, official "
                                  "losses without VGG) per generator."})
        summary["train_images_per_s"] = train[["preset", "norm", "images_per_s"]].to_dict("records")
    summary.update(tables=tables, figures=figures)
    if ctx.extra.get("compare"):
        summary = _merge(summary, _run_compare(ctx))
    return summary


def _run_compare(ctx) -> dict:
    try:
        speed = importlib.import_module("analysis.speed")
    except ImportError as exc:
        raise RuntimeError("--compare needs analysis/speed.py with run_compare(ctx) (the plain-vs-fast "
                           f"comparison of issue 10), which could not be imported: {exc}") from exc
    return speed.run_compare(ctx)


def _merge(mine: dict, theirs: dict) -> dict:
    merged = {**theirs, **mine}
    for key in ("tables", "figures"):
        merged[key] = mine.get(key, []) + theirs.get(key, [])
    merged["compare"] = {k: v for k, v in theirs.items() if k not in ("tables", "figures")}
    return merged
