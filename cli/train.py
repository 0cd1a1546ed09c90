#!/usr/bin/env python
"""Train one SPADE / CLADE / CLADE-ICPE generator, on one process or many (torchrun).

    python train.py --preset synthetic --norm clade --steps 300 --batch-size 8 --no-vgg
    python train.py --preset ade20k --norm clade --dataroot datasets/ADEChallengeData2016 --epochs 200
    python train.py --preset synthetic --norm spade --spade_kernel_size 1 --dry-run
    python train.py --resume runs/<NNNNN>-synthetic-clade        # continue that run (also after a crash)
    python train.py --resume --preset synthetic --norm clade     # continue the newest such run in --out
    torchrun --nproc_per_node 8 train.py --preset coco-stuff --norm clade --dataroot ... --batch-size 4
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 train.py ...

Each run goes to a numbered folder ``<out>/00001-<preset>-<norm>/`` holding ``options.json``
(every resolved option), ``log.jsonl``/``log.csv`` (losses), ``samples/`` (label, real,
generated grids), ``skipped.json`` (with --skip-invalid: the samples left out),
``checkpoint.pt`` (+ ``checkpoint.prev.pt``) and, at the end,
``generator/latest_net_G.pth`` in the official format with its ``generator.json``.

Disk: a checkpoint holds G, D and both optimizers' state, about 12 bytes per parameter. For the
synthetic preset at the default --ngf 64: SPADE 1.17 GB, CLADE and CLADE-ICPE 872 MB (--ngf 16:
195 MB and 118 MB); other presets and widths: ``--dry-run`` prints it. A run keeps at most
two (``checkpoint.pt``, ``checkpoint.prev.pt``); the run logs their size before the first save.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch.distributed as dist

from cli.errors import exit_code
from analysis.options import (OptionParser, add_options, check_device, checked_number, option, options_dict,
                              options_from_args, resolve)
from data.datasets import build_dataset as build_real_dataset
from data.datasets import custom_has_instances
from data.icpe import DEFAULT_MODE, MODES as ICPE_MODES
from data.presets import check_data_source
from data.synthetic import SyntheticScenes
from fileio import provenance, write_json_atomic
from fileio.lock import LOCK_NAME
from fileio.lock import acquire as acquire_lock
from fileio.lock import release as release_lock
from training.checkpoint_store import DiskFullError, checkpoint_step, find_resume_target
from training.distributed import cleanup_distributed, setup_distributed
from models.presets import (PRESETS, DiscriminatorConfig, GeneratorConfig, canonical_norm, canonical_preset,
                            generator_config)
from models.plugins import load_plugins, plugin_files, split_plugin_args
from models.registry import norm_spec
from training.loop import TrainingInterrupted, checkpoint_disk_note
from training.recipe import TrainRecipe, check_batch_norm_batch, discriminator_config_for, recipe_from_dict
from training.trainer import NonFiniteLossError, Trainer
from training.vgg import VGGWeightsInvalidError, VGGWeightsMissingError

log = logging.getLogger("train")

# Network options settable by their official names (--ngf 16, --label_nc 20, ...).
GENERATOR_OPTIONS = ("label_nc", "contain_dontcare_label", "no_instance", "ngf", "crop_size",
                     "aspect_ratio", "num_upsampling_layers", "use_vae", "z_dim", "spade_hidden",
                     "spade_kernel_size", "param_free_norm", "spectral")
DISCRIMINATOR_OPTIONS = ("ndf", "n_layers_D", "num_D")
RECIPE_OPTIONS = ("lr", "beta1", "beta2", "gan_mode", "lambda_feat", "lambda_vgg", "lambda_kld",
                  "niter", "niter_decay", "decay_start_step", "decay_steps", "D_steps_per_G", "ema_decay",
                  "bn_estimation_batches")
# TrainRecipe fields with a dashed flag of their own (--batch-size, --channels-last, ...).
RECIPE_FLAGS = ("batch_size", "seed", "amp", "compile", "channels_last", "spectral_input_scaling", "ema")
SYNTHETIC_TRAIN_SCENES = 2000   # synthetic scenes in the training set when --num-samples is not given
DEFAULT_EPOCHS = 50             # official niter (+ niter_decay 0), when neither --steps nor --epochs is given


@dataclass
class RunOptions:
    """What to train on, for how long, and where the run folder goes (the network and recipe
    options are those of GeneratorConfig, DiscriminatorConfig and TrainRecipe)."""

    preset: str = option("synthetic", f"dataset preset {sorted(PRESETS)}")
    norm: str = option("clade", "generator: a registered norm (spade, clade, clade-icpe, or a --plugin's)")
    dataroot: Path | None = option(None, "dataset root for the preset (default: the built-in synthetic scenes)")
    num_samples: int | None = option(None, f"synthetic scenes in the training set (default "
                                     f"{SYNTHETIC_TRAIN_SCENES}), or a cap on a real dataset (default: all)",
                                     minimum=1)
    data_seed: int = option(0, "seed of the synthetic scenes and of the crops / flips")
    icpe_mode: str = option(DEFAULT_MODE, "ICPE map computation for clade-icpe", choices=ICPE_MODES)
    skip_invalid: bool = option(False, "leave out samples whose files are unpaired, lossy, unreadable or hold "
                                "unknown label values, instead of stopping at the first (their count is logged "
                                "and recorded in options.json, the list in skipped.json)")
    steps: int | None = option(None, "total iterations, resumed ones included (default: --epochs)", minimum=1)
    epochs: int | None = option(None, f"total epochs (default {DEFAULT_EPOCHS}, official niter, when --steps is "
                                "not given)", minimum=1)
    out: Path = option(Path("runs"), "parent of the numbered run folders")
    log_every: int = option(10, "steps per logged loss row; 0 = only at the end", minimum=0)
    save_every: int = option(500, "steps per checkpoint; 0 = only at the end", minimum=0)
    sample_every: int = option(500, "steps per image grid; 0 = only at the end", minimum=0)
    num_workers: int = option(2, "data loader workers per process; 0 = load in the training process", minimum=0)
    device: str | None = option(None, "cuda | cpu (default: cuda if available)")
    vgg_weights: Path | None = option(None, "torchvision vgg19-dcbb9e9d.pth (default: the torch hub cache)",
                                      exists=True)
    progress: bool = option(True, "progress bar")


# Options a resumed run may change; everything else comes from the run's options.json.
RESUMABLE_RUN_OPTIONS = ("steps", "epochs", "log_every", "save_every", "sample_every", "num_workers",
                         "vgg_weights", "device", "progress")


def _bool(text: str) -> bool:
    value = str(text).lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _field(cls, name):
    return {f.name: f for f in fields(cls)}[name]


def _field_type(cls, name):
    """argparse type of a dataclass field, from its default."""
    default = _field(cls, name).default
    if isinstance(default, bool):
        return _bool
    if isinstance(default, (int, float)):
        return checked_number(type(default), f"--{name}")
    if name in ("beta1", "beta2"):
        return checked_number(float, f"--{name}")
    return str


def _default_help(cls, name, what: str) -> str:
    """``what`` plus the field's default as declared in ``cls``."""
    default = _field(cls, name).default
    shown = "on" if default is True else "off" if default is False else "automatic" if default is None else default
    return f"{what} (default {shown})"


