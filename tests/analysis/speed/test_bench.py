"""Timing harness and benchmarks: call order, CUDA synchronisation, statistics, memory and
the documented columns (no assertions on timings themselves)."""
import functools

import pandas as pd
import pytest
import torch

from analysis.speed import bench
from analysis.speed.bench import (BENCH_COLUMNS, bench_generators, bench_train_step, peak_memory, profile_ops,
                            summarize_times, time_interleaved)



def test_time_interleaved_calls_round_robin_with_rotating_start():
    calls = []
    fns = {name: functools.partial(calls.append, name) for name in "abc"}
    times = time_interleaved(fns, warmup=2, repeats=3)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 5  # warm-up rounds first, then the timed ones
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"], ["b", "c", "a"]]


def test_time_interleaved_synchronises_cuda_around_every_call(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    time_interleaved({"f": lambda: events.append("call")}, warmup=1, repeats=2, device="cuda")
    assert events == ["sync", "call", "sync"] * 3


def test_time_interleaved_rejects_empty_and_bad_counts():
    with pytest.raises(ValueError, match="at least one"):
        time_interleaved({})
    with pytest.raises(ValueError, match="repeats"):
        time_interleaved({"f": lambda: None}, repeats=0)


def test_summarize_times_in_milliseconds():
    stats = summarize_times([0.004, 0.001, 0.003, 0.002])
    assert stats == pytest.approx({"median_ms": 2.5, "p10_ms": 1.3, "p90_ms": 3.7, "min_ms": 1.0, "n": 4})
    with pytest.raises(ValueError):
        summarize_times([])


def test_peak_memory_counts_tensor_bytes_live_during_the_call():
    keep = {"w": torch.empty(1000, 1000)}

    def fn():
        keep["w"] = torch.empty(1000, 1000)   # replaces a block allocated before: net 0
        a = torch.empty(2000, 1000)            # 8 MB
        b = torch.empty(500, 1000)             # 2 MB -> peak 10 MB
        del a, b
        return torch.empty(250, 1000)

    assert peak_memory(fn, "cpu") == 10_000_000


def test_bench_generators_returns_documented_columns():
    table = bench_generators(["synthetic"], ["spade", "clade"], [1, 2], ["fp32"], False, "cpu",
                             repeats=2, warmup=0, ngf=4, crop_size=32)
    assert list(table.columns) == BENCH_COLUMNS
    assert len(table) == 4 and set(table["mode"]) == {"eager"} and set(table["batch"]) == {1, 2}
    assert set(table["program"]) == {"fused"}
    assert (table.n == 2).all() and (table.median_ms > 0).all() and (table.peak_mem_mb > 0).all()
    assert (table.gmacs_fvcore[table.norm == "spade"].to_numpy() > table.gmacs_fvcore[table.norm == "clade"].to_numpy()).all()
    assert (table.threads == 1).all() and (table.torch == torch.__version__).all()


def test_bf16_autocast_runs_the_generator_in_bf16():
    from models import build_generator
    from analysis.costs.layers import generator_inputs
    G = build_generator("synthetic", "clade", ngf=4, crop_size=32).eval()
    args, kwargs = generator_inputs(G.config)
    assert bench.forward_fn(G, args, kwargs, dtype="bf16")().dtype == torch.bfloat16
    assert bench.forward_fn(G, args, kwargs, dtype="fp32")().dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        bench.autocast("cpu", "int8")


def test_bench_train_step_reports_images_per_second(monkeypatch):
    monkeypatch.setattr(bench, "peak_memory", lambda fn, device: 0)
    table = bench_train_step(["synthetic"], ["clade"], device="cpu", repeats=1, warmup=0, ngf=4, crop_size=64,
                             d_overrides=dict(ndf=8, n_layers_D=3))
    row = table.iloc[0]
    assert row.images_per_s == pytest.approx(1e3 / row.median_ms)
    from models.fast import native_bf16
    assert row["dtype"] == ("bf16-autocast" if native_bf16("cpu") else "fp32") and not row.use_vgg


def test_profile_ops_finds_the_convolutions():
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(1, 3, 32, 32)
    table = profile_ops(lambda: torch.relu(conv(x)), runs=2)
    assert table.op.str.contains("conv").any()
    assert (table.share > 0).all() and table.share.sum() <= 1 + 1e-9


def _tiny_stage(monkeypatch):
    from analysis.stages import bench as stage
    from models import build_generator
    monkeypatch.setattr(stage, "bench_generators", functools.partial(bench_generators, ngf=4, crop_size=32))
    monkeypatch.setattr(stage, "build_generator", functools.partial(build_generator, ngf=4, crop_size=32))
    return stage


def test_bench_stage_writes_tables_and_figures(tmp_path, monkeypatch):
    from analysis.context import RunContext
    from analysis.options import BenchOptions
    stage = _tiny_stage(monkeypatch)
    monkeypatch.setattr(bench, "peak_memory", lambda fn, device: 0)
    ctx = RunContext(out=tmp_path, quick=True, bench=BenchOptions(presets=("synthetic",), norms=("spade", "clade"),
                                                                  repeats=1, warmup=0))
    summary = stage.run(ctx).record()
    table = pd.read_csv(tmp_path / "tables" / "bench.csv")
    assert set(BENCH_COLUMNS) | {"ratio_to_spade"} <= set(table.columns)
    assert table.loc[table.norm == "spade", "ratio_to_spade"].tolist() == [1.0]
    assert (tmp_path / "tables" / "bench.meta.json").exists()
    assert not (tmp_path / "tables" / "bench_train_step.csv").exists()  # off in quick mode
    for item in summary["figures"] + summary["tables"]:
        assert (tmp_path / item["file"]).exists() and item["caption"]


def test_bench_compare_merges_the_speed_summary(tmp_path, monkeypatch):
    import types

    from analysis.context import RunContext, StageResult, TableRef
    from analysis.options import BenchOptions
    stage = _tiny_stage(monkeypatch)
    fake = types.SimpleNamespace(run_compare=lambda ctx: StageResult(tables=[TableRef("tables/speed.csv", "x")],
                                                                     notes=["compared"], summary={"speedup": 3.0}))
    monkeypatch.setattr(stage, "variants", fake)
    monkeypatch.setattr(bench, "peak_memory", lambda fn, device: 0)
    ctx = RunContext(out=tmp_path, quick=True, bench=BenchOptions(presets=("synthetic",), norms=("clade",), repeats=1,
                                                                  warmup=0, compare=True))
    summary = stage.run(ctx).record()
    assert summary["compare"] == {"speedup": 3.0} and summary["notes"][-1] == "compared"
    assert summary["tables"][0]["file"] == "tables/bench.csv" and summary["tables"][-1]["file"] == "tables/speed.csv"
