"""Is a layer's modulation more semantic than the label geometry alone makes it? One verdict per layer.

    shares = layer_shares(channels)                         # per model, seed, layer: share_class, negligible
    twin = untrained_twin(G, seed=ctx.seed + k)             # the same architecture at its initial weights
    verdicts = probe_verdicts(shares, untrained_shares)     # tables/probe_verdicts.csv

``share_class`` = between-class variance / total variance of the layer's per-pixel scale and
shift, pooled over channels and over gamma and beta (both enter the output as ``x * scale +
shift`` with a normalised ``x``, so a unit of variance of either moves the output alike). The
rest of the variance is *all* that is not class: positional (within-class position) and residual
(e.g. the neighbouring classes that SPADE's 5x5 receptive field sees), so a spatially adaptive
layer cannot hide its spatial part in the residual.

Why a baseline: an untrained SPADE already has a class share of 0.2-0.4 at 16x16 and 32x32,
because its convolutions of a one-hot map give the same value inside every large region. A
trained layer supports "the modulation is semantic" only where its share lies above what the
same architecture at its initial weights (same seed) gives on the same label maps.

Negligible modulation. A layer whose per-pixel modulation std (over pixels, RMS over channels,
gamma and beta together) is below ``NEGLIGIBLE_RELATIVE_STD`` = 2^-8 of the RMS of the
normalised activation it scales gets no verdict: 2^-8 is bf16's relative rounding (8 significant
bits), the precision the default training runs in, so such a variation is below the rounding of
the forward pass that trained it and its "shares" are ratios of noise (SPADE's 1x1 layers: std
1e-6, float32 rounding; 2x2: 1.6e-3). RMS, not std: at the head the activation can be the same
at every pixel of every image (one class at 1x1), yet the modulation scales it. Without a
recorded activation (a plugin layer without ``param_free_norm``) the RMS is taken as 1, what
normalisation makes it in training. A layer at which the probe saw one class has no share
between classes: no verdict either.

Intervals over seeds: Student-t on the logit of the per-seed shares, mapped back, so they stay
inside [0, 1]; the point estimate is the back-mapped mean logit (inside its interval).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats
from torch import nn

from models import build_generator_from_config

from analysis.probe.variance import MODEL_KEYS

NEGLIGIBLE_RELATIVE_STD = 2.0 ** -8
LEVEL = 0.95
# A share this close to 1 in the untrained generator is class-only by construction (CLADE's tables).
CLASS_ONLY = 1 - 1e-9
LOGIT_CLIP = 1e-12   # shares of exactly 0 or 1 stay finite on the logit scale

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
NEGLIGIBLE = "no verdict: negligible modulation"
CLASS_ONLY_BY_CONSTRUCTION = "no verdict: class-only by construction"
ONE_SEED = "no verdict: one seed"
ONE_CLASS = "no verdict: one class seen"

VERDICT_COLUMNS = ["model", "layer", "resolution", "share_class", "share_class_low", "share_class_high",
                   "share_class_untrained", "negligible", "verdict"]


def untrained_twin(generator: nn.Module, seed: int) -> nn.Module:
    """``generator``'s architecture at the initial weights a training run seeded with ``seed`` starts
    from (``training.Trainer`` seeds torch, then builds the generator); the global RNG is left as it was."""
    device = next(generator.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return build_generator_from_config(generator.config, device)


def _layer_row(group: pd.DataFrame) -> pd.Series:
    total = group["total_variance"].sum()
    channels = group["channel"].nunique()
    modulation_std = np.sqrt(total / channels)        # both params' variances, mean over channels
    activation = group.loc[group["param"] == group["param"].iloc[0], "activation_mean_square"]
    activation_rms = np.sqrt(activation.mean()) if activation.notna().all() else 1.0
    # no variation at all is negligible against any activation, even a zero one
    relative = 0.0 if modulation_std == 0 else modulation_std / activation_rms if activation_rms > 0 else np.inf
    return pd.Series({"share_class": group["between_variance"].sum() / total if total > 0 else np.nan,
                      "modulation_std": modulation_std, "activation_rms": activation_rms,
                      "relative_modulation_std": relative,
                      "negligible": bool(relative < NEGLIGIBLE_RELATIVE_STD),
                      "classes_seen": int(group["classes_seen"].min())})


def layer_shares(channels: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed, layer): ``share_class`` (gamma and beta pooled), the modulation and
    activation RMS, ``negligible`` (see the module docstring) and ``classes_seen``, from a
    ``variance_decomposition`` table (model/run/seed columns kept when present)."""
    keys = [k for k in MODEL_KEYS if k in channels.columns]
    out = channels.groupby(keys + ["depth", "layer", "resolution"], sort=False, dropna=False).apply(
        _layer_row, include_groups=False)
    return out.astype({"negligible": bool, "classes_seen": int}).reset_index()


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _expit(z):
    return 1 / (1 + np.exp(-z))


