"""The evidence the report rests on: ties inside the noise, a CLADE ablation that changes nothing,
Findings regenerated from the tables."""
import pandas as pd
import pytest
import torch

from analysis.report import findings as F
from analysis.quality import seeds as quality_seeds
from analysis.quality import segmenters
from analysis.probe.variance import capture_modulation_statistics
from analysis.report.assemble import build_report, run_tables
from analysis.stages.eval import generate
from data.synthetic import SyntheticScenes
from models import build_generator


@pytest.fixture(scope="module")
def scenes():
    items = [SyntheticScenes(12, size=(32, 32), seed=3, with_dist=True)[i] for i in range(12)]
    return {k: torch.stack([item[k] for item in items]) for k in ("label", "instance", "image", "dist")}


def _scored(generator, samples, segmenter, extractors, real, seed):
    images = generate(generator, samples, 4, "cpu")
    scores = quality_seeds.image_scores(images, samples["label"], segmenter, extractors, 4, "cpu")
    return quality_seeds.quality_row(scores, real, extractors, suffix="_proxy", n_boot=50, seed=seed)


def test_two_identical_generators_are_within_noise(scenes):
    torch.manual_seed(0)
    segmenter = segmenters.train_proxy_segmenter(scenes["image"], scenes["label"], 8, steps=2, seed=0,
                                                   progress=False)
    extractors = {"fd_proxy_features": (segmenter.features, None, 2)}
    real = quality_seeds.image_scores(scenes["image"], scenes["label"], segmenter, extractors, 4, "cpu")
    rows = []
    for seed in range(3):   # per seed: one model, scored once as "SPADE" and once as "CLADE"
        torch.manual_seed(seed)
        G = build_generator("synthetic", "clade", ngf=4, crop_size=32).eval()
        row = _scored(G, scenes, segmenter, extractors, real, seed)
        assert row["miou_proxy_boot_low"] <= row["miou_proxy"] <= row["miou_proxy_boot_high"]
        rows += [{"method": m, "norm": n, "seed": seed, "steps": 1, **row} for m, n in (("SPADE", "spade"),
                                                                                     ("CLADE", "clade"))]
    lines = [f for f in F.quality_findings({"quality_seeds": pd.DataFrame(rows)}) if f.key == "clade_vs_spade"]
    assert {f.claim.split("[")[-1] for f in lines} == {"fd_proxy_features]", "miou_proxy]"}
    assert all(f.verdict == F.WITHIN_NOISE for f in lines), [(f.claim, f.verdict) for f in lines]


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
    seeds = pd.DataFrame([{"method": m, "norm": n, "seed": s, "steps": 10, "miou_proxy": v + 0.01 * s}
                          for s in range(3) for m, n, v in (("SPADE", "spade", 0.5), ("CLADE", "clade", 0.2))])
    seeds.to_csv(tmp_path / "tables" / "quality_seeds.csv", index=False)
    report = build_report(tmp_path, {"preset": "synthetic"}, stages=())
    findings = report.split("## 1. Findings\n\n")[1].split("\n## ")[0]
    assert findings.strip() == F.render_findings(F.findings(run_tables(tmp_path))).strip()
    assert "CLADE's quality is no worse than SPADE's [miou_proxy] | CLADE 0.21 vs SPADE 0.51" in findings
    assert "**not supported**" in findings
    # the same numbers for both: a tie, now read from the changed table
    seeds.assign(miou_proxy=0.3).to_csv(tmp_path / "tables" / "quality_seeds.csv", index=False)
    again = build_report(tmp_path, {"preset": "synthetic"}, stages=())
    assert "CLADE 0.3 vs SPADE 0.3" in again and "**not supported**" not in again.split("## 2.")[0]


def test_quality_findings_compare_within_each_mask_resolution():
    rows = [{"method": m, "norm": n, "seed": s, "mask_resolution": r, "miou_proxy": v + 0.01 * s}
            for s in range(3) for r in ("32x32", "8x8") for m, n, v in (("SPADE", "spade", 0.5), ("CLADE", "clade", 0.5))]
    rows.append({"method": "real images", "norm": "real", "seed": 0, "miou_proxy": 0.9})
    lines = [f for f in F.quality_findings({"quality_seeds": pd.DataFrame(rows)}) if f.key == "clade_vs_spade"]
    assert [f.claim for f in lines] == [f"CLADE's quality is no worse than SPADE's (masks {r}) [miou_proxy]" for r in ("32x32", "8x8")]
    assert all(f.verdict == F.WITHIN_NOISE for f in lines)


def test_probing_a_checkpoint_uses_the_small_default_budget_and_says_so(tmp_path):
    from analysis.context import RunContext
    from analysis.options import ProbeOptions
    from analysis.stages import probe as stage
    from models import save_generator_dir

    save_generator_dir(build_generator("synthetic", "spade", ngf=4, crop_size=32), tmp_path / "g")
    ctx = RunContext(out=tmp_path / "out", quick=True, probe=ProbeOptions(checkpoint=tmp_path / "g", checkpoint_images=2))
    summary = stage.run(ctx).record()
    ablation = pd.read_csv(tmp_path / "out" / "tables" / "probe_ablation.csv")
    assert set(ablation.ablated) == {"all"} and (ablation.images == 2).all()
    assert "2 images, ablation on 2 (all layers at once only" in summary["notes"][0]
