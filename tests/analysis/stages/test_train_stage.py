"""The train stage's seeds and variants: folders, variant records, coarse masks."""
import json

import pandas as pd
import torch

from analysis.context import RunContext
from analysis.options import TrainOptions
from analysis.stages import train as stage
from data.neighbourhood import coarsen_labels
from models import load_generator_dir


def test_coarsen_labels_keeps_size_and_makes_blocks():
    labels = torch.arange(16).reshape(1, 4, 4)
    coarse = coarsen_labels(labels, 2)
    assert coarse.shape == labels.shape and coarse.dtype == labels.dtype
    assert (coarse[0, :2, :2] == labels[0, 0, 0]).all() and (coarse[0, 2:, 2:] == labels[0, 2, 2]).all()
    assert coarsen_labels(labels, 1) is labels


def test_seeds_and_variants_get_their_own_folders_and_records(tmp_path):
    options = TrainOptions(steps=2, ngf=4, ndf=8, batch_size=2, crop_size=32, seeds=2, norms=("spade", "clade"),
                           kernel_variants=True, mask_factor=4)
    summary = stage.run(RunContext(out=tmp_path, quick=True, train=options)).record()
    table = pd.read_csv(tmp_path / "tables" / "training.csv")
    runs = ["spade", "spade-1x1", "spade-mask4", "clade", "clade-mask4"]
    assert list(table.run) == runs + [f"{r}-s1" for r in runs] and (table.steps == 2).all()
    assert set(table.seed) == {0, 1} and "2 seed(s)" in summary["budget"]
    variant = json.loads((tmp_path / "checkpoints" / "spade-mask4-s1" / stage.VARIANT_FILE).read_text())
    assert variant == {**variant, "norm": "spade", "seed": 1, "mask_factor": 4, "mask_resolution": "8x8", "steps": 2}
    assert load_generator_dir(tmp_path / "checkpoints" / "spade-1x1").config.spade_kernel_size == 1
    # seed 0 of a method stays where other code loads it; another seed trains other weights
    a = load_generator_dir(tmp_path / "checkpoints" / "clade").state_dict()
    b = load_generator_dir(tmp_path / "checkpoints" / "clade-s1").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
