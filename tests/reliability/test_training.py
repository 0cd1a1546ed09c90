"""Reliability of training: resume, checkpoints on disk, divergence, signals, DDP layouts, bad weights.

Each test is one thing a careful user tried (resuming, disks filling, runs diverging, signals,
bad weights files), on the tiny networks of tests/training/test_trainer.py.
"""
import errno
import json
import logging
import os
import signal
import socket
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cli import train
from analysis.context import RunContext
from analysis.options import TrainOptions
from analysis.stages import train as stage
from models import load_generator_dir
from training.checkpoint_store import (DiskFullError, SettingsMismatchError, find_resume_target, read_checkpoint,
                                     remove_training_state)
from models.presets import generator_config
from training.run_log import read_history
from training.loop import TrainingInterrupted
from training.trainer import NonFiniteLossError, Trainer
from training.recipe import TrainRecipe, discriminator_config_for
from training.vgg import VGG19_FILE, VGGWeightsInvalidError
from tests.training.test_trainer import LABEL_NC, SIZE, TinyScenes, tiny_trainer

CLI = ["--preset", "custom", "--label_nc", str(LABEL_NC), "--contain_dontcare_label", "--crop_size", str(SIZE),
       "--ngf", "4", "--ndf", "8", "--n_layers_D", "3", "--batch-size", "2", "--no-vgg", "--num-workers", "0",
       "--no-progress", "--norm", "clade", "--no-amp"]


def _step(path) -> int:
    return torch.load(path, weights_only=True)["step"]


def _log_text(run_dir) -> str:
    """What train.py logged into the run folder (it replaces the root log handlers, caplog's too)."""
    return (run_dir / "log.txt").read_text()


def _data_root(tmp_path) -> str:
    """A custom dataset root with instances/ (the samples come from the patched build_dataset)."""
    (tmp_path / "data" / "instances").mkdir(parents=True, exist_ok=True)
    return str(tmp_path / "data")


def _cli(tmp_path, monkeypatch, dataset=None):
    from cli import train
    monkeypatch.setattr(train, "build_dataset", lambda options: dataset or TinyScenes())
    return lambda *extra: train.main(CLI + ["--out", str(tmp_path), "--dataroot", _data_root(tmp_path), *extra])


# -- resume checks the whole recipe ------------------------------------------------------

@pytest.mark.reliability("wrong_run")
def test_resume_with_another_recipe_refuses_naming_every_difference(tmp_path):
    tiny_trainer("clade").fit(TinyScenes(), steps=1, out_dir=tmp_path, progress=False)
    other = tiny_trainer("clade", seed=3, batch_size=3, lambda_feat=5.0, amp=True)
    with pytest.raises(SettingsMismatchError) as err:
        other.load_checkpoint(tmp_path)
    message = str(err.value)
    for text in ("recipe.seed: checkpoint 0, requested 3", "recipe.batch_size: checkpoint 2, requested 3",
                 "recipe.lambda_feat: checkpoint 10.0, requested 5.0", "recipe.amp: checkpoint False, requested True",
                 "checkpoint.pt", "start a new run"):
        assert text in message, (text, message)
    assert other.step == 0
    tiny_trainer("clade", channels_last=False).load_checkpoint(tmp_path)  # a layout is not a recipe change


@pytest.mark.reliability("wrong_run")
def test_stage_rerun_with_another_seed_refuses_and_names_force(tmp_path):

    train = TrainOptions(steps=1, ngf=4, ndf=8, batch_size=2, crop_size=SIZE,
                         keep_state=True)  # as a killed stage leaves it: the checkpoint is there
    first = RunContext(out=tmp_path, quick=True, train=train)
    stage.train_one(first, "clade", stage.settings(first), False, None)
    ctx = RunContext(out=tmp_path, quick=True, seed=3, train=replace(train, batch_size=3))
    with pytest.raises(SettingsMismatchError, match=r"--force discards") as err:
        stage.train_one(ctx, "clade", stage.settings(ctx), False, None)
    assert err.value.differences == {"recipe.seed": (0, 3), "recipe.batch_size": (2, 3)}


