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
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; no display needed

import torch  # noqa: E402 (after the backend choice)

from analysis.context import RunContext  # noqa: E402
from cli.errors import exit_code  # noqa: E402
from analysis.quality.segmenter_names import is_paper_segmenter, paper_segmenter_name  # noqa: E402
from analysis.options import (BUDGETS, CompareOptions, OptionParser, add_options, check_device,  # noqa: E402
                              checked_number, options_dict, options_from_args, positive_int)
from analysis.stages.convert import CONVERTED, FINETUNED  # noqa: E402
from analysis.stages.registry import CHECKPOINTS, STAGE_NAMES, STAGES, stage  # noqa: E402
from analysis.stages.runner import stage_runner  # noqa: E402
from data.presets import check_data_source  # noqa: E402
from fileio import folder_lock, weights_digests, write_json_atomic  # noqa: E402
from models.checkpoint import GENERATOR_CONFIG, GENERATOR_WEIGHTS  # noqa: E402
from models.plugins import load_plugins, split_plugin_args  # noqa: E402

# The stages, their options and what they read: analysis.stages.registry.STAGES.
DATA_STAGES = tuple(s.name for s in STAGES if s.reads_dataset)   # read --preset / --dataroot
# Run settings that determine every stage's result (besides the stage's own options); skip_invalid
# and checkpoint too, recorded only when given so that records written before them still match.
RUN_SETTINGS = ("preset", "dataroot", "seed", "quick", "budget", "checkpoints")
# Options of earlier versions, refused with their replacement.
RENAMED_OPTIONS = {"--probe-checkpoint": "--checkpoint PATH", "--convert-checkpoint": "--checkpoint PATH",
                   "--eval-generator": "--checkpoint [NAME=]PATH",
                   "--probe-norm": "nothing: the norm is read from the checkpoint's keys"}
# Where and with what a stage ran, kept in its record for the report (not compared on reuse).
RAN_ON = ("created", "git_commit", "python", "torch", "device", "device_name", "torch_threads")
log = logging.getLogger("run_analysis")


