"""Known answers of the modulation probe: variance decomposition, streaming, ablations, stage."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.context import RunContext
from analysis.options import ProbeOptions
from analysis.probe.variance import (LayerStatistics, capture_modulation_statistics, layer_summary, modulation_layers,
                            prepare_inputs, variance_decomposition)
from analysis.probe.ablation import ablate, ablation_effects
from models import CLADE, build_generator, save_generator_dir
from models.checkpoint import save_state_dict_atomic


# --- a hand-made scene with exact answers ----------------------------------------------------

H, STRIPE, CLASSES = 8, 4, 4  # 4 vertical stripes (one class each) of 8 x 4 pixels
U = torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=torch.float64)  # per-class value, Var = 3.5


def stripes():
    """label [1, H, W]; positions [1, 2, H, W] (dy, dx) with zero mean inside every stripe;
    ``r`` [H, W]: +-1 pattern orthogonal (inside every stripe) to every quadratic monomial."""
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                          torch.arange(STRIPE * CLASSES, dtype=torch.float64), indexing="ij")
    label = (x // STRIPE).long()[None]
    dy = (y - (H - 1) / 2) / 4
    dx = (x % STRIPE - (STRIPE - 1) / 2) / 2          # -0.75, -0.25, 0.25, 0.75: E[dx^2] = 0.3125
    # p(y) = (1, -1, -1, 1) repeated sums to 0 against 1 and y; q(x) = (-1)^x sums to 0 over a
    # stripe: so p(y) q(x) is orthogonal to 1, dy, dx, dy^2, dx^2, dy*dx inside each stripe.
    p = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)[y.long() % 4]
    r = p * (-1.0) ** x
    return label, torch.stack((dy, dx))[None], r


def decompose(gamma: torch.Tensor, basis="quadratic") -> pd.Series:
    """Decomposition of a single-channel gamma [H, W] on the stripes (beta = 0)."""
    label, positions, _ = stripes()
    layer = LayerStatistics("test", gamma.shape, 1, CLASSES, basis)
    layer.update(label, positions, gamma[None, None], torch.zeros_like(gamma)[None, None])
    return layer.decompose("gamma").iloc[0]


def test_function_of_the_class_is_purely_semantic():
    label, _, _ = stripes()
    row = decompose(U[label[0]])
    assert row["semantic_ratio"] == pytest.approx(1, abs=1e-12)
    assert row["positional_ratio"] == pytest.approx(0, abs=1e-12)
    assert row["between_variance"] == pytest.approx(3.5, rel=1e-12)


def test_function_of_the_position_only_is_purely_positional():
    _, positions, _ = stripes()
    dy, dx = positions[0]
    row = decompose(2 * dx - dy)
    assert row["semantic_ratio"] == pytest.approx(0, abs=1e-12)
    assert row["positional_ratio"] == pytest.approx(1, abs=1e-12)
    assert row["residual_ratio"] == pytest.approx(0, abs=1e-12)


def test_mixture_gives_the_analytic_ratios():
    # gamma = a u[class] + b dx + c r, three mutually orthogonal parts, so
    # total = a^2 Var(u) + b^2 E[dx^2] + c^2 E[r^2] = 3.5 + 4 * 0.3125 + 0.25 = 5.0
    label, positions, r = stripes()
    a, b, c = 1.0, 2.0, 0.5
    row = decompose(a * U[label[0]] + b * positions[0, 1] + c * r)
    assert row["total_variance"] == pytest.approx(5.0, rel=1e-12)
    assert row["semantic_ratio"] == pytest.approx(3.5 / 5, rel=1e-12)
    assert row["positional_ratio"] == pytest.approx(1.25 / 5, rel=1e-12)
    assert row["residual_ratio"] == pytest.approx(0.25 / 5, rel=1e-12)
    # chance adjustment: 6 basis functions, 32 pixels per class -> minus 5/26 of the residual
    assert row["positional_ratio_adjusted"] == pytest.approx((1.25 - 5 / 26 * 0.25) / 5, rel=1e-12)
    # the linear basis explains the same (b dx is linear)
    assert decompose(a * U[label[0]] + b * positions[0, 1] + c * r, "linear")["positional_ratio"] \
        == pytest.approx(0.25, rel=1e-12)


def direct_decomposition(label, positions, values):
    """The decomposition computed from all pixels at once (numpy, float64, lstsq per class)."""
    lab = label.reshape(-1).numpy()
    dy, dx = positions.permute(1, 0, 2, 3).reshape(2, -1).double().numpy()
    x = np.stack([np.ones_like(dy), dy, dx, dy * dy, dx * dx, dy * dx], 1)
    y = values.permute(0, 2, 3, 1).reshape(-1, values.shape[1]).double().numpy()
    total = y.var(0)
    between = np.zeros(y.shape[1])
    positional = np.zeros(y.shape[1])
    for k in np.unique(lab):
        yk, xk = y[lab == k], x[lab == k]
        between += len(yk) * (yk.mean(0) - y.mean(0)) ** 2
        fit = xk @ np.linalg.lstsq(xk, yk, rcond=None)[0]
        positional += ((fit - yk.mean(0)) ** 2).sum(0)
    return total, between / len(y), positional / len(y)


def test_streaming_statistics_equal_the_batch_computation():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        label = torch.randint(0, 5, (2, 6, 6), generator=g)
        positions = torch.rand(2, 2, 6, 6, generator=g) * 2 - 1
        # a class effect, a positional effect and noise, around 1 like SPADE's scale
        scale = (1 + 0.1 * label[:, None] + 0.05 * positions[:, :1] ** 2
                 + 0.01 * torch.randn(2, 3, 6, 6, generator=g))
        batches.append((label, positions, scale.float(), torch.randn(2, 3, 6, 6, generator=g)))
    layer = LayerStatistics("test", (6, 6), 3, 5)
    for label, positions, scale, shift in batches:
        layer.update(label, positions, scale, shift)
    label, positions, scale, shift = (torch.cat(t) for t in zip(*batches))
    for param, values in (("gamma", scale), ("beta", shift)):
        got = layer.decompose(param)
        total, between, positional = direct_decomposition(label, positions, values)
        np.testing.assert_allclose(got["total_variance"], total, rtol=1e-10)
        np.testing.assert_allclose(got["between_variance"], between, rtol=1e-10)
        np.testing.assert_allclose(got["positional_variance"], positional, rtol=1e-9)
        np.testing.assert_allclose(layer.class_means(param).numpy(),
                                   [values.double().permute(1, 0, 2, 3)[:, label == k].mean(1).numpy()
                                    for k in range(5)], rtol=1e-12)
    assert layer.count.sum() == label.numel()


def test_excluding_dontcare_drops_its_pixels():
    label, positions, _ = stripes()
    gamma = torch.where(label[0] == 3, 10.0, 0.0).double() + positions[0, 1]
    layer = LayerStatistics("test", (H, STRIPE * CLASSES), 1, CLASSES)
    layer.update(label, positions, gamma[None, None], gamma[None, None])
    assert layer.decompose("gamma")["semantic_ratio"].item() > 0.9
    assert layer.decompose("gamma", exclude_classes=[3])["semantic_ratio"].item() == pytest.approx(0, abs=1e-12)


# --- generators ------------------------------------------------------------------------------

def tiny(norm, **options):
    return build_generator("synthetic", norm, ngf=4, **options)


def random_batches(count=2, size=64, seed=0):
    """Blocky random label maps with instances and random positions (no data.synthetic needed)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        label = torch.randint(0, 9, (2, 1, 8, 8), generator=g)
        label = label.repeat_interleave(size // 8, 2).repeat_interleave(size // 8, 3)
        out.append(dict(label=label, instance=label, dist=torch.rand(2, 2, size, size, generator=g) * 2 - 1))
    return out


def randomize_class_tables(generator):
    """Modulation that matters: CLADE's beta table (0 at init) and ICPE / SPADE convs random."""
    for m in modulation_layers(generator).values():
        if not isinstance(m, CLADE):
            for conv in (m.mlp_shared[0], m.mlp_gamma, m.mlp_beta):
                torch.nn.init.normal_(conv.weight, std=0.05)
        else:
            torch.nn.init.normal_(m.class_specified_affine.bias)
            if m.class_specified_affine.icpe:
                torch.nn.init.normal_(m.class_specified_affine.dist_conv_w.weight, std=0.5)
                torch.nn.init.normal_(m.class_specified_affine.dist_conv_b.weight, std=0.5)
    return generator


def test_hand_built_class_modulation_in_a_generator_is_purely_semantic():
    G = tiny("spade")
    tables = {}
    for name, m in modulation_layers(G).items():
        channels = m.mlp_gamma.out_channels
        tables[name] = torch.randn(G.config.class_nc, channels)
        m.modulation_override = (lambda cond, size, t=tables[name]:
                                 (t[cond.label_at(size)].permute(0, 3, 1, 2),) * 2)
    stats = capture_modulation_statistics(G, random_batches(), progress=False)
    layers = layer_summary(variance_decomposition(stats))
    assert len(stats.layers) == 18
    np.testing.assert_allclose(layers["semantic_ratio"], 1, atol=1e-12)
    # the capture wraps the override it found and puts it back afterwards
    assert all(m.modulation_override is not None for m in modulation_layers(G).values())


def test_clade_is_purely_semantic_and_icpe_is_not():
    batches = random_batches()
    clade = layer_summary(variance_decomposition(capture_modulation_statistics(
        randomize_class_tables(tiny("clade")), batches, progress=False)))
    np.testing.assert_allclose(clade["semantic_ratio"], 1, atol=1e-12)
    np.testing.assert_allclose(clade["semantic_ratio_weighted"], 1, atol=1e-12)
    icpe = layer_summary(variance_decomposition(capture_modulation_statistics(
        randomize_class_tables(tiny("clade-icpe")), batches, progress=False)))
    assert (icpe["semantic_ratio"] < 0.999).all()
    # gamma[c] * (1 + w . dist + b) is linear in the position inside a class
    np.testing.assert_allclose(icpe["residual_ratio"], 0, atol=1e-9)


def test_untrained_clade_beta_has_zero_variance_and_nan_ratios():
    layers = layer_summary(variance_decomposition(capture_modulation_statistics(
        tiny("clade"), random_batches(1), progress=False)))
    beta = layers[layers["param"] == "beta"]
    assert beta["semantic_ratio"].isna().all() and beta["semantic_ratio_weighted"].isna().all()
    assert (beta["zero_variance_channels"] == beta["channels"]).all()


def test_class_mean_ablation_leaves_clade_unchanged_and_changes_spade():
    batches = random_batches()
    clade = randomize_class_tables(tiny("clade"))
    effects = ablation_effects(clade, capture_modulation_statistics(clade, batches, progress=False),
                               batches, per_layer=False, progress=False)
    assert effects["max_abs_diff"].max() <= 1e-6
    # instance norm: an untrained net in eval mode with BatchNorm saturates the tanh output
    spade = randomize_class_tables(tiny("spade", param_free_norm="instance"))
    stats = capture_modulation_statistics(spade, batches, progress=False)
    effects = ablation_effects(spade, stats, batches[:1], progress=False)
    assert set(effects["ablated"]) == {"all", *stats.layers}
    assert (effects["mean_abs_diff"] > 1e-3).all() and np.isfinite(effects["psnr_db"]).all()


def test_no_position_ablation_equals_a_zero_icpe_map():
    G = randomize_class_tables(tiny("clade-icpe")).eval()
    semantic, dist = prepare_inputs(random_batches(1)[0], G.config)
    with torch.no_grad():
        zero_map = G(semantic, dist=torch.zeros_like(dist))
        with ablate(G, None, kind="no_position"):
            ablated = G(semantic, dist=dist)
        plain = G(semantic, dist=dist)
    torch.testing.assert_close(ablated, zero_map)
    assert (plain - ablated).abs().max() > 1e-3
    assert all("modulation_override" not in m.__dict__ for m in modulation_layers(G).values())


def test_ablate_explains_bad_requests():
    G = tiny("spade")
    with pytest.raises(ValueError, match="CLADE-ICPE"):
        with ablate(G, None, kind="no_position"):
            pass
    with pytest.raises(ValueError, match="unknown modulation layer"):
        with ablate(G, None, layers=["up_9.norm_0"]):
            pass
    with pytest.raises(ValueError, match="needs statistics"):
        with ablate(G, None):
            pass


# --- the stage -------------------------------------------------------------------------------

def test_stage_probes_every_checkpoint_folder(tmp_path):
    pytest.importorskip("data.synthetic")
    from analysis.stages import probe as stage

    for name, norm, options in (("clade-icpe", "clade-icpe", {}), ("spade-k1", "spade", {"spade_kernel_size": 1})):
        save_generator_dir(tiny(norm, **options), tmp_path / "ckpt" / name)
    ctx = RunContext(out=tmp_path / "out", checkpoints=tmp_path / "ckpt", quick=True,
                     probe=ProbeOptions(images=2))
    summary = stage.run(ctx).record()
    layers = pd.read_csv(tmp_path / "out" / "tables" / "probe_layers.csv")
    for column in ("model", "norm", "layer", "resolution", "param", "semantic_ratio", "positional_ratio",
                   "residual_ratio", "semantic_ratio_weighted", "positional_ratio_weighted",
                   "residual_ratio_weighted"):
        assert column in layers.columns
    assert list(dict.fromkeys(layers["model"])) == ["clade-icpe", "spade-k1"]  # known norms first
    assert set(layers["param"]) == {"gamma", "beta"} and len(layers) == 2 * 18 * 2
    assert layers.loc[layers["model"] == "spade-k1", "spade_kernel_size"].eq(1).all()
    assert layers.loc[layers["model"] == "clade-icpe", "spade_kernel_size"].isna().all()
    ablation = pd.read_csv(tmp_path / "out" / "tables" / "probe_ablation.csv")
    assert set(ablation.loc[ablation["model"] == "clade-icpe", "kind"]) == {"class_mean", "no_position"}
    for item in summary["figures"] + summary["tables"]:
        assert (tmp_path / "out" / item["file"]).is_file() and item["caption"]
    meta = json.loads((tmp_path / "out" / "tables" / "probe_layers.meta.json").read_text())
    assert meta["stand_in"] is False and meta["images"] == {"clade-icpe": 2, "spade-k1": 2}


def test_stage_without_checkpoints_says_what_to_do(tmp_path):
    from analysis.stages import probe as stage

    with pytest.raises(FileNotFoundError, match="run_analysis.py train"):
        stage.run(RunContext(out=tmp_path, quick=True))


def test_bare_official_checkpoint_loads_with_options_from_its_keys(tmp_path):
    from analysis.stages import probe as stage

    G = tiny("clade-icpe")
    save_state_dict_atomic(G.state_dict(), tmp_path / "latest_net_G.pth")
    loaded = stage.load_checkpoint(tmp_path / "latest_net_G.pth", "synthetic", None, "cpu")
    assert loaded.config.norm == "clade-icpe"
    torch.testing.assert_close(loaded.state_dict(), G.state_dict())


def test_stand_in_labels_are_remapped_and_resized_for_other_presets(tmp_path):
    pytest.importorskip("data.synthetic")
    from analysis.stages import probe as stage

    config = build_generator("custom", "clade", device="meta", label_nc=20, crop_size=64, aspect_ratio=2.0).config
    batches, description, stand_in = stage.probe_batches(RunContext(out=tmp_path), config, 3, 2)
    assert stand_in and "STAND-IN" in description
    label = torch.cat([b["label"] for b in batches])
    assert label.shape == (3, 1, *config.output_size)
    assert label.max() < config.class_nc
    semantic, dist = prepare_inputs(batches[0], config)
    assert semantic.shape[1] == config.semantic_nc and dist.shape == (2, 2, *config.output_size)
