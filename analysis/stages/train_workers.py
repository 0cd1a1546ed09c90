"""The train stage's runs side by side: on a CPU, several single-threaded runs at once.

At the default sizes one run keeps two cores busy only part of the time. Measured on the 2-core
AMD EPYC (synthetic, 32x32, ngf 16, ndf 16, batch 8): a CLADE step took 0.126 s on one thread
and 0.092 s on two (1.37x), SPADE 0.253 / 0.170 s (1.49x), while two one-thread runs side by side
each kept their one-thread pace (2x). So on a CPU the stage trains ``workers`` runs at once, each
in its own spawned process on ``threads`` threads; a run's result depends on its seed and its
thread count (float rounding), not on which process ran it or when.

    plan = worker_plan("cpu", workers=0, threads=None, runs=9)     # 2 workers x 1 thread on 2 cores
    for name, result in run_jobs({"clade": (train_job, kwargs)}, plan, total_steps=300):
        ...

A worker reports its steps through a queue (one progress bar over every run). SIGINT / SIGTERM
to the stage's process reach each worker once, as SIGTERM: every run in progress saves its
checkpoint and stops, the runs not started are cancelled, and :class:`TrainingInterrupted` is raised.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue as queue_module
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from tqdm import tqdm

from models.plugins import load_plugins, loaded_plugins
from training.loop import TrainingInterrupted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerPlan:
    """How the stage's runs are spread: ``workers`` at once (1: one after the other, in this
    process), each on ``threads`` torch threads (None: unchanged)."""

    workers: int
    threads: int | None

    def describe(self) -> str:
        threads = "unchanged" if self.threads is None else str(self.threads)
        return f"{self.workers} run(s) at once, {threads} thread(s) each"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_plan(device: str, workers: int, threads: int | None, runs: int) -> WorkerPlan:
    """The plan for ``runs`` runs: ``workers`` 0 means one run per usable core on a CPU (at most
    ``runs``) and one at a time on an accelerator; ``threads`` None means cores / workers (at least
    1) with several workers, unchanged with one."""
    if workers == 0:
        workers = min(runs, usable_cores()) if torch.device(device).type == "cpu" else 1
    workers = max(1, min(workers, runs))
    if threads is None and workers > 1:
        threads = max(1, usable_cores() // workers)
    return WorkerPlan(workers, threads)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (the way back to the stage's process), else a RuntimeError
    (KeyboardInterrupt for an interruption) with its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        kind = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else RuntimeError
        return kind(f"{type(exc).__name__}: {exc}")


def _start_worker(threads: int | None, plugins: list[str], level: int, pids) -> None:
    if hasattr(os, "setpgrp"):
        os.setpgrp()   # a terminal's Ctrl-C reaches the stage's process only, which passes it on once
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if threads is not None:
        torch.set_num_threads(threads)
    load_plugins(plugins)
    pids.put(os.getpid())


def _call(function: Callable, kwargs: dict, progress_queue, name: str):
    try:
        return function(**kwargs, progress=lambda step: progress_queue.put((name, step)))
    except BaseException as exc:
        raise _portable(exc) from None


class _Stop:
    """While open: the first SIGINT / SIGTERM is passed to every worker as SIGTERM (each saves and
    stops) and remembered; a second one raises KeyboardInterrupt at once."""

    def __init__(self):
        self.pids: list[int] = []
        self.signum, self._previous = None, {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once")
        self.signum = signum
        log.warning("[train] %s: every run in progress saves a checkpoint and stops", signal.Signals(signum).name)
        for pid in self.pids:
            _terminate(pid)

    def add(self, pid: int) -> None:
        """A worker that started; it is stopped at once when the signal came before it."""
        self.pids.append(pid)
        if self.signum is not None:
            _terminate(pid)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self   # signal handlers can only be set in the main thread
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def run_jobs(jobs: dict[str, tuple[Callable, dict]], plan: WorkerPlan, *, total_steps: int,
             desc: str = "train") -> Iterator[tuple[str, object]]:
    """Run ``jobs`` ({name: (function, kwargs)}, in order: the longest first balances the workers)
    and yield (name, result) as each finishes. ``function(**kwargs, progress=callback)`` must be a
    module-level function; ``callback(step)`` reports its steps. With one worker the jobs run here,
    one after the other, each showing its own progress (``progress=None``).

    Raises the first job's exception (after the running jobs finished), and
    :class:`TrainingInterrupted` after a SIGINT / SIGTERM stopped the workers.
    """
    if plan.workers == 1:
        for name, (function, kwargs) in jobs.items():
            yield name, function(**kwargs, progress=None)
        return
    context = multiprocessing.get_context("spawn")
    with multiprocessing.Manager() as manager:
        progress_queue, pids = manager.Queue(), manager.Queue()
        plugins = list(loaded_plugins())
        pool = ProcessPoolExecutor(plan.workers, mp_context=context, initializer=_start_worker,
                                   initargs=(plan.threads, plugins, logging.WARNING, pids))
        bar = tqdm(total=total_steps, desc=f"{desc} ({plan.describe()})", unit="step", dynamic_ncols=True)
        failure: BaseException | None = None
        try:
            with _Stop() as stop:
                futures: dict[Future, str] = {pool.submit(_call, function, kwargs, progress_queue, name): name
                                              for name, (function, kwargs) in jobs.items()}
                reached = dict.fromkeys(jobs, 0)
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(pids, stop.add)
                    _drain(progress_queue, lambda item: _advance(bar, reached, *item))
                    for future in finished:
                        if future.cancelled():
                            continue
                        error = future.exception()
                        if error is None:
                            yield futures[future], future.result()
                        elif failure is None:
                            failure = error
                            pool.shutdown(wait=False, cancel_futures=True)
                if stop.signum is not None:
                    name = signal.Signals(stop.signum).name
                    raise TrainingInterrupted(f"{name}: the runs in progress saved their checkpoints and stopped",
                                              signum=stop.signum, step=0, checkpoint=None)
                if failure is not None:
                    if isinstance(failure, KeyboardInterrupt):
                        raise TrainingInterrupted(f"a training worker was interrupted ({failure})",
                                                  signum=signal.SIGTERM, step=0, checkpoint=None)
                    raise failure
        finally:
            bar.close()
            pool.shutdown(wait=True, cancel_futures=True)


def _drain(source, take: Callable) -> None:
    while True:
        try:
            take(source.get_nowait())
        except queue_module.Empty:
            return


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:   # it has finished
        pass


def _advance(bar, reached: dict, name: str, step: int) -> None:
    bar.update(max(0, step - reached[name]))
    reached[name] = max(reached[name], step)