def build_parser() -> argparse.ArgumentParser:
    """The command line: RunOptions, the recipe flags and every network / recipe option by its
    official name, each with its default in --help (read from the dataclass that declares it)."""
    p = OptionParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, RunOptions)
    p.add_argument("--plugin", action="append", metavar="FILE", help="a Python file registering a norm with "
                   "models.register_norm, loaded first so --norm accepts its name (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options as JSON and exit")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error (default: its "
                                                        "one-line message)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue a run folder or checkpoint file (no PATH: the latest run of "
                        "--preset/--norm in --out)")
    recipe = p.add_argument_group("training recipe (training.trainer.TrainRecipe)")
    recipe.add_argument("--batch-size", type=checked_number(int, "--batch-size", 1), default=None,
                        help=_default_help(TrainRecipe, "batch_size", "images per process per step (official 1)"))
    recipe.add_argument("--seed", type=checked_number(int, "--seed", 0), default=None,
                        help=_default_help(TrainRecipe, "seed", "training seed"))
    recipe.add_argument("--no-vgg", action="store_true", help="train without the VGG19 perceptual loss")
    recipe.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help=_default_help(TrainRecipe, "amp", "bf16 autocast where bf16 is native: CUDA, CPUs with "
                                                               "AMX / AVX512-BF16; --no-amp trains in fp32"))
    recipe.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help=_default_help(TrainRecipe, "compile", "torch.compile G and D"))
    recipe.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help=_default_help(TrainRecipe, "channels_last", "NHWC memory format"))
    recipe.add_argument("--spectral-input-scaling", action=argparse.BooleanOptionalAction, default=None,
                        help=_default_help(TrainRecipe, "spectral_input_scaling",
                                           "spectral norm as conv(x / sigma, W) where the input is smaller than "
                                           "the weight, same result; --no-spectral-input-scaling divides the "
                                           "weights, as the official code"))
    recipe.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                        help=_default_help(TrainRecipe, "ema", "keep (and export) an EMA of G"))
    recipe.add_argument("--no_TTUR", action="store_true", help="same lr for G and D (official flag)")
    recipe.add_argument("--no_ganFeat_loss", action="store_true",
                        help="no discriminator feature matching (official flag)")
    net = p.add_argument_group("network and recipe options (official names)")
    for name in GENERATOR_OPTIONS:
        kind = _field_type(GeneratorConfig, name)
        net.add_argument(f"--{name}", type=kind, default=None, nargs="?" if kind is _bool else None,
                         const=True if kind is _bool else None,
                         help=f"generator option (default: the preset's, else {_field(GeneratorConfig, name).default})")
    for name in DISCRIMINATOR_OPTIONS:
        net.add_argument(f"--{name}", type=_field_type(DiscriminatorConfig, name), default=None,
                         help=_default_help(DiscriminatorConfig, name, "discriminator option"))
    for name in RECIPE_OPTIONS:
        net.add_argument(f"--{name}", type=_field_type(TrainRecipe, name), default=None,
                         help=_default_help(TrainRecipe, name, "recipe option"))
    net.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any generator / discriminator / recipe field, e.g. --set spade_hidden=64")
    return p


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_options(args: argparse.Namespace) -> RunOptions:
    """RunOptions from the command line, defaults filled in (SystemExit for conflicting values)."""
    opts = options_from_args(args, RunOptions)
    if opts.steps is not None and opts.epochs is not None:
        raise SystemExit(f"--steps {opts.steps} and --epochs {opts.epochs}: give one of them")
    try:
        return resolve(opts)
    except ValueError as exc:
        raise SystemExit(f"train.py: {exc}") from exc


