"""Write OUT_DIR/summary.md from what scripts/gpu_check.sh left in OUT_DIR.

    python3 scripts/gpu_summary.py OUT_DIR

Reads ``steps.tsv`` (step, status, seconds, note), the speed tables under
``OUT_DIR/<step>/tables/*.csv`` and ``gpu_tests.txt``; shows the columns that exist (the
tables' variant names and columns are analysis.speed.variants's), and on CUDA checks the latency
targets of ade20k at batch 16 in bf16 (H100 figures).
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import pandas as pd
import torch

# Median ms, ade20k, batch 16, fastest bf16 variant, one H100 (official code in bf16 autocast:
# CLADE 34.1, SPADE 46.5, CLADE-ICPE 41.3); batch 1 for CLADE only.
TARGETS_MS = {("clade", 16): 8.0, ("clade-icpe", 16): 9.0, ("spade", 16): 15.0, ("clade", 1): 2.0}
SPEED_COLUMNS = ["preset", "norm", "batch", "variant", "dtype", "median_ms", "alone_median_ms", "speedup_vs_reference",
                 "speedup_vs_official_equiv", "max_abs_diff", "within_tolerance", "achieved_tflops", "peak_tflops",
                 "fraction_of_peak"]
TRAIN_COLUMNS = ["preset", "norm", "batch", "variant", "median_ms", "images_per_s", "speedup_vs_fp32_eager",
                 "first_step_max_rel_loss_diff", "within_tolerance"]


def _table(path: Path, preferred: list[str]) -> tuple[pd.DataFrame, str]:
    df = pd.read_csv(path)
    columns = [c for c in preferred if c in df] + [c for c in df if "speedup" in c and c not in preferred]
    return df, df[columns].to_markdown(index=False, floatfmt=".4g")


def target_lines(df: pd.DataFrame) -> list[str]:
    """One line per target: the fastest bf16 variant's median against the target."""
    bf16 = df[(df["preset"] == "ade20k") & df["dtype"].astype(str).str.contains("bf16")]
    lines = []
    for (norm, batch), target in TARGETS_MS.items():
        rows = bf16[(bf16["norm"] == norm) & (bf16["batch"] == batch)]
        if rows.empty:
            lines.append(f"- {norm} batch {batch}: no bf16 row measured (target <= {target:g} ms)")
            continue
        best = rows.loc[rows["median_ms"].idxmin()]
        verdict = "met" if best["median_ms"] <= target else "NOT met"
        lines.append(f"- {norm} batch {batch}: {best['median_ms']:.2f} ms ({best['variant']}) against "
                     f"<= {target:g} ms: {verdict}")
    return lines


def summary(out: Path) -> str:
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    lines = ["# GPU check", "",
             f"Device: {device}; Python {platform.python_version()}; torch {torch.__version__}; "
             f"torch built for CUDA {torch.version.cuda or 'none'}.", "", "## Steps", "",
             "| step | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for row in (out / "steps.tsv").read_text().splitlines():
        lines.append("| " + " | ".join(row.split("\t")) + " |")
    tests = out / "gpu_tests.txt"
    if tests.is_file():
        tail = tests.read_text().strip().splitlines()[-1:] or ["(no output)"]
        lines += ["", f"GPU-marked tests: `{tail[0]}` (full output: gpu_tests.txt)."]
    for step in ("speed", "speed-compiled"):
        path = out / step / "tables" / "speed_compare.csv"
        if path.is_file():
            df, text = _table(path, SPEED_COLUMNS)
            lines += ["", f"## Inference ({step}/tables/speed_compare.csv)", "", text]
            if cuda:
                lines += ["", "Targets (H100, ade20k, bf16, median):", ""] + target_lines(df)
    path = out / "train" / "tables" / "speed_train.csv"
    if path.is_file():
        lines += ["", "## Training step (train/tables/speed_train.csv)", "", _table(path, TRAIN_COLUMNS)[1]]
    if not cuda:
        lines += ["", "No CUDA device: the CUDA-only variants (bf16 autocast reference, CUDA graphs, compiled "
                      "with CUDA graphs) were skipped and the H100 targets not checked."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out_dir = Path(sys.argv[1])
    (out_dir / "summary.md").write_text(summary(out_dir))
    print(f"wrote {out_dir / 'summary.md'}")
