"""Published numbers beside the toolkit's counts: every definition computed, none tuned."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.report import paper
from analysis.costs.layers import generator_costs
from models.presets import generator_config

EXAMPLE = Path(__file__).resolve().parents[3] / "reports" / "example" / "tables"


def hand_made_table():
    """Backbone: one conv (10 params, 8 GMACs) and an add (2). Extra: a conv (4 params, 1 GMAC),
    an embedding lookup (complete only: 0.5) and the parameter-free BatchNorm (fvcore 1)."""
    return pd.DataFrame({
        "preset": "toy", "norm": "spade",
        "role": ["backbone", "backbone", "modulation_spade_shared", "modulation_clade_affine", "modulation_norm"],
        "params": [10, 0, 4, 0, 0],
        "gmacs_fvcore": [8.0, 0.0, 1.0, 0.0, 1.0],
        "gmacs_complete": [8.0, 2.0, 1.0, 0.5, 1.0],
        "ops": ["conv", "add", "conv", "embedding", "batch_norm"],
    })


def published(pct_params, pct_computation):
    return pd.DataFrame([
        {"preset": "toy", "norm": "spade", "quantity": "params", "published_pct": pct_params, "source": "test"},
        {"preset": "toy", "norm": "spade", "quantity": "computation", "published_pct": pct_computation,
         "source": "test"}])


def pick(table, **where):
    rows = table
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, where
    return rows.iloc[0]


def test_every_definition_is_computed_from_the_per_layer_rows():
    table = paper.paper_comparison(hand_made_table(), published=published(40.0, 25.0))
    params = table[table.quantity == "params"]
    assert len(params) == 2                       # the BatchNorm has no params: no second "extra"
    assert pick(params, denominator="backbone").computed_pct == pytest.approx(40.0)
    assert pick(params, denominator="whole generator").computed_pct == pytest.approx(100 * 4 / 14)
    comp = table[table.quantity == "computation"]
    assert len(comp) == 2 * 2 * 4                 # extras x denominators x countings (no summary given)
    c = lambda **kw: pick(comp, **kw).computed_pct
    assert c(extra="norm layers", denominator="backbone", counting="fvcore MACs") == pytest.approx(100 * 2 / 8)
    assert c(extra="norm layers", denominator="whole generator", counting="fvcore MACs") == pytest.approx(100 * 2 / 10)
    assert c(extra="norm layers", denominator="backbone", counting="complete MACs") == pytest.approx(100 * 2.5 / 10)
    # FLOPs: convs count 2 per MAC, the rest 1
    assert c(extra="norm layers", denominator="backbone", counting="fvcore FLOPs") == pytest.approx(100 * 3 / 16)
    assert c(extra="norm layers", denominator="backbone", counting="complete FLOPs") == pytest.approx(100 * 3.5 / 18)
    # without the BatchNorm, which then counts as work the generator does anyway
    assert c(extra="norm layers minus BatchNorm", denominator="backbone", counting="fvcore MACs") == \
        pytest.approx(100 * 1 / 9)
    assert c(extra="norm layers minus BatchNorm", denominator="whole generator",
             counting="complete MACs") == pytest.approx(100 * 1.5 / 12.5)


def test_a_published_figure_is_reproduced_only_to_its_rounding():
    table = paper.paper_comparison(hand_made_table(), published=published(40.0, 25.0))
    hits = table[table.reproduces]
    assert set(zip(hits.quantity, hits.denominator, hits.counting)) == {
        ("params", "backbone", "params"), ("computation", "backbone", "fvcore MACs"),
        ("computation", "backbone", "complete MACs")}
    verdicts = paper.paper_verdicts(table).set_index("quantity")
    assert verdicts.loc["params", "reproduced"] and "reproduced by: norm layers / backbone" in \
        verdicts.loc["params", "statement"]
    missed = paper.paper_comparison(hand_made_table(), published=published(40.01, 24.9))
    near_miss = paper.paper_verdicts(missed)
    assert not near_miss.reproduced.any()
    assert near_miss.statement.str.contains("no stated definition reproduces").all()
    # the implied denominator: 4 extra params are 40.01 % of 9.9975 params
    assert pick(missed, quantity="params", denominator="backbone").implied_denominator == pytest.approx(4 / 0.4001)


@pytest.fixture(scope="module")
def ade20k_per_layer():
    """The per-layer cost table of the ade20k SPADE and CLADE generators, recomputed (fvcore traces
    real tensors: the meta device cannot be traced; about 10 s on CPU)."""
    tables = [generator_costs(generator_config("ade20k", norm), device="cpu").assign(preset="ade20k", norm=norm)
              for norm in ("spade", "clade")]
    return pd.concat(tables, ignore_index=True)


def test_published_ade20k_overheads_are_not_reproduced_and_the_report_says_so(ade20k_per_layer):
    table = paper.paper_comparison(ade20k_per_layer)
    spade_params = pick(table, norm="spade", quantity="params", denominator="backbone")
    assert spade_params.extra_amount == 28_370_304 and spade_params.denominator_amount == 68_122_179
    assert spade_params.computed_pct == pytest.approx(100 * 28_370_304 / 68_122_179)
    clade_params = pick(table, norm="clade", quantity="params", denominator="whole generator")
    assert clade_params.computed_pct == pytest.approx(100 * 3_305_088 / 71_427_267)
    spade_macs = pick(table, norm="spade", quantity="computation", extra="norm layers", denominator="backbone",
                      counting="fvcore MACs")
    assert spade_macs.computed_pct == pytest.approx(329.1, abs=0.1)
    verdicts = paper.paper_verdicts(table)
    assert len(verdicts) == 4 and not verdicts.reproduced.any()
    assert verdicts.statement.str.startswith(("CLADE", "SPADE")).all()
    # both published parameter figures imply the same denominator, which we do not count
    implied = table[(table.quantity == "params") & (table.denominator == "backbone")].implied_denominator
    assert implied.min() == pytest.approx(72.3e6, rel=1e-3) and implied.max() == pytest.approx(72.35e6, rel=1e-3)


def test_the_example_reports_table_gives_the_same_comparison(ade20k_per_layer):
    csv = pd.read_csv(EXAMPLE / "costs_per_layer.csv")
    summary = pd.read_csv(EXAMPLE / "costs.csv")
    from_csv = paper.paper_comparison(csv)
    recomputed = paper.paper_comparison(ade20k_per_layer)
    np.testing.assert_allclose(from_csv.computed_pct, recomputed.computed_pct, rtol=1e-9)
    with_resize = paper.paper_comparison(csv, summary)
    official = with_resize[with_resize.counting == "fvcore MACs, official resize"]
    assert len(official) == 2 * 2 * 2          # (spade, clade) x extras x denominators
    clade = pick(official, norm="clade", extra="norm layers", denominator="backbone")
    assert clade.extra_amount == pytest.approx(0.0801, abs=1e-4)   # the official table's 0.080 GMACs


def test_missing_rows_and_columns_are_named():
    with pytest.raises(ValueError, match="lacks columns"):
        paper.paper_comparison(hand_made_table().drop(columns="ops"))
    with pytest.raises(ValueError, match="no per-layer rows for preset 'ade20k'"):
        paper.paper_comparison(hand_made_table())


def test_published_quality_is_set_beside_comparable_numbers_only():
    evaluation = pd.DataFrame({"method": ["SPADE"], "norm": ["spade"], "fid": [40.0], "miou": [0.35],
                               "accuracy_proxy": [0.9]})
    table = paper.paper_quality_comparison(evaluation, "ade20k").set_index(["preset", "metric"])
    assert len(table) == 12 and table.loc[("ade20k", "fid"), "published"] == 33.9
    assert table.loc[("ade20k", "fid"), "measured"] == 40.0
    assert table.loc[("ade20k", "miou"), "measured"] == pytest.approx(35.0)
    assert np.isnan(table.loc[("ade20k", "accuracy"), "measured"])
    assert "not comparable" in table.loc[("ade20k", "accuracy"), "note"]
    assert "this run evaluated 'ade20k'" in table.loc[("cityscapes", "fid"), "note"]
    assert table.loc[("coco-stuff", "miou"), "published"] == 37.4
    assert table.loc[("ade20k-outdoor", "fid"), "published"] == 63.3


def test_segmentation_scores_are_compared_with_the_papers_only_from_the_papers_segmenter():
    def table(kind, description):
        return pd.DataFrame({"norm": ["spade"], "fid": [40.0], "miou": [0.35], "accuracy": [0.7],
                             "segmenter_kind": [kind], "segmenter": [description]})

    same = paper.paper_quality_comparison(table("upernet-101", "UPerNet-101, released weights, 5 scales"),
                                          "ade20k").set_index(["preset", "metric"])
    assert same.loc[("ade20k", "miou"), "measured"] == pytest.approx(35.0)
    assert "same metric, dataset and segmenter (UPerNet-101" in same.loc[("ade20k", "miou"), "note"]
    other = paper.paper_quality_comparison(table("drn-d-105", "DRN-D-105, released weights"),
                                           "ade20k").set_index(["preset", "metric"])
    assert np.isnan(other.loc[("ade20k", "miou"), "measured"]) and np.isnan(other.loc[("ade20k", "accuracy"),
                                                                                     "measured"])
    assert "comes from DRN-D-105, released weights; the paper's from UPerNet-101" in \
        other.loc[("ade20k", "miou"), "note"]
    assert other.loc[("ade20k", "fid"), "measured"] == 40.0
    user = paper.paper_quality_comparison(table("torchscript", "seg.pt (user segmenter)"),
                                          "ade20k").set_index(["preset", "metric"])
    assert user.loc[("ade20k", "miou"), "measured"] == pytest.approx(35.0)
    assert "comparable only if it is the paper's UPerNet-101" in user.loc[("ade20k", "miou"), "note"]
