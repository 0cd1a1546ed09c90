"""How long a set of training runs will take on this machine: a timed probe before, an ETA during.

    per_step = probe_step_seconds(lambda: Trainer(...), batch)          # seconds per iteration
    eta = TrainingEta({"spade": 300 * 0.28, "clade": 300 * 0.16})        # predicted seconds per run
    eta.finished("spade", 95.0); eta.remaining_seconds()                 # rescaled by what was measured

The probe times a few iterations of a throwaway trainer (after one untimed warm-up, which
allocates); the ETA scales the remaining predictions by measured / predicted time of the runs
done so far, so a machine that got busier since the probe shows up in the ETA.
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


class TrainingEta:
    """Predicted seconds per run, corrected by the runs that finished."""

    def __init__(self, predicted: dict[str, float]):
        self.predicted = dict(predicted)
        self.measured: dict[str, float] = {}

    @property
    def total_predicted(self) -> float:
        return sum(self.predicted.values())

    def finished(self, run: str, seconds: float) -> None:
        self.measured[run] = seconds

    def remaining_seconds(self) -> float:
        """Seconds the runs not yet finished should take, at the pace measured so far."""
        done = [r for r in self.measured if self.predicted.get(r, 0) > 0]
        pace = (sum(self.measured[r] for r in done) / sum(self.predicted[r] for r in done)) if done else 1.0
        return pace * sum(v for r, v in self.predicted.items() if r not in self.measured)
