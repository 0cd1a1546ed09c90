"""Typed options: one dataclass per stage, the command line generated from it.

Every field declares its default once, with its help text, through :func:`option`. A default
that depends on the run (``--quick``, ``--budget long``, a CPU device) is declared beside it
(``quick=``, ``long=``, ``cpu=``); such a field holds ``None`` until :func:`resolve` fills it, which is the only place
defaults are applied. ``0`` is a value like any other, never "unset".

    parser = OptionParser()
    add_options(parser, TrainOptions, prefix="train")          # --train-steps ... with defaults in --help
    opts = resolve(options_from_args(args, TrainOptions, "train"), quick=True, cuda=False)
"""
from __future__ import annotations

import argparse
import difflib
import math
import sys
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Callable

import torch

from data.presets import OFFICIAL_PRESETS
from models.registry import registered_norms

from analysis.choices import BASES, CLASS_MAP_NAMES, INPUT_NORMS, PROTOCOLS
from analysis.quality.segmenter_names import (PAPER, PAPER_SEGMENTER_NAMES, PRECISIONS, RELEASED_FILES,
                                              UPERNET_IMG_SIZES, is_paper_segmenter, parse_size)

_UNSET = object()
# run_analysis.py --budget: "default" fits the 2-core CPU in about 15 minutes; "long" is for a GPU
# or an overnight CPU run (more steps and seeds, the SPADE variants; fields declare it with long=).
BUDGETS = ("default", "long")
# Official reference numbers of the cost cross-checks (a folder beside the repository).
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def option(default: Any = None, help: str = "", *, quick: Any = _UNSET, long: Any = _UNSET, cpu: Any = _UNSET,
           flag: str | None = None, choices=None, minimum: float | None = None, metavar: str | None = None,
           cli: bool = True, exists: bool = False):
    """A dataclass field with its default, help text and command-line spelling.

    ``default`` may be a callable (evaluated when resolved, e.g. the registered norms), and so may
    ``choices`` (evaluated when the parser is built, after ``--plugin`` files are loaded).
    ``quick`` / ``long`` / ``cpu``: the default under ``--quick`` / ``--budget long`` / on a CPU
    device (quick and long win over cpu); a field with any of them holds ``None`` until :func:`resolve`. ``minimum``: smallest valid value (refused
    with a clear error below it). ``flag``: the option's spelling when not ``--<prefix>-<name>``.
    ``exists``: a path the user gives must exist (an input file, never silently skipped).
    """
    automatic = quick is not _UNSET or long is not _UNSET or cpu is not _UNSET or callable(default)
    return field(default=None if automatic else default,
                 metadata=dict(help=help, default=default, quick=quick, long=long, cpu=cpu, flag=flag,
                               choices=choices, minimum=minimum, metavar=metavar, cli=cli, exists=exists))


def _all_norms() -> tuple[str, ...]:
    return registered_norms()  # plugins loaded before the options are resolved included


def _reference_if_present() -> Path | None:
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE.exists() else None


# --- the stages ----------------------------------------------------------------------------------

@dataclass
class CostsOptions:
    """Stage 'costs': params and MACs of the official generators."""

    presets: tuple[str, ...] = option(OFFICIAL_PRESETS, "presets to count", quick=("ade20k",), metavar="PRESET")
    norms: tuple[str, ...] = option(_all_norms, "norms to count (default: every registered norm)",
                                    metavar="NORM")
    reference_dir: Path | None = option(_reference_if_present, "official reference numbers (default: "
                                        "shared/reference beside the repository, when present)",
                                        flag="--reference-dir", exists=True)
    figure_preset: str = option("ade20k", "preset of the per-layer figures (the first counted preset when "
                                "it is not counted)")


