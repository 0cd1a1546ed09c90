"""Official-checkpoint loading: round trips, file errors, and mismatch diagnosis."""
import pytest
import torch

from models import CheckpointMismatchError, build_discriminator, build_generator, load_official_checkpoint
from models.checkpoint import save_state_dict_atomic, suggest_configs

TINY = dict(label_nc=4, ngf=4, crop_size=32)


@pytest.mark.parametrize("norm", ["spade", "clade", "clade-icpe"])
def test_round_trip_through_file(tmp_path, norm):
    G = build_generator("custom", norm, **TINY)
    path = tmp_path / "latest_net_G.pth"
    save_state_dict_atomic(G.state_dict(), path)
    H = build_generator("custom", norm, **TINY)
    load_official_checkpoint(H, path)
    for k, v in G.state_dict().items():
        assert torch.equal(v, H.state_dict()[k]), k


def test_ddp_prefix_is_accepted():
    G = build_generator("custom", "clade", **TINY)
    state = {"module." + k: v for k, v in G.state_dict().items()}
    torch.manual_seed(1)   # another initialisation, so equal weights can only come from the file
    H = load_official_checkpoint(build_generator("custom", "clade", **TINY), state)
    assert list(H.state_dict()) == list(G.state_dict())
    assert all(torch.equal(v, H.state_dict()[k]) for k, v in G.state_dict().items())


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope_net_G.pth"):
        load_official_checkpoint(build_generator("custom", "clade", **TINY), tmp_path / "nope_net_G.pth")


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="latest_net_G.pth.*could not be read"):
        load_official_checkpoint(build_generator("custom", "clade", **TINY), path)


def test_mismatch_lists_keys_and_the_fitting_config():
    spade_state = build_generator("ade20k", "spade", device="meta").state_dict()
    G = build_generator("ade20k", "clade", device="meta")
    with pytest.raises(CheckpointMismatchError) as err:
        load_official_checkpoint(G, spade_state)
    msg = str(err.value)
    assert "missing keys: head_0.norm_0.class_specified_affine.weight" in msg
    assert "unexpected keys:" in msg and "mlp_shared" in msg
    assert "preset='ade20k', norm='spade'" in msg


def test_wrong_shapes_are_listed_with_both_shapes():
    coco_state = build_generator("coco-stuff", "clade", device="meta").state_dict()
    G = build_generator("cityscapes", "clade", device="meta")
    with pytest.raises(CheckpointMismatchError) as err:
        load_official_checkpoint(G, coco_state)
    msg = str(err.value)
    assert "fc.weight (expected (1024, 36, 3, 3), found (1024, 184, 3, 3))" in msg
    assert "preset='coco-stuff', norm='clade'" in msg


def test_custom_generator_gets_custom_suggestion():
    state = build_generator("custom", "clade-icpe", label_nc=9, ngf=8, crop_size=64).state_dict()
    assert suggest_configs(state) == [
        "preset='custom', norm='clade-icpe', ngf=8, no_instance=False with label_nc + dontcare = 9"]


def test_discriminator_suggestion():
    state = build_discriminator("coco-stuff", device="meta").state_dict()
    assert suggest_configs(state) == ["preset='coco-stuff'"]


def test_generator_dir_round_trip(tmp_path):
    from models import load_generator_dir, save_generator_dir
    G = build_generator("synthetic", "clade-icpe", ngf=4)
    save_generator_dir(G, tmp_path / "clade-icpe")
    H = load_generator_dir(tmp_path / "clade-icpe")
    assert H.config == G.config
    assert all(torch.equal(v, H.state_dict()[k]) for k, v in G.state_dict().items())


def test_generator_dir_without_config_names_the_file(tmp_path):
    from models import load_generator_dir
    with pytest.raises(FileNotFoundError, match="generator.json"):
        load_generator_dir(tmp_path)


def test_modulation_override_replaces_scale_and_shift():
    G = build_generator("synthetic", "clade", ngf=4).eval()
    semantic = torch.zeros(1, G.config.semantic_nc, 64, 64)
    semantic[:, 0] = 1
    with torch.no_grad():
        before = G(semantic)
        for m in G.modules():
            if hasattr(m, "modulation_override"):
                m.modulation_override = lambda cond, size: (0.0, 0.0)
        after = G(semantic)
    assert (before - after).abs().max() > 1e-4
