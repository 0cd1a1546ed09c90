"""Pareto fronts, ROI tables and plots, and report assembly from stage records."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import roi
from analysis.context import RunContext
from analysis.provenance import write_json_atomic
from analysis.report import build_report, write_report


def test_pareto_front_on_hand_made_points():
    costs = [1, 2, 3, 4, 5]
    quality = [0.5, 0.4, 0.7, 0.7, np.nan]       # higher is better
    assert roi.pareto_front(costs, quality, True).tolist() == [True, False, True, False, False]
    # lower is better (a distance): the cheapest point is best on both axes
    assert roi.pareto_front(costs, [1.0, 2.0, 0.5, 3.0, 0.1], False).tolist() == [True, False, True, False, True]


def test_pareto_front_with_several_qualities():
    costs = [1, 1, 2]
    qualities = [[10.0, 0.3], [12.0, 0.3], [11.0, 0.6]]   # (distance: lower better, mIoU: higher better)
    assert roi.pareto_front(costs, qualities, [False, True]).tolist() == [True, False, True]


def evaluation_table():
    return pd.DataFrame({
        "method": ["SPADE", "CLADE", "CLADE-ICPE", "real images"],
        "norm": ["spade", "clade", "clade-icpe", "real"],
        "fid": [np.nan] * 4,
        "fd_proxy_features": [3.0, 4.0, 3.5, 0.5],
        "miou_proxy": [0.50, 0.40, 0.45, 0.9],
        "accuracy_proxy": [0.8, 0.7, 0.75, 0.95],
        "params": [4_000_000, 1_000_000, 1_000_108, np.nan],
        "modulation_params": [3_000_000, 20_000, 20_108, np.nan],
        "gmacs_fvcore": [1.0, 0.05, 0.0501, np.nan],
        "modulation_gmacs_fvcore": [0.95, 0.0003, 0.0004, np.nan],
        "latency_ms": [20.0, 8.0, 9.0, np.nan],
    })


def test_roi_table_flags_the_front_and_skips_the_real_row():
    table = roi.roi_table(evaluation_table())
    assert table["norm"].tolist() == ["spade", "clade", "clade-icpe"]
    assert "fid" not in table                         # all-NaN quality columns are dropped
    assert table["params_m"].tolist() == pytest.approx([4.0, 1.0, 1.000108])
    # every method is best somewhere: SPADE on quality, CLADE on cost, ICPE in between
    assert table["pareto_gmacs_fvcore"].tolist() == [True, True, True]


def test_roi_table_marks_a_dominated_method():
    df = evaluation_table()
    df.loc[0, ["fd_proxy_features", "miou_proxy", "accuracy_proxy"]] = [5.0, 0.3, 0.6]  # SPADE worse and dearer
    assert roi.roi_table(df)["pareto_latency_ms"].tolist() == [False, True, True]


def test_modulation_roi_against_the_cheapest_modulation():
    mod = roi.modulation_roi(evaluation_table())
    spade = mod.set_index("norm").loc["spade"]
    assert spade["extra_modulation_gmacs_fvcore_vs_clade"] == pytest.approx(0.95 - 0.0003)
    assert spade["extra_modulation_params_vs_clade"] == 3_000_000 - 20_000
    assert spade["delta_miou_proxy_vs_clade"] == pytest.approx(0.10)
    assert spade["modulation_share_of_gmacs_fvcore_pct"] == pytest.approx(95.0)


def test_plots_have_one_panel_per_quality_and_cost():
    fig = roi.plot_quality_vs_cost(evaluation_table())
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert len(fig.axes) == 2 * 3 and any("proxy" in label for label in labels)
    plt.close(fig)
    fig = roi.plot_modulation_roi(evaluation_table())
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    plt.close(fig)


@pytest.mark.parametrize("value, text", [(93048003, "93,048,003"), (0.123456, "0.1235"), (12.3456, "12.346"),
                                         (281.408, "281.4"), (np.nan, "n/a"), (True, "yes"), (2.0, "2"),
                                         (3.1e-05, "3.1e-05"), ("clade", "clade")])
def test_format_value(value, text):
    assert roi.format_value(value) == text


@pytest.fixture
def run_folder(tmp_path):
    ctx = RunContext(out=tmp_path, seed=7)
    ctx.write_table(pd.DataFrame({"norm": ["spade", "clade"], "params": [93048003, 67901991],
                                  "gmacs_fvcore": [281.40812, 75.6401], "preset": ["x", "x"]}), "costs")
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    ctx.write_figure(fig, "costs_bars")
    write_json_atomic({"stage": "costs", "seconds": 12.34, "notes": ["Counted with fvcore."],
                       "tables": [{"file": "tables/costs.csv", "caption": "Params and GMACs per config."}],
                       "figures": [{"file": "figures/costs_bars.png", "caption": "GMACs per config."}]},
                      tmp_path / "stages" / "costs.json")
    write_json_atomic({"stage": "eval", "seconds": 3.0, "proxy": ["miou_proxy comes from a proxy segmenter."],
                       "tables": [{"file": "tables/evaluation.csv", "caption": "Quality per method."}]},
                      tmp_path / "stages" / "eval.json")
    return ctx


def test_report_from_stage_records(run_folder):
    ctx = run_folder
    path = write_report(ctx.out, ctx.meta())
    text = path.read_text()
    assert not list(ctx.out.glob(".report.md.tmp*"))
    # stage sections in order, with captions, a rounded table and the figure link
    assert text.index("Costs: parameters and GMACs") < text.index("Evaluation and return on investment")
    assert "**Params and GMACs per config.** ([tables/costs.csv](tables/costs.csv))" in text
    assert "93,048,003" in text and "281.4" in text and "In every row: `preset` = x." in text
    assert "![GMACs per config.](figures/costs_bars.png)" in text and "*Figure: GMACs per config.*" in text
    assert "- Counted with fvcore." in text
    # the eval record points at a table that was never written
    assert "`tables/evaluation.csv` is missing" in text
    # wall time, missing stages with their commands, provenance and proxies
    assert "| costs | 12.3 |" in text and "| bench | not run |" in text
    assert "**Missing stages:** `bench`, `train`, `probe`" in text
    assert f"python run_analysis.py probe --out {ctx.out}" in text
    assert "## Provenance" in text and "- seed: `7`" in text and "- torch: `" in text
    assert "git commit" in text or ctx.meta()["git_commit"] is None
    assert "- miou_proxy comes from a proxy segmenter." in text


def test_report_stage_records_what_it_included(run_folder):
    from analysis.stages import report as report_stage

    summary = report_stage.run(run_folder)
    assert summary["stages_included"] == ["costs", "eval"]
    assert summary["stages_missing"] == ["bench", "train", "probe"]
    assert (run_folder.out / summary["report"]).is_file()


def test_report_for_existing_checkpoints_does_not_ask_for_training(run_folder, tmp_path):
    from analysis.stages import report as report_stage

    run_folder.checkpoints = tmp_path / "ckpts"
    summary = report_stage.run(run_folder)
    assert summary["stages_missing"] == ["bench", "probe"]
    text = (run_folder.out / "report.md").read_text()
    assert f"evaluated checkpoints (not trained in this run): `{tmp_path / 'ckpts'}`" in text
    assert "| train |" not in text


def test_report_with_no_stages(tmp_path):
    text = build_report(tmp_path, {"preset": "synthetic", "quick": True})
    assert "**Missing stages:** `costs`, `bench`, `train`, `probe`, `eval`" in text
    assert "--quick" in text and "Nothing recorded as proxy" in text
    assert json.dumps(text)  # plain text


@pytest.fixture
def no_inception_weights(tmp_path, monkeypatch):
    """An empty torch hub cache: the eval stage falls back to fd_proxy_features."""
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def tiny_checkpoints(root, norms=("spade", "clade")):
    from models import build_generator, save_generator_dir

    for norm in norms:
        save_generator_dir(build_generator("synthetic", norm, ngf=4), root / "checkpoints" / norm)


def test_eval_stage_on_tiny_generators(tmp_path, no_inception_weights):
    from analysis.stages import eval as eval_stage

    tiny_checkpoints(tmp_path)
    ctx = RunContext(out=tmp_path, quick=True, extra={"eval_images": 8, "eval_proxy_steps": 4})
    summary = eval_stage.run(ctx)
    table = pd.read_csv(tmp_path / "tables" / "evaluation.csv")
    assert table["norm"].tolist() == ["spade", "clade", "real"]
    assert {"fd_proxy_features", "miou_proxy", "accuracy_proxy", "gmacs_fvcore", "latency_ms"} <= set(table)
    assert table["fid"].isna().all() and summary["notes"][0].startswith("FID is n/a")
    assert table.loc[:1, ["params", "gmacs_fvcore", "latency_ms"]].gt(0).all().all()
    assert table["segmenter"].str.startswith("proxy (trained by the toolkit on 64 real images, 4 steps)").all()
    for entry in summary["tables"] + summary["figures"]:
        assert (tmp_path / entry["file"]).is_file() and entry["caption"].endswith(".")
    assert (tmp_path / "tables" / "evaluation.md").read_text().startswith("| method")


def test_eval_stage_with_a_torchscript_segmenter(tmp_path, no_inception_weights):
    import torch
    from torch import nn

    from analysis.stages import eval as eval_stage

    class EightClasses(nn.Module):
        def forward(self, x):
            return torch.cat([x, x, x[:, :2]], 1)

    path = tmp_path / "seg.pt"
    torch.jit.save(torch.jit.script(EightClasses()), str(path))
    tiny_checkpoints(tmp_path, norms=("clade",))
    ctx = RunContext(out=tmp_path, quick=True, extra={"eval_images": 8, "eval_proxy_steps": 4, "segmenter": path})
    summary = eval_stage.run(ctx)
    table = pd.read_csv(tmp_path / "tables" / "evaluation.csv")
    assert {"miou", "accuracy"} <= set(table) and "miou_proxy" not in table
    assert table["segmenter"].iloc[0] == "seg.pt (user segmenter, imagenet input)"
    # no Inception weights here, so a proxy is still trained for the Frechet distance
    assert "fd_proxy_features" in summary["proxy"][0]