def resolve_options(args: argparse.Namespace) -> dict:
    """All options of a new run as a JSON-able dict (what --dry-run prints and options.json holds)."""
    run = run_options(args)
    preset = canonical_preset(run.preset)
    norm = canonical_norm(run.norm)
    if run.out.exists() and not run.out.is_dir():
        raise SystemExit(f"train.py: --out {run.out} is a file; expected a folder (the parent of the run folders)")
    try:
        check_data_source(preset, run.dataroot)
        if run.device is not None:
            check_device(run.device)
    except ValueError as exc:
        raise SystemExit(f"train.py: {exc}") from None
    g_fields = {f.name for f in fields(GeneratorConfig)} - {"norm", "icpe_mode"}  # icpe_mode: --icpe-mode
    d_fields = {f.name for f in fields(DiscriminatorConfig)}
    r_fields = {f.name for f in fields(TrainRecipe)}
    g_over = {k: getattr(args, k) for k in GENERATOR_OPTIONS if getattr(args, k) is not None}
    d_over = {k: getattr(args, k) for k in DISCRIMINATOR_OPTIONS if getattr(args, k) is not None}
    r_over = {k: getattr(args, k) for k in RECIPE_OPTIONS if getattr(args, k) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        value = _parse_value(value)
        if key not in g_fields | d_fields | r_fields:
            raise SystemExit(f"--set {key}: unknown option; generator: {sorted(g_fields)}, "
                             f"discriminator: {sorted(d_fields)}, recipe: {sorted(r_fields)}")
        if key in g_fields:
            g_over[key] = value
        if key in d_fields and key not in g_fields:
            d_over[key] = value
        if key in r_fields:
            r_over[key] = value
    r_over.update({name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None})
    if args.no_vgg:
        r_over["use_vgg"] = False
    if args.no_TTUR:
        r_over["ttur"] = False
    if args.no_ganFeat_loss:
        r_over["use_feat_loss"] = False
    if preset == "custom" and "no_instance" not in g_over and not custom_has_instances(run.dataroot):
        g_over["no_instance"] = True  # no instances/ folder: no instance-edge channel
    try:
        g_config = generator_config(preset, norm, icpe_mode=run.icpe_mode, **g_over)
        d_config = discriminator_config_for(g_config, **d_over)
        recipe = TrainRecipe(**r_over)
        check_batch_norm_batch(g_config, recipe.batch_size)
    except ValueError as exc:
        raise SystemExit(f"train.py: {exc}") from None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    num_samples = run.num_samples
    if num_samples is None and run.dataroot is None:
        num_samples = SYNTHETIC_TRAIN_SCENES
    if run.dataroot is None:
        check_synthetic_scenes(num_samples)
    run_dict = options_dict(run)
    return {
        "preset": preset, "norm": norm,
        "generator": asdict(g_config), "discriminator": asdict(d_config), "recipe": asdict(recipe),
        "data": {"dataroot": run_dict["dataroot"], "num_samples": num_samples, "seed": run.data_seed,
                 "icpe_mode": run.icpe_mode, "skip_invalid": run.skip_invalid},
        "run": {"steps": run.steps, "epochs": DEFAULT_EPOCHS if run.steps is None and run.epochs is None
                else run.epochs,
                **{k: run_dict[k] for k in ("out", "log_every", "save_every", "sample_every", "num_workers",
                                            "device", "vgg_weights", "progress")},
                "world_size": world_size, "effective_batch_size": recipe.batch_size * world_size},
    }


def check_synthetic_scenes(num_samples: int) -> None:
    """SystemExit when each epoch's shuffled order of ``num_samples`` synthetic scenes (8 bytes per
    scene) would take more than a quarter of this machine's memory."""
    order = 8 * num_samples
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if memory and order > memory // 4:
        raise SystemExit(f"train.py: --num-samples {num_samples}: each epoch shuffles that many synthetic scenes, "
                         f"an order of {order / 1e9:.1f} GB, more than a quarter of this machine's "
                         f"{memory / 1e9:.1f} GB of memory; give at most {memory // 32}")


def check_resume_length(options: dict, checkpoint: Path) -> None:
    """SystemExit when --steps asks for fewer steps than ``checkpoint`` has trained (before anything is written)."""
    steps = options["run"]["steps"]
    done = checkpoint_step(checkpoint)
    if steps is not None and done is not None and steps < done:
        raise SystemExit(f"train.py: --steps {steps}: {checkpoint} is at step {done} already, and --steps counts "
                         f"every step, the resumed ones included; give more than {done} to train further "
                         f"(the run's generator/ folder holds the weights of step {done})")


def find_run_to_resume(args: argparse.Namespace, run: RunOptions) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to load or None) named by --resume: a run folder (its latest readable
    checkpoint), exactly the checkpoint file named, or 'latest' (the newest run of ``run.preset`` /
    ``run.norm`` under ``run.out`` that has a checkpoint)."""
    desc = f"{canonical_preset(run.preset)}-{canonical_norm(run.norm)}"
    try:
        return find_resume_target(args.resume, runs_root=run.out, desc=desc)
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None


def options_for_resume(args: argparse.Namespace, run_dir: Path) -> dict:
    """The run's saved options, with the run-length options the command line changes."""
    path = run_dir / "options.json"
    try:
        options = json.loads(path.read_text())
        options["run"], options["preset"], options["norm"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        why = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise SystemExit(f"train.py: {path} is unreadable ({why}); expected the options.json train.py wrote "
                         f"when the run started. Start a new run, or restore the file.") from None
    given = {"steps": args.steps, "epochs": args.epochs, "log_every": args.log_every,
             "save_every": args.save_every, "sample_every": args.sample_every,
             "num_workers": args.num_workers, "device": args.device, "progress": args.progress,
             "vgg_weights": str(args.vgg_weights) if args.vgg_weights else None}
    for key in RESUMABLE_RUN_OPTIONS:
        if given[key] is not None:
            options["run"][key] = given[key]
    if args.steps is not None:
        options["run"]["epochs"] = None
    if args.epochs is not None:
        options["run"]["steps"] = None
    requested = resolve_options(args)  # what this command line asks for, to compare with the run's
    differ = [f"{section}.{k}: run {options[section].get(k)!r}, requested {v!r}"
              for section, keys in (("generator", GENERATOR_OPTIONS), ("discriminator", DISCRIMINATOR_OPTIONS),
                                    ("recipe", (*RECIPE_OPTIONS, "batch_size", "seed", "ema", "amp",
                                                "use_vgg", "ttur", "use_feat_loss")))
              for k in keys if k in requested[section] and _given(args, k)
              and (v := requested[section][k]) != options[section].get(k)]
    if args.dataroot is not None and str(args.dataroot) != options["data"]["dataroot"]:
        differ.append(f"data.dataroot: run {options['data']['dataroot']!r}, requested {str(args.dataroot)!r}")
    if args.skip_invalid is not None and args.skip_invalid != options["data"].get("skip_invalid", False):
        differ.append(f"data.skip_invalid: run {options['data'].get('skip_invalid', False)!r}, requested "
                      f"{args.skip_invalid!r}")
    if differ:
        raise SystemExit(f"--resume {run_dir}: the run was trained with other settings ({'; '.join(differ)}). "
                         f"Resume it without them (its options.json decides), or start a new run without --resume.")
    return options


def _given(args: argparse.Namespace, key: str) -> bool:
    """Whether the command line set ``key`` (an option, its flag, or --set key=...)."""
    flags = {"use_vgg": args.no_vgg, "ttur": args.no_TTUR, "use_feat_loss": args.no_ganFeat_loss}
    return (flags[key] if key in flags else getattr(args, key, None) is not None) \
        or any(item.partition("=")[0] == key for item in args.set)


def next_run_dir(out: Path, desc: str) -> Path:
    """``out/<NNNNN>-<desc>`` with the next free number (NVlabs edm style), created. Processes
    starting at the same moment get different numbers: a number taken meanwhile is skipped."""
    out.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for d in out.iterdir() if (m := re.match(r"^(\d+)-", d.name))]
    number = max(ids, default=0) + 1
    while True:
        run_dir = out / f"{number:05d}-{desc}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            number += 1
        if any(d.name.startswith(f"{number:05d}-") for d in out.iterdir()):
            number += 1


