"""Bad input raises ValueError naming what was expected."""
import pytest
import torch

from data.labels import make_semantic
from models import build_discriminator, build_generator
from models.presets import generator_config

TINY = dict(label_nc=4, contain_dontcare_label=True, ngf=4, crop_size=32)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'kitti'.*'ade20k'.*'cityscapes'"):
        build_generator("kitti", "spade")


def test_unknown_norm_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown norm 'adain'.*'spade', 'clade', 'clade-icpe'"):
        build_generator("ade20k", "adain")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['label_ncc'\]"):
        generator_config("ade20k", "clade", label_ncc=3)


def test_custom_preset_needs_label_nc():
    with pytest.raises(ValueError, match="needs label_nc"):
        generator_config("custom", "spade")


def test_bad_upsampling_depth():
    with pytest.raises(ValueError, match="num_upsampling_layers='many'.*'normal', 'more', 'most'"):
        generator_config("ade20k", "spade", num_upsampling_layers="many")


def test_wrong_semantic_channels():
    G = build_generator("custom", "clade", **TINY)
    with pytest.raises(ValueError, match=r"expected \[N, 6, H, W\] \(label_nc=4 \+ dontcare=1 \+ instance edge=1\)"):
        G(torch.zeros(1, 5, 32, 32))


def test_spatial_size_the_preset_cannot_produce():
    G = build_generator("custom", "spade", **TINY)
    with pytest.raises(ValueError, match=r"spatial size \(40, 40\).*produces \(32, 32\)"):
        G(torch.zeros(1, 6, 40, 40))


def test_icpe_without_dist():
    G = build_generator("custom", "clade-icpe", **TINY)
    with pytest.raises(ValueError, match="CLADE-ICPE needs dist"):
        G(torch.zeros(1, 6, 32, 32))


def test_icpe_with_wrong_dist_shape():
    G = build_generator("custom", "clade-icpe", **TINY)
    with pytest.raises(ValueError, match=r"dist has shape \(1, 1, 32, 32\); expected \(1, 2, 32, 32\)"):
        G(torch.zeros(1, 6, 32, 32), dist=torch.zeros(1, 1, 32, 32))


def test_label_out_of_range():
    cfg = generator_config("custom", "clade", **TINY)
    label = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    label[0, 0, 0, 0] = 255
    with pytest.raises(ValueError, match=r"class ids \[255\] outside \[0, 4\]"):
        make_semantic(label, torch.zeros_like(label), cfg)


def test_missing_instance_map():
    cfg = generator_config("custom", "clade", **TINY)
    with pytest.raises(ValueError, match="pass instance="):
        make_semantic(torch.zeros(1, 1, 8, 8, dtype=torch.long), None, cfg)


def test_discriminator_wrong_channels():
    D = build_discriminator("custom", label_nc=4, ndf=8)
    with pytest.raises(ValueError, match=r"expected \[N, 8, H, W\]"):
        D(torch.zeros(1, 7, 32, 32))


def test_crop_too_small_for_depth():
    with pytest.raises(ValueError, match="crop_size must be at least 64"):
        generator_config("custom", "spade", label_nc=3, crop_size=32, num_upsampling_layers="more",
                         aspect_ratio=1.0)
