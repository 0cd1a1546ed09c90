"""The training-time prediction: a probe of a few steps, and an ETA rescaled by the runs that finished."""
import pytest

from analysis.speed import train_budget
from analysis.speed.train_budget import TrainingEta, makespan, probe_step_seconds


def test_eta_rescales_the_remaining_runs_by_the_pace_measured_so_far():
    eta = TrainingEta({"spade": 10.0, "clade": 20.0, "clade-icpe": 30.0})
    assert eta.total_predicted == 60 and eta.remaining_seconds() == 60
    eta.finished("spade", 20.0)                     # twice as slow as predicted
    assert eta.remaining_seconds() == pytest.approx(2 * 50)
    eta.finished("clade", 20.0)                     # 40 s measured for 30 s predicted
    assert eta.remaining_seconds() == pytest.approx(30 * 40 / 30)
    eta.finished("clade-icpe", 1.0)
    assert eta.remaining_seconds() == 0


def test_makespan_hands_each_run_to_the_first_free_worker():
    assert makespan([5.0, 3.0, 3.0, 1.0], 1) == 12
    assert makespan([5.0, 3.0, 3.0, 1.0], 2) == 6      # [5, 1] and [3, 3]
    assert makespan([5.0, 3.0, 3.0, 1.0], 8) == 5
    assert makespan([], 2) == 0


def test_eta_with_two_workers_predicts_the_wall_clock():
    eta = TrainingEta({"spade": 10.0, "spade-s1": 10.0, "clade": 4.0, "clade-s1": 4.0}, workers=2)
    assert eta.total_predicted == 28 and eta.wall_predicted == 14
    eta.finished("spade", 20.0)                     # twice as slow: the rest [10, 4, 4] on 2 workers, x2
    assert eta.remaining_seconds() == pytest.approx(2 * 10)


def test_probe_times_steps_after_one_untimed_warm_up(monkeypatch):
    calls, clock = [], iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])   # timed steps of 3 s, 1 s and 2 s

    class Trainer:
        def train_step(self, batch):
            calls.append(batch)

    monkeypatch.setattr(train_budget, "perf_counter", lambda: next(clock))
    assert probe_step_seconds(Trainer, "batch") == 2.0
    assert calls == ["batch"] * 4
