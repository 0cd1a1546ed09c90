"""Figures of the modulation probe (tables from ``analysis.probe.variance``).

    fig = plot_ratio_bars(layers)                      # semantic / positional / residual per layer
    fig = plot_share_against_untrained(verdicts)       # class share per layer vs the untrained twin
    fig = plot_ratio_heatmap(channels, model="spade")  # layer x channel semantic ratio
    fig = plot_modulation_maps(modulation_maps(G, batch, layers), channels, class_nc=G.config.class_nc)
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from analysis.probe.verdicts import CLASS_ONLY_BY_CONSTRUCTION, NEGLIGIBLE, NEGLIGIBLE_RELATIVE_STD, SUPPORTED

PART_STYLE = (  # (legend, colour), stacked bottom to top
    ("semantic (between classes)", "#3a6ea5"),
    ("positional (ICPE regression within class, chance-adjusted)", "#f0a030"),
    ("residual (the rest)", "#b8b8b8"),
)

NO_VARIANCE_LEGEND = (f"no variance (modulation std < {NEGLIGIBLE_RELATIVE_STD:.2g} x the activation's RMS; "
                      f"no bar, no verdict)")


def layer_label(layer: str, resolution: str) -> str:
    """Tick label 'up_1.norm_0' + newline + '16x16'."""
    return f"{layer}\n{resolution}"


def _layers_in_depth_order(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop_duplicates("layer").sort_values("depth")


def plot_ratio_bars(layers: pd.DataFrame) -> plt.Figure:
    """Stacked variance-weighted ratios per layer (depth order), one row per model, gamma | beta.

    Bars: sum over channels of each part / sum of total variances; the positional part is the
    chance-adjusted one (an in-sample fit on few pixels per class, at 2x2 or 4x4, would
    otherwise look positional) and the residual the rest. Dots: semantic ratio averaged over
    channels (zero-variance channels left out). A layer without variance, or marked in a
    ``negligible`` column (``analysis.probe.verdicts``), gets no bar: its shares are ratios of
    rounding noise, so it is drawn as a hatched "no variance" slot.
    """
    models = list(dict.fromkeys(layers["model"]))
    n_layers = layers.groupby("model")["layer"].nunique().max()
    fig, axes = plt.subplots(len(models), 2, figsize=(max(10, 0.55 * n_layers * 2), 2.9 * len(models)),
                             squeeze=False, sharey=True)
    for row, model in enumerate(models):
        for col, param in enumerate(("gamma", "beta")):
            ax = axes[row, col]
            df = layers[(layers["model"] == model) & (layers["param"] == param)].sort_values("depth")
            x = np.arange(len(df))
            empty = df["semantic_ratio_weighted"].isna().to_numpy()
            if "negligible" in df.columns:
                empty = empty | df["negligible"].astype(bool).to_numpy()
            semantic = np.where(empty, 0.0, df["semantic_ratio_weighted"].to_numpy())
            positional = np.where(empty, 0.0, df["positional_ratio_adjusted_weighted"].to_numpy())
            parts = np.nan_to_num(np.stack([semantic, positional, np.where(empty, 0.0, 1 - semantic - positional)]))
            bottom = np.zeros(len(df))
            for values, (legend, colour) in zip(parts, PART_STYLE):
                ax.bar(x, values, bottom=bottom, color=colour, width=0.8, label=legend)
                bottom += values
            ax.plot(x[~empty], df["semantic_ratio"].to_numpy()[~empty], "o", color="black", markersize=3.5,
                    label="semantic ratio, mean over channels")
            ax.bar(x[empty], np.ones(empty.sum()), width=0.8, color="white", edgecolor="#999999", hatch="///",
                   label=NO_VARIANCE_LEGEND)
            for xi in x[empty]:
                ax.text(xi, 0.5, "no variance", ha="center", va="center", fontsize=6, rotation=90,
                        bbox=dict(facecolor="white", edgecolor="none", pad=1))
            ax.set_xticks(x, [layer_label(l, r) for l, r in zip(df["layer"], df["resolution"])],
                          rotation=90, fontsize=7)
            ax.set_ylim(0, 1.02)
            ax.set_xlim(-0.6, len(df) - 0.4)
            ax.set_title(f"{model}: {param} ({'scale' if param == 'gamma' else 'shift'})", fontsize=10)
            if col == 0:
                ax.set_ylabel("fraction of variance")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("How much of each layer's modulation is determined by the class "
                 "(layers by depth, resolution below the name)", y=1.04, fontsize=11)
    fig.tight_layout()
    return fig


def plot_ratio_heatmap(channels: pd.DataFrame, model: str) -> plt.Figure:
    """Semantic ratio of every channel of every layer of ``model``, gamma | beta.

    Channels are sorted by ratio within each layer (their order carries no meaning), so each
    row reads as the distribution over channels; grey = no channel / zero variance.
    """
    df = channels[channels["model"] == model]
    order = _layers_in_depth_order(df)
    width = int(df["channel"].max()) + 1
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.3 * len(order) + 1.8), sharey=True)
    for ax, param in zip(axes, ("gamma", "beta")):
        grid = np.full((len(order), width), np.nan)
        for i, layer in enumerate(order["layer"]):
            ratios = df[(df["layer"] == layer) & (df["param"] == param)]["semantic_ratio"].to_numpy()
            ratios = np.sort(ratios[~np.isnan(ratios)])[::-1]
            grid[i, : len(ratios)] = ratios
        image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(order)), [f"{l} ({r})" for l, r in zip(order["layer"], order["resolution"])],
                      fontsize=7)
        ax.set_xlabel("channel, sorted by semantic ratio within the layer")
        ax.set_title(f"{model}: {param}", fontsize=10)
    fig.colorbar(image, ax=axes, fraction=0.03, label="semantic ratio (between-class / total variance)")
    fig.suptitle(f"{model}: semantic ratio per channel (grey: no such channel, or zero variance)", fontsize=10)
    return fig


def label_colormap(class_nc: int) -> ListedColormap:
    """Distinct colours for class ids 0 .. class_nc - 1 (seeded beyond 20 classes)."""
    if class_nc <= 20:
        return ListedColormap(plt.get_cmap("tab20" if class_nc > 10 else "tab10").colors[:class_nc])
    return ListedColormap(np.random.default_rng(0).uniform(0.1, 0.95, (class_nc, 3)))


def plot_modulation_maps(maps: dict, channels: pd.DataFrame, class_nc: int, *, param: str = "gamma",
                         per_layer: int = 3, title: str = "") -> plt.Figure:
    """One image: label map at each layer's resolution, then the ``per_layer`` channels of
    ``param`` with the largest variance over the probe set (``channels`` of one model), shown
    as the deviation from the channel's mean over the probe set (SPADE's scale is 1 + gamma).
    """
    key = "scale" if param == "gamma" else "shift"
    fig, axes = plt.subplots(len(maps), per_layer + 1, figsize=(2.4 * (per_layer + 1), 2.5 * len(maps)),
                             squeeze=False)
    colours = label_colormap(class_nc)
    present = set()
    for row, (layer, item) in enumerate(maps.items()):
        ax = axes[row, 0]
        ax.imshow(item["label"].numpy(), cmap=colours, vmin=-0.5, vmax=class_nc - 0.5, interpolation="nearest")
        present |= set(item["label"].unique().tolist())
        h, w = item["label"].shape
        ax.set_title(f"label map at {h}x{w}", fontsize=8)
        ax.set_ylabel(layer, fontsize=9)
        stats = channels[(channels["layer"] == layer) & (channels["param"] == param)]
        top = stats.sort_values("total_variance", ascending=False).head(per_layer)
        for col, (_, ch) in enumerate(top.iterrows(), start=1):
            ax = axes[row, col]
            deviation = item[key][int(ch["channel"])].numpy() - ch["mean"]
            limit = np.abs(deviation).max() or 1.0
            image = ax.imshow(deviation, cmap="coolwarm", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_title(f"{param} ch {int(ch['channel'])} (mean {ch['mean']:.3g})\n"
                         f"semantic ratio {ch['semantic_ratio']:.2f}", fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(c)) for c in sorted(present)]
    fig.legend(handles, [f"class {c}" for c in sorted(present)], loc="lower center", ncol=min(len(handles), 9),
               fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.03))
    fig.suptitle((title or f"{param} maps next to the label map") + "\nper channel: deviation from its "
                 "mean over the probe set (the channels with the largest variance)", fontsize=9)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def plot_share_against_untrained(verdicts: pd.DataFrame) -> plt.Figure:
    """Class share of every layer (``analysis.probe.verdicts.probe_verdicts``) with its interval over
    seeds, beside the untrained twin's share: one panel per model, layers by depth. Filled: the
    interval lies above the baseline ("supported"); hatched slot: negligible modulation, no verdict.
    Models whose every layer is class-only by construction (CLADE) are left out.
    """
    models = [m for m, g in verdicts.groupby("model", sort=False)
              if not (g["verdict"] == CLASS_ONLY_BY_CONSTRUCTION).all()]
    n_layers = max((verdicts["model"] == m).sum() for m in models) if models else 1
    fig, axes = plt.subplots(len(models) or 1, 1, figsize=(max(8, 0.5 * n_layers), 2.6 * max(len(models), 1)),
                             squeeze=False, sharey=True)
    for ax, model in zip(axes[:, 0], models):
        df = verdicts[verdicts["model"] == model].reset_index(drop=True)
        x = np.arange(len(df))
        skipped = (df["verdict"] == NEGLIGIBLE).to_numpy()
        shown = ~skipped
        ax.bar(x[skipped], np.ones(skipped.sum()), width=0.8, color="white", edgecolor="#999999", hatch="///",
               label="negligible modulation: no verdict")
        ax.plot(x[shown], df["share_class_untrained"][shown], "x", color="#777777", markersize=7,
                label="untrained twin (same seed, same label maps)")
        error = np.stack([df["share_class"] - df["share_class_low"], df["share_class_high"] - df["share_class"]])
        ax.errorbar(x[shown], df["share_class"][shown], yerr=error[:, shown], fmt="none", ecolor="#3a6ea5",
                    capsize=3)
        supported = shown & (df["verdict"] == SUPPORTED).to_numpy()
        ax.plot(x[supported], df["share_class"][supported], "o", color="#3a6ea5", label="trained: supported")
        ax.plot(x[shown & ~supported], df["share_class"][shown & ~supported], "o", markerfacecolor="white",
                color="#3a6ea5", label="trained: not supported / no verdict")
        ax.set_xticks(x, [layer_label(l, r) for l, r in zip(df["layer"], df["resolution"])], rotation=90, fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(-0.6, len(df) - 0.4)
        ax.set_ylabel("class share")
        ax.set_title(model, fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Share of each layer's gamma / beta variance explained by the class (against positional and "
                 "residual), trained (95% interval over seeds) vs untrained", y=1.05, fontsize=10)
    fig.tight_layout()
    return fig
