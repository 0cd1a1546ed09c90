"""The run function of every registered stage: ``analysis/stages/<name>.py``'s ``run(ctx) -> StageResult``.

    result = stage_runner(stage("costs"))(ctx)
"""
from __future__ import annotations

from typing import Callable

from analysis.context import RunContext, StageResult
from analysis.stages import bench, convert, costs, probe, report, train
from analysis.stages import eval as eval_stage   # "eval" would shadow the builtin
from analysis.stages.registry import Stage

# Stage name -> its module (a stage's name is its module's; tests/test_run_analysis.py checks each has one).
_MODULES = {module.__name__.rpartition(".")[2]: module
            for module in (costs, bench, train, probe, convert, eval_stage, report)}


def stage_runner(stage: Stage) -> Callable[[RunContext], StageResult]:
    """The ``run`` function of ``stage``."""
    return _MODULES[stage.name].run
