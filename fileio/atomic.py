"""Writes that readers never see half-done: a temporary file in the same folder, then a rename.

A reader (another process, a resumed run, a crash) sees either the old file or the new one,
because ``os.replace`` within one folder is atomic on POSIX and Windows. Every writer creates
the parent folder first.

    write_json_atomic("reports/x/meta.json", {"seed": 0})
    with atomic_path("figures/a.png") as tmp:   # any writer that takes a path
        fig.savefig(tmp)
"""
from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by
    extension still work); on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON (``str`` for values JSON lacks: paths, dtypes) atomically.

    NaN and inf (which ``json`` would write as the invalid tokens ``NaN`` / ``Infinity``) are
    written as ``null``: "no number", which every JSON reader accepts."""
    return write_text_atomic(path, json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")


def json_safe(obj):
    """``obj`` with every non-finite float (Python, numpy or 0-d tensor scalar) replaced by None,
    through dicts, lists and tuples; everything else as it is."""
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # numpy scalars, 0-d arrays and tensors
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_torch_atomic(obj, path: str | Path) -> Path:
    """``torch.save(obj, path)`` atomically (argument order as ``torch.save``); return the path."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def append_line(path: str | Path, text: str) -> Path:
    """Append ``text`` plus a newline to ``path`` (created with its folder when missing).

    Not atomic: one ``write`` call per line, so a crash can leave at most the last line incomplete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")
    return path
