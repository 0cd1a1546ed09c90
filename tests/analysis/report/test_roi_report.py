"""Pareto fronts, ROI tables and plots, and report assembly from stage records."""
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis.report import assemble as report
from analysis.report import roi
from analysis.context import RunContext
from analysis.options import EvalOptions
from analysis.report.assemble import build_report, write_report
from fileio import write_json_atomic
from models import norm_spec


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


def test_coinciding_points_both_show_and_are_named():
    df = evaluation_table()
    df.loc[2, "miou_proxy"] = 0.401                      # CLADE-ICPE now on CLADE in the params panel
    fig = roi.plot_quality_vs_cost(df)
    ax = next(ax for ax in fig.axes if ax.get_xlabel().startswith("parameters") and "mIoU" in ax.get_ylabel())
    sizes = [c.get_sizes()[0] for c in ax.collections]
    assert sizes[0] == sizes[1] == roi.MARKER_SIZE and sizes[2] < roi.MARKER_SIZE   # ICPE drawn inside CLADE
    labels = {t.get_text(): t.get_window_extent() for t in ax.texts}
    assert set(labels) == {"SPADE", "CLADE", "CLADE-ICPE"}
    assert not labels["CLADE"].overlaps(labels["CLADE-ICPE"])
    plt.close(fig)


def test_an_extra_method_gets_its_own_colour_and_legend_entry():
    df = evaluation_table()
    extra = df.iloc[[1]].assign(method="My model (1x1 SPADE)", norm="mine", latency_ms=8.5)
    another = df.iloc[[0]].assign(method="Another clade", norm="clade", miou_proxy=0.3)  # a known norm, again
    df = pd.concat([df, extra, another], ignore_index=True)
    colors = roi.method_colors(roi._methods(df))
    assert len(set(colors.values())) == 5 and colors["CLADE"] == norm_spec("clade").color
    for plot in (roi.plot_quality_vs_cost, roi.plot_modulation_roi):
        fig = plot(df)
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert {"My model (1x1 SPADE)", "Another clade"} <= set(legend)
        assert all("My model (1x1 SPADE)" in [t.get_text() for t in ax.texts] for ax in fig.axes)
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
    write_json_atomic(tmp_path / "stages" / "costs.json",
                      {"stage": "costs", "seconds": 12.34, "notes": ["Counted with fvcore."],
                       "tables": [{"file": "tables/costs.csv", "caption": "Params and GMACs per config."}],
                       "figures": [{"file": "figures/costs_bars.png", "caption": "GMACs per config."}]})
    write_json_atomic(tmp_path / "stages" / "eval.json",
                      {"stage": "eval", "seconds": 3.0, "proxy": ["miou_proxy comes from a proxy segmenter."],
                       "tables": [{"file": "tables/evaluation.csv", "caption": "Quality per method."}]})
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


def write_record(out, tables):
    write_json_atomic(out / "stages" / "costs.json", {"stage": "costs", "seconds": 1.0, "tables": tables})
    return build_report(out, {}, stages=("costs",))


def test_report_table_shows_the_chosen_columns_and_names_the_rest(tmp_path):
    ctx = RunContext(out=tmp_path)
    wide = pd.DataFrame({"preset": ["x", "x", "y"], "norm": ["spade", "clade", "clade"], "params": [9, 3, 4],
                         **{f"long_column_name_number_{i}": [0.5 * i, 1.0, 2.0] for i in range(20)}})
    ctx.write_table(wide, "costs")
    text = write_record(tmp_path, [{"file": "tables/costs.csv", "caption": "Costs.",
                                    "columns": ["preset", "norm", "params", "not_in_the_csv"]}])
    assert "| preset   | norm   | params   |" in text and "long_column_name_number_0" not in text.split("\n\n")[-3]
    assert "[tables/costs.csv](tables/costs.csv) has 20 more columns: `long_column_name_number_0`, " in text
    assert pd.read_csv(tmp_path / "tables" / "costs.csv").shape == (3, 23)     # the CSV keeps everything