# What a run folder holds before its first training step: a failed start leaves only these.
START_FILES = {"options.json", "skipped.json", "log.txt", LOCK_NAME}


def remove_unstarted_run(run_dir: Path) -> bool:
    """Delete ``run_dir`` when it holds nothing but :data:`START_FILES` (training never ran); True if deleted."""
    if not run_dir.is_dir() or any(p.name not in START_FILES for p in run_dir.iterdir()):
        return False
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()
    return True


def build_dataset(options: dict):
    """The training set the options name: a real dataset or the synthetic scenes."""
    data, g = options["data"], options["generator"]
    with_dist = norm_spec(options["norm"]).needs_icpe
    if data["dataroot"] is None:
        return SyntheticScenes(data["num_samples"], size=g["crop_size"], seed=data["seed"],
                               with_dist=with_dist, icpe_mode=data["icpe_mode"])
    custom = dict(label_nc=g["label_nc"], contain_dontcare_label=g["contain_dontcare_label"]) \
        if options["preset"] == "custom" else {}
    return build_real_dataset(options["preset"], data["dataroot"], "train", crop_size=g["crop_size"],
                              with_dist=with_dist, icpe_mode=data["icpe_mode"], seed=data["seed"],
                              max_samples=data["num_samples"], skip_invalid=data.get("skip_invalid", False),
                              **custom)


