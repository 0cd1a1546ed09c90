"""The training log of a run folder: ``log.jsonl`` (appended per logged row) and ``log.csv``.

``log.jsonl`` is the record a resumed run continues; ``log.csv`` is rewritten from it with
every checkpoint, for spreadsheets and pandas.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fileio import append_line, atomic_path, write_text_atomic

LOG_JSONL = "log.jsonl"
LOG_CSV = "log.csv"


def append_row(out_dir: Path, row: dict) -> None:
    """Append one row to ``out_dir/log.jsonl``."""
    append_line(Path(out_dir) / LOG_JSONL, json.dumps(row))


def write_csv(out_dir: Path, rows: list[dict]) -> Path:
    """Rewrite ``out_dir/log.csv`` from ``rows`` (atomically)."""
    path = Path(out_dir) / LOG_CSV
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return path


def read_history(out_dir: Path, step: int) -> list[dict]:
    """Rows of ``out_dir/log.jsonl`` up to ``step``; later rows (a killed run's) are dropped from the file."""
    path = Path(out_dir) / LOG_JSONL
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r["step"] <= step]
    if len(kept) != len(rows):
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
