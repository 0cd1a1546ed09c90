"""Return on investment: what each method's quality costs in GMACs, parameters and latency.

    table = roi_table(evaluation)                 # one row per method, Pareto flags per cost axis
    fig = plot_quality_vs_cost(evaluation)        # quality x cost grid, Pareto front marked, points named
    mod = modulation_roi(evaluation)              # extra modulation cost vs quality it buys

``evaluation`` is the DataFrame of ``tables/evaluation.csv``: one row per method plus an
optional reference row (``norm == 'real'``). Column names carry units and the "proxy" label;
the direction of each quality column (lower or higher is better) is read from its name.
"""
from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
from matplotlib.transforms import Bbox
import numpy as np
import pandas as pd

from models.registry import norm_spec, registered_norms

from analysis.quality import stats
from analysis.quality.metric_scales import HIGHER_IS_BETTER, KNOWN_ANSWER, LOWER_IS_BETTER, SCALES

COLUMN_LABELS = {
    "shading_error": "shading error\n(known answer, 0 = law)",
    "base_colour_error": "base-colour error\n(known answer, 0 = law)",
    "fid": "FID (Inception)", "fid_clean": "FID (clean-fid resize)",
    "fd_proxy_features": "Frechet distance\n(proxy features)",
    "miou": "mIoU", "miou_proxy": "mIoU\n(proxy segmenter)",
    "accuracy": "pixel accuracy", "accuracy_proxy": "pixel accuracy\n(proxy segmenter)",
    "params_m": "parameters (millions)",
    "latency_ms": "latency (ms, batch 1)",
}
# Colours of any other method (a user's extra rows), in row order; none is grey, the colour of
# the "dominated" and Pareto-front keys.
EXTRA_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MARKER_SIZE = 110            # points^2


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
    """The known-answer shading error (synthetic scenes), the Frechet distance (FID if present,
    else on proxy features) and the mIoU column, those present."""
    present = quality_columns(df)
    frechet = [c for c in ("fid", "fd_proxy_features") if c in present][:1]
    return [c for c in KNOWN_ANSWER[:1] if c in present] + frechet + [c for c in ("miou", "miou_proxy")
                                                                      if c in present][:1]


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
    at least as good on every quality column, and strictly better somewhere. With intervals over
    seeds (``<quality>_ci_low`` / ``_ci_high`` of ``stats.seed_summary``), ``<quality>_tie_group``
    numbers the groups of methods whose intervals overlap (``stats.ties``): methods sharing a
    group are tied, not ranked. Latency gets no front (``pareto_latency_ms`` empty) when a row's
    ``latency_reliable`` is False: an unreliable timing ranks nothing.
    """
    df = _methods(evaluation)
    quality, costs = quality_columns(df), cost_columns(df)
    intervals = [c for q in quality for c in (f"{q}_ci_low", f"{q}_ci_high") if c in df]
    table = df[["method", "norm", *[c for c in ("n_seeds",) if c in df], *costs, *quality, *intervals]].copy()
    for q in quality:
        if f"{q}_ci_low" in df and f"{q}_ci_high" in df:
            table[f"{q}_tie_group"] = stats.ties(df.rename(columns={q: f"{q}_mean"}), q).to_numpy()
    higher = [q in HIGHER_IS_BETTER for q in quality]
    for cost in costs:
        front = pareto_front(df[cost], df[quality].to_numpy(float), higher)
        table[f"pareto_{cost}"] = None if cost == "latency_ms" and not latency_reliable(df) else front
    return table


def latency_reliable(df: pd.DataFrame) -> bool:
    """Whether every row's latency passed the timing check (``latency_reliable``; absent: not checked,
    taken as reliable, as tables written before the check)."""
    return "latency_reliable" not in df or bool(df["latency_reliable"].fillna(False).astype(bool).all())


def error_bar(value: float, low: float, high: float, column: str) -> tuple[float, float] | None:
    """(below, above) lengths of an interval's error bar, its ends clipped to the metric's bounds
    (a distance never below 0, a share inside [0, 1]); None without an interval."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    bottom, top = SCALES[column].bounds if column in SCALES else (-np.inf, np.inf)
    low, high = float(np.clip(low, bottom, top)), float(np.clip(high, bottom, top))
    return max(value - low, 0.0), max(high - value, 0.0)


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


def method_colors(df: pd.DataFrame) -> dict[str, str]:
    """{method: colour}: the first row of a registered norm gets its registry colour
    (``models.norm_spec(norm).color``), every other method the next EXTRA_COLORS one (cycling),
    so that each method has its own legend entry."""
    colors, extra = {}, itertools.cycle(EXTRA_COLORS)
    for method, norm in zip(df["method"], df["norm"]):
        known = norm_spec(norm).color if norm in registered_norms() else None
        colors[method] = known if known and known not in colors.values() else next(extra)
    return colors


