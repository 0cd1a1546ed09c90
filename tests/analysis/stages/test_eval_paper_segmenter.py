"""``run_analysis.py eval --segmenter paper``: a published segmenter, loaded from a file in its release
layout, scores the generated COCO-Stuff images with its own protocol (seeded weights, tiny run)."""
import json

import pandas as pd
import pytest
import torch

import run_analysis
from analysis.quality import metrics
from models import build_generator
from tests.analysis.quality.paper_seeded import save_released, seeded_state


def _mean_colour(images, resize=True):
    return images.float().mean((2, 3))   # 3-d stand-in for the Inception features: no proxy is trained


def test_eval_with_the_papers_deeplabv2_on_the_coco_stuff_sample(tmp_path, coco_sample_dir, monkeypatch):
    weights = save_released("deeplabv2", seeded_state("deeplabv2"), tmp_path / "weights")
    checkpoints = tmp_path / "release"
    (checkpoints / "coco").mkdir(parents=True)
    torch.save(build_generator("coco-stuff", "clade", ngf=1).state_dict(), checkpoints / "coco" / "latest_net_G.pth")
    monkeypatch.setattr(metrics, "find_inception_weights", lambda path=None: tmp_path / "inception.pth")
    monkeypatch.setattr(metrics, "load_fid_inception", lambda weights=None, device="cpu": _mean_colour)
    monkeypatch.setattr(metrics, "cleanfid_available", lambda: False)
    out = tmp_path / "out"

    code = run_analysis.main(["eval", "--out", str(out), "--preset", "coco-stuff", "--dataroot", str(coco_sample_dir),
                              "--checkpoints", str(checkpoints), "--quick", "--eval-images", "2",
                              "--eval-latency-repeats", "1", "--segmenter", "paper",
                              "--segmenter-weights", str(weights), "--segmenter-size", "64x64"])

    assert code == 0
    table = pd.read_csv(out / "tables" / "evaluation.csv")
    # the 256x256 images are scored at 64x64 (--segmenter-size), which keeps the ResNet-101 cheap here
    assert set(table.segmenter) == {"DeepLabV2, released weights, MSC (scales 1, 0.5, 0.75) at 64x64"}
    assert set(table.segmenter_kind) == {"deeplabv2"}
    assert "miou" in table and "miou_proxy" not in table
    assert table.miou.between(0, 1).all() and table.accuracy.between(0, 1).all()
    protocol = json.loads((out / "tables" / "evaluation.meta.json").read_text())["segmenter_protocol"]
    assert protocol["segmenter"] == "deeplabv2" and protocol["weights"] == str(weights)
    assert protocol["normalization"]["mean"] == [104.008, 116.669, 122.675]
    assert protocol["test_size"] == [64, 64] and protocol["unpublished"]
    record = json.loads((out / "stages" / "eval.json").read_text())
    assert record["segmenter_seconds_per_image"] > 0


def test_a_file_of_another_network_stops_the_run_with_one_line(tmp_path, capsys):
    torch.save({"seg.weight": torch.zeros(19, 512, 1, 1)}, tmp_path / "drn.pth")
    code = run_analysis.main(["eval", "--out", str(tmp_path / "out"), "--preset", "synthetic",
                              "--segmenter", "deeplabv2", "--segmenter-weights", str(tmp_path / "drn.pth")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert f"{tmp_path / 'drn.pth'}: not the released deeplabv2 weights" in err and "looks like drn-d-105" in err


@pytest.mark.parametrize("args, message", [
    (["--segmenter", "paper"], "--segmenter paper needs --segmenter-weights"),
    (["--segmenter", "no-such.pt"], "--segmenter 'no-such.pt': no such file"),
    (["--segmenter-weights", "README.md"], "--segmenter-weights README.md is read only with --segmenter paper"),
    (["--segmenter", "deeplabv2", "--segmenter-weights", "README.md", "--segmenter-size", "256"],
     "--segmenter-size '256': expected WIDTHxHEIGHT"),
])
def test_bad_segmenter_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert run_analysis.main(["eval", "--out", str(tmp_path / "out"), *args]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "stages").exists()


def test_paper_segmenter_of_a_preset_the_papers_did_not_score_is_refused_before_any_stage(tmp_path):
    with pytest.raises(SystemExit, match="the papers score no preset 'synthetic'"):
        run_analysis.main(["--out", str(tmp_path / "out"), "--segmenter", "paper", "--segmenter-weights",
                           "README.md"])
    assert not (tmp_path / "out" / "stages").exists()
