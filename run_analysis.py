#!/usr/bin/env python
"""The whole efficiency analysis in one command: costs, benchmark, training, probe,
evaluation and report, written under ``reports/<run>/``.

    python run_analysis.py                 # everything, on the built-in synthetic scenes
    python run_analysis.py --quick         # CI-sized run (< 3 minutes on CPU)
    python run_analysis.py costs --out reports/costs
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; no display needed

from analysis.context import RunContext
from analysis.provenance import write_json_atomic

# Stage name -> module under analysis/stages with ``add_arguments(parser)`` (optional) and
# ``run(ctx) -> dict`` (a short summary recorded in stages/<name>.json).
STAGES = ["costs", "bench", "train", "probe", "eval", "report"]
log = logging.getLogger("run_analysis")


def stage_module(name: str):
    return importlib.import_module(f"analysis.stages.{name}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all", choices=["all", *STAGES],
                        help="run one stage, or all of them (default)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default reports/<stage or 'default'>)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--preset", default="synthetic", help="dataset preset of the trained models")
    parser.add_argument("--dataroot", type=Path, default=None, help="real dataset root (default: synthetic scenes)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="evaluate the generator folders in <dir> (<norm>/ and any other <name>/ with "
                             "latest_net_G.pth + generator.json) instead of training")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (< 3 minutes on CPU)")
    parser.add_argument("--force", action="store_true", help="recompute finished stages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    for name in STAGES:
        module = stage_module(name)
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser.add_argument_group(f"{name} stage"))
    return parser.parse_args(argv)


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_stage(name: str, ctx: RunContext) -> dict:
    """Run one stage unless its done-marker exists (and --force is off); record its time."""
    marker = ctx.out / "stages" / f"{name}.json"
    # The report is cheap and must reflect the stages as they are now: never reused.
    if marker.exists() and not ctx.force and name != "report":
        log.info("[%s] already done (%s); --force recomputes", name, marker)
        return json.loads(marker.read_text())
    log.info("[%s] starting", name)
    start = time.perf_counter()
    summary = stage_module(name).run(ctx) or {}
    record = {"stage": name, "seconds": round(time.perf_counter() - start, 2), **summary}
    write_json_atomic(record, marker)
    log.info("[%s] done in %.1f s", name, record["seconds"])
    return record


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    out = args.out or Path("reports") / ("default" if args.stage == "all" else args.stage)
    ctx = RunContext(out=out, device=args.device or default_device(), preset=args.preset,
                     dataroot=args.dataroot, checkpoints=args.checkpoints, quick=args.quick,
                     force=args.force, seed=args.seed, extra=vars(args))
    stages = STAGES if args.stage == "all" else [args.stage]
    if args.checkpoints is not None and "train" in stages and args.stage == "all":
        stages = [s for s in stages if s != "train"]
    for name in stages:
        run_stage(name, ctx)
    log.info("outputs in %s", ctx.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
