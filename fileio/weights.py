"""Read a weights file safely, and say in one line what is wrong with one that cannot be read.

Every weights file the toolkit reads (generator and discriminator checkpoints, the VGG19 and FID
Inception weights) goes through :func:`load_weights` (the trainer's ``checkpoint.pt``, read
memory-mapped by ``training.checkpoint_store``, through :func:`unreadable_reason`): ``torch.load(weights_only=True)``, so a
crafted pickle cannot run code, and torch's own advice to retry with ``weights_only=False`` is
never passed on for a file of unknown origin. A file whose tensors hold NaN or inf (a diverged
run) is refused too, naming the tensors (:func:`refuse_non_finite`): such weights would only turn
into NaN images and meaningless numbers.

    state = load_weights("vgg19-dcbb9e9d.pth", what="VGG19 weights",
                         expected="expected torchvision's ImageNet VGG19 state_dict")
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import torch


class WeightsFileError(ValueError):
    """A weights file exists but cannot be read as plain tensors (empty, truncated, pickled objects)."""


class NonFiniteWeightsError(WeightsFileError):
    """Weights (a file or a state_dict) hold NaN or inf values."""


def non_finite_tensors(state, prefix: str = "") -> list[str]:
    """Names (dotted, nested dicts and lists included) of the floating-point tensors of ``state``
    that hold NaN or inf, in order."""
    if torch.is_tensor(state):
        return [prefix] if state.is_floating_point() and not bool(torch.isfinite(state).all()) else []
    if isinstance(state, float):
        return [prefix] if not math.isfinite(state) else []
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return [name for key, value in items for name in non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))]


def refuse_non_finite(state, source: str) -> None:
    """Raise NonFiniteWeightsError naming ``source`` (e.g. ``"checkpoint 'x.pth'"``) and the tensors
    of ``state`` that hold NaN or inf."""
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:6]) + (f", ... ({len(bad) - 6} more)" if len(bad) > 6 else "")
        raise NonFiniteWeightsError(f"{source} holds NaN or inf values in {len(bad)} tensor(s) ({shown}); "
                                    f"such weights only give NaN outputs. It likely comes from a diverged run: "
                                    f"use an earlier checkpoint")


def load_weights(path: str | Path, *, what: str, expected: str, error: type[WeightsFileError] = WeightsFileError):
    """``torch.load(path, weights_only=True)`` on CPU; raises ``error`` (a WeightsFileError) naming the file.

    The message reads ``{what} '{path}' ({size} bytes) could not be read: {problem}; {expected}``.
    Tensors holding NaN or inf raise NonFiniteWeightsError naming the file and the tensors.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for empty, truncated and foreign files
        raise error(f"{what} {str(path)!r} ({path.stat().st_size} bytes) could not be read: "
                               f"{unreadable_reason(path, exc)}; {expected}") from None
    refuse_non_finite(state, f"{what} {str(path)!r}")
    return state


def unreadable_reason(path: Path, exc: Exception) -> str:
    """Why torch.load refused ``path``, in words, without torch's advice to unpickle it."""
    if path.stat().st_size == 0:
        return "the file is empty"
    text = str(exc)
    if isinstance(exc, EOFError) or "failed finding central directory" in text or "truncated" in text.lower():
        return "the file is truncated or not a torch file"
    if "weights_only" in text or isinstance(exc, pickle.UnpicklingError):
        return ("it is not a plain state_dict (it holds pickled Python objects, which are not loaded "
                "because unpickling can run code)")
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no details'}"
