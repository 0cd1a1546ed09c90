"""Reliability cases of the command lines and the checkpoint / config files they read."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli import run_analysis
from cli import train
from analysis.context import StageResult
from analysis.quality.metrics import FID_WEIGHTS_FILE, load_fid_inception
from analysis.report.assemble import build_report
from fileio import FolderLocked, WeightsFileError, folder_lock
from models.checkpoint import load_generator_dir, read_state_dict
from training.loop import TrainingInterrupted
from models.presets import generator_config

ROOT = Path(__file__).resolve().parents[2]


def _fails(argv, capsys) -> str:
    """Run run_analysis.main(argv); the one-line message of the refusal (non-zero exit asserted)."""
    try:
        code = run_analysis.main(argv)
    except SystemExit as exc:
        code, message = exc.code, exc.code if isinstance(exc.code, str) else capsys.readouterr().err
    else:
        message = capsys.readouterr().err
    assert code not in (0, None), f"{argv} succeeded"
    assert "Traceback" not in message and message.strip().count("\n") == 0, message
    return message


@pytest.fixture
def fake_stages(monkeypatch):
    """Stages that only count their runs (the record logic of run_analysis is what is tested); their
    summary has a "settings" entry of its own, as the train stage's has."""
    runs = []

    def runner(stage):
        return lambda ctx: runs.append((stage.name, ctx.seed, ctx.preset)) or StageResult(summary={"settings": {"x": 1}})

    monkeypatch.setattr(run_analysis, "stage_runner", runner)
    return runs


@pytest.mark.reliability("data_loss")
def test_train_never_writes_into_checkpoints(tmp_path, capsys, fake_stages):
    mine = tmp_path / "mine" / "clade"
    mine.mkdir(parents=True)
    (mine / "latest_net_G.pth").write_bytes(b"user weights")
    message = _fails(["train", "--checkpoints", str(tmp_path / "mine"), "--out", str(tmp_path / "o")], capsys)
    assert "--checkpoints" in message and "--out" in message
    assert (mine / "latest_net_G.pth").read_bytes() == b"user weights" and fake_stages == []


@pytest.mark.reliability("wrong_run")
def test_rerun_with_other_settings_is_refused(tmp_path, capsys, fake_stages):
    out = str(tmp_path / "o")
    assert run_analysis.main(["costs", "--out", out, "--device", "cpu"]) == 0
    assert run_analysis.main(["costs", "--out", out, "--device", "cpu"]) == 0  # same settings: reused
    assert fake_stages == [("costs", 0, "synthetic")]
    message = _fails(["costs", "--out", out, "--device", "cpu", "--seed", "7"], capsys)
    assert "seed: recorded 0, now 7" in message and "--force" in message
    assert run_analysis.main(["costs", "--out", out, "--device", "cpu", "--seed", "7", "--force"]) == 0
    assert fake_stages[-1] == ("costs", 7, "synthetic")
    record = json.loads((tmp_path / "o" / "stages" / "costs.json").read_text())
    settings = record["stage_settings"]["run"]
    assert settings["seed"] == 7 and settings["preset"] == "synthetic" and record["settings"] == {"x": 1}


@pytest.mark.reliability("wrong_run")
def test_report_over_stages_of_other_data_is_refused(tmp_path, capsys, fake_stages):
    out = str(tmp_path / "o")
    assert run_analysis.main(["costs", "--out", out, "--device", "cpu"]) == 0
    message = _fails(["report", "--out", out, "--device", "cpu", "--seed", "7"], capsys)
    assert "costs.json" in message and "seed" in message
    assert [n for n, *_ in fake_stages] == ["costs"]


