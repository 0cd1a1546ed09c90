"""Latency and memory benchmarks: an interleaved timer shared by every speed measurement.

    times = time_interleaved({"spade": lambda: G1(x), "clade": lambda: G2(x)}, repeats=20)
    summarize_times(times["clade"])   # {'median_ms': ..., 'p90_ms': ..., 'min_ms': ..., 'n': 20}

Caveats, stated plainly:

- Candidates are called round-robin (the starting candidate rotates every round), so slow
  drift of the machine (other jobs, thermal state) hits all of them alike. Ratios between
  candidates are only meaningful within one call of :func:`time_interleaved`.
- CUDA work is asynchronous: each call is bracketed by ``torch.cuda.synchronize`` so the
  measured wall time covers the kernels, not just their launch.
- CPU peak memory is the peak of *tensor* memory allocated during the call, read from the
  profiler's allocation events (torch has no CPU allocator statistics; ``tracemalloc`` does
  not see tensor storage and ``ru_maxrss`` is a process-lifetime high-water mark). CUDA peak
  memory is ``max_memory_allocated`` after a reset, minus what was allocated before the call.
  Both therefore exclude the weights and inputs that existed before the call.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from tqdm.auto import tqdm

from fileio import device_description
from models import build_generator, fuse_for_inference
from models.presets import discriminator_config, generator_config, label_config
from training.trainer import Trainer, TrainRecipe

from analysis.costs.layers import generator_gmacs, generator_inputs

log = logging.getLogger(__name__)


# Kineto, the profiler's backend, logs "USDT ... profiler_start/stop" and, on a machine without
# a GPU, "gpuGetDeviceCount failed" to stderr at each profile; its log level 6 is above all of
# them. A KINETO_LOG_LEVEL the user set is kept.
KINETO_QUIET_LEVEL = "6"


def quiet_profile(**kwargs) -> profile:
    """``torch.profiler.profile(**kwargs)`` without kineto's per-profile console lines."""
    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_QUIET_LEVEL)
    return profile(**kwargs)


def _synchronizer(device) -> Callable[[], None]:
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 10,
                     device="cpu") -> dict[str, list[float]]:
    """Seconds per call of each candidate, measured round-robin.

    Each round calls every candidate once, starting from a different candidate each round
    (round ``r`` starts at candidate ``r mod len(fns)``). ``warmup`` rounds are run first and
    discarded, then ``repeats`` timed rounds. On CUDA every call is synchronised before and
    after, so its time includes the kernels it launched.
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one candidate in fns")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup}, repeats={repeats}; expected warmup >= 0 and repeats >= 1")
    sync = _synchronizer(device)
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + repeats):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            sync()
            t0 = time.perf_counter()
            fns[name]()
            sync()
            elapsed = time.perf_counter() - t0
            if round_index >= warmup:
                times[name].append(elapsed)
    return times


def reference_kernel_ms(device, repeats: int = 15) -> list[float]:
    """Times (ms) of a fixed 384x384 float32 matmul: timed before and after the benchmark, its
    drift says whether the machine's load changed meanwhile."""
    a = torch.randn(384, 384, generator=torch.Generator().manual_seed(0)).to(device)
    times = time_interleaved({"reference": lambda: a @ a}, warmup=3, repeats=repeats, device=device)["reference"]
    return [t * 1e3 for t in times]


