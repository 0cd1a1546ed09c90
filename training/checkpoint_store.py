"""The trainer's checkpoint file: format, atomic writes with one previous copy, resume, RNG state.

    save_checkpoint_file(trainer.state_dict(), run_dir / CHECKPOINT_NAME)   # keeps checkpoint.prev.pt
    state, path = read_checkpoint(run_dir)       # falls back to checkpoint.prev.pt if unreadable
    run_dir, checkpoint = find_resume_target("latest", runs_root="runs", desc="synthetic-clade")

A checkpoint is one ``torch.save`` dict (format :data:`CHECKPOINT_FORMAT`) of tensors and plain
values, so it loads with ``weights_only=True``. Every file the trainer writes goes through
``fileio.atomic``: a killed process (or a full disk) leaves the old file or the new one, never
half of one and no temporary file. At most two checkpoints exist per run (the latest and one
previous), and a file that does not load is never rotated over the previous one.
"""
from __future__ import annotations

import errno
import logging
import os
import random
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fileio import atomic_path, refuse_non_finite, save_torch_atomic, unreadable_reason

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "clade-toolkit-trainer-v1"
CHECKPOINT_FILES = (CHECKPOINT_NAME, "checkpoint.prev.pt")  # the latest and the one before it
# Recipe fields that change how a step is computed, not what it computes: a run may resume
# with other values (match_state_layouts keeps Adam exact across memory layouts).
RESUMABLE_RECIPE_FIELDS = ("compile", "channels_last", "spectral_input_scaling")


class DiskFullError(OSError):
    """No space left on device while writing a training output; what was there before is untouched."""

    def __str__(self) -> str:
        return self.strerror  # the message alone, without "[Errno 28]"


class SettingsMismatchError(ValueError):
    """A checkpoint was trained with other settings than the ones asked to resume it with.

    ``differences`` maps ``"section.field"`` to ``(checkpoint value, requested value)``.
    """

    def __init__(self, message: str, differences: dict[str, tuple]):
        super().__init__(message)
        self.differences = differences


def previous_checkpoint(path: Path) -> Path:
    """``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _copy_file(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (a hard link when the filesystem allows)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _loads(path: Path) -> str | None:
    """None if ``path`` opens as a checkpoint (memory-mapped: cheap for large files), else why not."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return None
    except Exception as exc:  # a truncated file raises several types
        return unreadable_reason(path, exc)


def save_checkpoint_file(state: dict, path) -> Path:
    """Atomically write ``state`` to ``path``; the file it replaces stays as ``*.prev.pt``.

    A ``path`` that does not load is not rotated (the previous checkpoint is better than it)
    but replaced. On a full disk raises :class:`DiskFullError` and leaves both files as
    they were, without temporary files.
    """
    path = Path(path)
    try:
        if path.exists():
            problem = _loads(path)
            if problem is None:
                with atomic_path(previous_checkpoint(path)) as prev:
                    _copy_file(path, prev)
            else:
                log.warning("%s does not load (%s): replacing it, and keeping %s as the previous checkpoint",
                            path, problem, previous_checkpoint(path).name)
        return save_torch_atomic(state, path)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        kept = (f"the previous checkpoint {path} is kept" if path.is_file()
                else "no earlier checkpoint exists")
        raise DiskFullError(errno.ENOSPC, f"No space left on device while saving {path}; {kept}") from None


def read_checkpoint(path) -> tuple[dict, Path]:
    """``(state, file read)`` from a checkpoint file or a run folder holding :data:`CHECKPOINT_NAME`.

    A file is read as named (an unreadable one is an error). In a run folder an unreadable
    ``checkpoint.pt`` (e.g. truncated by a kill) is skipped for ``checkpoint.prev.pt``.
    """
    candidates = _checkpoint_candidates(path)
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated file raises several types
            if len(candidates) == 1:
                raise ValueError(f"checkpoint {str(candidate)!r} does not load ({unreadable_reason(candidate, exc)}); "
                                 f"expected a file written by the trainer") from None
            log.warning("checkpoint %s unreadable (%s); trying the previous one", candidate,
                        unreadable_reason(candidate, exc))
            continue
        refuse_non_finite(state, f"checkpoint {str(candidate)!r}")
        return state, candidate
    raise ValueError(f"no readable checkpoint among {[str(c) for c in candidates]}")


