"""Official CLADE / SPADE release folders: placed by name, norm and instance edge read from keys."""
import logging

import pytest
import torch

from models import build_generator, save_generator_dir
from models.release import (ReleaseLayoutError, discover_generators, expected_folders, load_release_generator,
                            release_folders)

NGF = 4   # tiny networks; the release code reads ngf from the weights


def _save_official(root, folder, preset, norm, file="latest_net_G.pth", **overrides):
    """A state_dict with the official key layout under the official folder / file names."""
    torch.manual_seed(len(folder))
    G = build_generator(preset, norm, ngf=NGF, **overrides)
    (root / folder).mkdir(parents=True)
    torch.save(G.state_dict(), root / folder / file)
    return G.state_dict()


def _assert_same_weights(G, state):
    loaded = G.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_clade_and_spade_release_layouts_are_placed_and_load(tmp_path, caplog):
    saved = {
        "ade20k": _save_official(tmp_path, "ade20k", "ade20k", "clade", file="best_net_G.pth"),
        "ade20k_dist": _save_official(tmp_path, "ade20k_dist", "ade20k", "clade-icpe"),
        "coco": _save_official(tmp_path, "coco", "coco-stuff", "clade"),
        "cityscapes_pretrained": _save_official(tmp_path, "cityscapes_pretrained", "cityscapes", "spade"),
        "ade20k_outdoor": _save_official(tmp_path, "ade20k_outdoor", "ade20k-outdoor", "clade"),
    }
    with caplog.at_level(logging.INFO, logger="models.release"):
        found = discover_generators(tmp_path)
    by_folder = {e.folder: e for e in found.values()}
    assert {f: (e.preset, e.norm, e.config.no_instance, e.config.ngf) for f, e in by_folder.items()} == {
        "ade20k": ("ade20k", "clade", True, NGF),
        "ade20k_dist": ("ade20k", "clade-icpe", True, NGF),
        "coco": ("coco-stuff", "clade", False, NGF),
        "cityscapes_pretrained": ("cityscapes", "spade", False, NGF),
        "ade20k_outdoor": ("ade20k-outdoor", "clade", True, NGF),
    }
    assert by_folder["ade20k"].path.name == "best_net_G.pth"
    # two CLADE folders: named after their folders; the unique norms keep their norm's name
    assert set(found) == {"ade20k", "coco", "ade20k_outdoor", "clade-icpe", "spade"}
    assert "coco/latest_net_G.pth: preset coco-stuff (folder name), norm clade (keys contain " \
           "'class_specified_affine'), instance edge yes (head_0.conv_0 input width 65 for 64 features)" in caplog.text
    for folder, state in saved.items():
        _assert_same_weights(load_release_generator(by_folder[folder]), state)


def test_spade_edge_is_read_from_the_mlp_width(tmp_path, caplog):
    _save_official(tmp_path, "coco_pretrained", "coco-stuff", "spade", no_instance=True)
    with caplog.at_level(logging.INFO, logger="models.release"):
        entry = discover_generators(tmp_path)["spade"]
    assert entry.config.no_instance is True
    assert "instance edge no (head_0.norm_0.mlp_shared input width 183 for 183 classes; the coco-stuff " \
           "preset has one)" in caplog.text
    load_release_generator(entry)


def test_preset_filter_names_generators_by_norm(tmp_path):
    for folder, preset, norm in (("ade20k", "ade20k", "clade"), ("ade20k_dist", "ade20k", "clade-icpe"),
                                 ("ade20k_pretrained", "ade20k", "spade"), ("coco", "coco-stuff", "clade")):
        _save_official(tmp_path, folder, preset, norm)
    found = discover_generators(tmp_path, preset="ade20k")
    assert {name: e.folder for name, e in found.items()} == {
        "clade": "ade20k", "clade-icpe": "ade20k_dist", "spade": "ade20k_pretrained"}
    assert set(discover_generators(tmp_path, preset="ade20k", taken={"clade"})) == {"ade20k", "clade-icpe", "spade"}
    with pytest.raises(ReleaseLayoutError, match=r"presets \['ade20k', 'coco-stuff'\].*none for preset 'cityscapes'"):
        discover_generators(tmp_path, preset="cityscapes")


def test_keys_win_over_the_folder_suffix(tmp_path, caplog):
    _save_official(tmp_path, "ade20k_pretrained", "ade20k", "clade")
    with caplog.at_level(logging.WARNING, logger="models.release"):
        (entry,) = discover_generators(tmp_path).values()
    assert entry.norm == "clade"
    assert "folder name suggests spade, but the keys (class_specified_affine) say clade" in caplog.text


def test_unknown_folder_lists_the_expected_names(tmp_path):
    _save_official(tmp_path, "my_model", "ade20k", "clade")
    with pytest.raises(ReleaseLayoutError) as err:
        discover_generators(tmp_path)
    message = str(err.value)
    assert "'my_model'" in message
    for name in ("ade20k", "ade20k_dist", "coco_pretrained", "cityscapes_dist", "ade20k_outdoor"):
        assert name in expected_folders() and repr(name) in message


def test_toolkit_folders_and_empty_folders_are_not_release_folders(tmp_path):
    save_generator_dir(build_generator("synthetic", "clade", ngf=NGF), tmp_path / "clade")
    (tmp_path / "notes").mkdir()
    assert release_folders(tmp_path) == []
    assert discover_generators(tmp_path, preset="synthetic") == {}
    assert release_folders(tmp_path / "missing") == []
