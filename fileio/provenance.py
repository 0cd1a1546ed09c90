"""Provenance written next to every result: versions, device, seed, config, command.

    write_json_atomic(path.with_suffix(".meta.json"), provenance("cuda", seed=0, preset="ade20k"))
"""
from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy
import torch


def device_description(device: str | torch.device = "cpu") -> str:
    """Human-readable name of the device (GPU model or CPU model with thread count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str | torch.device = "cpu", **extra) -> dict:
    """Dict of versions, device, command line and time, plus ``extra`` (config, seed...)."""
    info = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "device_name": device_description(device),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    info.update(extra)
    return info


# Files whose content decides what a stage computes from a weights folder.
WEIGHTS_PATTERNS = ("*.pth", "*.pt", "generator.json")


def weights_digests(path: str | Path, skip_folders: frozenset[str] = frozenset()) -> dict[str, str]:
    """``{file: "sha256:<hex>"}`` of a weights file, or of the weights files (:data:`WEIGHTS_PATTERNS`)
    under a folder (relative paths, sorted), leaving out sub-folders named in ``skip_folders``.
    Recorded with a result, it tells when the weights behind it were replaced since."""
    path = Path(path)
    if path.is_file():
        return {path.name: _sha256(path)}
    if not path.is_dir():
        return {}
    files = sorted({f for pattern in WEIGHTS_PATTERNS for f in path.rglob(pattern)
                    if f.is_file() and not skip_folders & set(f.relative_to(path).parts[:-1])})
    return {str(f.relative_to(path)): _sha256(f) for f in files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()
