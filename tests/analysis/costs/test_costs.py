"""Cost counting: closed-form arithmetic == fvcore, complete handles == hand counts, roles add
up, FlopCounterMode agrees, and the official totals match ../shared/reference."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.costs import formulas as cost_formulas
from analysis.costs import tables as cost_tables
from analysis.costs import layers as costs
from analysis.costs.checks import flop_counter_crosscheck, load_reference_costs, training_step_gmacs
from analysis.costs.formulas import closed_form_block_costs, closed_form_generator_costs, official_resize_macs
from analysis.costs.layers import generator_inputs, layer_costs, role_totals
from models import build_generator, build_generator_from_config, count_parameters
from models.blocks import ResnetBlock
from models.norms import Conditioning
from models.presets import generator_config

NORMS = ["spade", "clade", "clade-icpe"]



def tiny_config(norm, **overrides):
    options = dict(label_nc=5, ngf=4, crop_size=32, spade_hidden=8, no_instance=False)
    options.update(overrides)
    return generator_config("custom", norm, **options)


def macs(table, column):
    return round(table[column].sum() * 1e9)


class BlockWithConditioning(nn.Module):
    """One residual block fed like inside the generator (tensors in, Conditioning inside)."""

    def __init__(self, fin, fout, config):
        super().__init__()
        self.config = config
        self.block = ResnetBlock(fin, fout, config)

    def forward(self, x, semantic, dist=None):
        cond = Conditioning(semantic, self.config.class_nc, not self.config.no_instance, dist)
        return self.block(x, cond)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("fin,fout,size,no_instance", [(8, 8, 16, False), (8, 4, 16, True), (8, 4, 32, False)],
                         ids=["no-shortcut-edge", "learned-shortcut-no-edge", "learned-shortcut-edge-full-res"])
def test_closed_form_block_equals_fvcore(norm, fin, fout, size, no_instance):
    """Every block kind: SPADE / CLADE / CLADE-ICPE, with and without learned shortcut and
    instance edge, resizing the conditioning maps or (at full resolution) not."""
    config = tiny_config(norm, no_instance=no_instance)
    model = BlockWithConditioning(fin, fout, config).eval()
    (semantic,), kwargs = generator_inputs(config)
    x = torch.randn(1, fin, size, size)
    table = layer_costs(model, (x, semantic), kwargs=kwargs)
    expected = closed_form_block_costs(fin, fout, size, size, config, resize=True)
    if norm != "spade":  # the block is the first to ask for labels: it pays the argmax
        expected["macs_complete"] += config.class_nc * 32 * 32
    assert table.params.sum() == expected["params"] == count_parameters(model)
    assert macs(table, "gmacs_fvcore") == expected["macs"]
    assert macs(table, "gmacs_complete") == expected["macs_complete"]
    assert table.attrs["uncounted_ops"] == {}


@pytest.mark.parametrize("norm,overrides", [
    ("spade", dict(crop_size=64, spectral=False)),
    ("clade", dict(crop_size=128, num_upsampling_layers="most", no_instance=True, contain_dontcare_label=True)),
    ("clade-icpe", dict(crop_size=128, aspect_ratio=2.0, num_upsampling_layers="more")),
], ids=["spade-normal-edge-no-spectral", "clade-most-no-edge", "clade-icpe-more-edge"])
def test_generator_counts_closed_form_roles_and_flop_counter(norm, overrides):
    config = tiny_config(norm, **overrides)
    G = build_generator_from_config(config)
    args, kwargs = generator_inputs(config)
    table = layer_costs(G, args, kwargs=kwargs)

    # closed form, whole generator and block by block
    expected = closed_form_generator_costs(config)
    assert table.params.sum() == expected["params"] == count_parameters(G)
    assert macs(table, "gmacs_fvcore") == expected["macs"]
    assert macs(table, "gmacs_complete") == expected["macs_complete"]
    for name, block in expected["blocks"].items():
        rows = table[(table.module == name) | table.module.str.startswith(name + ".")]
        assert (rows.params.sum(), macs(rows, "gmacs_fvcore"), macs(rows, "gmacs_complete")) == \
            (block["params"], block["macs"], block["macs_complete"]), name

    # roles add up to the totals and name the modulation parts
    roles = role_totals(table)
    assert roles.params.sum() == table.attrs["params"]
    assert roles.gmacs_fvcore.sum() == pytest.approx(table.attrs["gmacs_fvcore"], rel=1e-12)
    assert (table.gmacs_complete >= table.gmacs_fvcore).all()
    assert table.attrs["uncounted_ops"] == {}
    expected_roles = {"backbone", "modulation_norm", "modulation_apply", "modulation_resize"}
    expected_roles |= ({"modulation_spade_shared", "modulation_spade_gamma", "modulation_spade_beta"}
                       if norm == "spade" else {"modulation_clade_affine"})
    expected_roles |= {"modulation_icpe"} if norm == "clade-icpe" else set()
    expected_roles |= {"modulation_edge"} if norm != "spade" and not config.no_instance else set()
    assert set(roles.index) == expected_roles
    inside_norms = sum(p.numel() for n, p in G.named_parameters()
                       if any(f".{k}." in n for k in ("norm_0", "norm_1", "norm_s")))
    assert roles.loc[roles.index != "backbone", "params"].sum() == inside_norms
    h, w = config.output_size
    assert {f"{h}x{w}", "mixed"} <= set(table.stage)

    # FlopCounterMode (2 flops per MAC, matrix ops only) on the meta device
    meta_args, meta_kwargs = generator_inputs(config, device="meta")
    check = flop_counter_crosscheck(table, build_generator_from_config(config, "meta"), meta_args, kwargs=meta_kwargs)
    assert check["gmacs_flopcounter"] == pytest.approx(check["gmacs_fvcore_matrix_ops"], rel=1e-12)
    assert check["gmacs_fvcore_matrix_ops"] < table.gmacs_fvcore.sum()  # BN, upsampling are not matrix ops


def test_complete_handles_count_skipped_ops_by_hand():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.table = nn.Embedding(5, 4)

        def forward(self, x, label):
            y = F.leaky_relu(self.conv(x), 0.2)
            e = self.table(label).permute(0, 3, 1, 2)
            z = torch.cat([y * e + e, x], 1)
            return torch.tanh(z), x.argmax(1), x.cumsum(1)

    x, label = torch.randn(1, 3, 6, 6), torch.randint(0, 5, (1, 6, 6))
    table = layer_costs(Tiny(), (x, label))
    hw = 36
    conv = 4 * 3 * 9 * hw
    assert macs(table, "gmacs_fvcore") == conv
    # leaky_relu, embedding, mul, add: 4 channels; cat and tanh: 7 channels; argmax reads 3
    assert macs(table, "gmacs_complete") == conv + 4 * 4 * hw + 2 * 7 * hw + 3 * hw
    assert table.attrs["uncounted_ops"] == {"aten::cumsum": 1}
    assert set(table.attrs["fvcore_ops"]) == {"conv"}


def _tiny_training_setup(norm, **overrides):
    from models.presets import discriminator_config
    from training.recipe import TrainRecipe
    from training.trainer import Trainer
    config = generator_config("synthetic", norm, ngf=4, crop_size=64, **overrides)
    d_config = discriminator_config("synthetic", ndf=8, n_layers_D=3)
    recipe = TrainRecipe(use_vgg=False, amp=False)
    return config, d_config, recipe, Trainer(g_config=config, d_config=d_config, recipe=recipe)


@pytest.mark.parametrize("norm,overrides", [("clade", {}), ("spade", {"use_vae": True, "z_dim": 8})])
def test_training_step_count_matches_the_trainer(norm, overrides):
    from torch.utils.flop_counter import FlopCounterMode

    from analysis.speed.bench import synthetic_batch
    config, d_config, recipe, trainer = _tiny_training_setup(norm, **overrides)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(synthetic_batch(config, 1))
    counted = training_step_gmacs(config, recipe=recipe, d_config=d_config)
    assert counted["train_step"] == pytest.approx(counter.get_total_flops() / 2e9, rel=1e-12)
    assert counted["vgg"] == 0.0 and counted["g_step"] > 2 * counted["g_forward"]


def test_training_step_count_runs_the_trainers_loss_functions(monkeypatch):
    """Counter and trainer both call training.losses.*_losses, and get the same loss terms."""
    import training.losses
    from analysis.speed.bench import synthetic_batch
    config, d_config, recipe, trainer = _tiny_training_setup("spade", use_vae=True, z_dim=8)
    calls = []

    def spy(name):
        original = getattr(training.losses, name)

        def wrapped(*args, **kwargs):
            result = original(*args, **kwargs)
            calls.append((name, result.total.device.type, tuple(result.terms)))
            return result
        monkeypatch.setattr(training.losses, name, wrapped)

    spy("generator_losses"), spy("discriminator_losses")
    trainer.train_step(synthetic_batch(config, 1))
    training_step_gmacs(config, recipe=recipe, d_config=d_config)
    trained = [(name, terms) for name, device, terms in calls if device == "cpu"]
    counted = [(name, terms) for name, device, terms in calls if device == "meta"]
    assert trained == [("generator_losses", ("KLD", "GAN", "GAN_Feat")), ("discriminator_losses", ("D_Fake", "D_real"))]
    assert counted == trained


def test_training_step_count_follows_the_recipe():
    from training.recipe import TrainRecipe
    config = generator_config("synthetic", "clade", ngf=4, crop_size=64)
    with_vgg = training_step_gmacs(config, recipe=TrainRecipe(use_vgg=True))
    without = training_step_gmacs(config, recipe=TrainRecipe(use_vgg=False))
    assert with_vgg["vgg"] > 0 and without["vgg"] == 0.0
    assert with_vgg["g_step"] == pytest.approx(without["g_step"] + with_vgg["vgg"], rel=1e-12)
    assert with_vgg["d_step"] == without["d_step"]


def test_cost_tables_trace_identical_configs_once(monkeypatch):
    calls = []
    original = cost_tables.generator_costs
    monkeypatch.setattr(cost_tables, "generator_costs", lambda config, **kw: calls.append(config) or original(config, **kw))
    summary, per_layer, crosscheck = cost_tables.cost_tables(["ade20k", "ade20k-outdoor"], ["clade"],
                                                       train_step=False, ngf=4, crop_size=32)
    assert len(calls) == 1 and len(summary) == 2
    assert crosscheck.ok.all() and not crosscheck.check.str.contains("official").any()
    row = summary.iloc[0]
    backbone = row.gmacs_fvcore - row.modulation_gmacs_fvcore
    assert row.modulation_overhead == pytest.approx(row.modulation_gmacs_fvcore / backbone)
    assert set(per_layer.preset) == {"ade20k", "ade20k-outdoor"}
    assert {"d_params", "d_gmacs_fvcore", "gmacs_fvcore_official_resize"} <= set(summary.columns)


# -- official architectures against ../shared/reference ---------------------------------------

OFFICIAL = [(p, n) for p in ("cityscapes", "ade20k", "coco-stuff") for n in NORMS]


def _reference_row(reference_dir, preset, norm):
    ref = load_reference_costs(reference_dir)
    return ref[(ref.preset == preset) & (ref.norm == norm)].iloc[0]


@pytest.mark.parametrize("preset,norm", OFFICIAL)
def test_official_params_and_closed_form_match_reference(reference_dir, preset, norm):
    """All 9 without tracing: params on the meta device, fvcore MACs from the closed form
    (pinned to fvcore above) with the official per-layer segmap resize."""
    ref = _reference_row(reference_dir, preset, norm)
    config = generator_config(preset, norm)
    assert count_parameters(build_generator(preset, norm, device="meta")) == ref.params
    closed = closed_form_generator_costs(config)
    ours_resize = sum(cost_formulas._conditioning_costs(*b["size"], config)["macs"]
                      for b in cost_formulas.generator_block_layout(config) if b["resize"])
    official = (closed["macs"] - ours_resize + official_resize_macs(config)) / 1e9
    assert official == pytest.approx(ref.gmacs_fvcore, rel=1e-3)


def _slow_unless(*keep):
    return [pytest.param(p, n, marks=() if (p, n) in keep else pytest.mark.slow) for p, n in OFFICIAL]


@pytest.mark.parametrize("preset,norm", _slow_unless(("ade20k", "spade"), ("cityscapes", "clade"), ("coco-stuff", "clade-icpe")))
def test_official_fvcore_trace_matches_reference(reference_dir, preset, norm):
    ref = _reference_row(reference_dir, preset, norm)
    config = generator_config(preset, norm)
    row = cost_tables.summarize_generator(costs.generator_costs(config), config)
    assert row["params"] == ref.params and row["modulation_params"] == ref.modulation_params
    assert row["gmacs_fvcore_official_resize"] == pytest.approx(ref.gmacs_fvcore, rel=1e-3)
    assert row["modulation_gmacs_fvcore_official_resize"] == pytest.approx(ref.modulation_gmacs_fvcore,
                                                                           rel=1e-3, abs=5e-4)
    # Our Conditioning resizes less than the official layers do, never more.
    assert row["gmacs_fvcore"] <= row["gmacs_fvcore_official_resize"]


@pytest.mark.parametrize("preset", ["cityscapes", "ade20k", "coco-stuff"])
def test_official_discriminator_matches_reference(reference_dir, preset):
    ref = _reference_row(reference_dir, preset, "discriminator")
    table = costs.discriminator_costs(generator_config(preset, "spade"))
    assert table.params.sum() == ref.params
    assert table.gmacs_fvcore.sum() == pytest.approx(ref.gmacs_fvcore, rel=1e-3, abs=5e-4)


def test_costs_stage_writes_tables_and_figures(tmp_path, monkeypatch):
    from analysis.context import RunContext
    from analysis.stages import costs as stage
    monkeypatch.setattr(stage, "cost_tables", functools.partial(cost_tables.cost_tables, ngf=4, crop_size=64))
    from analysis.options import CostsOptions
    ctx = RunContext(out=tmp_path, quick=True, costs=CostsOptions(presets=("ade20k",), norms=("spade", "clade")))
    summary = stage.run(ctx).record()
    import pandas as pd
    table = pd.read_csv(tmp_path / "tables" / "costs.csv")
    assert {"preset", "norm", "params", "modulation_params", "gmacs_fvcore", "modulation_gmacs_fvcore",
            "gmacs_complete", "modulation_overhead", "d_gmacs_fvcore", "train_step_gmacs_matrix"} <= set(table.columns)
    per_layer = pd.read_csv(tmp_path / "tables" / "costs_per_layer.csv")
    assert {"module", "role", "stage", "params", "gmacs_fvcore", "gmacs_complete", "uncounted_ops"} <= set(per_layer.columns)
    for name in ("costs", "costs_per_layer", "cost_crosscheck"):
        assert (tmp_path / "tables" / f"{name}.meta.json").exists()
    for item in summary["figures"] + summary["tables"]:
        assert (tmp_path / item["file"]).exists() and item["caption"]
    assert summary["crosschecks_failed"] == 0
    # the report shows a compact choice of columns, all of them in the CSV
    assert summary["tables"][0]["columns"] == list(stage.REPORT_COLUMNS) and set(stage.REPORT_COLUMNS) <= set(table)
    assert table.set_index("norm").loc["spade", "gmacs_fvcore_vs_spade"] == 1


def test_compare_with_spade_per_preset():
    import pandas as pd

    from analysis.stages.costs import compare_with_spade
    summary = pd.DataFrame({"preset": ["a", "a", "b"], "norm": ["spade", "clade", "clade"],
                            "params": [100, 25, 30], "gmacs_fvcore": [8.0, 2.0, 1.0], "gmacs_complete": [9.0, 3.0, 1.0]})
    crosscheck = pd.DataFrame({"preset": ["a", "a", "a", "a"], "norm": ["spade", "clade", "clade", "discriminator"],
                               "ok": [True, True, False, True]})
    out = compare_with_spade(summary, crosscheck)
    assert out["params_vs_spade"].tolist()[:2] == [1.0, 0.25] and out["gmacs_complete_vs_spade"][1] == pytest.approx(1 / 3)
    assert pd.isna(out["gmacs_fvcore_vs_spade"][2])          # preset b has no SPADE row
    assert out["crosschecks_passed"].tolist() == ["1/1", "1/2", "none run"]
