"""The official CLADE and SPADE release folders, as downloaded, placed and loaded.

    entries = discover_generators("checkpoints", preset="ade20k")
    # {'clade': ReleaseGenerator(folder='ade20k', preset='ade20k', norm='clade', ...),
    #  'clade-icpe': ... 'ade20k_dist' ..., 'spade': ... 'ade20k_pretrained' ...}
    G = load_release_generator(entries["clade"])

Layouts understood (each folder holds ``best_net_G.pth`` or ``latest_net_G.pth``):

- CLADE release: ``ade20k/``, ``ade20k_outdoor/``, ``cityscapes/``, ``coco/``, and the
  CLADE-ICPE models in ``<same>_dist/``;
- SPADE release: ``ade20k_pretrained/``, ``cityscapes_pretrained/``, ``coco_pretrained/``.

The folder name gives the preset; the norm and the instance-edge input are read from the
weights' keys and shapes (the folder's suffix only names what is expected, and a disagreement
is logged). A CLADE-ICPE release generator gets ``icpe_mode="official"``: the official code
computes its ICPE maps that way, so it is fed them that way. Folders with a ``generator.json``
are the toolkit's own (``load_generator_dir``) and are left alone here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .build import build_generator_from_config
from .checkpoint import GENERATOR_CONFIG, WEIGHT_FILES, inspect, load_official_checkpoint, official_config
from .presets import PRESETS, GeneratorConfig
from .registry import norm_spec

log = logging.getLogger(__name__)

# Folder name (without its _dist / _pretrained suffix) -> preset.
RELEASE_PRESETS = {"ade20k": "ade20k", "ade20k_outdoor": "ade20k-outdoor",
                   "cityscapes": "cityscapes", "coco": "coco-stuff"}
# Suffix -> the norm the release ships in such a folder.
RELEASE_SUFFIXES = {"": "clade", "_dist": "clade-icpe", "_pretrained": "spade"}


class ReleaseLayoutError(ValueError):
    """A folder holds generator weights that no known release layout explains."""


@dataclass(frozen=True)
class ReleaseGenerator:
    """One official generator file and what was inferred about it."""

    folder: str                # release folder name, e.g. 'ade20k_dist'
    path: Path                 # the weight file
    preset: str                # from the folder name
    norm: str                  # from the keys
    config: GeneratorConfig    # preset + inferred options; the file loads into it
    reason: str                # how preset, norm and instance edge were inferred (logged)


def expected_folders() -> list[str]:
    """Every release folder name this module places."""
    return [base + suffix for suffix in RELEASE_SUFFIXES for base in RELEASE_PRESETS]


def _has_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WEIGHT_FILES)


def release_folders(root: str | Path) -> list[Path]:
    """Subfolders of ``root`` holding official weights and no ``generator.json`` (sorted)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and _has_weights(p) and not (p / GENERATOR_CONFIG).is_file())


def place_folder(name: str) -> tuple[str, str]:
    """(preset, expected norm) of a release folder name; ReleaseLayoutError listing the known names."""
    for suffix, norm in sorted(RELEASE_SUFFIXES.items(), key=lambda item: -len(item[0])):
        base = name[:len(name) - len(suffix)] if suffix else name
        if name.endswith(suffix) and base in RELEASE_PRESETS:
            return RELEASE_PRESETS[base], norm
    raise ReleaseLayoutError(
        f"checkpoint folder {name!r} holds generator weights ({' or '.join(WEIGHT_FILES)}) but no "
        f"{GENERATOR_CONFIG}, and its name is not an official release folder; expected one of "
        f"{expected_folders()} (CLADE release: <dataset>, CLADE-ICPE: <dataset>_dist, SPADE release: "
        f"<dataset>_pretrained), or a folder written by models.save_generator_dir / train.py")


def inspect_release_folder(folder: str | Path) -> ReleaseGenerator:
    """Place one release folder: preset from its name; norm, width and instance edge from its
    weights (``models.checkpoint.inspect`` and ``official_config``)."""
    folder = Path(folder)
    preset, expected_norm = place_folder(folder.name)
    if not _has_weights(folder):
        raise FileNotFoundError(f"release folder {str(folder)!r} has none of {list(WEIGHT_FILES)}")
    info = inspect(folder)
    if info.norm != expected_norm:
        log.warning("%s: the folder name suggests %s, but the keys (%s) say %s; using %s", info.path, expected_norm,
                    ", ".join(norm_spec(info.norm).key_markers), info.norm, info.norm)
    config, evidence = official_config(info, preset)
    edge, preset_edge = not config.no_instance, not PRESETS[preset]["no_instance"]
    reason = (f"{folder.name}/{info.path.name}: preset {preset} (folder name), {info.norm_evidence}, instance edge "
              f"{'yes' if edge else 'no'} ({evidence}"
              + ("" if edge == preset_edge else f"; the {preset} preset has {'one' if preset_edge else 'none'}")
              + f"), ngf {info.ngf}" + (", VAE" if info.use_vae else "")
              + (f", ICPE mode {config.icpe_mode} (the official code's)" if config.icpe_mode else ""))
    return ReleaseGenerator(folder.name, info.path, preset, info.norm, config, reason)


def discover_generators(root: str | Path, preset: str | None = None,
                        taken=()) -> dict[str, ReleaseGenerator]:
    """{name: ReleaseGenerator} of the release folders under ``root`` (of ``preset`` if given).

    A generator is named after its norm ('clade', 'spade', ...) unless that name is in
    ``taken`` or shared by another release folder of the run; then after its folder.
    Logs what was inferred for each; raises ReleaseLayoutError for a folder it cannot place,
    and when release folders exist but none is of ``preset``.
    """
    entries = [inspect_release_folder(folder) for folder in release_folders(root)]
    if preset is not None:
        chosen = [e for e in entries if e.preset == preset]
        if entries and not chosen:
            raise ReleaseLayoutError(
                f"{str(root)!r} holds official release folders for presets "
                f"{sorted({e.preset for e in entries})} ({[e.folder for e in entries]}), none for preset "
                f"{preset!r}; pass --preset with one of them")
        for entry in entries:
            if entry.preset != preset:
                log.info("release folder %s (preset %s) skipped: this run evaluates preset %s",
                         entry.folder, entry.preset, preset)
        entries = chosen
    norms = [e.norm for e in entries]
    out = {}
    for entry in entries:
        name = entry.norm if norms.count(entry.norm) == 1 and entry.norm not in taken else entry.folder
        log.info("official release generator %r: %s", name, entry.reason)
        out[name] = entry
    return out


def load_release_generator(entry: ReleaseGenerator, device=None) -> nn.Module:
    """The generator of ``entry`` with its official weights loaded (strict)."""
    generator = build_generator_from_config(entry.config)
    load_official_checkpoint(generator, entry.path)
    return generator.to(device or "cpu")
