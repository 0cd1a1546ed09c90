"""SPADE to CLADE conversion: exact equality with the class-mean ablation, key layout, files."""
import json
import logging

import pytest
import torch

from cli import run_analysis
from analysis.context import RunContext
from analysis.probe.convert import (clade_from_statistics, first_images, load_spade_generator, spade_to_clade,
                              unseen_classes, write_clade_dir)
from analysis.probe.variance import capture_modulation_statistics, modulation_layers, prepare_inputs
from analysis.probe.ablation import ablate
from analysis.stages import convert as convert_stage
from models import build_generator, load_generator_dir, load_official_checkpoint, save_generator_dir
from models.checkpoint import save_state_dict_atomic

# Official presets at a reduced width and crop: the same state_dict keys as the official
# networks (layout set by label_nc, dontcare, instances and upsampling depth), smaller shapes.
CONFIGS = {
    "synthetic": ("synthetic", dict(ngf=16)),                    # the long budget's width
    "ade20k-small": ("ade20k", dict(ngf=8, crop_size=64)),       # no instance maps
    "cityscapes-small": ("cityscapes", dict(ngf=8, crop_size=128)),  # instances, 'more', 2:1
    "coco-stuff-small": ("coco-stuff", dict(ngf=8, crop_size=64)),   # instances and dontcare
}


