"""The papers' published numbers, as data with their source, beside what this toolkit computes.

    per_layer = pd.read_csv("reports/example/tables/costs_per_layer.csv")
    table = paper_comparison(per_layer)          # every definition of "extra params / computation"
    paper_verdicts(table)                        # one line per published figure: reproduced or not
    paper_quality_comparison(evaluation, "synthetic")   # published SPADE scores, measured where comparable

The CLADE abstract says that on ADE20K the normalization adds 4.57 % parameters and 0.07 %
computation with CLADE, 39.21 % and 234.73 % with SPADE, without saying relative to what or how
computation is counted. :func:`paper_comparison` computes the figure under every definition
we can state in advance, from the per-layer cost table of ``analysis.costs.layers``:

- **extra**: everything inside the norm layers (``role`` starting with ``modulation``; the
  convention of ``analysis.costs.layers`` and the official tables), or that minus the parameter-free
  BatchNorm (``modulation_norm``), which a generator without conditional normalization runs too;
- **denominator**: the backbone (the generator without the extra: "extra over what it is
  added to") or the whole generator (backbone + extra);
- **counting** (computation only): ``fvcore MACs`` (the official tables' count), ``complete
  MACs`` (``gmacs_complete``: elementwise work and lookups too), ``fvcore FLOPs`` and
  ``complete FLOPs`` (2 per multiply-add in rows that are matrix products only, 1 per
  MAC-equivalent elsewhere; the spectral-norm ``mv``/``dot`` share their rows with elementwise
  ops and are counted once, about 1 % of the backbone's complete count), and, given the
  summary table, ``fvcore MACs, official resize`` (the conditioning resized in every norm
  layer as the official code does).

A published figure counts as reproduced when a definition gives it to the published rounding
(half a unit of its last digit). None is tuned: where no definition reproduces a figure,
:func:`paper_verdicts` says so and gives the denominator the figure implies.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.quality.segmenter_names import DISPLAY_NAMES, PRESET_SEGMENTER

CLADE_ABSTRACT = ("Tan et al., 'Rethinking Spatially-Adaptive Normalization', arXiv:2004.02867, abstract "
                  "(ADE20K generator); repeated in the TPAMI version, arXiv:2012.04644")
SPADE_TABLE_1 = "Park et al., 'Semantic Image Synthesis with Spatially-Adaptive Normalization', CVPR 2019, Table 1"

PUBLISHED_OVERHEAD = pd.DataFrame([
    {"preset": "ade20k", "norm": "clade", "quantity": "params", "published_pct": 4.57, "source": CLADE_ABSTRACT},
    {"preset": "ade20k", "norm": "clade", "quantity": "computation", "published_pct": 0.07, "source": CLADE_ABSTRACT},
    {"preset": "ade20k", "norm": "spade", "quantity": "params", "published_pct": 39.21, "source": CLADE_ABSTRACT},
    {"preset": "ade20k", "norm": "spade", "quantity": "computation", "published_pct": 234.73, "source": CLADE_ABSTRACT},
])

# SPADE's published scores; mIoU and accuracy come from each dataset's own segmenter
# (Cityscapes: DRN-D-105, ADE20K: UperNet101, COCO-Stuff: DeepLabV2), FID from Inception.
PUBLISHED_QUALITY = pd.DataFrame([
    {"preset": "ade20k", "norm": "spade", "fid": 33.9, "miou": 38.5, "accuracy": 79.9, "source": SPADE_TABLE_1},
    {"preset": "cityscapes", "norm": "spade", "fid": 71.8, "miou": 62.3, "accuracy": 81.9, "source": SPADE_TABLE_1},
    {"preset": "coco-stuff", "norm": "spade", "fid": 22.6, "miou": 37.4, "accuracy": 67.9, "source": SPADE_TABLE_1},
    {"preset": "ade20k-outdoor", "norm": "spade", "fid": 63.3, "miou": 30.8, "accuracy": 82.9, "source": SPADE_TABLE_1},
])

EXTRAS = {"norm layers": "everything inside the norm layers",
          "norm layers minus BatchNorm": "the norm layers without their parameter-free BatchNorm"}
DENOMINATORS = ("backbone", "whole generator")
# Ops that are multiply-adds (2 FLOPs each) rather than one op per element.
MATRIX_OPS = frozenset({"conv", "linear", "addmm", "mm", "matmul", "bmm", "einsum", "mv", "dot"})
_PER_LAYER_COLUMNS = ("preset", "norm", "role", "params", "gmacs_fvcore", "gmacs_complete", "ops")


def _published_decimals(value: float) -> int:
    text = f"{value:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _flop_weight(ops) -> float:
    names = {op.strip() for op in str(ops).split(",") if op.strip()}
    return 2.0 if names and names <= MATRIX_OPS else 1.0


def _amounts(rows: pd.DataFrame) -> dict[str, float]:
    """Params and computation of some per-layer rows under every counting (the official-resize
    one needs the summary table: :func:`_definitions` adds it)."""
    weight = rows["ops"].fillna("").map(_flop_weight).astype(float)
    return {"params": float(rows.params.sum()),
            "fvcore MACs": float(rows.gmacs_fvcore.sum()), "complete MACs": float(rows.gmacs_complete.sum()),
            "fvcore FLOPs": float((rows.gmacs_fvcore * weight).sum()),
            "complete FLOPs": float((rows.gmacs_complete * weight).sum())}


def _official_resize_delta(summary: pd.DataFrame | None, preset: str, norm: str, ours: float) -> float | None:
    """Official minus our fvcore resize GMACs (both are modulation), from the summary table."""
    if summary is None or "modulation_gmacs_fvcore_official_resize" not in summary:
        return None
    row = summary[(summary.preset == preset) & (summary.norm == norm)]
    return None if row.empty else float(row.modulation_gmacs_fvcore_official_resize.iloc[0]) - ours


def _definitions(layers: pd.DataFrame, resize_delta: float | None) -> list[tuple[str, str, float, float]]:
    """(extra, counting, extra amount, backbone amount) of one generator under every definition.
    The backbone is everything outside the extra: a BatchNorm left out of the extra is work the
    generator does anyway."""
    modulation = layers.role.str.startswith("modulation")
    out = []
    for extra_name in EXTRAS:
        in_extra = modulation & ((layers.role != "modulation_norm") | (extra_name == "norm layers"))
        extra, backbone = _amounts(layers[in_extra]), _amounts(layers[~in_extra])
        if resize_delta is not None:
            extra["fvcore MACs, official resize"] = extra["fvcore MACs"] + resize_delta
            backbone["fvcore MACs, official resize"] = backbone["fvcore MACs"]
        for counting in extra:
            # the BatchNorm has no parameters: "minus BatchNorm" would repeat the same figure
            if counting != "params" or extra_name == "norm layers":
                out.append((extra_name, counting, extra[counting], backbone[counting]))
    return out


def paper_comparison(cost_table: pd.DataFrame, summary: pd.DataFrame | None = None, *,
                     published: pd.DataFrame = PUBLISHED_OVERHEAD) -> pd.DataFrame:
    """Each published overhead figure beside its value under every stated definition.

    ``cost_table``: the per-layer table (``tables/costs_per_layer.csv`` or ``cost_tables()[1]``),
    with rows for the published presets and norms. ``summary`` (``tables/costs.csv``) adds the
    official-resize counting. Columns: preset, norm, quantity, published_pct, extra,
    denominator, counting, extra_amount, denominator_amount, unit, computed_pct,
    difference_pct_points, reproduces, implied_denominator (``extra_amount / published``: the
    denominator the published percentage implies for this extra), source.
    """
    missing = [c for c in _PER_LAYER_COLUMNS if c not in cost_table]
    if missing:
        raise ValueError(f"paper_comparison: the per-layer cost table lacks columns {missing}; "
                         "expected tables/costs_per_layer.csv or analysis.costs.layers.cost_tables()[1]")
    rows = []
    for fig in published.itertuples(index=False):
        layers = cost_table[(cost_table.preset == fig.preset) & (cost_table.norm == fig.norm)]
        if layers.empty:
            raise ValueError(f"paper_comparison: no per-layer rows for preset {fig.preset!r}, norm {fig.norm!r}; "
                             f"run the costs stage with that preset (found {sorted(set(cost_table.preset))})")
        tolerance = 0.5 * 10.0 ** -_published_decimals(fig.published_pct)
        ours = float(layers.loc[layers.role.str.startswith("modulation"), "gmacs_fvcore"].sum())
        delta = _official_resize_delta(summary, fig.preset, fig.norm, ours)
        for extra_name, counting, extra, backbone in _definitions(layers, delta):
            if (counting == "params") != (fig.quantity == "params"):
                continue
            for denominator, below in (("backbone", backbone), ("whole generator", backbone + extra)):
                pct = 100.0 * extra / below
                rows.append({
                    "preset": fig.preset, "norm": fig.norm, "quantity": fig.quantity,
                    "published_pct": fig.published_pct, "extra": extra_name, "denominator": denominator,
                    "counting": counting, "extra_amount": extra, "denominator_amount": below,
                    "unit": "parameters" if counting == "params" else "GFLOPs" if "FLOPs" in counting else "GMACs",
                    "computed_pct": pct, "difference_pct_points": pct - fig.published_pct,
                    "reproduces": bool(abs(pct - fig.published_pct) <= tolerance),
                    "implied_denominator": extra / (fig.published_pct / 100.0), "source": fig.source})
    return pd.DataFrame(rows)


def _amount_text(value: float, unit: str) -> str:
    return f"{value / 1e6:.2f} M params" if unit == "parameters" else f"{value:.4g} {unit}"


def paper_verdicts(comparison: pd.DataFrame) -> pd.DataFrame:
    """One row per published figure: ``reproduced`` and a plain ``statement`` (which definitions
    reproduce it, or that none does, the closest value and the denominator the figure implies)."""
    rows = []
    for (preset, norm, quantity), group in comparison.groupby(["preset", "norm", "quantity"], sort=False):
        published = group.published_pct.iloc[0]
        hits = group[group.reproduces]
        closest = group.loc[group.difference_pct_points.abs().idxmin()]
        name = f"{norm.upper()} extra {quantity} on {preset}"
        if not hits.empty:
            defs = "; ".join(f"{r.extra} / {r.denominator}, {r.counting}" for r in hits.itertuples())
            statement = f"{name}: published {published:g} % is reproduced by: {defs}."
        else:
            implied = _amount_text(closest.implied_denominator, closest.unit)
            same = group[(group.extra == closest.extra) & (group.counting == closest.counting)]
            bases = " and ".join(f"{r.denominator} {_amount_text(r.denominator_amount, r.unit)}"
                                 for r in same.itertuples())
            extra = _amount_text(closest.extra_amount, closest.unit)
            statement = (f"{name}: no stated definition reproduces the published {published:g} % "
                         f"(closest: {closest.computed_pct:.2f} % = {closest.extra} / {closest.denominator}, "
                         f"{closest.counting}); the figure implies a denominator of {implied}, "
                         f"where this toolkit counts {bases} (extra: {extra}).")
        rows.append({"preset": preset, "norm": norm, "quantity": quantity, "published_pct": published,
                     "reproduced": not hits.empty, "closest_pct": float(closest.computed_pct),
                     "closest_definition": f"{closest.extra} / {closest.denominator}, {closest.counting}",
                     "statement": statement, "source": group.source.iloc[0]})
    return pd.DataFrame(rows)


def paper_quality_comparison(evaluation: pd.DataFrame | None, run_preset: str, *,
                             published: pd.DataFrame = PUBLISHED_QUALITY) -> pd.DataFrame:
    """SPADE's published FID / mIoU / accuracy per dataset beside this run's SPADE row.

    A measured value is given only for the dataset the run evaluated (``run_preset``) and only
    when the run has the paper's kind of metric (columns ``fid``, ``miou``, ``accuracy``; mIoU
    and accuracy fractions are converted to percent as published). mIoU and accuracy stand beside
    the paper's only when the run's ``segmenter_kind`` is the paper's network for that dataset
    (``segmenter_names.PRESET_SEGMENTER``, released weights); a user's TorchScript segmenter is
    shown with a note that it is comparable only if it is that network. Proxy metrics
    (``*_proxy``), another segmenter, another dataset or no SPADE row give NaN and a note saying
    why. Columns: preset, metric, published, measured, note, source.
    """
    spade = None
    if evaluation is not None and "norm" in evaluation:
        matches = evaluation[evaluation.norm == "spade"]
        spade = matches.iloc[0] if not matches.empty else None
    rows = []
    for fig in published.itertuples(index=False):
        for metric in ("fid", "miou", "accuracy"):
            value = np.nan
            if fig.preset != run_preset:
                note = f"not measured: this run evaluated {run_preset!r}"
            elif spade is None:
                note = "not measured: no SPADE row evaluated in this run"
            elif metric in spade and pd.notna(spade[metric]):
                value, note = _measured(spade, metric, fig.preset)
            elif f"{metric}_proxy" in spade and pd.notna(spade[f"{metric}_proxy"]):
                note = (f"not comparable: this run has {metric}_proxy (networks trained by the toolkit "
                        "on the run's own data), not the paper's metric")
            else:
                note = f"not measured in this run (no {metric} column)"
            rows.append({"preset": fig.preset, "metric": metric, "published": float(getattr(fig, metric)),
                         "measured": value, "note": note, "source": fig.source})
    return pd.DataFrame(rows)


def _measured(spade: pd.Series, metric: str, preset: str) -> tuple[float, str]:
    """(this run's value in the paper's unit, note): NaN for mIoU / accuracy of another segmenter."""
    value = float(spade[metric])
    if metric == "fid":
        return value, "same metric and dataset; training budget may differ"
    value = value * 100.0 if value <= 1.0 else value
    paper_net = DISPLAY_NAMES[PRESET_SEGMENTER[preset]]
    kind, used = spade.get("segmenter_kind"), spade.get("segmenter", "an unrecorded segmenter")
    if kind == PRESET_SEGMENTER[preset]:
        return value, f"same metric, dataset and segmenter ({used}); training budget may differ"
    if kind in DISPLAY_NAMES or kind == "proxy":
        return np.nan, f"not comparable: this run's {metric} comes from {used}; the paper's from {paper_net}"
    return value, (f"segmenter {used}: comparable only if it is the paper's {paper_net} with its released "
                   f"weights; training budget may differ")
