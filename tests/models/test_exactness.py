"""The networks equal the official code: parameter counts, state_dict keys, outputs."""
import json

import pytest
import torch

from data.labels import make_semantic
from models import build_discriminator, build_generator, count_parameters, load_official_checkpoint

# From ../shared/reference/README.md (measured on the official code).
OFFICIAL_G_PARAMS = {
    ("cityscapes", "spade"): 93_048_003, ("cityscapes", "clade"): 67_901_991,
    ("cityscapes", "clade-icpe"): 67_902_099, ("ade20k", "spade"): 96_492_483,
    ("ade20k", "clade"): 71_427_267, ("ade20k", "clade-icpe"): 71_427_375,
    ("coco-stuff", "spade"): 97_480_899, ("coco-stuff", "clade"): 72_505_383,
    ("coco-stuff", "clade-icpe"): 72_505_491,
}
OFFICIAL_D_PARAMS = {"cityscapes": 5_601_410, "ade20k": 5_836_930, "coco-stuff": 5_904_514}
REFERENCE_NAMES = {"cityscapes": "cityscapes", "ade20k": "ade20k",
                   "ade20k-outdoor": "ade20koutdoor", "coco-stuff": "coco"}
CITYLIKE = dict(label_nc=7, contain_dontcare_label=True, no_instance=False, ngf=8,
                crop_size=128, aspect_ratio=2.0, num_upsampling_layers="more")


@pytest.mark.parametrize("preset,norm", sorted(OFFICIAL_G_PARAMS))
def test_generator_parameter_count(preset, norm):
    assert count_parameters(build_generator(preset, norm, device="meta")) == OFFICIAL_G_PARAMS[(preset, norm)]


@pytest.mark.parametrize("preset", sorted(OFFICIAL_D_PARAMS))
def test_discriminator_parameter_count(preset):
    assert count_parameters(build_discriminator(preset, device="meta")) == OFFICIAL_D_PARAMS[preset]


def _keys(module):
    return {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()}


def _reference_keys(path):
    return {k["key"]: (k["shape"], k["dtype"]) for k in json.loads(path.read_text())["keys"]}


@pytest.mark.parametrize("preset", sorted(REFERENCE_NAMES))
@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_generator_state_dict_keys(reference_dir, preset, norm):
    path = reference_dir / "state_dict_keys" / f"G_{REFERENCE_NAMES[preset]}_{norm.replace('-', '_')}.json"
    assert _keys(build_generator(preset, norm, device="meta")) == _reference_keys(path)


@pytest.mark.parametrize("preset", sorted(REFERENCE_NAMES))
def test_discriminator_state_dict_keys(reference_dir, preset):
    path = reference_dir / "state_dict_keys" / f"D_{REFERENCE_NAMES[preset]}.json"
    assert _keys(build_discriminator(preset, device="meta")) == _reference_keys(path)


@pytest.fixture
def citylike(reference_dir):
    io = torch.load(reference_dir / "equiv" / "clade_citylike.io.pt")
    G = build_generator("custom", "clade", **CITYLIKE)
    load_official_checkpoint(G, reference_dir / "equiv" / "clade_citylike.state_dict.pt")
    return G, io


def test_equivalence_vector_eval(citylike):
    G, io = citylike
    with torch.no_grad():
        out = G.eval()(io["semantic"])
    assert (out - io["out_eval"]).abs().max() < 1e-5


def test_equivalence_vector_train(citylike):
    G, io = citylike
    with torch.no_grad():
        out = G.train()(io["semantic"])
    assert (out - io["out_train"]).abs().max() < 1e-5


def test_semantic_preprocessing_matches_official(citylike):
    G, io = citylike
    assert torch.equal(make_semantic(io["label"], io["instance"], G.config), io["semantic"])


def test_equivalence_vector_is_sensitive_to_classes(citylike):
    """Permuting class ids must change the output: the check above is not vacuous."""
    G, io = citylike
    label = (io["label"] + 1) % G.config.class_nc
    with torch.no_grad():
        out = G.eval()(make_semantic(label, io["instance"], G.config))
    assert (out - io["out_eval"]).abs().max() > 0.1
