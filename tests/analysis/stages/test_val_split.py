"""The probe, convert and eval stages score one val split: the same label maps, not the training stream."""
import torch

from analysis.context import RunContext
from analysis.stages import convert as convert_stage
from analysis.stages import eval as eval_stage
from analysis.stages import probe as probe_stage
from data.synthetic import SyntheticScenes
from models import build_generator


def test_probe_convert_and_eval_read_the_same_val_label_maps(tmp_path):
    ctx = RunContext(out=tmp_path, seed=5)
    config = build_generator("synthetic", "clade-icpe", ngf=4, crop_size=32, device="meta").config
    batches, description, stand_in = probe_stage.probe_batches(ctx, config, 5, 2)
    probed = torch.cat([b["label"] for b in batches])
    evaluated = eval_stage.load_samples(ctx, "val", 5, config.output_size[0], icpe_modes=[config.icpe_mode])
    assert not stand_in and "val split (seed 5)" in description
    assert torch.equal(probed, evaluated["label"])
    assert torch.equal(torch.cat([b["dist"] for b in batches]), evaluated[eval_stage.dist_key(config.icpe_mode)])
    assert convert_stage.probe_batches is probe_stage.probe_batches
    train = torch.stack([SyntheticScenes(5, size=32, seed=5)[i]["label"] for i in range(5)])
    assert not torch.equal(probed, train)
