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


# ----------------------------------------------------------------------------------------
# Differences, equivalence, non-inferiority, Holm

MARGINS = (1e-9, 1e-3, 0.05, 1.0)


@pytest.mark.parametrize("paired", [True, False])
def test_two_identical_generators_are_shown_equivalent_for_any_margin_and_never_better(paired):
    # identical samples: the same per-seed values on both sides (paired: same seeds; unpaired:
    # every seed of both gave the same value)
    values = [0.52, 0.48, 0.50] if paired else [0.5, 0.5, 0.5]
    d = stats.difference(values, list(values), paired=paired)
    assert d.estimate == 0 and d.se == 0
    for margin in MARGINS:
        assert stats.verdict(stats.p_equivalent(d, margin), stats.SHOWN_EQUIVALENT) == stats.SHOWN_EQUIVALENT
        assert stats.p_no_worse(d, margin, lower_is_better=True) == 0
    for lower in (True, False):
        assert stats.verdict(stats.p_better(d, lower_is_better=lower), stats.SHOWN_BETTER) == stats.NOT_SHOWN
        assert stats.p_better(d, lower_is_better=lower) == 0.5


def test_identical_generators_with_seed_spread_are_never_better_whatever_the_scale():
    rng = np.random.default_rng(0)
    for trial in range(20):
        values = rng.lognormal(0, 1, size=3)
        for log in (False, True):
            d = stats.difference(values, values.copy(), log=log)
            assert d.estimate == 0 and d.se > 0
            assert stats.p_better(d, lower_is_better=True) == pytest.approx(0.5)
            assert stats.p_better(d, lower_is_better=False) == pytest.approx(0.5)


def test_a_shifted_sample_of_known_shift_is_found_different_with_the_shift_inside_its_interval():
    rng = np.random.default_rng(1)
    b = rng.normal(1.0, 0.1, size=8)
    a = rng.normal(1.0, 0.1, size=8) + 0.5
    d = stats.difference(a, b)
    interval = d.interval()
    assert interval.contains(0.5) and not interval.contains(0.0)
    assert stats.p_better(d, lower_is_better=False) < 1e-6              # higher is better: a is better
    assert stats.p_worse_beyond(d, 0.0, lower_is_better=True) < 1e-6     # lower is better: a is worse
    assert stats.p_equivalent(d, 0.1) > 0.99                             # a 0.5 shift is not within 0.1
    # a paired shift: tiny next to the seeds' spread, yet exact on every seed
    full = np.array([0.2, 0.5, 0.8])
    shifted = full + [0.049, 0.05, 0.051]
    paired = stats.difference(shifted, full, paired=True)
    assert paired.estimate == pytest.approx(0.05) and paired.df == 2
    assert stats.p_worse_beyond(paired, 0.0, lower_is_better=True) < 0.001
    assert stats.p_better(stats.difference(shifted, full), lower_is_better=False) > 0.4   # unpaired: hidden


def test_welch_and_paired_standard_errors_are_the_textbook_ones():
    a, b = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.5, 3.5, 5.0])
    d = stats.difference(a, b)
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 4
    assert d.se == pytest.approx(np.sqrt(va + vb))
    assert d.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3))
    assert stats.p_better(d, lower_is_better=True) == pytest.approx(
        scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    paired = stats.difference(a, b[:3], paired=True)
    assert stats.p_better(paired, lower_is_better=False) == pytest.approx(
        scipy_stats.ttest_rel(a, b[:3], alternative="greater").pvalue)


def test_tost_is_the_larger_of_two_one_sided_t_tests():
    a, b = np.array([1.00, 1.02, 0.99, 1.01]), np.array([1.00, 0.98, 1.01, 0.99])
    d = stats.difference(a, b)
    lower = scipy_stats.ttest_ind(a + 0.05, b, equal_var=False, alternative="greater").pvalue
    upper = scipy_stats.ttest_ind(a - 0.05, b, equal_var=False, alternative="less").pvalue
    assert stats.p_equivalent(d, 0.05) == pytest.approx(max(lower, upper))
    assert stats.p_equivalent(d, 0.05) < 0.01 and stats.p_equivalent(d, 0.001) > 0.4
    with pytest.raises(ValueError, match="margin=0"):
        stats.p_equivalent(d, 0)


def test_frechet_distances_compare_as_log_ratios():
    clade, spade = [0.11, 0.12, 0.13], [0.65, 1.9, 3.48]   # skewed: every CLADE seed beats every SPADE seed
    assert stats.p_better(stats.difference(clade, spade), lower_is_better=True) > 0.05   # linear Welch: hidden
    d = stats.difference(clade, spade, log=True)
    assert d.scale == "log ratio"
    assert d.estimate == pytest.approx(np.log(clade).mean() - np.log(spade).mean())
    assert stats.p_better(d, lower_is_better=True) == pytest.approx(scipy_stats.ttest_ind(
        np.log(clade), np.log(spade), equal_var=False, alternative="less").pvalue)
    assert stats.p_better(d, lower_is_better=True) < 0.02
    assert np.exp(d.interval().high) < 1                  # the ratio's interval lies below 1
    with pytest.raises(ValueError, match="values > 0"):
        stats.difference([0.0, 1.0], [1.0, 1.0], log=True)


def test_image_noise_widens_a_difference_and_one_seed_decides_nothing():
    a, b = [1.0, 1.1, 0.9], [1.5, 1.6, 1.4]
    seeds_only, both = stats.difference(a, b), stats.difference(a, b, image_se=(0.3, 0.4))
    assert both.se == pytest.approx(np.sqrt(seeds_only.se ** 2 + 0.25))
    assert both.df > seeds_only.df and "image bootstrap" in both.method
    assert stats.p_better(both, lower_is_better=True) > stats.p_better(seeds_only, lower_is_better=True)
    one = stats.difference([1.0], [2.0, 2.1])
    assert not one.decidable and np.isnan(stats.p_better(one, lower_is_better=True))
    assert "1 seed" in one.interval().note
    assert stats.verdict(np.nan, stats.SHOWN_BETTER) == stats.NOT_SHOWN
    with pytest.raises(ValueError, match="pair them"):
        stats.difference([1.0, 2.0], [1.0], paired=True)


def test_holm_matches_the_textbook_example():
    # Holm (1979) step-down: sorted p (0.005, 0.01, 0.03, 0.04) times (4, 3, 2, 1), running maximum
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, np.nan, 0.01]) == pytest.approx([0.5, np.nan, 0.02], nan_ok=True)
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]      # capped at 1
    assert np.isnan(stats.holm([np.nan])).all()


