"""What every stage of ``run_analysis.py`` receives and returns.

``RunContext``: where to write, on what, how big, and the typed, resolved options of every stage
of ``analysis.stages.registry`` (``ctx.costs``, ``ctx.bench``, ... and ``ctx.compare``).
``StageResult``: the tables and figures a stage wrote (with the captions the report shows), its
notes, what is proxy, and its summary; ``StageResult.record()`` is its ``stages/<stage>.json``."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from data.datasets import Skipped, build_dataset
from fileio import atomic_path, provenance, write_json_atomic
from models.checkpoint import weight_file

from analysis.options import (BenchOptions, CompareOptions, ConvertOptions, CostsOptions, EvalOptions, ProbeOptions,
                              ReportOptions, TrainOptions, options_dict, resolve)
from analysis.stages.registry import STAGES

# What a table's meta.json says under "dataroot" when the built-in synthetic scenes were used.
SYNTHETIC_DATAROOT = "built-in synthetic scenes"
BULK_DIGITS = 6  # significant digits of a bulk table (RunContext.write_table); float32 data hold ~7
# RunContext fields holding one options dataclass each: one per stage, and bench --compare's.
STAGE_FIELDS = (*(s.name for s in STAGES), "compare")


@dataclass(frozen=True)
class TableRef:
    """A table a stage wrote, as the report shows it."""

    file: str                              # relative to the run folder: tables/<name>.csv
    caption: str                           # one or more sentences under which the report shows it
    columns: tuple[str, ...] | None = None  # the columns the report shows (None: all; the CSV keeps all)

    def __post_init__(self):
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))

    def record(self) -> dict:
        return {"file": self.file, "caption": self.caption, **({"columns": list(self.columns)} if self.columns else {})}


@dataclass(frozen=True)
class FigureRef:
    """A figure a stage wrote, as the report shows it."""

    file: str                              # relative to the run folder: figures/<name>.png
    caption: str

    def record(self) -> dict:
        return {"file": self.file, "caption": self.caption}


@dataclass
class StageResult:
    """What a stage's ``run(ctx)`` returns.

        StageResult(tables=[TableRef("tables/costs.csv", "Params and GMACs ...")], summary={"configs": 9})
    """

    tables: list[TableRef] = field(default_factory=list)
    figures: list[FigureRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # sentences shown under the stage's section
    proxy: list[str] = field(default_factory=list)     # sentences saying which numbers are proxies
    summary: dict = field(default_factory=dict)        # stage-specific facts, recorded as they are

    def record(self) -> dict:
        """The JSON-able body of ``stages/<stage>.json``: the summary's keys, then the lists that are
        not empty (``tables``, ``figures`` as ``{"file", "caption"[, "columns"]}``, ``notes``, ``proxy``)."""
        lists = {"tables": [t.record() for t in self.tables], "figures": [f.record() for f in self.figures],
                 "notes": list(self.notes), "proxy": list(self.proxy)}
        return {**self.summary, **{key: value for key, value in lists.items() if value}}


@dataclass
class RunContext:
    """Options shared by the stages, each stage's options, and the folder layout of one run.

    One field per stage of ``analysis.stages.registry.STAGES``, of its options class (written out
    so that readers and editors see the types; tests/test_options.py checks they match the registry).

    Layout under ``out``: ``tables/*.csv`` (each with ``*.meta.json``), ``figures/*.png``,
    ``checkpoints/<norm>/`` (trained generators, official format), ``stages/*.json``
    (done markers with timings), ``report.md``. The stage options are resolved on construction
    (``--quick``, ``--budget long`` and CPU defaults filled in), so a stage reads plain values:

        ctx = RunContext(out="reports/x", quick=True, train=TrainOptions(steps=2))
        ctx.train.ngf   # 8, the --quick default
    """

    out: Path
    device: str = "cpu"
    preset: str = "synthetic"          # dataset preset of the trained models
    dataroot: Path | None = None       # real dataset root; None = built-in synthetic scenes
    checkpoints: Path | None = None    # evaluate these (<dir>/<norm>/) instead of training
    checkpoint: tuple[str, ...] = ()   # [NAME=]PATH of more generators for probe, convert and eval (--checkpoint)
    quick: bool = False                # CI-sized run (< 3 minutes on 2 CPU cores)
    budget: str = "default"            # "long": the defaults for a GPU or an overnight CPU run (options.BUDGETS)
    force: bool = False                # recompute stages that already finished
    seed: int = 0
    skip_invalid: bool = False         # leave invalid samples of the dataset out (--skip-invalid), counted
    costs: CostsOptions = field(default_factory=CostsOptions)
    bench: BenchOptions = field(default_factory=BenchOptions)
    train: TrainOptions = field(default_factory=TrainOptions)
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    eval: EvalOptions = field(default_factory=EvalOptions)
    report: ReportOptions = field(default_factory=ReportOptions)
    compare: CompareOptions = field(default_factory=CompareOptions)

    def __post_init__(self):
        self.out = Path(self.out)
        self.checkpoint = tuple(map(str, self.checkpoint))
        self.given_generators()   # ValueError naming a --checkpoint that names no generator
        cuda = torch.device(self.device).type == "cuda"
        for name in STAGE_FIELDS:
            setattr(self, name, resolve(getattr(self, name), quick=self.quick, cuda=cuda,
                                              budget=self.budget))
        self._datasets = []  # built by dataset(), for take_skipped(); not an option
        self._skipped_elsewhere: list[Skipped] = []  # record_skipped(), for take_skipped()

    def dataset(self, phase: str, *, max_samples: int | None = None, **options):
        """``data.datasets.build_dataset`` of the run's preset and dataroot (the synthetic scenes
        without one), with --skip-invalid; the samples it leaves out are reported by take_skipped.
        ``max_samples`` of a real dataset with --skip-invalid are the first that read correctly
        (each once: ``keep_valid``), not the first files."""
        distinct = self.skip_invalid and self.dataroot is not None and max_samples is not None
        dataset = build_dataset(self.preset, self.dataroot, phase, skip_invalid=self.skip_invalid,
                                max_samples=None if distinct else max_samples, **options)
        if distinct:
            dataset.keep_valid(max_samples)
        self._datasets.append(dataset)
        return dataset

    def val_split(self, count: int, crop_size: int, *, synthetic: bool = False, **options):
        """The val samples the probe, convert and eval stages all score: the first ``count`` of the
        run's val split at ``crop_size`` (the built-in synthetic scenes' val stream of ``seed``
        without --dataroot). ``synthetic=True``: that synthetic stream whatever the preset (the
        probe's stand-in label maps for a generator of another preset)."""
        if synthetic:
            return build_dataset("synthetic", None, "val", crop_size=crop_size, seed=self.seed, max_samples=count,
                                 **options)
        return self.dataset("val", crop_size=crop_size, seed=self.seed, max_samples=count, **options)

    def take_skipped(self) -> list[Skipped]:
        """Samples left out by the datasets built since the last call, each file once."""
        here = [s for dataset in self._datasets for s in getattr(dataset, "skipped", [])]
        found = {s.path: s for s in self._skipped_elsewhere + here}
        self._datasets, self._skipped_elsewhere = [], []
        return list(found.values())

    def record_skipped(self, skipped: list[Skipped]) -> None:
        """Count samples that datasets built in another process (a training worker) left out,
        for the next :meth:`take_skipped`."""
        self._skipped_elsewhere += skipped

    def options(self) -> dict:
        """Every resolved option as a JSON-able dict: the run's, then one entry per stage."""
        run = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in STAGE_FIELDS}
        return {"run": {k: str(v) if isinstance(v, Path) else v for k, v in run.items()},
                **{name: options_dict(getattr(self, name)) for name in STAGE_FIELDS}}

    @classmethod
    def from_meta(cls, meta: dict, out, **options) -> RunContext:
        """A context on the same data as the run that wrote ``meta`` (a table's
        ``*.meta.json``: preset, seed, quick, dataroot, skip_invalid), writing under ``out``."""
        dataroot = meta.get("dataroot")
        settings = dict(preset=meta["preset"], seed=meta["seed"], quick=meta["quick"],
                        budget=meta.get("options", {}).get("run", {}).get("budget", "default"),
                        dataroot=None if dataroot in (None, SYNTHETIC_DATAROOT) else Path(dataroot),
                        skip_invalid=meta.get("options", {}).get("run", {}).get("skip_invalid", False))
        return cls(out=out, **{**settings, **options})

    def given_generators(self) -> dict[str, Path]:
        """{name: path} of the ``--checkpoint [NAME=]PATH`` generators, in the order given. The name
        (a table row, a probe model) defaults to the folder's name, or for a file its folder's;
        ValueError when a path holds no generator weights or two generators share a name."""
        named = {}
        for text in self.checkpoint:
            name, sep, path = text.partition("=")
            if not sep or "/" in name:   # a plain PATH, maybe with "=" inside
                name, path = "", text
            path = Path(path)
            try:
                weights = weight_file(path)
            except FileNotFoundError as exc:
                raise ValueError(f"--checkpoint {text}: {exc}") from None
            name = name or (path if path.is_dir() else weights.parent).resolve().name
            if name in named or name == "real":
                taken = "the real-images row" if name == "real" else f"--checkpoint {named[name]}"
                raise ValueError(f"--checkpoint {text}: the name {name!r} is taken by {taken}; pass "
                                 f"--checkpoint OTHER_NAME={path}")
            named[name] = path
        return named

    @property
    def tables_dir(self) -> Path:
        return self.out / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.out / "figures"

    @property
    def checkpoint_root(self) -> Path:
        """Folder of the generator folders: --checkpoints, else ``<out>/checkpoints``."""
        return Path(self.checkpoints) if self.checkpoints is not None else self.out / "checkpoints"

    def checkpoint_dir(self, norm: str) -> Path:
        """Folder holding ``latest_net_G.pth`` and ``generator.json`` of one method."""
        return self.checkpoint_root / norm

    def meta(self, **extra) -> dict:
        return provenance(self.device, seed=self.seed, preset=self.preset, quick=self.quick,
                          dataroot=str(self.dataroot) if self.dataroot else SYNTHETIC_DATAROOT,
                          options=self.options(), **extra)

    def write_table(self, df: pd.DataFrame, name: str, *, bulk: bool = False, **meta) -> Path:
        """Write ``tables/<name>.csv`` atomically with ``tables/<name>.meta.json`` beside it.

        ``bulk``: a table of many rows (one per channel, say) goes to ``<name>.csv.gz`` with
        BULK_DIGITS significant digits (pandas reads it as it reads a CSV), so that a report
        folder stays small enough to commit."""
        path = self.tables_dir / (f"{name}.csv.gz" if bulk else f"{name}.csv")
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, compression="gzip" if bulk else None,
                      float_format=f"%.{BULK_DIGITS}g" if bulk else None)
        write_json_atomic(self.tables_dir / f"{name}.meta.json",
                          self.meta(table=name, rows=len(df), **({"significant_digits": BULK_DIGITS} if bulk else {}),
                                    **meta))
        return path

    def write_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` atomically and close it."""
        path = self.figures_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return path

