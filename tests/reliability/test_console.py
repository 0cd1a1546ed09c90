"""Reliability of what a newcomer reads: the console of set-up, training and the probe, --help
and the README's examples.

Each test is one thing a newcomer met and was misled or left waiting by.
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cli import train
from analysis.probe.ablation import ablation_effects
from analysis.probe.variance import capture_modulation_statistics
from models import build_generator
from models.presets import DiscriminatorConfig, GeneratorConfig
from tests.analysis.probe.test_probe import random_batches
from tests.training.test_trainer import TinyScenes, tiny_trainer
from training.recipe import recipe_from_dict
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.reliability("clear_error")
def test_classes_missing_from_the_statistics_are_said_once(caplog):
    """'8 classes ([1, ..., 8]) missing from some layer's statistics' was printed 15 times in one run."""
    G = build_generator("synthetic", "clade", ngf=4).eval()
    batches = [dict(b, label=torch.zeros_like(b["label"]), instance=torch.zeros_like(b["instance"]))
               for b in random_batches(1)]   # class 0 only: every other class is unseen
    stats = capture_modulation_statistics(G, batches, progress=False)
    with caplog.at_level(logging.INFO, logger="analysis.probe.ablation"):
        for _ in range(3):   # three generators of one run
            ablation_effects(G, stats, batches, per_layer=False, progress=False)
    said = [r for r in caplog.records if "missing from some layer's statistics" in r.getMessage()
            and r.levelno >= logging.INFO]
    assert len(said) <= 1, [r.getMessage() for r in said]   # 0 when an earlier test said it in this process
    count = G.config.class_nc - 1
    assert all(r.getMessage().startswith(f"probe: {count} classes ([1, 2,") for r in said)


@pytest.mark.reliability("wrong_run")
def test_training_names_the_run_and_says_how_long_it_will_take(tmp_path, caplog):
    """Progress bars said 'train spade' for the spade-1x1 run and 'train clade' for the conversion fine-tune,
    and the fine-tune of 50 steps (5 minutes) did not say how long it would take."""
    with caplog.at_level(logging.INFO, logger="training.loop"):
        tiny_trainer("clade").fit(TinyScenes(), steps=3, out_dir=tmp_path, progress=False, label="spade-to-clade-ft")
    lines = [r.getMessage() for r in caplog.records if r.name == "training.loop"]
    eta = [m for m in lines if m.startswith("train spade-to-clade-ft: the first step took ")]
    assert len(eta) == 1 and re.search(r"took \d+\.\d\d s; the 2 steps left take up to about \d+ s$", eta[0]), lines


@pytest.mark.reliability("wrong_run")
def test_help_states_the_checkpoint_size_of_each_norm():
    """train.py --help stated CLADE's checkpoint size (872 MB at ngf 64) while SPADE's is 1.17 GB."""
    sizes = {}
    for norm in ("spade", "clade", "clade-icpe"):
        for ngf in (64, 16):
            args = train.build_parser().parse_args(["--preset", "synthetic", "--norm", norm, "--ngf", str(ngf)])
            options = train.resolve_options(args)
            trainer = Trainer(g_config=GeneratorConfig(**options["generator"]),
                              d_config=DiscriminatorConfig(**options["discriminator"]),
                              recipe=replace(recipe_from_dict(options["recipe"]), use_vgg=False), device="meta")
            sizes[norm, ngf] = trainer.estimated_checkpoint_bytes()
    for ngf, scale in ((64, 1e6), (16, 1e6)):   # CLADE-ICPE adds a few kB: the same size as stated
        assert round(sizes["clade", ngf] / scale) == round(sizes["clade-icpe", ngf] / scale)
    stated = (f"SPADE {sizes['spade', 64] / 1e9:.2f} GB, CLADE and CLADE-ICPE {sizes['clade', 64] / 1e6:.0f} MB "
              f"(--ngf 16:\n{sizes['spade', 16] / 1e6:.0f} MB and {sizes['clade', 16] / 1e6:.0f} MB)")
    assert stated in train.__doc__, stated
    assert stated.replace("\n", " ") in " ".join(train.build_parser().format_help().split("\n"))


@pytest.mark.reliability("clear_error")
def test_setup_says_what_it_installs_before_installing():
    """scripts/setup.sh printed nothing for 166 s while it installed."""
    lines = (ROOT / "scripts" / "setup.sh").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line and not line.lstrip().startswith("#"))
    said = [i for i, line in enumerate(lines[:install]) if re.match(r'\s*echo "setup\.sh: installing .*into \.venv', line)]
    assert said, "setup.sh says nothing before pip install"
    assert "pinned torch torchvision" in "\n".join(lines[:install])   # the versions it installs, from constraints.txt
    assert any(re.match(r'\s*echo "setup\.sh: \.venv ready in', line) for line in lines[install:])


def _bash_blocks(markdown: str) -> list[str]:
    """The ```bash blocks of a Markdown text, continuation lines joined."""
    return [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)]


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("readme", ["README.md", "examples/README.md"])
def test_readme_examples_run_without_vgg_weights_or_a_run_number(readme):
    """The README's plugin example failed without VGG weights (exit 2), and its examples hard-coded
    runs/00001-... although the run number depends on what ran before."""
    commands = [line.split(" # ")[0] for block in _bash_blocks((ROOT / readme).read_text())
                for line in block.splitlines() if not line.startswith("#")]
    assert commands
    hard_coded = [c for c in commands if re.search(r"runs/\d{5}-", c)]
    assert not hard_coded, hard_coded
    training = [c for c in commands if re.search(r"\btrain\.py\b", c) and "--dry-run" not in c
                and "--resume" not in c and "--dataroot" not in c]
    without_vgg = [c for c in training if "--no-vgg" not in c and "--vgg-weights" not in c]
    assert not without_vgg, without_vgg
