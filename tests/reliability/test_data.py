"""Reliability cases of the dataset: preset, dataroot, the layout they imply and the files in it."""
from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli import run_analysis
from cli import train
from analysis.context import RunContext, StageResult
from data.datasets import Skipped, build_dataset, custom_has_instances
from data.presets import DATASETS, check_data_source
from tests.data.fake_layouts import (random_label, save_map, save_photo, write_ade20k, write_cityscapes, write_coco,
                                     write_custom)

# A tiny custom-preset training on the CPU (the networks of tests/reliability/test_training.py).
TRAIN_CLI = ["--preset", "custom", "--label_nc", "3", "--contain_dontcare_label", "--crop_size", "32", "--ngf", "4",
             "--ndf", "8", "--n_layers_D", "3", "--batch-size", "2", "--no-vgg", "--num-workers", "0",
             "--no-progress", "--norm", "clade", "--no-amp"]


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


@pytest.mark.parametrize("preset", sorted(DATASETS))
def test_each_preset_passes_with_its_source_and_is_refused_with_the_other(tmp_path, preset):
    own, other = (None, tmp_path) if preset == "synthetic" else (tmp_path, None)
    assert check_data_source(preset, own) is None
    with pytest.raises(ValueError, match="--dataroot"):
        check_data_source(preset, other)


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("argv, expected", [
    (["--lr", "-1"], "lr=-1.0; expected a positive number"), (["--lr", "0"], "lr=0.0"),
    (["--beta1", "2"], r"beta1=2.0; expected a value in \[0, 1\)"), (["--beta2", "-0.1"], "beta2=-0.1"),
    (["--lambda_feat", "-3"], "lambda_feat=-3.0; expected 0 or more"), (["--ema_decay", "1.5"], "ema_decay=1.5"),
    (["--lambda_vgg", "nan"], "--lambda_vgg nan: expected a finite number"),
])
def test_out_of_range_recipe_values_are_one_line_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        _options(*argv)
    message = info.value.code if isinstance(info.value.code, str) else capsys.readouterr().err.strip()
    assert re.search(expected, message) and "\n" not in message, message


