#!/usr/bin/env python
"""Compare every table of two run folders: which columns differ, and by how much.

    python scripts/compare_tables.py /tmp/baseA /tmp/house_quick

Reads ``<run>/tables/*.csv``, ``*.csv.gz`` and ``*.md`` of both runs. A run's own folder in a
value (``/tmp/baseA/checkpoints/spade``) is written as ``<out>`` first, so paths do not count as
differences. Columns whose name says they hold a time (``seconds``, ``*_ms``, ``*_per_s``, ...)
are listed apart: they change from run to run on any machine. Exit status 1 when any other
column, a row count, or a file set differs.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Column names that hold wall-clock measurements or values computed from them (never equal between
# two runs): times, throughputs, the latency ratio to SPADE, the timing-reliability verdict.
TIMING = re.compile(r"(^|_)(seconds|ms|per_s|latency|time|reliable|unreliable_reason|threads|ratio_to_spade)($|_)")
# Tables whose every column follows from timing (the profiler's top ops by self time).
TIMED_TABLES = ("bench_profile.csv",)


def read(path: Path, out: Path) -> pd.DataFrame | str:
    """The table with the run folder written as ``<out>`` (a Markdown file as its text)."""
    text = path.read_text() if path.suffix == ".md" else None
    if text is not None:
        return text.replace(str(out), "<out>")
    df = pd.read_csv(path)
    return df.apply(lambda col: col.str.replace(str(out), "<out>", regex=False)
                    if pd.api.types.is_string_dtype(col) else col)


def column_difference(a: pd.Series, b: pd.Series) -> str | None:
    """None when equal (NaN equals NaN), else a short description."""
    if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
        x, y = a.to_numpy(float), b.to_numpy(float)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        if same.all():
            return None
        diff = np.abs(x - y)[~same]
        return f"{(~same).sum()} of {len(x)} rows, max abs diff {np.nanmax(diff) if np.isfinite(diff).any() else 'nan'}"
    same = (a.astype(str) == b.astype(str)) | (a.isna() & b.isna())
    return None if same.all() else f"{(~same).sum()} of {len(a)} rows, e.g. {a[~same].iloc[0]!r} vs {b[~same].iloc[0]!r}"


def compare(a_out: Path, b_out: Path) -> tuple[list[str], list[str]]:
    """(differences, timing differences) as lines."""
    names = lambda out: {p.name for p in (out / "tables").iterdir() if p.name.endswith((".csv", ".csv.gz", ".md"))}
    a_names, b_names = names(a_out), names(b_out)
    lines, timing = [], []
    for name in sorted(a_names ^ b_names):
        lines.append(f"{name}: only in {a_out if name in a_names else b_out}")
    for name in sorted(a_names & b_names):
        a, b = read(a_out / "tables" / name, a_out), read(b_out / "tables" / name, b_out)
        if isinstance(a, str):
            if a != b:
                lines.append(f"{name}: text differs")
            continue
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            lines.append(f"{name}: columns or rows differ ({a.shape} vs {b.shape})")
            continue
        for column in a.columns:
            diff = column_difference(a[column], b[column])
            if diff:
                timed = TIMING.search(column) or name in TIMED_TABLES
                (timing if timed else lines).append(f"{name}: {column}: {diff}")
    return lines, timing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    lines, timing = compare(args.a, args.b)
    print("timing columns that differ (expected):", *timing, sep="\n  ")
    print("other differences:", *(lines or ["none"]), sep="\n  ")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
