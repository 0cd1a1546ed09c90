"""Load official ``*_net_G.pth`` / ``*_net_D.pth`` files, and say what fits when they don't.

Our module names are the official ones, so the official ``state_dict`` loads as is; the
work here is reading files safely and explaining mismatches. One reader says what a generator
file holds (:func:`inspect`: norm, width, VAE, prefix, the ``generator.json`` beside it) and one
loader builds any generator from it (:func:`load_generator`: a folder written by
``save_generator_dir`` / train.py, an official weight file or release folder with a preset):

    info = inspect("30_net_G.pth")                  # CheckpointInfo(norm='spade', ngf=64, ...)
    G = load_generator("30_net_G.pth", preset="ade20k")
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from fileio import load_weights, refuse_non_finite, save_torch_atomic, write_json_atomic

from .build import build_discriminator, build_generator, build_generator_from_config
from .presets import OFFICIAL_ICPE_MODE, OFFICIAL_PRESETS, GeneratorConfig, config_to_dict, generator_config
from .registry import norm_spec, recognise_norm, registered_norms

log = logging.getLogger(__name__)

GENERATOR_WEIGHTS = "latest_net_G.pth"
# Generator weight files of a folder, in order of preference (the official releases ship best_net_G.pth).
WEIGHT_FILES = ("best_net_G.pth", GENERATOR_WEIGHTS)
GENERATOR_CONFIG = "generator.json"
PLUGIN_FILE_KEY = "plugin_file"  # generator.json: the plugin file that registered the norm (plugin norms only)
ICPE_MODE_KEY = "icpe_mode"      # generator.json: GeneratorConfig.icpe_mode (norms that need ICPE)
# What a generator.json of a norm that needs ICPE but without ICPE_MODE_KEY was trained with:
# such files come from train.py / the Trainer before the mode was recorded, which trained "corrected".
LEGACY_ICPE_MODE = "corrected"  # a historical fact: it must not follow a later change of the default mode
# Keys of a train.py checkpoint.pt (training.trainer.Trainer.state_dict), not of a network.
TRAINING_KEYS = {"G", "D", "opt_G", "opt_D", "step"}


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes differ from the module's."""


class PluginNotLoadedError(ValueError):
    """A generator.json names a norm registered by a plugin file that is not loaded."""


def read_state_dict(path_or_state_dict) -> tuple[dict, str]:
    """(state_dict, description of its source) from a path or an in-memory dict."""
    if isinstance(path_or_state_dict, dict):
        return dict(path_or_state_dict), "the given state_dict"
    path = Path(path_or_state_dict)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; expected an official "
                                f"'<epoch>_net_G.pth' / '<epoch>_net_D.pth' file")
    state = load_weights(path, what="checkpoint", expected="expected a state_dict saved by torch.save")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(state).__name__}; expected a state_dict")
    if TRAINING_KEYS <= set(state):
        raise ValueError(f"checkpoint {str(path)!r} is a training checkpoint of train.py (networks, optimizers "
                         f"and step); load it with training.trainer.Trainer.load_checkpoint, or use the generator "
                         f"folder the run exports (<run>/generator/{GENERATOR_WEIGHTS} + {GENERATOR_CONFIG})")
    not_tensors = sorted(k for k, v in state.items() if not torch.is_tensor(v))
    if not_tensors:
        raise ValueError(f"checkpoint {str(path)!r} is not a plain state_dict: {len(not_tensors)} entries are not "
                         f"tensors ({_abbrev(not_tensors)}); expected parameter name -> tensor")
    return state, repr(str(path))


def _strip_wrapper_prefix(state: dict) -> dict:
    # DataParallel / DDP checkpoints prefix every key with 'module.'.
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def compare_state_dicts(expected: dict, found: dict) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, [(key, expected shape, found shape)]), in module order."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [(k, tuple(expected[k].shape), tuple(found[k].shape)) for k in expected
             if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    return missing, unexpected, wrong


