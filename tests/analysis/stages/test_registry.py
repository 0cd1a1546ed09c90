"""The stage registry is the one list of stages: the CLI, RunContext, the report and the Findings follow it."""
import json
from dataclasses import fields
from pathlib import Path

import pytest

import run_analysis
from analysis.context import FigureRef, RunContext, StageResult, TableRef
from analysis.report import assemble, findings
from analysis.stages.registry import STAGE_NAMES, STAGES, reported_stages, stage, stage_writing
from analysis.stages.runner import stage_runner

EXAMPLE = Path(__file__).resolve().parents[3] / "reports" / "example"


def test_every_stage_runs_the_run_function_of_its_module():
    for s in STAGES:
        run = stage_runner(s)
        assert run.__name__ == "run" and run.__module__ == f"analysis.stages.{s.name}", s.name


def test_run_context_has_one_field_per_stage_holding_its_options():
    declared = {f.name: f.type for f in fields(RunContext)}
    assert all(declared[s.name] == s.options.__name__ for s in STAGES)
    ctx = RunContext(out="x", quick=True)
    assert [type(getattr(ctx, s.name)) for s in STAGES] == [s.options for s in STAGES]
    assert list(ctx.options())[1:] == [*STAGE_NAMES, "compare"]


def test_cli_report_and_findings_follow_the_registry():
    parser = run_analysis.build_parser()
    assert parser._actions[1].choices == ["all", *STAGE_NAMES]
    assert run_analysis.DATA_STAGES == ("train", "probe", "convert", "eval")
    assert assemble.STAGE_ORDER == tuple(s.name for s in reported_stages()) == STAGE_NAMES[:-1]
    assert assemble.STAGE_TITLES["probe"] == stage("probe").title
    assert findings.TABLE_STAGES["probe_ablation"] == "probe" and findings.TABLE_STAGES["quality_seeds"] == "eval"


def test_the_writer_of_each_table():
    assert stage_writing("train_log_clade-icpe-s1").name == "train"
    assert stage_writing("cost_crosscheck").name == "costs"
    with pytest.raises(ValueError, match="no stage writes tables/nothing.csv"):
        stage_writing("nothing")
    with pytest.raises(ValueError, match="unknown stage 'nope'; the stages are costs, bench"):
        stage("nope")


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="no committed example report")
def test_each_table_of_the_example_report_is_declared_by_the_stage_that_records_it():
    for path in sorted((EXAMPLE / "stages").glob("*.json")):
        for entry in json.loads(path.read_text()).get("tables", []):
            name = Path(entry["file"]).name.split(".")[0]
            assert stage_writing(name).name == path.stem, entry["file"]


def test_a_result_records_its_summary_then_the_lists_it_has():
    result = StageResult(tables=[TableRef("tables/a.csv", "A.", ["x", "y"]), TableRef("tables/b.csv", "B.")],
                         figures=[FigureRef("figures/a.png", "Fig.")], notes=["n"], summary={"count": 2})
    assert result.tables[0].columns == ("x", "y")
    assert json.loads(json.dumps(result.record())) == {
        "count": 2, "tables": [{"file": "tables/a.csv", "caption": "A.", "columns": ["x", "y"]},
                               {"file": "tables/b.csv", "caption": "B."}],
        "figures": [{"file": "figures/a.png", "caption": "Fig."}], "notes": ["n"]}
    assert StageResult(summary={"skipped": "why"}).record() == {"skipped": "why"}
