"""The ICPE mode a CLADE-ICPE generator was trained with travels with it and decides its inputs.

The official code computes the ICPE maps in mode "official", train.py in mode "corrected"; on
the synthetic scenes the two differ on about 30 % of the pixels, so a generator fed the other
mode's maps runs on inputs it never saw, silently. Each case is one thing a user tried.
"""
import json
import logging

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from analysis.probe import variance as probe
from analysis.context import RunContext
from analysis.stages import eval as eval_stage
from analysis.stages import probe as probe_stage
from data.datasets import build_dataset
from data.icpe import icpe_map, icpe_map_batch
from data.synthetic import SYNTHETIC_DONTCARE, SyntheticScenes
from models import build_generator, load_generator_dir, save_generator_dir
from models.checkpoint import GENERATOR_CONFIG, load_generator
from models.presets import generator_config
from models.release import discover_generators, load_release_generator
from training.trainer import Trainer
from training.recipe import TrainRecipe, discriminator_config_for

SIZE = 32   # synthetic scenes and generators (the smallest output of 5 upsamplings)


def tiny(mode: str | None = None, norm: str = "clade-icpe"):
    return build_generator("synthetic", norm, ngf=4, crop_size=SIZE,
                           **({"icpe_mode": mode} if mode else {})).eval()


def scene_dists(mode: str, count: int, seed: int) -> torch.Tensor:
    scenes = SyntheticScenes(count, size=SIZE, seed=seed, icpe_mode=mode)
    return torch.stack([scenes[i]["dist"] for i in range(count)])


def record_dist(generator) -> list[torch.Tensor]:
    """The ``dist`` input of every forward call of ``generator``."""
    seen = []
    generator.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["dist"]), with_kwargs=True)
    return seen


def test_the_two_modes_differ_on_the_synthetic_scenes():
    official, corrected = scene_dists("official", 4, 0), scene_dists("corrected", 4, 0)
    assert 0.1 < (official != corrected).any(1).float().mean() < 0.5


# -- the mode is recorded with the generator ---------------------------------------------------

@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("mode", ["official", "corrected"])
def test_generator_json_round_trips_the_icpe_mode(tmp_path, mode):
    save_generator_dir(tiny(mode), tmp_path)
    assert json.loads((tmp_path / GENERATOR_CONFIG).read_text())["icpe_mode"] == mode
    assert load_generator_dir(tmp_path).config.icpe_mode == mode


def test_norms_without_icpe_record_no_mode(tmp_path):
    assert generator_config("synthetic", "spade", icpe_mode="official").icpe_mode is None
    save_generator_dir(tiny(norm="clade"), tmp_path)
    assert json.loads((tmp_path / GENERATOR_CONFIG).read_text())["icpe_mode"] is None
    assert generator_config("synthetic", "clade-icpe").icpe_mode == "corrected"   # train.py's


@pytest.mark.reliability("clear_error")
def test_unknown_mode_in_generator_json_is_refused_naming_the_file(tmp_path):
    save_generator_dir(tiny("official"), tmp_path)
    record = json.loads((tmp_path / GENERATOR_CONFIG).read_text())
    (tmp_path / GENERATOR_CONFIG).write_text(json.dumps(record | {"icpe_mode": "exact"}))
    with pytest.raises(ValueError, match=r"generator\.json' is not a valid generator config: "
                                         r"GeneratorConfig\.icpe_mode='exact'; expected one of "
                                         r"\['official', 'corrected'\]") as error:
        load_generator_dir(tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("mode", [None, "official"])
def test_train_cli_records_the_mode_it_trained_with(tmp_path, mode):
    from cli import train
    argv = ["--preset", "synthetic", "--norm", "clade-icpe", "--crop_size", str(SIZE), "--ngf", "4", "--ndf", "8",
            "--n_layers_D", "3", "--batch-size", "2", "--num-samples", "2", "--steps", "1", "--no-vgg", "--no-amp",
            "--num-workers", "0", "--no-progress", "--out", str(tmp_path)] + (["--icpe-mode", mode] if mode else [])
    assert train.main(argv) == 0
    folder = tmp_path / "00001-synthetic-clade-icpe" / "generator"
    assert json.loads((folder / GENERATOR_CONFIG).read_text())["icpe_mode"] == (mode or "corrected")
    assert load_generator_dir(folder).config.icpe_mode == (mode or "corrected")


@pytest.mark.reliability("wrong_run")
def test_generator_json_written_before_the_mode_loads_as_corrected_with_a_warning(tmp_path, caplog):
    save_generator_dir(tiny("corrected"), tmp_path)
    record = json.loads((tmp_path / GENERATOR_CONFIG).read_text())
    del record["icpe_mode"]
    (tmp_path / GENERATOR_CONFIG).write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="models.checkpoint"):
        G = load_generator_dir(tmp_path)
    assert G.config.icpe_mode == "corrected"
    assert "records no 'icpe_mode'" in caplog.text and "assuming 'corrected'" in caplog.text
    assert '"icpe_mode": "official"' in caplog.text   # how to set it


