"""Spectral norm as the official code applies it, with a cheaper training forward.

The official layers use torch's hook-based ``spectral_norm`` (``state_dict`` keys
``weight_orig``, ``weight_u``, ``weight_v``), which divides the whole weight by its largest
singular value sigma on every training forward: ``conv(x, W / sigma)``. For the generator's
1024-channel 3x3 convs that is a 9.4M-element division forward and several weight-sized
passes backward, per conv and step, whatever the batch. A conv is linear in its input, so

    conv(x, W / sigma) + b == conv(x / sigma, W) + b

and :class:`InputScaledSpectralNorm` divides the input instead whenever the input has fewer
elements than the weight (the low-resolution, wide layers). sigma, the power iteration and
the updates of ``weight_u`` / ``weight_v`` are the official ones; results agree up to
rounding (tests/models/test_spectral.py; under autocast a bf16 input is rounded after the
division, where the official path rounds W / sigma). Eval-mode forwards keep the official computation.
:func:`set_input_scaling` (``TrainRecipe.spectral_input_scaling``) switches it off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as torch_spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm


class InputScaledSpectralNorm(SpectralNorm):
    """torch's spectral-norm hook that, in training, divides the conv's input by sigma when
    the input is smaller than the weight (see the module docstring)."""

    input_scaling = True

    @classmethod
    def replacing(cls, hook: SpectralNorm) -> InputScaledSpectralNorm:
        """The same hook (name, power iterations, dim, eps) with input scaling."""
        return cls(hook.name, hook.n_power_iterations, hook.dim, hook.eps)

    def applies(self, module: nn.Module, x) -> bool:
        """Whether this call divides the input (training, conv, input smaller than weight)."""
        return (self.input_scaling and module.training and isinstance(module, nn.modules.conv._ConvNd)
                and isinstance(x, torch.Tensor) and x.numel() < getattr(module, self.name + "_orig").numel())

    def sigma(self, module: nn.Module) -> torch.Tensor:
        """The largest singular value as ``SpectralNorm.compute_weight`` estimates it in training
        (same power iteration, in-place ``u`` / ``v`` updates and clones), without dividing the
        weight by it.

        A channels_last weight is read in its stored order (columns kh, kw, in; ``v`` permuted
        to match): reshaping it to the official [out, in*kh*kw] matrix would copy it each call.
        """
        weight = getattr(module, self.name + "_orig")
        u = getattr(module, self.name + "_u")
        v = getattr(module, self.name + "_v")
        stored_order = self.dim == 0 and weight.dim() == 4 and not weight.is_contiguous() \
            and weight.is_contiguous(memory_format=torch.channels_last)
        if stored_order:
            out_c, in_c, kh, kw = weight.shape
            weight_mat = weight.permute(0, 2, 3, 1).reshape(out_c, -1)  # a view

            def to_mat(vec):    # official column order (in, kh, kw) -> stored (kh, kw, in)
                return vec.view(in_c, kh, kw).permute(1, 2, 0).reshape(-1)

            def from_mat(vec):  # stored -> official
                return vec.view(kh, kw, in_c).permute(2, 0, 1).reshape(-1)
        else:
            weight_mat = self.reshape_weight_to_matrix(weight)
            to_mat = from_mat = _identity
        with torch.no_grad():
            for _ in range(self.n_power_iterations):
                v.copy_(from_mat(F.normalize(torch.mv(weight_mat.t(), u), dim=0, eps=self.eps)))
                u = F.normalize(torch.mv(weight_mat, to_mat(v)), dim=0, eps=self.eps, out=u)
            if self.n_power_iterations > 0:  # the buffers change again at the next forward
                u = u.clone(memory_format=torch.contiguous_format)
                v = v.clone(memory_format=torch.contiguous_format)
        return torch.dot(u, torch.mv(weight_mat, to_mat(v)))

    def __call__(self, module: nn.Module, inputs):
        x = inputs[0] if inputs else None
        if not self.applies(module, x):
            return super().__call__(module, inputs)
        sigma = self.sigma(module)
        weight = getattr(module, self.name + "_orig")
        # A view, not the Parameter itself: setattr of a Parameter would register a new one.
        setattr(module, self.name, weight.view_as(weight))
        return (x * sigma.reciprocal(), *inputs[1:])


def _identity(vec: torch.Tensor) -> torch.Tensor:
    return vec


def spectral_norm(module: nn.Module) -> nn.Module:
    """torch's ``spectral_norm(module)`` (official keys and checkpoint hooks) with the
    :class:`InputScaledSpectralNorm` forward."""
    torch_spectral_norm(module)
    hooks = module._forward_pre_hooks
    for key, hook in hooks.items():
        if type(hook) is SpectralNorm:
            hooks[key] = InputScaledSpectralNorm.replacing(hook)
    return module


def maybe_spectral(module: nn.Module, enabled: bool) -> nn.Module:
    """:func:`spectral_norm` when ``enabled`` (keys ``weight_orig/_u/_v``, as in official checkpoints)."""
    return spectral_norm(module) if enabled else module


def set_input_scaling(root: nn.Module, enabled: bool) -> None:
    """Turn :class:`InputScaledSpectralNorm`'s input scaling on or off for every layer under
    ``root`` (off = the official ``conv(x, W / sigma)`` in training too)."""
    for module in root.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, InputScaledSpectralNorm):
                hook.input_scaling = enabled