@pytest.mark.reliability("wrong_run")
def test_train_cli_resume_with_another_seed_refuses(tmp_path, monkeypatch):
    run = _cli(tmp_path, monkeypatch)
    assert run("--steps", "1") == 0
    with pytest.raises(SystemExit, match=r"recipe\.seed: run 0, requested 3.*start a new run"):
        run("--steps", "2", "--resume", "--seed", "3")
    assert _step(tmp_path / "00001-custom-clade" / "checkpoint.pt") == 1


@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("content", ["{bad", '{"run": {}}'], ids=["not json", "missing keys"])
def test_resume_of_a_run_with_a_broken_options_file_names_it(tmp_path, monkeypatch, content):
    run = _cli(tmp_path, monkeypatch)
    assert run("--steps", "1") == 0
    options = tmp_path / "00001-custom-clade" / "options.json"
    options.write_text(content)
    with pytest.raises(SystemExit, match=rf"{options} is unreadable .*expected the options.json train.py wrote"):
        run("--steps", "2", "--resume")
    assert options.read_text() == content


# -- --resume resumes what was named; "latest" is the newest run with a checkpoint ----------

@pytest.mark.reliability("wrong_run")
def test_resume_named_previous_checkpoint_loads_exactly_it(tmp_path, monkeypatch):
    run = _cli(tmp_path, monkeypatch)
    assert run("--steps", "2", "--save-every", "1") == 0
    folder = tmp_path / "00001-custom-clade"
    prev = folder / "checkpoint.prev.pt"
    assert _step(folder / "checkpoint.pt") == 2 and _step(prev) == 1
    assert find_resume_target(prev, runs_root=tmp_path, desc="custom-clade") == (folder, prev)
    assert run("--steps", "2", "--resume", str(prev)) == 0
    assert f"resumed from {prev} at step 1" in _log_text(folder)


@pytest.mark.reliability("wrong_run")
def test_resume_latest_skips_a_newer_run_without_checkpoint(tmp_path, monkeypatch):
    run = _cli(tmp_path, monkeypatch)
    assert run("--steps", "1") == 0
    failed = tmp_path / "00002-custom-clade"   # a start that failed before its first checkpoint
    failed.mkdir()
    (failed / "options.json").write_text((tmp_path / "00001-custom-clade" / "options.json").read_text())
    assert find_resume_target("latest", runs_root=tmp_path, desc="custom-clade")[0].name == "00001-custom-clade"
    assert run("--steps", "2", "--resume") == 0
    assert _step(tmp_path / "00001-custom-clade" / "checkpoint.pt") == 2
    assert not (failed / "checkpoint.pt").exists()


@pytest.mark.reliability("wrong_run")
def test_resume_of_a_run_without_checkpoint_says_it_starts_over(tmp_path, monkeypatch):
    from cli import train
    run = _cli(tmp_path, monkeypatch)
    folder = tmp_path / "00001-custom-clade"   # a run killed before its first checkpoint
    folder.mkdir(parents=True)
    args = train.build_parser().parse_args(CLI + ["--out", str(tmp_path), "--dataroot", _data_root(tmp_path),
                                                  "--steps", "1"])
    (folder / "options.json").write_text(json.dumps(train.resolve_options(args)))
    assert run("--steps", "1", "--resume", str(folder)) == 0
    assert f"no checkpoint in {folder}, starting over" in _log_text(folder)
    assert _step(folder / "checkpoint.pt") == 1


# -- torn log lines and a full disk ---------------------------------------------------------