def _shapes(module: nn.Module) -> dict:
    return {k: v.shape for k, v in module.state_dict().items()}


def suggest_configs(state: dict) -> list[str]:
    """Official presets/options whose networks have exactly these keys and shapes."""
    found = {k: torch.Size(v.shape) for k, v in _strip_wrapper_prefix(state).items()}
    if "conv_img.weight" in found:
        ngf = _infer_ngf(found)
        options = dict(ngf=ngf, use_vae=len(found["fc.weight"]) == 2,
                       num_upsampling_layers="most" if any(k.startswith("up_4.") for k in found) else "normal")
        recognised = recognise_norm(found)
        norms = [recognised] if recognised else registered_norms()
        candidates = [(f"preset={p!r}, norm={n!r}", lambda p=p, n=n: build_generator(p, n, device="meta", **options))
                      for p in OFFICIAL_PRESETS for n in norms]
        extra = ", ".join(f"{k}={v!r}" for k, v in options.items() if (k, v) != ("use_vae", False)
                          and (k, v) != ("num_upsampling_layers", "normal") and (k, v) != ("ngf", 64))
        fits = [desc + (f", {extra}" if extra else "") for desc, build in candidates if _shapes(build()) == found]
        return fits or [_describe_custom_generator(found, ngf, recognised)]
    if "discriminator_0.model0.0.weight" in found:
        first = found["discriminator_0.model0.0.weight"]
        options = dict(ndf=first[0], num_D=len({k.split(".")[0] for k in found}),
                       n_layers_D=len({k.split(".")[1] for k in found if k.startswith("discriminator_0.")}) - 1)
        fits = [f"preset={p!r}" for p in OFFICIAL_PRESETS
                if _shapes(build_discriminator(p, device="meta", **options)) == found]
        return fits or [f"preset='custom' with label_nc + dontcare + instance edge = {first[1] - 3}, "
                        f"ndf={first[0]}, n_layers_D={options['n_layers_D']}, num_D={options['num_D']}"]
    return []


def _infer_ngf(found: dict) -> int:
    conv = found.get("head_0.conv_1.weight_orig", found.get("head_0.conv_1.weight"))
    return conv[0] // 16


def _describe_custom_generator(found: dict, ngf: int, norm: str | None) -> str:
    if norm is None:
        return (f"preset='custom', ngf={ngf}, with a norm none of {list(registered_norms())} recognises "
                f"(their key_markers are not in the file)")
    table = found.get("head_0.norm_0.class_specified_affine.weight")
    if norm_spec(norm).class_adaptive and table is not None:
        no_instance = "head_0.norm_0.inst_conv.weight" not in found
        class_nc = table[0]
        return (f"preset='custom', norm={norm!r}, ngf={ngf}, no_instance={no_instance} with "
                f"label_nc + dontcare = {class_nc}")
    shared = found.get("head_0.norm_0.mlp_shared.0.weight")
    detail = f" with label_nc + dontcare + instance edge = {shared[1]}" if shared is not None else ""
    return f"preset='custom', norm={norm!r}, ngf={ngf}{detail}"


def load_official_checkpoint(module: nn.Module, path_or_state_dict, *, source=None) -> nn.Module:
    """Strictly load an official (or our exported) state_dict into ``module``.

    On any mismatch raises CheckpointMismatchError listing missing, unexpected and
    wrong-shaped keys and the preset/options whose network would fit the file; tensors holding
    NaN or inf raise fileio.NonFiniteWeightsError naming them. ``source`` names the file an
    in-memory state_dict was read from, for these messages.
    """
    state, read_from = read_state_dict(path_or_state_dict)
    source = repr(str(source)) if source is not None else read_from
    state = _strip_wrapper_prefix(state)
    refuse_mismatch(module, state, source)
    refuse_non_finite(state, f"checkpoint {source}")
    module.load_state_dict(state, strict=True)
    return module


