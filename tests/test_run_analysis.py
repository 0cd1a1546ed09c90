"""End to end: ``run_analysis.py --quick`` runs every stage and writes the full report (< 3 min on CPU)."""
import importlib.util
import json
import time
import warnings

import pytest

import run_analysis

MISSING = [name for name in run_analysis.STAGES if importlib.util.find_spec(f"analysis.stages.{name}") is None]


@pytest.mark.skipif(bool(MISSING), reason=f"stage modules not written yet: {MISSING}")
def test_quick_run_writes_the_full_report(tmp_path):
    start = time.perf_counter()
    assert run_analysis.main(["--quick", "--out", str(tmp_path), "--device", "cpu"]) == 0
    elapsed = time.perf_counter() - start

    for name in run_analysis.STAGES:
        assert (tmp_path / "stages" / f"{name}.json").is_file(), name
    # each stage records the resolved options it ran with, and every table's meta.json all of them
    record = json.loads((tmp_path / "stages" / "train.json").read_text())
    assert record["options"]["steps"] == 25 and record["options"]["norms"] == ["spade", "clade", "clade-icpe"]
    meta = json.loads((tmp_path / "tables" / "costs.meta.json").read_text())
    assert meta["options"]["costs"]["presets"] == ["ade20k"] and meta["options"]["run"]["quick"] is True
    report = (tmp_path / "report.md").read_text()
    assert "Missing stages" not in report
    for title in ("Costs", "Benchmark", "Training", "Probe", "Evaluation and return on investment",
                  "Wall time per stage", "Provenance", "What is proxy"):
        assert title in report, title
    assert "tables/evaluation.csv" in report and "figures/roi_quality_vs_cost.png" in report
    assert "miou_proxy" in report and "fd_proxy_features" in report
    assert "| SPADE converted to CLADE, fine-tuned " in report and "| spade-to-clade " in report
    for link in (tmp_path / "figures").glob("*.png"):
        assert link.stat().st_size > 0
    if elapsed > 180:   # a budget, not a correctness property: flag it without failing on a busy machine
        warnings.warn(f"run_analysis.py --quick took {elapsed:.0f} s; the budget is 3 minutes")

    # re-running reuses every finished stage
    start = time.perf_counter()
    run_analysis.main(["--quick", "--out", str(tmp_path), "--device", "cpu"])
    assert time.perf_counter() - start < 30
