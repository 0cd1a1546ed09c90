"""Reliability of weights as they reach the toolkit: non-finite values, generator folders whose
generator.json does not describe the weights file, and the messages those files get.

Each test is one thing a careful user tried with a broken or foreign weights file.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import models.checkpoint as checkpoint
from cli import run_analysis
from fileio import NonFiniteWeightsError, load_weights, write_json_atomic
from models import build_generator, load_generator_dir, load_official_checkpoint, save_generator_dir
from models.checkpoint import CheckpointMismatchError
from tests.reliability.test_cli import _fails, fake_stages  # noqa: F401 (a fixture)
from tests.training.test_trainer import TinyScenes, tiny_trainer

TINY = dict(ngf=4, crop_size=32)   # the synthetic preset at a size the tests build in milliseconds


def _spade_folder(path, poison=None, value=float("nan")):
    """A synthetic-preset SPADE generator folder; ``poison`` names a state_dict entry filled with ``value``."""
    generator = build_generator("synthetic", "spade", **TINY)
    save_generator_dir(generator, path)
    if poison is not None:
        state = torch.load(path / "latest_net_G.pth", weights_only=True)
        state[poison] = torch.full_like(state[poison], value)
        torch.save(state, path / "latest_net_G.pth")
    return path


# -- non-finite weights never become results -----------------------------------------------------

@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("key, value", [("conv_img.weight", float("nan")),
                                        ("head_0.norm_0.param_free_norm.running_var", float("inf"))],
                         ids=["nan-parameter", "inf-buffer"])
def test_generator_folder_with_non_finite_weights_is_refused_naming_file_and_tensor(tmp_path, key, value):
    """A generator folder whose latest_net_G.pth holds NaN (a parameter) or inf (a BatchNorm buffer)."""
    folder = tmp_path / "nan_spade"
    try:
        _spade_folder(folder, poison=key, value=value)
    except KeyError:
        pytest.skip(f"{key} is not in the synthetic SPADE generator")
    with pytest.raises(NonFiniteWeightsError, match=rf"nan_spade/latest_net_G\.pth' holds NaN or inf values in "
                                                    rf"1 tensor\(s\) \({key}\)"):
        load_generator_dir(folder)


@pytest.mark.reliability("wrong_run")
def test_bare_pth_with_nan_is_refused_naming_the_file(tmp_path):
    """A bare official-format .pth with NaN weights, loaded into a built generator."""
    state = build_generator("synthetic", "clade", **TINY).state_dict()
    state["conv_img.bias"][0] = float("nan")
    torch.save(state, tmp_path / "30_net_G.pth")
    with pytest.raises(NonFiniteWeightsError, match=r"30_net_G\.pth' holds NaN or inf .*\(conv_img\.bias\)"):
        load_official_checkpoint(build_generator("synthetic", "clade", **TINY), tmp_path / "30_net_G.pth")
    with pytest.raises(NonFiniteWeightsError, match=r"checkpoint 'mine\.pth' holds NaN"):
        load_official_checkpoint(build_generator("synthetic", "clade", **TINY), state, source="mine.pth")


@pytest.mark.reliability("wrong_run")
def test_probe_of_a_nan_generator_fails_without_a_record(tmp_path, capsys):
    """run_analysis.py probe --checkpoint nan_spade: exited 0 with a 'perfect' ablation row of inf."""
    folder = _spade_folder(tmp_path / "nan_spade", poison="conv_img.weight")
    message = _fails(["probe", "--checkpoint", str(folder), "--out", str(tmp_path / "out"), "--quick"], capsys)
    assert "nan_spade/latest_net_G.pth" in message and "conv_img.weight" in message, message
    assert not (tmp_path / "out" / "stages" / "probe.json").exists()
    assert not list((tmp_path / "out").rglob("probe_ablation.csv"))


@pytest.mark.reliability("wrong_run")
def test_convert_of_a_nan_spade_writes_no_clade_folder(tmp_path, capsys):
    """run_analysis.py convert --checkpoint nan_spade --convert-finetune-steps 0: wrote an all-NaN CLADE folder."""
    folder = _spade_folder(tmp_path / "nan_spade", poison="head_0.norm_0.mlp_shared.0.weight")
    message = _fails(["convert", "--checkpoint", str(folder), "--convert-finetune-steps", "0",
                      "--out", str(tmp_path / "out"), "--quick"], capsys)
    assert "nan_spade/latest_net_G.pth" in message and "mlp_shared.0.weight" in message, message
    assert not list((tmp_path / "out").rglob("latest_net_G.pth"))


@pytest.mark.reliability("wrong_run")
def test_a_generator_with_nan_weights_is_never_saved(tmp_path):
    """A conversion or fine-tune that produced NaN weights: saving it refuses and writes nothing."""
    generator = build_generator("synthetic", "clade", **TINY)
    with torch.no_grad():
        generator.conv_img.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match=r"generator to be saved in '.*out' holds NaN or inf .*"
                                                    r"conv_img\.weight"):
        save_generator_dir(generator, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.reliability("wrong_run")
def test_resume_from_a_checkpoint_with_nan_is_refused_naming_the_tensor(tmp_path):
    """train.py --resume of a run whose checkpoint.pt holds NaN in the discriminator (and an Adam moment)."""
    tiny_trainer("clade").fit(TinyScenes(), steps=1, out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    key = next(iter(state["D"]))
    state["D"][key] = torch.full_like(state["D"][key], float("nan"))
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = tiny_trainer("clade")
    with pytest.raises(NonFiniteWeightsError, match=rf"checkpoint '.*checkpoint\.pt' holds NaN .*\(D\.{key}\)"):
        resumed.load_checkpoint(tmp_path / "checkpoint.pt")
    assert resumed.step == 0


@pytest.mark.reliability("wrong_run")
def test_weights_file_with_inf_is_refused_by_load_weights(tmp_path):
    """VGG19 / FID Inception weights (read by fileio.load_weights) holding inf."""
    torch.save({"features.0.weight": torch.tensor([1.0, math.inf])}, tmp_path / "vgg.pth")
    with pytest.raises(NonFiniteWeightsError, match=r"VGG19 weights '.*vgg\.pth' holds NaN or inf values in 1 "
                                                    r"tensor\(s\) \(features\.0\.weight\)"):
        load_weights(tmp_path / "vgg.pth", what="VGG19 weights", expected="expected VGG19")


@pytest.mark.reliability("wrong_run")
def test_json_records_never_hold_nan_or_infinity(tmp_path):
    """A stage record with a NaN statistic was written with the bare token NaN (invalid JSON)."""
    record = {"a": float("nan"), "b": [1.5, float("inf"), np.float32("nan"), np.float64(-np.inf)],
              "c": {"d": torch.tensor(float("nan")), "e": np.float32(2.5), "f": 3, "g": "nan"}, "h": (np.int64(4),)}
    path = write_json_atomic(tmp_path / "r.json", record)

    def invalid(token):
        raise AssertionError(f"invalid JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=invalid) == {
        "a": None, "b": [1.5, None, None, None], "c": {"d": None, "e": 2.5, "f": 3, "g": "nan"}, "h": [4]}


# -- generator.json is checked against the weights file -------------------------------------------

@pytest.mark.reliability("clear_error")
def test_generator_json_larger_than_its_weights_allocates_nothing(tmp_path, monkeypatch):
    """generator.json with ngf 4096 beside a small weights file allocated 154 GB before looking at the file."""
    folder = _spade_folder(tmp_path / "shared")
    record = json.loads((folder / "generator.json").read_text())
    (folder / "generator.json").write_text(json.dumps(record | {"ngf": 4096}))
    real_build = checkpoint.build_generator_from_config

    def meta_only(config, device=None):
        assert str(device) == "meta", f"a {config.ngf}-ngf generator was allocated on {device}"
        return real_build(config, device)

    monkeypatch.setattr(checkpoint, "build_generator_from_config", meta_only)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)shared/latest_net_G\.pth' does not fit .*ngf=4096.*"
                                                      r"wrong-shaped keys: .*it fits: .*ngf=4 "):
        load_generator_dir(folder)


@pytest.mark.reliability("clear_error")
def test_generator_json_with_an_unknown_plugin_like_key_names_the_key(tmp_path):
    """generator.json with "plugin_files" (an unknown key containing plugin_file) gave a raw TypeError."""
    folder = _spade_folder(tmp_path / "g")
    record = json.loads((folder / "generator.json").read_text())
    (folder / "generator.json").write_text(json.dumps(record | {"plugin_files": ["x.py"]}))
    with pytest.raises(ValueError, match=r"g/generator\.json' is not a valid generator config: unknown keys "
                                         r"\['plugin_files'\]; expected GeneratorConfig fields \(") as err:
        load_generator_dir(folder)
    assert "__init__" not in str(err.value)


@pytest.mark.reliability("clear_error")
def test_plugin_hint_warns_that_loading_the_recorded_file_runs_it(tmp_path):
    """A generator.json naming a plugin file ../../evilplug/evil.py: the hint must not invite running it blindly."""
    folder = _spade_folder(tmp_path / "g")
    record = json.loads((folder / "generator.json").read_text())
    (folder / "generator.json").write_text(json.dumps(record | {"norm": "evil-norm",
                                                                "plugin_file": "../../evilplug/evil.py"}))
    with pytest.raises(ValueError, match=r"plugin file '\.\./\.\./evilplug/evil\.py' \(the path as written in that "
                                         r"JSON\), which is not loaded\. Loading a plugin runs its Python code: only if "
                                         r"you trust that file, pass --plugin \.\./\.\./evilplug/evil\.py"):
        load_generator_dir(folder)


@pytest.mark.reliability("clear_error")
def test_bare_pth_that_does_not_fit_names_the_file(tmp_path, capsys):
    """run_analysis.py probe --checkpoint foreign.pth (a key missing): said 'the given state_dict'."""
    state = build_generator("synthetic", "clade", **TINY).state_dict()
    state.pop("conv_img.bias")
    torch.save(state, tmp_path / "foreign.pth")
    code = run_analysis.main(["probe", "--checkpoint", str(tmp_path / "foreign.pth"),
                              "--out", str(tmp_path / "out"), "--quick"])
    message = capsys.readouterr().err
    assert code not in (0, None) and "Traceback (most recent call last)" not in message
    first_line = message.strip().splitlines()[0]   # a mismatch lists the keys on the lines after it
    assert "foreign.pth' does not fit this Generator (norm='clade'" in first_line, message
    assert "the given state_dict" not in message


@pytest.mark.reliability("wrong_run")
def test_eval_is_not_already_done_after_the_weights_were_replaced(tmp_path, capsys, fake_stages):
    """After the weights inside --checkpoints DIR were replaced, eval said "already done" and kept the old
    numbers: only the path was compared."""
    mine = tmp_path / "mine"
    _spade_folder(mine / "spade")
    argv = ["eval", "--checkpoints", str(mine), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert run_analysis.main(argv) == 0 and run_analysis.main(argv) == 0   # same weights: reused
    assert [name for name, *_ in fake_stages] == ["eval"]
    _spade_folder(mine / "spade", poison="conv_img.bias", value=0.5)      # retrained weights, same path
    message = _fails(argv, capsys)
    assert "the eval stage finished with other settings (weights." in message and "spade/latest_net_G.pth" in message
    assert "--force" in message, message
    assert run_analysis.main([*argv, "--force"]) == 0 and [name for name, *_ in fake_stages] == ["eval", "eval"]
    record = json.loads((tmp_path / "o" / "stages" / "eval.json").read_text())
    digests = record["stage_settings"]["weights"][str(mine)]
    assert sorted(digests) == ["spade/generator.json", "spade/latest_net_G.pth"]
    assert all(d.startswith("sha256:") and len(d) == 7 + 64 for d in digests.values())
