"""Quality comparisons: sides by run identity, tests as the claims say, convergence gates, Holm."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.quality import stats
from analysis.report import claims as C
from analysis.report.forest import forest_plot, in_margins


def seeds(run, method, norm, values, *, shading=None, miou=None, mask="32x32", boot=0.0):
    values = np.asarray(values, float)
    table = pd.DataFrame({"run": run, "method": method, "norm": norm, "seed": range(len(values)),
                          "mask_resolution": mask, "fd_proxy_features": values,
                          "fd_proxy_features_boot_low": values * (1 - boot),
                          "fd_proxy_features_boot_high": values * (1 + boot)})
    if shading is not None:
        table["shading_error"] = shading
    if miou is not None:
        table["miou_proxy"] = miou
    return table


def converged(*runs, flag=True):
    return pd.DataFrame({"method": list(runs), "metric": "shading_error", "converged": flag,
                         "last_quarter_change": 0.0, "seed_spread": 0.01, "steps": 1000, "rule": "test"})


def by(rows, claim, metric=None):
    return [r for r in rows if r.claim == claim and (metric is None or r.metric == metric)]


SPADE = seeds("spade", "SPADE", "spade", [0.65, 1.9, 3.48], shading=[0.50, 0.52, 0.48])
CLADE = seeds("clade", "CLADE", "clade", [0.11, 0.12, 0.13], shading=[0.80, 0.81, 0.79])


def test_a_converted_or_fine_tuned_model_never_enters_the_methods_row():
    converted = seeds("spade-to-clade", "SPADE converted to CLADE", "clade", [9.0], shading=[0.95])
    tuned = seeds("spade-to-clade-ft", "SPADE converted to CLADE, fine-tuned", "clade", [5.0], shading=[0.9])
    rows = C.quality_comparisons({"quality_seeds": pd.concat([SPADE, CLADE, converted, tuned])})
    (clade,) = by(rows, "clade_vs_spade", "fd_proxy_features")
    assert clade.runs == ("clade", "spade") and clade.difference.n_a == 3
    assert clade.a_mean == pytest.approx(0.12)                      # the 3 CLADE seeds only
    conversion = by(rows, "conversion", "fd_proxy_features")
    assert [r.runs for r in conversion] == [("spade-to-clade", "spade"), ("spade-to-clade-ft", "spade")]
    assert [r.a_mean for r in conversion] == [9.0, 5.0]


def test_skewed_frechet_distances_compare_as_ratios_and_the_known_answer_is_the_headline():
    rows = C.decide(C.quality_comparisons({"quality_seeds": pd.concat([SPADE, CLADE])}),
                    converged("spade", "clade"))
    fd = by(rows, "clade_vs_spade", "fd_proxy_features")[0]
    assert fd.difference.scale == "log ratio" and not fd.primary
    assert fd.verdict == stats.SHOWN_NO_WORSE                    # every CLADE seed beats every SPADE seed
    ratio, low, high = fd.effect()
    assert ratio == pytest.approx(np.exp(np.log([0.11, 0.12, 0.13]).mean() - np.log([0.65, 1.9, 3.48]).mean()))
    assert high < 1
    shading = by(rows, "clade_vs_spade", "shading_error")[0]
    # the known answer is the headline and says otherwise: CLADE misses 0.3 more of the shading
    assert shading.primary and shading.verdict == C.CONTRADICTED
    assert shading.difference.estimate == pytest.approx(0.30)


def test_two_identical_generators_are_shown_no_worse_and_equivalent_but_never_better():
    same = seeds("clade-icpe", "CLADE-ICPE", "clade-icpe", [0.11, 0.12, 0.13], shading=[0.80, 0.81, 0.79])
    rows = C.decide(C.quality_comparisons({"quality_seeds": pd.concat([CLADE, same])}),
                    converged("clade", "clade-icpe"))
    (icpe,) = by(rows, "icpe", "shading_error")
    assert icpe.difference.estimate == 0 and icpe.verdict == stats.NOT_SHOWN      # "better" is never shown
    ablation = pd.DataFrame({"run": "spade", "model": "SPADE", "seed": [0, 1, 2] * 2,
                             "ablated": ["none"] * 3 + ["all"] * 3, "shading_error": [0.3, 0.5, 0.7] * 2})
    (equal,) = C.decide(C.quality_comparisons({"ablation_quality": ablation}), converged("spade"))
    assert equal.verdict == stats.SHOWN_EQUIVALENT and equal.difference.se == 0


def test_class_mean_ablation_is_paired_by_seed_and_can_be_contradicted():
    ablation = pd.DataFrame({"run": "spade", "model": "SPADE", "seed": [0, 1, 2] * 3,
                             "ablated": ["none"] * 3 + ["all"] * 3 + ["8x8"] * 3,
                             # seeds differ a lot; the ablation shifts every seed by +0.3 (all) or +0.01 (8x8)
                             "shading_error": [0.2, 0.5, 0.8, 0.49, 0.81, 1.1, 0.21, 0.51, 0.81]})
    rows = C.decide(C.quality_comparisons({"ablation_quality": ablation}), converged("spade"))
    verdicts = {r.condition: (r.verdict, r.primary) for r in rows}
    assert verdicts == {"all layers": (C.CONTRADICTED, True), "layers at 8x8": (stats.SHOWN_EQUIVALENT, False)}
    assert rows[0].difference.method == "paired t over seeds"


def test_no_verdict_without_convergence():
    tables = {"quality_seeds": pd.concat([SPADE, CLADE])}
    rows = C.quality_comparisons(tables)
    assert {r.verdict for r in C.decide(rows, None)} == {C.NOT_CONVERGED}
    assert "no tables/convergence.csv" in C.decide(rows, None)[0].note
    half = C.decide(rows, pd.concat([converged("clade"), converged("spade", flag=False)]))
    assert {r.verdict for r in half} == {C.NOT_CONVERGED} and half[0].note == "not converged: spade"
    by_label = C.decide(rows, converged("SPADE", "CLADE"), labels={"spade": "SPADE", "clade": "CLADE"})
    assert C.NOT_CONVERGED not in {r.verdict for r in by_label}
    # a converted model inherits its source's convergence
    converted = seeds("spade-to-clade", "SPADE converted to CLADE", "clade", [0.5, 0.6], shading=[0.5, 0.52])
    rows = C.decide(C.quality_comparisons({"quality_seeds": pd.concat([SPADE, converted])}), converged("spade"))
    assert C.NOT_CONVERGED not in {r.verdict for r in rows}


def test_one_seed_decides_nothing():
    rows = C.decide(C.quality_comparisons({"quality_seeds": pd.concat([SPADE.iloc[:1], CLADE.iloc[:1]])}),
                    converged("spade", "clade"))
    assert {r.verdict for r in rows} == {C.UNDECIDED}


def test_holm_over_the_headline_tests_can_withdraw_a_verdict():
    # two claims whose headline p-values are 0.035 and 0.046: each passes alone, Holm keeps neither
    spade = seeds("spade", "SPADE", "spade", [1.0, 1.0, 1.0], shading=[0.50, 0.55, 0.60])
    clade = seeds("clade", "CLADE", "clade", [1.0, 1.0, 1.0], shading=[0.50, 0.55, 0.60])
    icpe = seeds("clade-icpe", "CLADE-ICPE", "clade-icpe", [1.0, 1.0, 1.0], shading=[0.41, 0.46, 0.51])
    rows = C.quality_comparisons({"quality_seeds": pd.concat([spade, clade, icpe])})
    headline = [r for r in rows if r.primary]
    assert [r.claim for r in headline] == ["clade_vs_spade", "icpe"]
    raw = [r.p_claim for r in headline]
    assert raw == pytest.approx([0.03524, 0.04609], abs=1e-5)
    decided = [r for r in C.decide(rows, converged("spade", "clade", "clade-icpe")) if r.primary]
    assert [r.p_claim_holm for r in decided] == pytest.approx(list(stats.holm(raw)))
    assert [r.verdict for r in decided] == [stats.NOT_SHOWN, stats.NOT_SHOWN]
    # secondary rows keep their unadjusted p-value
    assert all(np.isnan(r.p_claim_holm) for r in C.decide(rows, converged("spade", "clade", "clade-icpe"))
               if not r.primary)


def test_the_kernel_variant_is_secondary_never_a_headline():
    one = seeds("spade-1x1", "SPADE 1x1", "spade", [0.6, 0.7, 0.8], shading=[0.5, 0.52, 0.48])
    rows = C.quality_comparisons({"quality_seeds": pd.concat([SPADE, one])})
    assert {r.claim for r in rows} == {"kernel"} and not any(r.primary for r in rows)


def test_mask_resolution_pairs_the_coarse_runs_and_the_table_lists_every_comparison():
    coarse = [seeds("spade-mask4", "SPADE (8x8 masks)", "spade", [0.5, 0.55, 0.6], mask="8x8", shading=[0.6] * 3),
              seeds("clade-mask4", "CLADE (8x8 masks)", "clade", [0.5, 0.56, 0.6], mask="8x8", shading=[0.6] * 3)]
    rows = C.decide(C.quality_comparisons({"quality_seeds": pd.concat([SPADE, CLADE, *coarse])}),
                    converged("spade", "clade", "spade-mask4", "clade-mask4"))
    mask = by(rows, "mask_resolution")
    assert {r.condition for r in mask} == {"masks 8x8"} and mask[0].runs == ("clade-mask4", "spade-mask4")
    table = C.comparisons_table(rows)
    assert len(table) == len(rows) and table.headline.sum() == 2
    assert set(table.columns) >= {"claim", "a", "b", "n_a", "n_b", "test", "margin", "estimate", "ci_low", "ci_high",
                                  "p", "p_holm", "verdict"}
    fd = table[(table.key == "clade_vs_spade") & (table.metric == "fd_proxy_features")].iloc[0]
    assert fd.effect == "a / b" and fd.margin == "ratio within 0.80-1.25" and fd.ci_low < fd.estimate < fd.ci_high
    fig = forest_plot(rows)
    assert len(fig.axes[0].get_yticklabels()) == len(rows)
    plt.close(fig)


def test_forest_plot_units_are_margins_with_better_to_the_right():
    (row,) = by(C.quality_comparisons({"quality_seeds": pd.concat([SPADE, CLADE])}), "clade_vs_spade",
                "shading_error")
    estimate, low, high = in_margins(row)
    assert estimate == pytest.approx(-0.30 / 0.10)              # CLADE's shading error is 0.3 higher: worse
    interval = row.difference.interval()
    assert (low, high) == pytest.approx((-interval.high / 0.1, -interval.low / 0.1)) and high < -1