@dataclass
class TimedGenerators:
    """Which generators a timing stage runs (shared by the bench stage and the comparison)."""

    presets: tuple[str, ...] = option(("ade20k", "cityscapes", "coco-stuff"), "presets to time",
                                      quick=("ade20k",), metavar="PRESET")
    norms: tuple[str, ...] = option(_all_norms, "norms to time (default: every registered norm)", metavar="NORM")
    batch_sizes: tuple[int, ...] = option((1, 16), "batch sizes", cpu=(1,), quick=(1,), minimum=1, metavar="N")


@dataclass
class BenchOptions(TimedGenerators):
    """Stage 'bench': latency and memory of the generators, a training step, an op profile."""

    presets: tuple[str, ...] = option(("ade20k", "cityscapes", "coco-stuff"), "presets to time (on a CPU ade20k "
                                      "only: the three take over 3 minutes of the default run)",
                                      cpu=("ade20k",), quick=("ade20k",), metavar="PRESET")
    dtypes: tuple[str, ...] = option(("fp32", "bf16"), "autocast dtypes", cpu=("fp32",), quick=("fp32",),
                                     choices=("fp32", "bf16", "fp16"))
    repeats: int = option(10, "timed calls per model", cpu=3, minimum=1)
    warmup: int = option(3, "untimed calls per model before timing", cpu=1, minimum=0)
    compile: bool = option(False, "also time torch.compile'd generators (slow to compile on CPU)")
    train_step: bool = option(True, "time a full training iteration", cpu=False, quick=False)
    compare: bool = option(False, "also run the plain-vs-fast comparison of analysis/speed/variants.py (its options: "
                           "--compare-*)", flag="--compare")


@dataclass
class CompareOptions(TimedGenerators):
    """The plain-vs-fast comparison of ``analysis/speed/variants.py`` (``bench --compare``, ``python -m analysis.speed.variants``)."""

    repeats: int = option(10, "timed calls per model", quick=3, minimum=1)
    warmup: int = option(2, "untimed calls per model before timing", quick=1, minimum=0)
    compile: bool = option(False, "also time the compiled fast generator (minutes to compile on CPU)")
    train: bool = option(False, "also time a full training iteration under each recipe of TRAIN_VARIANTS")
    train_batch_size: int = option(16, "training batch", cpu=1, quick=1, minimum=1)
    train_repeats: int = option(3, "timed training iterations", minimum=1)
    vgg_weights: Path | None = option(None, "VGG19 weights for the perceptual loss (default: random weights, "
                                      "timing only)", exists=True)
    default_malloc: bool = option(False, "keep glibc's default allocator settings (see "
                                  "models.fast.tune_cpu_allocator)")
    overrides: dict | None = option(None, "generator options of every timed model (for tests)", cli=False)


