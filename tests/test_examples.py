"""The example plugins in examples/: their layers, their registration and the README's numbers."""
import importlib.util
import re
from pathlib import Path

import pytest
import torch

import models
from analysis.probe.variance import capture_modulation_statistics
from models import build_generator, count_parameters, generator_config
from models.norms import CLADE, SPADE, Conditioning
from models.presets import with_options
from models.registry import build_norm
from models.plugins import load_plugin as load_plugin_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PLUGINS = {"groupdnet-spade": "groupdnet_spade.py", "lowrank-clade": "lowrank_clade.py"}


def load_plugin(file: str, monkeypatch):
    """Import an example file with ``models.register_norm`` recording its calls; returns
    (module, [(name, cls, options)]), leaving the real registry untouched."""
    calls = []
    monkeypatch.setattr(models, "register_norm", lambda name, cls, **options: calls.append((name, cls, options)))
    spec = importlib.util.spec_from_file_location(f"example_{Path(file).stem}", EXAMPLES / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, calls


@pytest.fixture
def groupdnet(monkeypatch):
    return load_plugin(PLUGINS["groupdnet-spade"], monkeypatch)


@pytest.fixture
def lowrank(monkeypatch):
    return load_plugin(PLUGINS["lowrank-clade"], monkeypatch)


def conditioning(config, batch=2, seed=0):
    """Blocky random labels (one-hot + instance edge) at the config's output size."""
    g = torch.Generator().manual_seed(seed)
    h, w = config.output_size
    label = torch.randint(0, config.class_nc, (batch, h // 8, w // 8), generator=g)
    label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)
    semantic = torch.nn.functional.one_hot(label, config.class_nc).permute(0, 3, 1, 2).float()
    if not config.no_instance:
        semantic = torch.cat((semantic, (torch.rand(batch, 1, h, w, generator=g) > 0.9).float()), 1)
    return Conditioning(semantic, config.class_nc, has_edge=not config.no_instance), label


def test_each_plugin_registers_one_layer_by_the_contract(groupdnet, lowrank):
    for (module, calls), name in ((groupdnet, "groupdnet-spade"), (lowrank, "lowrank-clade")):
        assert len(calls) == 1
        registered, cls, options = calls[0]
        assert registered == name and issubclass(cls, models.norms.ModulatedNorm)
        assert options["label"] and options["color"].startswith("#") and options["key_markers"]
    assert groupdnet[1][0][2].get("class_adaptive", False) is False
    assert lowrank[1][0][2]["class_adaptive"] is True and lowrank[1][0][2]["edge_channel"] is True


def test_groupdnet_spade_groups_decrease_with_the_width_and_cut_parameters(groupdnet):
    module, calls = groupdnet
    cls = calls[0][1]
    config = generator_config("ade20k", "spade")
    assert [cls(c, config).groups for c in (1024, 512, 256, 128, 64)] == [16, 8, 4, 2, 1]
    for channels in (1024, 128):
        assert count_parameters(cls(channels, config)) < count_parameters(SPADE(channels, config.semantic_nc))
    # 64 channels: one group, the same parameter count as SPADE
    assert count_parameters(cls(64, config)) == count_parameters(SPADE(64, config.semantic_nc))


def test_groupdnet_spade_output_groups_see_only_their_hidden_group(groupdnet):
    cls = groupdnet[1][0][1]
    config = generator_config("synthetic", "spade")
    layer = cls(256, config)  # 4 groups of 64 channels, 32 hidden each
    cond, _ = conditioning(config)
    scale, shift = layer.modulation(cond, (16, 16))
    assert scale.shape == shift.shape == (2, 256, 16, 16)
    with torch.no_grad():
        layer.group_gamma.weight[:64].zero_()   # group 0's weights
        layer.group_gamma.bias[:64].fill_(0.5)
    changed, _ = layer.modulation(cond, (16, 16))
    torch.testing.assert_close(changed[:, :64], torch.full_like(changed[:, :64], 1.5))
    torch.testing.assert_close(changed[:, 64:], scale[:, 64:])


@pytest.mark.parametrize("preset", ["synthetic", "ade20k"])
def test_lowrank_clade_is_a_clade_whose_tables_have_rank_r(lowrank, preset):
    module, calls = lowrank
    cls = calls[0][1]
    config = generator_config(preset, "clade", crop_size=64)
    layer = cls(128, config)
    torch.nn.init.normal_(layer.lowrank_affine.channel_factors)
    cond, label = conditioning(config)
    scale, shift = layer.modulation(cond, (32, 32))
    gamma, beta = layer.lowrank_affine.tables()
    assert torch.linalg.matrix_rank(gamma) == torch.linalg.matrix_rank(beta) == module.RANK
    # the same modulation as CLADE with the full tables 1 + U V and U' V'
    clade = CLADE(128, config.class_nc)
    with torch.no_grad():
        clade.class_specified_affine.weight.copy_(1 + gamma)
        clade.class_specified_affine.bias.copy_(beta)
    expected = clade.modulation(cond, (32, 32))
    torch.testing.assert_close(scale, expected[0])
    torch.testing.assert_close(shift, expected[1])
    assert layer.inst_conv is None   # the edge channel is the toolkit's (models.registry.build_norm), not the plugin's
    assert count_parameters(layer.lowrank_affine) == 2 * module.RANK * (config.class_nc + 128)


def test_lowrank_clade_starts_as_the_identity_modulation(lowrank):
    cls = lowrank[1][0][1]
    config = generator_config("synthetic", "clade")
    cond, _ = conditioning(config)
    scale, shift = cls(32, config).modulation(cond, (8, 8))
    assert (scale == 1).all() and (shift == 0).all()


def norm_parameter_counts(layer_classes: dict, preset: str = "ade20k") -> dict:
    """{kind: (parameters of one 1024-channel layer, of all 18 layers of the generator)}:
    the table in examples/README.md."""
    config = generator_config(preset, "spade")
    widths = [m.mlp_gamma.out_channels for m in build_generator(preset, "spade", device="meta").modules()
              if isinstance(m, SPADE)]
    counts = {}
    for kind, make in layer_classes.items():
        with torch.device("meta"):
            counts[kind] = (count_parameters(make(1024, config)),
                            sum(count_parameters(make(c, config)) for c in widths))
    return counts


def test_readme_parameter_table_is_what_the_layers_give(groupdnet, lowrank):
    counts = norm_parameter_counts({
        "SPADE": lambda c, cfg: SPADE(c, cfg.semantic_nc),
        "CLADE": lambda c, cfg: build_norm(with_options(cfg, norm="clade"), c),
        "GroupDNet-SPADE": groupdnet[1][0][1],
        "CLADE low-rank (r=8)": lowrank[1][0][1],
    })
    readme = (EXAMPLES / "README.md").read_text()
    for kind, (one, total) in counts.items():
        row = re.search(rf"^\| {re.escape(kind)} \| ([\d,]+) \| ([\d,]+) \|", readme, re.M)
        assert row, f"README has no parameter row for {kind}: {counts}"
        assert (int(row[1].replace(",", "")), int(row[2].replace(",", ""))) == (one, total), counts


@pytest.mark.parametrize("name", list(PLUGINS))
def test_plugin_builds_trains_and_probes_in_a_generator(name):
    assert name in load_plugin_file(EXAMPLES / PLUGINS[name])
    assert models.norm_spec(name).source == str((EXAMPLES / PLUGINS[name]).resolve())
    G = build_generator("synthetic", name, ngf=4)
    cond, label = conditioning(G.config)
    G(cond.semantic).mean().backward()
    assert all(p.grad is not None for p in G.parameters())
    stats = capture_modulation_statistics(G, [dict(label=label[:, None], instance=label[:, None])], progress=False)
    assert len(stats.layers) == 18
