"""Uncertainty for every number the report compares: seeds, evaluation images, timings.

    seed_interval([0.31, 0.29, 0.33])                 # mean with a Student-t 95 % interval
    bootstrap_mean(per_image_accuracy)                # percentile bootstrap over images
    bootstrap_frechet(fake_features, real_features)   # set-level metric, images resampled
    hierarchical_bootstrap(per_seed_per_image)        # seeds and images resampled together
    d = difference(clade_fd, spade_fd, log=True)      # a - b (here a log ratio), its se and df
    p_equivalent(d, margin), p_no_worse(d, margin, lower_is_better=True), p_better(d, ...)
    holm([p1, p2, ...])                               # family-wise adjusted p-values
    ties(summary, "fd_proxy_features")                # tie groups for the ROI table
    timing_reliability(repeats_ms, ref_before, ref_after)

Two sources of noise, kept apart and then combined:

- **Seeds** (training noise): the same method trained with different seeds gives different
  models. Intervals over seeds use Student's t (``n - 1`` degrees of freedom), the honest
  choice for 3-10 seeds. One seed has no spread: its interval is NaN and flagged "1 seed",
  never a zero width.
- **Evaluation images** (test-set noise): one model scored on another sample of images gives
  another number. Percentile bootstrap: resample the images with replacement ``n_boot`` times,
  recompute the metric, take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.
  Default 200 resamples: a 95 % end point then rests on about 5 resamples and moves by about
  +-1 percentile of the bootstrap distribution with the bootstrap's seed, fine for an interval
  in a report (not for a p-value), and cheap. Seeded (``numpy.random.default_rng(seed)``), so
  a report regenerates the same interval.

Comparisons test what a claim says: "equivalent" is a TOST (two one-sided tests) against a
stated margin, "no worse" a non-inferiority test, "better" a superiority test; a difference
that no test decides is "not shown", never support. Differences between methods combine the
seeds' spread with the image bootstrap's (:func:`difference`); an ablation is paired by seed.
Several claims in one report are corrected together with :func:`holm`. The real-vs-real
Frechet distance is the metric's floor at that image count (an estimator bias), reported, not a
threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats
from scipy.sparse.csgraph import connected_components

N_BOOT = 200
LEVEL = 0.95
# Benchmark reliability thresholds: (p90 - p10) / median of the repeats, and the relative
# change of a reference kernel's time between before and after the benchmark. On the quiet
# 2-core machine the example report's repeats lay within about 2 % of their median and repeated runs
# within about 15 % of each other (README); under contention CLADE once timed 2.4x *slower*
# than SPADE (quiet: 2.8x faster). Limits just above the quiet figures flag the latter.
MAX_SPREAD = 0.20
MAX_DRIFT = 0.15


@dataclass(frozen=True)
class Interval:
    """A point estimate with an interval; ``low``/``high`` are NaN when none can be given."""
    estimate: float
    low: float
    high: float
    n: int            # seeds or images behind the interval
    method: str       # "student-t over seeds", "percentile bootstrap over images (200 resamples)", ...
    level: float = LEVEL
    note: str = ""    # e.g. "1 seed: no interval"

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def contains(self, value: float) -> bool:
        return self.has_interval and self.low <= value <= self.high

    def text(self, fmt: str = "{:.4g}") -> str:
        """'0.31 [0.29, 0.33]' or '0.31 (1 seed: no interval)'."""
        if not self.has_interval:
            return f"{fmt.format(self.estimate)} ({self.note or 'no interval'})"
        return f"{fmt.format(self.estimate)} [{fmt.format(self.low)}, {fmt.format(self.high)}]"


def _values(values, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ValueError(f"{what}: got no values")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: got non-finite values {array.tolist()}; drop failed runs before summarizing")
    return array


def _t_interval(mean: float, se: float, df: float, level: float) -> tuple[float, float]:
    if se == 0:
        return mean, mean
    half = float(scipy_stats.t.ppf((1 + level) / 2, df)) * se
    return mean - half, mean + half


def seed_interval(values: Sequence[float], *, level: float = LEVEL) -> Interval:
    """Mean over seeds with a Student-t interval; one seed gives NaN bounds and the note '1 seed'."""
    x = _values(values, "seed_interval")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, np.nan, np.nan, 1, "student-t over seeds", level, "1 seed: no interval")
    low, high = _t_interval(mean, float(x.std(ddof=1) / np.sqrt(x.size)), x.size - 1, level)
    return Interval(mean, low, high, int(x.size), "student-t over seeds", level)


# ----------------------------------------------------------------------------------------
# Bootstrap over evaluation images

def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] multiplicities of each image in each resample (rows sum to n)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], index), 1.0)
    return counts


def _percentile(estimate: float, boots: np.ndarray, n: int, n_boot: int, level: float, what: str, *,
                bias_corrected: bool = False) -> Interval:
    """Percentile interval of ``boots``; ``bias_corrected`` shifts it by ``estimate - mean(boots)``
    (the bootstrap's own bias estimate), for metrics that resampling itself inflates."""
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    method = f"percentile bootstrap over {what} ({n_boot} resamples)"
    if bias_corrected:
        shift = float(estimate - boots.mean())
        low, high, method = low + shift, high + shift, f"bias-shifted {method}"
    return Interval(float(estimate), float(low), float(high), n, method, level)


def _check_boot(n: int, n_boot: int, what: str) -> None:
    if n < 2:
        raise ValueError(f"{what}: a bootstrap needs at least 2 images, got {n}")
    if n_boot < 10:
        raise ValueError(f"{what}: n_boot={n_boot}; use at least 10 resamples (default {N_BOOT})")


def bootstrap_mean(values: Sequence[float], *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean of a per-image metric (vectorised)."""
    x = _values(values, "bootstrap_mean")
    _check_boot(x.size, n_boot, "bootstrap_mean")
    boots = _resample_counts(x.size, n_boot, seed) @ x / x.size
    return _percentile(x.mean(), boots, x.size, n_boot, level, "images")


def bootstrap_ratio(numerator: Sequence[float], denominator: Sequence[float], *, n_boot: int = N_BOOT,
                    level: float = LEVEL, seed: int = 0) -> Interval:
    """Bootstrap of ``sum(numerator) / sum(denominator)`` over images, e.g. pixel accuracy
    from per-image correct and total pixel counts."""
    num, den = _values(numerator, "bootstrap_ratio numerator"), _values(denominator, "bootstrap_ratio denominator")
    if num.shape != den.shape:
        raise ValueError(f"bootstrap_ratio: numerator has {num.size} images, denominator {den.size}")
    _check_boot(num.size, n_boot, "bootstrap_ratio")
    counts = _resample_counts(num.size, n_boot, seed)
    return _percentile(num.sum() / den.sum(), (counts @ num) / (counts @ den), num.size, n_boot, level, "images")


def bootstrap_miou(intersection, union, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Bootstrap of the mean IoU from per-image, per-class intersection and union pixel counts
    ([images, classes]; union = prediction + target - intersection, additive over images).
    As ``analysis.quality.segmenters.segmentation_scores``: classes with no pixel are left out."""
    inter, uni = np.asarray(intersection, dtype=float), np.asarray(union, dtype=float)
    if inter.ndim != 2 or inter.shape != uni.shape:
        raise ValueError(f"bootstrap_miou: expected two [images, classes] arrays of one shape, "
                         f"got {inter.shape} and {uni.shape}")
    _check_boot(len(inter), n_boot, "bootstrap_miou")

    def miou(i: np.ndarray, u: np.ndarray) -> np.ndarray:
        iou = np.divide(i, u, out=np.full_like(i, np.nan), where=u > 0)
        return np.nanmean(iou, axis=-1)

    counts = _resample_counts(len(inter), n_boot, seed)
    return _percentile(float(miou(inter.sum(0), uni.sum(0))), miou(counts @ inter, counts @ uni),
                       len(inter), n_boot, level, "images")


def bootstrap_statistic(statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int = N_BOOT,
                        level: float = LEVEL, seed: int = 0, bias_corrected: bool = False) -> Interval:
    """Bootstrap of any set-level metric: ``statistic(indices)`` recomputes it on the images at
    ``indices`` (a resample with repeats). One call per resample: use the vectorised helpers
    when one fits. The estimate is ``statistic(arange(n))``; ``bias_corrected`` as in
    :func:`bootstrap_frechet`, for metrics that repeated images inflate."""
    _check_boot(n, n_boot, "bootstrap_statistic")
    rng = np.random.default_rng(seed)
    boots = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)], dtype=float)
    return _percentile(statistic(np.arange(n)), boots, n, n_boot, level, "images", bias_corrected=bias_corrected)