@dataclass
class TrainOptions:
    """Stage 'train': the three methods under one recipe, data order and budget."""

    steps: int = option(1000, "iterations per method and seed (equal for every compared run)", quick=12, long=3000,
                        minimum=1)
    ngf: int = option(8, "generator width", long=16, minimum=1)
    ndf: int = option(16, "discriminator width", minimum=1)
    batch_size: int = option(8, "batch size", quick=4, minimum=1)
    crop_size: int = option(32, "image size", minimum=1)
    max_seconds: float = option(0.0, "wall-clock cap of the first (slowest) training run, 0 = no cap; when it "
                                "stops that run early, every run trains the steps it reached (equal steps), and "
                                "the report says so at the top", minimum=0)
    expected_minutes: float = option(11.0, "minutes the train stage should take (the default budget on an idle "
                                     "2-core CPU); at start a few timed steps predict this machine's time and a "
                                     "warning says when it is longer; 0 = no check", quick=1.5, long=0.0, minimum=0)
    seeds: int = option(3, "training seeds per method (seed k uses --seed + k for weights and data order)",
                        quick=2, long=5, minimum=1)
    curve_every: int = option(50, "score the learning-curve scenes every this many steps (and at step 0 and the "
                              "end; 0 = only there)", quick=4, long=100, minimum=0)
    curve_images: int = option(32, "synthetic val scenes of the learning curves (0 = no curves; the built-in "
                               "scenes only)", quick=8, long=64, minimum=0)
    kernel_variants: bool = option(False, "also train a 1x1-kernel SPADE (purely per-pixel) beside the 3x3 one",
                                   long=True)
    mask_factor: int = option(1, "input-mask experiment: also train SPADE and CLADE on label maps this many times "
                              "coarser, nearest-upsampled to the output size (1 = no experiment)", long=4, minimum=1)
    norms: tuple[str, ...] = option(("spade", "clade", "clade-icpe"), "methods to train (space- or "
                                    "comma-separated: spade,clade,my-norm)", metavar="NORM")
    vgg_weights: Path | None = option(None, "vgg19-dcbb9e9d.pth for the VGG loss (default: torch hub cache; "
                                      "VGG loss off if absent)", exists=True)
    lr_decay_start: float = option(0.5, "fraction of the steps after which the learning rate decays linearly "
                                   "to 0 (the papers' schedule: half the epochs at the initial rate, half decaying); "
                                   "1 = constant", minimum=0)
    ema_horizon: float = option(0.1, "the generator evaluated and exported averages the trained one's weights "
                                "over about this fraction of the steps (exponential moving average, decay 1 - 1 / "
                                "(fraction x steps)); 0 = no average", minimum=0)
    bn_estimation_batches: int = option(8, "the evaluated generator's BatchNorm statistics are re-estimated on "
                                        "this many fixed training batches (0 = the running averages, official)",
                                        minimum=0)
    workers: int = option(0, "training runs at once, each in its own process (0 = one per CPU core on a CPU, "
                          "one on a GPU; --quick: 1, its runs are too short to repay starting a process)", quick=1,
                          minimum=0)
    threads: int | None = option(None, "torch CPU threads of each training run (default: cores / workers with "
                                 "several workers, else unchanged)", minimum=1)
    keep_state: bool = option(False, "keep each method's trainer checkpoint (D and optimizer state, several "
                              "times the generator's size) after training; by default only the exported "
                              "generator stays")


