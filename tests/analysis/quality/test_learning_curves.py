"""Learning curves: scoring a generator on fixed scenes, and the convergence rule on constructed curves."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from analysis.quality.known_answer import expected_images
from analysis.quality.learning_curves import (CONVERGENCE_COLUMNS, CONVERGENCE_RULE, convergence_table, curve_figure,
                                              curve_images, score_point)
from data.datasets import SYNTHETIC_VAL_FIRST_INDEX
from data.neighbourhood import coarsen_labels
from data.synthetic import SyntheticScenes
from models import build_generator_from_config
from models.presets import generator_config


class Oracle(nn.Module):
    """Returns fixed images: the law's expectation, or a given image set."""

    def __init__(self, images, norm="clade"):
        super().__init__()
        self.images = images
        self.config = generator_config("synthetic", norm, ngf=4, crop_size=32)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, semantic, dist=None):
        start = self.calls
        self.calls += len(semantic)
        return self.images[start:start + len(semantic)]


SCENES = SyntheticScenes(6, size=32, seed=3, with_dist=False, first_index=SYNTHETIC_VAL_FIRST_INDEX)


class Coarse(torch.utils.data.Dataset):
    def __len__(self):
        return len(SCENES)

    def __getitem__(self, i):
        item = dict(SCENES[i])
        item.update(label=coarsen_labels(item["label"], 4), instance=coarsen_labels(item["instance"], 4))
        return item


def test_the_law_scores_zero_and_flat_instances_score_one():
    images = curve_images(SCENES)
    expected = torch.from_numpy(expected_images(SCENES))
    assert torch.equal(images.expected, expected) and {"label", "instance"} <= images.inputs.keys()
    oracle = Oracle(expected)
    point = score_point(oracle, images, batch_size=4)
    assert point["shading_error"] < 1e-26 and point["base_colour_error"] == 0 and point["expected_l1"] == 0
    assert oracle.calls == 6 and oracle.training  # batches of 4 and 2; train mode restored
    flat = expected.clone()
    for n, ids in enumerate(images.instance):
        for k in ids.unique():
            mask = ids == k
            flat[n][:, mask] = expected[n][:, mask].mean(1, keepdim=True)
    point = score_point(Oracle(flat), images)
    # The flat means are float32 (relative rounding 6e-8), so the colour error is ~1e-15, not 0.
    assert abs(point["shading_error"] - 1) < 1e-12 and point["base_colour_error"] < 1e-10
    scored = (images.instance != 0)[:, None].expand_as(flat)
    assert point["expected_l1"] == pytest.approx(float((flat - expected).abs()[scored].double().mean()), rel=1e-12)


def test_coarse_inputs_are_scored_against_the_true_layout():
    images = curve_images(SCENES, Coarse())
    assert torch.equal(images.inputs["label"], torch.stack([coarsen_labels(SCENES[i]["label"], 4) for i in range(6)]))
    assert torch.equal(images.instance, torch.stack([SCENES[i]["instance"][0] for i in range(6)]))


def test_a_real_generator_is_scored_in_eval_mode_and_left_in_train_mode():
    torch.manual_seed(0)
    G = build_generator_from_config(generator_config("synthetic", "clade-icpe", ngf=4, crop_size=32)).train()
    scenes = SyntheticScenes(2, size=32, seed=0, with_dist=True, icpe_mode=G.config.icpe_mode,
                             first_index=SYNTHETIC_VAL_FIRST_INDEX)
    point = score_point(G, curve_images(scenes))
    assert G.training and set(point) == {"shading_error", "base_colour_error", "expected_l1"}
    assert all(np.isfinite(v) and v > 0 for v in point.values())


def _curves(values: dict[int, list[float]], run="clade") -> pd.DataFrame:
    """Rows of one run: ``values[seed]`` = shading_error at steps 0, 100, ..., 400."""
    return pd.DataFrame([{"run": run, "seed": seed, "step": 100 * i, "shading_error": v}
                         for seed, vs in values.items() for i, v in enumerate(vs)])


def test_a_flat_end_inside_the_seed_spread_has_converged():
    # Steps 0..400: the last quarter runs from step 300 to 400. Seed means there: 0.45 -> 0.44
    # (change -0.01); final values 0.40, 0.48: sample sd 0.0566.
    curves = _curves({0: [1.0, 0.6, 0.5, 0.41, 0.40], 1: [1.0, 0.7, 0.55, 0.49, 0.48]})
    row = convergence_table(curves, metrics=("shading_error",)).iloc[0]
    assert list(row.index) == CONVERGENCE_COLUMNS and row.rule == CONVERGENCE_RULE
    assert (row.method, row.metric, row.steps, row.seeds) == ("clade", "shading_error", 400, 2)
    assert row.last_quarter_change == pytest.approx(-0.01, abs=1e-12)
    assert row.seed_spread == pytest.approx(np.std([0.40, 0.48], ddof=1), abs=1e-12)
    assert row.final_mean == pytest.approx(0.44, abs=1e-12) and row.converged