@pytest.mark.reliability("data_loss")
def test_torn_last_log_line_is_dropped_with_a_warning(tmp_path, caplog):
    rows = [{"step": 1, "GAN": 0.5}, {"step": 2, "GAN": 0.4}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "GA')
    with caplog.at_level(logging.WARNING):
        assert read_history(tmp_path, 2) == rows
    assert "log.jsonl" in caplog.text and "torn last line 3" in caplog.text
    assert (tmp_path / "log.jsonl").read_text().splitlines() == [json.dumps(r) for r in rows]


@pytest.mark.reliability("clear_error")
def test_bad_log_line_in_the_middle_names_file_and_line(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl: line 2 is not JSON"):
        read_history(tmp_path, 3)


@pytest.mark.reliability("data_loss")
def test_full_disk_during_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = tiny_trainer("clade")
    trainer.fit(TinyScenes(), steps=1, out_dir=tmp_path, progress=False)
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFullError) as err:
        trainer.fit(TinyScenes(), steps=2, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    path = tmp_path / "checkpoint.pt"
    assert str(err.value) == f"No space left on device while saving {path}; the previous checkpoint {path} is kept"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    state, read = read_checkpoint(tmp_path)
    assert read == path and state["step"] == 1


# -- divergence --------------------------------------------------------------------------

@pytest.mark.reliability("wrong_run")
def test_exploding_lr_stops_saying_what_is_true(tmp_path):
    trainer = tiny_trainer("clade", lr=1e18)
    snapshots = []
    step = trainer.train_step

    def snapshot_then_step(batch):
        snapshots.append({k: v.clone() for k, v in trainer.G.state_dict().items()})
        return step(batch)

    trainer.train_step = snapshot_then_step
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(TinyScenes(), steps=20, out_dir=tmp_path, save_every=100, progress=False)
    message = str(err.value)
    assert f"at step {trainer.step + 1}" in message
    assert f"No checkpoint of this run exists in {tmp_path}" in message and "is kept" not in message
    g_changed = any(not torch.equal(v, snapshots[-1][k]) for k, v in trainer.G.state_dict().items())
    assert ("generator update was applied" in message) == g_changed, message
    assert ("no update of this step was applied" in message) == (not g_changed), message


@pytest.mark.reliability("wrong_run")
def test_nan_after_a_checkpoint_names_the_checkpoint_kept(tmp_path):
    trainer = tiny_trainer("clade")
    trainer.fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=2, progress=False)
    with pytest.raises(NonFiniteLossError, match=r"no update of this step was applied.*"
                                                 r"The latest checkpoint, .*checkpoint\.pt \(step 2\), is kept"):
        trainer.fit(TinyScenes(nan=True), steps=4, out_dir=tmp_path, progress=False)


@pytest.mark.reliability("wrong_run")
def test_large_lr_warns_when_weights_explode(caplog):
    trainer = tiny_trainer("clade", lr=1e6)
    with caplog.at_level(logging.WARNING):
        trainer.fit(TinyScenes(), steps=2, log_every=1, progress=False)
    warned = [r.getMessage() for r in caplog.records if "weights are diverging" in r.getMessage()]
    assert any(m.startswith("G weights are diverging at step 1") for m in warned), caplog.text
    assert len([m for m in warned if m.startswith("G ")]) == 1  # once per network
    quiet = tiny_trainer("clade")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        quiet.fit(TinyScenes(), steps=2, log_every=1, progress=False)
    assert "diverging" not in caplog.text


# -- an unreadable checkpoint.pt is never rotated over a good checkpoint.prev.pt -------------

@pytest.mark.reliability("data_loss")
def test_corrupt_checkpoint_is_not_rotated_over_the_good_previous_one(tmp_path, caplog):
    tiny_trainer("clade").fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=1, progress=False)
    prev = tmp_path / "checkpoint.prev.pt"
    good = prev.read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(b"killed while writing")
    resumed = tiny_trainer("clade")
    with caplog.at_level(logging.WARNING):
        assert resumed.load_checkpoint(tmp_path) == prev and resumed.step == 1
    assert "checkpoint.pt unreadable" in caplog.text and "weights_only" not in caplog.text
    resumed.fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=1, progress=False)
    assert prev.read_bytes() == good
    assert _step(tmp_path / "checkpoint.pt") == 2