@dataclass
class ProbeOptions:
    """Stage 'probe': semantic / positional / residual shares of gamma and beta."""

    images: int = option(64, "val images probed per model; the ablation runs on a quarter of them (at least 2)",
                         quick=8, minimum=1)
    checkpoint_images: int = option(6, "val images probed for a --checkpoint generator (full-size ade20k "
                                    "SPADE: 5-15 s per image and pass on a 2-core CPU); its ablation runs on "
                                    "2 of them, all layers at once", minimum=1)
    checkpoint_per_layer: bool = option(False, "with --checkpoint also ablate each layer alone (one more "
                                        "generator pass per layer and ablation image; minutes on a CPU)")
    basis: str = option("quadratic", "regression basis on the ICPE coordinates for the positional part",
                        choices=tuple(BASES))
    exclude_dontcare: bool = option(False, "leave 'unknown' pixels out of the variance decomposition (by "
                                    "default they count as one more class, as the generator treats them)")

    @property
    def ablation_images(self) -> int:
        """Images of the class-mean ablation: a quarter of ``images``, at least 2."""
        return max(2, self.images // 4)


@dataclass
class EvalOptions:
    """Stage 'eval': quality of each generator next to what it costs."""

    images: int = option(128, "val images generated per method (and real reference size)", quick=32, minimum=2)
    train_images: int = option(256, "real training images the proxy segmenter learns from", quick=64, minimum=1)
    proxy_steps: int = option(200, "training steps of the proxy segmenter (batch 16)", quick=40, minimum=0)
    proxy_max_seconds: float = option(0.0, "wall-clock cap of the proxy training, 0 = no cap (the default: the "
                                      "proxy trains the steps planned); with a cap, fewer steps are run, and "
                                      "reported, when the machine is slower", minimum=0)
    latency_repeats: int = option(10, "timed forward passes per method, after 3 warm-up rounds", quick=5,
                                  minimum=1)
    batch_size: int = option(16, "generation and scoring batch", minimum=1)
    inception_weights: Path | None = option(None, "pt_inception-2015-12-05-6726825d.pth (default: the torch "
                                            "hub cache); without it the run reports fd_proxy_features "
                                            "instead of FID", flag="--inception-weights", exists=True)
    segmenter: str | None = option(None, f"segmenter of mIoU / accuracy: '{PAPER}' (the published network of --preset, "
                                   "from --segmenter-weights), one of " + " ".join(PAPER_SEGMENTER_NAMES) + " by name, "
                                   "or a TorchScript file (default: a proxy trained on the real images)",
                                   flag="--segmenter", metavar="paper|NAME|FILE.pt")
    segmenter_weights: Path | None = option(None, "released weights of a --segmenter paper / NAME network, as "
                                            "downloaded: " + "; ".join(f"{n}: {f.split(' (')[0]}"
                                                                       for n, f in RELEASED_FILES.items()),
                                            flag="--segmenter-weights", exists=True)
    segmenter_size: str | None = option(None, "WxH test resolution of drn-d-105 / deeplabv2 (default: the "
                                        "generated size; the papers do not state theirs)", flag="--segmenter-size")
    segmenter_img_sizes: tuple[int, ...] = option(UPERNET_IMG_SIZES, "short sides of upernet-101's multi-scale test "
                                                  "(default: its reference config's; the papers do not state theirs)",
                                                  flag="--segmenter-img-sizes", minimum=1, metavar="PIXELS")
    segmenter_precision: str = option("fp32", "precision of a paper segmenter (bf16: autocast; it moved 1-2 % of "
                                      "the predicted pixels on seeded weights, see README)",
                                      flag="--segmenter-precision", choices=PRECISIONS)
    segmenter_channels_last: bool = option(False, "run a paper segmenter in channels_last memory format (same "
                                           "predictions on seeded weights; faster on some CPUs / GPUs)",
                                           flag="--segmenter-channels-last")
    segmenter_class_map: str | None = option(None, f"label id -> segmenter class: {sorted(CLASS_MAP_NAMES)} or a "
                                             "JSON file (default: the paper's map for the preset, else "
                                             "identity)",
                                             flag="--segmenter-class-map")
    segmenter_input: str | None = option(None, "input normalisation of --segmenter (default: the paper's for "
                                         "the preset, else imagenet)", flag="--segmenter-input",
                                         choices=INPUT_NORMS)
    fid_protocol: str = option("toolkit", "toolkit: FID against the real val images at the output size; "
                               "official: against training-set statistics at the official size "
                               "(analysis/quality/fid_protocol.py)", flag="--fid-protocol", choices=PROTOCOLS)
    fid_train_stats: Path | None = option(None, "official datasets/train_mu_si folder (m.npy, s.npy) for "
                                          "--fid-protocol official (default: computed from the training "
                                          "images once, cached)", flag="--fid-train-stats", exists=True)

    def __post_init__(self):
        """A --segmenter that is neither a paper network nor a file, a paper network without its
        weights (or weights without one), or a malformed --segmenter-size is a ValueError."""
        paper = self.segmenter is not None and is_paper_segmenter(self.segmenter)
        if self.segmenter is not None and not paper and not Path(self.segmenter).is_file():
            raise ValueError(f"--segmenter {self.segmenter!r}: no such file; expected {PAPER!r}, one of "
                             f"{', '.join(PAPER_SEGMENTER_NAMES)} or a TorchScript file")
        if paper and self.segmenter_weights is None:
            raise ValueError(f"--segmenter {self.segmenter} needs --segmenter-weights: "
                             + "; ".join(f"{n}: {f}" for n, f in RELEASED_FILES.items()))
        if self.segmenter_weights is not None and not paper:
            raise ValueError(f"--segmenter-weights {self.segmenter_weights} is read only with --segmenter {PAPER} "
                             f"or {'|'.join(PAPER_SEGMENTER_NAMES)}")
        if self.segmenter_size is not None:
            parse_size(self.segmenter_size)


@dataclass
class ConvertOptions:
    """Stage 'convert': the trained SPADE turned into CLADE (per-class mean modulation), then fine-tuned."""

    images: int = option(64, "label maps whose per-class mean gamma/beta become the CLADE tables", quick=16,
                         minimum=1)
    finetune_steps: int = option(50, "training steps of the converted CLADE under the train stage's recipe "
                                 "(fresh discriminator), written as a second folder; 0 = none", quick=10,
                                 minimum=0)


@dataclass
class ReportOptions:
    """Stage 'report': assembles report.md from the stage records; it has no options of its own."""


# --- command line ---------------------------------------------------------------------------------

class OptionParser(argparse.ArgumentParser):
    """ArgumentParser that never expands abbreviations (``allow_abbrev=False``) and, for an
    unknown ``--option``, says so before anything else, with the options it may have meant, or
    what replaced it when ``renamed`` names it (argparse alone would report a confusing error
    about the next value)."""

    def __init__(self, *args, renamed: dict[str, str] | None = None, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.renamed = renamed or {}   # option of an earlier version -> what replaces it

    def parse_known_args(self, args=None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        known = set(self._option_string_actions)
        for token in argv:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if token.startswith("--") and name not in known:
                if name in self.renamed:
                    self.error(f"{name} was replaced by {self.renamed[name]}")
                close = sorted(o for o in known if o.startswith(name)) or difflib.get_close_matches(name, known, 3)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                self.error(f"unrecognized option {name} (options are never abbreviated){hint}")
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        """One line naming the bad option (argparse's usage block, 40 lines here, would bury it)."""
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def _strip_optional(tp):
    """(inner type, optional?) of ``X | None``."""
    if isinstance(tp, UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not NoneType]
        return (args[0] if len(args) == 1 else tp), True
    return tp, False


# Integers go to torch, numpy and C code as 64-bit values; a larger one fails deep inside them.
INT64_RANGE = (-2 ** 63, 2 ** 63 - 1)


def checked_number(kind: Callable, flag: str, minimum=None):
    """argparse type: ``kind`` (int or float) of the text, refused with a message naming ``flag``
    when below ``minimum``, not finite (nan, inf) or an integer beyond 64 bits."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        problem = number_problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{flag} {text}: {problem}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum:g} of {flag}")
        return value
    parse.__name__ = kind.__name__
    return parse


def number_problem(value) -> str | None:
    """Why ``value`` is not a usable option number (not finite, an integer beyond 64 bits), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "expected a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        return f"expected an integer from {INT64_RANGE[0]} to {INT64_RANGE[1]} (64 bits)"
    return None


def existing_path(text: str) -> Path:
    """argparse type: a path that exists (file or folder)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return path


def check_device(device: str) -> str:
    """``device`` if this machine has it; ValueError naming the value and the devices present."""
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"--device {device!r}: not a device name; expected cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no usable CUDA GPU (torch {torch.__version__}, "
                         f"built for CUDA {torch.version.cuda}); pass --device cpu")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def positive_int(flag: str) -> Callable[[str], int]:
    """argparse type: an integer >= 1, refused otherwise with a message naming ``flag``."""
    return checked_number(int, flag, 1)


def flag_name(f, prefix: str) -> str:
    """``--<prefix>-<name>`` of a field (its ``flag`` metadata when set)."""
    return f.metadata.get("flag") or "--" + "-".join(p for p in (prefix, f.name.replace("_", "-")) if p)


def dest_name(f, prefix: str) -> str:
    return f"{prefix}_{f.name}" if prefix else f.name


def default_text(f) -> str:
    """The default of a field as ``--help`` shows it, with its --quick / --budget long / CPU variants."""
    def show(value):
        if callable(value):
            return None
        if isinstance(value, tuple):
            return " ".join(map(str, value)) if value else "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return None if value is None else str(value)

    md = f.metadata
    parts = [] if show(md["default"]) is None else [f"default {show(md['default'])}"]
    parts += [f"on CPU {show(md['cpu'])}"] if md["cpu"] is not _UNSET else []
    parts += [f"--quick {show(md['quick'])}"] if md["quick"] is not _UNSET else []
    parts += [f"--budget long {show(md['long'])}"] if md["long"] is not _UNSET else []
    return "; ".join(parts)


def add_options(parser, cls, prefix: str = "") -> None:
    """Add one flag per field of ``cls`` to ``parser`` (an ArgumentParser or group), default None
    (= not given), with the declared default in its help."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        md = f.metadata
        if not md.get("cli", True):
            continue
        kind, _ = _strip_optional(hints[f.name])
        flag = flag_name(f, prefix)
        shown = default_text(f)
        text = md["help"] + (f" ({shown})" if shown else "")
        kwargs = dict(dest=dest_name(f, prefix), default=None, help=text.replace("%", "%%"))
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(kind) is tuple:
            kind = typing.get_args(kind)[0]
            kwargs["nargs"] = "+"
        if kind in (int, float):
            kind = checked_number(kind, flag, md["minimum"])
        if kind is Path and md.get("exists"):
            kind = existing_path
        choices = md["choices"]() if callable(md["choices"]) else md["choices"]
        parser.add_argument(flag, type=kind, choices=choices, metavar=md["metavar"] or f.name.upper(), **kwargs)


def options_from_args(args: argparse.Namespace, cls, prefix: str = ""):
    """An (unresolved) ``cls`` holding the values given on the command line; the rest None."""
    given = {}
    for f in fields(cls):
        value = getattr(args, dest_name(f, prefix), None) if f.metadata.get("cli", True) else None
        if isinstance(value, list):
            # "a,b c" -> (a, b, c): lists of names may be comma- or space-separated
            value = tuple(part for item in value for part in (item.split(",") if isinstance(item, str) else [item])
                          if part != "")
        given[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**given)


def resolve(opts, *, quick: bool = False, cuda: bool = False, budget: str = "default"):
    """A copy of ``opts`` with every unset (None) field given its default for this run (--quick or
    ``budget="long"`` wins over the CPU default, which wins over the plain one); ValueError for a
    value below its field's minimum, naming the option, and for --quick with the long budget."""
    if budget not in BUDGETS:
        raise ValueError(f"--budget {budget!r}; expected one of {', '.join(BUDGETS)}")
    if quick and budget == "long":
        raise ValueError("--quick and --budget long contradict each other; pass one of them")
    values = {}
    for f in fields(opts):
        value, md = getattr(opts, f.name), f.metadata
        if value is None:
            default = md["default"]
            if quick and md["quick"] is not _UNSET:
                default = md["quick"]
            elif budget == "long" and md["long"] is not _UNSET:
                default = md["long"]
            elif not cuda and md["cpu"] is not _UNSET:
                default = md["cpu"]
            value = default() if callable(default) else default
        if isinstance(value, list):
            value = tuple(value)
        minimum = md.get("minimum")
        if minimum is not None and value is not None:
            low = [v for v in (value if isinstance(value, tuple) else (value,)) if v < minimum]
            if low:
                raise ValueError(f"{type(opts).__name__}.{f.name} = {value!r}: expected values >= {minimum:g}")
        for number in (value if isinstance(value, tuple) else (value,)):
            problem = number_problem(number) if isinstance(number, (int, float)) else None
            if problem:
                raise ValueError(f"{type(opts).__name__}.{f.name} = {value!r}: {problem}")
        values[f.name] = value
    return replace(opts, **values)


def options_dict(opts) -> dict:
    """JSON-able dict of resolved options (paths as strings), for meta.json."""
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in asdict(opts).items()}


__all__ = ["BUDGETS", "BenchOptions", "CompareOptions", "ConvertOptions", "CostsOptions", "EvalOptions", "OptionParser", "ProbeOptions",
           "ReportOptions", "TrainOptions", "add_options", "default_text", "existing_path",
           "checked_number", "option", "options_dict", "options_from_args", "positive_int", "resolve"]
