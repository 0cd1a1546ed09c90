"""Network presets (the dataset facts of ``data.presets`` plus network options) and the
generator / discriminator configs built from them.

Option names follow the official SPADE/CLADE command line (``label_nc``, ``no_instance``,
``num_upsampling_layers``...) so users of the official code can override them by name:

    cfg = generator_config("ade20k", "clade", ngf=32, crop_size=128)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from data.icpe import DEFAULT_MODE, MODES as ICPE_MODES
from data.presets import DATASETS, OFFICIAL_PRESETS, canonical_preset  # noqa: F401 (OFFICIAL_PRESETS: models API)

from .registry import norm_spec, registered_norms

UPSAMPLING_DEPTHS = {"normal": 5, "more": 6, "most": 7}
# The ICPE mode (data.icpe.MODES) train.py and the Trainer's datasets use: a config of a norm that
# needs ICPE gets it unless told otherwise. The official CLADE release was trained with "official".
TOOLKIT_ICPE_MODE = DEFAULT_MODE
OFFICIAL_ICPE_MODE = "official"

# Network options of the official dataset classes, on top of the dataset facts of data.presets.
UPSAMPLING_BY_PRESET = {"cityscapes": "more"}  # every other preset: "normal"
PRESETS: dict[str, dict] = {name: {**facts, "num_upsampling_layers": UPSAMPLING_BY_PRESET.get(name, "normal")}
                            for name, facts in DATASETS.items()}


def canonical_norm(norm: str) -> str:
    """Return the registered norm name ('clade_icpe' is accepted for 'clade-icpe')."""
    if norm in registered_norms():
        return norm
    return norm_spec(norm.replace("_", "-").lower()).name


# Smallest and largest accepted value of the numeric options (a config from a hand-edited
# generator.json or --set must not build a network that cannot exist or fill the memory).
_RANGES = {"label_nc": (1, 100_000), "ngf": (1, 4096), "crop_size": (1, 16_384), "aspect_ratio": (1e-3, 1e3),
           "z_dim": (1, 100_000), "spade_hidden": (1, 16_384), "spade_kernel_size": (1, 31), "ndf": (1, 4096),
           "n_layers_D": (1, 16), "num_D": (1, 8), "output_nc": (1, 64)}
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_fields(config) -> None:
    """ValueError naming the option, its value and the expectation for a wrongly typed or
    out-of-range option ('8' for 8, 'false' for False, 0 or 1e6 channels)."""
    name = type(config).__name__
    for f in fields(config):
        value, kinds = getattr(config, f.name), _TYPES.get(str(f.type))
        if kinds is None:
            continue
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise ValueError(f"{name}.{f.name}={value!r} ({type(value).__name__}); expected {f.type}")
        low, high = _RANGES.get(f.name, (None, None))
        if low is not None and not low <= value <= high:
            raise ValueError(f"{name}.{f.name}={value!r}; expected a value from {low} to {high}")


@dataclass(frozen=True)
class LabelConfig:
    """How the semantic input is laid out; shared by generator and discriminator."""

    label_nc: int = 182                  # classes, without the dontcare class
    contain_dontcare_label: bool = True  # one extra class channel for 'unknown' (raw 255)
    no_instance: bool = False            # if False, an instance-edge channel comes last

    def __post_init__(self):
        _check_fields(self)

    @property
    def class_nc(self) -> int:
        """Number of class channels of the one-hot map (label_nc + dontcare)."""
        return self.label_nc + int(self.contain_dontcare_label)

    @property
    def semantic_nc(self) -> int:
        """Channels of the generator / discriminator semantic input."""
        return self.class_nc + int(not self.no_instance)


@dataclass(frozen=True)
class GeneratorConfig(LabelConfig):
    """Every option of the SPADE / CLADE / CLADE-ICPE generator."""

    norm: str = "spade"                  # a registered norm: spade | clade | clade-icpe | ...
    ngf: int = 64                        # channels of the last block; the first has 16 * ngf
    crop_size: int = 256                 # output width
    aspect_ratio: float = 1.0            # width / height
    num_upsampling_layers: str = "normal"  # normal (5) | more (6) | most (7) upsamplings
    use_vae: bool = False                # start from z (fc is Linear) instead of the segmap
    z_dim: int = 256                     # size of z when use_vae
    spade_hidden: int = 128              # SPADE's shared MLP width (hard-coded officially)
    spade_kernel_size: int = 3           # SPADE conv kernel; 1 makes SPADE purely per-pixel
    param_free_norm: str = "batch"       # batch (official 'syncbatch') | instance
    spectral: bool = True                # spectral norm on the residual convs
    # How the ICPE maps it was trained on were computed (data.icpe.MODES: "official" for the
    # official CLADE release, "corrected" for train.py); it must be fed maps of this mode. Set
    # for norms that need ICPE (default TOOLKIT_ICPE_MODE), None for the others.
    icpe_mode: str | None = None

    def __post_init__(self):
        super().__post_init__()
        spec = norm_spec(self.norm)  # ValueError listing the registered norms
        if self.icpe_mode is not None and self.icpe_mode not in ICPE_MODES:
            raise ValueError(f"GeneratorConfig.icpe_mode={self.icpe_mode!r}; expected one of {list(ICPE_MODES)} "
                             f"(how the ICPE maps the generator was trained on were computed)")
        # Frozen dataclass: the normalised value is set once, here.
        object.__setattr__(self, "icpe_mode", (self.icpe_mode or TOOLKIT_ICPE_MODE) if spec.needs_icpe else None)
        if self.num_upsampling_layers not in UPSAMPLING_DEPTHS:
            raise ValueError(f"num_upsampling_layers={self.num_upsampling_layers!r}; "
                             f"expected one of {list(UPSAMPLING_DEPTHS)}")
        if self.param_free_norm not in ("batch", "instance"):
            raise ValueError(f"param_free_norm={self.param_free_norm!r}; expected 'batch' or 'instance'")
        if self.spade_kernel_size % 2 != 1:
            raise ValueError(f"spade_kernel_size={self.spade_kernel_size}; expected an odd size")
        if self.latent_size[0] < 1 or self.latent_size[1] < 1:
            raise ValueError(f"crop_size={self.crop_size} with aspect_ratio={self.aspect_ratio} and "
                             f"num_upsampling_layers={self.num_upsampling_layers!r} gives an empty "
                             f"latent map; crop_size must be at least {2 ** self.num_up_layers}")

    @property
    def num_up_layers(self) -> int:
        return UPSAMPLING_DEPTHS[self.num_upsampling_layers]

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the first feature map, as the official compute_latent_vector_size."""
        sw = self.crop_size // 2 ** self.num_up_layers
        return round(sw / self.aspect_ratio), sw

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the generated image; the semantic input must have this size."""
        sh, sw = self.latent_size
        return sh * 2 ** self.num_up_layers, sw * 2 ** self.num_up_layers


@dataclass(frozen=True)
class DiscriminatorConfig(LabelConfig):
    """Options of the official multiscale patch discriminator (spectral instance norm)."""

    ndf: int = 64          # channels of the first layer
    n_layers_D: int = 4    # conv layers with stride 2 in each scale (official train default)
    num_D: int = 2         # number of scales
    output_nc: int = 3     # image channels concatenated to the semantic map

    @property
    def input_nc(self) -> int:
        return self.semantic_nc + self.output_nc


def _resolve(cls, preset: str, overrides: dict, **fixed):
    name = canonical_preset(preset)
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; valid: {sorted(valid)}")
    options = {k: v for k, v in PRESETS[name].items() if k in valid}
    options.update(fixed)
    options.update(overrides)
    if name == "custom" and "label_nc" not in options:
        raise ValueError("preset 'custom' needs label_nc=<number of classes without dontcare>")
    return cls(**options)


def generator_config(preset: str, norm: str, **overrides) -> GeneratorConfig:
    """Resolve a preset plus official-name overrides into a GeneratorConfig."""
    return _resolve(GeneratorConfig, preset, overrides, norm=canonical_norm(norm))


def discriminator_config(preset: str, **overrides) -> DiscriminatorConfig:
    """Resolve a preset plus overrides into a DiscriminatorConfig."""
    return _resolve(DiscriminatorConfig, preset, overrides)


def label_config(config: LabelConfig) -> LabelConfig:
    """The label layout part of any config (used to match G and D inputs)."""
    return LabelConfig(config.label_nc, config.contain_dontcare_label, config.no_instance)


def config_to_dict(config) -> dict:
    """Plain dict of a config, for JSON provenance."""
    return asdict(config)


def with_options(config, **overrides):
    """Copy of a config with some options changed (validated again)."""
    return replace(config, **overrides)