def refuse_mismatch(module: nn.Module, state: dict, source: str) -> None:
    """Raise CheckpointMismatchError unless ``state`` has exactly ``module``'s keys and shapes
    (``module`` may live on the meta device: only shapes are compared)."""
    missing, unexpected, wrong = compare_state_dicts(module.state_dict(), state)
    if missing or unexpected or wrong:
        lines = [f"checkpoint {source} does not fit this {type(module).__name__}"
                 + (f" ({_config_summary(module)})" if hasattr(module, "config") else "") + ":"]
        for title, items in (("missing", missing), ("unexpected", unexpected)):
            if items:
                lines.append(f"  {len(items)} {title} keys: {_abbrev(items)}")
        if wrong:
            lines.append(f"  {len(wrong)} wrong-shaped keys: "
                         + _abbrev([f"{k} (expected {e}, found {f})" for k, e, f in wrong]))
        fits = suggest_configs(state)
        lines.append("  it fits: " + ("; ".join(fits) if fits else "no known generator or discriminator layout"))
        raise CheckpointMismatchError("\n".join(lines))


def _config_summary(module: nn.Module) -> str:
    cfg = module.config
    keys = ("norm", "label_nc", "contain_dontcare_label", "no_instance", "ngf", "ndf")
    return ", ".join(f"{k}={getattr(cfg, k)!r}" for k in keys if hasattr(cfg, k))


def _abbrev(items: list, limit: int = 8) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def save_state_dict_atomic(state: dict, path) -> None:
    """torch.save to a temporary file in the same folder, then rename (never half-written)."""
    save_torch_atomic(state, path)



def save_generator_dir(generator: nn.Module, folder) -> Path:
    """Write ``latest_net_G.pth`` (official format) and ``generator.json`` (its config).

    Weights holding NaN or inf are refused (fileio.NonFiniteWeightsError): nothing is written."""
    folder = Path(folder)
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    refuse_non_finite(state, f"the generator to be saved in {str(folder)!r}")
    save_state_dict_atomic(state, folder / GENERATOR_WEIGHTS)
    record = config_to_dict(generator.config)
    source = norm_spec(generator.config.norm).source
    write_json_atomic(folder / GENERATOR_CONFIG, record | ({PLUGIN_FILE_KEY: source} if source else {}))
    return folder


def load_generator_dir(folder, device=None) -> nn.Module:
    """Generator from a folder written by ``save_generator_dir`` (or an official
    ``latest_net_G.pth`` beside a ``generator.json`` you wrote for it).

    A generator.json of a norm that needs ICPE without ``icpe_mode`` was written before the mode
    was recorded, by train.py, which trains with :data:`LEGACY_ICPE_MODE`: it loads with that
    mode and a logged warning (add ``"icpe_mode"`` to the file to silence it). The architecture
    generator.json records is checked against the weights file's shapes before any memory is
    allocated for it."""
    folder = Path(folder)
    config = read_generator_config(folder / GENERATOR_CONFIG)
    weights = folder / GENERATOR_WEIGHTS
    state, source = read_state_dict(weights)
    # The recorded sizes (ngf, label_nc, ...) are only trusted once the file's shapes agree:
    # a meta-device network has the shapes without the memory.
    refuse_mismatch(build_generator_from_config(config, "meta"), _strip_wrapper_prefix(state), source)
    generator = build_generator_from_config(config)
    load_official_checkpoint(generator, state, source=weights)
    return generator.to(device or "cpu")


