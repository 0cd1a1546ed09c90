"""One registry of modulation (normalization) layers: each kind declared once.

An entry carries everything the rest of the toolkit asks about a kind: how to build one layer,
its display name and colour, whether the generator needs the ICPE map, whether it appends
the instance-edge channel, whether its scale/shift depend on the class only, and which
state_dict key substrings identify it in a checkpoint. Adding a layer is one class plus one
call:

    class MyNorm(ModulatedNorm):
        def __init__(self, channels, config): ...
        def modulation(self, cond, size): ...   # -> (scale, shift)
    register_norm("my-norm", MyNorm, label="Mine", color="#9467bd")
    G = build_generator("synthetic", "my-norm")
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from torch import nn

from .norms import CLADE, SPADE, ModulatedNorm


@dataclass(frozen=True)
class NormSpec:
    """Everything the toolkit needs to know about one kind of modulation layer."""

    name: str
    build: Callable[[int, Any], nn.Module]  # (channels, models.presets.GeneratorConfig) -> one layer
    label: str                       # display name, e.g. "CLADE-ICPE"
    color: str                       # matplotlib colour
    needs_icpe: bool = False         # the generator needs dist=<ICPE map [N, 2, H, W]>
    edge_channel: bool = False       # the toolkit appends the instance-edge feature channel (inst_conv) when the config has instance maps
    class_adaptive: bool = False     # scale/shift from the class (CLADE family): nothing for the convert stage to do
    key_markers: tuple[str, ...] = ()  # state_dict key substrings that identify this kind in a checkpoint
    source: str | None = None        # file of the plugin that registered it; None for built-ins

    def extra_channels(self, config) -> int:
        """Channels the layer adds to its input (the instance-edge feature, when present)."""
        return int(self.edge_channel and not config.no_instance)


_REGISTRY: dict[str, NormSpec] = {}
# Colours of registered norms that gave none (matplotlib's tab10 after the built-ins' three).
_SPARE_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def register_norm(name: str, cls: type | None, *, build: Callable | None = None, label: str | None = None,
                  color: str | None = None, needs_icpe: bool = False, edge_channel: bool = False,
                  class_adaptive: bool = False, key_markers: Iterable[str] = (),
                  source: str | None = None) -> NormSpec:
    """Declare a normalization kind ``name``; returns its :class:`NormSpec`.

    ``cls(channels, config)`` builds one layer unless ``build`` is given; ``cls`` must subclass
    :class:`models.ModulatedNorm`. ``source`` defaults to the caller's file. Raises ValueError
    if ``name`` is taken.
    """
    if name in _REGISTRY:
        raise ValueError(f"norm {name!r} is already registered (by {_REGISTRY[name].source or 'models.registry'}); "
                         f"choose another name")
    if build is None:
        if not (isinstance(cls, type) and issubclass(cls, ModulatedNorm)):
            raise TypeError(f"register_norm({name!r}, {cls!r}): expected a subclass of models.ModulatedNorm "
                            f"(built as cls(channels, config)) or build=<callable(channels, config)>")
        build = cls
    if source is None:
        caller = inspect.currentframe().f_back.f_code.co_filename
        source = None if caller == __file__ else caller
    spec = NormSpec(name=name, build=build, label=label or name,
                    color=color or _SPARE_COLORS[len(_REGISTRY) % len(_SPARE_COLORS)],
                    needs_icpe=needs_icpe, edge_channel=edge_channel, class_adaptive=class_adaptive,
                    key_markers=tuple(key_markers), source=source)
    _REGISTRY[name] = spec
    return spec


def unregister_norm(name: str) -> NormSpec:
    """Remove a norm registered by a plugin (tests, notebooks re-running a cell); returns its spec.
    The built-ins stay."""
    spec = norm_spec(name)
    if spec.source is None:
        raise ValueError(f"norm {name!r} is built in and cannot be unregistered")
    return _REGISTRY.pop(name)


def norm_spec(name: str) -> NormSpec:
    """The spec of a registered norm; ValueError listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; registered: {list(_REGISTRY)} "
                         f"(add one with models.register_norm)") from None


def registered_norms() -> tuple[str, ...]:
    """Names of the registered norms, built-ins first."""
    return tuple(_REGISTRY)


def recognise_norm(keys: Iterable[str]) -> str | None:
    """The registered norm whose ``key_markers`` all occur in some state_dict key (the most
    specific one when several match), or None."""
    keys = list(keys)
    matches = [spec for spec in _REGISTRY.values()
               if spec.key_markers and all(any(m in k for k in keys) for m in spec.key_markers)]
    return max(matches, key=lambda s: len(s.key_markers)).name if matches else None


def _spade(channels: int, config) -> SPADE:
    return SPADE(channels, config.semantic_nc, config.spade_hidden, config.spade_kernel_size,
                 config.param_free_norm)


def _clade(icpe: bool):
    def build(channels: int, config) -> CLADE:
        return CLADE(channels, config.class_nc, icpe=icpe, norm=config.param_free_norm)
    return build


register_norm("spade", SPADE, build=_spade, label="SPADE", color="#d62728", key_markers=("mlp_shared", "mlp_gamma"))
register_norm("clade", CLADE, build=_clade(False), label="CLADE", color="#1f77b4", edge_channel=True,
              class_adaptive=True, key_markers=("class_specified_affine",))
register_norm("clade-icpe", CLADE, build=_clade(True), label="CLADE-ICPE", color="#2ca02c", needs_icpe=True,
              edge_channel=True, class_adaptive=True, key_markers=("class_specified_affine", "dist_conv_w"))


def build_norm(config, channels: int) -> nn.Module:
    """The modulation layer that ``config.norm`` names, for ``channels`` feature channels, with the
    instance-edge channel (``inst_conv``, see ``models.norms.ModulatedNorm``) when its entry asks for it."""
    spec = norm_spec(config.norm)
    layer = spec.build(channels, config)
    if spec.extra_channels(config):
        # Registered after the layer's own modules, as the official CLADE does: the same
        # initialisation order, so the same weights from the same seed.
        layer.inst_conv = nn.Conv2d(1, 1, kernel_size=1)
    return layer
