"""Outputs equal the official code's on six seeded tiny generators (no ../shared needed).

The official outputs and calibrated buffers are vendored in tests/reference/official_seeded.npz;
parameters and inputs are redrawn by tests/seeded.py (procedure: tests/reference/README.md).
"""
import pytest
import torch

from models import build_generator, fuse_for_inference
from tests.seeded import CASES, load_case, seeded_fill, semantic_input

# The official outputs were computed with 2 CPU threads; at that count the reference path
# matches bit for bit (0.0). Other thread counts (the test suite runs on 1) or CPUs change the
# summation order of SPADE's convolutions: 7.2e-6 / 8.2e-6 then (CLADE cases stay 0.0).
REFERENCE_TOL = 1e-5
FAST_TOL = 1e-4
# The official options of each instance setting: ade20k-like without instance maps,
# coco-like with instance edges; both with dontcare, label_nc 5, ngf 4, 64x64.
PRESET = {"noinst": "ade20k", "inst": "coco"}


def fused(G):
    """The fused inference model of ``G`` (models.fuse_for_inference)."""
    return fuse_for_inference(G.eval())


def _case(case):
    data = load_case(case)
    meta = data["meta"]
    mode, inst = case.rsplit("_", 1)
    G = build_generator(PRESET[inst], mode, label_nc=meta["label_nc"], ngf=meta["ngf"],
                        crop_size=meta["size"])
    cfg = G.config
    assert (cfg.contain_dontcare_label, not cfg.no_instance) == (
        bool(meta["contain_dontcare_label"]), bool(meta["has_instance"]))
    float_keys = {k for k, v in G.state_dict().items() if v.is_floating_point()}
    param_keys = {k for k, _ in G.named_parameters()}
    assert float_keys - param_keys == set(data["buffers"]), "buffer keys differ from the official network's"
    seeded_fill(G, meta["seed"], data["buffers"])
    semantic, dist = semantic_input(meta["seed"] + 1, cfg.class_nc, meta["size"], meta["size"],
                                    bool(meta["has_instance"]))
    assert semantic.shape[1] == cfg.semantic_nc
    return G, semantic, dist if cfg.norm == "clade-icpe" else None, data["output"]


@pytest.mark.parametrize("case", CASES)
def test_reference_path_matches_official(case):
    G, semantic, dist, official = _case(case)
    with torch.enable_grad():  # autograd on: the plain reference computation, no fast path
        out = G.eval()(semantic, None, dist).detach()
    diff = (out - official).abs().max().item()
    print(f"{case}: reference path max |diff| = {diff:.3g}")
    assert diff <= REFERENCE_TOL, f"{case}: max |ours - official| = {diff:.3g} > {REFERENCE_TOL}"


@pytest.mark.parametrize("case", CASES)
def test_fast_path_matches_official(case):
    G, semantic, dist, official = _case(case)
    with torch.no_grad():
        out = fused(G)(semantic, None, dist)
    diff = (out - official).abs().max().item()
    print(f"{case}: fast path max |diff| = {diff:.3g}")
    assert diff <= FAST_TOL, f"{case}: max |fast - official| = {diff:.3g} > {FAST_TOL}"


def test_seeded_fill_changes_outputs():
    """A different seed gives a different output: the comparison depends on the drawn weights."""
    G, semantic, dist, official = _case("clade_inst")
    data = load_case("clade_inst")
    seeded_fill(G, data["meta"]["seed"] + 7, data["buffers"])
    with torch.enable_grad():
        out = G.eval()(semantic, None, dist).detach()
    assert (out - official).abs().max() > 1e-2