def test_seeds_agreeing_closer_than_a_tenth_of_the_margin_do_not_ask_for_a_flatter_curve():
    # Final values 0.400 / 0.401 (sd 0.0007); the known-answer margin is 0.1, so the tolerance is 0.01.
    still = _curves({0: [1.0, 0.6, 0.5, 0.405, 0.400], 1: [1.0, 0.6, 0.5, 0.406, 0.401]})
    row = convergence_table(still, metrics=("shading_error",)).iloc[0]
    assert row.tolerance == pytest.approx(0.01) and row.seed_spread < 0.001
    assert row.last_quarter_change == pytest.approx(-0.005, abs=1e-12) and row.converged
    moving = _curves({0: [1.0, 0.6, 0.5, 0.42, 0.400], 1: [1.0, 0.6, 0.5, 0.421, 0.401]})
    row = convergence_table(moving, metrics=("shading_error",)).iloc[0]
    assert row.last_quarter_change == pytest.approx(-0.02, abs=1e-12) and not row.converged


def test_convergence_is_judged_on_the_metrics_of_the_verdicts():
    curves = _curves({0: [1, 0.5, 0.5, 0.5, 0.5], 1: [1, 0.5, 0.5, 0.5, 0.5]}).assign(
        base_colour_error=0.1, expected_l1=0.2)
    assert list(convergence_table(curves).metric) == ["shading_error", "base_colour_error"]


def test_a_curve_still_falling_by_more_than_the_seed_spread_has_not_converged():
    curves = _curves({0: [1.0, 0.9, 0.8, 0.7, 0.5], 1: [1.0, 0.9, 0.8, 0.72, 0.52]})
    row = convergence_table(curves, metrics=("shading_error",)).iloc[0]
    assert row.last_quarter_change == pytest.approx(-0.2, abs=1e-12) and not row.converged


def test_one_seed_never_converges_and_runs_keep_their_rows():
    curves = pd.concat([_curves({0: [1, 0.5, 0.5, 0.5, 0.5]}, run="spade-1x1"),
                        _curves({0: [1, 0.5, 0.5, 0.5, 0.5], 1: [1, 0.5, 0.5, 0.5, 0.5]})])
    table = convergence_table(curves, metrics=("shading_error",))
    assert list(table.method) == ["spade-1x1", "clade"]
    assert not table.converged.iloc[0] and np.isnan(table.seed_spread.iloc[0])
    # Identical seeds and a flat end: change 0 <= spread 0.
    assert table.converged.iloc[1] and table.last_quarter_change.iloc[1] == 0


def test_curve_figure_draws_one_panel_per_metric():
    curves = _curves({0: [1, 0.6, 0.5, 0.4, 0.4], 1: [1, 0.7, 0.5, 0.5, 0.45]})
    fig = curve_figure(curves, {"clade": "CLADE"}, metrics=("shading_error",))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CLADE"]
    assert np.allclose(ax.lines[0].get_ydata(), [1, 0.65, 0.5, 0.45, 0.425])


def test_values_are_window_means_so_one_jumpy_step_does_not_decide():
    # Steps 0..800 by 100: final window (700, 800] = {800}; ... with every 50 steps the windows hold two.
    steps = range(0, 850, 50)
    jumpy = {0: [0.5 + (0.3 if s == 800 else 0) for s in steps], 1: [0.5 for s in steps]}
    curves = pd.DataFrame([{"run": "spade", "seed": k, "step": s, "shading_error": v}
                           for k, vs in jumpy.items() for s, v in zip(steps, vs)])
    row = convergence_table(curves, metrics=("shading_error",)).iloc[0]
    # Final values are means over steps 750 and 800: seed 0 (0.5 + 0.8) / 2 = 0.65, seed 1 0.5;
    # the values at 3/4 over 550 and 600: 0.5 each.
    assert row.last_quarter_change == pytest.approx((0.65 + 0.5) / 2 - 0.5, abs=1e-12)
    assert row.seed_spread == pytest.approx(np.std([0.65, 0.5], ddof=1), abs=1e-12)
    assert row.final_mean == pytest.approx(0.575, abs=1e-12) and row.converged