@pytest.mark.reliability("clear_error")
def test_named_unreadable_checkpoint_is_an_error_not_a_silent_fallback(tmp_path):
    tiny_trainer("clade").fit(TinyScenes(), steps=2, out_dir=tmp_path, save_every=1, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint\.pt' does not load") as err:
        tiny_trainer("clade").load_checkpoint(tmp_path / "checkpoint.pt")
    assert "weights_only" not in str(err.value)


# -- SIGINT / SIGTERM save a checkpoint and stop cleanly ----------------------------------

class SignalScenes(TinyScenes):
    """TinyScenes that sends ``signum`` to this process on its ``fire_at``-th item read."""

    def __init__(self, signum, fire_at, **kwargs):
        super().__init__(**kwargs)
        self.signum, self.fire_at, self.reads = signum, fire_at, 0

    def __getitem__(self, i):
        self.reads += 1
        if self.reads == self.fire_at:
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(i)


@pytest.mark.reliability("data_loss")
def test_sigterm_saves_a_checkpoint_at_the_current_step(tmp_path):
    trainer = tiny_trainer("clade")
    # 6 reads validate the data, then 2 per step: the signal comes while step 2's batch loads.
    with pytest.raises(TrainingInterrupted) as err:
        trainer.fit(SignalScenes(signal.SIGTERM, fire_at=6 + 3), steps=100, out_dir=tmp_path, progress=False)
    assert err.value.exit_code == 143 and err.value.step == trainer.step == 2
    assert _step(tmp_path / "checkpoint.pt") == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after fit


@pytest.mark.reliability("clear_error")
def test_ctrl_c_in_train_cli_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    run = _cli(tmp_path, monkeypatch, SignalScenes(signal.SIGINT, fire_at=6 + 3))
    assert run("--steps", "100") == 130
    folder = tmp_path / "00001-custom-clade"
    stopped = [line for line in _log_text(folder).splitlines() if "stopped" in line]
    assert len(stopped) == 1 and "SIGINT: stopped at step 2" in stopped[0], stopped
    assert f"train.py --resume {folder}" in stopped[0]
    assert "Traceback" not in capsys.readouterr().err
    assert _step(folder / "checkpoint.pt") == 2


# -- disk use ---------------------------------------------------------------------------

@pytest.mark.reliability("wrong_run")
def test_checkpoint_size_is_announced_before_writing(tmp_path, caplog):
    trainer = tiny_trainer("clade", ema=True)
    with caplog.at_level(logging.INFO):
        trainer.fit(TinyScenes(), steps=1, out_dir=tmp_path, progress=False)
    announced = trainer.estimated_checkpoint_bytes()
    actual = (tmp_path / "checkpoint.pt").stat().st_size
    assert 0.8 * actual < announced < 1.2 * actual, (announced, actual)
    assert f"each checkpoint takes about {announced / 1e6:.1f} MB" in caplog.text


@pytest.mark.reliability("wrong_run")
def test_dry_run_states_the_checkpoint_size_without_building_weights(tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO):
        assert train.main(["--ngf", "8", "--out", str(tmp_path), "--dry-run"]) == 0
    options = json.loads(capsys.readouterr().out)           # stdout stays the options JSON alone
    sized = Trainer(g_config=generator_config("synthetic", "clade", ngf=8), recipe=TrainRecipe(use_vgg=False))
    expected = sized.estimated_checkpoint_bytes()
    assert options["generator"]["ngf"] == 8 and f"each checkpoint takes about {expected / 1e6:.1f} MB" in caplog.text
    assert not any(tmp_path.iterdir())


@pytest.mark.reliability("data_loss")
def test_finished_stage_keeps_only_the_generator(tmp_path):

    ctx = RunContext(out=tmp_path, quick=True, train=TrainOptions(steps=1, ngf=4, ndf=8, batch_size=2,
                                                                  crop_size=SIZE))
    stage.train_one(ctx, "clade", stage.settings(ctx), False, None)
    assert not list((tmp_path / "train" / "clade").glob("checkpoint*.pt"))
    assert load_generator_dir(ctx.checkpoint_dir("clade")).config.ngf == 4
    assert remove_training_state(tmp_path / "train" / "clade") == 0


# -- DDP: gradients in channels_last without stride mismatches -----------------------------------

def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", GLOO_SOCKET_IFNAME="lo")
    from training.distributed import cleanup_distributed, make_loader, setup_distributed

    info = setup_distributed("cpu")
    torch.set_num_threads(1)
    try:
        # ngf 8: the shortcut 1x1 convs are where conv backward returns another layout than channels_last.
        cfg = generator_config("custom", "spade", label_nc=LABEL_NC, contain_dontcare_label=True, ngf=8,
                               crop_size=SIZE)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = Trainer(g_config=cfg, d_config=discriminator_config_for(cfg, ndf=8, n_layers_D=3),
                              recipe=TrainRecipe(use_vgg=False, batch_size=2, amp=False, channels_last=True))
            loader = make_loader(TinyScenes(n=8), batch_size=2, seed=0, rank=info.rank, world_size=2)
            for batch in loader:
                trainer.train_step(batch)
        grads_are_buckets = all(p.grad is not None and p.grad.stride() == p.stride() for p in trainer.G.parameters())
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(
            {"warnings": [str(w.message) for w in caught], "grad_strides_match": grads_are_buckets}))
    finally:
        cleanup_distributed()


