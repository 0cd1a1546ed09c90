"""scripts/gpu_summary.py: the summary of scripts/gpu_check.sh and its H100 target check."""
import importlib.util

import pandas as pd

from analysis.speed import variants as speed
from analysis.speed import train_step as train_speed

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "scripts" / "gpu_summary.py")
gpu_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_summary)


def _rows():
    rows = []
    for norm, batch, fp32_ms, bf16_ms in (("clade", 16, 20.0, 7.5), ("clade-icpe", 16, 22.0, 9.5),
                                          ("spade", 16, 40.0, 14.0), ("clade", 1, 3.0, 2.5)):
        rows += [dict(preset="ade20k", norm=norm, batch=batch, variant="fused", dtype="fp32", median_ms=fp32_ms),
                 dict(preset="ade20k", norm=norm, batch=batch, variant="fused-bf16", dtype="bf16", median_ms=bf16_ms + 1),
                 dict(preset="ade20k", norm=norm, batch=batch, variant="fused-bf16-cudagraph", dtype="bf16",
                      median_ms=bf16_ms)]
    return pd.DataFrame(rows)


def test_targets_take_the_fastest_bf16_variant():
    lines = gpu_summary.target_lines(_rows())
    assert lines == ["- clade batch 16: 7.50 ms (fused-bf16-cudagraph) against <= 8 ms: met",
                     "- clade-icpe batch 16: 9.50 ms (fused-bf16-cudagraph) against <= 9 ms: NOT met",
                     "- spade batch 16: 14.00 ms (fused-bf16-cudagraph) against <= 15 ms: met",
                     "- clade batch 1: 2.50 ms (fused-bf16-cudagraph) against <= 2 ms: NOT met"]
    only_fp32 = _rows()[lambda df: df["dtype"] == "fp32"]
    assert gpu_summary.target_lines(only_fp32)[0] == "- clade batch 16: no bf16 row measured (target <= 8 ms)"


def test_summary_lists_steps_and_tables(tmp_path):
    (tmp_path / "steps.tsv").write_text("speed\tok\t12\tade20k\ntrain\ttimed out after 90s\t90\tbatch 16\n")
    (tmp_path / "speed" / "tables").mkdir(parents=True)
    _rows().assign(extra_column=1).to_csv(tmp_path / "speed" / "tables" / "speed_compare.csv", index=False)
    text = gpu_summary.summary(tmp_path)
    assert "| train | timed out after 90s | 90 | batch 16 |" in text
    assert "## Inference (speed/tables/speed_compare.csv)" in text and "fused-bf16-cudagraph" in text
    assert "extra_column" not in text and "## Training step" not in text


def test_summary_columns_are_the_speed_tables_own():
    """The summary picks columns by name: a renamed column in analysis.speed.variants must not vanish from it."""
    assert set(gpu_summary.SPEED_COLUMNS) <= set(speed.COLUMNS)
    assert set(gpu_summary.TRAIN_COLUMNS) <= set(train_speed.TRAIN_COLUMNS)
