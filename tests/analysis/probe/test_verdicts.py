"""Probe verdicts: class share against all other variance, the untrained baseline, negligible layers."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from analysis.probe.variance import LayerStatistics, capture_modulation_statistics, modulation_layers, \
    variance_decomposition
from analysis.probe.verdicts import (NEGLIGIBLE_RELATIVE_STD, VERDICT_COLUMNS, layer_shares, probe_verdicts,
                                     share_interval, untrained_twin)
from training.trainer import Trainer, TrainRecipe

from tests.analysis.probe.test_probe import CLASSES, H, STRIPE, U, random_batches, randomize_class_tables, stripes, tiny


# --- the share and the negligible rule on a hand-made layer ----------------------------------

def hand_layer(scale: float, activation: float | None = None) -> pd.DataFrame:
    """One channel on the stripes: gamma = scale * class value (Var 3.5 scale^2, all between
    classes), beta = scale * a +-1 pattern (Var scale^2, all residual); normalised activation
    of variance 4 (std 2), or the constant ``activation``."""
    label, positions, r = stripes()
    gamma = scale * U[label[0]]
    layer = LayerStatistics("hand", (H, STRIPE * CLASSES), 1, CLASSES)
    layer.update(label, positions, gamma[None, None], (scale * r)[None, None])
    layer.update_activation(2 * r[None, None] if activation is None else torch.full_like(r, activation)[None, None])
    frames = [layer.decompose(p).assign(depth=0) for p in ("gamma", "beta")]
    return pd.concat(frames, ignore_index=True)


def test_share_pools_gamma_and_beta_against_all_non_class_variance():
    row = layer_shares(hand_layer(1.0)).iloc[0]
    assert row["share_class"] == pytest.approx(3.5 / 4.5, rel=1e-12)
    assert row["modulation_std"] == pytest.approx(np.sqrt(4.5), rel=1e-12)
    assert row["activation_rms"] == pytest.approx(2.0, rel=1e-12)
    assert row["classes_seen"] == CLASSES
    assert not row["negligible"]


# relative std = scale * sqrt(4.5) / 2: 4e-3 -> 4.24e-3 (above 2^-8 = 3.91e-3), 3.5e-3 -> 3.71e-3 (below)
@pytest.mark.parametrize("scale, negligible", [(1e-2, False), (4e-3, False), (3.5e-3, True), (1e-6, True), (0.0, True)])
def test_negligible_means_modulation_std_below_two_to_the_minus_8_of_the_activation_rms(scale, negligible):
    row = layer_shares(hand_layer(scale)).iloc[0]
    relative = scale * np.sqrt(4.5) / 2.0
    assert row["relative_modulation_std"] == pytest.approx(relative, rel=1e-9)
    assert row["negligible"] == (relative < NEGLIGIBLE_RELATIVE_STD) == negligible


def test_the_activation_scale_is_its_rms_so_a_constant_activation_still_counts():
    row = layer_shares(hand_layer(1e-2, activation=-2.0)).iloc[0]
    assert row["activation_rms"] == pytest.approx(2.0, rel=1e-12) and not row["negligible"]
    assert layer_shares(hand_layer(1e-2, activation=0.0)).iloc[0]["relative_modulation_std"] == np.inf


def test_a_layer_where_one_class_was_seen_gets_no_verdict():
    label, positions, r = stripes()
    frames = []
    for seed in range(2):
        layer = LayerStatistics("one", (H, STRIPE * CLASSES), 1, CLASSES)
        layer.update(torch.zeros_like(label), positions, (1 + seed) * r[None, None], r[None, None])
        frames += [layer.decompose(p).assign(depth=0, model="m", run="m", seed=seed) for p in ("gamma", "beta")]
    shares = layer_shares(pd.concat(frames, ignore_index=True))
    assert shares["classes_seen"].tolist() == [1, 1] and (shares["share_class"] == 0).all()
    assert probe_verdicts(shares, shares)["verdict"].tolist() == ["no verdict: one class seen"]


# --- intervals on shares ----------------------------------------------------------------------

def test_interval_is_student_t_on_the_logit_scale():
    shares = 1 / (1 + np.exp(-np.array([-1.0, 0.0, 1.0])))        # logits -1, 0, 1: mean 0, sd 1
    centre, low, high = share_interval(shares)
    half = scipy_stats.t.ppf(0.975, 2) / np.sqrt(3)
    assert centre == pytest.approx(0.5, abs=1e-15)
    assert low == pytest.approx(1 / (1 + np.exp(half)), rel=1e-12)
    assert high == pytest.approx(1 / (1 + np.exp(-half)), rel=1e-12)
    assert share_interval([0.4])[1:] == (pytest.approx(np.nan, nan_ok=True),) * 2


def test_intervals_of_shares_near_the_bounds_stay_inside_zero_one():
    for shares in ([0.97, 0.999, 0.9999], [1e-4, 0.02, 0.05], [1.0, 1.0, 1.0], [0.0, 0.3, 0.9]):
        centre, low, high = share_interval(shares)
        assert 0 <= low <= centre <= high <= 1
    # a symmetric interval on the share scale would run past 1 here
    shares = np.array([0.97, 0.999, 0.9999])
    naive_high = shares.mean() + scipy_stats.t.ppf(0.975, 2) * shares.std(ddof=1) / np.sqrt(3)
    assert naive_high > 1


# --- verdicts -----------------------------------------------------------------------------------

def shares_of(generators: dict, batches, **columns) -> pd.DataFrame:
    """layer_shares of {seed: generator} probed on ``batches``."""
    frames = [variance_decomposition(capture_modulation_statistics(G, batches, progress=False))
              .assign(model="m", run="m", seed=seed, **columns) for seed, G in generators.items()]
    return layer_shares(pd.concat(frames, ignore_index=True))


def spade(seed):
    return untrained_twin(tiny("spade", param_free_norm="instance"), seed)


def test_untrained_twin_is_the_trainers_initial_generator():
    G = tiny("spade")
    twin = untrained_twin(G, seed=7)
    state = torch.get_rng_state()
    trainer = Trainer(g_config=G.config, recipe=TrainRecipe(use_vgg=False, seed=7, channels_last=False))
    for (name, a), (_, b) in zip(twin.state_dict().items(), trainer.G.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.set_rng_state(state)
    before = torch.get_rng_state()
    untrained_twin(G, seed=7)
    assert torch.equal(torch.get_rng_state(), before)   # the global RNG is left as it was


def test_an_untrained_spade_gets_no_supported_semantic_verdict():
    batches = random_batches()
    # the official initialisation (Xavier, gain 0.02): modulation std ~5e-5 of the activation
    shares = shares_of({k: spade(k) for k in range(3)}, batches)
    verdicts = probe_verdicts(shares, shares)
    assert list(verdicts.columns) == VERDICT_COLUMNS and len(verdicts) == 18
    assert set(verdicts["verdict"]) == {"no verdict: negligible modulation"}
    # weights large enough to matter: judged against itself, never supported
    shares = shares_of({k: randomize_class_tables(spade(k)) for k in range(3)}, batches)
    verdicts = probe_verdicts(shares, shares)
    assert not verdicts["negligible"].any()
    assert "supported" not in set(verdicts["verdict"])
    judged = verdicts[verdicts["verdict"] == "not supported"]
    assert len(judged) == 18
    assert (judged["share_class_low"] <= judged["share_class_untrained"]).all()
    assert (judged["share_class_untrained"] <= judged["share_class_high"]).all()


def test_class_only_modulation_is_supported_over_the_untrained_baseline():
    batches = random_batches()
    trained = {}
    for seed in range(3):
        G = spade(seed)
        g = torch.Generator().manual_seed(seed)
        for m in modulation_layers(G).values():
            table = torch.randn(G.config.class_nc, m.mlp_gamma.out_channels, generator=g)
            m.modulation_override = lambda cond, size, t=table: (t[cond.label_at(size)].permute(0, 3, 1, 2),) * 2
        trained[seed] = G
    verdicts = probe_verdicts(shares_of(trained, batches), shares_of({k: spade(k) for k in range(3)}, batches))
    assert set(verdicts["verdict"]) == {"supported"}
    np.testing.assert_allclose(verdicts["share_class_low"], 1, atol=1e-9)
    assert (verdicts["share_class_untrained"] < 0.6).all()


def test_negligible_layers_get_no_verdict():
    batches = random_batches(1)
    shrunk = {}
    for seed in range(2):
        G = randomize_class_tables(spade(seed))
        for m in modulation_layers(G).values():
            for conv in (m.mlp_gamma, m.mlp_beta):
                conv.weight.data.mul_(1e-6)
                conv.bias.data.mul_(1e-6)
        shrunk[seed] = G
    untrained = shares_of({k: randomize_class_tables(spade(k)) for k in range(2)}, batches)
    verdicts = probe_verdicts(shares_of(shrunk, batches), untrained)
    assert verdicts["negligible"].all()
    assert set(verdicts["verdict"]) == {"no verdict: negligible modulation"}
    assert not untrained["negligible"].any()


def test_a_single_seed_gets_no_verdict_and_a_missing_baseline_is_named():
    shares = shares_of({0: randomize_class_tables(spade(0))}, random_batches(1))
    verdicts = probe_verdicts(shares, shares)
    assert verdicts["share_class_low"].isna().all() and verdicts["share_class_high"].isna().all()
    assert set(verdicts["verdict"]) == {"no verdict: one seed"}
    with pytest.raises(ValueError, match="no untrained baseline for run 'm', seed 0, layer 'head_0.norm_0'"):
        probe_verdicts(shares, shares.iloc[:0])


def test_clade_is_class_only_by_construction():
    batches = random_batches(1)
    clade = {k: untrained_twin(tiny("clade", param_free_norm="instance"), k) for k in range(2)}
    shares = shares_of(clade, batches)
    np.testing.assert_allclose(shares["share_class"], 1, atol=1e-12)
    verdicts = probe_verdicts(shares, shares)
    assert set(verdicts["verdict"]) == {"no verdict: class-only by construction"}


# --- figures ------------------------------------------------------------------------------------

def test_layers_without_variance_are_drawn_as_such_not_as_shares():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from analysis.probe.figures import plot_ratio_bars, plot_share_against_untrained
    from analysis.probe.variance import layer_summary

    G = randomize_class_tables(spade(0))
    tiny_layer = next(iter(modulation_layers(G).values()))
    for conv in (tiny_layer.mlp_gamma, tiny_layer.mlp_beta):     # the first layer: std ~1e-9
        conv.weight.data.mul_(1e-8)
        conv.bias.data.mul_(1e-8)
    channels = variance_decomposition(capture_modulation_statistics(G, random_batches(1), progress=False))
    channels = channels.assign(model="m", run="m", seed=0)
    shares = layer_shares(channels)
    assert shares["negligible"].tolist() == [True] + [False] * 17
    layers = layer_summary(channels).merge(shares[["model", "layer", "negligible"]])
    fig = plot_ratio_bars(layers)
    ax = fig.axes[0]
    coloured = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_facecolor()[:3] != (1, 1, 1)]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_x() < 0          # layer 0: one hatched slot ...
    assert all(p.get_height() == 0 for p in coloured if p.get_x() < 0)   # ... and no share bars
    assert sum(t.get_text() == "no variance" for t in ax.texts) == 1
    plt.close(fig)
    verdicts = probe_verdicts(shares, shares)
    fig = plot_share_against_untrained(verdicts)
    assert sum(bool(p.get_hatch()) for p in fig.axes[0].patches) == 1
    plt.close(fig)


# --- the stage ----------------------------------------------------------------------------------

def test_stage_writes_verdicts_against_the_untrained_twin_of_each_seed_and_probes_coarse_masks(tmp_path):
    import json

    from analysis.context import RunContext
    from analysis.options import ProbeOptions
    from analysis.stages import probe as stage
    from models import save_generator_dir

    ctx = RunContext(out=tmp_path / "out", checkpoints=tmp_path / "ckpt", quick=True, seed=3,
                     probe=ProbeOptions(images=2))
    G = tiny("spade", crop_size=32)
    for name, seed, factor in (("spade", 0, 1), ("spade-s1", 1, 1), ("spade-mask4", 0, 4)):
        folder = tmp_path / "ckpt" / name
        save_generator_dir(untrained_twin(G, ctx.seed + seed), folder)    # weights as the run started
        (folder / "variant.json").write_text(json.dumps({"seed": seed, "mask_factor": factor,
                                                         "mask_resolution": f"{32 // factor}x{32 // factor}"}))
    summary = stage.run(ctx)
    tables = tmp_path / "out" / "tables"
    verdicts = pd.read_csv(tables / "probe_verdicts.csv")
    assert list(verdicts.columns) == VERDICT_COLUMNS
    assert list(dict.fromkeys(verdicts["model"])) == ["spade", "spade-mask4"] and len(verdicts) == 2 * 18
    assert "supported" not in set(verdicts["verdict"])
    shares = pd.read_csv(tables / "probe_shares.csv")
    # the stage rebuilt each seed's initial weights and fed them the same label maps
    np.testing.assert_array_equal(shares["share_class"], shares["share_class_untrained"])
    assert set(shares.loc[shares["model"] == "spade-mask4", "mask_factor"]) == {4}
    coarse = shares[shares["model"] == "spade-mask4"].set_index("layer")["share_class"]
    fine = shares[shares["model"] == "spade"].set_index("layer")["share_class"]
    assert not np.allclose(coarse["up_3.norm_0"], fine["up_3.norm_0"])   # other label maps at 32x32
    assert any(f.file == "figures/probe_share_vs_untrained.png" for f in summary.figures)
    assert any(n.startswith("Probe verdicts, spade:") for n in summary.notes)