def test_generator_json_of_a_norm_without_icpe_loads_without_a_warning(tmp_path, caplog):
    save_generator_dir(tiny(norm="spade"), tmp_path)
    record = json.loads((tmp_path / GENERATOR_CONFIG).read_text())
    del record["icpe_mode"]
    (tmp_path / GENERATOR_CONFIG).write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="models.checkpoint"):
        assert load_generator_dir(tmp_path).config.icpe_mode is None
    assert "icpe_mode" not in caplog.text


@pytest.mark.reliability("wrong_run")
def test_official_release_folder_loads_in_official_mode_and_says_so(tmp_path, caplog):
    (tmp_path / "ade20k_dist").mkdir()
    torch.save(build_generator("ade20k", "clade-icpe", ngf=2).state_dict(), tmp_path / "ade20k_dist" / "best_net_G.pth")
    with caplog.at_level(logging.INFO, logger="models.release"):
        entry = discover_generators(tmp_path, preset="ade20k")["clade-icpe"]
    assert entry.config.icpe_mode == "official"
    assert load_release_generator(entry).config.icpe_mode == "official"
    assert "ICPE mode official (the official code's)" in caplog.text


def test_bare_official_weights_probed_in_official_mode(tmp_path):
    path = tmp_path / "30_net_G.pth"
    torch.save(tiny().state_dict(), path)
    G = load_generator(path, "synthetic")
    assert G.config.norm == "clade-icpe" and G.config.icpe_mode == "official"


# -- every place a generator runs feeds it maps of its mode -------------------------------------

@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("mode", ["official", "corrected"])
def test_eval_stage_feeds_each_generator_the_maps_of_its_mode(tmp_path, monkeypatch, mode):
    G, other = tiny(mode), tiny("corrected" if mode == "official" else "official")
    ctx = RunContext(out=tmp_path)
    generators = {"g": G, "other": other, "spade": tiny(norm="spade")}
    val = eval_stage.load_samples(ctx, "val", 3, SIZE, icpe_modes=eval_stage.icpe_modes(generators))
    monkeypatch.setattr(eval_stage, "fuse_for_inference", lambda g: g)   # the reference model, hooked
    seen = record_dist(G)
    eval_stage.generate(G, val, 2, "cpu")
    expected = torch.stack([build_dataset("synthetic", None, "val", crop_size=SIZE, seed=ctx.seed, with_dist=True,
                                           icpe_mode=mode)[i]["dist"] for i in range(3)])
    assert torch.equal(torch.cat(seen), expected)
    wrong = val[eval_stage.dist_key("corrected" if mode == "official" else "official")]
    assert not torch.equal(torch.cat(seen), wrong)


def test_eval_samples_without_the_generators_mode_are_refused(tmp_path):
    val = eval_stage.load_samples(RunContext(out=tmp_path), "val", 2, SIZE, icpe_modes=["corrected"])
    with pytest.raises(ValueError, match=r"modes \['corrected'\], but this CLADE-ICPE generator was trained "
                                         r"with mode 'official'"):
        eval_stage.generate(tiny("official"), val, 2, "cpu")


