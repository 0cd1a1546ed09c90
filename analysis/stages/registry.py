"""The stages of ``run_analysis.py``, declared once, in run order.

Each entry names a stage, its options dataclass (``RunContext.<name>`` holds it resolved), the
title of its report section, what it reads and the tables it writes. Everything else asks this
list: the command line (stage choices, one option group per stage), ``RunContext``'s stage
fields, the report's section order and titles, and the Findings' "stage X skipped". A stage's
code is ``analysis/stages/<name>.py``: ``run(ctx: RunContext) -> StageResult``
(``analysis.stages.runner.stage_runner`` gives it).

This module imports only the options, so that the context, the report and the Findings, which
the stage modules themselves import, can read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

from analysis.options import (BenchOptions, ConvertOptions, CostsOptions, EvalOptions, ProbeOptions, ReportOptions,
                              TrainOptions)

# What a stage may read besides its options (the values of Stage.reads).
DATASET = "dataset"          # the run's --preset / --dataroot samples (checked before the stage runs)
CHECKPOINTS = "checkpoints"  # generator folders: <out>/checkpoints/ or --checkpoints DIR
REFERENCE = "reference"      # official reference numbers (--costs-reference-dir)
RECORDS = "stage records"    # stages/<stage>.json and the tables of the stages that ran


@dataclass(frozen=True)
class Stage:
    name: str                 # run_analysis.py <name>; stages/<name>.json; RunContext.<name>
    options: type             # its options dataclass; the command line's --<name>-* flags come from it
    title: str                # heading of its section in report.md
    reads: tuple[str, ...]    # DATASET, CHECKPOINTS, REFERENCE, RECORDS
    writes: tuple[str, ...]   # tables/<table>.csv it writes (fnmatch patterns for per-run tables)
    reported: bool = True     # has a section in report.md (the report stage itself has none)

    @property
    def reads_dataset(self) -> bool:
        return DATASET in self.reads


STAGES: tuple[Stage, ...] = (
    Stage("costs", CostsOptions, "Costs: parameters and GMACs of the official configurations",
          reads=(REFERENCE,), writes=("costs", "costs_per_layer", "cost_crosscheck")),
    Stage("bench", BenchOptions, "Benchmark: measured latency",
          reads=(), writes=("bench", "bench_profile", "bench_train_step", "speed_compare", "speed_train")),
    Stage("train", TrainOptions, "Training: SPADE, CLADE and CLADE-ICPE under one recipe",
          reads=(DATASET,), writes=("training", "train_log_*")),
    Stage("probe", ProbeOptions, "Probe: what the modulation layers do",
          reads=(DATASET, CHECKPOINTS), writes=("probe_layers", "probe_channels", "probe_resolutions",
                                                 "probe_ablation")),
    Stage("convert", ConvertOptions, "SPADE converted to CLADE without training",
          reads=(DATASET, CHECKPOINTS), writes=("conversion",)),
    Stage("eval", EvalOptions, "Evaluation and return on investment",
          reads=(DATASET, CHECKPOINTS), writes=("evaluation", "quality_seeds", "ablation_quality", "neighbourhood",
                                                 "roi", "roi_modulation")),
    Stage("report", ReportOptions, "Report", reads=(RECORDS,), writes=(), reported=False),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    """The stage called ``name``; ValueError listing the stages otherwise."""
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; the stages are {', '.join(STAGE_NAMES)}")


def reported_stages() -> tuple[Stage, ...]:
    """The stages with a section in report.md, in report order (= run order)."""
    return tuple(s for s in STAGES if s.reported)


def stage_writing(table: str) -> Stage:
    """The stage that writes ``tables/<table>.csv``; ValueError when none declares it."""
    for s in STAGES:
        if any(fnmatch(table, pattern) for pattern in s.writes):
            return s
    raise ValueError(f"no stage writes tables/{table}.csv (analysis.stages.registry.STAGES declares what each writes)")