def test_intervals_respect_the_metrics_bounds():
    share = stats.bounded(stats.seed_interval([0.97, 0.99, 0.999]), (0.0, 1.0))
    assert share.high == 1.0 and share.low > 0.9 and "clipped to [0, 1]" in share.method
    distance = stats.bounded(stats.seed_interval([0.01, 0.2, 0.02]), (0.0, np.inf))
    assert distance.low == 0.0
    inside = stats.seed_interval([0.4, 0.5, 0.6])
    assert stats.bounded(inside, (0.0, 1.0)) is inside
    table = stats.seed_summary(pd.DataFrame({"method": "A", "miou": [0.97, 0.99, 0.999]}), ["miou"],
                               bounds={"miou": (0.0, 1.0)})
    assert table.miou_ci_high.iloc[0] == 1.0


def test_hierarchical_bootstrap_resamples_seeds_and_images():
    rng = np.random.default_rng(4)
    images = rng.normal(0, 1, size=200)                      # image effect shared by all seeds
    spread_seeds = np.stack([images + offset for offset in (-1.0, 0.0, 1.0)])
    same_seeds = np.stack([images] * 3)
    wide = stats.hierarchical_bootstrap(spread_seeds, n_boot=400)
    narrow = stats.hierarchical_bootstrap(same_seeds, n_boot=400)
    image_only = stats.bootstrap_mean(images, n_boot=400, seed=1)
    assert wide.estimate == pytest.approx(images.mean()) and wide.n == 3
    # identical seeds: only the images vary, as the plain image bootstrap (same image draws)
    assert (narrow.low, narrow.high) == pytest.approx((image_only.low, image_only.high))
    # seed means -1, 0, +1 around the image mean: resampled seeds add about +-1.1 (95 %)
    assert wide.high - wide.low > 1.5 > 4 * (narrow.high - narrow.low)
    clipped = stats.hierarchical_bootstrap(np.abs(same_seeds) * 1e-3 - 1e-3, bounds=(0.0, np.inf))
    assert clipped.low == 0 and "clipped" in clipped.method
    with pytest.raises(ValueError, match="one shape"):
        stats.hierarchical_bootstrap(np.ones((2, 3)), np.ones((2, 4)))


def test_hierarchical_bootstrap_of_a_ratio_of_sums():
    rng = np.random.default_rng(5)
    den = rng.uniform(1, 3, size=(1, 50)).repeat(2, 0)       # the same images' energies for both seeds
    num = den * np.array([[0.2], [0.4]])                     # seed ratios 0.2 and 0.4
    interval = stats.hierarchical_bootstrap(num, den, n_boot=300)
    assert interval.estimate == pytest.approx(0.3)
    # a constant ratio per seed: images move nothing, the seeds give 0.2, 0.3 or 0.4
    assert interval.low == pytest.approx(0.2) and interval.high == pytest.approx(0.4)
    single = stats.hierarchical_bootstrap(num[:1], den[:1], n_boot=50)
    assert (single.low, single.high) == pytest.approx((0.2, 0.2)) and single.n == 1


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
