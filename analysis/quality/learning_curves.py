"""Learning curves on the known-answer metrics, and the rule that says whether a method has converged.

    images = curve_images(SyntheticScenes(32, size=32, seed=0, first_index=SYNTHETIC_VAL_FIRST_INDEX))
    point = score_point(trainer.generator_for_eval, images)     # {"shading_error": ..., ...}
    table = convergence_table(curves)                          # one row per run label and metric

During training the train stage scores a fixed set of synthetic val scenes every K steps
(``training.loop.fit(on_step=...)``); the rows form ``tables/learning_curves.csv``. A comparison
is judged only between converged methods (``CONVERGENCE_RULE``): a GAN's numbers at a step where
its curve still moves by more than its seeds differ measure how far training got, not the method.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from data.labels import make_semantic
from data.synthetic import SyntheticScenes
from models.registry import norm_spec

from analysis.quality.known_answer import base_colour_error, expected_images, shading_error
from analysis.quality.metric_scales import KNOWN_ANSWER, metric_scale

# Lower is better for all three; 0 is the law's expectation.
CURVE_METRICS = ("shading_error", "base_colour_error", "expected_l1")
# Convergence is judged on the metrics the quality verdicts are drawn on.
CONVERGENCE_METRICS = KNOWN_ANSWER
# A drift below this fraction of a metric's equivalence margin cannot move a verdict.
NEGLIGIBLE_DRIFT = 0.1
CONVERGENCE_RULE = ("converged: |change of the seed mean from 3/4 of the steps to the end| <= tolerance = the larger "
                    "of the seed spread (sample sd over seeds of the final value) and a tenth of the metric's "
                    "equivalence margin; each value is a run's mean over the scored steps in the last eighth "
                    "before that point (a GAN's score jumps from step to step); needs >= 2 seeds")
CONVERGENCE_COLUMNS = ["method", "metric", "converged", "last_quarter_change", "seed_spread", "tolerance", "steps",
                       "seeds", "final_mean", "rule"]


@dataclass
class CurveImages:
    """The fixed scenes a learning curve is scored on."""

    inputs: dict[str, torch.Tensor]  # label, instance (and dist): what the generator is given
    expected: torch.Tensor           # [N, 3, H, W] the law's E[image | layout]
    instance: torch.Tensor           # [N, H, W] the scenes' true instance map (scored instances)


def curve_images(scenes: SyntheticScenes, inputs: Dataset | None = None) -> CurveImages:
    """Every scene of ``scenes``, fed to the generator as ``inputs`` gives them (default ``scenes``
    itself; e.g. coarsened label maps for a coarse-mask run), scored against the true layout."""
    inputs = scenes if inputs is None else inputs
    items = [inputs[i] for i in range(len(scenes))]
    keys = [k for k in ("label", "instance", "dist") if torch.is_tensor(items[0].get(k))]
    truth = torch.stack([scenes[i]["instance"][0] for i in range(len(scenes))])
    return CurveImages({k: torch.stack([item[k] for item in items]) for k in keys},
                       torch.from_numpy(expected_images(scenes)), truth)


@torch.no_grad()
def score_point(generator, images: CurveImages, batch_size: int = 32) -> dict[str, float]:
    """The known-answer metrics of ``generator`` (eval mode, fp32, restored after) on ``images``;
    ``expected_l1``: mean |generated - expected| over the scored pixels (dontcare excluded)."""
    config, was_training = generator.config, generator.training
    device = next(generator.parameters()).device
    generator.eval()
    try:
        out = []
        for i in range(0, len(images.expected), batch_size):
            part = {k: v[i:i + batch_size].to(device) for k, v in images.inputs.items()}
            semantic = make_semantic(part["label"], part.get("instance"), config)
            dist = part.get("dist") if norm_spec(config.norm).needs_icpe else None
            out.append(generator(semantic, dist=dist).float().clamp(-1, 1).cpu())
    finally:
        generator.train(was_training)
    generated = torch.cat(out)
    scored = (images.instance != 0)[:, None].expand_as(generated)
    return {"shading_error": shading_error(generated, images.expected, images.instance).ratio,
            "base_colour_error": base_colour_error(generated, images.expected, images.instance).ratio,
            "expected_l1": float((generated - images.expected).abs()[scored].double().mean())}


def _window(steps: np.ndarray, end: float, width: float) -> np.ndarray:
    """The scored steps in (end - width, end]; the scored step nearest ``end`` when none is."""
    inside = steps[(steps > end - width) & (steps <= end)]
    return inside if len(inside) else steps[[np.argmin(np.abs(steps - end))]]


def convergence_table(curves: pd.DataFrame, metrics=CONVERGENCE_METRICS) -> pd.DataFrame:
    """One row per run label (``curves.run``) and metric: ``CONVERGENCE_COLUMNS`` (``CONVERGENCE_RULE``).

    ``curves``: learning-curve rows (run, seed, step and the metrics). Only the steps scored in
    every seed of a run count. With T the last step, a seed's final value is its mean over the
    scored steps in (7/8 T, T] and its value at 3/4 its mean over (5/8 T, 3/4 T] (the scored step
    nearest 3/4 T, before T, when that window is empty). The tolerance has a floor of
    ``NEGLIGIBLE_DRIFT`` x the metric's margin (``metric_scales``): seeds that agree more closely
    than the metric can resolve a difference (CLADE's base-colour error: sd 0.004 over 3 seeds,
    margin 0.1) would otherwise ask for a curve flatter than any verdict needs.
    """
    rows = []
    for run, group in curves.groupby("run", sort=False):
        seeds = group.seed.nunique()
        for metric in metrics:
            wide = group.pivot_table(index="step", columns="seed", values=metric).dropna()
            steps = wide.index.to_numpy()
            row = {"method": run, "metric": metric, "converged": False, "last_quarter_change": float("nan"),
                   "seed_spread": float("nan"), "tolerance": float("nan"),
                   "steps": int(steps[-1]) if len(steps) else 0, "seeds": seeds, "final_mean": float("nan"),
                   "rule": CONVERGENCE_RULE}
            if len(steps) >= 2:
                last = steps[-1]
                final = wide.loc[_window(steps, last, last / 8)].mean()
                earlier = wide.loc[_window(steps[:-1], 0.75 * last, last / 8)].mean()
                change = float(final.mean() - earlier.mean())
                spread = float(final.std(ddof=1)) if seeds >= 2 else float("nan")
                tolerance = max(spread, NEGLIGIBLE_DRIFT * metric_scale(metric).margin) if seeds >= 2 else float("nan")
                row.update(converged=bool(abs(change) <= tolerance), last_quarter_change=change, seed_spread=spread,
                           tolerance=tolerance, final_mean=float(final.mean()))
            rows.append(row)
    return pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)


def curve_figure(curves: pd.DataFrame, labels: dict[str, str] | None = None, metrics=CURVE_METRICS):
    """One panel per metric: the seed mean of every run against training step (log scale), the band
    from the best to the worst seed. ``labels``: display name per run label."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for run, group in curves.groupby("run", sort=False):
            wide = group.pivot_table(index="step", columns="seed", values=metric).dropna()
            line, = ax.plot(wide.index, wide.mean(axis=1), label=(labels or {}).get(run, run))
            if wide.shape[1] > 1:
                ax.fill_between(wide.index, wide.min(axis=1), wide.max(axis=1), color=line.get_color(), alpha=0.2)
        ax.set_title(metric.replace("_", " ") + " (0 = the law; log scale)", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_yscale("log")   # the end of the curve, where convergence is judged, spans a few per cent
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Known-answer learning curves on fixed val scenes: seed mean, band = min to max over seeds",
                 fontsize=10)
    fig.tight_layout()
    return fig