def _scatter(ax, df: pd.DataFrame, cost: str, quality: str, colors: dict, reference: float | None) -> list:
    """Plot one panel; returns ``[(marker, method)]`` for :func:`_declutter`. No front is drawn on
    an unreliable latency axis (the panel says so)."""
    ranked = cost != "latency_ms" or latency_reliable(df)
    front = pareto_front(df[cost], df[quality], quality in HIGHER_IS_BETTER) if ranked else np.zeros(len(df), bool)
    ordered = df[front].sort_values(cost)
    if not ranked:
        ax.set_title("unreliable timing: no Pareto front", fontsize=8, color="firebrick")
    if len(ordered) > 1:
        ax.step(ordered[cost], ordered[quality], where="post", color="0.55", lw=1.2, ls="--", zorder=1)
    points = []
    for (_, row), on_front in zip(df.iterrows(), front):
        if not (np.isfinite(row[cost]) and np.isfinite(row[quality])):
            continue
        marker = ax.scatter(row[cost], row[quality], s=MARKER_SIZE, zorder=3, color=colors[row["method"]],
                            marker="o" if on_front or not ranked else "X", edgecolor="black" if on_front else "white",
                            linewidth=1.2)
        points.append((marker, row["method"]))
        bar = error_bar(row[quality], row.get(f"{quality}_ci_low", np.nan), row.get(f"{quality}_ci_high", np.nan),
                        quality)
        if bar is not None:   # the interval over seeds
            ax.errorbar(row[cost], row[quality], yerr=[[bar[0]], [bar[1]]], fmt="none",
                        ecolor=colors[row["method"]], elinewidth=1.2, capsize=3, zorder=2)
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="0.4", lw=1, ls=":")
    ax.set_xlabel(column_label(cost), fontsize=9)
    ax.set_ylabel(column_label(quality), fontsize=9)
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    return points


def _label_offsets(gap: float) -> list[tuple[float, float]]:
    """Label positions around a marker (points), tried in this order: beside it, stacked above or
    below a label already there, then over or under it, then further away."""
    beside = [(sign * gap, dy) for sign in (1, -1) for dy in (0, 9, -9)]
    far = [(sign * gap, dy) for dy in (18, -18, 27, -27) for sign in (1, -1)]
    return beside + [(0, gap), (0, -gap)] + far


def _declutter(ax, points: list) -> None:
    """Keep coinciding points visible and name every point beside it.

    Call after the figure's layout is final. A marker whose centre lies inside an earlier one is
    drawn smaller (on top, so both show); each point then gets its method's name at the first
    offset where the label stays inside the panel and overlaps no marker or earlier label.
    """
    px_per_pt = ax.figure.dpi / 72
    centres = [ax.transData.transform(marker.get_offsets()[0]) for marker, _ in points]
    radii = []                                     # display pixels
    for i, (marker, _) in enumerate(points):
        size = MARKER_SIZE
        for j in range(i):
            if np.hypot(*(centres[i] - centres[j])) < radii[j]:
                size = min(size, 0.35 * (2 * radii[j] / px_per_pt) ** 2)   # 0.6 of its diameter
        marker.set_sizes([size])
        marker.set_linewidth(1.2 * np.sqrt(size / MARKER_SIZE))
        radii.append(np.sqrt(size) / 2 * px_per_pt)
    taken = [Bbox.from_extents(*(c - r), *(c + r)) for c, r in zip(centres, radii)]
    panel = ax.get_window_extent()
    for (marker, method), radius in zip(points, radii):
        best = None
        for dx, dy in _label_offsets(radius / px_per_pt + 3):
            label = ax.annotate(method, marker.get_offsets()[0], xytext=(dx, dy), textcoords="offset points",
                                fontsize=7, color=marker.get_facecolor()[0], zorder=4,
                                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                va="center" if dx or not dy else "bottom" if dy > 0 else "top")
            box = label.get_window_extent()
            inside = panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1
            badness = (not inside, sum(box.overlaps(other) for other in taken))
            if best is None or badness < best[0]:
                if best is not None:
                    best[1].remove()
                best = (badness, label, box)
            else:
                label.remove()
            if badness == (False, 0):
                break
        taken.append(best[2])


def _legend(fig, df: pd.DataFrame, colors: dict, ncol: int = 4, reference: bool = True):
    line = plt.Line2D
    handles = [line([], [], marker="o", ls="", markersize=8, color=colors[method], label=method)
               for method in df["method"]]
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
    colors = method_colors(df)
    fig, axes = plt.subplots(len(quality), len(costs), figsize=(3.7 * len(costs), 2.9 * len(quality) + 0.6),
                             squeeze=False)
    panels = []
    for i, q in enumerate(quality):
        ref = float(real[q].iloc[0]) if len(real) and q in real and pd.notna(real[q].iloc[0]) else None
        for j, c in enumerate(costs):
            panels.append((axes[i, j], _scatter(axes[i, j], df, c, q, colors, ref)))
    _legend(fig, df, colors, ncol=7)
    fig.suptitle("Quality against cost per method (dotted: real images scored the same way)", fontsize=10)
    return _laid_out(fig, panels, bottom=0.04 + 0.03 * -(-(len(df) + 4) // 7), top=0.97)


def _laid_out(fig, panels: list, *, bottom: float, top: float):
    """``fig`` laid out above its legend rows (``bottom``) and below its title (``top``), then each
    panel's point labels moved apart (after the layout, which sets the panels' sizes)."""
    fig.tight_layout(rect=(0, bottom, 1, top))
    for ax, points in panels:
        _declutter(ax, points)
    return fig


def plot_modulation_roi(evaluation: pd.DataFrame):
    """Quality against the GMACs spent in modulation layers, one panel per quality column."""
    df = _methods(evaluation)
    gmacs = next(c for c in df if c.startswith("modulation_gmacs"))
    quality = plotted_quality_columns(df)
    colors = method_colors(df)
    fig, axes = plt.subplots(1, len(quality), figsize=(4.2 * len(quality), 3.8), squeeze=False)
    panels = []
    for ax, q in zip(axes[0], quality):
        panels.append((ax, _scatter(ax, df, gmacs, q, colors, None)))
        if (df[gmacs] > 0).all() and df[gmacs].max() / df[gmacs].min() > 20:
            ax.set_xscale("log")
    _legend(fig, df, colors, ncol=3, reference=False)
    fig.suptitle("What the modulation layers cost (log scale) and the quality they buy", fontsize=10)
    return _laid_out(fig, panels, bottom=0.02 + 0.06 * -(-(len(df) + 3) // 3), top=0.94)


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
