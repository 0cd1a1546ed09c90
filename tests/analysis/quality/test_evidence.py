"""The evidence the report rests on: identical generators never differ, a CLADE ablation that changes
nothing, known answers of the scenes' law, Findings regenerated from the tables."""
import pandas as pd
import pytest
import torch

from analysis.quality import stats
from analysis.report import claims as C
from analysis.report import findings as F
from analysis.quality import seeds as quality_seeds
from analysis.quality import segmenters
from analysis.probe.variance import capture_modulation_statistics
from analysis.report.assemble import build_report, run_tables
from analysis.stages.eval import generate
from data.synthetic import SyntheticScenes, expected_image
from models import build_generator


@pytest.fixture(scope="module")
def scenes():
    items = [SyntheticScenes(12, size=(32, 32), seed=3, with_dist=True)[i] for i in range(12)]
    return {k: torch.stack([item[k] for item in items]) for k in ("label", "instance", "image", "dist")}


def _scored(generator, samples, segmenter, extractors, real, seed):
    images = generate(generator, samples, 4, "cpu")
    scores = quality_seeds.image_scores(images, samples["label"], segmenter, extractors, 4, "cpu")
    return quality_seeds.quality_row(scores, real, extractors, suffix="_proxy", n_boot=50, seed=seed)


def test_two_identical_generators_are_never_better_nor_worse(scenes):
    torch.manual_seed(0)
    segmenter = segmenters.train_proxy_segmenter(scenes["image"], scenes["label"], 8, steps=2, seed=0,
                                                   progress=False)
    extractors = {"fd_proxy_features": (segmenter.features, None, 2)}
    real = quality_seeds.image_scores(scenes["image"], scenes["label"], segmenter, extractors, 4, "cpu")
    rows = []
    for seed in range(3):   # per seed: one model, scored once as "CLADE" and once as "CLADE-ICPE"
        torch.manual_seed(seed)
        G = build_generator("synthetic", "clade", ngf=4, crop_size=32).eval()
        row = _scored(G, scenes, segmenter, extractors, real, seed)
        assert row["miou_proxy_boot_low"] <= row["miou_proxy"] <= row["miou_proxy_boot_high"]
        rows += [{"run": r, "method": m, "norm": "clade", "seed": seed, "steps": 1, **row}
                 for r, m in (("clade", "CLADE"), ("clade-icpe", "CLADE-ICPE"))]
    converged = pd.DataFrame({"method": ["clade", "clade-icpe"], "converged": True})
    rows = C.decide(C.quality_comparisons({"quality_seeds": pd.DataFrame(rows)}), converged)
    assert {r.metric for r in rows} == {"fd_proxy_features", "miou_proxy", "accuracy_proxy"}
    assert all(r.difference.estimate == 0 for r in rows)
    assert {r.verdict for r in rows} == {stats.NOT_SHOWN}, [(r.metric, r.verdict) for r in rows]


def test_class_mean_ablation_of_clade_changes_nothing(scenes):
    torch.manual_seed(1)
    G = build_generator("synthetic", "clade", ngf=4, crop_size=32).eval()
    samples = {k: scenes[k] for k in ("label", "instance")}
    stats = capture_modulation_statistics(G, [samples], progress=False)
    plain = generate(G, samples, 4, "cpu")
    ablated = quality_seeds.ablated_images(G, samples, stats, None, 4, "cpu")
    assert torch.allclose(plain, ablated, atol=1e-5)
    stages = quality_seeds.resolution_stages(stats)
    assert len(stages) >= 2 and sum(map(len, stages.values())) == len(stats.layers)
    # while a SPADE's class means do change its output
    S = build_generator("synthetic", "spade", ngf=4, crop_size=32).eval()
    stats = capture_modulation_statistics(S, [samples], progress=False)
    assert (generate(S, samples, 4, "cpu") - quality_seeds.ablated_images(S, samples, stats, None, 4, "cpu")).abs().max() > 1e-3