def summarize_times(seconds: list[float]) -> dict:
    """Median, 10th and 90th percentile and minimum in milliseconds, and the number of samples."""
    if len(seconds) == 0:
        raise ValueError("summarize_times got no samples")
    ms = np.asarray(seconds, dtype=float) * 1e3
    return {"median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min()), "n": int(ms.size)}


# ----------------------------------------------------------------------------------------
# Memory and environment

def memory_method(device) -> str:
    """How :func:`peak_memory` measures on ``device`` (recorded beside every result)."""
    if torch.device(device).type == "cuda":
        return "cuda max_memory_allocated after reset, minus memory allocated before the call"
    return "torch.profiler allocation events: peak of live tensor bytes allocated during the call"


_MEASURED_CALL = "peak_memory/measured_call"


def peak_memory(fn: Callable[[], object], device) -> int:
    """Peak bytes of tensor memory allocated while ``fn()`` runs, above what was live before.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the
    running sum of the profiler's allocation / free events (``profile_memory=True``) over a
    second call of ``fn`` (so ``fn`` runs twice). Both exclude weights and inputs allocated
    before the call; see :func:`memory_method`.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    with quiet_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        # The profiler cannot size frees of blocks allocated before it started (e.g. the
        # spectral-norm weights a forward replaces), so a first call makes them known and
        # only the second call is measured.
        fn()
        with record_function(_MEASURED_CALL):
            fn()
    events = prof.profiler.kineto_results.events()
    call = next(e for e in events if e.name() == _MEASURED_CALL)
    memory = sorted((e for e in events if e.name() == "[memory]" and call.start_ns() <= e.start_ns() <= call.end_ns()
                     and e.device_type() == torch.autograd.DeviceType.CPU), key=lambda e: e.start_ns())
    live = peak = 0
    for event in memory:
        live += event.nbytes()
        peak = max(peak, live)
    return int(peak)


def environment(device) -> dict:
    """Columns recorded with every timing: device, its name, torch version, CPU threads."""
    return {"device": str(device), "device_name": device_description(device),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------
# Generic benchmark of named callables (used by the speed comparison too)

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device, dtype: str):
    """``torch.autocast`` for 'bf16' / 'fp16' on ``device``; a no-op context for 'fp32'."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; expected one of {list(DTYPES)}")
    return torch.autocast(torch.device(device).type, dtype=DTYPES[dtype], enabled=DTYPES[dtype] is not None)


def forward_fn(model: torch.nn.Module, args: tuple, kwargs: dict | None = None, *, device="cpu",
               dtype: str = "fp32") -> Callable[[], object]:
    """A zero-argument call of ``model(*args, **kwargs)`` under no_grad and ``dtype`` autocast."""
    kwargs = kwargs or {}

    def run():
        with torch.no_grad(), autocast(device, dtype):
            return model(*args, **kwargs)
    return run


def bench_callables(fns: dict[str, Callable[[], object]], *, device="cpu", repeats: int = 10,
                    warmup: int = 3, memory: bool = True) -> pd.DataFrame:
    """Time named callables interleaved, then measure each one's peak memory.

    One row per name: ``name, median_ms, p90_ms, min_ms, n, peak_mem_mb`` plus
    :func:`environment` and ``memory_method``. Ratios between rows of one call are fair
    (same drift); between calls they are not.
    """
    times = time_interleaved(fns, warmup=warmup, repeats=repeats, device=device)
    env = environment(device)
    rows = []
    for name, fn in fns.items():
        mem = peak_memory(fn, device) / 2**20 if memory else float("nan")
        rows.append({"name": name, **summarize_times(times[name]), "peak_mem_mb": mem, **env,
                     "memory_method": memory_method(device) if memory else ""})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# Generator forward and training-step benchmarks

BENCH_COLUMNS = ["preset", "norm", "batch", "dtype", "program", "mode", "median_ms", "p10_ms", "p90_ms", "min_ms", "n",
                 "peak_mem_mb", "gmacs_fvcore", "device", "device_name", "torch", "threads", "memory_method"]


def bench_generators(presets, norms, batch_sizes, dtypes, compiled: bool, device, repeats: int,
                     warmup: int, **overrides) -> pd.DataFrame:
    """Inference latency and peak memory of every generator's fused model
    (``models.fuse_for_inference(G)(semantic[, dist])``; column ``program`` = "fused").

    For each preset, batch size and dtype, the norms (and, if ``compiled``, their
    ``torch.compile`` versions too) are timed interleaved in one :func:`time_interleaved`
    call, so the CLADE / SPADE ratios of one (preset, batch, dtype) are from one run.
    Compilation happens in the warm-up calls and is not timed. Inputs are random label
    maps (latency does not depend on the labels); the ICPE map is given, not computed.
    Columns: :data:`BENCH_COLUMNS`. ``gmacs_fvcore`` is the closed-form fvcore count of the
    *reference* program (``G`` itself); the fused model does fewer multiply-adds (BatchNorm
    folded away; the one-hot convs ``fc`` and SPADE's ``mlp_shared`` become row gathers).
    """
    rows = []
    for preset in presets:
        models = {norm: build_generator(preset, norm, device=device, **overrides).eval() for norm in norms}
        fused = {norm: fuse_for_inference(G) for norm, G in models.items()}
        gmacs_per_image = {norm: generator_gmacs(G.config) for norm, G in models.items()}
        for batch in batch_sizes:
            for dtype in tqdm(dtypes, desc=f"bench {preset} batch {batch}", unit="dtype"):
                fns = {}
                for norm, G_fast in fused.items():
                    args, kwargs = generator_inputs(G_fast.config, batch, device=device)
                    fns[(norm, "eager")] = forward_fn(G_fast, args, kwargs, device=device, dtype=dtype)
                    if compiled:
                        fns[(norm, "compiled")] = forward_fn(torch.compile(G_fast), args, kwargs, device=device,
                                                             dtype=dtype)
                log.info("timing %s batch %d %s: %s", preset, batch, dtype, [f"{n}/{m}" for n, m in fns])
                table = bench_callables(fns, device=device, repeats=repeats, warmup=warmup)
                for (norm, mode), row in zip(fns, table.to_dict("records")):
                    rows.append({**row, "preset": preset, "norm": norm, "batch": batch, "dtype": dtype,
                                 "program": "fused", "mode": mode, "gmacs_fvcore": gmacs_per_image[norm] * batch})
    return pd.DataFrame(rows)[BENCH_COLUMNS]


