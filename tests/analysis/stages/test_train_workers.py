"""Training runs side by side: the plan, results and errors coming back, stopping on a signal,
and a run trained by a worker equal to the same run trained in this process."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from analysis.context import RunContext
from analysis.options import TrainOptions
from analysis.stages import train as stage
from analysis.stages import train_workers
from analysis.stages.train_workers import WorkerPlan, run_jobs, worker_plan
from models import load_generator_dir
from training.loop import TrainingInterrupted


def square(*, x: int, progress):
    if progress is not None:
        progress(x)
    return x * x


def fail(*, message: str, progress):
    raise ValueError(message)


class Unpicklable(Exception):
    def __init__(self, message, extra):
        super().__init__(message)
        self.extra = extra


def fail_unpicklable(*, progress):
    raise Unpicklable("the worker's own error", extra=1)


def wait_for_sigterm(*, marker: str, progress):
    """Runs until SIGTERM, which it answers as a training run does: it notes it and stops."""
    def stop(signum, frame):
        Path(marker).write_text("stopped")
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, stop)
    Path(marker).write_text("started")
    progress(1)
    for _ in range(600):
        time.sleep(0.1)
    return "not stopped"


def test_plan_one_run_per_core_on_a_cpu_and_one_on_a_gpu(monkeypatch):
    monkeypatch.setattr(train_workers, "usable_cores", lambda: 4)
    assert worker_plan("cpu", 0, None, 9) == WorkerPlan(4, 1)
    assert worker_plan("cpu", 0, None, 2) == WorkerPlan(2, 2)     # fewer runs than cores: more threads each
    assert worker_plan("cpu", 3, 2, 9) == WorkerPlan(3, 2)
    assert worker_plan("cpu", 1, None, 9) == WorkerPlan(1, None)  # one at a time: threads unchanged
    assert worker_plan("cuda", 0, None, 9) == WorkerPlan(1, None)
    assert worker_plan("cpu", 8, None, 3) == WorkerPlan(3, 1)


def test_results_come_back_from_every_worker_and_in_process():
    jobs = {f"run{x}": (square, {"x": x}) for x in range(5)}
    assert dict(run_jobs(jobs, WorkerPlan(2, 1), total_steps=10)) == {f"run{x}": x * x for x in range(5)}
    assert list(run_jobs(jobs, WorkerPlan(1, None), total_steps=10)) == [(f"run{x}", x * x) for x in range(5)]


def test_a_worker_error_reaches_the_caller_with_its_message():
    jobs = {"good": (square, {"x": 2}), "bad": (fail, {"message": "file 'a.png': label 12"})}
    with pytest.raises(ValueError, match="file 'a.png': label 12"):
        list(run_jobs(jobs, WorkerPlan(2, 1), total_steps=2))
    with pytest.raises(RuntimeError, match="Unpicklable: the worker's own error"):
        list(run_jobs({"bad": (fail_unpicklable, {})}, WorkerPlan(2, 1), total_steps=1))


def test_sigterm_stops_every_worker_once_and_raises_training_interrupted(tmp_path):
    markers = [tmp_path / f"run{k}" for k in range(2)]
    jobs = {m.name: (wait_for_sigterm, {"marker": str(m)}) for m in markers}

    def terminate_once_both_run():
        deadline = time.perf_counter() + 120
        while not all(m.is_file() for m in markers) and time.perf_counter() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_both_run, daemon=True).start()
    start = time.perf_counter()
    with pytest.raises(TrainingInterrupted, match="SIGTERM: the runs in progress saved"):
        list(run_jobs(jobs, WorkerPlan(2, 1), total_steps=2))
    assert time.perf_counter() - start < 60
    assert [m.read_text() for m in markers] == ["stopped", "stopped"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_run_trained_by_a_worker_equals_the_same_run_trained_here(tmp_path):
    weights = {}
    for workers in (1, 2):
        options = TrainOptions(steps=3, ngf=4, ndf=8, batch_size=2, crop_size=32, seeds=1, norms=("spade", "clade"),
                               curve_every=0, curve_images=0, workers=workers, threads=1)
        out = tmp_path / f"workers{workers}"
        record = stage.run(RunContext(out=out, quick=True, train=options)).record()
        assert record["workers"] == workers
        weights[workers] = {n: load_generator_dir(out / "checkpoints" / n).state_dict() for n in ("spade", "clade")}
    for name, state in weights[1].items():
        assert all(torch.equal(v, weights[2][name][k]) for k, v in state.items()), name