def _frechet_resampled(xa: torch.Tensor, xb: torch.Tensor, cross: torch.Tensor, wa: torch.Tensor,
                       wb: torch.Tensor) -> torch.Tensor:
    """Frechet distances of the feature sets ``xa`` [Na, D], ``xb`` [Nb, D] under integer resample
    weights ``wa`` [B, Na], ``wb`` [B, Nb] (unbiased covariances, as np.cov), ``cross = xa @ xb.T``.

    ``tr sqrtm(S_a S_b)`` is the nuclear norm of ``A B^T`` where ``S_a = A^T A`` (A: the weighted,
    centred rows over sqrt(n - 1)), an [Na, Nb] matrix: no D x D matrix is formed, so the cost
    is that of the images, not of the feature width (2048 for Inception).
    """
    na, nb = wa.sum(1), wb.sum(1)
    mean_a, mean_b = wa @ xa / na[:, None], wb @ xb / nb[:, None]
    row = wa @ cross / na[:, None]                 # mean_a . y_j        [B, Nb]
    col = wb @ cross.T / nb[:, None]               # x_i . mean_b        [B, Na]
    both = (mean_a * mean_b).sum(-1)               # mean_a . mean_b     [B]
    centred = cross[None] - row[:, None, :] - col[:, :, None] + both[:, None, None]
    scaled = wa.sqrt()[:, :, None] * centred * wb.sqrt()[:, None, :] / ((na - 1) * (nb - 1)).sqrt()[:, None, None]
    trace_a = (wa @ (xa * xa).sum(1) - na * (mean_a * mean_a).sum(1)) / (na - 1)
    trace_b = (wb @ (xb * xb).sum(1) - nb * (mean_b * mean_b).sum(1)) / (nb - 1)
    nuclear = torch.linalg.svdvals(scaled).sum(-1)
    return ((mean_a - mean_b) ** 2).sum(-1) + trace_a + trace_b - 2 * nuclear