def read_generator_config(config_path) -> GeneratorConfig:
    """The GeneratorConfig of a ``generator.json`` (see :func:`load_generator_dir` for the ICPE
    mode of old files); ValueError naming the file and what is wrong, or the plugin to load."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"{str(config_path)!r} is missing; expected the generator options as JSON "
                                f"(GeneratorConfig fields, e.g. {{\"label_nc\": 150, \"norm\": \"clade\"}})")
    try:
        record = json.loads(config_path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"it holds a JSON {type(record).__name__}; expected an object of GeneratorConfig fields")
        plugin = record.pop(PLUGIN_FILE_KEY, None)
        if plugin is not None and record.get("norm") not in registered_norms():
            raise PluginNotLoadedError(
                f"{str(config_path)!r} holds a {record.get('norm')!r} generator, a norm registered by the plugin "
                f"file {str(plugin)!r} (the path as written in that JSON), which is not loaded. Loading a plugin runs "
                f"its Python code: only if you trust that file, pass --plugin {plugin} (or call "
                f"models.plugins.load_plugin on it first)")
        if record.get(ICPE_MODE_KEY) is None and norm_spec(record.get("norm", "spade")).needs_icpe:
            record[ICPE_MODE_KEY] = LEGACY_ICPE_MODE
            log.warning("%s records no %r (written before the ICPE mode was saved); assuming %r, the mode "
                        "train.py trains with. If the generator was trained with the other mode, set "
                        "\"%s\": \"official\" in that file", config_path, ICPE_MODE_KEY, LEGACY_ICPE_MODE,
                        ICPE_MODE_KEY)
        unknown = sorted(set(record) - {f.name for f in fields(GeneratorConfig)})
        if unknown:
            raise ValueError(f"unknown keys {unknown}; expected GeneratorConfig fields "
                             f"({', '.join(f.name for f in fields(GeneratorConfig))}) and {PLUGIN_FILE_KEY!r}")
        return GeneratorConfig(**record)
    except PluginNotLoadedError:
        raise
    except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{str(config_path)!r} is not a valid generator config: {exc}") from None


# --- what a generator file holds -----------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointInfo:
    """What a generator weight file says about its architecture (:func:`inspect`)."""

    path: Path                       # the weight file read
    norm: str                        # the registered norm whose key_markers its keys contain
    ngf: int                         # head_0 keeps 16 * ngf channels
    use_vae: bool                    # a 2-d fc.weight is the VAE variant's Linear (z -> features)
    most_upsampling: bool            # an up_4 block: num_upsampling_layers "most"
    wrapped: bool                    # its keys carried DataParallel's "module." prefix (removed in state)
    config: GeneratorConfig | None   # from the generator.json beside it (label_nc, instance maps, ...)
    state: dict = field(repr=False, compare=False, default_factory=dict)  # the state_dict, prefix removed

    @property
    def norm_evidence(self) -> str:
        """``norm X (keys contain 'marker')``, for the log."""
        return f"norm {self.norm} (keys contain {', '.join(norm_spec(self.norm).key_markers)!r})"

    def describe(self) -> str:
        """What was read and from which keys, for the log."""
        return (f"{self.norm_evidence}, ngf {self.ngf}" + (", VAE" if self.use_vae else "")
                + (", 'module.' prefix removed" if self.wrapped else ""))


def weight_file(path) -> Path:
    """The generator weight file ``path`` names: the file itself, or a folder's ``best_net_G.pth``
    or ``latest_net_G.pth``; FileNotFoundError saying what was expected."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        inner = sorted(p.name for p in path.iterdir() if any((p / name).is_file() for name in WEIGHT_FILES))
        hint = (f"; it is a folder of generator folders ({', '.join(inner)}): pass it as --checkpoints {path}"
                if inner else "")
        raise FileNotFoundError(f"{str(path)!r} holds none of {list(WEIGHT_FILES)}; expected a generator folder "
                                f"({GENERATOR_WEIGHTS} + {GENERATOR_CONFIG}, as train.py writes) or a weight "
                                f"file{hint}")
    raise FileNotFoundError(f"{str(path)!r}: no such file or folder; expected a generator .pth file or a folder "
                            f"with {GENERATOR_WEIGHTS}")


