"""Figures of the cost analysis: where the MACs go, by layer and resolution, and how they
relate to measured time. Each function takes the tables of analysis/costs/layers.py or bench.py
and returns a matplotlib Figure (save it with ``RunContext.write_figure``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from models.registry import norm_spec, registered_norms

# Stacking order and colours of the roles; the small CLADE roles are merged into one.
ROLE_GROUPS = {
    "backbone": ("backbone", "#9e9e9e"),
    "modulation_spade_shared": ("SPADE shared MLP", "#fdae6b"),
    "modulation_spade_gamma": ("SPADE gamma conv", "#e6550d"),
    "modulation_spade_beta": ("SPADE beta conv", "#a63603"),
}
OTHER_MODULATION = ("other modulation (norm, resize, CLADE tables, ICPE, edge)", "#3182bd")


def norm_label(norm: str) -> str:
    """Display name of a norm (its registry label; the name itself if not registered)."""
    return norm_spec(norm).label if norm in registered_norms() else norm


def norm_color(norm: str, default: str = "k") -> str:
    """Colour of a norm (its registry colour; ``default`` if not registered)."""
    return norm_spec(norm).color if norm in registered_norms() else default


def _block(module: str) -> str:
    return "other" if module == "(root)" else module.split(".")[0]


def _role_group(role: str) -> str:
    return ROLE_GROUPS[role][0] if role in ROLE_GROUPS else OTHER_MODULATION[0]


def per_layer_bars(per_layer: pd.DataFrame, preset: str, norms=("spade", "clade"),
                   column: str = "gmacs_fvcore") -> plt.Figure:
    """Stacked bars of GMACs per generator block, modulation vs backbone, one panel per norm."""
    data = per_layer[(per_layer.preset == preset) & per_layer.norm.isin(norms)].copy()
    data["block"] = data.module.map(_block)
    data["group"] = data.role.map(_role_group)
    order = list(dict.fromkeys(b for b in data.block if b != "other")) + ["other"]
    groups = [label for label, _ in ROLE_GROUPS.values()] + [OTHER_MODULATION[0]]
    colors = dict(list(ROLE_GROUPS.values()) + [OTHER_MODULATION])
    fig, axes = plt.subplots(1, len(norms), figsize=(5.5 * len(norms), 4.6), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, norm in zip(axes, norms):
        pivot = (data[data.norm == norm].pivot_table(index="block", columns="group", values=column, aggfunc="sum")
                 .reindex(index=order, columns=groups).fillna(0.0))
        bottom = np.zeros(len(order))
        for group in groups:
            values = pivot[group].to_numpy()
            if values.sum() > 0:
                ax.bar(order, values, bottom=bottom, color=colors[group], label=group, edgecolor="white", linewidth=0.5)
            bottom += values
        mod = data[(data.norm == norm) & (data.role != "backbone")][column].sum()
        total = data[data.norm == norm][column].sum()
        ax.set_title(f"{norm_label(norm)}: {total:.1f} GMACs, modulation {mod:.3g} ({mod / total:.1%})")
        ax.tick_params(axis="x", rotation=45)
        ax.set_xlabel("generator block (in call order; 'other' = fc input resize, upsampling, tanh)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{column.replace('gmacs_', 'GMACs (').rstrip()}) per block, batch 1")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.08), frameon=False)
    fig.suptitle(f"{preset}: multiply-accumulates per block (fvcore counting)", y=1.13)
    fig.tight_layout()
    return fig


def _stage_key(stage: str) -> float:
    if not stage[:1].isdigit():  # 'mixed': generator-level ops, drawn last
        return float("inf")
    h, w = stage.split("x")
    return int(h) * int(w)


def stage_share(per_layer: pd.DataFrame, preset: str, norms=None) -> plt.Figure:
    """Share of GMACs (fvcore and complete) spent at each resolution stage, per norm (default: every
    registered norm)."""
    norms = registered_norms() if norms is None else norms
    data = per_layer[(per_layer.preset == preset) & per_layer.norm.isin(norms)]
    stages = sorted(data.stage.unique(), key=_stage_key)
    cmap = plt.get_cmap("viridis", len(stages))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for ax, column, title in zip(axes, ("gmacs_fvcore", "gmacs_complete"),
                                 ("fvcore GMACs", "complete GMACs (fvcore + skipped ops)")):
        share = data.pivot_table(index="norm", columns="stage", values=column, aggfunc="sum").reindex(
            index=list(norms), columns=stages).fillna(0.0)
        share = share.div(share.sum(axis=1), axis=0)
        left = np.zeros(len(norms))
        labels = [norm_label(n) for n in norms]
        for i, stage in enumerate(stages):
            values = share[stage].to_numpy()
            ax.barh(labels, values, left=left, color=cmap(i), label=stage if stage != "mixed" else "other (generator-level)",
                    edgecolor="white", linewidth=0.5)
            for y, (x0, v) in enumerate(zip(left, values)):
                if v > 0.08:
                    ax.text(x0 + v / 2, y, f"{v:.0%}", ha="center", va="center", color="white", fontsize=8)
            left += values
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"share of {title}")
        ax.set_title(title)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="resolution (output of the layer)", loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{preset}: where the multiply-accumulates are, by resolution stage (batch 1)")
    fig.tight_layout()
    return fig


def latency_vs_macs(points: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """Measured latency against GMACs per model, with 'time proportional to GMACs' lines.

    ``points``: columns preset, norm, gmacs_fvcore, median_ms (one row per model); the GMACs
    count the reference program, the latency may be the fused model's (it does fewer). For
    each preset a dashed line through its SPADE point shows where the other models would
    be if time followed fvcore GMACs; points above it are slower than their MACs promise.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for (preset, norm), row in points.set_index(["preset", "norm"]).iterrows():
        ax.scatter(row.gmacs_fvcore, row.median_ms, color=norm_color(norm), s=50, zorder=3)
        ax.annotate(f"{preset} {norm_label(norm)}\n{row.median_ms:.0f} ms", (row.gmacs_fvcore, row.median_ms),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    for preset, group in points.groupby("preset"):
        spade = group[group.norm == "spade"]
        if spade.empty:
            continue
        slope = spade.median_ms.iloc[0] / spade.gmacs_fvcore.iloc[0]
        xs = np.linspace(0, group.gmacs_fvcore.max() * 1.1, 50)
        ax.plot(xs, slope * xs, ls="--", lw=1, color="0.5")
        ax.annotate(f"time ∝ GMACs ({preset}, through SPADE)", (xs[-1], slope * xs[-1]), fontsize=7, color="0.4",
                    ha="right", va="bottom")
    for norm in dict.fromkeys(points.norm):
        ax.scatter([], [], color=norm_color(norm), label=norm_label(norm))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("fvcore GMACs per image of the reference program (batch 1)")
    ax.set_ylabel("median latency per call (ms)")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Latency vs multiply-accumulates")
    fig.tight_layout()
    return fig


def op_breakdown(profile: pd.DataFrame, *, top: int = 8) -> plt.Figure:
    """Share of CPU self time per aten op, one panel per norm (from ``bench.profile_ops``)."""
    norms = list(dict.fromkeys(profile.norm))
    fig, axes = plt.subplots(1, len(norms), figsize=(4.6 * len(norms), 3.8), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, norm in zip(axes, norms):
        rows = profile[profile.norm == norm].nlargest(top, "share").iloc[::-1]
        ax.barh(rows.op.str.replace("aten::", "", regex=False), rows.share, color=norm_color(norm, "0.5"))
        for y, (share, ms) in enumerate(zip(rows.share, rows.self_ms)):
            ax.text(share, y, f" {ms:.0f} ms", va="center", fontsize=7)
        total = profile[profile.norm == norm].self_ms.sum()
        ax.set_title(f"{norm_label(norm)} (listed ops: {total:.0f} ms per call)")
        ax.set_xlabel("share of profiled CPU self time")
        ax.set_xlim(0, min(1.0, profile.share.max() * 1.35))
    fig.suptitle(f"Where generator time goes per op ({profile.preset.iloc[0]}, batch 1, fp32, eager)")
    fig.tight_layout()
    return fig
