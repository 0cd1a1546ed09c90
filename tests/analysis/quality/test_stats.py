"""Seed intervals, image bootstraps, comparisons, tie groups and timing reliability."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from analysis.quality import stats
from analysis.quality.metrics import frechet_distance


def test_seed_interval_is_the_student_t_interval():
    values = [0.31, 0.29, 0.33, 0.30]
    interval = stats.seed_interval(values)
    x = np.array(values)
    half = scipy_stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2
    assert interval.estimate == pytest.approx(x.mean())
    assert (interval.low, interval.high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert interval.n == 4 and interval.has_interval


def test_one_seed_has_no_interval_never_a_zero_width():
    interval = stats.seed_interval([0.3])
    assert np.isnan(interval.low) and np.isnan(interval.high)
    assert not interval.has_interval and "1 seed" in interval.note
    assert "1 seed" in interval.text()


def test_non_finite_values_are_rejected_with_the_values():
    with pytest.raises(ValueError, match="non-finite"):
        stats.seed_interval([0.3, float("nan")])


def test_bootstrap_mean_covers_the_true_mean_at_about_the_stated_level():
    rng = np.random.default_rng(1)
    covered = 0
    trials = 200
    for trial in range(trials):
        sample = rng.normal(5.0, 2.0, size=60)
        covered += stats.bootstrap_mean(sample, n_boot=200, seed=trial).contains(5.0)
    # percentile bootstrap of a mean, n=60: close to nominal; 200 trials give +-3 % binomial noise
    assert 0.87 <= covered / trials <= 0.99


def test_bootstrap_is_seeded_and_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    small, large = rng.exponential(size=30), rng.exponential(size=3000)
    a, b = stats.bootstrap_mean(small, seed=3), stats.bootstrap_mean(small, seed=3)
    assert (a.low, a.high) == (b.low, b.high)
    wide, narrow = stats.bootstrap_mean(small), stats.bootstrap_mean(large)
    assert narrow.high - narrow.low < (wide.high - wide.low) / 4
    assert wide.low < wide.estimate < wide.high


def test_bootstrap_ratio_and_miou_point_estimates_are_the_pooled_scores():
    correct, total = np.array([90.0, 50.0, 70.0]), np.array([100.0, 100.0, 100.0])
    assert stats.bootstrap_ratio(correct, total).estimate == pytest.approx(210 / 300)
    inter = np.array([[10.0, 0.0], [5.0, 2.0], [0.0, 0.0]])
    union = np.array([[20.0, 0.0], [5.0, 4.0], [1.0, 0.0]])
    miou = stats.bootstrap_miou(inter, union)
    assert miou.estimate == pytest.approx(np.mean([15 / 26, 2 / 4]))
    assert 0 <= miou.low <= miou.high <= 1


def test_bootstrap_frechet_agrees_with_the_metrics_module_on_every_resample():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 40)), rng.normal(0.5, 1.3, size=(25, 40))   # fewer images than dims
    fd = lambda x, y: frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    interval = stats.bootstrap_frechet(a, b, n_boot=20, memory_mb=1)       # several chunks
    assert interval.estimate == pytest.approx(fd(a, b), rel=1e-6)
    # the same resamples, recomputed one by one with scipy's sqrtm
    ia = np.random.default_rng(0).integers(0, 30, size=(20, 30))
    ib = np.random.default_rng(1).integers(0, 25, size=(20, 25))
    boots = np.array([fd(a[i], b[j]) for i, j in zip(ia, ib)])
    low, high = np.quantile(boots, [0.025, 0.975]) + (fd(a, b) - boots.mean())
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-6)
    assert "bias-shifted" in interval.method


def test_bootstrap_frechet_is_centred_on_the_measured_distance():
    # same distribution, few images: resampling inflates the distance, the shift undoes it
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(128, 64)), rng.normal(size=(128, 64))
    interval = stats.bootstrap_frechet(a, b, n_boot=100)
    assert interval.low < interval.estimate < interval.high


def test_generic_bootstrap_recomputes_a_set_metric_on_resampled_images():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    mu_b, cov_b = b.mean(0), np.cov(b, rowvar=False)
    loop = stats.bootstrap_statistic(
        lambda idx: frechet_distance(a[idx].mean(0), np.cov(a[idx], rowvar=False), mu_b, cov_b), 40, n_boot=30)
    assert loop.estimate == pytest.approx(frechet_distance(a.mean(0), np.cov(a, rowvar=False), mu_b, cov_b))
    assert loop.low < loop.estimate < loop.high and loop.n == 40


def test_identical_generators_per_seed_values_are_a_tie():
    values = [0.52, 0.48, 0.50]
    result = stats.compare(values, list(values), noise_floor=0.1)
    assert result.verdict == "tie" and result.difference.estimate == 0


def test_a_difference_inside_its_interval_is_a_tie_not_a_win():
    a, b = [0.30, 0.50, 0.40], [0.35, 0.55, 0.30]      # means 0.40 vs 0.40 +- large seed spread
    assert stats.compare(a, b).verdict == "tie"
    a2 = [0.31, 0.52, 0.44]                            # mean 0.423 > 0.40 but well inside the spread
    result = stats.compare(a2, b)
    assert result.difference.contains(0.0) and result.verdict == "tie"


def test_a_clear_difference_is_lower_or_higher_unless_inside_the_noise_floor():
    a, b = [1.00, 1.02, 0.98], [2.00, 2.03, 1.97]
    assert stats.compare(a, b).verdict == "lower"
    assert stats.compare(b, a).verdict == "higher"
    assert stats.compare(a, b, noise_floor=1.5).verdict == "tie"


def test_one_seed_outside_the_noise_floor_is_undetermined():
    result = stats.compare([1.0], [2.0], noise_floor=0.1)
    assert result.verdict == "undetermined" and "1 seed" in result.reason
    assert stats.compare([1.0], [1.05], noise_floor=0.1).verdict == "tie"


def test_paired_comparison_uses_per_seed_differences():
    full = [0.50, 0.60, 0.70]
    ablated = [0.52, 0.62, 0.72]                       # +0.02 on every seed: clear when paired
    assert stats.compare(ablated, full, paired=True).verdict == "higher"
    assert stats.compare(ablated, full).verdict == "tie"
    with pytest.raises(ValueError, match="pair them"):
        stats.compare([1.0, 2.0], [1.0], paired=True)


def test_seed_summary_and_ties_group_overlapping_methods():
    per_seed = pd.DataFrame({
        "method": ["A"] * 3 + ["B"] * 3 + ["C"] * 3 + ["D"],
        "fd": [1.0, 1.1, 0.9, 1.05, 1.15, 0.95, 3.0, 3.1, 2.9, 5.0],
    })
    summary = stats.seed_summary(per_seed, ["fd"])
    assert summary.n_seeds.tolist() == [3, 3, 3, 1]
    assert np.isnan(summary.fd_ci_low.iloc[3])
    # D has one seed: nothing separates it from anyone, so all four tie
    assert set(stats.ties(summary, "fd")) == {1}
    groups = stats.ties(summary.iloc[:3], "fd")
    assert groups.tolist() == [1, 1, 2]
    assert stats.ties(summary.iloc[:3], "fd", noise_floor=2.5).tolist() == [1, 1, 1]


def test_ties_join_chains_of_overlaps():
    table = pd.DataFrame({"m_mean": [1.0, 2.0, 3.0], "m_ci_low": [0.9, 1.9, 0.5], "m_ci_high": [1.1, 2.1, 5.0]})
    assert stats.ties(table, "m").tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="seed_summary"):
        stats.ties(table, "other")


def test_timing_reliability_flags_spread_and_drift_with_reasons():
    quiet = stats.timing_reliability([100, 101, 99, 100, 102], 10.0, 10.2)
    assert quiet.reliable and quiet.reason == "" and quiet.spread < 0.05
    noisy = stats.timing_reliability([100, 180, 95, 260, 120], 10.0, 10.0)
    assert not noisy.reliable and "spread" in noisy.reason
    drift = stats.timing_reliability([100, 101, 99], [10.0, 10.1], [14.0, 14.2])
    assert not drift.reliable and "drifted" in drift.reason and drift.drift == pytest.approx(0.4, rel=0.02)
    few = stats.timing_reliability([100, 101], 10.0, 10.0)
    assert not few.reliable and "repeat" in few.reason