def check_dataset(dataset, run_dir: Path, is_main: bool) -> int | None:
    """Read every file of a real dataset now, before the networks are built (in every process, so
    all keep the same samples). Returns how many samples --skip-invalid left out (logged, and listed
    in ``run_dir/skipped.json`` by the main process), None for a dataset without files."""
    if not callable(getattr(dataset, "scan", None)):
        return None
    dataset.scan()
    skipped = dataset.skipped
    if dataset.skip_invalid and is_main:
        write_json_atomic(run_dir / "skipped.json", [asdict(s) for s in skipped])
    if skipped and is_main:
        log.warning("skipped %d invalid samples (--skip-invalid), %d left; listed in %s; first: %s",
                    len(skipped), len(dataset), run_dir / "skipped.json", skipped[0].reason)
    return len(skipped)


def _broadcast_path(path: Path | None) -> Path:
    if not (dist.is_available() and dist.is_initialized()):
        return path
    box = [str(path) if path is not None else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _setup_logging(run_dir: Path | None, is_main: bool) -> None:
    level = logging.INFO if is_main else logging.WARNING
    handlers = [logging.StreamHandler()]
    if run_dir is not None and is_main:
        handlers.append(logging.FileHandler(run_dir / "log.txt"))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)


def print_dry_run(options: dict) -> None:
    """``--dry-run``: the resolved options as JSON, and what a checkpoint will take on disk."""
    print(json.dumps(options, indent=2))
    # sized on the meta device: no memory, no weights initialised
    sizing = Trainer(g_config=GeneratorConfig(**options["generator"]),
                     d_config=DiscriminatorConfig(**options["discriminator"]),
                     recipe=replace(recipe_from_dict(options["recipe"]), use_vgg=False), device="meta")
    log.info("%s", checkpoint_disk_note(sizing, "the run folder"))


