"""Reliability cases of the dataset choice: preset, dataroot and the layout they imply."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import train
from data.datasets import custom_has_instances
from data.presets import check_data_source


def _options(*argv) -> dict:
    return train.resolve_options(train.build_parser().parse_args(list(argv)))


def _custom_root(root, instances: bool):
    for sub in ("images", "labels", *(("instances",) if instances else ())):
        (root / sub).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3) if sub == "images" else (8, 8), np.uint8)).save(root / sub / "a.png")
    return root


@pytest.mark.reliability("wrong_run")
def test_nonexistent_dataroot_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        _options("--dataroot", str(tmp_path / "missing"), "--dry-run")


@pytest.mark.reliability("wrong_run")
def test_dataroot_without_preset_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--preset synthetic: the synthetic scenes are built in"):
        _options("--dataroot", str(tmp_path), "--dry-run")


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("preset", ["ade20k", "cityscapes", "custom"])
def test_real_preset_without_dataroot_is_refused(preset):
    with pytest.raises(SystemExit, match=f"--preset {preset} without --dataroot"):
        _options("--preset", preset, "--dry-run")


@pytest.mark.reliability("wrong_run")
def test_custom_dataset_without_instances_has_no_edge_channel(tmp_path):
    plain = _custom_root(tmp_path / "plain", instances=False)
    with_instances = _custom_root(tmp_path / "inst", instances=True)
    assert not custom_has_instances(plain) and custom_has_instances(with_instances)
    options = _options("--preset", "custom", "--dataroot", str(plain), "--set", "label_nc=4")
    assert options["generator"]["no_instance"] is True and options["discriminator"]["no_instance"] is True
    options = _options("--preset", "custom", "--dataroot", str(with_instances), "--set", "label_nc=4")
    assert options["generator"]["no_instance"] is False


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("argv, expected", [
    (["--device", "gpu"], "not a device name"), (["--ngf", "0"], "ngf=0"), (["--set", "ngf=abc"], "expected int"),
    (["--aspect_ratio", "0"], "aspect_ratio"),
])
def test_bad_train_options_are_one_line_errors(argv, expected):
    with pytest.raises(SystemExit, match=expected) as info:
        _options(*argv)
    assert "\n" not in str(info.value.code)


def test_matching_sources_pass(tmp_path):
    check_data_source("synthetic", None)
    check_data_source("ade20k", tmp_path)


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("argv, expected", [
    (["--lr", "-1"], "lr=-1.0; expected a positive number"), (["--lr", "0"], "lr=0.0"),
    (["--beta1", "2"], r"beta1=2.0; expected a value in \[0, 1\)"), (["--beta2", "-0.1"], "beta2=-0.1"),
    (["--lambda_feat", "-3"], "lambda_feat=-3.0; expected 0 or more"), (["--ema_decay", "1.5"], "ema_decay=1.5"),
    (["--lambda_vgg", "nan"], "lambda_vgg=nan"),
])
def test_out_of_range_recipe_values_are_one_line_errors(argv, expected):
    with pytest.raises(SystemExit, match=expected) as info:
        _options(*argv)
    assert "\n" not in str(info.value.code)


@pytest.mark.reliability("clear_error")
def test_out_that_is_a_file_is_refused_by_name(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(SystemExit, match=r"--out .*f is a file; expected a folder"):
        _options("--out", str(tmp_path / "f"), "--dry-run")
    assert (tmp_path / "f").read_text() == "mine"