def inspect(path) -> CheckpointInfo:
    """Read a generator file (or a folder's weight file) once: its norm from the registry's key
    markers (plugins included), width, VAE input, ``module.`` prefix, and the ``generator.json``
    beside a ``latest_net_G.pth``. ValueError when no registered norm's markers are in its keys."""
    weights = weight_file(path)
    found, _ = read_state_dict(weights)
    state = _strip_wrapper_prefix(found)
    if "conv_img.weight" not in state or "fc.weight" not in state:
        raise ValueError(f"{str(weights)!r} is not a generator state_dict (no conv_img / fc weights; keys like "
                         f"{_abbrev(list(state), 4)})")
    norm = recognise_norm(state)
    if norm is None:
        markers = {name: norm_spec(name).key_markers for name in registered_norms()}
        raise ValueError(f"{str(weights)!r}: the keys hold none of the registered norms' key markers ({markers}); "
                         f"if a plugin defines its norm, pass --plugin FILE")
    config_path = weights.parent / GENERATOR_CONFIG
    config = read_generator_config(config_path) if weights.name == GENERATOR_WEIGHTS and config_path.is_file() \
        else None
    return CheckpointInfo(path=weights, norm=norm, ngf=_infer_ngf({k: v.shape for k, v in state.items()}),
                          use_vae=state["fc.weight"].dim() == 2,
                          most_upsampling=any(k.startswith("up_4.") for k in state), wrapped=state is not found,
                          config=config, state=state)


def official_config(info: CheckpointInfo, preset: str, norm: str | None = None) -> tuple[GeneratorConfig, str]:
    """(the config of ``preset`` that the bare file ``info`` loads into, the widths that show its
    instance edge). Norm (``norm`` overrides the keys), ngf, VAE and upsampling come from ``info``; the
    instance-edge input is whichever of with / without whose network has the file's shapes; a
    norm that needs ICPE gets the official code's ICPE mode. Without a fit, the preset's own
    choice is returned (loading it then lists the mismatching keys)."""
    options = dict(ngf=info.ngf, use_vae=info.use_vae, icpe_mode=OFFICIAL_ICPE_MODE,
                   **({"num_upsampling_layers": "most"} if info.most_upsampling else {}))
    norm = norm or info.norm
    shapes = {k: tuple(v.shape) for k, v in info.state.items()}
    default = generator_config(preset, norm, **options)
    for no_instance in (default.no_instance, not default.no_instance):
        config = generator_config(preset, norm, **options, no_instance=no_instance)
        network = build_generator_from_config(config, device="meta")
        if {k: tuple(v.shape) for k, v in network.state_dict().items()} == shapes:
            return config, _edge_evidence(info.state, config)
    return default, "no variant of the preset has the file's shapes"


def _edge_evidence(state: dict, config: GeneratorConfig) -> str:
    """The widths that show whether the file reads the instance-edge channel."""
    conv = state.get("head_0.conv_0.weight_orig", state.get("head_0.conv_0.weight"))
    shared = state.get("head_0.norm_0.mlp_shared.0.weight")
    if norm_spec(config.norm).edge_channel and conv is not None:
        return f"head_0.conv_0 input width {conv.shape[1]} for {conv.shape[0]} features"
    if shared is not None:
        return f"head_0.norm_0.mlp_shared input width {shared.shape[1]} for {config.class_nc} classes"
    return "the file's shapes are those of the network " + ("without" if config.no_instance else "with") + " it"


def load_generator(path, preset: str | None = None, *, norm: str | None = None, device=None) -> nn.Module:
    """Any generator: a folder (or its ``latest_net_G.pth``) with ``generator.json`` loads as
    written; a bare weight file or release folder is built from ``preset`` with
    :func:`official_config` (``norm`` overrides its keys) and loaded strictly."""
    info = inspect(path)
    if info.config is not None:
        generator = build_generator_from_config(info.config)
    else:
        if preset is None:
            raise ValueError(f"{str(info.path)!r} has no {GENERATOR_CONFIG} beside it; pass the preset its "
                             f"architecture comes from (--preset)")
        config, evidence = official_config(info, preset, norm)
        log.info("%s: preset %s, %s, instance edge %s (%s)", info.path, preset, info.describe(),
                 "no" if config.no_instance else "yes", evidence)
        generator = build_generator_from_config(config)
    load_official_checkpoint(generator, info.state, source=info.path)
    return generator.to(device or "cpu")
