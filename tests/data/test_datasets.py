"""Readers: official layouts and preprocessing, determinism, DataLoader workers, bad input."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from data.datasets import DATA_PRESETS, build_dataset
from data.presets import DATASETS, canonical_preset
from data.icpe import icpe_map
from data.labels import make_semantic
from data.transforms import Preprocess, draw_params
from models.presets import PRESETS, generator_config
from tests.data.fake_layouts import (SIZE, random_label, save_map, save_photo, write_ade20k, write_cityscapes,
                                     write_coco, write_custom)

KEYS = {"label", "instance", "image", "dist", "path"}


def check_sample(sample: dict, hw, class_nc: int):
    assert set(sample) == KEYS
    assert sample["label"].shape == sample["instance"].shape == (1, *hw)
    assert sample["label"].dtype == sample["instance"].dtype == torch.long
    assert sample["image"].shape == (3, *hw) and sample["image"].dtype == torch.float32
    assert sample["dist"].shape == (2, *hw) and sample["dist"].dtype == torch.float32
    assert -1 <= sample["image"].min() and sample["image"].max() <= 1
    assert 0 <= sample["label"].min() and sample["label"].max() < class_nc
    assert isinstance(sample["path"], str) and Path(sample["path"]).is_file()


def test_dataset_facts_live_in_data_and_the_network_presets_read_them():
    assert set(DATA_PRESETS) <= set(DATASETS)
    for name, data in DATA_PRESETS.items():
        facts = DATASETS[name]
        assert (data.contain_dontcare_label, data.no_instance, data.crop_size, data.aspect_ratio) == \
               (facts["contain_dontcare_label"], facts["no_instance"], facts["crop_size"], facts["aspect_ratio"])
    for name, facts in DATASETS.items():   # models.presets adds network options, never changes a fact
        assert PRESETS[name].items() >= facts.items(), name
    assert PRESETS["cityscapes"]["num_upsampling_layers"] == "more" and "num_upsampling_layers" not in DATASETS["ade20k"]
    assert canonical_preset("coco") == "coco-stuff"
    with pytest.raises(ValueError, match="unknown preset 'imagenet'; expected one of"):
        canonical_preset("imagenet")
    assert DATA_PRESETS["cityscapes"].preprocess_mode == "fixed"
    assert (DATA_PRESETS["coco-stuff"].load_size, DATA_PRESETS["coco-stuff"].load_size_test) == (286, 256)
    assert DATA_PRESETS["coco-stuff"].label_nc == 182 and DATA_PRESETS["ade20k"].label_nc == 150


# --- the real COCO-Stuff sample -------------------------------------------------------------------

def test_coco_sample_val_equals_official_preprocessing(coco_sample_dir):
    ds = build_dataset("coco", coco_sample_dir, "val", with_dist=True)
    assert len(ds) == 8
    for index in (0, 3):
        sample = ds[index]
        check_sample(sample, (256, 256), 183)
        stem = Path(sample["path"]).stem
        raw = Image.open(coco_sample_dir / "val_label" / f"{stem}.png")
        # Official: ToTensor(Resize(256, NEAREST)) * 255, then 255 -> label_nc.
        official = torch.from_numpy(np.asarray(raw.resize((256, 256), Image.NEAREST)).astype(np.int64))
        official[official == 255] = 182
        assert torch.equal(sample["label"][0], official)
        assert (official == 182).any() and not (sample["label"] == 255).any()
        inst = Image.open(coco_sample_dir / "val_inst" / f"{stem}.png")
        assert torch.equal(sample["instance"][0],
                           torch.from_numpy(np.asarray(inst.resize((256, 256), Image.NEAREST)).astype(np.int64)))
        assert len(sample["instance"].unique()) > 2
        expected_dist = icpe_map(np.asarray(raw), mode="corrected", dontcare=255)
        rows = (np.arange(256) + 0.5) * raw.size[1] / 256
        cols = (np.arange(256) + 0.5) * raw.size[0] / 256
        assert torch.equal(sample["dist"], torch.from_numpy(
            expected_dist[:, rows.astype(int)[:, None], cols.astype(int)[None, :]]))


def test_coco_sample_train_official_icpe_equals_reference_pipeline(coco_sample_dir, reference_dir):
    ds = build_dataset("coco-stuff", coco_sample_dir, "train", with_dist=True, icpe_mode="official", seed=3)
    precomputed = np.load(reference_dir / "icpe" / "coco_stuff_train_label_norm.npz")
    flips = 0
    for index in range(4):
        sample = ds[index]
        params = draw_params(ds.preprocess, np.random.default_rng([3, 0, index]))
        flips += params.flip
        # The official loader on the official precomputed .npy.
        x, y = params.crop_pos
        dist = F.interpolate(torch.from_numpy(precomputed[Path(sample["path"]).stem])[None], size=[286, 286],
                             mode="nearest")[:, :, y:y + 256, x:x + 256]
        if params.flip:
            dist = dist.flip(2)
        assert torch.allclose(sample["dist"], dist[0], atol=1e-6)
    assert 0 < flips < 4  # both branches were exercised with this seed


def test_coco_sample_is_deterministic_per_seed_and_epoch(coco_sample_dir):
    a = build_dataset("coco-stuff", coco_sample_dir, seed=7, max_samples=5)
    b = build_dataset("coco-stuff", coco_sample_dir, seed=7, max_samples=5)
    assert len(a) == 5
    for i in range(len(a)):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["label"], b[i]["label"])
    before = [a[i]["image"] for i in range(len(a))]
    a.set_epoch(1)
    assert any(not torch.equal(before[i], a[i]["image"]) for i in range(len(a)))
    other = build_dataset("coco-stuff", coco_sample_dir, seed=8, max_samples=5)
    assert any(not torch.equal(before[i], other[i]["image"]) for i in range(len(a)))


def test_coco_sample_dataloader_workers_give_the_same_batches(coco_sample_dir):
    ds = build_dataset("coco-stuff", coco_sample_dir, with_dist=True, seed=1, crop_size=64, max_samples=6)
    ds.set_epoch(2)
    serial = list(DataLoader(ds, batch_size=3, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert len(serial) == len(parallel) == 2
    for one, two in zip(serial, parallel):
        assert one["path"] == two["path"]
        for key in ("label", "instance", "image", "dist"):
            assert torch.equal(one[key], two[key])
    assert serial[0]["image"].shape == (3, 3, 64, 64)
    config = generator_config("coco-stuff", "clade-icpe", crop_size=64)
    assert make_semantic(serial[0]["label"], serial[0]["instance"], config).shape == (3, 184, 64, 64)


def test_coco_sample_scan_passes(coco_sample_dir):
    report = build_dataset("coco-stuff", coco_sample_dir, "val").scan()
    assert report.checked == 8 and report.invalid == []


# --- generated folders in each layout -------------------------------------------------------------

def test_coco_layout(tmp_path):
    write_coco(tmp_path, "val")
    ds = build_dataset("coco-stuff", tmp_path, "val", crop_size=16)
    assert len(ds) == 3
    sample = ds[0]
    check_sample(sample, (16, 16), 183)
    assert set(sample["label"].unique().tolist()) <= {0, 5, 181, 182}
    assert sample["path"].endswith("val_img/000000.jpg")
    assert ds.preprocess == Preprocess("resize_and_crop", 16, 16, 1.0, False)
    train = build_dataset("coco-stuff", write_coco(tmp_path / "t", "train"), crop_size=64)
    assert train.preprocess == Preprocess("resize_and_crop", 72, 64, 1.0, True)  # official 286/256 zoom


def test_cityscapes_layout(tmp_path):
    write_cityscapes(tmp_path)
    ds = build_dataset("cityscapes", tmp_path, crop_size=32, with_dist=True)
    assert len(ds) == 4
    sample = ds[1]
    check_sample(sample, (16, 32), 35)  # fixed resize to crop x crop / aspect_ratio
    assert sample["path"].endswith("aachen/aachen_000001_000019_leftImg8bit.png")
    assert sample["instance"].max() > 255  # 32-bit instance ids survive
    assert set(sample["label"].unique().tolist()) <= {0, 7, 26, 33}
    assert sample["dist"][:, sample["label"][0] == 0].abs().max() > 0  # no dontcare: 0 is encoded
    assert build_dataset("cityscapes", tmp_path).preprocess.output_size == (256, 512)


@pytest.mark.parametrize("mapping, expected", [("official", {0, 1, 77, 150}), ("shifted", {150, 0, 76, 149})])
def test_ade20k_layout_and_label_mapping(tmp_path, mapping, expected):
    write_ade20k(tmp_path, "val")
    ds = build_dataset("ade20k", tmp_path, "val", crop_size=16, ade_label_mapping=mapping, with_dist=True)
    labels = set()
    for i in range(len(ds)):
        sample = ds[i]
        check_sample(sample, (16, 16), 151)
        assert not sample["instance"].any()  # ADE20K has no instance maps
        labels |= set(sample["label"].unique().tolist())
        raw = np.asarray(Image.open(ds.samples[i].label).resize((16, 16), Image.NEAREST))
        assert not sample["dist"][:, torch.from_numpy(raw == 0)].any()  # 'unlabeled' is not encoded
    assert labels == expected
    direct = build_dataset("ade20k-outdoor", tmp_path / "ADEChallengeData2016", "val")
    assert len(direct) == 3


def test_custom_layout_from_root_and_explicit_dirs(tmp_path):
    write_custom(tmp_path)
    ds = build_dataset("custom", tmp_path, label_nc=3, contain_dontcare_label=True, crop_size=16, flip=False)
    sample = ds[2]
    check_sample(sample, (16, 16), 4)
    assert 3 in sample["label"] and sample["instance"].max() >= 2
    explicit = build_dataset("custom", None, label_nc=3, contain_dontcare_label=True, crop_size=16, flip=False,
                             image_dir=tmp_path / "images", label_dir=tmp_path / "labels")
    assert not explicit[2]["instance"].any()  # no instance_dir given
    assert torch.equal(explicit[2]["image"], sample["image"])
    write_custom(tmp_path / "split" / "val", n=2, with_instances=False)
    assert len(build_dataset("custom", tmp_path / "split", "val", label_nc=3, contain_dontcare_label=True)) == 2


def test_synthetic_preset(tmp_path):
    train = build_dataset("synthetic", None, max_samples=4, with_dist=True)
    val = build_dataset("synthetic", None, "val", max_samples=4)
    assert len(train) == 4 and train[0]["label"].shape == (1, 64, 64)
    assert not torch.equal(train[0]["label"], val[0]["label"])


# --- bad input ------------------------------------------------------------------------------------

def test_image_without_label(tmp_path):
    write_coco(tmp_path)
    save_photo(tmp_path / "train_img" / "lonely.jpg", 9)
    with pytest.raises(FileNotFoundError, match=r"image .*train_img/lonely\.jpg has no label: expected a label "
                                                 r"file for 'lonely' in .*train_label"):
        build_dataset("coco-stuff", tmp_path)


def test_label_without_image(tmp_path):
    write_custom(tmp_path)
    (tmp_path / "images" / "scene1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"label .*labels/scene1\.png has no image: expected an image "
                                                 r"file for 'scene1' in .*images"):
        build_dataset("custom", tmp_path, label_nc=3)


def test_missing_instance_map(tmp_path):
    write_cityscapes(tmp_path)
    next((tmp_path / "gtFine").glob("**/*_instanceIds.png")).unlink()
    with pytest.raises(FileNotFoundError, match=r"has no instance map: expected an instance file for 'aachen_"):
        build_dataset("cityscapes", tmp_path)


def test_label_values_outside_the_classes(tmp_path):
    write_coco(tmp_path)
    save_map(tmp_path / "train_label" / "000001.png", random_label(1, (3, 200, 255)))
    ds = build_dataset("coco-stuff", tmp_path)
    message = (r"label .*train_label/000001\.png has value\(s\) \[200\] that are neither a class nor dontcare; "
               r"expected class ids 0\.\.181 or 255 \(dontcare, becomes 182\) for preset 'coco-stuff'")
    with pytest.raises(ValueError, match=message):
        ds[1]
    with pytest.raises(ValueError, match=message):
        ds.scan()


def test_dontcare_value_without_dontcare_class(tmp_path):
    write_cityscapes(tmp_path, values=(0, 7, 255))
    with pytest.raises(ValueError, match=r"value\(s\) \[255\] .* expected class ids 0\.\.34 for preset 'cityscapes'"):
        build_dataset("cityscapes", tmp_path)[0]


def test_image_and_label_sizes_differ(tmp_path):
    write_coco(tmp_path)
    save_photo(tmp_path / "train_img" / "000002.jpg", 2, size=(32, 24))
    with pytest.raises(ValueError, match=r"label .*000002\.png is 40x30 \(WxH\) but its image .*000002\.jpg "
                                         r"is 32x24; expected the same size"):
        build_dataset("coco-stuff", tmp_path)[2]


def test_instance_size_differs(tmp_path):
    write_coco(tmp_path)
    save_map(tmp_path / "train_inst" / "000000.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"instance map .*000000\.png is 10x10 \(WxH\) but its image"):
        build_dataset("coco-stuff", tmp_path)[0]


@pytest.mark.parametrize("name", ["000001.jpg", "000001.png"])
def test_truncated_files(tmp_path, name):
    write_coco(tmp_path)
    folder = tmp_path / ("train_img" if name.endswith("jpg") else "train_label")
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    what = "image" if name.endswith("jpg") else "label"
    with pytest.raises(ValueError, match=rf"cannot read {what} .*{name}: .*; expected a readable image file"):
        build_dataset("coco-stuff", tmp_path)[1]


def test_rgb_label_is_rejected(tmp_path):
    write_custom(tmp_path, with_instances=False)
    save_photo(tmp_path / "labels" / "scene0.png", 0)
    with pytest.raises(ValueError, match=r"label .*scene0\.png has mode RGB .*expected a single-channel image"):
        build_dataset("custom", tmp_path, label_nc=3)[0]


def test_skip_invalid_counts_and_logs(tmp_path, caplog):
    write_coco(tmp_path, n=5)
    save_photo(tmp_path / "train_img" / "lonely.jpg", 9)                                  # unpaired
    save_map(tmp_path / "train_label" / "000001.png", random_label(1, (3, 200)))          # bad values
    data = (tmp_path / "train_label" / "000003.png").read_bytes()
    (tmp_path / "train_label" / "000003.png").write_bytes(data[:40])                      # truncated
    caplog.set_level(logging.WARNING, logger="data.datasets")
    ds = build_dataset("coco-stuff", tmp_path, skip_invalid=True)
    assert len(ds) == 5 and len(ds.skipped) == 1 and ds.skipped[0].path.endswith("lonely.jpg")
    assert "skipped 1 unpaired, duplicate or lossy files" in caplog.text
    # Without a scan, a bad item is replaced by the next valid one and counted.
    assert ds[1]["path"].endswith("000002.jpg") and len(ds.skipped) == 2
    photo = (tmp_path / "train_img" / "000004.jpg").read_bytes()
    (tmp_path / "train_img" / "000004.jpg").write_bytes(photo[: len(photo) // 2])
    report = ds.scan(decode_images=False)  # the truncated photo passes a header-only scan
    assert report.checked == 5 and len(report.invalid) == 2
    assert [Path(s.path).name for s in report.invalid] == ["000001.jpg", "000003.jpg"]
    assert "value(s) [200]" in report.invalid[0].reason and "cannot read label" in report.invalid[1].reason
    assert "scan skipped 2 invalid of 5 coco-stuff samples" in caplog.text
    assert len(ds) == 3 and [Path(ds[i]["path"]).name for i in range(2)] == ["000000.jpg", "000002.jpg"]
    assert ds.scan().invalid[0].reason.startswith("cannot read image") and len(ds) == 2


@pytest.mark.parametrize("call, error, message", [
    (lambda root: build_dataset("kitti", root), ValueError, r"unknown preset 'kitti'"),
    (lambda root: build_dataset("coco-stuff", root, "test"), ValueError, r"phase='test'; expected one of"),
    (lambda root: build_dataset("coco-stuff", root / "nowhere"), FileNotFoundError, r"folder .*nowhere does not exist"),
    (lambda root: build_dataset("coco-stuff", root, "val"), FileNotFoundError, r"COCO-Stuff val_img folder"),
    (lambda root: build_dataset("custom", root), ValueError, r"needs label_nc"),
    (lambda root: build_dataset("ade20k", root, label_nc=3), ValueError, r"options of the custom preset"),
    (lambda root: build_dataset("ade20k", root, ade_label_mapping="minus1"), ValueError,
     r"ade_label_mapping='minus1'; expected one of \['official', 'shifted'\]"),
    (lambda root: build_dataset("coco-stuff", root, icpe_mode="exact"), ValueError, r"icpe_mode='exact'"),
])
def test_bad_arguments(tmp_path, call, error, message):
    write_coco(tmp_path)
    write_ade20k(tmp_path)
    with pytest.raises(error, match=message):
        call(tmp_path)


def test_transforms_match_between_image_and_label(tmp_path):
    """Image and label of a flipped, cropped sample stay aligned (edges of a vertical bar coincide)."""
    w, h = SIZE
    label = np.zeros((h, w), np.uint8)
    label[:, 10:18] = 1
    photo = np.zeros((h, w, 3), np.uint8)
    photo[:, 10:18] = 255
    (tmp_path / "images").mkdir()
    Image.fromarray(photo).save(tmp_path / "images" / "bar.png")
    save_map(tmp_path / "labels" / "bar.png", label)
    ds = build_dataset("custom", tmp_path, label_nc=2, crop_size=32, load_size=40)
    for seed in range(6):
        ds.seed = seed
        sample = ds[0]
        bright = sample["image"].mean(0) > 0
        assert torch.equal(bright, sample["label"][0] == 1)