def share_interval(shares, level: float = LEVEL) -> tuple[float, float, float]:
    """(centre, low, high) of per-seed shares in [0, 1]: Student-t on the logit scale, mapped back
    (low = high = NaN for fewer than two seeds)."""
    z = _logit(np.asarray(shares, dtype=np.float64))
    centre = float(_expit(z.mean()))
    if len(z) < 2:
        return centre, np.nan, np.nan
    half = scipy_stats.t.ppf(0.5 + level / 2, len(z) - 1) * z.std(ddof=1) / np.sqrt(len(z))
    return centre, float(_expit(z.mean() - half)), float(_expit(z.mean() + half))


def _verdict(low: float, untrained: np.ndarray, negligible: bool, seeds: int, classes: int) -> str:
    if negligible:
        return NEGLIGIBLE
    if classes < 2:
        return ONE_CLASS
    if (untrained >= CLASS_ONLY).all():
        return CLASS_ONLY_BY_CONSTRUCTION
    if seeds < 2:
        return ONE_SEED
    return SUPPORTED if low > float(_expit(_logit(untrained).mean())) else NOT_SUPPORTED


def probe_verdicts(trained: pd.DataFrame, untrained: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """One row per (model, layer) of :func:`layer_shares` tables: the trained share over seeds with
    its interval, the untrained baseline (same seeds, same label maps) and the verdict:

    - "no verdict: negligible modulation" when the layer is negligible in any trained seed;
    - "no verdict: one class seen" when the probe saw a single class at the layer's resolution;
    - "no verdict: class-only by construction" when the untrained share is already 1 (CLADE);
    - "no verdict: one seed" without an interval;
    - "supported" when the interval's lower end lies above the untrained share, else "not supported"
  (an untrained layer without variance has baseline 0).

    ``model`` is the run (the seeds of one run pooled); rows follow the trained table's order.
    """
    group = "run" if "run" in trained.columns else "model"
    on = [group, "seed", "layer"]
    missing = trained[on].merge(untrained[on], how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"]
    if len(missing):
        first = missing.iloc[0]
        raise ValueError(f"no untrained baseline for {group} {first[group]!r}, seed {first['seed']}, layer "
                         f"{first['layer']!r}: probe the untrained twin of every trained seed")
    both = trained.merge(untrained[on + ["share_class"]], on=on, suffixes=("", "_untrained"))
    rows = []
    for (model, layer), g in both.groupby([group, "layer"], sort=False):
        defined = g.dropna(subset=["share_class"])
        centre, low, high = share_interval(defined["share_class"], level) if len(defined) else (np.nan,) * 3
        # An untrained layer without variance has no semantic part to beat: baseline 0.
        untrained_share = g["share_class_untrained"].fillna(0.0).to_numpy()
        negligible = bool(g["negligible"].any())
        rows.append({"model": model, "layer": layer, "resolution": g["resolution"].iloc[0],
                     "share_class": centre, "share_class_low": low, "share_class_high": high,
                     "share_class_untrained": float(_expit(_logit(untrained_share).mean())),
                     "negligible": negligible,
                     "verdict": _verdict(low, untrained_share, negligible, len(defined),
                                         int(g["classes_seen"].min()))})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)