@pytest.mark.reliability("wrong_run")
@pytest.mark.timeout(300)
def test_ddp_channels_last_gradients_match_bucket_strides(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert not [w for w in result["warnings"] if "Grad strides do not match" in w], result["warnings"]
        assert result["grad_strides_match"]


# -- bad weights files ---------------------------------------------------------------------------

@pytest.mark.reliability("clear_error")
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated"], ids=["empty", "truncated"])
def test_unreadable_vgg_weights_name_the_file_and_what_was_expected(tmp_path, content):
    path = tmp_path / VGG19_FILE
    path.write_bytes(content)
    cfg = generator_config("custom", "clade", label_nc=LABEL_NC, ngf=4, crop_size=SIZE)
    with pytest.raises(VGGWeightsInvalidError, match=rf"{VGG19_FILE}' \({len(content)} bytes\) could not be read.*"
                                                     r"expected torchvision's ImageNet VGG19 state_dict") as err:
        Trainer(g_config=cfg, recipe=TrainRecipe(use_vgg=True), vgg_weights=path)
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)


@pytest.mark.slow
@pytest.mark.reliability("data_loss")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_process_group_with_loader_workers_stops_cleanly(tmp_path, signum):
    """As a terminal's Ctrl-C or a scheduler's SIGTERM: the workers get the signal too."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "train.py", "--preset", "synthetic", "--norm", "clade", "--ngf", "4", "--ndf", "8",
           "--crop_size", "32", "--batch-size", "2", "--num-samples", "64", "--no-vgg", "--device", "cpu",
           "--out", str(tmp_path), "--num-workers", "2", "--no-progress", "--steps", "100000"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log_file = tmp_path / "00001-synthetic-clade" / "log.txt"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and "training steps" not in (log_file.read_text() if log_file.exists() else ""):
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(proc.pid, signum)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    stopped = [line for line in output.splitlines() if "stopped at step" in line]
    assert len(stopped) == 1, output[-2000:]
    step = int(stopped[0].split("stopped at step ")[1].split(";")[0])
    assert _step(tmp_path / "00001-synthetic-clade" / "checkpoint.pt") == step