def test_findings_are_regenerated_from_the_tables(tmp_path):
    (tmp_path / "tables").mkdir()
    seeds = pd.DataFrame([{"run": r, "method": m, "norm": r, "seed": s, "steps": 10, "miou_proxy": v + 0.01 * s}
                          for s in range(3) for r, m, v in (("spade", "SPADE", 0.5), ("clade", "CLADE", 0.2))])
    seeds.to_csv(tmp_path / "tables" / "quality_seeds.csv", index=False)
    pd.DataFrame({"method": ["spade", "clade"], "converged": True}).to_csv(tmp_path / "tables" / "convergence.csv",
                                                                            index=False)
    report = build_report(tmp_path, {"preset": "synthetic"}, stages=())
    findings = report.split("## 1. Findings\n\n")[1].split("\n## ")[0]
    assert findings.strip() == F.render_findings(F.findings(run_tables(tmp_path))).strip()
    assert "| CLADE's quality is no worse than SPADE's | **contradicted** | miou_proxy CLADE - SPADE = -0.3 [" in findings
    # the same numbers for both: no longer contradicted, read from the changed table
    seeds.assign(miou_proxy=0.3).to_csv(tmp_path / "tables" / "quality_seeds.csv", index=False)
    again = build_report(tmp_path, {"preset": "synthetic"}, stages=())
    assert "(0.3 vs 0.3; n = 3 vs 3 seeds)" in again and "**contradicted**" not in again.split("## 2.")[0]


def test_probing_a_checkpoint_uses_the_small_default_budget_and_says_so(tmp_path):
    from analysis.context import RunContext
    from analysis.options import ProbeOptions
    from analysis.stages import probe as stage
    from models import save_generator_dir

    save_generator_dir(build_generator("synthetic", "spade", ngf=4, crop_size=32), tmp_path / "g")
    ctx = RunContext(out=tmp_path / "out", quick=True, checkpoint=(str(tmp_path / "g"),), probe=ProbeOptions(checkpoint_images=2))
    summary = stage.run(ctx).record()
    ablation = pd.read_csv(tmp_path / "out" / "tables" / "probe_ablation.csv")
    assert set(ablation.ablated) == {"all"} and (ablation.images == 2).all()
    assert "2 images, ablation on 2 (all layers at once only" in summary["notes"][0]


def test_known_answer_columns_of_the_law_and_of_a_flat_image():
    data = SyntheticScenes(6, size=(32, 32), seed=5, first_index=40, with_dist=False)
    items = [data[i] for i in range(6)]
    expected = quality_seeds.expected_images([item["path"] for item in items], 32)
    assert torch.equal(expected[2], torch.from_numpy(expected_image(42, seed=5, size=32)))
    instance = torch.stack([item["instance"][0] for item in items])
    law = quality_seeds.known_answer_row(quality_seeds.known_answer_energies(expected, expected, instance), n_boot=20)
    assert set(law) == {f"{c}{end}" for c in ("shading_error", "base_colour_error") for end in ("", "_boot_low",
                                                                                                 "_boot_high")}
    assert max(law.values()) < 1e-20 and min(law.values()) >= 0     # float64 lstsq: zero up to rounding
    flat = expected.clone()            # each instance painted with its own mean colour: no shading at all
    for n in range(len(flat)):
        for k in instance[n].unique():
            mask = instance[n] == k
            flat[n][:, mask] = flat[n][:, mask].mean(1, keepdim=True)
    row = quality_seeds.known_answer_row(quality_seeds.known_answer_energies(flat, expected, instance), n_boot=20)
    assert row["shading_error"] == pytest.approx(1.0, abs=1e-12)
    assert row["base_colour_error"] == pytest.approx(0.0, abs=1e-12)
    assert quality_seeds.expected_images(["cityscapes/val/a.png"], 32) is None
