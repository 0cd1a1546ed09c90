"""models.spectral: input-scaled spectral norm equals torch's (official) hook, and takes effect."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import spectral_norm as torch_spectral_norm

from models import build_generator
from models.spectral import InputScaledSpectralNorm, maybe_spectral, set_input_scaling


def _pair(cin, cout, *, channels_last=False, bias=True):
    """(our spectral conv, torch's spectral conv) with identical weights and u / v."""
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    official = torch_spectral_norm(copy.deepcopy(conv))
    ours = maybe_spectral(conv, True)
    ours.load_state_dict(official.state_dict())
    if channels_last:
        ours.to(memory_format=torch.channels_last)
    return ours, official


def _steps(ours, official, x_shape, steps=3):
    """Forward + backward both ``steps`` times; yields (ours, official) tensors to compare."""
    x = torch.randn(x_shape, requires_grad=True)
    x_off = x.detach().clone().requires_grad_()
    for _ in range(steps):
        y, y_off = ours(x), official(x_off)
        grad = torch.randn_like(y)
        (y * grad).sum().backward()
        (y_off * grad).sum().backward()
        yield {"output": (y, y_off), "input grad": (x.grad, x_off.grad),
               "weight grad": (ours.weight_orig.grad, official.weight_orig.grad),
               "u": (ours.weight_u, official.weight_u), "v": (ours.weight_v, official.weight_v)}


def _assert_close(a, b, name):
    """Equal up to fp32 rounding, relative to the tensor's largest value (gradients reach ~50)."""
    error, scale = (a - b).abs().max().item(), max(1.0, b.abs().max().item())
    assert error <= 2e-6 * scale, f"{name}: max abs difference {error} (scale {scale})"


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_input_scaling_matches_official_training(channels_last, bias):
    ours, official = _pair(48, 64, channels_last=channels_last, bias=bias)
    x_shape = (2, 48, 4, 4)  # 1536 input elements < 27648 weight elements: the input is scaled
    assert ours._forward_pre_hooks[next(iter(ours._forward_pre_hooks))].applies(ours, torch.empty(x_shape))
    for pairs in _steps(ours, official, x_shape):
        for name, (a, b) in pairs.items():
            _assert_close(a, b, name)
    if bias:
        _assert_close(ours.bias.grad, official.bias.grad, "bias grad")
    # The weight was never divided: the conv used a view of weight_orig.
    assert ours.weight._base is ours.weight_orig


def test_larger_input_and_switched_off_are_the_official_computation():
    ours, official = _pair(4, 8)
    for pairs in _steps(ours, official, (2, 4, 16, 16)):   # input larger than the weight
        for name, (a, b) in pairs.items():
            assert torch.equal(a, b), name
    ours, official = _pair(48, 64)
    set_input_scaling(ours, False)
    for pairs in _steps(ours, official, (2, 48, 4, 4)):
        for name, (a, b) in pairs.items():
            assert torch.equal(a, b), name


def test_eval_mode_is_the_official_computation():
    ours, official = _pair(48, 64)
    ours.eval(), official.eval()
    x = torch.randn(2, 48, 4, 4)
    assert torch.equal(ours(x), official(x))


def test_keys_and_hooks_are_torch_spectral_norm():
    ours, official = _pair(48, 64)
    assert list(ours.state_dict()) == list(official.state_dict())
    hooks = list(ours._forward_pre_hooks.values())
    assert len(hooks) == 1 and type(hooks[0]) is InputScaledSpectralNorm
    torch.nn.utils.remove_spectral_norm(ours)  # torch's own tools still recognise it
    assert "weight" in dict(ours.named_parameters())


def test_generator_convs_use_it_and_the_recipe_switch_reaches_them():
    G = build_generator("synthetic", "clade", ngf=8)
    hooks = [h for m in G.modules() for h in m._forward_pre_hooks.values() if isinstance(h, InputScaledSpectralNorm)]
    assert hooks and all(h.input_scaling for h in hooks)
    set_input_scaling(G, False)
    assert not any(h.input_scaling for h in hooks)