def bootstrap_frechet(features_a, features_b, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
                      device="cpu", memory_mb: int = 256) -> Interval:
    """Bootstrap of the Frechet distance between two feature sets ([N, D] each, e.g. generated
    and real images' Inception or proxy features): both sets are resampled independently and
    the distance recomputed (float64 on ``device``, as many resamples at once as fit in about
    ``memory_mb``; one Na x Nb singular-value decomposition per resample, whatever D is).
    Measured on the shared 2-core CPU, 200 resamples: 128 images 5 s (D = 64 or 2048), 500
    images 110 s (cost ~ N^3): use a GPU ``device`` or fewer resamples for large sets.

    Resampling with replacement repeats images, which inflates a Frechet distance (fewer
    distinct samples); the interval is therefore shifted by the bootstrap's bias estimate
    (``Interval.method`` says so): it shows how far the distance moves with another draw of
    as many images, around the value measured. The estimate equals
    ``analysis.quality.metrics.frechet_distance`` of the two sets.
    """
    a = torch.as_tensor(np.asarray(features_a), dtype=torch.float64, device=device)
    b = torch.as_tensor(np.asarray(features_b), dtype=torch.float64, device=device)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"bootstrap_frechet: expected [N, D] feature arrays with equal D, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    _check_boot(min(len(a), len(b)), n_boot, "bootstrap_frechet")
    cross = a @ b.T
    weights_a = torch.as_tensor(_resample_counts(len(a), n_boot, seed), device=device)
    weights_b = torch.as_tensor(_resample_counts(len(b), n_boot, seed + 1), device=device)
    chunk = max(1, memory_mb * 2 ** 20 // (8 * 3 * len(a) * len(b)))   # a few [Na, Nb] temporaries each
    boots = torch.cat([_frechet_resampled(a, b, cross, weights_a[i:i + chunk], weights_b[i:i + chunk])
                       for i in range(0, n_boot, chunk)])
    ones = lambda x: torch.ones(1, len(x), dtype=torch.float64, device=device)
    full = _frechet_resampled(a, b, cross, ones(a), ones(b))
    return _percentile(float(full[0]), boots.cpu().numpy(), min(len(a), len(b)), n_boot, level, "images",
                       bias_corrected=True)


# ----------------------------------------------------------------------------------------
# Comparisons between methods: differences, equivalence, non-inferiority, Holm

ALPHA = 0.05
SHOWN_EQUIVALENT, SHOWN_NO_WORSE, SHOWN_BETTER, NOT_SHOWN = ("shown equivalent", "shown no worse", "shown better",
                                                             "not shown")


@dataclass(frozen=True)
class Difference:
    """``a - b`` of one metric on the compared scale (a difference, or a difference of logs: a log
    ratio), with the standard error and degrees of freedom its tests use; ``se`` is NaN when a
    side has one seed (no spread to judge the difference by)."""
    estimate: float
    se: float
    df: float
    n_a: int
    n_b: int
    scale: str        # "difference" or "log ratio"
    method: str       # how ``se`` was formed, in words

    @property
    def decidable(self) -> bool:
        return bool(np.isfinite(self.se))

    def interval(self, level: float = LEVEL) -> Interval:
        """Two-sided t interval of the difference (NaN bounds when not decidable)."""
        if not self.decidable:
            return Interval(self.estimate, np.nan, np.nan, min(self.n_a, self.n_b), self.method, level,
                            "1 seed: no interval")
        low, high = _t_interval(self.estimate, self.se, self.df, level)
        return Interval(self.estimate, low, high, min(self.n_a, self.n_b), self.method, level)

    def p_above(self, threshold: float) -> float:
        """One-sided p-value of H0: difference <= ``threshold`` (small: the difference is above it)."""
        return float(scipy_stats.t.sf(self._t(threshold), self.df)) if self.decidable else np.nan

    def p_below(self, threshold: float) -> float:
        """One-sided p-value of H0: difference >= ``threshold`` (small: the difference is below it)."""
        return float(scipy_stats.t.cdf(self._t(threshold), self.df)) if self.decidable else np.nan

    def _t(self, threshold: float) -> float:
        distance = self.estimate - threshold
        if self.se > 0:
            return distance / self.se
        return 0.0 if distance == 0 else float(np.sign(distance)) * np.inf   # no spread: the sign decides


def _scaled(values, what: str, log: bool) -> np.ndarray:
    x = _values(values, what)
    if log:
        if (x <= 0).any():
            raise ValueError(f"{what}: a log-ratio comparison needs values > 0, got {x.tolist()}")
        return np.log(x)
    return x


def difference(a: Sequence[float], b: Sequence[float], *, paired: bool = False, log: bool = False,
               image_se: tuple[float, float] = (0.0, 0.0)) -> Difference:
    """``a - b`` from the per-seed values of one metric (``log``: of their logs, a log ratio).

    Unpaired (two methods): Welch's t over seeds. ``paired`` (one model measured two ways, e.g.
    with and without an ablation; ``a[i]`` and ``b[i]`` share seed i): a t over the per-seed
    differences. ``image_se`` adds each side's standard error over the evaluation images (the
    image bootstrap) to the seeds' one, as a hierarchical bootstrap over seeds and images would:
    the images are shared by every seed, so that error does not shrink with more seeds, and it
    is counted as independent between the two sides (conservative: the same images correlate
    them). Degrees of freedom by Welch-Satterthwaite, the image part counting as known.
    """
    x, y = _scaled(a, "difference a", log), _scaled(b, "difference b", log)
    image_var = float(np.square(image_se).sum())
    scale = "log ratio" if log else "difference"
    if not np.isfinite(image_var):
        raise ValueError(f"difference: image_se={image_se}; expected finite standard errors (0 when unknown)")
    if paired:
        if x.size != y.size:
            raise ValueError(f"difference(paired=True): a has {x.size} seeds, b has {y.size}; pair them seed by seed")
        d = x - y
        estimate, parts = float(d.mean()), ([d.var(ddof=1) / d.size] if d.size > 1 else [np.nan], [d.size - 1])
        method = "paired t over seeds"
    else:
        estimate = float(x.mean() - y.mean())
        parts = ([v.var(ddof=1) / v.size if v.size > 1 else np.nan for v in (x, y)], [x.size - 1, y.size - 1])
        method = "welch t over seeds"
    seed_vars, seed_dfs = parts
    variance = float(sum(seed_vars)) + image_var
    if image_var:
        method += " + image bootstrap"
    if not np.isfinite(variance):
        return Difference(estimate, np.nan, np.nan, int(x.size), int(y.size), scale, method)
    terms = sum(v ** 2 / df for v, df in zip(seed_vars, seed_dfs) if v > 0)
    df = variance ** 2 / terms if terms > 0 else np.inf
    return Difference(estimate, float(np.sqrt(variance)), float(df), int(x.size), int(y.size), scale, method)


def p_equivalent(diff: Difference, margin: float) -> float:
    """TOST p-value of H0: |difference| >= ``margin`` (small: shown equivalent within the margin)."""
    _check_margin(margin)
    return max(diff.p_above(-margin), diff.p_below(margin))


def p_no_worse(diff: Difference, margin: float, *, lower_is_better: bool) -> float:
    """Non-inferiority p-value of H0: ``a`` is worse than ``b`` by ``margin`` or more."""
    _check_margin(margin)
    return diff.p_below(margin) if lower_is_better else diff.p_above(-margin)


def p_better(diff: Difference, *, lower_is_better: bool) -> float:
    """Superiority p-value of H0: ``a`` is no better than ``b``."""
    return diff.p_below(0.0) if lower_is_better else diff.p_above(0.0)


def p_worse_beyond(diff: Difference, margin: float, *, lower_is_better: bool) -> float:
    """p-value of H0: ``a`` is not worse than ``b`` by more than ``margin`` (small: ``a`` is worse by
    more than the margin; ``margin`` 0: simply worse)."""
    return diff.p_above(margin) if lower_is_better else diff.p_below(-margin)


def verdict(p_value: float, shown: str, alpha: float = ALPHA) -> str:
    """``shown`` (e.g. :data:`SHOWN_EQUIVALENT`) when the (adjusted) ``p_value`` is at most
    ``alpha``, else :data:`NOT_SHOWN` (also for NaN: nothing to decide with)."""
    return shown if np.isfinite(p_value) and p_value <= alpha else NOT_SHOWN


def _check_margin(margin: float) -> None:
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin={margin}; an equivalence or non-inferiority margin must be finite and > 0")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries are no test
    and stay NaN. Reject where the adjusted p-value is <= alpha."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    if tested.size == 0:
        return adjusted
    order = tested[np.argsort(p[tested], kind="stable")]
    m = tested.size
    steps = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def bounded(interval: Interval, bounds: tuple[float, float]) -> Interval:
    """``interval`` with its ends clipped to the metric's ``bounds`` (mIoU in [0, 1], a distance
    >= 0): a t interval knows nothing of them."""
    low, high = bounds
    if not interval.has_interval:
        return interval
    clipped = (float(np.clip(interval.low, low, high)), float(np.clip(interval.high, low, high)))
    if clipped == (interval.low, interval.high):
        return interval
    return Interval(interval.estimate, *clipped, interval.n, f"{interval.method}, clipped to [{low:g}, {high:g}]",
                    interval.level, interval.note)


def hierarchical_bootstrap(numerator, denominator=None, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0,
                           bounds: tuple[float, float] = (-np.inf, np.inf)) -> Interval:
    """Interval of a per-image metric over seeds and images together: each resample draws the
    seeds with replacement, then the images (the same image indices for every seed: they were
    scored on the same images), and recomputes ``sum(numerator) / sum(denominator)`` over the
    drawn (seed, image) cells, or the mean without ``denominator``. ``numerator`` (and
    ``denominator``): [seeds, images] arrays, one row per seed. One seed: images only."""
    num = np.asarray(numerator, dtype=float)
    den = np.ones_like(num) if denominator is None else np.asarray(denominator, dtype=float)
    if num.ndim != 2 or num.shape != den.shape or not (np.isfinite(num).all() and np.isfinite(den).all()):
        raise ValueError(f"hierarchical_bootstrap: expected finite [seeds, images] arrays of one shape, got "
                         f"{num.shape} and {den.shape}")
    seeds_n, images_n = num.shape
    _check_boot(images_n, n_boot, "hierarchical_bootstrap")
    seeds = np.random.default_rng(seed).integers(0, seeds_n, size=(n_boot, seeds_n))
    images = _resample_counts(images_n, n_boot, seed + 1)              # [n_boot, images] multiplicities
    per_seed_num, per_seed_den = images @ num.T, images @ den.T        # [n_boot, seeds] on each image resample
    boots = (np.take_along_axis(per_seed_num, seeds, 1).sum(1) / np.take_along_axis(per_seed_den, seeds, 1).sum(1))
    what = f"{seeds_n} seed(s) x {images_n} images"
    return bounded(_percentile(float(num.sum() / den.sum()), boots, seeds_n, n_boot, level, what), bounds)


def seed_summary(per_seed: pd.DataFrame, metrics: Sequence[str], *, by: Sequence[str] = ("method",),
                 level: float = LEVEL, bounds: dict | None = None) -> pd.DataFrame:
    """One row per group of ``by``: ``n_seeds`` and ``<metric>_mean``, ``<metric>_ci_low``,
    ``<metric>_ci_high`` (Student t over the group's rows, clipped to ``bounds[metric]`` when
    given, e.g. (0, 1) for mIoU; NaN bounds for one seed)."""
    missing = [c for c in (*by, *metrics) if c not in per_seed]
    if missing:
        raise ValueError(f"seed_summary: columns {missing} not in the table (has {list(per_seed.columns)})")
    rows = []
    for key, group in per_seed.groupby(list(by), sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = len(group)
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce").dropna()
            if values.empty:
                row.update({f"{metric}_mean": np.nan, f"{metric}_ci_low": np.nan, f"{metric}_ci_high": np.nan})
                continue
            interval = seed_interval(values, level=level)
            if bounds and metric in bounds:
                interval = bounded(interval, bounds[metric])
            row.update({f"{metric}_mean": interval.estimate, f"{metric}_ci_low": interval.low,
                        f"{metric}_ci_high": interval.high})
        rows.append(row)
    return pd.DataFrame(rows)


def ties(table: pd.DataFrame, metric: str) -> pd.Series:
    """Tie group (1, 2, ... in order of the mean) of each row of a :func:`seed_summary` table.

    Two rows tie when their intervals overlap or when either has no interval (one seed: nothing
    separates it); groups are the
    connected components of that relation, so a chain A~B~C is one group and a group never
    hides a tie. Rows sharing a group must not be ranked against each other.
    """
    columns = [f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"]
    missing = [c for c in columns if c not in table]
    if missing:
        raise ValueError(f"ties: columns {missing} not in the table; make it with seed_summary(..., [{metric!r}])")
    mean, low, high = (table[c].to_numpy(dtype=float) for c in columns)
    no_interval = ~(np.isfinite(low) & np.isfinite(high))
    tied = ((low[:, None] <= high[None, :]) & (low[None, :] <= high[:, None])
            | no_interval[:, None] | no_interval[None, :])
    _, component = connected_components(tied, directed=False)
    first_mean = pd.Series(mean).groupby(component).min()
    rank = {c: r for r, c in enumerate(first_mean.sort_values(kind="stable").index, start=1)}
    groups = [rank[c] for c in component]
    return pd.Series(groups, index=table.index, name=f"{metric}_tie_group")


# ----------------------------------------------------------------------------------------
# Benchmark reliability

@dataclass(frozen=True)
class TimingReliability:
    reliable: bool
    spread: float     # (p90 - p10) / median of the repeats
    drift: float      # |after - before| / before of the reference kernel
    reason: str       # empty when reliable


def timing_reliability(repeats_ms: Sequence[float], reference_before_ms, reference_after_ms, *,
                       max_spread: float = MAX_SPREAD, max_drift: float = MAX_DRIFT) -> TimingReliability:
    """Is a benchmark's timing trustworthy? Unreliable when the repeats spread by more than
    ``max_spread`` ((p90 - p10) / median), when a reference kernel timed before and after the
    benchmark (a scalar or its repeats; medians compared) drifted by more than ``max_drift``,
    or when fewer than 3 repeats leave the spread unmeasured. ``reason`` says which, in words."""
    times = _values(repeats_ms, "timing_reliability repeats_ms")
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return summary_reliability(p10, median, p90, times.size, reference_before_ms, reference_after_ms,
                               max_spread=max_spread, max_drift=max_drift)


def summary_reliability(p10_ms: float, median_ms: float, p90_ms: float, n: int, reference_before_ms,
                        reference_after_ms, *, max_spread: float = MAX_SPREAD,
                        max_drift: float = MAX_DRIFT) -> TimingReliability:
    """:func:`timing_reliability` from a row's summary (p10, median, p90 of ``n`` repeats), as the
    benchmark tables store it."""
    before = float(np.median(_values(reference_before_ms, "timing_reliability reference_before_ms")))
    after = float(np.median(_values(reference_after_ms, "timing_reliability reference_after_ms")))
    if before <= 0 or after <= 0:
        raise ValueError(f"timing_reliability: reference times must be > 0 ms, got {before} and {after}")
    spread = float((p90_ms - p10_ms) / median_ms) if n >= 3 else np.nan
    drift = abs(after - before) / before
    reasons = []
    if n < 3:
        reasons.append(f"only {n} repeat(s): spread not measurable (need >= 3)")
    elif spread > max_spread:
        reasons.append(f"repeats spread by {spread:.0%} ((p90-p10)/median; limit {max_spread:.0%})")
    if drift > max_drift:
        reasons.append(f"reference kernel drifted by {drift:.0%} ({before:.3g} ms before, {after:.3g} ms after; "
                       f"limit {max_drift:.0%}): the machine's load changed during the benchmark")
    return TimingReliability(not reasons, spread, drift, "; ".join(reasons))
