"""Resizing once per resolution (and CLADE's index-map path) equals the official per-layer resizing."""
import pytest
import torch

from analysis.speed.variants import official_data_path
from data.labels import make_semantic
from models import build_generator


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
@pytest.mark.parametrize("options", [
    dict(label_nc=5, ngf=4, crop_size=64, no_instance=False),
    dict(label_nc=3, ngf=4, crop_size=128, aspect_ratio=2.0, num_upsampling_layers="more",
         contain_dontcare_label=False),
    dict(label_nc=6, ngf=8, crop_size=128, num_upsampling_layers="most", no_instance=True),
])
def test_shared_resizing_equals_official_per_layer_resizing(norm, options):
    G = build_generator("custom", norm, **options).eval()
    h, w = G.config.output_size
    label = torch.randint(0, G.config.class_nc, (2, 1, h, w))
    instance = torch.randint(0, 3, (2, 1, h, w))
    semantic = make_semantic(label, instance, G.config)
    dist = torch.rand(2, 2, h, w) * 2 - 1
    with torch.no_grad():
        ours = G(semantic, dist=dist)
        with official_data_path():
            official = G(semantic, dist=dist)
    assert torch.allclose(ours, official, atol=1e-6)
    assert ours.shape == (2, 3, h, w)
