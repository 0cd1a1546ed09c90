"""Stage 'bench': generator latency / memory, a training-step benchmark and a per-op profile.

Writes tables/bench.csv, tables/bench_profile.csv, tables/bench_train_step.csv (unless
--no-bench-train-step) and figures; ``--compare`` adds the plain-vs-fast comparison of
analysis/speed/variants.py.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from models import build_generator, fuse_for_inference

from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.costs.figures import latency_vs_macs, op_breakdown
from analysis.costs.layers import generator_inputs
from analysis.quality import stats
from analysis.speed import variants
from analysis.speed.bench import (bench_generators, bench_train_step, forward_fn, memory_method, profile_ops,
                                  time_interleaved)

log = logging.getLogger(__name__)


def _settings(ctx: RunContext) -> dict:
    """The bench options as the tables' meta.json records them."""
    b = ctx.bench
    return {"presets": list(b.presets), "norms": list(b.norms), "batch_sizes": list(b.batch_sizes),
            "dtypes": list(b.dtypes), "repeats": b.repeats, "warmup": b.warmup, "compiled": b.compile,
            "train_step": b.train_step}


def _profile(preset: str, norms, device) -> pd.DataFrame:
    tables = []
    for norm in norms:
        G = fuse_for_inference(build_generator(preset, norm, device=device))
        args, kwargs = generator_inputs(G.config, device=device)
        tables.append(profile_ops(forward_fn(G, args, kwargs, device=device), runs=2).assign(preset=preset, norm=norm))
    return pd.concat(tables, ignore_index=True)[["preset", "norm", "op", "calls", "self_ms", "share"]]


def reference_kernel_ms(device, repeats: int = 15) -> list[float]:
    """Times (ms) of a fixed 384x384 float32 matmul: timed before and after the benchmark, its
    drift says whether the machine's load changed meanwhile."""
    a = torch.randn(384, 384, generator=torch.Generator().manual_seed(0)).to(device)
    times = time_interleaved({"reference": lambda: a @ a}, warmup=3, repeats=repeats, device=device)["reference"]
    return [t * 1e3 for t in times]


def run(ctx: RunContext) -> StageResult:
    s = _settings(ctx)
    torch.manual_seed(ctx.seed)
    log.info("bench settings: %s on %s", s, ctx.device)
    meta = dict(settings=s, memory_method=memory_method(ctx.device),
                timing="median / p90 over repeats after warm-up, models interleaved round-robin per "
                       "(preset, batch, dtype); peak_mem_mb excludes weights and inputs")
    before = reference_kernel_ms(ctx.device)
    bench = bench_generators(s["presets"], s["norms"], s["batch_sizes"], s["dtypes"], s["compiled"], ctx.device,
                             s["repeats"], s["warmup"])
    after = reference_kernel_ms(ctx.device)
    checks = [stats.summary_reliability(r.p10_ms, r.median_ms, r.p90_ms, r.n, before, after)
              for r in bench.itertuples()]
    bench["reliable"] = [c.reliable for c in checks]
    bench["unreliable_reason"] = [c.reason for c in checks]
    bench["reference_before_ms"], bench["reference_after_ms"] = float(np.median(before)), float(np.median(after))
    keys = ["preset", "batch", "dtype", "mode"]
    spade = bench[bench["norm"] == "spade"][keys + ["median_ms"]].rename(columns={"median_ms": "spade_ms"})
    bench["ratio_to_spade"] = bench["median_ms"] / bench[keys].merge(spade, how="left", on=keys)["spade_ms"].to_numpy()
    ctx.write_table(bench, "bench", **meta)
    tables = [TableRef("tables/bench.csv",
                       "Generator forward latency (median, p10, p90 ms) and peak memory per preset, norm, batch, "
                       "dtype and mode, with the ratio to SPADE from the same interleaved run; 'reliable' is "
                       "False (and unreliable_reason says why) when the repeats spread too much or a reference "
                       "matmul timed before and after the benchmark drifted: no speed verdict is drawn then.",
                       ("preset", "norm", "batch", "dtype", "mode", "median_ms", "p10_ms", "p90_ms",
                        "ratio_to_spade", "reliable", "unreliable_reason"))]
    figures = []

    first = bench[(bench["batch"] == bench["batch"].min()) & (bench["dtype"] == s["dtypes"][0])
                  & (bench["mode"] == "eager")]
    points = first.assign(gmacs_fvcore=first["gmacs_fvcore"] / first["batch"])
    ctx.write_figure(latency_vs_macs(points, title=f"Latency vs fvcore GMACs ({ctx.device}, batch "
                                                   f"{int(first['batch'].iloc[0])}, {s['dtypes'][0]}, eager)"),
                     "bench_latency_vs_macs")
    figures.append(FigureRef("figures/bench_latency_vs_macs.png",
                             "Measured latency against fvcore GMACs per generator; points above the dashed "
                             "'time proportional to GMACs' line are slower than their MAC count predicts."))

    profile = _profile(s["presets"][0], s["norms"], ctx.device)
    ctx.write_table(profile, "bench_profile", **meta)
    ctx.write_figure(op_breakdown(profile), "bench_op_breakdown")
    tables.append(TableRef("tables/bench_profile.csv",
                           "Top aten ops by CPU self time per generator (torch.profiler, batch 1, fp32)."))
    figures.append(FigureRef("figures/bench_op_breakdown.png",
                             "Share of profiled time per op for each generator: what dominates besides convolution."))

    summary = {"device": ctx.device, "device_name": bench.device_name.iloc[0], "threads": int(bench.threads.iloc[0]),
               "latency_ms": first[["preset", "norm", "median_ms", "ratio_to_spade"]].to_dict("records"),
               "top_ops": {norm: group.nlargest(3, "share")[["op", "share"]].to_dict("records")
                           for norm, group in profile.groupby("norm")}}
    if s["train_step"]:
        train = bench_train_step(s["presets"][:1], s["norms"], batch_sizes=[min(s["batch_sizes"])], device=ctx.device,
                                 repeats=max(2, s["repeats"] // 3), warmup=1)
        ctx.write_table(train, "bench_train_step", **meta, note="training.trainer.Trainer.train_step without the "
                        "VGG loss (it needs local VGG19 weights)")
        tables.append(TableRef("tables/bench_train_step.csv",
                               "Images per second of a full training iteration (G step + D step, official "
                               "losses without VGG) per generator."))
        summary["train_images_per_s"] = train[["preset", "norm", "images_per_s"]].to_dict("records")
    unreliable = bench[~bench["reliable"]]
    notes = ([f"**Unreliable timing** in {len(unreliable)} of {len(bench)} rows (e.g. {unreliable.norm.iloc[0]}, "
              f"{unreliable.preset.iloc[0]}: {unreliable.unreliable_reason.iloc[0]}); the Findings draw no speed "
              f"conclusion from them. Re-run the bench stage on a quiet machine."] if len(unreliable) else
             [f"Timing reliable: repeats within {stats.MAX_SPREAD:.0%} of their median and the reference matmul "
              f"within {stats.MAX_DRIFT:.0%} before vs after ({np.median(before):.3g} vs {np.median(after):.3g} ms)."])
    result = StageResult(tables=tables, figures=figures, notes=notes, summary=summary)
    if ctx.bench.compare:
        compared = variants.run_compare(ctx)
        result.tables += compared.tables
        result.figures += compared.figures
        result.notes += compared.notes
        result.summary["compare"] = compared.summary
    return result
