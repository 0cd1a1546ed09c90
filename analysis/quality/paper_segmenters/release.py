"""The papers' segmenters built and filled from their released weight files, as downloaded.

Files are read only through ``fileio.load_weights`` (never unpickles code) and loaded strictly:
every key and shape must match. A ``state_dict`` entry inside a dict and DataParallel's
``module.`` prefix are unwrapped (the released files have neither, a re-saved copy may); a
missing ``num_batches_tracked`` counter is allowed (files saved before PyTorch 0.4.1 lack it
and eval mode never reads it). The ADE20K release is a folder of two files, keyed here as
``encoder.*`` and ``decoder.*``.

    net = load_released_network("deeplabv2", "deeplabv2_resnet101_msc-cocostuff164k-100000.pth")
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fileio import WeightsFileError, load_weights
from models.checkpoint import compare_state_dicts

from analysis.quality.paper_segmenters.deeplabv2 import MSC, DeepLabV2
from analysis.quality.paper_segmenters.drn import DRNSeg
from analysis.quality.paper_segmenters.upernet import UPerNetSegmenter
from analysis.quality.segmenter_names import PAPER_SEGMENTER_NAMES, RELEASED_FILES

UPERNET_FILES = {"encoder": "encoder_epoch_50.pth", "decoder": "decoder_epoch_50.pth"}
# A key only one of the three released files holds: names the network a wrong file belongs to.
SIGNATURE_KEYS = {"drn-d-105": "seg.weight", "deeplabv2": "base.aspp.c0.weight",
                  "upernet-101 encoder": "layer4.2.conv3.weight", "upernet-101 decoder": "ppm_last_conv.0.weight"}
_OPTIONAL = "num_batches_tracked"


class SegmenterWeightsError(WeightsFileError):
    """A weights file that is not the released file of the requested segmenter."""


def build_network(name: str) -> nn.Module:
    """The bare network ``name`` (one of PAPER_SEGMENTER_NAMES) with its reference initial weights."""
    if name == "drn-d-105":
        return DRNSeg(19)
    if name == "upernet-101":
        return UPerNetSegmenter(150)
    if name == "deeplabv2":
        return MSC(DeepLabV2(182))
    raise ValueError(f"unknown paper segmenter {name!r}; expected one of {PAPER_SEGMENTER_NAMES}")


def unwrap(state, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: a ``state_dict`` entry of a dict, ``module.`` prefixes removed."""
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegmenterWeightsError(f"{path}: not a state_dict (a dict of tensors); found {type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def read_released_state(name: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of ``name``'s released file(s) at ``path``, keyed as ``build_network(name)`` is."""
    path = Path(path)
    expected = f"expected {RELEASED_FILES[name]}"
    if name != "upernet-101":
        if not path.is_file():
            raise SegmenterWeightsError(f"segmenter weights {str(path)!r}: no such file; {expected}")
        return unwrap(load_weights(path, what="segmenter weights", expected=expected, error=SegmenterWeightsError),
                      path)
    folder = path if path.is_dir() else path.parent
    state = {}
    for part, file in UPERNET_FILES.items():
        if not (folder / file).is_file():
            raise SegmenterWeightsError(f"segmenter weights {str(path)!r}: no {file} in {folder}; {expected}")
        loaded = load_weights(folder / file, what="segmenter weights", expected=expected, error=SegmenterWeightsError)
        state.update({f"{part}.{k}": v for k, v in unwrap(loaded, folder / file).items()})
    return state


def _likely_network(state: dict) -> str | None:
    keys = {k.split(".", 1)[1] if k.startswith(("encoder.", "decoder.")) else k for k in state}
    found = [n for n, key in SIGNATURE_KEYS.items() if key in keys]
    return ", ".join(found) or None


def _listed(keys: list, limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (f" ... (+{len(keys) - limit})" if len(keys) > limit else "")


def load_state_strictly(network: nn.Module, state: dict, name: str, path: Path) -> None:
    """Copy ``state`` into ``network``; SegmenterWeightsError (one line) on any missing, unexpected or
    mis-shaped key, naming the file, the keys and the file expected."""
    missing, unexpected, wrong = compare_state_dicts(network.state_dict(), state)
    missing = [k for k in missing if not k.endswith(_OPTIONAL)]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing ({_listed(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_listed(unexpected)})" if unexpected else "",
                 f"{len(wrong)} mis-shaped ({_listed([f'{k} {f} instead of {e}' for k, e, f in wrong], 3)})"
                 if wrong else ""]
        other = _likely_network(state)
        looks = f"; it looks like {other} weights" if other and not other.startswith(name) else ""
        raise SegmenterWeightsError(f"{path}: not the released {name} weights: keys "
                                    f"{'; '.join(p for p in parts if p)}{looks}; expected {RELEASED_FILES[name]}")
    network.load_state_dict(state, strict=False)   # only num_batches_tracked may be absent


def load_released_network(name: str, path: str | Path, device="cpu") -> nn.Module:
    """``build_network(name)`` filled strictly from the released file(s) at ``path``, in eval mode."""
    network = build_network(name)
    load_state_strictly(network, read_released_state(name, path), name, Path(path))
    return network.to(device).eval()
