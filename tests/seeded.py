"""The seeded procedure of tests/reference/README.md: parameters and inputs rebuilt from a seed.

``official_seeded.npz`` stores, for six tiny generators, the official code's output and the
non-parameter buffers after calibration; the parameters and the input are redrawn here from the
stored seed, so no weights need to be vendored.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SEEDED_NPZ = Path(__file__).resolve().parent / "reference" / "official_seeded.npz"
CASES = tuple(f"{mode}_{inst}" for mode in ("spade", "clade", "clade_icpe") for inst in ("noinst", "inst"))
META_FIELDS = ("seed", "label_nc", "contain_dontcare_label", "has_instance", "ngf", "size")


def _draw(key: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if key.endswith(("weight_u", "weight_v")):
        t = torch.randn(shape, generator=g)
        return t / t.norm()
    if key.endswith("class_specified_affine.weight"):
        return 1 + 0.3 * torch.randn(shape, generator=g)
    if key.endswith("class_specified_affine.bias"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) in (2, 4):
        return torch.randn(shape, generator=g) / math.prod(shape[1:]) ** 0.5
    return 0.1 * torch.randn(shape, generator=g)


def seeded_fill(module: nn.Module, seed: int, buffers: dict[str, np.ndarray]) -> None:
    """Overwrite ``module``'s float state from ``seed`` (sorted key walk), then with ``buffers``.

    ``buffers`` maps state_dict keys to the stored calibrated buffers; every one must be a
    float entry of the module, and their shapes must agree.
    """
    state = module.state_dict()
    unknown = sorted(set(buffers) - set(state))
    if unknown:
        raise KeyError(f"stored buffers {unknown[:5]} are not in the module's state_dict")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key in sorted(state):
            entry = state[key]
            if not entry.is_floating_point():
                continue
            entry.copy_(_draw(key, entry.shape, g))
        for key, array in buffers.items():
            if tuple(array.shape) != tuple(state[key].shape):
                raise ValueError(f"stored buffer {key} has shape {tuple(array.shape)}; "
                                 f"the module has {tuple(state[key].shape)}")
            state[key].copy_(torch.from_numpy(array))


def official_edges(inst: torch.Tensor) -> torch.Tensor:
    """Official ``get_edges``: 1 where the right/left/up/down neighbour has another instance id."""
    edge = torch.zeros(inst.shape, dtype=torch.bool)
    dx = inst[:, :, :, 1:] != inst[:, :, :, :-1]
    dy = inst[:, :, 1:, :] != inst[:, :, :-1, :]
    edge[:, :, :, 1:] |= dx
    edge[:, :, :, :-1] |= dx
    edge[:, :, 1:, :] |= dy
    edge[:, :, :-1, :] |= dy
    return edge.float()


def semantic_input(seed: int, nc: int, height: int, width: int,
                   instance: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(semantic, dist) drawn from ``seed``: one-hot over ``nc`` classes, edge channel last
    when ``instance``; ``dist`` is the [1, 2, H, W] ICPE input, drawn for every case."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, nc, (1, 1, 8, 8), generator=g).float()
    label = F.interpolate(coarse, size=(height, width), mode="nearest").long()
    semantic = torch.zeros(1, nc, height, width).scatter_(1, label, 1.0)
    dist = torch.rand(1, 2, height, width, generator=g) * 2 - 1
    if instance:
        inst = torch.randint(0, 6, (1, 1, 16, 16), generator=g).float()
        inst = F.interpolate(inst, size=(height, width), mode="nearest")
        semantic = torch.cat((semantic, official_edges(inst)), dim=1)
    return semantic, dist


def load_case(case: str, path: Path = SEEDED_NPZ) -> dict:
    """``meta`` (dict of META_FIELDS), ``buffers`` (key -> array) and ``output`` of one case."""
    if case not in CASES:
        raise ValueError(f"unknown seeded case {case!r}; expected one of {list(CASES)}")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it is committed with the tests "
                                f"(see tests/reference/README.md)")
    prefix = f"{case}__buffer__"
    with np.load(path) as npz:
        return {"meta": dict(zip(META_FIELDS, (int(v) for v in npz[f"{case}__meta"]))),
                "buffers": {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix)},
                "output": torch.from_numpy(npz[case])}
