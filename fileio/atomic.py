"""Writes that readers never see half-done: a temporary file in the same folder, then a rename.

A reader (another process, a resumed run, a crash) sees either the old file or the new one,
because ``os.replace`` within one folder is atomic on POSIX and Windows. Every writer creates
the parent folder first, and removes the temporaries of ``path`` that a killed process left
(``.<stem>.tmp<pid><suffix>`` of a process that no longer runs). A full disk is an OSError
(ENOSPC) naming ``path``, also when torch's zip writer reports it as a RuntimeError.

    write_json_atomic("reports/x/meta.json", {"seed": 0})
    with atomic_path("figures/a.png") as tmp:   # any writer that takes a path
        fig.savefig(tmp)
"""
from __future__ import annotations

import errno
import glob
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from .lock import pid_alive


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that pick a format by
    extension still work); on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise OSError(errno.ENOSPC, f"No space left on device while writing {path}"
                                    + (" (the file is left as it was)" if path.exists() else "")) from None
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of ``path`` left by processes that no longer run (a SIGKILL in the
    middle of a write); return them. A temporary of a running process is left alone."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.tmp(\d+){re.escape(path.suffix)}")
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.glob(f".{glob.escape(path.stem)}.tmp*{glob.escape(path.suffix)}"):
        match = pattern.fullmatch(candidate.name)
        pid = int(match.group(1)) if match else None
        # this process's own temporary outside an open atomic_path is a leftover too (pids are reused)
        if match and (pid == os.getpid() or not pid_alive(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


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
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write as "[enforce fail at inline_container.cc:...]
            # ... unexpected pos": with less free space than the tensors need, that is a full disk.
            if shutil.disk_usage(tmp.parent).free >= _tensor_bytes(obj):
                raise
            raise OSError(errno.ENOSPC, "No space left on device") from exc
    return Path(path)


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists and tuples)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return sum(_tensor_bytes(v) for v in values)


def append_line(path: str | Path, text: str) -> Path:
    """Append ``text`` plus a newline to ``path`` (created with its folder when missing).

    Not atomic: one ``write`` call per line, so a crash can leave at most the last line incomplete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text.rstrip("\n") + "\n")
    return path
