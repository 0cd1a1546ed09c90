"""The eval stage on the official release layout, with the official FID protocol (tiny, CPU)."""
import json
import logging

import pandas as pd
import torch

from analysis.quality import metrics
from analysis.context import RunContext
from analysis.options import EvalOptions
from analysis.stages import eval as eval_stage
from models import build_generator
from tests.data.fake_layouts import write_ade20k


def _mean_colour(images, resize=True):
    return images.float().mean((2, 3))   # 3-d stand-in for the Inception features


def test_eval_scores_release_folders_with_the_official_protocol(tmp_path, monkeypatch, caplog):
    dataroot = write_ade20k(write_ade20k(tmp_path / "ade", "train", n=64), "val", n=6)
    checkpoints = tmp_path / "release"
    for folder, norm in (("ade20k", "clade"), ("ade20k_pretrained", "spade")):
        (checkpoints / folder).mkdir(parents=True)
        torch.save(build_generator("ade20k", norm, ngf=1).state_dict(), checkpoints / folder / "best_net_G.pth")
    monkeypatch.setattr(metrics, "find_inception_weights", lambda path=None: tmp_path / "inception.pth")
    monkeypatch.setattr(metrics, "load_fid_inception", lambda weights=None, device="cpu": _mean_colour)
    monkeypatch.setattr(metrics, "cleanfid_available", lambda: False)
    ctx = RunContext(out=tmp_path / "out", preset="ade20k", dataroot=dataroot / "ADEChallengeData2016",
                     checkpoints=checkpoints, quick=True,
                     eval=EvalOptions(images=3, proxy_steps=1, fid_protocol="official"))

    with caplog.at_level(logging.INFO, logger="models.release"):
        summary = eval_stage.run(ctx).record()

    assert summary["methods"] == ["clade", "spade"]
    assert "ade20k/best_net_G.pth: preset ade20k (folder name), norm clade" in caplog.text
    table = pd.read_csv(ctx.tables_dir / "evaluation.csv")
    assert table["fid"].notna().all()
    meta = json.loads((ctx.tables_dir / "evaluation.meta.json").read_text())
    assert meta["fid_reference"]["protocol"] == "official"
    assert "computed from 64 training images" in meta["fid_reference"]["reference"]
    assert any("official protocol" in note for note in summary["notes"])
