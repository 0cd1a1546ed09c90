"""How long a set of training runs will take on this machine: a timed probe before, an ETA during.

    per_step = probe_step_seconds(lambda: Trainer(...), batch)          # seconds per iteration
    eta = TrainingEta({"spade": 300 * 0.28, "clade": 300 * 0.16})        # predicted seconds per run
    eta.finished("spade", 95.0); eta.remaining_seconds()                 # rescaled by what was measured
    TrainingEta({...}, workers=2).wall_predicted                        # two runs at a time

The probe times a few iterations of a throwaway trainer (after one untimed warm-up, which
allocates); the ETA scales the remaining predictions by measured / predicted time of the runs
done so far, so a machine that got busier since the probe shows up in the ETA. With several
workers the wall-clock time is the makespan of the runs handed out in order to the first free
worker (how ``analysis.stages.train_workers`` runs them).
"""
from __future__ import annotations

import statistics
from time import perf_counter
from typing import Callable


def probe_step_seconds(make_trainer: Callable[[], object], batch: dict, *, repeats: int = 3) -> float:
    """Median seconds of one ``train_step(batch)`` of a fresh trainer, after one untimed step."""
    trainer = make_trainer()
    trainer.train_step(batch)
    times = []
    for _ in range(repeats):
        start = perf_counter()
        trainer.train_step(batch)
        times.append(perf_counter() - start)
    return statistics.median(times)


def makespan(seconds: list[float], workers: int) -> float:
    """Wall-clock seconds of runs taking ``seconds``, each given in order to the first free of ``workers``."""
    free = [0.0] * max(1, workers)
    for s in seconds:
        free[free.index(min(free))] += s
    return max(free)


class TrainingEta:
    """Predicted seconds per run (in the order they run), corrected by the runs that finished."""

    def __init__(self, predicted: dict[str, float], workers: int = 1):
        self.predicted = dict(predicted)
        self.workers = workers
        self.measured: dict[str, float] = {}

    @property
    def total_predicted(self) -> float:
        """Seconds of all runs added up (the compute, whatever runs at once)."""
        return sum(self.predicted.values())

    @property
    def wall_predicted(self) -> float:
        """Predicted wall-clock seconds of all runs with ``workers`` at a time."""
        return makespan(list(self.predicted.values()), self.workers)

    def finished(self, run: str, seconds: float) -> None:
        self.measured[run] = seconds

    def remaining_seconds(self) -> float:
        """Wall-clock seconds the runs not yet finished should take, at the pace measured so far
        (with several workers an estimate: the runs in progress count whole)."""
        done = [r for r in self.measured if self.predicted.get(r, 0) > 0]
        pace = (sum(self.measured[r] for r in done) / sum(self.predicted[r] for r in done)) if done else 1.0
        return pace * makespan([v for r, v in self.predicted.items() if r not in self.measured], self.workers)
