"""The reference-vs-fused comparison (analysis/speed/variants.py) on a tiny generator."""
import importlib
import json
import sys

import pandas as pd
import pytest
import torch

import analysis
from analysis.speed import train_step as train_speed
from analysis.context import RunContext
from analysis.options import CompareOptions


@pytest.fixture(scope="module")
def speed():
    """analysis.speed.variants, unloaded again afterwards: tests that fake or hide the module with
    sys.modules (tests/analysis/speed/test_bench.py) must not find it as a package attribute."""
    loaded = "analysis.speed.variants" in sys.modules
    module = importlib.import_module("analysis.speed.variants")
    yield module
    if not loaded:
        sys.modules.pop("analysis.speed.variants", None)
        if getattr(analysis, "speed", None) is module:
            delattr(analysis, "speed")



def test_run_compare_writes_table_and_figure(tmp_path, speed):
    ctx = RunContext(out=tmp_path, device="cpu", quick=True,
                     compare=CompareOptions(presets=("ade20k",), repeats=2, warmup=1, overrides=dict(ngf=4, crop_size=64),
                                            default_malloc=True))  # no process-wide allocator change in tests
    summary = speed.run_compare(ctx).record()
    df = pd.read_csv(tmp_path / "tables" / "speed_compare.csv")
    assert set(speed.COLUMNS) <= set(df.columns)
    assert set(df["variant"]) == {"official-equiv", "reference", "fused", "fused-bf16"}
    assert set(df["norm"]) == {"spade", "clade", "clade-icpe"}
    assert df["within_tolerance"].all(), df[["norm", "variant", "max_abs_diff", "tolerance"]]
    assert (df.loc[df["variant"] == "reference", "speedup_vs_reference"] == 1).all()
    assert (tmp_path / "figures" / "speed_compare.png").stat().st_size > 0
    meta = json.loads((tmp_path / "tables" / "speed_compare.meta.json").read_text())
    assert meta["fp32_tolerance"] == speed.FP32_TOLERANCE
    assert summary["tables"][0]["file"] == "tables/speed_compare.csv" and summary["tables"][0]["caption"]
    assert summary["figures"][0]["file"] == "figures/speed_compare.png" and summary["figures"][0]["caption"]
    assert summary["all_within_tolerance"]
    assert not df["cpu_allocator_tuned"].any()
    # No datasheet for a CPU: the peak is a matmul measured here, in the row's dtype.
    assert df["peak_source"].str.startswith("measured").all() and (df["fraction_of_peak"] > 0).all()
    assert (df.loc[df["dtype"] == "bf16", "peak_source"].str.contains("bf16")).all()


def test_official_data_path_is_restored(speed):
    import models.generator as generator_module
    original = generator_module.Conditioning
    with speed.official_data_path():
        assert generator_module.Conditioning is not original
    assert generator_module.Conditioning is original


def test_peak_is_unknown_on_cpu(speed):
    assert speed.peak_tflops("cpu") != speed.peak_tflops("cpu")  # NaN


def test_compare_training_times_every_recipe_from_the_same_weights(tmp_path, speed):
    from models.fast import native_bf16
    ctx = RunContext(out=tmp_path, device="cpu", quick=True, seed=3,
                     compare=CompareOptions(presets=("ade20k",), norms=("clade-icpe",), train=True, train_repeats=2,
                                            overrides=dict(ngf=4, crop_size=64)))
    summary = speed.run_compare_training(ctx, speed._settings(ctx)).record()
    df = pd.read_csv(tmp_path / "tables" / "speed_train.csv")
    assert list(df.columns) == train_speed.TRAIN_COLUMNS
    expected = {k for k, v in train_speed.TRAIN_VARIANTS.items() if not v["amp"] or native_bf16("cpu")}
    assert set(df["variant"]) == expected and (df["use_vgg"]).all()
    assert (df["vgg_weights"] == "random (timing only)").all()
    eager = df.set_index("variant").loc["fp32-eager"]
    assert eager["speedup_vs_fp32_eager"] == 1 and eager["first_step_max_rel_loss_diff"] == 0
    assert df["within_tolerance"].all(), df[["variant", "first_step_max_rel_loss_diff", "loss_tolerance"]]
    ran = df.set_index("variant")   # what each trainer used (Trainer.use_amp, its recipe), per recipe asked
    for name, options in train_speed.TRAIN_VARIANTS.items():
        if name in ran.index:
            assert ran.loc[name, "channels_last"] == options["channels_last"]
            assert ran.loc[name, "spectral_input_scaling"] == options.get("spectral_input_scaling", True)
            assert ran.loc[name, "dtype"] == ("bf16-autocast" if options["amp"] else "fp32")
    assert summary["tables"][0]["file"] == "tables/speed_train.csv" and summary["train_all_within_tolerance"]


def test_timing_vgg_weights_load_strictly(tmp_path, speed):
    from training.vgg import VGG19Features
    vgg = VGG19Features.from_pretrained(train_speed.timing_vgg_weights(tmp_path))
    assert sum(p.numel() for p in vgg.parameters()) == 12_944_960   # VGG19 conv1_1 .. conv5_1