def test_report_narrows_wide_tables_without_a_column_choice(tmp_path):
    ctx = RunContext(out=tmp_path)
    columns = {f"some_long_quality_column_{i}": [0.1 * i, 0.2, 0.3] for i in range(14)}
    ctx.write_table(pd.DataFrame({"method": ["SPADE", "CLADE", "CLADE-ICPE"], **columns}), "short")
    ctx.write_table(pd.DataFrame({"layer": [f"up_{i}" for i in range(30)],
                                  **{k: v * 10 for k, v in columns.items()}}), "long")
    text = write_record(tmp_path, [{"file": "tables/short.csv", "caption": "Short."},
                                   {"file": "tables/long.csv", "caption": "Long."}])
    rows = [line for line in text.splitlines() if line.startswith("|") and "wall time" not in line]
    assert max(len(line) for line in rows) <= report.MAX_TABLE_WIDTH
    assert all(line.count("|") - 1 <= report.MAX_TABLE_COLUMNS for line in rows)
    # few rows: transposed, nothing left out; many rows: leading columns, the rest named
    assert "transposed: one column per CSV row" in text and "| method" in text
    assert "| some_long_quality_column_13 | 1.300" in text
    assert "[tables/short.csv](tables/short.csv) has" not in text
    assert "| layer" in text and "[tables/long.csv](tables/long.csv) has " in text


def test_report_stage_records_what_it_included(run_folder):
    from analysis.stages import report as report_stage

    summary = report_stage.run(run_folder).record()
    assert summary["stages_included"] == ["costs", "eval"]
    assert summary["stages_missing"] == ["bench", "train", "probe", "convert"]
    assert (run_folder.out / summary["report"]).is_file()


def test_report_for_existing_checkpoints_does_not_ask_for_training(run_folder, tmp_path):
    from analysis.stages import report as report_stage

    run_folder.checkpoints = tmp_path / "ckpts"
    summary = report_stage.run(run_folder).record()
    assert summary["stages_missing"] == ["bench", "probe", "convert"]
    text = (run_folder.out / "report.md").read_text()
    assert f"evaluated checkpoints (not trained in this run): `{tmp_path / 'ckpts'}`" in text
    assert "| train |" not in text


def test_report_with_no_stages(tmp_path):
    text = build_report(tmp_path, {"preset": "synthetic", "quick": True})
    assert "**Missing stages:** `costs`, `bench`, `train`, `probe`, `convert`, `eval`" in text
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
    ctx = RunContext(out=tmp_path, quick=True, eval=EvalOptions(images=8, proxy_steps=4))
    summary = eval_stage.run(ctx).record()
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
    ctx = RunContext(out=tmp_path, quick=True, eval=EvalOptions(images=8, proxy_steps=4, segmenter=path))
    summary = eval_stage.run(ctx).record()
    table = pd.read_csv(tmp_path / "tables" / "evaluation.csv")
    assert {"miou", "accuracy"} <= set(table) and "miou_proxy" not in table
    assert table["segmenter"].iloc[0] == "seg.pt (user segmenter, imagenet input)"
    # no Inception weights here, so a proxy is still trained for the Frechet distance
    assert "fd_proxy_features" in summary["proxy"][0]


def test_eval_stage_scores_every_generator_folder(tmp_path, no_inception_weights):
    from analysis.stages import eval as eval_stage
    from models import build_generator, save_generator_dir

    tiny_checkpoints(tmp_path)
    save_generator_dir(build_generator("synthetic", "spade", ngf=4, spade_kernel_size=1),
                       tmp_path / "checkpoints" / "spade-1x1")
    (tmp_path / "checkpoints" / "notes").mkdir()   # a folder without weights is not a generator
    save_generator_dir(build_generator("synthetic", "clade-icpe", ngf=4), tmp_path / "elsewhere" / "generator")
    ctx = RunContext(out=tmp_path, quick=True,
                     eval=EvalOptions(images=8, proxy_steps=4,
                                      generator=(f"mine={tmp_path / 'elsewhere' / 'generator'}",)))
    summary = eval_stage.run(ctx).record()
    table = pd.read_csv(tmp_path / "tables" / "evaluation.csv")
    assert table["norm"].tolist() == ["spade", "clade", "spade-1x1", "mine", "real"]
    assert table["method"].tolist() == ["SPADE", "CLADE", "spade-1x1", "mine", "real images"]
    assert summary["methods"] == ["spade", "clade", "spade-1x1", "mine"]
    methods = table.set_index("norm").drop("real")
    assert methods[["fd_proxy_features", "miou_proxy", "params", "gmacs_fvcore", "latency_ms"]].notna().all().all()
    assert methods.loc["spade-1x1", "gmacs_fvcore"] < methods.loc["spade", "gmacs_fvcore"]  # 1x1 vs 3x3 convs
    assert pd.read_csv(tmp_path / "tables" / "roi.csv")["norm"].tolist() == ["spade", "clade", "spade-1x1", "mine"]
    assert (tmp_path / "figures" / "roi_quality_vs_cost.png").is_file()


