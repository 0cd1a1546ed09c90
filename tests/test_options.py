"""Typed options: defaults declared once and shown in --help, 0 kept as a value, no abbreviations,
``--checkpoint [NAME=]PATH``, negative values refused with a message naming the option."""
import gzip
import json
import re
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from cli import run_analysis
from cli import train
from analysis.context import RunContext, StageResult
from analysis.options import BenchOptions, TrainOptions, default_text, flag_name, resolve
from analysis.stages.registry import STAGES
from models import build_generator, save_generator_dir


def help_text(parser) -> str:
    return " ".join(parser.format_help().split())   # argparse wraps lines: compare on single spaces


def test_every_stage_option_is_in_help_with_its_declared_default():
    text = help_text(run_analysis.build_parser())
    for stage in STAGES:
        for f in fields(stage.options):
            assert flag_name(f, stage.name) in text, (stage.name, f.name)
            shown = default_text(f)
            if shown:
                assert " ".join(shown.split()) in text, (stage.name, f.name, shown)
    assert ("--train-steps STEPS iterations per method and seed (equal for every compared run) (default 1000; "
            "--quick 12; --budget long 3000)") in text
    assert "(default 10; on CPU 3)" in text   # --bench-repeats


def test_train_py_help_shows_defaults():
    text = help_text(train.build_parser())
    assert "steps per checkpoint; 0 = only at the end (default 500)" in text
    assert "--batch-size BATCH_SIZE images per process per step (official 1) (default 1)" in text
    assert "(default clade)" in text and "recipe option (default 0.0002)" in text


def test_defaults_follow_quick_and_the_device():
    assert resolve(TrainOptions(), quick=True).steps == 12
    default = resolve(TrainOptions(), quick=False)
    assert (default.steps, default.ngf, default.workers, default.curve_every) == (1000, 8, 0, 50)
    assert resolve(TrainOptions(), quick=True).workers == 1
    long = resolve(TrainOptions(), budget="long")
    assert (long.steps, long.seeds, long.kernel_variants, long.mask_factor, long.ngf) == (3000, 5, True, 4, 16)
    assert resolve(TrainOptions(steps=7), budget="long").steps == 7   # a given value wins over every default
    assert resolve(BenchOptions(), cuda=True).repeats == 10
    assert resolve(BenchOptions(), cuda=False).repeats == 3
    assert resolve(BenchOptions(), quick=True, cuda=True).dtypes == ("fp32",)
    ctx = RunContext(out="x", quick=True, train=TrainOptions(steps=2))
    assert (ctx.train.steps, ctx.train.ngf) == (2, 8)


def test_budget_long_is_a_run_setting_and_contradicts_quick(capsys):
    ctx = run_analysis.context_from_args(run_analysis.parse_args(["--budget", "long", "--device", "cpu"]))
    assert ctx.budget == "long" and ctx.train.steps == 3000 and ctx.options()["run"]["budget"] == "long"
    with pytest.raises(SystemExit, match="--quick and --budget long contradict each other"):
        run_analysis.context_from_args(run_analysis.parse_args(["--quick", "--budget", "long", "--device", "cpu"]))
    with pytest.raises(ValueError, match="--budget 'short'; expected one of default, long"):
        resolve(TrainOptions(), budget="short")


def test_zero_is_a_value_not_unset():
    args = run_analysis.parse_args(["--quick", "--train-max-seconds", "0", "--bench-warmup", "0",
                                    "--eval-proxy-steps", "0", "--device", "cpu"])
    ctx = run_analysis.context_from_args(args)
    assert ctx.train.max_seconds == 0 and ctx.bench.warmup == 0 and ctx.eval.proxy_steps == 0
    from analysis.stages import train as train_stage
    assert train_stage.settings(ctx)["max_seconds"] is None   # 0 = no cap, said in --help

    options = train.resolve_options(train.build_parser().parse_args(["--save-every", "0", "--log-every", "0"]))
    assert options["run"]["save_every"] == 0 and options["run"]["log_every"] == 0


def test_save_every_zero_checkpoints_only_at_the_end(tmp_path):
    from data.synthetic import SyntheticScenes
    from models.presets import generator_config
    from training.trainer import Trainer, TrainRecipe, discriminator_config_for

    g = generator_config("synthetic", "clade", ngf=4, crop_size=32)
    trainer = Trainer(g_config=g, d_config=discriminator_config_for(g, ndf=8, num_D=1, n_layers_D=2),
                      recipe=TrainRecipe(use_vgg=False, batch_size=2, amp=False, channels_last=False))
    saved = []
    trainer.save_checkpoint = lambda path: saved.append(trainer.step)
    trainer.fit(SyntheticScenes(8, size=32), steps=3, out_dir=tmp_path, save_every=0, sample_every=0,
                log_every=0, progress=False)
    assert saved == [3]
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [3]


@pytest.mark.parametrize("argv, expected", [
    (["--train-step", "3"], "--train-step (options are never abbreviated); did you mean --train-steps?"),
    (["probe", "--probe-image", "3"], "did you mean --probe-images?"),
    (["--checkpoint-dir", "x"], "unrecognized option --checkpoint-dir"),
])
def test_abbreviations_are_refused_clearly(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_analysis.parse_args(argv)
    assert exit_.value.code == 2
    assert expected in capsys.readouterr().err


def test_train_py_refuses_abbreviations(capsys):
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--save-ev", "0"])
    assert "did you mean --save-every?" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [(["--train-steps", "-1"], "--train-steps"),
                                        (["--bench-repeats", "-2"], "--bench-repeats"),
                                        (["--compare-warmup", "-1"], "--compare-warmup")])
