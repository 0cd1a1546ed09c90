"""What every stage of ``run_analysis.py`` receives: where to write, on what, how big."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .provenance import provenance, write_json_atomic

# What a table's meta.json says under "dataroot" when the built-in synthetic scenes were used.
SYNTHETIC_DATAROOT = "built-in synthetic scenes"


@dataclass
class RunContext:
    """Options shared by the stages, and the folder layout of one report run.

    Layout under ``out``: ``tables/*.csv`` (each with ``*.meta.json``), ``figures/*.png``,
    ``checkpoints/<norm>/`` (trained generators, official format), ``stages/*.json``
    (done markers with timings), ``report.md``.
    """

    out: Path
    device: str = "cpu"
    preset: str = "synthetic"          # dataset preset of the trained models
    dataroot: Path | None = None       # real dataset root; None = built-in synthetic scenes
    checkpoints: Path | None = None    # evaluate these (<dir>/<norm>/) instead of training
    quick: bool = False                # CI-sized run (< 3 minutes on 2 CPU cores)
    force: bool = False                # recompute stages that already finished
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)

    @classmethod
    def from_meta(cls, meta: dict, out, **options) -> RunContext:
        """A context on the same data as the run that wrote ``meta`` (a table's
        ``*.meta.json``: preset, seed, quick, dataroot), writing under ``out``."""
        dataroot = meta.get("dataroot")
        settings = dict(preset=meta["preset"], seed=meta["seed"], quick=meta["quick"],
                        dataroot=None if dataroot in (None, SYNTHETIC_DATAROOT) else Path(dataroot))
        return cls(out=out, **{**settings, **options})

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
                          **extra)

    def write_table(self, df: pd.DataFrame, name: str, **meta) -> Path:
        """Write ``tables/<name>.csv`` atomically with ``tables/<name>.meta.json`` beside it."""
        path = self.tables_dir / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
        write_json_atomic(self.meta(table=name, rows=len(df), **meta), path.with_suffix(".meta.json"))
        return path

    def write_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` atomically and close it."""
        import matplotlib.pyplot as plt
        path = self.figures_dir / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, path)
        return path