@pytest.mark.reliability("clear_error")
def test_out_that_is_a_file_is_refused_by_name(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(SystemExit, match=r"--out .*f is a file; expected a folder"):
        _options("--out", str(tmp_path / "f"), "--dry-run")
    assert (tmp_path / "f").read_text() == "mine"


# --- files the readers must refuse, or read correctly ------------------------------------------------

def _jpeg_beside(path):
    """The id map re-saved as JPEG under the same stem, the PNG removed (a careless export)."""
    jpeg = path.with_suffix(".jpg")
    Image.open(path).convert("L").save(jpeg, quality=90)
    path.unlink()
    return jpeg


LABEL_LAYOUTS = {  # preset -> (writer, first label map, build_dataset options)
    "cityscapes": (write_cityscapes, "gtFine/train/*/*_gtFine_labelIds.png", {}),
    "ade20k": (write_ade20k, "ADEChallengeData2016/annotations/training/*.png", {}),
    "coco-stuff": (write_coco, "train_label/*.png", {}),
    "custom": (write_custom, "labels/*.png", {"label_nc": 3, "contain_dontcare_label": True}),
}


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("preset", sorted(LABEL_LAYOUTS))
def test_jpeg_label_map_is_refused_when_the_dataset_is_built(tmp_path, preset):
    write, pattern, options = LABEL_LAYOUTS[preset]
    write(tmp_path)
    jpeg = _jpeg_beside(sorted(tmp_path.glob(pattern))[0])
    with pytest.raises(ValueError, match=rf"label {re.escape(str(jpeg))} is a JPEG file; expected a lossless "
                                         rf"format \(PNG\)") as info:
        build_dataset(preset, tmp_path, **options)   # at indexing, before any item is read
    assert "label and instance maps must be lossless" in str(info.value) and "\n" not in str(info.value)
    dataset = build_dataset(preset, tmp_path, skip_invalid=True, **options)
    assert [Path(s.path).stem for s in dataset.skipped] and all(s.label != jpeg for s in dataset.samples)


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("preset, pattern", [("coco-stuff", "train_inst/*.png"),
                                             ("cityscapes", "gtFine/train/*/*_gtFine_instanceIds.png")])
def test_jpeg_instance_map_is_refused(tmp_path, preset, pattern):
    LABEL_LAYOUTS[preset][0](tmp_path)
    jpeg = _jpeg_beside(sorted(tmp_path.glob(pattern))[0])
    with pytest.raises(ValueError, match=rf"instance map {re.escape(str(jpeg))} is a JPEG file"):
        build_dataset(preset, tmp_path)


@pytest.mark.reliability("clear_error")
def test_webp_label_map_is_refused(tmp_path):
    write_custom(tmp_path, with_instances=False)
    label = tmp_path / "labels" / "scene0.png"
    Image.open(label).save(label.with_suffix(".webp"), lossless=True)  # decodes as RGB all the same
    label.unlink()
    with pytest.raises(ValueError, match=r"scene0\.webp is a WebP file; expected a lossless format \(PNG\)"):
        build_dataset("custom", tmp_path, label_nc=3, contain_dontcare_label=True)


@pytest.mark.reliability("wrong_run")
def test_jpeg_content_under_a_png_name_is_refused_when_read(tmp_path):
    write_custom(tmp_path, with_instances=False)
    label = tmp_path / "labels" / "scene1.png"
    Image.open(label).convert("L").save(label, format="JPEG", quality=90)
    dataset = build_dataset("custom", tmp_path, label_nc=3, contain_dontcare_label=True)
    with pytest.raises(ValueError, match=r"label .*scene1\.png is a JPEG file; expected a lossless format"):
        dataset.scan()


@pytest.mark.reliability("wrong_run")
def test_train_cli_does_not_start_on_a_jpeg_label_map(tmp_path):
    root = write_custom(tmp_path / "data", with_instances=False)
    _jpeg_beside(root / "labels" / "scene2.png")
    with pytest.raises(ValueError, match=r"scene2\.jpg is a JPEG file"):
        train.main(TRAIN_CLI + ["--out", str(tmp_path / "runs"), "--dataroot", str(root), "--steps", "1"])
    assert not list((tmp_path / "runs").glob("*/checkpoint.pt"))


def _custom_photo(root, photo, instance=None):
    """A one-sample custom dataset whose image is ``photo`` (a PIL image, or the bytes of a PNG) and
    whose label is all class 0."""
    for sub in ("images", "labels", *(("instances",) if instance is not None else ())):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if isinstance(photo, bytes):
        (root / "images" / "a.png").write_bytes(photo)
        photo = Image.open(root / "images" / "a.png")
    else:
        photo.save(root / "images" / ("a.tif" if photo.mode in ("I", "F") else "a.png"))
    Image.fromarray(np.zeros(photo.size[::-1], np.uint8)).save(root / "labels" / "a.png")
    if instance is not None:
        Image.fromarray(instance).save(root / "instances" / "a.png")
    return build_dataset("custom", root, label_nc=1, crop_size=photo.size[0], load_size=photo.size[0], flip=False)


def _rgb16_png(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``pixels`` [H, W, 3] (PIL writes none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("mode", ["I;16", "I", "RGB 16-bit"])
def test_16bit_photo_is_scaled_not_saturated(tmp_path, mode):
    gradient = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)   # 0 .. 65472
    if mode == "RGB 16-bit":
        photo = _rgb16_png(np.stack([gradient, gradient, 65535 - gradient], -1))
    else:
        photo = Image.fromarray(gradient) if mode == "I;16" else Image.fromarray(gradient.astype(np.int32))
        assert photo.mode == mode
    image = _custom_photo(tmp_path, photo)[0]["image"]
    expected = torch.from_numpy(gradient / 65535 * 2 - 1).float()
    step = 2 / 255 + 1e-6   # one 8-bit step in [-1, 1] (PIL keeps the high byte of 16-bit RGB: floor, not round)
    assert (image[0] - expected).abs().max() <= step and (image[1] - expected).abs().max() <= step
    assert (image[:2] > 0.99).float().mean() < 0.01


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("pixels, expected", [
    (np.full((8, 8), 0.5, np.float32), r"image .*a\.tif has mode F \(32-bit float pixels"),
    (np.full((8, 8), 70000, np.int32), r"image .*a\.tif \(mode I\) has values 70000\.\.70000; expected a 16-bit"),
])
def test_photo_of_unknown_range_is_refused(tmp_path, pixels, expected):
    with pytest.raises(ValueError, match=expected):
        _custom_photo(tmp_path, Image.fromarray(pixels))[0]


@pytest.mark.reliability("wrong_run")
def test_16bit_instance_map_keeps_its_exact_ids(tmp_path):
    ids = np.array([0, 300, 26001, 33005], np.uint16).repeat(64).reshape(16, 16)
    photo = Image.fromarray(np.zeros((16, 16, 3), np.uint8))
    instance = _custom_photo(tmp_path, photo, instance=ids)[0]["instance"]
    assert torch.equal(instance[0], torch.from_numpy(ids.astype(np.int64)))


@pytest.mark.reliability("wrong_run")
def test_ade20k_png_images_are_found_by_stem(tmp_path):
    write_ade20k(tmp_path)
    images = tmp_path / "ADEChallengeData2016" / "images" / "training"
    first = sorted(images.glob("*.jpg"))[0]
    Image.open(first).save(first.with_suffix(".png"))
    first.unlink()
    for preset in ("ade20k", "ade20k-outdoor"):
        dataset = build_dataset(preset, tmp_path)
        assert len(dataset) == 3 and dataset[0]["path"] == str(first.with_suffix(".png"))


@pytest.mark.reliability("clear_error")
def test_two_images_of_one_stem_are_refused_naming_both(tmp_path):
    write_ade20k(tmp_path)
    jpg = sorted((tmp_path / "ADEChallengeData2016" / "images" / "training").glob("*.jpg"))[1]
    Image.open(jpg).save(jpg.with_suffix(".png"))
    with pytest.raises(ValueError, match=rf"two image files for sample '{jpg.stem}': {re.escape(str(jpg))} and "
                                         rf"{re.escape(str(jpg.with_suffix('.png')))}; expected one"):
        build_dataset("ade20k", tmp_path)
    dataset = build_dataset("ade20k", tmp_path, skip_invalid=True)   # neither file is guessed
    assert len(dataset) == 2 and all(s.image.stem != jpg.stem for s in dataset.samples)


# --- --skip-invalid ------------------------------------------------------------------------------------

@pytest.mark.reliability("clear_error")
def test_errors_name_the_skip_invalid_flag(tmp_path):
    write_coco(tmp_path)
    save_photo(tmp_path / "train_img" / "lonely.jpg", 9)
    with pytest.raises(FileNotFoundError, match=r"lonely\.jpg has no label.*--skip-invalid \(Python: "
                                                r"skip_invalid=True\)"):
        build_dataset("coco-stuff", tmp_path)
    (tmp_path / "train_img" / "lonely.jpg").unlink()
    save_map(tmp_path / "train_label" / "000001.png", random_label(1, (3, 200)))
    with pytest.raises(ValueError, match=r"value\(s\) \[200\].*--skip-invalid \(Python: skip_invalid=True\)"):
        build_dataset("coco-stuff", tmp_path)[1]


@pytest.mark.reliability("wrong_run")
def test_train_cli_has_skip_invalid_and_passes_it_on(tmp_path):
    root = str(write_custom(tmp_path))
    assert _options("--preset", "custom", "--dataroot", root, "--set", "label_nc=3")["data"]["skip_invalid"] is False
    options = _options("--preset", "custom", "--dataroot", root, "--set", "label_nc=3", "--skip-invalid")
    assert options["data"]["skip_invalid"] is True
    assert train.build_dataset(options).skip_invalid is True


@pytest.mark.reliability("wrong_run")
def test_train_cli_logs_and_records_the_skipped_samples(tmp_path):
    root = write_custom(tmp_path / "data", n=4, with_instances=False)
    _jpeg_beside(root / "labels" / "scene1.png")                                   # refused when indexed
    save_map(root / "labels" / "scene2.png", random_label(2, (0, 9)))              # refused by the scan
    out = tmp_path / "runs"
    assert train.main(TRAIN_CLI + ["--out", str(out), "--dataroot", str(root), "--steps", "1",
                                   "--skip-invalid"]) == 0
    run_dir = next(out.iterdir())
    options = json.loads((run_dir / "options.json").read_text())
    assert options["data"]["skip_invalid"] is True and options["data"]["skipped_samples"] == 2
    listed = json.loads((run_dir / "skipped.json").read_text())
    assert sorted(Path(s["path"]).name for s in listed) == ["scene1.png", "scene2.png"]
    assert "skipped 2 invalid samples" in (run_dir / "log.txt").read_text()


@pytest.mark.reliability("wrong_run")
def test_run_analysis_has_skip_invalid_and_records_the_count(tmp_path, monkeypatch):
    root = write_coco(tmp_path / "data", n=3)
    save_photo(root / "train_img" / "lonely.jpg", 9)

    def stage(ctx):
        dataset = ctx.dataset("train")
        return StageResult(summary={"samples": len(dataset)})

    monkeypatch.setattr(run_analysis, "stage_runner", lambda _: stage)
    out = tmp_path / "out"
    argv = ["train", "--preset", "coco-stuff", "--dataroot", str(root), "--out", str(out)]
    assert run_analysis.main(argv + ["--skip-invalid"]) == 0
    record = json.loads((out / "stages" / "train.json").read_text())
    assert record["samples"] == 3 and record["skipped_samples"] == 1 and record["skipped"][0].endswith("lonely.jpg")
    assert "1 invalid samples of the dataset were left out (--skip-invalid)" in record["notes"][0]   # in report.md
    assert record["stage_settings"]["run"]["skip_invalid"] is True
    args = run_analysis.parse_args(argv)
    assert args.skip_invalid is False and "skip_invalid" not in run_analysis.stage_settings(
        "train", run_analysis.context_from_args(args))["run"]   # records made before the flag still match


@pytest.mark.reliability("wrong_run")
def test_evaluation_set_with_skip_invalid_holds_distinct_valid_samples(tmp_path):
    """Reading substitutes the next valid sample for an invalid one; a fixed evaluation set of
    N images must instead be the first N valid ones, each once."""
    root = write_coco(tmp_path, phase="val", n=5)
    save_map(root / "val_label" / "000001.png", random_label(1, (3, 200)))   # 200: no COCO-Stuff class
    ctx = RunContext(out=tmp_path / "o", preset="coco-stuff", dataroot=root, skip_invalid=True)
    dataset = ctx.dataset("val", max_samples=3)
    assert [p.image.stem for p in dataset.samples] == ["000000", "000002", "000003"]
    images = [dataset[i]["image"] for i in range(3)]
    assert not any(torch.equal(images[i], images[j]) for i in range(3) for j in range(i))
    assert [Path(s.path).stem for s in ctx.take_skipped()] == ["000001"]
    with pytest.raises(ValueError, match=r"value\(s\) \[200\]"):
        RunContext(out=tmp_path / "o", preset="coco-stuff", dataroot=root).dataset("val", max_samples=3)[1]


def test_samples_skipped_in_a_training_worker_are_reported_once(tmp_path):
    ctx = RunContext(out=tmp_path)
    ctx.record_skipped([Skipped("a.png", "unreadable")])
    ctx.record_skipped([Skipped("a.png", "unreadable"), Skipped("b.png", "label value 12")])
    assert [s.path for s in ctx.take_skipped()] == ["a.png", "b.png"] and ctx.take_skipped() == []