def synthetic_batch(config, batch: int, *, seed: int = 0) -> dict:
    """A dataset-style batch (label, instance, image, dist) for ``Trainer.train_step``."""
    gen = torch.Generator().manual_seed(seed)
    (semantic,), kwargs = generator_inputs(config, batch, seed=seed)
    label = semantic[:, : config.class_nc].argmax(1, keepdim=True)
    out = {"label": label, "image": torch.rand(batch, 3, *config.output_size, generator=gen) * 2 - 1}
    if not config.no_instance:
        out["instance"] = label.clone()
    if "dist" in kwargs:
        out["dist"] = kwargs["dist"]
    return out


def bench_train_step(presets, norms, *, batch_sizes=(1,), device="cpu", repeats: int = 5, warmup: int = 2,
                     use_vgg: bool = False, d_overrides: dict | None = None, **overrides) -> pd.DataFrame:
    """Images per second of one full training iteration (G step + D step) per generator.

    Uses ``training.trainer.Trainer.train_step`` (the official iteration: hinge GAN, feature
    matching, VGG if ``use_vgg`` - it needs local VGG19 weights - then a D step); bf16
    autocast where bf16 is native, as the trainer does (models.fast.native_bf16). Norms are interleaved per preset
    and batch size. ``overrides`` / ``d_overrides`` change the generator / discriminator
    options (official by default). Columns: preset, norm, batch, dtype, use_vgg, median_ms, p90_ms,
    images_per_s, peak_mem_mb and the environment.
    """
    rows = []
    for preset in presets:
        for batch in batch_sizes:
            fns, trainers = {}, {}
            for norm in norms:
                config = generator_config(preset, norm, **overrides)
                d_config = discriminator_config(preset, **{**vars(label_config(config)), **(d_overrides or {})})
                trainer = Trainer(g_config=config, d_config=d_config, device=device,
                                  recipe=TrainRecipe(use_vgg=use_vgg, batch_size=batch))
                data = synthetic_batch(config, batch)
                trainers[norm] = trainer
                fns[norm] = lambda trainer=trainer, data=data: trainer.train_step(data)
            log.info("timing training steps: %s batch %d (%s)", preset, batch, list(fns))
            table = bench_callables(fns, device=device, repeats=repeats, warmup=warmup)
            for norm, row in zip(fns, table.to_dict("records")):
                rows.append({"preset": preset, "norm": norm, "batch": batch,
                             "dtype": trainers[norm].precision, "use_vgg": use_vgg,
                             **{k: v for k, v in row.items() if k != "name"},
                             "images_per_s": batch / (row["median_ms"] / 1e3)})
    return pd.DataFrame(rows)


def profile_ops(fn: Callable[[], object], *, runs: int = 3, top: int = 12) -> pd.DataFrame:
    """Where the time of ``fn`` goes, per aten op (torch.profiler self time, CPU side).

    Returns the ``top`` ops by self time: op, calls, self_ms (per run), share (of the sum
    of self times). On CUDA the CPU self time is launch overhead, not kernel time.
    """
    fn()
    with quiet_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            fn()
    stats = [(e.key, e.count / runs, e.self_cpu_time_total / 1e3 / runs) for e in prof.key_averages()]
    table = pd.DataFrame(stats, columns=["op", "calls", "self_ms"]).sort_values("self_ms", ascending=False)
    table["share"] = table.self_ms / table.self_ms.sum()
    return table.head(top).reset_index(drop=True)