def label_batches(config, count, batch=2, seed=0, block=8, classes=None):
    """Blocky random label maps (classes drawn from ``classes``, default all) with instances."""
    g = torch.Generator().manual_seed(seed)
    h, w = config.output_size
    pool = torch.arange(config.class_nc) if classes is None else torch.as_tensor(classes)
    out = []
    for _ in range(count):
        label = pool[torch.randint(0, len(pool), (batch, 1, h // block, w // block), generator=g)]
        label = label.repeat_interleave(block, 2).repeat_interleave(block, 3)
        instance = label * 4 + torch.randint(0, 4, label.shape, generator=g)
        out.append(dict(label=label, instance=instance))
    return out


def trained_like_spade(preset, batch=2, **options):
    """A SPADE generator whose modulation matters and whose BatchNorm running statistics are
    those of real activations (running stats of an untrained net saturate the tanh in eval)."""
    G = build_generator(preset, "spade", **options)
    for m in modulation_layers(G).values():
        for conv in (m.mlp_shared[0], m.mlp_gamma, m.mlp_beta):
            torch.nn.init.normal_(conv.weight, std=0.05)
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: the running stats become this batch's
    semantic, _ = prepare_inputs(label_batches(G.config, 1, batch, seed=99)[0], G.config)
    with torch.no_grad():
        G.train()(semantic)
    for m in norms:
        m.momentum = 0.1
    return G.eval()


def converted_and_ablated(G, stats, batch):
    semantic, dist = prepare_inputs(batch, G.config)
    clade = clade_from_statistics(G, stats).eval()
    with torch.no_grad():
        plain = G(semantic)
        with ablate(G, stats, kind="class_mean"):
            ablated = G(semantic)
        converted = clade(semantic)
    return clade, plain, ablated, converted


@pytest.mark.parametrize("name", list(CONFIGS))
def test_converted_clade_equals_spade_under_the_class_mean_ablation(name):
    preset, options = CONFIGS[name]
    G = trained_like_spade(preset, **options)
    stats = capture_modulation_statistics(G, label_batches(G.config, 2), basis="linear", progress=False)
    clade, plain, ablated, converted = converted_and_ablated(G, stats, label_batches(G.config, 1, seed=1)[0])
    assert (converted - ablated).abs().max() <= 1e-5
    # the comparison means something: outputs not saturated, and the ablation changes SPADE
    assert (converted.abs() < 0.99).float().mean() > 0.5
    assert (plain - ablated).abs().mean() > 1e-3
    # the key layout of the official CLADE network of this preset, shapes of these options
    official = build_generator(preset, "clade", device="meta")
    assert list(clade.state_dict()) == list(official.state_dict())
    expected = build_generator(preset, "clade", device="meta", **options).state_dict()
    assert {k: v.shape for k, v in clade.state_dict().items()} == {k: v.shape for k, v in expected.items()}


def test_edge_channel_weights_are_zero_and_keep_sigma_in_eval_and_training():
    G = trained_like_spade("synthetic", ngf=8)
    stats = capture_modulation_statistics(G, label_batches(G.config, 1), basis="linear", progress=False)
    clade = clade_from_statistics(G, stats)
    spade_conv, clade_conv = G.up_0.conv_0, clade.up_0.conv_0
    assert clade_conv.weight_orig.shape[1] == spade_conv.weight_orig.shape[1] + 1
    assert (clade_conv.weight_orig[:, -1] == 0).all()
    assert (clade_conv.weight_v[-9:] == 0).all()  # the appended channel's 3x3 taps
    assert (clade.up_0.norm_0.inst_conv.weight != 0).any()  # left trainable, not a zero saddle
    x = torch.randn(2, spade_conv.in_channels, 8, 8)
    x_edge = torch.cat((x, torch.randn(2, 1, 8, 8)), 1)
    for training in (False, True):  # eval: stored u, v; training: one power iteration each
        spade_conv.train(training), clade_conv.train(training)
        with torch.no_grad():
            torch.testing.assert_close(clade_conv(x_edge), spade_conv(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clade_conv.weight_u, spade_conv.weight_u)


def test_classes_never_seen_get_the_overall_mean_and_a_warning(caplog):
    G = trained_like_spade("synthetic", ngf=8)
    seen = [0, 1, 2, 4, 5, 6, 7, 8]  # class 3 never appears
    stats = capture_modulation_statistics(G, label_batches(G.config, 2, classes=seen), basis="linear",
                                          progress=False)
    unseen = unseen_classes(stats)  # others may be lost at the 2x2 head only
    assert len(unseen[3]) == 18 and all(len(layers) < 18 for k, layers in unseen.items() if k != 3)
    with caplog.at_level(logging.WARNING, logger="analysis.probe.convert"):
        clade = clade_from_statistics(G, stats)
    assert "absent from every layer: [3]" in caplog.text
    layer = stats.layers["head_0.norm_0"]
    table = clade.head_0.norm_0.class_specified_affine
    torch.testing.assert_close(table.weight[3], layer.overall_mean("gamma").float())
    torch.testing.assert_close(table.bias[3], layer.overall_mean("beta").float())
    torch.testing.assert_close(table.weight[0], layer.class_means("gamma")[0].float())
    # a map that does contain class 3: still exactly the ablation (which uses the same mean)
    _, _, ablated, converted = converted_and_ablated(G, stats, label_batches(G.config, 1, seed=3)[0])
    assert (converted - ablated).abs().max() <= 1e-5


def test_spade_to_clade_uses_the_first_n_label_maps():
    G = trained_like_spade("synthetic", ngf=8)
    batches = label_batches(G.config, 3)
    assert [len(b["label"]) for b in first_images(batches, 3)] == [2, 1]
    clade = spade_to_clade(G, batches, images=3)
    three = [batches[0], {k: v[:1] for k, v in batches[1].items()}]
    expected = clade_from_statistics(G, capture_modulation_statistics(G, three, basis="linear", progress=False))
    def learned(state):  # inst_conv keeps a fresh random initialisation
        return {k: v for k, v in state.items() if ".inst_conv." not in k}
    torch.testing.assert_close(learned(clade.state_dict()), learned(expected.state_dict()))
    with pytest.raises(ValueError, match="at least 1"):
        list(first_images(batches, 0))


def test_written_folder_loads_as_official_clade(tmp_path):
    G = trained_like_spade("synthetic", ngf=8)
    out = write_clade_dir(G, label_batches(G.config, 2), tmp_path / "spade-to-clade", images=3,
                          source="spade/latest_net_G.pth")
    loaded = load_generator_dir(out)
    assert loaded.config.norm == "clade" and loaded.config.ngf == 8
    load_official_checkpoint(build_generator("synthetic", "clade", ngf=8), out / "latest_net_G.pth")
    record = json.loads((out / "conversion.json").read_text())
    assert record["images"] == 3 and record["layers"] == 18 and record["source"] == "spade/latest_net_G.pth"
    semantic, _ = prepare_inputs(label_batches(G.config, 1, seed=4)[0], G.config)
    stats = capture_modulation_statistics(G, first_images(label_batches(G.config, 2), 3), basis="linear",
                                          progress=False)
    with torch.no_grad(), ablate(G, stats):
        assert (loaded.eval()(semantic) - G(semantic)).abs().max() <= 1e-5


def test_spade_loads_from_a_folder_or_an_official_file(tmp_path):
    G = build_generator("synthetic", "spade", ngf=8)
    save_generator_dir(G, tmp_path / "run")
    save_state_dict_atomic({"module." + k: v for k, v in G.state_dict().items()}, tmp_path / "official.pth")
    for loaded in (load_spade_generator(tmp_path / "run"),
                   load_spade_generator(tmp_path / "run" / "latest_net_G.pth"),
                   load_spade_generator(tmp_path / "official.pth", preset="synthetic")):  # ngf from the keys
        torch.testing.assert_close(loaded.state_dict(), G.state_dict())
    with pytest.raises(ValueError, match="has no generator.json beside it; pass the preset"):
        load_spade_generator(tmp_path / "official.pth")
    save_generator_dir(build_generator("synthetic", "clade", ngf=8), tmp_path / "clade")
    with pytest.raises(ValueError, match="depends on the class only .* expects a spatially-adaptive one"):
        load_spade_generator(tmp_path / "clade")


def test_convert_command_writes_the_converted_and_the_finetuned_generator(tmp_path):
    spade = trained_like_spade("synthetic", ngf=4, crop_size=32)
    save_generator_dir(spade, tmp_path / "spade")
    out = tmp_path / "run"
    argv = ["convert", "--checkpoint", str(tmp_path / "spade"), "--out", str(out), "--quick", "--device", "cpu",
            "--convert-images", "6", "--convert-finetune-steps", "2", "--train-batch-size", "2"]
    assert run_analysis.main(argv) == 0
    converted = load_generator_dir(out / "checkpoints" / "spade-to-clade")
    finetuned = load_generator_dir(out / "checkpoints" / "spade-to-clade-ft")
    assert converted.config.norm == finetuned.config.norm == "clade" and converted.config.ngf == 4
    load_official_checkpoint(build_generator("synthetic", "clade", ngf=4, crop_size=32),
                             out / "checkpoints" / "spade-to-clade" / "latest_net_G.pth")
    assert json.loads((out / "checkpoints" / "spade-to-clade" / "conversion.json").read_text())["images"] == 6
    changed = [k for k, v in converted.state_dict().items() if not torch.equal(v, finetuned.state_dict()[k])]
    assert any("class_specified_affine" in k for k in changed)  # fine-tuning moved the tables
    record = json.loads((out / "stages" / "convert.json").read_text())
    assert record["options"]["finetune_steps"] == 2 and len(record["checkpoints"]) == 2
    table = (out / "tables" / "conversion.csv").read_text()
    assert "spade-to-clade-ft" in table


def test_convert_stage_without_a_spade_generator_is_skipped(tmp_path):
    argv = ["convert", "--out", str(tmp_path), "--quick", "--device", "cpu"]
    assert run_analysis.main(argv) == 0
    assert "no SPADE generator" in json.loads((tmp_path / "stages" / "convert.json").read_text())["skipped"]


def test_convert_stage_writes_nothing_into_a_checkpoints_folder_given_by_the_user(tmp_path):
    save_generator_dir(build_generator("synthetic", "spade", ngf=4, crop_size=32), tmp_path / "mine" / "spade")
    ctx = RunContext(out=tmp_path / "run", checkpoints=tmp_path / "mine", quick=True)
    record = convert_stage.run(ctx).record()
    assert "left as it is" in record["skipped"] and record["notes"]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["spade"]


def test_convert_command_refuses_to_finetune_without_the_dataset_before_converting(tmp_path):
    save_state_dict_atomic(build_generator("ade20k", "spade", ngf=2, crop_size=32).state_dict(),
                           tmp_path / "latest_net_G.pth")
    argv = ["convert", "--checkpoint", str(tmp_path / "latest_net_G.pth"), "--preset", "ade20k",
            "--out", str(tmp_path / "run"), "--quick", "--device", "cpu"]
    with pytest.raises(SystemExit, match="ade20k without --dataroot: the ade20k preset .* needs its dataset"):
        run_analysis.main(argv)
    assert not (tmp_path / "run" / "checkpoints" / "spade-to-clade").exists()


def test_bad_inputs_are_explained():
    G = build_generator("synthetic", "spade", ngf=4)
    stats = capture_modulation_statistics(G, label_batches(G.config, 1), basis="linear", progress=False)
    del stats.layers["up_3.norm_1"]
    with pytest.raises(ValueError, match=r"lack the SPADE layers \['up_3.norm_1'\]"):
        clade_from_statistics(G, stats)
    with pytest.raises(ValueError, match="depends on the class only"):
        clade_from_statistics(build_generator("synthetic", "clade", ngf=4), stats)


REFERENCE_NAMES = {"ade20k": "ade20k", "coco-stuff": "coco"}  # ../shared/reference/state_dict_keys


@pytest.fixture(scope="module", params=sorted(REFERENCE_NAMES))
def official_size_conversion(request):
    """(preset, converted CLADE, plain SPADE, SPADE under the class-mean ablation, converted output)
    for the full official network (ngf 64, 256x256) at batch 1 on the CPU: about 80 s each."""
    G = trained_like_spade(request.param, batch=1)
    stats = capture_modulation_statistics(G, label_batches(G.config, 1, batch=1, block=16), basis="linear",
                                          progress=False)
    batch = label_batches(G.config, 1, batch=1, seed=1, block=16)[0]
    return (request.param, *converted_and_ablated(G, stats, batch))


@pytest.mark.slow
def test_official_size_conversion_is_exact(official_size_conversion):
    _, _, plain, ablated, converted = official_size_conversion
    assert (converted - ablated).abs().max() <= 1e-5
    assert (plain - ablated).abs().mean() > 1e-3


@pytest.mark.slow
def test_official_size_conversion_has_the_official_clade_keys(official_size_conversion, reference_dir):
    preset, clade, *_ = official_size_conversion
    path = reference_dir / "state_dict_keys" / f"G_{REFERENCE_NAMES[preset]}_clade.json"
    reference = json.loads(path.read_text())
    assert {k: list(v.shape) for k, v in clade.state_dict().items()} == \
        {k["key"]: k["shape"] for k in reference["keys"]}
