"""Return on investment: what each method's quality costs in GMACs, parameters and latency.

    table = roi_table(evaluation)                 # one row per method, Pareto flags per cost axis
    fig = plot_quality_vs_cost(evaluation)        # quality x cost grid, Pareto front marked
    mod = modulation_roi(evaluation)              # extra modulation cost vs quality it buys

``evaluation`` is the DataFrame of ``tables/evaluation.csv``: one row per method plus an
optional reference row (``norm == 'real'``). Column names carry units and the "proxy" label;
the direction of each quality column (lower or higher is better) is read from its name.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# Quality columns, lower-is-better ones first; names ending in _proxy are proxy figures.
LOWER_IS_BETTER = ("fid", "fid_clean", "fd_proxy_features")
HIGHER_IS_BETTER = ("miou", "miou_proxy", "accuracy", "accuracy_proxy")
COLUMN_LABELS = {
    "fid": "FID (Inception)", "fid_clean": "FID (clean-fid resize)",
    "fd_proxy_features": "Frechet distance\n(proxy features)",
    "miou": "mIoU", "miou_proxy": "mIoU\n(proxy segmenter)",
    "accuracy": "pixel accuracy", "accuracy_proxy": "pixel accuracy\n(proxy segmenter)",
    "params_m": "parameters (millions)",
    "latency_ms": "latency (ms, batch 1)",
}
METHOD_COLORS = {"spade": "#d62728", "clade": "#1f77b4", "clade-icpe": "#2ca02c"}


def column_label(column: str) -> str:
    """Axis label of a column, saying whether lower or higher is better."""
    if column.startswith("gmacs") or column.startswith("modulation_gmacs"):
        counter = column.split("_")[-1]
        label = ("modulation " if column.startswith("modulation") else "") + f"GMACs ({counter})"
    else:
        label = COLUMN_LABELS.get(column, column)
    if column in LOWER_IS_BETTER:
        return f"{label}\nlower is better"
    if column in HIGHER_IS_BETTER:
        return f"{label}\nhigher is better"
    return label


def quality_columns(df: pd.DataFrame) -> list[str]:
    """Quality columns of an evaluation table that hold at least one number."""
    return [c for c in (*LOWER_IS_BETTER, *HIGHER_IS_BETTER)
            if c in df and pd.to_numeric(df[c], errors="coerce").notna().any()]


def plotted_quality_columns(df: pd.DataFrame) -> list[str]:
    """The Frechet distance (FID if present, else on proxy features) and the mIoU column."""
    present = quality_columns(df)
    frechet = [c for c in ("fid", "fd_proxy_features") if c in present][:1]
    return frechet + [c for c in ("miou", "miou_proxy") if c in present][:1]


def cost_columns(df: pd.DataFrame) -> list[str]:
    """Cost columns (GMACs of any counter, params in millions, latency) present in ``df``."""
    gmacs = [c for c in df if c.startswith("gmacs")]
    return gmacs[:1] + [c for c in ("params_m", "latency_ms") if c in df]


def pareto_front(costs, qualities, higher_is_better) -> np.ndarray:
    """Boolean mask of points not dominated by another point.

    ``costs``: [N] (lower is better); ``qualities``: [N] or [N, Q] with ``higher_is_better`` a
    bool or one bool per quality column. A point is dominated when another is at least as
    good on every axis and strictly better on one. Points with NaN are never on the front.
    """
    costs = np.asarray(costs, dtype=float).reshape(-1, 1)
    q = np.asarray(qualities, dtype=float)
    q = q.reshape(len(costs), -1)
    sign = np.where(np.broadcast_to(np.asarray(higher_is_better), (q.shape[1],)), -1.0, 1.0)
    points = np.hstack([costs, q * sign])          # every axis: lower is better
    valid = np.isfinite(points).all(1)
    front = np.zeros(len(points), dtype=bool)
    for i in np.flatnonzero(valid):
        others = points[valid]
        dominated = ((others <= points[i]).all(1) & (others < points[i]).any(1)).any()
        front[i] = not dominated
    return front


def _methods(evaluation: pd.DataFrame) -> pd.DataFrame:
    df = evaluation[evaluation["norm"] != "real"].copy()
    if "params" in df:
        df["params_m"] = df["params"] / 1e6
    return df.reset_index(drop=True)


def roi_table(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Methods with their costs, qualities and ``pareto_<cost>`` flags.

    ``pareto_<cost>`` is True when no other method is at least as cheap on that cost axis and
    at least as good on every quality column, and strictly better somewhere.
    """
    df = _methods(evaluation)
    quality, costs = quality_columns(df), cost_columns(df)
    table = df[["method", "norm", *costs, *quality]].copy()
    higher = [q in HIGHER_IS_BETTER for q in quality]
    for cost in costs:
        table[f"pareto_{cost}"] = pareto_front(df[cost], df[quality].to_numpy(float), higher)
    return table


