"""Report stage: assemble ``<out>/report.md`` from the records of the stages that ran.

    python run_analysis.py report --out reports/default --force
"""
from __future__ import annotations

import logging

from analysis.context import RunContext, StageResult
from analysis.report.assemble import STAGE_ORDER, read_records, write_report

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> StageResult:
    # With --checkpoints the models come from elsewhere: training is not expected.
    stages = [s for s in STAGE_ORDER if not (s == "train" and ctx.checkpoints is not None)]
    meta = ctx.meta(**({"checkpoints": str(ctx.checkpoints)} if ctx.checkpoints is not None else {}))
    path = write_report(ctx.out, meta, stages)
    present = list(read_records(ctx.out, stages))
    missing = [s for s in stages if s not in present]
    if missing:
        log.warning("report without stages %s (run them, then the report stage with --force)", missing)
    log.info("report: %s", path)
    return StageResult(summary={"report": path.name, "stages_included": present, "stages_missing": missing})