def fit_and_export(trainer: Trainer, dataset, run: dict, run_dir: Path) -> int:
    """Train to the end of the run options ``run``, then export the generator; the exit code
    (3: non-finite loss, 4: disk full, signal codes: interrupted, with how to continue)."""
    try:
        trainer.fit(dataset, steps=run["steps"], epochs=run["epochs"], out_dir=run_dir,
                    num_workers=run["num_workers"], log_every=run["log_every"],
                    save_every=run["save_every"], sample_every=run["sample_every"],
                    progress=run["progress"])
    except NonFiniteLossError as exc:
        log.error("training stopped: %s", exc)
        return 3
    except DiskFullError as exc:
        log.error("%s", exc)
        return 4
    except TrainingInterrupted as exc:
        log.error("%s; continue with: train.py --resume %s", exc, run_dir)
        return exc.exit_code
    folder = trainer.export_generator(run_dir / "generator")
    if folder is not None:
        log.info("generator exported to %s (official latest_net_G.pth + generator.json)", folder)
    return 0


def main(argv=None) -> int:
    load_plugins(split_plugin_args(sys.argv[1:] if argv is None else list(argv))[0])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    run_dir, checkpoint = find_run_to_resume(args, run_options(args)) if args.resume else (None, None)
    options = options_for_resume(args, run_dir) if run_dir else resolve_options(args)
    if checkpoint is not None:
        check_resume_length(options, checkpoint)
    if args.dry_run:
        print_dry_run(options)
        return 0

    info = setup_distributed(options["run"]["device"])
    lock, new_run = None, False
    try:
        if info.is_main and run_dir is None:
            run_dir = next_run_dir(Path(options["run"]["out"]), f"{options['preset']}-{options['norm']}")
            new_run = True
        run_dir = _broadcast_path(run_dir)
        if info.is_main:
            lock = acquire_lock(run_dir, "train.py")  # FolderLocked when another process trains in run_dir
        _setup_logging(run_dir, info.is_main)
        recipe = recipe_from_dict(options["recipe"])
        options["run"]["world_size"] = info.world_size
        options["run"]["effective_batch_size"] = recipe.batch_size * info.world_size
        record = {**options, "plugin_files": plugin_files([options["norm"]]), "provenance": provenance(info.device)}
        if info.is_main:
            write_json_atomic(run_dir / "options.json", record)
        log.info("run folder %s; %d process(es) on %s; effective batch size %d", run_dir,
                 info.world_size, info.device, recipe.batch_size * info.world_size)
        if not recipe.use_vgg:
            log.info("vgg: off (--no-vgg)")
        dataset = build_dataset(options)
        skipped = check_dataset(dataset, run_dir, info.is_main)
        if skipped is not None and info.is_main:
            # a result of this start, beside the options
            record = {**record, "data": {**record["data"], "skipped_samples": skipped}}
            write_json_atomic(run_dir / "options.json", record)
        try:
            # options.json of runs before the generator section recorded icpe_mode: the data's.
            g_config = GeneratorConfig(**{"icpe_mode": options["data"]["icpe_mode"], **options["generator"]})
            trainer = Trainer(g_config=g_config,
                              d_config=DiscriminatorConfig(**options["discriminator"]),
                              recipe=recipe, device=info.device, vgg_weights=options["run"]["vgg_weights"])
        except (VGGWeightsMissingError, VGGWeightsInvalidError) as exc:
            log.error("%s", exc)
            return 2
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
        elif args.resume:
            log.warning("no checkpoint in %s, starting over", run_dir)
        return fit_and_export(trainer, dataset, options["run"], run_dir)
    finally:
        if lock is not None:
            release_lock(lock)
        if new_run and remove_unstarted_run(run_dir):
            log.info("removed %s: the run stopped before its first training step", run_dir)
        cleanup_distributed()


def command(argv=None) -> int:
    """``main`` as a command: an error prints one line (what, where, expected) unless --debug."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # An interruption reaching here came before training started (a stop during training saves and returns).
    return exit_code(lambda: main(argv), prog="train.py", debug="--debug" in argv,
                     interrupted="interrupted; checkpoints already saved are complete (continue with train.py "
                                 "--resume RUN_FOLDER), and a run stopped before its first step leaves no folder")


if __name__ == "__main__":
    sys.exit(command())