def build_parser() -> argparse.ArgumentParser:
    """The command line: run options, then one group per stage generated from its options dataclass."""
    parser = OptionParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                          renamed=RENAMED_OPTIONS)
    parser.add_argument("stage", nargs="?", default="all", choices=["all", *STAGE_NAMES],
                        help="run one stage, or all of them (default all)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default reports/<stage or 'default'>)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    parser.add_argument("--preset", default="synthetic", help="dataset preset of the trained models (default %(default)s)")
    parser.add_argument("--dataroot", type=Path, default=None, help="real dataset root (default: synthetic scenes)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help=f"stages {', '.join(DATA_STAGES)}: leave out samples of --dataroot whose files are "
                             "unpaired, lossy, unreadable or hold unknown label values, instead of stopping at the "
                             "first (the count is logged and recorded in stages/<stage>.json; default off)")
    parser.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                        help="evaluate the generator folders in DIR (<norm>/ and any other <name>/ with "
                             f"{GENERATOR_WEIGHTS} + {GENERATOR_CONFIG}) instead of training (default: none)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="[NAME=]PATH",
                        help="one more generator for the probe, convert and eval stages, besides the folders "
                             f"under --checkpoints DIR (or the run's checkpoints/): a folder with {GENERATOR_WEIGHTS} "
                             f"+ {GENERATOR_CONFIG} (train.py's), or an official weight file or release folder "
                             "(architecture from --preset; norm, width and instance edge from its keys). Probed "
                             "and scored as NAME (default: its folder's name); convert converts the SPADE one. "
                             "Repeatable (default: none)")
    parser.add_argument("--plugin", action="append", type=Path, metavar="FILE",
                        help="a Python file registering a norm with models.register_norm, loaded first so "
                             "--train-norms etc. accept its name (repeatable; see examples/)")
    parser.add_argument("--quick", action="store_true", help="CI-sized run (< 3 minutes on CPU); sets the "
                                                             "--quick defaults below")
    parser.add_argument("--budget", choices=BUDGETS, default="default",
                        help="default: sized for about 15 minutes on a 2-core CPU (the three methods, 3 seeds); "
                             "long: for a GPU or an overnight CPU run (10x the steps, 5 seeds, the SPADE 1x1 and "
                             "coarse-mask variants); sets the --budget long defaults below (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="recompute finished stages, also when their "
                                                             "settings differ from this command's")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error "
                                                             "(default: its one-line message)")
    parser.add_argument("--seed", type=checked_number(int, "--seed", 0), default=0,
                        help="seed of data and models (default %(default)s)")
    parser.add_argument("--threads", type=positive_int("--threads"), default=None,
                        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")
    for s in STAGES:
        add_options(parser.add_argument_group(f"{s.name} stage"), s.options, prefix=s.name)
    add_options(parser.add_argument_group("bench --compare"), CompareOptions, prefix="compare")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def context_from_args(args: argparse.Namespace) -> RunContext:
    """The run's context with every stage's options resolved (SystemExit naming a bad value)."""
    out = args.out if args.out is not None else Path("reports") / ("default" if args.stage == "all" else args.stage)
    if args.checkpoints is not None and args.stage == "train":
        raise SystemExit(f"--checkpoints {args.checkpoints} is read by the probe, eval and report stages; the train "
                         f"stage writes only under --out ({out}/checkpoints); drop --checkpoints to train")
    if args.checkpoint and args.stage in ("train", "costs", "bench", "report"):
        raise SystemExit(f"--checkpoint {args.checkpoint[0]} is read by the probe, convert and eval stages, not by "
                         f"the {args.stage} stage; drop it, or run one of those stages")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"run_analysis.py: --out {out} is a file; expected a folder for the report")
    try:
        if args.device is not None:
            check_device(args.device)
        if args.stage in ("all", *DATA_STAGES):
            check_data_source(args.preset, args.dataroot)
    except ValueError as exc:
        raise SystemExit(f"run_analysis.py: {exc}") from None
    stages = {s.name: options_from_args(args, s.options, s.name) for s in STAGES}
    try:
        ctx = RunContext(out=out, device=args.device or default_device(), preset=args.preset,
                         dataroot=args.dataroot, checkpoints=args.checkpoints, checkpoint=tuple(args.checkpoint),
                         quick=args.quick, budget=args.budget, force=args.force, seed=args.seed,
                         skip_invalid=args.skip_invalid,
                         compare=options_from_args(args, CompareOptions, "compare"),
                         **stages)
        if args.stage in ("all", "eval") and is_paper_segmenter(ctx.eval.segmenter):
            paper_segmenter_name(ctx.eval.segmenter, ctx.preset)   # refused before any stage runs
        return ctx
    except ValueError as exc:
        raise SystemExit(f"run_analysis.py: {exc}") from exc


def stage_settings(name: str, ctx: RunContext) -> dict:
    """The settings that determine a stage's result: the run's data and seed, and its own options."""
    run = ctx.options()["run"]
    options = options_dict(getattr(ctx, name))
    if name == "bench" and ctx.bench.compare:
        options["compare_options"] = options_dict(ctx.compare)
    settings = {k: run[k] for k in RUN_SETTINGS}
    if ctx.skip_invalid:
        settings["skip_invalid"] = True
    if ctx.checkpoint:
        settings["checkpoint"] = list(ctx.checkpoint)
    weights = given_weights(name, ctx)
    return {"run": settings, "options": options} | ({"weights": weights} if weights else {})


def given_weights(name: str, ctx: RunContext) -> dict:
    """Digests of the weights the user gave a stage that reads them (--checkpoints DIR, each
    --checkpoint), so that a stage is not "already done" after they were replaced. The folders the
    convert stage writes into DIR are its output, not its input: left out."""
    if CHECKPOINTS not in stage(name).reads:
        return {}
    given = [p for p in (ctx.checkpoints, *ctx.given_generators().values()) if p is not None]
    return {str(p): weights_digests(p, skip_folders=frozenset({CONVERTED, FINETUNED})) for p in given}


