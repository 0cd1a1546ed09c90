"""The seeded weights of ``tests/reference/paper_segmenters_seeded.npz`` and files in the released layouts.

Filling rule (from ``../shared/reference/segmenters/README.md``): every floating tensor is a
function of its released key and shape only, ``g = Generator().manual_seed(seed + crc32(key))``:
running_mean U(-0.1, 0.1), running_var U(0.5, 1.5), other 1-D ``weight`` U(0.5, 1.5), other
1-D U(-0.1, 0.1), >= 2-D ``randn / sqrt(numel / shape[0])``; integer tensors are kept. UPerNet's
two files are keyed as if merged (``encoder.*``, ``decoder.*``), as our network's state_dict is.
"""
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from analysis.quality.paper_segmenters.release import UPERNET_FILES, build_network

SEEDED = Path(__file__).resolve().parents[2] / "reference" / "paper_segmenters_seeded.npz"
NPZ_PREFIX = {"drn-d-105": "drn_d_105", "upernet-101": "upernet_101", "deeplabv2": "deeplabv2"}


def seeded_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """``build_network(name)``'s state_dict filled by the seeded rule."""
    out = {}
    for key, t in build_network(name).state_dict().items():
        if not t.is_floating_point():
            out[key] = t
            continue
        g = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))

        def uniform(a, b):
            return a + (b - a) * torch.rand(t.shape, generator=g)

        if key.endswith("running_mean"):
            out[key] = uniform(-0.1, 0.1)
        elif key.endswith("running_var"):
            out[key] = uniform(0.5, 1.5)
        elif t.dim() == 1:
            out[key] = uniform(0.5, 1.5) if key.endswith("weight") else uniform(-0.1, 0.1)
        else:
            out[key] = torch.randn(t.shape, generator=g) / math.sqrt(t.numel() / t.shape[0])
    return out


def save_released(name: str, state: dict, folder: Path) -> Path:
    """``state`` written as the release is downloaded; returns what --segmenter-weights takes."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "upernet-101":
        release = folder / "ade20k-resnet101-upernet"
        release.mkdir(exist_ok=True)
        for part, file in UPERNET_FILES.items():
            torch.save({k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}, release / file)
        return release
    path = folder / {"drn-d-105": "drn-d-105_ms_cityscapes.pth",
                     "deeplabv2": "deeplabv2_resnet101_msc-cocostuff164k-100000.pth"}[name]
    torch.save(state, path)
    return path


def seeded_case(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, reference logits) of ``name`` from the vendored vectors."""
    with np.load(SEEDED) as z:
        prefix = NPZ_PREFIX[name]
        return torch.from_numpy(z[f"{prefix}/input"]), torch.from_numpy(z[f"{prefix}/logits"])
