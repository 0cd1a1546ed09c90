"""The train stage's seeds and variants: folders, variant records, coarse masks."""
import json

import pandas as pd
import pytest
import torch

from analysis.context import RunContext
from analysis.options import TrainOptions
from analysis.quality.learning_curves import score_point
from analysis.stages import train as stage
from data.neighbourhood import coarsen_labels
from models import load_generator_dir


def test_coarsen_labels_keeps_size_and_makes_blocks():
    labels = torch.arange(16).reshape(1, 4, 4)
    coarse = coarsen_labels(labels, 2)
    assert coarse.shape == labels.shape and coarse.dtype == labels.dtype
    assert (coarse[0, :2, :2] == labels[0, 0, 0]).all() and (coarse[0, 2:, 2:] == labels[0, 2, 2]).all()
    assert coarsen_labels(labels, 1) is labels


def test_seeds_and_variants_get_their_own_folders_and_records(tmp_path):
    options = TrainOptions(steps=2, ngf=4, ndf=8, batch_size=2, crop_size=32, seeds=2, norms=("spade", "clade"),
                           kernel_variants=True, mask_factor=4)
    summary = stage.run(RunContext(out=tmp_path, quick=True, train=options)).record()
    table = pd.read_csv(tmp_path / "tables" / "training.csv")
    runs = ["spade", "spade-1x1", "spade-mask4", "clade", "clade-mask4"]
    assert list(table.run) == runs + [f"{r}-s1" for r in runs] and (table.steps == 2).all()
    assert set(table.seed) == {0, 1} and "2 seed(s)" in summary["budget"]
    variant = json.loads((tmp_path / "checkpoints" / "spade-mask4-s1" / stage.VARIANT_FILE).read_text())
    assert variant == {**variant, "norm": "spade", "seed": 1, "mask_factor": 4, "mask_resolution": "8x8", "steps": 2}
    assert load_generator_dir(tmp_path / "checkpoints" / "spade-1x1").config.spade_kernel_size == 1
    # seed 0 of a method stays where other code loads it; another seed trains other weights
    a = load_generator_dir(tmp_path / "checkpoints" / "clade").state_dict()
    b = load_generator_dir(tmp_path / "checkpoints" / "clade-s1").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_learning_curves_and_convergence_tables_are_written(tmp_path):
    options = TrainOptions(steps=4, ngf=4, ndf=8, batch_size=2, crop_size=32, seeds=2, norms=("clade",),
                           curve_every=2, curve_images=3)
    record = stage.run(RunContext(out=tmp_path, quick=True, train=options)).record()
    curves = pd.read_csv(tmp_path / "tables" / "learning_curves.csv")
    assert list(curves.columns[:6]) == ["run", "method", "seed", "step", "images_seen", "train_seconds"]
    assert {"shading_error", "base_colour_error", "expected_l1"} <= set(curves.columns)
    assert list(zip(curves.seed, curves.step)) == [(0, 0), (0, 2), (0, 4), (1, 0), (1, 2), (1, 4)]
    assert (curves.run == "clade").all() and (curves.images_seen == 2 * curves.step).all()
    # Step 0 is the untrained generator of each seed: different weights, different scores.
    assert curves.shading_error.iloc[0] != curves.shading_error.iloc[3]
    convergence = pd.read_csv(tmp_path / "tables" / "convergence.csv")
    assert list(convergence.columns[:8]) == ["method", "metric", "converged", "last_quarter_change", "seed_spread",
                                             "tolerance", "steps", "seeds"]
    assert list(convergence.metric) == ["shading_error", "base_colour_error"]
    row = convergence.iloc[0]
    at = curves.pivot_table(index="step", columns="seed", values="shading_error")
    assert row.last_quarter_change == pytest.approx(at.loc[4].mean() - at.loc[2].mean(), rel=1e-9)
    assert row.seed_spread == pytest.approx(at.loc[4].std(ddof=1), rel=1e-9)
    assert row.tolerance == max(row.seed_spread, 0.01)
    assert row.converged == (abs(row.last_quarter_change) <= row.tolerance)
    assert record["converged"] == {"clade": bool(row.converged)}
    assert (tmp_path / "figures" / "learning_curves.png").is_file()
    assert record["time_cap"] == {**record["time_cap"], "max_seconds": None, "cut": False, "steps": 4}