def test_negative_values_are_refused(argv, flag, capsys):
    with pytest.raises(SystemExit):
        run_analysis.parse_args(argv)
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and "is below the minimum" in err


def test_train_py_refuses_negative_steps(capsys):
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--steps", "-5"])
    assert "argument --steps: -5 is below the minimum 1 of --steps" in capsys.readouterr().err


def test_programmatic_negative_value_names_the_option():
    with pytest.raises(ValueError, match=r"TrainOptions.steps = -1: expected values >= 1"):
        RunContext(out="x", train=TrainOptions(steps=-1))


@pytest.fixture
def generator_file(tmp_path):
    folder = save_generator_dir(build_generator("synthetic", "clade", ngf=4), tmp_path / "gen")
    return folder


def test_checkpoint_names_a_file_or_a_generator_folder_for_every_stage_that_reads_one(generator_file, tmp_path):
    weights = generator_file / "latest_net_G.pth"
    for stage in ("probe", "convert", "eval", "all"):
        argv = [stage, "--checkpoint", str(weights), "--checkpoint", f"mine={generator_file}"]
        ctx = run_analysis.context_from_args(run_analysis.parse_args(argv))
        assert ctx.given_generators() == {"gen": weights, "mine": generator_file} and ctx.checkpoints is None
        assert run_analysis.stage_settings("eval", ctx)["run"]["checkpoint"] == [str(weights), f"mine={generator_file}"]
    plain = run_analysis.context_from_args(run_analysis.parse_args(["probe"]))
    assert "checkpoint" not in run_analysis.stage_settings("probe", plain)["run"]   # older records still match


@pytest.mark.parametrize("case, message", [
    ("missing", "--checkpoint .*nope.pth.*: no such file or folder"),
    ("folder of folders", r"it is a folder of generator folders \(gen\): pass it as --checkpoints"),
    ("empty folder", r"holds none of \['best_net_G.pth', 'latest_net_G.pth'\]"),
    ("same name", "the name 'gen' is taken by --checkpoint"),
    ("other stage", "is read by the probe, convert and eval stages, not by the train stage"),
])
def test_checkpoint_errors_say_what_to_pass(generator_file, tmp_path, case, message):
    path = {"missing": tmp_path / "nope.pth", "folder of folders": generator_file.parent,
            "empty folder": tmp_path / "empty", "other stage": generator_file, "same name": generator_file}[case]
    (tmp_path / "empty").mkdir(exist_ok=True)
    stage = "train" if case == "other stage" else "probe"
    argv = [stage, "--checkpoint", str(path)] + (["--checkpoint", str(path)] if case == "same name" else [])
    with pytest.raises(SystemExit, match=message):
        run_analysis.context_from_args(run_analysis.parse_args(argv))


@pytest.mark.parametrize("old, new", [("--probe-checkpoint", "--checkpoint PATH"),
                                      ("--eval-generator", "--checkpoint \\[NAME=\\]PATH"),
                                      ("--probe-norm", "nothing: the norm is read from the checkpoint's keys")])
def test_replaced_options_name_their_replacement(old, new, capsys):
    with pytest.raises(SystemExit):
        run_analysis.parse_args(["probe", old, "x"])
    assert re.search(f"error: {old} was replaced by {new}", capsys.readouterr().err)


def test_meta_records_the_resolved_options(tmp_path):
    ctx = RunContext(out=tmp_path, quick=True, train=TrainOptions(steps=7))
    meta = json.loads(ctx.write_table(pd.DataFrame({"x": [1]}), "t").with_suffix(".meta.json").read_text())
    assert meta["options"]["train"]["steps"] == 7 and meta["options"]["train"]["ngf"] == 8
    assert meta["options"]["run"]["quick"] is True and meta["options"]["bench"]["repeats"] == 3


def test_stage_record_holds_its_options(tmp_path, monkeypatch):
    from analysis.stages import report as report_stage
    monkeypatch.setattr(report_stage, "run", lambda ctx: StageResult(summary={"report": "report.md"}))
    ctx = RunContext(out=tmp_path)
    record = run_analysis.run_stage("report", ctx)
    assert record["options"] == {}
    assert json.loads((tmp_path / "stages" / "report.json").read_text()) == record


def test_bulk_table_is_compressed_and_reads_back_to_its_significant_digits(tmp_path):
    ctx = RunContext(out=tmp_path)
    values = np.random.default_rng(0).random(5000)
    path = ctx.write_table(pd.DataFrame({"v": values}), "big", bulk=True)
    assert path.name == "big.csv.gz" and gzip.open(path).read(2) == b"v\n"
    assert np.allclose(pd.read_csv(path).v, values, rtol=1e-5, atol=0)
    assert path.stat().st_size < 0.5 * len(pd.DataFrame({"v": values}).to_csv(index=False))
    meta = json.loads((tmp_path / "tables" / "big.meta.json").read_text())
    assert meta["rows"] == 5000 and meta["significant_digits"] == 6
