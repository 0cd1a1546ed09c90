"""Reliability of training runs and their options: messages after signals and full disks, runs
that would silently train the wrong length, litter left by faults, and option values that only
failed deep inside torch.

Each test is one thing a careful user tried with train.py or run_analysis.py.
"""
from __future__ import annotations

import collections
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fileio.atomic
from cli import train
from analysis.options import TrainOptions, resolve
from fileio import atomic_path, write_text_atomic
from training.checkpoint_store import DiskFullError, save_checkpoint_file
from tests.reliability.test_cli import _fails
from tests.reliability.test_training import _cli, _step
from tests.training.test_trainer import TinyScenes, tiny_trainer


def _dead_pid() -> int:
    """The id of a process that has just ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- messages that must say what is true -----------------------------------------------------------

@pytest.mark.reliability("data_loss")
def test_second_ctrl_c_during_a_checkpoint_save_names_the_checkpoint_kept(tmp_path, monkeypatch):
    """Ctrl-C twice while the checkpoint of step 4 is written: said 'interrupted before training started;
    nothing was trained' although checkpoint.pt of step 2 was on disk."""
    run = _cli(tmp_path, monkeypatch)
    real_save = torch.save

    def ctrl_c_twice_at_step_4(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            os.kill(os.getpid(), signal.SIGINT)   # the first asks for a stop after this step
            os.kill(os.getpid(), signal.SIGINT)   # the second stops at once, inside the save
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", ctrl_c_twice_at_step_4)
    assert run("--steps", "6", "--save-every", "2") == 128 + signal.SIGINT
    run_dir = tmp_path / "00001-custom-clade"
    log = (run_dir / "log.txt").read_text()
    assert (f"second SIGINT: stopped at once after 4 steps; the last checkpoint saved, {run_dir / 'checkpoint.pt'} "
            f"of step 2, is kept; continue with: train.py --resume {run_dir}") in log, log
    assert "nothing was trained" not in log
    assert _step(run_dir / "checkpoint.pt") == 2 and not [p for p in run_dir.iterdir() if ".tmp" in p.name]


@pytest.mark.reliability("data_loss")
def test_torch_writer_error_on_a_full_disk_is_the_disk_full_message(tmp_path, monkeypatch):
    """A full disk at a checkpoint save raised torch's '[enforce fail at inline_container.cc:672] . unexpected
    pos' RuntimeError (exit 1) instead of the documented disk-full message."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint_file({"step": torch.tensor(1)}, path)
    real_save = torch.save

    def writer_fails(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 470")

    monkeypatch.setattr(torch, "save", writer_fails)
    monkeypatch.setattr(fileio.atomic.shutil, "disk_usage",
                        lambda folder: collections.namedtuple("usage", "total used free")(10, 10, 0))
    with pytest.raises(DiskFullError) as err:
        save_checkpoint_file({"step": torch.tensor(2), "w": torch.zeros(100)}, path)
    assert str(err.value) == f"No space left on device while saving {path}; the previous checkpoint {path} is kept"
    monkeypatch.undo()   # the same writer error with space left on the disk is another failure: passed on
    monkeypatch.setattr(torch, "save", writer_fails)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_checkpoint_file({"step": torch.tensor(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no temporary


@pytest.mark.reliability("clear_error")
def test_full_disk_while_writing_a_table_names_the_file(tmp_path):
    """Disk full during the probe: 'No space left on device' named no file."""
    table = tmp_path / "tables" / "probe_layers.csv"
    with pytest.raises(OSError, match=rf"No space left on device while writing {table}$") as err:
        with atomic_path(table):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.errno == errno.ENOSPC and not table.parent.exists() or not list(table.parent.iterdir())


# -- runs that would silently train the wrong length -------------------------------------------------

@pytest.mark.reliability("wrong_run")
def test_resume_with_fewer_steps_than_the_checkpoint_is_refused_before_writing(tmp_path, monkeypatch):
    """train.py --resume RUN --steps 2 on a 3-step run: logged 'training steps 3 -> 2', exited 0, rewrote
    options.json to steps 2 and re-exported the 3-step weights."""
    run = _cli(tmp_path, monkeypatch)
    assert run("--steps", "3") == 0
    run_dir = tmp_path / "00001-custom-clade"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "log.txt"}
    with pytest.raises(SystemExit, match=rf"--steps 2: {run_dir} is at step 3 already, and "
                                         r"--steps counts every step, the resumed ones included; give more than 3"):
        run("--steps", "2", "--resume", str(run_dir))
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.name != "log.txt"}
    assert after == before


@pytest.mark.reliability("wrong_run")
def test_fit_refuses_a_total_below_the_resumed_step(tmp_path):
    """The same through the library: Trainer.fit(steps=1) on a trainer resumed at step 2."""
    tiny_trainer("clade").fit(TinyScenes(), steps=2, out_dir=tmp_path, progress=False)
    resumed = tiny_trainer("clade")
    resumed.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"asked to train until step 1 \(steps=1\), but the trainer is at step 2"):
        resumed.fit(TinyScenes(), steps=1, out_dir=tmp_path, progress=False)
    assert _step(tmp_path / "checkpoint.pt") == 2


@pytest.mark.reliability("wrong_run")
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_time_cap_is_refused_naming_the_option(tmp_path, capsys, value):
    """run_analysis.py train --train-max-seconds nan was accepted and disabled the cap."""
    message = _fails(["train", f"--train-max-seconds={value}", "--out", str(tmp_path / "o")], capsys)
    assert f"--train-max-seconds {value}: expected a finite number" in message, message
    with pytest.raises(ValueError, match=r"TrainOptions\.max_seconds = nan: expected a finite number"):
        resolve(TrainOptions(max_seconds=float("nan")))


# -- faults that leave litter -------------------------------------------------------------------------

@pytest.mark.reliability("data_loss")
def test_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    """SIGKILL inside torch.save left .checkpoint.tmpNNNN.pt (up to 870 MB) that nothing ever removed."""
    path = tmp_path / "checkpoint.pt"
    dead = tmp_path / f".checkpoint.tmp{_dead_pid()}.pt"
    own_leftover = tmp_path / f".checkpoint.tmp{os.getpid()}.pt"
    alive = tmp_path / f".checkpoint.tmp{os.getppid()}.pt"    # a process that runs: its write may be under way
    other = tmp_path / f".log.tmp{_dead_pid()}.csv"           # another file's temporary: its own writer cleans it
    for litter in (dead, own_leftover, alive, other):
        litter.write_bytes(b"half a checkpoint")
    save_checkpoint_file({"step": torch.tensor(1)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint.pt", alive.name, other.name])
    write_text_atomic(tmp_path / "log.csv", "a\n")
    assert not other.exists()


@pytest.mark.reliability("data_loss")
def test_a_failed_start_leaves_no_run_folder(tmp_path, monkeypatch):
    """A train.py that failed before its first step left an empty numbered run folder (consuming a number)."""
    run = _cli(tmp_path, monkeypatch)

    def unreadable(options):
        raise ValueError("data/a.png: not a PNG file")

    monkeypatch.setattr(train, "build_dataset", unreadable)
    with pytest.raises(ValueError, match="not a PNG"):
        run("--steps", "1")
    assert not list(tmp_path.glob("0*"))
    monkeypatch.setattr(train, "build_dataset", lambda options: TinyScenes())
    assert run("--steps", "1") == 0 and [p.name for p in tmp_path.glob("0*")] == ["00001-custom-clade"]


@pytest.mark.reliability("data_loss")
def test_runs_started_at_the_same_moment_get_different_folders(tmp_path, monkeypatch):
    """Two train.py started at once into one --out collided on the run number ([Errno 17] File exists)."""
    real_mkdir = Path.mkdir
    raced = []

    def another_process_first(self, *args, **kwargs):
        if self.parent == tmp_path and self.name.endswith("-synthetic-clade") and not raced:
            raced.append(self.name)
            real_mkdir(self)   # the other train.py took this number between our listing and our mkdir
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", another_process_first)
    run_dir = train.next_run_dir(tmp_path, "synthetic-clade")
    assert raced == ["00001-synthetic-clade"] and run_dir.name == "00002-synthetic-clade"


# -- options whose errors must name the option ---------------------------------------------------------

@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("extra, expected", [
    (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999: expected an integer from"),
    (["--num-samples", "10000000000"], "--num-samples 10000000000: each epoch shuffles that many synthetic "
                                       "scenes, an order of 80.0 GB"),
    (["--crop_size", "32", "--batch-size", "1"], "--crop_size 32 at --batch-size 1: the generator starts at 1x1 "
                                                 "pixels, where BatchNorm in training sees a single value per "
                                                 "channel; use --batch-size 2 or more"),
], ids=["seed-overflow", "num-samples-beyond-memory", "batchnorm-batch-of-one"])
def test_train_options_that_failed_inside_torch_name_the_option(tmp_path, capsys, extra, expected):
    """--seed beyond 64 bits gave 'Overflow when unpacking long long'; --num-samples 10000000000 tried to allocate
    80 GB; --crop_size 32 at batch 1 gave BatchNorm's 'Expected more than 1 value per channel'."""
    argv = ["--preset", "synthetic", "--norm", "clade", "--ngf", "4", "--ndf", "8", "--steps", "1", "--no-vgg",
            "--num-workers", "0", "--no-progress", "--out", str(tmp_path), *extra]
    if "--crop_size" not in extra:
        argv += ["--crop_size", "32", "--batch-size", "2"]
    if expected.startswith("--num-samples") and os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 320e9:
        pytest.skip("this machine has the memory for 10^10 scenes' order")
    with pytest.raises(SystemExit) as err:
        train.main(argv)
    message = str(err.value.code) if isinstance(err.value.code, str) else capsys.readouterr().err
    assert expected in message and "\n" not in message.strip(), message
    assert not list(tmp_path.glob("0*"))