@pytest.mark.reliability("wrong_run")
def test_report_header_comes_from_the_stage_records(tmp_path, fake_stages):
    out = tmp_path / "o"
    assert run_analysis.main(["costs", "--out", str(out), "--device", "cpu"]) == 0
    header = build_report(out, {"preset": "cityscapes", "seed": 99}, stages=("costs", "bench")).split("## 1.")[0]
    assert "Dataset preset `synthetic` (built-in synthetic scenes), seed 0, device `cpu`" in header
    assert "cityscapes" not in header and "99" not in header
    # stages forced onto other settings: the header says so instead of naming one of them
    assert run_analysis.main(["bench", "--out", str(out), "--device", "cpu", "--seed", "7", "--force"]) == 0
    header = build_report(out, {"preset": "synthetic", "seed": 7}, stages=("costs", "bench")).split("## 1.")[0]
    assert "**The stages ran on different settings**" in header and "seed: `0` (costs); `7` (bench)" in header


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("extra, expected", [
    (["--dataroot", "/nonexistent/root"], "no such folder"),
    (["--dataroot", "."], "--preset synthetic"),
    (["--preset", "ade20k"], "without --dataroot"),
])
def test_preset_and_dataroot_must_match(tmp_path, capsys, fake_stages, extra, expected):
    message = _fails(["train", "--out", str(tmp_path / "o"), "--device", "cpu", *extra], capsys)
    assert expected in message and fake_stages == [] and not (tmp_path / "o").exists()


@pytest.mark.reliability("clear_error")
def test_out_that_is_a_file_is_refused_by_name(tmp_path, capsys, fake_stages):
    (tmp_path / "f").write_text("mine")
    message = _fails(["costs", "--out", str(tmp_path / "f"), "--device", "cpu"], capsys)
    assert f"--out {tmp_path / 'f'} is a file; expected a folder" in message
    assert (tmp_path / "f").read_text() == "mine" and fake_stages == []


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("device", ["cuda", "gpu"])
def test_missing_device_is_one_line_and_leaves_no_folder(tmp_path, capsys, fake_stages, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = _fails(["costs", "--out", str(tmp_path / "o"), "--device", device], capsys)
    assert "--device" in message and device in message
    assert not (tmp_path / "o").exists()


@pytest.mark.reliability("data_loss")
def test_second_writer_of_an_out_folder_is_refused(tmp_path, capsys, fake_stages):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".lock").write_text(f"{os.getppid()} run_analysis.py\n")  # a live process other than this one
    message = _fails(["costs", "--out", str(out), "--device", "cpu"], capsys)
    assert f"in use by process {os.getppid()}" in message and fake_stages == []
    assert (out / ".lock").read_text().split()[0] == str(os.getppid())


@pytest.mark.reliability("data_loss")
def test_stale_lock_is_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(f"{dead.stdout.strip()} killed run\n")
    with folder_lock(tmp_path, "test") as path:
        assert path.read_text().split()[0] == str(os.getpid())
        with pytest.raises(FolderLocked, match="already locked"):
            with folder_lock(tmp_path, "again"):
                pass
    assert "no longer runs" in caplog.text and not path.exists()