def _differences(old: dict, new: dict, where: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{where}{key}.")
        elif a != b:
            out.append(f"{where}{key}: recorded {a!r}, now {b!r}")
    return out


def _record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: unreadable stage record ({exc}); pass --force to recompute the stage") from None


def check_upstream(ctx: RunContext, name: str) -> None:
    """SystemExit when a finished stage under ``ctx.out`` ran on other run settings (data, seed,
    --quick, --checkpoints) than this command: the report would label its results wrongly."""
    for path in sorted((ctx.out / "stages").glob("*.json")):
        if path.stem == name or path.stem == "report":
            continue
        recorded = _record(path).get("stage_settings", {}).get("run")
        if recorded is None:
            continue
        differ = _differences(recorded, stage_settings(name, ctx)["run"])
        if differ:
            raise SystemExit(f"{path}: the {path.stem} stage ran with other settings ({'; '.join(differ)}); "
                             f"run the same settings, another --out, or --force to recompute it")


def run_stage(name: str, ctx: RunContext) -> dict:
    """Run one stage unless its record exists with the same settings (and --force is off); record
    its time and the settings it ran with. A record with other settings is refused, naming them."""
    marker = ctx.out / "stages" / f"{name}.json"
    settings = stage_settings(name, ctx)
    # The report is cheap and must reflect the stages as they are now: never reused.
    if marker.exists() and not ctx.force and name != "report":
        record = _record(marker)
        differ = _differences(record.get("stage_settings", {}), settings)
        if differ:
            raise SystemExit(f"{marker}: the {name} stage finished with other settings ({'; '.join(differ)}); "
                             f"pass --force to recompute it, or another --out")
        log.info("[%s] already done (%s); --force recomputes", name, marker)
        return record
    if not ctx.force:
        check_upstream(ctx, name)
    log.info("[%s] starting", name)
    start = time.perf_counter()
    ctx.take_skipped()  # count only this stage's
    result = stage_runner(stage(name))(ctx)
    skipped = ctx.take_skipped()
    if skipped:
        log.warning("[%s] skipped %d invalid samples (--skip-invalid); first: %s", name, len(skipped),
                    skipped[0].reason)
        result.summary.update(skipped_samples=len(skipped), skipped=[s.path for s in skipped])
        result.notes.append(f"{len(skipped)} invalid samples of the dataset were left out (--skip-invalid); they "
                            f"are listed in stages/{name}.json.")
    ran_on = {key: value for key, value in ctx.meta().items() if key in RAN_ON}
    record = {"stage": name, "seconds": round(time.perf_counter() - start, 2),
              "options": settings["options"], **result.record(), "stage_settings": settings, "ran_on": ran_on}
    write_json_atomic(marker, record)
    log.info("[%s] done in %.1f s", name, record["seconds"])
    return record


def run(args: argparse.Namespace) -> int:
    """Run the stages the command line names, holding the lock of --out."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ctx = context_from_args(args)
    stages = STAGE_NAMES if args.stage == "all" else [args.stage]
    if args.checkpoints is not None and args.stage == "all":
        stages = [s for s in stages if s != "train"]
    with folder_lock(ctx.out, "run_analysis.py"):
        for name in stages:
            run_stage(name, ctx)
    log.info("outputs in %s", ctx.out)
    return 0


def main(argv=None) -> int:
    """The command line; an error prints one line (file, value, expectation) unless --debug."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    argv = sys.argv[1:] if argv is None else list(argv)

    def parse_and_run() -> int:
        load_plugins(split_plugin_args(argv)[0])
        return run(parse_args(argv))

    return exit_code(parse_and_run, prog="run_analysis.py", debug="--debug" in argv,
                     interrupted="interrupted; the stages that finished are kept, run the same command again to "
                                 "continue")

if __name__ == "__main__":
    sys.exit(main())
