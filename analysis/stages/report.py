"""Report stage: assemble ``<out>/report.md`` from the records of the stages that ran.

    python run_analysis.py report --out reports/default --force
"""
from __future__ import annotations

import logging

from ..context import RunContext
from ..report import STAGE_ORDER, read_records, write_report

log = logging.getLogger(__name__)


def run(ctx: RunContext) -> dict:
    path = write_report(ctx.out, ctx.meta())
    present = list(read_records(ctx.out))
    missing = [s for s in STAGE_ORDER if s not in present]
    if missing:
        log.warning("report without stages %s (run them, then the report stage with --force)", missing)
    log.info("report: %s", path)
    return {"report": path.name, "stages_included": present, "stages_missing": missing}