@pytest.mark.reliability("clear_error")
def test_stage_error_is_one_line_unless_debug(tmp_path, capsys, monkeypatch):
    def broken(stage):
        def run(ctx):
            raise OSError(28, "No space left on device", str(ctx.out / "tables" / "x.csv"))
        return run

    monkeypatch.setattr(run_analysis, "stage_runner", broken)
    message = _fails(["costs", "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert "No space left" in message and "x.csv" in message and "--debug" in message
    with pytest.raises(OSError):
        run_analysis.main(["costs", "--out", str(tmp_path / "o"), "--device", "cpu", "--debug"])


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("value, expected", [
    ({"ngf": "8"}, "expected int"), ({"ngf": 1e6}, "expected int"), ({"ngf": 1_000_000}, "from 1 to 4096"),
    ({"ngf": 0}, "from 1 to 4096"), ({"spectral": "false"}, "expected bool"), ({"aspect_ratio": 0}, "aspect_ratio"),
])
def test_generator_json_with_wrong_values(tmp_path, value, expected):
    (tmp_path / "generator.json").write_text(json.dumps({"label_nc": 8, **value}))
    with pytest.raises(ValueError, match=expected) as info:
        load_generator_dir(tmp_path)
    assert "generator.json" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("content, expected", [
    (b"", "is empty"), ("truncated", "truncated"), ("training", "training checkpoint of train.py"),
    ("pickle", "not a plain state_dict"),
])
def test_unreadable_weights_files(tmp_path, content, expected):
    path = tmp_path / "w.pth"
    if content == "truncated":
        torch.save({"w": torch.ones(64)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "training":
        torch.save({"G": {"w": torch.ones(1)}, "D": {}, "opt_G": {}, "opt_D": {}, "step": 5}, path)
    elif content == "pickle":
        torch.save({"w": Path("x")}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as info:
        read_state_dict(path)
    assert "weights_only" not in str(info.value) and "w.pth" in str(info.value)


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("content, expected", [
    (b"", "the file is empty"), ("truncated", "truncated"), ("other", r"hold \['w'\], not the keys"),
])
def test_unreadable_inception_weights_name_the_file(tmp_path, content, expected):
    path = tmp_path / FID_WEIGHTS_FILE
    if content == "truncated":
        torch.save({"w": torch.ones(64)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "other":
        torch.save({"w": torch.ones(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsFileError, match=expected) as info:
        load_fid_inception(path)
    message = str(info.value)
    assert FID_WEIGHTS_FILE in message and "--inception-weights" in message and "\n" not in message
    assert "weights_only" not in message


@pytest.mark.reliability("clear_error")
def test_config_values_refused_at_construction():
    with pytest.raises(ValueError, match="ngf"):
        generator_config("synthetic", "clade", ngf=-3)


@pytest.mark.reliability("clear_error")
def test_cli_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "run_analysis.py"), "train", "--device", "cpu",
                             "--preset", "ade20k", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("run_analysis.py: --preset ade20k")
    assert "FutureWarning" not in result.stderr and "USDT" not in result.stderr


@pytest.mark.reliability("clear_error")
def test_bench_measurements_leave_the_console_quiet():
    """Kineto's per-profile lines and fvcore's import-time deprecation never reach the user's console."""
    script = ("import torch\n"
              "from analysis.costs import layers  # noqa: F401 (fvcore is imported here)\nfrom analysis.speed import bench\n"
              "x = torch.ones(64, 64)\n"
              "bench.peak_memory(lambda: x @ x, 'cpu')\n"
              "bench.profile_ops(lambda: x @ x, runs=1)\n")
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("source, expected", [
    ("x = (\n", r"failed to import \(line 1\): SyntaxError: '\(' was never closed"),
    ("import math\nraise RuntimeError('boom')\n", r"failed to import \(line 2\): RuntimeError: boom"),
])
def test_plugin_that_fails_to_import_is_one_line_naming_file_and_line(tmp_path, capsys, fake_stages, source, expected):
    plugin = tmp_path / "my_norm.py"
    plugin.write_text(source)
    message = _fails(["costs", "--plugin", str(plugin), "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert str(plugin) in message and re.search(expected, message) and fake_stages == []


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("flag", ["--segmenter", "--inception-weights", "--train-vgg-weights", "--fid-train-stats",
                                  "--reference-dir", "--compare-vgg-weights"])
def test_a_named_input_file_that_does_not_exist_is_refused_before_any_stage(tmp_path, capsys, fake_stages, flag):
    message = _fails(["--out", str(tmp_path / "o"), "--device", "cpu", flag, str(tmp_path / "nope.pth")], capsys)
    assert flag in message and "no such file" in message and "nope.pth" in message, message
    assert fake_stages == []


@pytest.mark.reliability("clear_error")
def test_train_cli_refuses_missing_vgg_weights_file_up_front(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--vgg-weights", str(tmp_path / "nope.pth")])
    assert "argument --vgg-weights: no such file or folder" in capsys.readouterr().err


@pytest.mark.reliability("clear_error")
def test_interrupted_stage_is_one_line_with_the_way_to_continue(tmp_path, capsys, monkeypatch):
    def interrupted(stage):
        def run(ctx):
            raise TrainingInterrupted("SIGTERM: stopped at step 6; checkpoint x.pt saved", signum=15, step=6,
                                      checkpoint=None)
        return run

    monkeypatch.setattr(run_analysis, "stage_runner", interrupted)
    assert run_analysis.main(["train", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 143
    err = capsys.readouterr().err
    assert "Traceback" not in err and "SIGTERM: stopped at step 6" in err and "run the same command again" in err
    monkeypatch.setattr(run_analysis, "stage_runner",
                        lambda stage: lambda ctx: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert run_analysis.main(["costs", "--out", str(tmp_path / "o2"), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted; the stages that finished are kept" in err
