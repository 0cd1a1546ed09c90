"""The norm registry: built-ins, errors naming what is registered, what a spec answers."""
import pytest
import torch
from torch import nn

from models import (CLADE, SPADE, ModulatedNorm, build_generator, generator_config, norm_spec, register_norm,
                    registered_norms, unregister_norm)
from models.registry import recognise_norm


class Scaled(ModulatedNorm):
    """A per-channel gain (registered below as if it appended the edge channel, to test extra_channels)."""

    def __init__(self, channels, config):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.gain = nn.Parameter(torch.full((channels,), 2.0))

    def modulation(self, cond, size):
        return self.gain[None, :, None, None], 0.0


@pytest.fixture
def scaled():
    spec = register_norm("test-scaled", Scaled, edge_channel=True, key_markers=("gain",))
    yield spec
    unregister_norm("test-scaled")


def test_built_ins_come_first_with_their_facts():
    assert registered_norms()[:3] == ("spade", "clade", "clade-icpe")
    spade, clade, icpe = (norm_spec(n) for n in ("spade", "clade", "clade-icpe"))
    assert (spade.label, clade.label, icpe.label) == ("SPADE", "CLADE", "CLADE-ICPE")
    assert icpe.needs_icpe and not clade.needs_icpe and not spade.needs_icpe
    assert clade.class_adaptive and icpe.class_adaptive and not spade.class_adaptive
    assert all(s.source is None for s in (spade, clade, icpe))
    assert len({spade.color, clade.color, icpe.color}) == 3


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown norm 'nope'.*'spade', 'clade', 'clade-icpe'"):
        norm_spec("nope")
    with pytest.raises(ValueError, match="registered"):
        build_generator("synthetic", "nope")


def test_duplicate_registration_is_refused(scaled):
    with pytest.raises(ValueError, match="already registered"):
        register_norm("test-scaled", Scaled)
    with pytest.raises(ValueError, match="already registered"):
        register_norm("spade", SPADE)


def test_a_class_must_be_a_modulated_norm():
    with pytest.raises(TypeError, match="ModulatedNorm"):
        register_norm("test-conv", nn.Conv2d)
    assert "test-conv" not in registered_norms()


def test_extra_channels_follow_the_edge_flag_and_the_config(scaled):
    with_instances = generator_config("synthetic", "clade")
    without = generator_config("synthetic", "clade", no_instance=True)
    assert norm_spec("clade").extra_channels(with_instances) == 1
    assert norm_spec("clade").extra_channels(without) == 0
    assert norm_spec("spade").extra_channels(with_instances) == 0
    assert scaled.extra_channels(with_instances) == 1
    assert scaled.source == __file__


def test_a_plugin_is_recognised_in_a_checkpoint_by_its_markers(scaled):
    assert recognise_norm(build_generator("synthetic", "clade-icpe", ngf=4).state_dict()) == "clade-icpe"
    assert recognise_norm(build_generator("synthetic", "clade", ngf=4).state_dict()) == "clade"
    assert recognise_norm(build_generator("synthetic", "spade", ngf=4).state_dict()) == "spade"
    assert recognise_norm(["head_0.norm_0.gain"]) == "test-scaled"
    assert recognise_norm(["conv_img.weight"]) is None


def test_built_ins_cannot_be_unregistered():
    with pytest.raises(ValueError, match="built in"):
        unregister_norm("clade")
    assert isinstance(norm_spec("clade").build(8, generator_config("synthetic", "clade")), CLADE)