def test_a_user_cap_stops_the_first_run_and_every_run_trains_its_steps(tmp_path):
    options = TrainOptions(steps=50, ngf=4, ndf=8, batch_size=2, crop_size=32, max_seconds=1e-9,
                           norms=("spade", "clade"), seeds=2, curve_images=0)
    record = stage.run(RunContext(out=tmp_path, quick=True, train=options)).record()
    table = pd.read_csv(tmp_path / "tables" / "training.csv")
    assert list(table.run) == ["spade", "clade", "spade-s1", "clade-s1"] and (table.steps == 1).all()
    assert list(table.stopped_by_time_cap) == [True, False, False, False]
    assert record["time_cap"] == {**record["time_cap"], "max_seconds": 1e-9, "cut": True, "planned_steps": 50,
                                  "steps": 1}
    assert "cut by the 0 s time cap" in record["budget"]
    assert not (tmp_path / "tables" / "learning_curves.csv").exists()   # --train-curve-images 0


def test_a_slow_machine_is_warned_about_at_start(tmp_path, caplog):
    options = TrainOptions(steps=2, ngf=4, ndf=8, batch_size=2, crop_size=32, seeds=1, norms=("clade",),
                           curve_images=0, expected_minutes=1e-6)
    record = stage.run(RunContext(out=tmp_path, quick=True, train=options)).record()
    assert "this machine is slower than the budget assumes" in record["pace_warning"]
    assert "not the 1e-06 min expected" in record["pace_warning"]
    assert any(record["pace_warning"] in m for m in caplog.messages)
    assert any(n.startswith("Warning at start: this machine is slower") for n in record["notes"])
    assert record["predicted_seconds"] > 0


def test_a_resumed_run_keeps_its_learning_curve_up_to_the_checkpoint(tmp_path):
    ctx = RunContext(out=tmp_path, quick=True, train=TrainOptions(steps=4, ngf=4, ndf=8, batch_size=2, crop_size=32,
                                                                 curve_every=1, curve_images=2, keep_state=True))
    s = stage.settings(ctx)
    first = stage.train_one(ctx, "clade", {**s, "steps": 2}, False, None)
    assert [r["step"] for r in first["curve"]] == [0, 1, 2]
    again = stage.train_one(ctx, "clade", s, False, None)
    assert [r["step"] for r in again["curve"]] == [0, 1, 2, 3, 4]
    assert again["curve"][:3] == first["curve"]


def test_the_stage_recipe_decays_the_rate_over_the_second_half_and_averages_the_generator(tmp_path):
    ctx = RunContext(out=tmp_path, train=TrainOptions(steps=1000, ngf=4, ndf=8, batch_size=2))
    recipe = stage.make_trainer(ctx, "clade", stage.settings(ctx), False, None).recipe
    assert (recipe.decay_start_step, recipe.decay_steps, recipe.bn_estimation_batches) == (500, 500, 8)
    assert recipe.lr_factor(step=750, epoch=0) == 0.5 and recipe.lr_factor(step=1000, epoch=0) == 0
    assert recipe.ema and recipe.ema_decay == pytest.approx(0.99)    # an average over about 100 of 1000 steps
    ctx = RunContext(out=tmp_path, train=TrainOptions(steps=10, ngf=4, ndf=8, batch_size=2, lr_decay_start=1,
                                                      ema_horizon=0, bn_estimation_batches=0))
    recipe = stage.make_trainer(ctx, "clade", stage.settings(ctx), False, None).recipe
    assert (recipe.decay_steps, recipe.ema, recipe.bn_estimation_batches) == (0, False, 0)


@pytest.mark.parametrize("field", ["lr_decay_start", "ema_horizon"])
def test_fractions_of_the_steps_above_one_are_refused(tmp_path, field):
    flag = "--train-" + field.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag} 1.5: expected a fraction of the steps, from 0 to 1"):
        stage.settings(RunContext(out=tmp_path, train=TrainOptions(**{field: 1.5})))


def test_step_zero_is_scored_with_the_same_batch_norm_estimate_as_every_later_step(tmp_path):
    first = {}
    for batches in (0, 2):
        options = TrainOptions(steps=2, ngf=4, ndf=8, batch_size=2, crop_size=32, seeds=2, norms=("clade",),
                               curve_every=1, curve_images=3, bn_estimation_batches=batches)
        stage.run(RunContext(out=tmp_path / str(batches), quick=True, train=options))
        curves = pd.read_csv(tmp_path / str(batches) / "tables" / "learning_curves.csv")
        first[batches] = curves[(curves.step == 0) & (curves.seed == 0)].shading_error.iloc[0]
    ctx = RunContext(out=tmp_path / "again", quick=True, train=options)
    s = stage.settings(ctx)
    untrained = stage.make_trainer(ctx, "clade", s, False, None)
    untrained.keep_estimation_batches(stage.training_dataset(ctx, untrained.g_config, s))
    expected = score_point(untrained.generator_for_eval, stage.learning_curve_images(ctx, untrained.g_config, s))
    assert first[2] == pytest.approx(expected["shading_error"], rel=1e-12) and first[0] != first[2]