def modulation_roi(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Extra modulation cost of each method over the cheapest one, and the quality it buys.

    Columns: method, modulation GMACs and params, their share of the total, and for each
    quality column ``delta_<quality>`` against the method with the cheapest modulation
    (positive = better for higher-is-better columns, negative = better for lower-is-better).
    """
    df = _methods(evaluation)
    gmacs = next((c for c in df if c.startswith("modulation_gmacs")), None)
    total = next((c for c in df if c.startswith("gmacs")), None)
    if gmacs is None or total is None:
        raise ValueError("evaluation table has no modulation_gmacs_* / gmacs_* columns")
    base = df.loc[df[gmacs].idxmin()]
    out = df[["method", "norm", gmacs, "modulation_params"]].copy()
    out[f"modulation_share_of_{total}_pct"] = 100 * df[gmacs] / df[total]
    out[f"extra_{gmacs}_vs_{base['norm']}"] = df[gmacs] - base[gmacs]
    out[f"extra_modulation_params_vs_{base['norm']}"] = df["modulation_params"] - base["modulation_params"]
    for q in quality_columns(df):
        out[f"delta_{q}_vs_{base['norm']}"] = df[q] - base[q]
    return out


# Marker sizes: later methods smaller, so that coinciding points (CLADE vs ICPE) stay visible.
METHOD_SIZES = {"spade": 110, "clade": 130, "clade-icpe": 60}


def _scatter(ax, df: pd.DataFrame, cost: str, quality: str, reference: float | None):
    front = pareto_front(df[cost], df[quality], quality in HIGHER_IS_BETTER)
    ordered = df[front].sort_values(cost)
    if len(ordered) > 1:
        ax.step(ordered[cost], ordered[quality], where="post", color="0.55", lw=1.2, ls="--", zorder=1)
    for (_, row), on_front in zip(df.iterrows(), front):
        ax.scatter(row[cost], row[quality], s=METHOD_SIZES.get(row["norm"], 80), zorder=3,
                   color=METHOD_COLORS.get(row["norm"], "0.3"), marker="o" if on_front else "X",
                   edgecolor="black" if on_front else "none", linewidth=1.2)
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="0.4", lw=1, ls=":")
    ax.set_xlabel(column_label(cost), fontsize=9)
    ax.set_ylabel(column_label(quality), fontsize=9)
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)


def _legend(fig, df: pd.DataFrame, ncol: int = 4, reference: bool = True):
    line = plt.Line2D
    handles = [line([], [], marker="o", ls="", markersize=8, color=METHOD_COLORS.get(norm, "0.3"), label=method)
               for method, norm in zip(df["method"], df["norm"])]
    handles += [line([], [], marker="o", ls="", color="white", markeredgecolor="black", label="on the Pareto front"),
                line([], [], marker="X", ls="", color="0.5", label="dominated"),
                line([], [], ls="--", color="0.55", label="Pareto front")]
    if reference:
        handles.append(line([], [], ls=":", color="0.4", label="real images"))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)


def plot_quality_vs_cost(evaluation: pd.DataFrame):
    """Grid of quality (rows) against cost (columns); circled points are on the Pareto front."""
    df = _methods(evaluation)
    real = evaluation[evaluation["norm"] == "real"]
    quality, costs = plotted_quality_columns(df), cost_columns(df)
    fig, axes = plt.subplots(len(quality), len(costs), figsize=(3.7 * len(costs), 2.9 * len(quality) + 0.6),
                             squeeze=False)
    for i, q in enumerate(quality):
        ref = float(real[q].iloc[0]) if len(real) and q in real and pd.notna(real[q].iloc[0]) else None
        for j, c in enumerate(costs):
            _scatter(axes[i, j], df, c, q, ref)
    _legend(fig, df, ncol=7)
    fig.suptitle("Quality against cost per method (dotted: real images scored the same way)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def plot_modulation_roi(evaluation: pd.DataFrame):
    """Quality against the GMACs spent in modulation layers, one panel per quality column."""
    df = _methods(evaluation)
    gmacs = next(c for c in df if c.startswith("modulation_gmacs"))
    quality = plotted_quality_columns(df)
    fig, axes = plt.subplots(1, len(quality), figsize=(4.2 * len(quality), 3.8), squeeze=False)
    for ax, q in zip(axes[0], quality):
        _scatter(ax, df, gmacs, q, None)
        if (df[gmacs] > 0).all() and df[gmacs].max() / df[gmacs].min() > 20:
            ax.set_xscale("log")
    _legend(fig, df, ncol=3, reference=False)
    fig.suptitle("What the modulation layers cost (log scale) and the quality they buy", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 0.94))
    return fig


def to_markdown(df: pd.DataFrame) -> str:
    """Markdown table with numbers rounded for reading (see ``format_value``)."""
    return df.map(format_value).to_markdown(index=False, disable_numparse=True)


def format_value(value) -> str:
    """Compact text for a table cell: thousands separators, ~4 significant digits, n/a for NaN."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "n/a"
        if value == int(value):
            return f"{int(value):,}"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.1f}"
        if magnitude >= 1:
            return f"{value:.3f}"
        return f"{value:.4f}" if magnitude >= 1e-3 or value == 0 else f"{value:.3g}"
    if value is None or (isinstance(value, str) and value == ""):
        return "n/a"
    return str(value)