@pytest.mark.reliability("wrong_run")
def test_probe_stage_feeds_the_maps_of_the_generators_mode(tmp_path):
    G = tiny("official")
    batches, _, stand_in = probe_stage.probe_batches(RunContext(out=tmp_path), G.config, 3, 2)
    seen = record_dist(G)
    probe.capture_modulation_statistics(G, batches, progress=False)
    assert not stand_in
    val = RunContext(out=tmp_path).val_split
    official = torch.stack([item["dist"] for item in val(3, SIZE, with_dist=True, icpe_mode="official")])
    corrected = torch.stack([item["dist"] for item in val(3, SIZE, with_dist=True, icpe_mode="corrected")])
    assert torch.equal(torch.cat(seen), official) and not torch.equal(torch.cat(seen), corrected)


@pytest.mark.reliability("wrong_run")
def test_probe_stand_in_maps_are_computed_in_the_generators_mode(tmp_path):
    config = generator_config("ade20k", "clade-icpe", ngf=2, crop_size=SIZE, icpe_mode="official")
    batches, _, stand_in = probe_stage.probe_batches(RunContext(out=tmp_path), config, 2, 2)
    assert stand_in
    label = batches[0]["label"][:, 0]
    assert torch.equal(batches[0]["dist"], icpe_map_batch(label, mode="official"))


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("mode", ["official", "corrected"])
def test_maps_computed_for_a_batch_without_them_are_in_the_generators_mode(mode):
    scenes = SyntheticScenes(2, size=SIZE, with_dist=True, icpe_mode=mode)
    batch = next(iter(DataLoader(scenes, batch_size=2)))
    _, dist = probe.prepare_inputs({"label": batch["label"], "instance": batch["instance"]}, tiny(mode).config)
    assert torch.equal(dist, batch["dist"])


def test_icpe_map_and_icpe_map_batch_have_no_default_mode():
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="mode"):
        icpe_map_batch(label)
    with pytest.raises(TypeError, match="mode"):
        icpe_map(label[0])
    assert icpe_map(label[0].numpy(), mode="corrected", dontcare=SYNTHETIC_DONTCARE).shape == (2, 4, 4)


# -- data built in the other mode is refused ----------------------------------------------------

@pytest.mark.reliability("wrong_run")
def test_probe_of_a_dataloader_in_the_other_mode_is_refused():
    loader = DataLoader(Subset(SyntheticScenes(2, size=SIZE, icpe_mode="corrected"), range(2)), batch_size=2)
    with pytest.raises(ValueError, match=r"holds ICPE maps computed in mode 'corrected', but this CLADE-ICPE "
                                         r"generator was trained with mode 'official'") as error:
        probe.capture_modulation_statistics(tiny("official"), loader, progress=False)
    assert "\n" not in str(error.value)


@pytest.mark.reliability("wrong_run")
def test_batch_naming_the_other_mode_is_refused():
    batch = next(iter(DataLoader(SyntheticScenes(2, size=SIZE, icpe_mode="official"), batch_size=2)))
    with pytest.raises(ValueError, match=r"mode 'official'.*trained with mode 'corrected'"):
        probe.prepare_inputs(batch | {"icpe_mode": ["official", "official"]}, tiny("corrected").config)


@pytest.mark.reliability("wrong_run")
def test_training_on_data_of_the_other_mode_is_refused():
    config = generator_config("synthetic", "clade-icpe", ngf=4, crop_size=SIZE, icpe_mode="official")
    trainer = Trainer(g_config=config, d_config=discriminator_config_for(config, ndf=8, n_layers_D=3),
                      recipe=TrainRecipe(use_vgg=False, batch_size=1))
    with pytest.raises(ValueError, match=r"the training data holds ICPE maps computed in mode 'corrected'"):
        trainer.fit(SyntheticScenes(2, size=SIZE, icpe_mode="corrected"), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"built without ICPE maps \(with_dist=False"):
        trainer.fit(SyntheticScenes(2, size=SIZE, with_dist=False, icpe_mode="official"), steps=1, progress=False)
    assert trainer.step == 0