def _checkpoint_candidates(path) -> list[Path]:
    """The files :func:`read_checkpoint` tries, in order; FileNotFoundError when there are none."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        candidates = [p for p in (path, previous_checkpoint(path)) if p.is_file()]
    else:
        candidates = [path] if path.is_file() else []
    if not candidates:
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}" + ("" if path.name != CHECKPOINT_NAME else
                                f" (nor {previous_checkpoint(path).name})"))
    return candidates


def checkpoint_step(path) -> int | None:
    """The step of the checkpoint :func:`read_checkpoint` would read (memory-mapped: cheap for large
    files); None when none is readable (read_checkpoint then says why)."""
    for candidate in _checkpoint_candidates(path):
        try:
            return int(torch.load(candidate, map_location="cpu", weights_only=True, mmap=True)["step"])
        except Exception:  # unreadable: the next candidate, as read_checkpoint does
            continue
    return None


def check_trainer_state(state: dict, *, g_config, d_config, recipe=None, source: str = "the checkpoint") -> None:
    """Raise unless ``state`` is a trainer checkpoint for these configs and (if given) this recipe.

    Every differing setting is named in one :class:`SettingsMismatchError`, with the
    checkpoint's value and the requested one; :data:`RESUMABLE_RECIPE_FIELDS` may differ.
    """
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{source} is not a trainer checkpoint (format {state.get('format')!r}, "
                         f"expected {CHECKPOINT_FORMAT!r})")
    sections = [("generator", "g_config", asdict(g_config)), ("discriminator", "d_config", asdict(d_config))]
    if recipe is not None:
        sections.append(("recipe", "recipe", {k: v for k, v in asdict(recipe).items()
                                              if k not in RESUMABLE_RECIPE_FIELDS}))
    differences = {}
    for label, key, mine in sections:
        saved = state.get(key) or {}
        for field, value in mine.items():
            # Lists and tuples compare equal (torch.save keeps tuples; JSON gives lists).
            old = saved.get(field, value)
            if (list(old) if isinstance(old, tuple) else old) != (list(value) if isinstance(value, tuple) else value):
                differences[f"{label}.{field}"] = (old, value)
    if differences:
        listed = "; ".join(f"{k}: checkpoint {a!r}, requested {b!r}" for k, (a, b) in differences.items())
        raise SettingsMismatchError(
            f"{source} was trained with other settings than requested ({listed}). Resume it with its own "
            f"settings, or start a new run to train with the new ones.", differences)


def find_resume_target(spec, *, runs_root, desc: str, marker: str = "options.json") -> tuple[Path, Path | None]:
    """``(run folder, checkpoint file or None)`` that ``--resume spec`` names.

    ``spec``: a checkpoint file (resumed exactly), a run folder (its latest readable checkpoint),
    or ``"latest"``: the newest ``<runs_root>/<NNNNN>-<desc>`` folder holding a checkpoint; if
    none holds one, the newest such folder (with the checkpoint None: it starts over). Only
    folders with ``marker`` count. Raises FileNotFoundError naming what was looked for.
    """
    if spec != "latest":
        path = Path(spec)
        if path.is_file():
            run_dir, checkpoint = path.parent, path
        elif path.is_dir():
            run_dir, checkpoint = path, (path if has_checkpoint(path) else None)
        else:
            raise FileNotFoundError(f"--resume {spec}: no such file or folder; expected a run folder or a "
                                    f"checkpoint file in one")
        if not (run_dir / marker).is_file():
            raise FileNotFoundError(f"--resume {spec}: {str(run_dir)!r} has no {marker}; expected a run folder "
                                    f"written by train.py")
        return run_dir, checkpoint
    runs = sorted((d for d in Path(runs_root).glob(f"*-{desc}")
                   if re.match(rf"^\d+-{re.escape(desc)}$", d.name) and (d / marker).is_file()),
                  key=lambda d: int(d.name.split("-", 1)[0]))
    if not runs:
        raise FileNotFoundError(f"--resume: no run '<number>-{desc}' with {marker} under {str(runs_root)!r}")
    with_checkpoint = [d for d in runs if has_checkpoint(d)]
    if with_checkpoint:
        return with_checkpoint[-1], with_checkpoint[-1]
    return runs[-1], None


def has_checkpoint(run_dir) -> bool:
    """Whether ``run_dir`` holds ``checkpoint.pt`` or ``checkpoint.prev.pt``."""
    return any((Path(run_dir) / name).is_file() for name in CHECKPOINT_FILES)


def remove_training_state(run_dir) -> int:
    """Delete a run folder's trainer checkpoints (D, optimizers, RNG); return the bytes freed.

    For a finished run whose exported generator is all later stages need; the run can no
    longer be resumed.
    """
    freed = 0
    for path in (Path(run_dir) / name for name in CHECKPOINT_FILES):
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed


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
