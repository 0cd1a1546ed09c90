"""The training log of a run folder: ``log.jsonl`` (appended per logged row) and ``log.csv``.

``log.jsonl`` is the record a resumed run continues; ``log.csv`` is rewritten from it with
every checkpoint, for spreadsheets and pandas.
"""
from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pandas as pd

from fileio import append_line, atomic_path, json_safe, write_text_atomic

from training.checkpoint_store import DiskFullError

LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"

log = logging.getLogger(__name__)


def append_row(out_dir: Path, row: dict) -> None:
    """Append one row to ``out_dir/log.jsonl`` (one write: at worst a torn last line, see read_history)."""
    path = Path(out_dir) / LOG_JSONL
    try:
        append_line(path, json.dumps(json_safe(row), allow_nan=False))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise DiskFullError(errno.ENOSPC, f"No space left on device while appending to {path}; "
                                          f"its earlier rows are kept") from None


def write_csv(out_dir: Path, rows: list[dict]) -> Path:
    """Rewrite ``out_dir/log.csv`` from ``rows`` (atomically)."""
    path = Path(out_dir) / LOG_CSV
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return path


def read_history(out_dir: Path, step: int) -> list[dict]:
    """Rows of ``out_dir/log.jsonl`` up to ``step``; later rows (a killed run's) are dropped from the file.

    A torn last line (a kill or a full disk in the middle of an append) is dropped with a
    warning; a line that does not parse elsewhere is an error naming the file and line.
    """
    path = Path(out_dir) / LOG_JSONL
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows, torn = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not JSON ({exc.msg}); expected one logged row "
                                 f"per line. Remove or repair that line to resume") from None
            log.warning("%s: dropping its torn last line %d (%r), left by an interrupted write",
                        path, number, line[:80])
            torn = True
    kept = [r for r in rows if r["step"] <= step]
    if torn or len(kept) != len(rows):
        write_text_atomic(path, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept))
    return kept
