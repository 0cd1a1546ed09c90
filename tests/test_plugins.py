"""Plugins: a user's file registering a norm, loaded by path, recorded in checkpoints, and every
generic piece (options, probe, costs) working for a layer the toolkit does not know."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from cli import run_analysis
from cli import train
from analysis.probe import variance as probe
from analysis.probe import ablation as probe_ablation
from analysis.costs.layers import layer_costs, module_roles
from models import build_generator, load_generator_dir, norm_spec, registered_norms, save_generator_dir, unregister_norm
from models.checkpoint import GENERATOR_CONFIG, PLUGIN_FILE_KEY
from models.plugins import load_plugin, load_plugins, loaded_plugins, plugin_files, split_plugin_args

LAYER = """
import torch
from torch import nn
from models import ModulatedNorm, register_norm
from models.norms import param_free_norm


class {cls}(ModulatedNorm):
    def __init__(self, channels, config):
        super().__init__()
        self.param_free_norm = param_free_norm(config.param_free_norm, channels)
        self.table = nn.Parameter(torch.randn(config.class_nc, channels))

    def modulation(self, cond, size):
        {body}


register_norm("{name}", {cls}, label="{cls}", class_adaptive=True, key_markers=("table",))
"""
PER_PIXEL = "return 1 + self.table[cond.label_at(size)].permute(0, 3, 1, 2), torch.zeros(())"
PER_CHANNEL = "return 1 + self.table.mean(0)[None, :, None, None], 0.5"


@pytest.fixture
def plugin_file(tmp_path):
    """Writes a plugin file registering ``name``; unregisters every name afterwards."""
    names = []

    def write(name, body=PER_PIXEL, cls="TestNorm", folder=tmp_path):
        path = folder / f"{name.replace('-', '_')}.py"
        path.write_text(LAYER.format(name=name, cls=cls, body=body))
        names.append(name)
        return path

    yield write
    for name in names:
        if name in registered_norms():
            unregister_norm(name)


def test_load_plugin_registers_its_norms_once_and_records_the_file(plugin_file):
    path = plugin_file("test-table-norm")
    assert load_plugin(path) == ("test-table-norm",)
    assert load_plugin(path) == ("test-table-norm",)  # the command line may repeat a file
    assert norm_spec("test-table-norm").source == str(path.resolve())
    assert loaded_plugins()[str(path.resolve())] == ("test-table-norm",)
    assert plugin_files(["spade", "test-table-norm", "test-table-norm"]) == [str(path.resolve())]
    G = build_generator("synthetic", "test-table-norm", ngf=4, crop_size=32)
    assert G(torch.zeros(2, G.config.semantic_nc, 32, 32)).shape == (2, 3, 32, 32)


def test_bad_plugin_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; expected a Python file"):
        load_plugin(tmp_path / "missing.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="registered no norm"):
        load_plugin(tmp_path / "empty.py")
    (tmp_path / "norm.txt").write_text("")
    with pytest.raises(ValueError, match="is not a .py file"):
        load_plugin(tmp_path / "norm.txt")


def test_plugin_args_are_split_from_the_command_line():
    argv = ["--quick", "--plugin", "a.py", "--plugin=b.py", "--train-norms", "spade,x"]
    assert split_plugin_args(argv) == (["a.py", "b.py"], ["--quick", "--train-norms", "spade,x"])
    with pytest.raises(SystemExit, match="--plugin expects a file"):
        split_plugin_args(["--plugin"])


def test_generator_folder_names_the_plugin_needed_to_load_it(plugin_file, tmp_path):
    path = plugin_file("test-folder-norm")
    load_plugins([path])
    folder = save_generator_dir(build_generator("synthetic", "test-folder-norm", ngf=4), tmp_path / "gen")
    assert json.loads((folder / GENERATOR_CONFIG).read_text())[PLUGIN_FILE_KEY] == str(path.resolve())
    assert load_generator_dir(folder).config.norm == "test-folder-norm"
    unregister_norm("test-folder-norm")
    with pytest.raises(ValueError, match=rf"not loaded\. Loading a plugin runs its Python code: only if you trust that file, pass --plugin {path.resolve()}"):
        load_generator_dir(folder)
    # built-in norms record no plugin
    plain = save_generator_dir(build_generator("synthetic", "clade", ngf=4), tmp_path / "clade")
    assert PLUGIN_FILE_KEY not in json.loads((plain / GENERATOR_CONFIG).read_text())


def test_run_analysis_options_accept_plugin_names_and_comma_lists(plugin_file):
    path = plugin_file("test-cli-norm")
    argv = ["--plugin", str(path), "--train-norms", "spade,clade", "test-cli-norm"]
    load_plugins(split_plugin_args(argv)[0])
    ctx = run_analysis.context_from_args(run_analysis.parse_args(argv))
    assert ctx.train.norms == ("spade", "clade", "test-cli-norm")
    assert "test-cli-norm" in ctx.costs.norms and "test-cli-norm" in ctx.bench.norms


def test_train_py_takes_plugins(plugin_file, capsys):
    path = plugin_file("test-train-norm")
    assert train.main(["--plugin", str(path), "--norm", "test-train-norm", "--steps", "1", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["norm"] == "test-train-norm"


@pytest.mark.parametrize("body", [PER_PIXEL, PER_CHANNEL])
def test_probe_and_ablation_work_for_any_modulation_shape(plugin_file, body):
    name = "test-probe-pixel" if body == PER_PIXEL else "test-probe-channel"
    load_plugin(plugin_file(name, body))
    G = build_generator("synthetic", name, ngf=4, crop_size=32).eval()
    label = torch.randint(0, G.config.class_nc, (2, 1, 32, 32))
    batches = [dict(label=label, instance=label)]
    stats = probe.capture_modulation_statistics(G, batches, basis="linear", progress=False)
    assert len(stats.layers) == len(probe.modulation_layers(G))
    first = next(iter(stats.layers.values()))
    assert first.channels == G.head_0.norm_0.table.shape[1] and first.count.sum() == 2 * first.resolution[0] * first.resolution[1]
    # the class-mean ablation of a class-only layer is the layer itself
    effects = probe_ablation.ablation_effects(G, stats, batches, per_layer=False, progress=False)
    assert effects.loc[0, "max_abs_diff"] < 1e-4
    channels = probe.variance_decomposition(stats)
    assert channels.semantic_ratio.notna().any() if body == PER_PIXEL else (channels.total_variance < 1e-12).all()


def test_probe_refuses_layers_that_bypass_modulation_or_return_bad_shapes(plugin_file):
    bad = "return torch.ones(3), torch.zeros(3)"
    load_plugin(plugin_file("test-probe-bad", bad, cls="BadNorm"))
    G = build_generator("synthetic", "test-probe-bad", ngf=4, crop_size=32)
    label = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    with pytest.raises(ValueError, match=r"head_0.norm_0 \(BadNorm\): modulation\(cond, size\) returned scale"):
        probe.capture_modulation_statistics(G, [dict(label=label, instance=label)], progress=False)

    load_plugin(plugin_file("test-probe-own-forward", cls="OwnForward"))
    G = build_generator("synthetic", "test-probe-own-forward", ngf=4, crop_size=32)
    for m in probe.modulation_layers(G).values():
        m.forward = lambda x, cond, m=m: m.param_free_norm(x)  # never asks modulation
    with pytest.raises(ValueError, match="never called modulation"):
        probe.capture_modulation_statistics(G, [dict(label=label, instance=label)], progress=False)


def test_cost_roles_put_a_plugin_layer_s_own_modules_under_modulation(plugin_file):
    load_plugin(plugin_file("test-cost-norm"))
    G = build_generator("synthetic", "test-cost-norm", ngf=4, crop_size=32)
    roles = module_roles(G)
    assert roles["head_0.norm_0"] == "modulation_apply" and roles["head_0.norm_0.param_free_norm"] == "modulation_norm"
    assert roles["head_0.conv_0"] == "backbone"
    table = layer_costs(G, (torch.zeros(1, G.config.semantic_nc, 32, 32),))
    norm_params = sum(m.table.numel() for m in probe.modulation_layers(G).values())
    assert table[table.role.str.startswith("modulation")].params.sum() == norm_params


def test_example_plugins_load_by_path_from_the_command_line():
    examples = Path(__file__).resolve().parents[1] / "examples"
    argv = ["--plugin", str(examples / "lowrank_clade.py"), "--plugin", str(examples / "groupdnet_spade.py")]
    assert load_plugins(split_plugin_args(argv)[0]) == ("lowrank-clade", "groupdnet-spade")
    assert norm_spec("lowrank-clade").source == str(examples / "lowrank_clade.py")


@pytest.fixture
def groupdnet_plugin():
    """examples/groupdnet_spade.py, loaded as --plugin loads it; unregistered afterwards."""
    path = Path(__file__).resolve().parents[1] / "examples" / "groupdnet_spade.py"
    yield path
    if "groupdnet-spade" in registered_norms():
        unregister_norm("groupdnet-spade")


def test_a_plugin_layers_bare_weights_are_probed_and_converted(groupdnet_plugin, tmp_path):
    load_plugin(groupdnet_plugin)
    G = build_generator("synthetic", "groupdnet-spade", ngf=4)
    # a bare official-style file (DataParallel prefix, no generator.json): everything read from its keys
    torch.save({"module." + k: v for k, v in G.state_dict().items()}, tmp_path / "30_net_G.pth")
    common = ["--plugin", str(groupdnet_plugin), "--checkpoint", f"mine={tmp_path / '30_net_G.pth'}", "--quick",
              "--device", "cpu", "--out", str(tmp_path / "out")]
    assert run_analysis.main(["probe", *common, "--probe-checkpoint-images", "2"]) == 0
    layers = pd.read_csv(tmp_path / "out" / "tables" / "probe_layers.csv")
    assert set(layers.model) == {"mine"} and layers.semantic_ratio.notna().any()
    assert run_analysis.main(["convert", *common, "--convert-images", "2", "--convert-finetune-steps", "0"]) == 0
    converted = load_generator_dir(tmp_path / "out" / "checkpoints" / "spade-to-clade")
    assert converted.config.norm == "clade" and converted.config.ngf == 4
    record = json.loads((tmp_path / "out" / "stages" / "convert.json").read_text())
    assert record["source"] == str(tmp_path / "30_net_G.pth")


def test_a_plugin_layer_s_parts_are_its_own_cost_roles_even_with_spade_s_names(groupdnet_plugin):
    load_plugin(groupdnet_plugin)
    G = build_generator("synthetic", "groupdnet-spade", ngf=4, crop_size=32)
    roles = module_roles(G)
    # GroupDNet's shared conv is named like SPADE's, but it is the plugin's part, not SPADE's
    assert {roles[f"head_0.norm_0.{part}"] for part in ("mlp_shared", "mlp_shared.0", "group_gamma",
                                                          "group_beta")} == {"modulation_plugin"}
    assert module_roles(build_generator("synthetic", "spade", ngf=4, crop_size=32))["head_0.norm_0.mlp_shared"] \
        == "modulation_spade_shared"


def test_the_toolkit_appends_the_edge_channel_of_a_plugin_layer_that_asks_for_it(tmp_path):
    path = Path(__file__).resolve().parents[1] / "examples" / "lowrank_clade.py"
    load_plugin(path)
    try:
        G = build_generator("synthetic", "lowrank-clade", ngf=4, crop_size=32)   # synthetic: instance maps
        assert not G.config.no_instance and G.head_0.conv_0.in_channels == G.head_0.conv_0.out_channels + 1
        layer = G.head_0.norm_0
        assert list(dict(layer.named_children())) == ["param_free_norm", "lowrank_affine", "inst_conv"]
        assert module_roles(G)["head_0.norm_0.inst_conv"] == "modulation_edge"
        semantic = torch.zeros(1, G.config.semantic_nc, 32, 32)
        semantic[:, 0] = 1
        semantic[:, -1, :, 16:] = 1   # an instance edge on the right half
        out = G.eval()(semantic)
        assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    finally:
        unregister_norm("lowrank-clade")
