"""The trainer's checkpoint file: format, atomic writes with one previous copy, resume, RNG state.

    save_checkpoint_file(trainer.state_dict(), run_dir / CHECKPOINT_NAME)   # keeps checkpoint.prev.pt
    state, path = read_checkpoint(run_dir)       # falls back to checkpoint.prev.pt if unreadable

A checkpoint is one ``torch.save`` dict (format :data:`CHECKPOINT_FORMAT`) of tensors and plain
values, so it loads with ``weights_only=True``. Every file the trainer writes goes through
``fileio.atomic``: a killed process leaves the old file or the new one, never half of one.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fileio import atomic_path, save_torch_atomic

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "clade-toolkit-trainer-v1"


def previous_checkpoint(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _copy_file(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (a hard link when the filesystem allows)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_checkpoint_file(state: dict, path) -> Path:
    """Atomically write ``state`` to ``path``; the file it replaces stays as ``*.prev.pt``."""
    path = Path(path)
    if path.exists():
        with atomic_path(previous_checkpoint(path)) as prev:
            _copy_file(path, prev)
    return save_torch_atomic(state, path)


def read_checkpoint(path) -> tuple[dict, Path]:
    """``(state, file read)`` from a checkpoint file or a run folder holding :data:`CHECKPOINT_NAME`.

    A file that cannot be read (e.g. truncated by a kill) is skipped for its ``*.prev.pt``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    candidates = [p for p in (path, previous_checkpoint(path)) if p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint at {str(path)!r} (nor {previous_checkpoint(path).name})")
    for candidate in candidates:
        try:
            return torch.load(candidate, map_location="cpu", weights_only=True), candidate
        except Exception as exc:  # a truncated file raises several types
            log.warning("checkpoint %s unreadable (%s); trying the previous one", candidate, exc)
    raise ValueError(f"no readable checkpoint among {[str(c) for c in candidates]}")


def check_trainer_state(state: dict, *, g_config, d_config) -> None:
    """Raise ValueError unless ``state`` is a trainer checkpoint for these network configs."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a trainer checkpoint (format {state.get('format')!r}, "
                         f"expected {CHECKPOINT_FORMAT!r})")
    for name, mine in (("g_config", asdict(g_config)), ("d_config", asdict(d_config))):
        diff = {k: (state[name].get(k), v) for k, v in mine.items() if state[name].get(k) != v}
        if diff:
            raise ValueError(f"checkpoint {name} differs from this trainer's: "
                             + ", ".join(f"{k}: checkpoint {a!r} vs {b!r}" for k, (a, b) in diff.items()))


def match_state_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every optimizer state tensor its parameter's memory layout.

    Fused Adam walks a parameter, its gradient and its state as flat memory: state saved in a
    channels_last run and loaded for a contiguous parameter (or the reverse) would silently
    pair the wrong elements (measured: updates off by ~lr per element).
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """All RNG states of this process, as tensors and plain lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore an :func:`rng_state` dict."""
    torch.set_rng_state(state["torch"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
