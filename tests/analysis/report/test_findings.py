"""Findings: one row per claim, verdicts from the claim's own test, rows by run, missing stages said."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.quality import stats
from analysis.report import claims as C
from analysis.report import findings as F
from analysis.report.assemble import build_report, write_report

EXAMPLE = Path(__file__).resolve().parents[3] / "reports" / "example" / "tables"
KEYS = ["cost", "speed", "semantic_share", "class_mean", "clade_vs_spade", "icpe", "mask_resolution", "conversion"]


def quality_rows(run, method, norm, shading, fd, seeds=(0, 1, 2), mask="32x32"):
    return pd.DataFrame({"run": run, "method": method, "norm": norm, "seed": list(seeds), "mask_resolution": mask,
                         "images": 64, "shading_error": shading, "fd_proxy_features": fd, "miou_proxy": 0.7})


def convergence(*runs, converged=True):
    return pd.DataFrame({"method": list(runs), "metric": "shading_error", "converged": converged})


def quality_tables(**extra):
    return {"quality_seeds": pd.concat([
        quality_rows("spade", "SPADE", "spade", [0.30, 0.31, 0.29], [0.65, 1.9, 3.48]),
        quality_rows("clade", "CLADE", "clade", [0.30, 0.32, 0.28], [0.11, 0.12, 0.13]),
        quality_rows("clade-icpe", "CLADE-ICPE", "clade-icpe", [0.10, 0.11, 0.09], [0.12, 0.11, 0.13]),
        quality_rows("spade-to-clade", "SPADE converted to CLADE", "clade", [0.9], [8.0], seeds=(0,)),
        pd.DataFrame({"run": "real", "method": "real images", "norm": "real", "seed": [0],
                      "fd_proxy_features": [0.108]})]), **extra}


def by_key(lines, key):
    (line,) = [f for f in lines if f.key == key]
    return line


def test_one_row_per_claim_and_missing_stages_are_named():
    lines = F.findings({})
    assert [f.key for f in lines] == KEYS
    assert {f.verdict for f in lines} == {F.NOT_MEASURED}
    assert by_key(lines, "class_mean").effect == ("not measured in this run (no tables/ablation_quality.csv: stage "
                                                  "eval skipped or older)")
    assert by_key(lines, "semantic_share").effect == ("not measured in this run (no tables/probe_verdicts.csv: stage "
                                                      "probe skipped or older)")
    old = F.cost_finding({"costs": pd.DataFrame({"preset": ["x"], "norm": ["spade"]})})
    assert old.verdict == F.NOT_MEASURED and "lacks columns" in old.effect


def test_quality_verdicts_need_converged_runs():
    tables = quality_tables()
    for line in F.quality_findings(tables):
        if line.key in ("clade_vs_spade", "icpe", "conversion"):
            assert line.verdict == C.NOT_CONVERGED and "no tables/convergence.csv" in line.caveat
    tables["convergence"] = convergence("spade", "clade", "clade-icpe")
    lines = F.quality_findings(tables)
    icpe = by_key(lines, "icpe")
    assert icpe.verdict == stats.SHOWN_BETTER and icpe.claim == "CLADE-ICPE (positional encoding) improves on CLADE (masks 32x32)"
    assert icpe.effect.startswith("shading_error CLADE-ICPE - CLADE = -0.2 [") and "n = 3 vs 3 seeds x 64 images)" in icpe.effect
    assert icpe.value == pytest.approx(-0.2) and icpe.low < -0.2 < icpe.high < 0
    tables["convergence"] = convergence("spade", "clade", "clade-icpe", converged=[True, True, False])
    icpe = by_key(F.quality_findings(tables), "icpe")
    assert icpe.verdict == C.NOT_CONVERGED and icpe.caveat.startswith("not converged: clade-icpe")


def test_a_converted_model_never_enters_clades_row():
    tables = quality_tables(convergence=convergence("spade", "clade", "clade-icpe"))
    clade = by_key(F.quality_findings(tables), "clade_vs_spade")
    assert "(0.3 vs 0.3; n = 3 vs 3 seeds x 64 images)" in clade.effect          # CLADE's 3 seeds, not the converted 0.9
    conversion = by_key(F.quality_findings(tables), "conversion")
    assert "SPADE converted to CLADE - SPADE = 0.6" in conversion.effect and conversion.verdict == C.UNDECIDED
    table = F.appendix(tables)
    rows = table[(table.key == "clade_vs_spade")]
    assert (rows.a == "CLADE").all() and (rows.n_a == 3).all()


def test_frechet_rows_report_the_real_vs_real_floor_never_use_it():
    tables = quality_tables(convergence=convergence("spade", "clade", "clade-icpe"))
    table = F.appendix(tables)
    fd = table[(table.key == "clade_vs_spade") & (table.metric == "fd_proxy_features")].iloc[0]
    assert fd.floor_real_vs_real == pytest.approx(0.108) and fd.verdict == stats.SHOWN_NO_WORSE
    assert np.isnan(table[table.metric == "shading_error"].floor_real_vs_real).all()
    # a headline on the Frechet distance states its floor in the caveat
    no_known_answer = {k: v.drop(columns="shading_error") if k == "quality_seeds" else v for k, v in tables.items()}
    clade = by_key(F.quality_findings(no_known_answer), "clade_vs_spade")
    assert "real-vs-real floor 0.108" in clade.caveat and "proxy metric" in clade.caveat
    assert clade.effect.startswith("fd_proxy_features CLADE / SPADE = 0.0")


def test_identical_cost_rows_merge():
    costs = pd.DataFrame({"preset": ["ade20k", "ade20k", "ade20k-outdoor", "ade20k-outdoor", "cityscapes", "cityscapes"],
                          "norm": ["spade", "clade"] * 3, "params": 1e8,
                          "modulation_params": [28e6, 3e6, 28e6, 3e6, 26e6, 0.8e6],
                          "gmacs_fvcore": 100.0, "modulation_gmacs_fvcore": [140, 0.04, 140, 0.04, 206, 0.08]})
    line = F.cost_finding({"costs": costs})
    assert line.verdict == F.SUPPORTED
    assert line.effect == ("SPADE / CLADE modulation: ade20k / ade20k-outdoor 3,500x GMACs, 9.3x params; "
                           "cityscapes 2,575x GMACs, 32.5x params")
    assert (line.low, line.high) == pytest.approx((2575, 3500))


def test_speed_needs_reliable_timing_for_a_verdict():
    bench = pd.DataFrame({"preset": "ade20k", "batch": 1, "dtype": "fp32", "mode": "eager",
                          "norm": ["spade", "clade"], "median_ms": [1000.0, 350.0], "p10_ms": [980.0, 340.0],
                          "p90_ms": [1020.0, 360.0], "reliable": [True, True], "unreliable_reason": ["", ""]})
    line = F.speed_finding({"bench": bench})
    assert line.verdict == F.SUPPORTED and line.value == pytest.approx(1000 / 350)
    assert (line.low, line.high) == pytest.approx((980 / 360, 1020 / 340))
    noisy = bench.assign(reliable=[True, False], unreliable_reason=["", "repeats spread by 60 %"])
    line = F.speed_finding({"bench": noisy})
    assert line.verdict == F.NO_VERDICT and "CLADE: repeats spread by 60 %" in line.caveat
    assert F.speed_finding({"bench": bench.assign(reliable=[True, np.nan])}).verdict == F.NO_VERDICT
    overlapping = bench.assign(p10_ms=[600.0, 340.0], p90_ms=[1020.0, 700.0])
    assert F.speed_finding({"bench": overlapping}).verdict == F.NOT_SHOWN
    # a reliable configuration is preferred over an unreliable one listed first
    both = pd.concat([noisy.assign(batch=16), bench])
    assert F.speed_finding({"bench": both}).verdict == F.SUPPORTED


def probe_rows(model, verdicts, resolutions=("8x8", "16x16", "32x32")):
    return pd.DataFrame({"model": model, "layer": [f"layer{i}" for i in range(len(verdicts))],
                         "resolution": list(resolutions), "share_class": [0.5, 0.6, 0.7],
                         "share_class_low": [0.4, 0.5, 0.65], "share_class_high": [0.6, 0.7, 0.75],
                         "share_class_untrained": [0.3, 0.35, 0.37], "negligible": False, "verdict": verdicts})


def test_semantic_share_reads_the_probe_verdicts():
    table = pd.concat([probe_rows("spade", ["no verdict: negligible modulation", "supported", "supported"]),
                       probe_rows("spade-mask4", ["not supported", "supported", "not supported"])])
    line = F.semantic_share_finding({"probe_verdicts": table})
    assert line.verdict == F.SUPPORTED
    assert line.effect == "class share 0.70 [0.65, 0.75] vs untrained 0.37 at layer2 (32x32)"
    assert "2 of 2 judged layers supported, 1 without verdict" in line.caveat
    assert "spade-mask4: mixed (1 of 3 judged layers supported" in line.caveat
    untrained = probe_rows("spade", ["no verdict: negligible modulation"] * 3)
    assert F.semantic_share_finding({"probe_verdicts": untrained}).verdict == F.NO_VERDICT
    assert F.semantic_share_finding({"probe_verdicts": probe_rows("clade", ["supported"] * 3)}).verdict == F.NOT_MEASURED



def test_semantic_share_of_a_spade_run_still_learning_is_not_converged():
    table = probe_rows("spade", ["supported"] * 3)
    learning = pd.DataFrame({"method": ["spade", "clade"], "metric": "shading_error", "converged": [False, True]})
    line = F.semantic_share_finding({"probe_verdicts": table, "convergence": learning})
    assert line.verdict == "not converged" and line.caveat.startswith("not converged: spade")
    done = learning.assign(converged=True)
    assert F.semantic_share_finding({"probe_verdicts": table, "convergence": done}).verdict == F.SUPPORTED
    # a probed checkpoint without a train stage (no convergence table) keeps its verdict
    assert F.semantic_share_finding({"probe_verdicts": table}).verdict == F.SUPPORTED


def test_the_report_opens_with_the_findings_and_ends_with_every_comparison(tmp_path):
    (tmp_path / "tables").mkdir()
    tables = quality_tables(convergence=convergence("spade", "clade", "clade-icpe"))
    for name, table in tables.items():
        table.to_csv(tmp_path / "tables" / f"{name}.csv", index=False)
    write_report(tmp_path, {"preset": "synthetic"}, stages=())
    report = (tmp_path / "report.md").read_text()
    findings = report.split("## 1. Findings\n\n")[1].split("\n## ")[0]
    rows = [line for line in findings.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(KEYS)
    assert "![Every quality comparison" in findings and (tmp_path / "figures" / "findings_forest.png").is_file()
    csv = pd.read_csv(tmp_path / "tables" / "findings.csv")
    appendix = report.split("## Appendix: every comparison behind the Findings")[1].split("\n## ")[0]
    assert sum(line.startswith("| ") for line in appendix.splitlines()) == len(csv) + 2
    assert csv.headline.sum() == 3 and set(csv[csv.headline].key) == {"clade_vs_spade", "icpe", "conversion"}
    assert build_report(tmp_path, {"preset": "synthetic"}, stages=()) == report


def test_render_escapes_pipes_and_explains_the_verdicts():
    line = F.Finding("x", "a | b", F.SUPPORTED, "1 | 2", "c", "tables/x.csv")
    text = F.render_findings([line])
    assert "| a \\| b | **supported** | 1 \\| 2 | c | [x.csv](tables/x.csv) |" in text
    assert "*not shown*: the data decide neither way, which is no support" in text


@pytest.mark.skipif(not (EXAMPLE / "costs.csv").is_file(), reason="no committed example report")
def test_the_example_reports_tables_give_one_row_per_claim():
    tables = {p.stem: pd.read_csv(p) for p in EXAMPLE.glob("*.csv")}
    lines = F.findings(tables)
    assert [f.key for f in lines] == KEYS
    cost = by_key(lines, "cost")
    assert cost.verdict == F.SUPPORTED and "ade20k / ade20k-outdoor" in cost.effect
    if "convergence" not in tables:
        assert {by_key(lines, k).verdict for k in ("clade_vs_spade", "icpe")} <= {C.NOT_CONVERGED, F.NOT_MEASURED}
