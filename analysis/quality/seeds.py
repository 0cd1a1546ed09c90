"""Quality numbers with their uncertainty: per-image scores, bootstrap intervals, class-mean ablation.

    scores = image_scores(images, labels, segmenter, extractors, batch_size, device)
    row = quality_row(scores, reference, extractors, suffix="_proxy")   # metric + _boot_low/_boot_high
    expected = expected_images(paths, size)                 # synthetic scenes: the law's E[image | layout]
    energies = known_answer_energies(images, expected, instance)
    row.update(known_answer_row(energies))                  # shading_error, base_colour_error + intervals
    images = ablated_images(G, samples, stats, layers, batch_size, device)  # class-mean ablation

The tables these rows go into (``quality_seeds``, ``ablation_quality``) are defined in
``analysis.report.findings``. Intervals over evaluation images are percentile bootstraps
(``analysis.quality.stats``, 200 resamples, seeded): mIoU from per-image intersection / union counts,
accuracy from per-image correct / scored pixel counts, Frechet distances from the per-image
features of the generated and the real images, both resampled (bias-shifted, see
``stats.bootstrap_frechet``). The point value of a Frechet column is the one of
``analysis.quality.metrics`` on the same images. The known-answer errors of the synthetic scenes
(``analysis.quality.known_answer``) are ratios of sums over instances; their interval resamples
the images' sums (``stats.bootstrap_ratio``), and over seeds and images together
``stats.hierarchical_bootstrap`` of the same per-image sums.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from data.synthetic import expected_image
from models.registry import norm_spec

from analysis.quality import known_answer
from analysis.quality import metrics
from analysis.quality import stats
from analysis.probe.variance import prepare_inputs
from analysis.probe.ablation import ablate
from analysis.quality.segmenters import IGNORE_INDEX

# What the train stage records beside each exported generator (method, seed, steps, variant).
VARIANT_FILE = "variant.json"
# The "path" of a built-in scene (data.synthetic.SyntheticScenes): its stream seed and scene number.
SYNTHETIC_PATH = re.compile(r"^synthetic/seed(-?\d+)/(\d+)$")
# Known-answer columns and the function that scores each.
KNOWN_ANSWER_METRICS = {"shading_error": known_answer.shading_error,
                        "base_colour_error": known_answer.base_colour_error}


@dataclass
class ImageScores:
    """Per-image segmentation counts and features of one image set."""
    intersection: np.ndarray            # [N, classes]
    union: np.ndarray                   # [N, classes]
    correct: np.ndarray                 # [N] correctly segmented pixels
    scored: np.ndarray                  # [N] pixels with a target
    features: dict = field(default_factory=dict)   # {column: [N, D]}

    def statistics(self) -> dict:
        """{column: metrics.ActivationStats} of the features."""
        out = {}
        for name, x in self.features.items():
            out[name] = metrics.ActivationStats()
            out[name].update(x)
        return out


def image_scores(images: torch.Tensor, labels: torch.Tensor, segmenter, extractors: dict, batch_size: int,
                 device) -> ImageScores:
    """Score ``images`` [N, 3, H, W] against their label maps with ``segmenter`` (None: no
    segmentation counts) and collect the features of every extractor ({column: (extract,
    transform, minimum)}, as the eval stage builds them)."""
    inter, union, correct, scored = [], [], [], []
    features = {name: [] for name in extractors}
    batches = tqdm(range(0, len(images), batch_size), desc="scoring images", unit="batch", leave=False,
                   disable=None if len(images) > batch_size else True)   # None: shown on a terminal only
    with torch.no_grad():
        for i in batches:
            x = images[i:i + batch_size].to(device)
            if segmenter is not None:
                logits = segmenter(x)
                classes = logits.shape[1]
                pred = logits.argmax(1)
                target = segmenter.target(labels[i:i + batch_size].to(device), classes)
                keep = target != IGNORE_INDEX
                for p, t, k in zip(pred, target, keep):
                    p_one = torch.nn.functional.one_hot(p[k], classes).sum(0)
                    t_one = torch.nn.functional.one_hot(t[k].long(), classes).sum(0)
                    both = torch.bincount(t[k][p[k] == t[k]].long(), minlength=classes)
                    inter.append(both.cpu().numpy())
                    union.append((p_one + t_one - both).cpu().numpy())
                    correct.append(int(both.sum()))
                    scored.append(int(k.sum()))
            for name, (extract, transform, _) in extractors.items():
                features[name].append(extract(transform(x) if transform else x).double().cpu().numpy())
    return ImageScores(np.array(inter, dtype=float), np.array(union, dtype=float), np.array(correct, dtype=float),
                       np.array(scored, dtype=float), {k: np.concatenate(v) for k, v in features.items()})


def quality_row(scores: ImageScores, reference: ImageScores | None, extractors: dict, *, suffix: str = "",
                n_boot: int = stats.N_BOOT, seed: int = 0, fixed: dict | None = None) -> dict:
    """Metric columns (``miou<suffix>``, ``accuracy<suffix>``, Frechet columns against
    ``reference``'s features) and their ``_boot_low`` / ``_boot_high`` over images. A column in
    ``fixed`` ({column: metrics.ActivationStats}) is measured against those statistics instead
    (e.g. precomputed training-set FID statistics), without an interval."""
    fixed = fixed or {}
    row = {}

    def put(column: str, interval: stats.Interval, value: float | None = None) -> None:
        row[column] = interval.estimate if value is None else value
        row[f"{column}_boot_low"], row[f"{column}_boot_high"] = interval.low, interval.high

    if len(scores.intersection):
        put(f"miou{suffix}", stats.bootstrap_miou(scores.intersection, scores.union, n_boot=n_boot, seed=seed))
        put(f"accuracy{suffix}", stats.bootstrap_ratio(scores.correct, np.maximum(scores.scored, 1),
                                                       n_boot=n_boot, seed=seed))
    if reference is not None:
        mine, theirs = scores.statistics(), reference.statistics()
        for name in scores.features:
            if name in fixed:
                row[name] = metrics.stats_distance(mine[name], fixed[name], name, extractors[name][2])
                row[f"{name}_boot_low"] = row[f"{name}_boot_high"] = float("nan")
                continue
            value = metrics.stats_distance(mine[name], theirs[name], name, extractors[name][2])
            put(name, stats.bootstrap_frechet(scores.features[name], reference.features[name], n_boot=n_boot,
                                              seed=seed), value)
    return row


def resolution_stages(probe_stats) -> dict[str, list[str]]:
    """{'HxW': [layer names]} of the modulation layers captured in ``probe_stats``, coarse first."""
    stages: dict[tuple, list[str]] = {}
    for name, layer in probe_stats.layers.items():
        stages.setdefault(tuple(layer.resolution), []).append(name)
    return {f"{h}x{w}": names for (h, w), names in sorted(stages.items())}


def ablated_images(generator, samples: dict, probe_stats, layers, batch_size: int, device) -> torch.Tensor:
    """Images of the reference ``generator`` with the scale / shift of ``layers`` (None: all)
    replaced by their per-class means from ``probe_stats`` (``analysis.probe.ablation.ablate``); ICPE maps
    as ``prepare_inputs`` gives them (the samples', else computed in the generator's mode)."""
    out = []
    with torch.no_grad(), ablate(generator, probe_stats, layers, kind="class_mean"):
        for i in range(0, len(samples["label"]), batch_size):
            part = {k: v[i:i + batch_size] for k, v in samples.items()}
            semantic, dist = prepare_inputs(part, generator.config, device)
            out.append(generator(semantic, dist=dist if norm_spec(generator.config.norm).needs_icpe else None)
                       .clamp(-1, 1).cpu())
    return torch.cat(out)


def expected_images(paths, size) -> torch.Tensor | None:
    """The law's E[image | layout] ([N, 3, H, W], ``data.synthetic.expected_image``) of built-in scenes
    given their sample paths; None when any path is not a built-in scene (a real dataset has
    no known answer)."""
    found = [SYNTHETIC_PATH.match(str(p)) for p in paths]
    if not found or not all(found):
        return None
    return torch.stack([torch.from_numpy(expected_image(int(m[2]), seed=int(m[1]), size=size)) for m in found])


def known_answer_energies(images, expected, instance) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{column: (error energy, expected energy)} per image ([N] each) of every known-answer metric;
    the metric is the ratio of their sums."""
    out = {}
    for column, score in KNOWN_ANSWER_METRICS.items():
        table = score(images, expected, instance).per_instance.groupby("image")[["error_energy", "expected_energy"]].sum()
        table = table.reindex(range(len(images)), fill_value=0.0)       # images without a scored instance
        out[column] = (table.error_energy.to_numpy(float), table.expected_energy.to_numpy(float))
    return out


def known_answer_row(energies: dict, *, n_boot: int = stats.N_BOOT, seed: int = 0) -> dict:
    """Known-answer columns with their ``_boot_low`` / ``_boot_high`` over images."""
    row = {}
    for column, (error, expected) in energies.items():
        interval = stats.bounded(stats.bootstrap_ratio(error, expected, n_boot=n_boot, seed=seed), (0.0, np.inf))
        row[column], row[f"{column}_boot_low"], row[f"{column}_boot_high"] = interval.estimate, interval.low, interval.high
    return row
