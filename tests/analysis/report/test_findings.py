"""Findings regenerated from tables: verdicts follow the intervals, missing stages say so."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.report import findings as F

EXAMPLE = Path(__file__).resolve().parents[3] / "reports" / "example" / "tables"


def quality_rows(method, norm, fd, miou, seeds=(0, 1, 2), steps=300, **extra):
    return pd.DataFrame({"method": method, "norm": norm, "seed": list(seeds), "steps": steps, "images": 128,
                         "fd_proxy_features": fd, "miou_proxy": miou,
                         "fd_proxy_features_boot_low": np.asarray(fd) - 0.02,
                         "fd_proxy_features_boot_high": np.asarray(fd) + 0.02, **extra})


def by_key(lines, key):
    return [f for f in lines if f.key == key]


def test_two_identical_generators_are_within_noise():
    spade = quality_rows("SPADE", "spade", [0.30, 0.35, 0.28], [0.80, 0.78, 0.82])
    clade = quality_rows("CLADE", "clade", [0.30, 0.35, 0.28], [0.80, 0.78, 0.82])
    lines = by_key(F.quality_findings({"quality_seeds": pd.concat([spade, clade])}), "clade_vs_spade")
    assert [f.verdict for f in lines] == [F.WITHIN_NOISE, F.WITHIN_NOISE]
    assert {f.claim.rsplit("[", 1)[1] for f in lines} == {"fd_proxy_features]", "miou_proxy]"}
    assert all(f.value == 0 for f in lines)


def test_a_difference_inside_the_seed_interval_or_the_noise_floor_is_never_better_or_worse():
    spade = quality_rows("SPADE", "spade", [0.20, 0.40, 0.30], [0.80, 0.70, 0.90])
    clade = quality_rows("CLADE", "clade", [0.25, 0.45, 0.32], [0.78, 0.72, 0.85])
    lines = F.quality_findings({"quality_seeds": pd.concat([spade, clade])})
    assert {f.verdict for f in by_key(lines, "clade_vs_spade")} == {F.WITHIN_NOISE}
    # a clear, consistent gap, but smaller than the real-vs-real distance: still a tie
    spade = quality_rows("SPADE", "spade", [0.30, 0.31, 0.29], [0.8] * 3)
    clade = quality_rows("CLADE", "clade", [0.40, 0.41, 0.39], [0.8] * 3)
    real = quality_rows("real images", "real", [0.15, 0.15, 0.15], [0.95] * 3)
    table = {"quality_seeds": pd.concat([spade, clade])}
    assert by_key(F.quality_findings(table), "clade_vs_spade")[0].verdict == F.NOT_SUPPORTED
    table["quality_seeds"] = pd.concat([spade, clade, real])
    fd = by_key(F.quality_findings(table), "clade_vs_spade")[0]
    assert fd.verdict == F.WITHIN_NOISE and "noise floor 0.15" in fd.uncertainty


def test_clear_differences_get_verdicts_in_the_claims_direction():
    spade = quality_rows("SPADE", "spade", [0.50, 0.52, 0.48], [0.60, 0.61, 0.59])
    clade = quality_rows("CLADE", "clade", [0.30, 0.31, 0.29], [0.70, 0.71, 0.69])     # better on both
    icpe = quality_rows("CLADE-ICPE", "clade-icpe", [0.60, 0.61, 0.59], [0.50, 0.51, 0.49], steps=77)
    lines = F.quality_findings({"quality_seeds": pd.concat([spade, clade, icpe])})
    assert {f.verdict for f in by_key(lines, "clade_vs_spade")} == {F.SUPPORTED}
    icpe_lines = by_key(lines, "icpe")
    assert {f.verdict for f in icpe_lines} == {F.NOT_SUPPORTED}
    assert "unequal training: CLADE-ICPE [77] steps, CLADE [300]" in icpe_lines[0].uncertainty
    assert "images: CLADE-ICPE [0.58, 0.62]" in icpe_lines[0].uncertainty


def test_one_seed_gives_no_verdict_and_says_why():
    spade = quality_rows("SPADE", "spade", [0.5], [0.6], seeds=(0,))
    clade = quality_rows("CLADE", "clade", [0.3], [0.7], seeds=(0,))
    lines = by_key(F.quality_findings({"quality_seeds": pd.concat([spade, clade])}), "clade_vs_spade")
    assert {f.verdict for f in lines} == {F.NO_VERDICT}
    assert "1 seed" in lines[0].uncertainty


def test_kernel_variants_and_mask_resolutions_are_compared_within_their_condition():
    rows = []
    for mask, gap in (("256x256", 0.2), ("32x32", 0.0)):
        rows += [quality_rows("SPADE", "spade", [0.5, 0.51, 0.49], [0.6] * 3, spade_kernel_size=3, mask_resolution=mask),
                 quality_rows("SPADE 1x1", "spade", [0.5 + gap, 0.51 + gap, 0.49 + gap], [0.6] * 3,
                              spade_kernel_size=1, mask_resolution=mask),
                 quality_rows("CLADE", "clade", [0.5, 0.51, 0.49], [0.6] * 3, mask_resolution=mask)]
    lines = F.quality_findings({"quality_seeds": pd.concat(rows)})
    kernel = {f.claim: f.verdict for f in by_key(lines, "kernel") if "fd_proxy" in f.claim}
    assert kernel == {"a 1x1 SPADE (purely semantic) is no worse than the 3x3 SPADE (masks 256x256) [fd_proxy_features]":
                      F.NOT_SUPPORTED,
                      "a 1x1 SPADE (purely semantic) is no worse than the 3x3 SPADE (masks 32x32) [fd_proxy_features]":
                      F.WITHIN_NOISE}
    assert all(f.verdict == F.WITHIN_NOISE for f in by_key(lines, "clade_vs_spade"))


def test_class_mean_ablation_is_paired_by_seed():
    rows = pd.DataFrame({"model": "SPADE", "norm": "spade", "seed": [0, 1, 2] * 3,
                         "ablated": ["none"] * 3 + ["all"] * 3 + ["64x64"] * 3,
                         # seeds differ a lot, the ablation shifts every seed by +0.05 (all) or 0 (64x64)
                         "fd_proxy_features": [0.2, 0.5, 0.8, 0.25, 0.55, 0.85, 0.2, 0.5, 0.8],
                         "miou_proxy": [0.8, 0.6, 0.7, 0.8, 0.6, 0.7, 0.8, 0.6, 0.7]})
    lines = F.class_mean_findings({"ablation_quality": rows})
    verdicts = {(f.claim.split("(")[1].split(")")[0], f.claim.rsplit("[", 1)[1][:-1]): f.verdict for f in lines}
    assert verdicts[("SPADE, all layers", "fd_proxy_features")] == F.NOT_SUPPORTED
    assert verdicts[("SPADE, layers at 64x64", "fd_proxy_features")] == F.WITHIN_NOISE
    assert verdicts[("SPADE, all layers", "miou_proxy")] == F.WITHIN_NOISE
    assert "paired student-t" in lines[0].uncertainty


def test_speed_needs_reliable_timing_for_a_verdict():
    bench = pd.DataFrame({"preset": "ade20k", "batch": 1, "dtype": "fp32", "mode": "eager",
                          "norm": ["spade", "clade"], "median_ms": [1000.0, 350.0], "p10_ms": [980.0, 340.0],
                          "p90_ms": [1020.0, 360.0], "reliable": [True, True], "unreliable_reason": ["", ""]})
    (line,) = F.speed_findings({"bench": bench})
    assert line.verdict == F.SUPPORTED and line.value == pytest.approx(1000 / 350)
    assert line.low == pytest.approx(980 / 360) and line.high == pytest.approx(1020 / 340)
    noisy = bench.assign(reliable=[True, False], unreliable_reason=["", "repeats spread by 60 %"])
    (line,) = F.speed_findings({"bench": noisy})
    assert line.verdict == F.NO_VERDICT and "CLADE: repeats spread by 60 %" in line.uncertainty
    unknown = bench.assign(reliable=[True, np.nan], unreliable_reason=["", np.nan])
    assert F.speed_findings({"bench": unknown})[0].verdict == F.NO_VERDICT
    overlapping = bench.assign(p10_ms=[600.0, 340.0], p90_ms=[1020.0, 700.0])
    assert F.speed_findings({"bench": overlapping})[0].verdict == F.WITHIN_NOISE


def test_semantic_share_uses_seeds_when_there_are_several():
    table = pd.DataFrame({"model": "spade", "norm": "spade", "resolution": "64x64", "param": ["gamma"] * 3,
                          "seed": [0, 1, 2], "semantic_ratio": [0.80, 0.85, 0.90],
                          "positional_ratio": [0.05, 0.04, 0.06]})
    (line,) = F.semantic_share_findings({"probe_resolutions": table})
    assert line.verdict == F.SUPPORTED and "over 3 seeds" in line.uncertainty
    (single,) = F.semantic_share_findings({"probe_resolutions": table.iloc[:1]})
    assert single.verdict == F.NO_VERDICT and "1 seed" in single.uncertainty


def test_missing_tables_and_columns_are_reported_not_guessed():
    lines = F.findings({})
    assert all(f.verdict == F.NOT_MEASURED for f in lines)
    assert {f.key for f in lines} >= {"cost", "speed", "semantic_share", "neighbourhood", "class_mean",
                                      "clade_vs_spade", "kernel", "icpe"}
    assert "not measured in this run (stage eval skipped)" in by_key(lines, "class_mean")[0].measured
    (old,) = F.cost_findings({"costs": pd.DataFrame({"preset": ["x"], "norm": ["spade"]})})
    assert old.verdict == F.NOT_MEASURED and "lacks columns" in old.measured


def test_findings_are_regenerated_from_the_example_reports_tables():
    tables = {p.stem: pd.read_csv(p) for p in EXAMPLE.glob("*.csv")}
    lines = F.findings(tables)
    costs = by_key(lines, "cost")
    assert [f.claim.rsplit("(", 1)[1][:-1] for f in costs] == ["cityscapes", "ade20k", "ade20k-outdoor", "coco-stuff"]
    assert {f.verdict for f in costs} == {F.SUPPORTED}
    ade = costs[1]
    assert "SPADE 28.37 M" in ade.measured and "CLADE 3.31 M" in ade.measured
    expected_ratio = tables["costs"].set_index(["preset", "norm"]).modulation_gmacs_fvcore
    assert ade.value == pytest.approx(expected_ratio[("ade20k", "spade")] / expected_ratio[("ade20k", "clade")])
    bench = tables["bench"].set_index(["preset", "batch", "norm"]).median_ms
    speed = by_key(lines, "speed")
    assert [f.value for f in speed] == pytest.approx([bench[("ade20k", 1, "spade")] / bench[("ade20k", 1, "clade")]])
    assert {f.verdict for f in speed} == {F.SUPPORTED}       # reliable timings, band entirely above 1x
    shares = by_key(lines, "semantic_share")
    assert len(shares) == 12                      # one per resolution of each SPADE run (3x3 and 1x1 kernel)
    assert sum("spade-1x1, 1x1 kernel" in f.claim for f in shares) == 6
    assert [f.verdict for f in shares if f.claim.endswith("(1x1; spade, 3x3 kernel)")] == [F.NO_VERDICT]
    markdown = F.render_findings(lines)
    assert markdown.count("\n| ") == len(lines) + 1          # header + one row per finding
    assert "[costs.csv](tables/costs.csv)" in markdown and "**not supported**" in markdown
    assert F.NOT_MEASURED not in {f.verdict for f in lines}    # the default run measures every claim
    assert "mean \\|change\\|" in markdown                     # pipes in cells are escaped


def test_neighbourhood_lines_list_every_resolution():
    table = pd.DataFrame({"dataset": "synthetic", "resolution": ["8x8", "64x64"], "kernel": 3,
                          "single_class_fraction": [0.41, 0.93], "images": 16})
    (line,) = F.neighbourhood_findings({"neighbourhood": table})
    assert line.measured == "8x8: 0.410, 64x64: 0.930" and line.verdict == F.CONTEXT