def test_generator_folders_default_root_names_and_clashes(tmp_path):
    from analysis.stages.eval import generator_folders
    from models import build_generator, save_generator_dir

    tiny_checkpoints(tmp_path, norms=("clade",))
    ours = save_generator_dir(build_generator("synthetic", "clade", ngf=4), tmp_path / "runs" / "x=1" / "generator")
    ctx = RunContext(out=tmp_path)   # no --checkpoints: <out>/checkpoints
    assert generator_folders(ctx, [str(ours)]) == {"clade": tmp_path / "checkpoints" / "clade", "generator": ours}
    assert list(generator_folders(ctx, [f"clade-k1={ours}"])) == ["clade", "clade-k1"]
    assert list(generator_folders(ctx, [str(tmp_path / "checkpoints" / "clade")])) == ["clade"]  # listed once
    with pytest.raises(ValueError, match=r"'clade' names its table row and is taken by .*checkpoints/clade"):
        generator_folders(ctx, [f"clade={ours}"])
    with pytest.raises(ValueError, match="taken by the real-images row"):
        generator_folders(ctx, [f"real={ours}"])
    with pytest.raises(FileNotFoundError, match="no latest_net_G.pth there"):
        generator_folders(ctx, [str(tmp_path / "runs")])
    assert generator_folders(RunContext(out=tmp_path, checkpoints=tmp_path / "runs" / "x=1")) == {"generator": ours}


@pytest.mark.parametrize("options, message", [
    (dict(label_nc=5), r"label layout is LabelConfig\(label_nc=5, .*\), expected LabelConfig\(label_nc=8, "),
    (dict(no_instance=True), r"label layout is .*no_instance=True\), expected .*no_instance=False\)"),
    (dict(crop_size=32), r"output size \(height, width\) is \(32, 32\), expected \(64, 64\)"),
], ids=["label_nc", "no_instance", "output_size"])
def test_eval_stage_rejects_a_generator_that_differs_from_the_first(tmp_path, options, message):
    from analysis.stages import eval as eval_stage
    from models import build_generator, save_generator_dir

    tiny_checkpoints(tmp_path, norms=("spade",))
    odd = save_generator_dir(build_generator("synthetic", "clade", ngf=4, **options), tmp_path / "checkpoints" / "odd")
    with pytest.raises(ValueError, match=message) as error:
        eval_stage.run(RunContext(out=tmp_path, quick=True, eval=EvalOptions(images=8)))
    assert f"generator folder {odd}:" in str(error.value)
    assert f"like {tmp_path / 'checkpoints' / 'spade'} (the first generator" in str(error.value)


@pytest.mark.parametrize("dataroot", [None, "datasets/ade20k"], ids=["synthetic", "real"])
def test_context_from_a_tables_meta_reads_the_same_data(tmp_path, dataroot):
    ctx = RunContext(out=tmp_path / "a", preset="ade20k", seed=3, quick=True,
                     dataroot=None if dataroot is None else Path(dataroot))
    table = ctx.write_table(pd.DataFrame({"x": [1]}), "t")
    meta = json.loads(table.with_suffix(".meta.json").read_text())
    again = RunContext.from_meta(meta, out=tmp_path / "b", device="cpu")
    assert (again.preset, again.seed, again.quick, again.dataroot) == ("ade20k", 3, True, ctx.dataroot)
    assert again.out == tmp_path / "b"
