#!/usr/bin/env python
"""The whole efficiency analysis in one command: costs, benchmark, training, probe,
evaluation and report, written under ``reports/<run>/``.

    python run_analysis.py                 # everything, on the built-in synthetic scenes
    python run_analysis.py --quick         # CI-sized run (< 3 minutes on CPU)
    python run_analysis.py costs --out reports/costs
    python run_analysis.py --plugin examples/lowrank_clade.py --train-norms spade,clade,lowrank-clade
    python run_analysis.py convert --checkpoint runs/00001-synthetic-spade/generator --out reports/conv
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

import torch  # noqa: E402 (after the backend choice)

from analysis.context import RunContext  # noqa: E402
from analysis.options import (STAGE_OPTIONS, CompareOptions, OptionParser, add_options,  # noqa: E402
                              options_dict, options_from_args, positive_int)
from fileio import write_json_atomic  # noqa: E402
from models.checkpoint import GENERATOR_CONFIG, GENERATOR_WEIGHTS  # noqa: E402
from models.plugins import load_plugins, split_plugin_args  # noqa: E402

# Stage name -> module under analysis/stages with ``run(ctx) -> dict`` (a short summary recorded in
# stages/<name>.json); its options are the dataclass analysis.options.STAGE_OPTIONS[name].
STAGES = ["costs", "bench", "train", "probe", "convert", "eval", "report"]
log = logging.getLogger("run_analysis")


def stage_module(name: str):
    return importlib.import_module(f"analysis.stages.{name}")


def build_parser() -> argparse.ArgumentParser:
    """The command line: run options, then one group per stage generated from its options dataclass."""
    parser = OptionParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all", choices=["all", *STAGES],
                        help="run one stage, or all of them (default all)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default reports/<stage or 'default'>)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--preset", default="synthetic", help="dataset preset of the trained models (default %(default)s)")
    parser.add_argument("--dataroot", type=Path, default=None, help="real dataset root (default: synthetic scenes)")
    parser.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                        help="evaluate the generator folders in DIR (<norm>/ and any other <name>/ with "
                             f"{GENERATOR_WEIGHTS} + {GENERATOR_CONFIG}) instead of training (default: none)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                        help="probe stage: probe this one generator, a .pth file or a folder with "
                             f"{GENERATOR_CONFIG} (same as --probe-checkpoint); convert stage: the SPADE "
                             "generator to convert (same as --convert-checkpoint; default: none)")
    parser.add_argument("--plugin", action="append", type=Path, metavar="FILE",
                        help="a Python file registering a norm with models.register_norm, loaded first so "
                             "--train-norms etc. accept its name (repeatable; see examples/)")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (< 3 minutes on CPU); sets the "
                                                             "--quick defaults below")
    parser.add_argument("--force", action="store_true", help="recompute finished stages")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and models (default %(default)s)")
    parser.add_argument("--threads", type=positive_int("--threads"), default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    for name in STAGES:
        add_options(parser.add_argument_group(f"{name} stage"), STAGE_OPTIONS[name], prefix=name)
    add_options(parser.add_argument_group("bench --compare"), CompareOptions, prefix="compare")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def probe_checkpoint(args: argparse.Namespace, stage: str = "probe") -> Path | None:
    """The one generator the probe or convert ``stage`` reads (--checkpoint, or --<stage>-checkpoint),
    checked: SystemExit with what was found and what to pass instead when it names no single generator."""
    path, same = args.checkpoint, getattr(args, f"{stage}_checkpoint")
    if path is not None and args.stage not in ("probe", "convert"):
        raise SystemExit(f"--checkpoint {path}: one generator is read by the probe stage only "
                         f"(run_analysis.py probe --checkpoint PATH) and converted by the convert stage "
                         f"(run_analysis.py convert --checkpoint PATH); to use a folder of generator folders "
                         f"in every stage pass --checkpoints DIR, to score one more generator in eval pass "
                         f"--eval-generator DIR")
    if path is None or args.stage != stage:
        return same
    if same is not None and Path(same) != path:
        raise SystemExit(f"--checkpoint {path} and --{stage}-checkpoint {same} differ; pass one of them")
    if path.is_file():
        return path
    if not path.exists():
        raise SystemExit(f"--checkpoint {path}: no such file or folder; expected a generator .pth file or a "
                         f"folder with {GENERATOR_CONFIG}")
    if (path / GENERATOR_CONFIG).is_file():
        return path
    inner = sorted(p.name for p in path.iterdir() if (p / GENERATOR_WEIGHTS).is_file())
    if inner:
        raise SystemExit(f"--checkpoint {path} is a folder of generator folders ({', '.join(inner)}); pass it "
                         f"as --checkpoints {path} to probe all of them")
    raise SystemExit(f"--checkpoint {path} is a folder without {GENERATOR_CONFIG}; pass the .pth file itself "
                     f"(with --preset and --probe-norm), or a folder written by train.py")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def context_from_args(args: argparse.Namespace) -> RunContext:
    """The run's context with every stage's options resolved (SystemExit naming a bad value)."""
    out = args.out if args.out is not None else Path("reports") / ("default" if args.stage == "all" else args.stage)
    stages = {name: options_from_args(args, STAGE_OPTIONS[name], name) for name in STAGES}
    stages["probe"].checkpoint = probe_checkpoint(args)
    stages["convert"].checkpoint = probe_checkpoint(args, "convert")
    try:
        return RunContext(out=out, device=args.device or default_device(), preset=args.preset,
                          dataroot=args.dataroot, checkpoints=args.checkpoints, quick=args.quick,
                          force=args.force, seed=args.seed, compare=options_from_args(args, CompareOptions, "compare"),
                          **stages)
    except ValueError as exc:
        raise SystemExit(f"run_analysis.py: {exc}") from exc


def run_stage(name: str, ctx: RunContext) -> dict:
    """Run one stage unless its done-marker exists (and --force is off); record its time and the
    options it ran with."""
    marker = ctx.out / "stages" / f"{name}.json"
    # The report is cheap and must reflect the stages as they are now: never reused.
    if marker.exists() and not ctx.force and name != "report":
        log.info("[%s] already done (%s); --force recomputes", name, marker)
        return json.loads(marker.read_text())
    log.info("[%s] starting", name)
    start = time.perf_counter()
    summary = stage_module(name).run(ctx)
    record = {"stage": name, "seconds": round(time.perf_counter() - start, 2),
              "options": options_dict(getattr(ctx, name)), **summary}
    if name == "bench" and ctx.bench.compare:
        record["options"]["compare_options"] = options_dict(ctx.compare)
    write_json_atomic(marker, record)
    log.info("[%s] done in %.1f s", name, record["seconds"])
    return record


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    load_plugins(split_plugin_args(sys.argv[1:] if argv is None else list(argv))[0])
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ctx = context_from_args(args)
    stages = STAGES if args.stage == "all" else [args.stage]
    if args.checkpoints is not None and args.stage == "all":
        stages = [s for s in stages if s != "train"]
    for name in stages:
        run_stage(name, ctx)
    log.info("outputs in %s", ctx.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
