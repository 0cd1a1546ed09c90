"""The training loop: iterations of a :class:`training.trainer.Trainer` until a step or epoch count.

    history = fit(trainer, SyntheticScenes(1000), steps=300, out_dir="runs/demo")
    # the same as trainer.fit(SyntheticScenes(1000), steps=300, out_dir="runs/demo")

Position (step, epoch, batch within the epoch) lives on the trainer and in its checkpoint, so
a resumed run continues the data order, the logs and the learning-rate schedule exactly.

With an ``out_dir``, SIGINT (Ctrl-C) and SIGTERM stop the loop after the current step with a
checkpoint (:class:`TrainingInterrupted`); a second signal stops at once. Weight norms are
watched at every logged step: growth past :data:`DIVERGENCE_FACTOR` x their value at the start
is a warning naming the network and step (a loss that becomes NaN stops training).
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from data.labels import check_label_range
from data.synthetic import SYNTHETIC_LABEL_NC, SyntheticScenes

from training.checkpoint_store import CHECKPOINT_FILES, CHECKPOINT_NAME
from training.distributed import any_rank, batches_per_epoch, epoch_batches, make_loader
from training.losses import NonFiniteLossError
from training.recipe import check_batch_norm_batch
from training.run_log import append_row, read_history, write_csv

log = logging.getLogger(__name__)

DIVERGENCE_FACTOR = 100.0  # weight-norm growth over a run's start that is reported as divergence
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped :func:`fit` after a step; ``exit_code`` is 128 + the signal number."""

    def __init__(self, message: str, *, signum: int, step: int, checkpoint: Path | None):
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum


class _StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT / SIGTERM: raised wherever the loop is (a step, a checkpoint save)."""

    def __init__(self, signum: int):
        super().__init__(f"second {signal.Signals(signum).name}: stopped at once")
        self.signum = signum


class _StopOnSignal:
    """Inside the block, a SIGINT / SIGTERM sets ``signum`` (the loop stops after its step);
    a second one raises KeyboardInterrupt at once. Inactive outside the main thread."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous = {}
        self._pid = os.getpid()

    def __enter__(self):
        if self.enabled:
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:  # a forked DataLoader worker: the training process decides
            return
        name = signal.Signals(signum).name
        if self.signum is not None:
            raise _StoppedAtOnce(signum)
        self.signum = signum
        log.warning("%s: stopping after this step with a checkpoint (send it again to stop at once)", name)


def _weight_norm(net) -> float:
    """L2 norm of all of ``net``'s parameters together."""
    return float(torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in net.parameters()])))


class WeightNormWatch:
    """Warns once per network when its weights explode: the L2 norm of all its parameters
    non-finite or above ``factor`` x the norm when the watch started."""

    def __init__(self, networks: dict, factor: float = DIVERGENCE_FACTOR):
        self.networks, self.factor = networks, factor
        self.start = {name: _weight_norm(net) for name, net in networks.items()}
        self.warned: set[str] = set()

    def check(self, step: int) -> list[str]:
        """Names of the networks found diverging now (each is warned about once)."""
        found = []
        for name, net in self.networks.items():
            norm = _weight_norm(net)
            if name in self.warned or (math.isfinite(norm) and norm <= self.factor * self.start[name]):
                continue
            self.warned.add(name)
            found.append(name)
            log.warning("%s weights are diverging at step %d: their norm is %.3g, %.3gx the %.3g they had "
                        "when this run started (warned above %gx). Lower the learning rate.",
                        name, step, norm, norm / self.start[name], self.start[name], self.factor)
        return found


def _checkpoint_note(trainer, out_dir: Path | None) -> str:
    """What is on disk after training stopped early: the checkpoint kept, or that there is none."""
    if out_dir is None:
        return "Nothing was saved (no out_dir)."
    path = trainer.checkpoint_path
    if path is not None and path.parent.resolve() == out_dir.resolve():
        return f"The latest checkpoint, {path} (step {trainer.checkpoint_step}), is kept."
    return f"No checkpoint of this run exists in {out_dir} yet."


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def checkpoint_disk_note(trainer, out_dir) -> str:
    """One sentence: the size of one checkpoint of ``trainer`` and of the two a run in ``out_dir`` keeps."""
    size = trainer.estimated_checkpoint_bytes()
    return (f"each checkpoint takes about {_megabytes(size)} (networks and optimizer state); {out_dir} keeps two "
            f"({', '.join(CHECKPOINT_FILES)}): about {_megabytes(2 * size)}")


def dataset_class_nc(dataset) -> int | None:
    """Number of class ids (label_nc + dontcare) a dataset can emit, when it declares it."""
    preset = getattr(dataset, "preset", None)           # data.datasets.PairedDataset
    if preset is not None and hasattr(preset, "label_nc"):
        return preset.label_nc + int(preset.contain_dontcare_label)
    return SYNTHETIC_LABEL_NC + 1 if isinstance(dataset, SyntheticScenes) else None


def check_dataset_labels(dataset, config) -> None:
    """Reject a dataset whose class ids do not fit ``config`` before training starts.

    Runs the dataset's own file scan when it has one (``scan()``: unreadable files, unknown
    raw values), unless it says it has already scanned every file (``scanned``, as train.py
    does before building the networks). If the dataset declares at most ``config.class_nc``
    classes it fits; otherwise every sample is read. Raises ValueError naming the file and the value.
    """
    if callable(getattr(dataset, "scan", None)) and not getattr(dataset, "scanned", False):
        dataset.scan()
    declared = dataset_class_nc(dataset)
    if declared is not None and declared <= config.class_nc:
        return
    for i in range(len(dataset)):
        item = dataset[i]
        check_label_range(item["label"], config.class_nc,
                          source=f"label map of {item.get('path', f'sample #{i}')!r}")


def fit(trainer, data, *, steps: int | None = None, epochs: int | None = None,
        out_dir: str | Path | None = None, num_workers: int = 0, log_every: int = 10,
        save_every: int = 500, sample_every: int = 500, validate: bool = True,
        progress: bool = True, max_seconds: float | None = None, label: str | None = None,
        on_step: Callable[[object], None] | None = None, on_step_every: int = 0) -> list[dict]:
    """Train ``trainer`` until ``steps`` iterations (or ``epochs`` epochs) in total, resumed ones included.

    ``max_seconds``: a wall-clock cap for this call; training stops (checkpointed) at the
    first step past it and ``trainer.stopped_early`` is set.
    ``data``: a Dataset (shuffled by (seed, epoch), resumable mid-epoch) or a DataLoader.
    With ``out_dir``: ``log.jsonl`` / ``log.csv`` (mean losses per ``log_every``),
    ``samples/step_XXXXXXX.png`` and ``checkpoint.pt`` every ``sample_every`` /
    ``save_every`` steps and at the end (an interval of 0: only at the end). ``label`` names the run
    in the progress bar and the log (default: the norm); after the first step, the time the
    remaining steps will take is logged. ``on_step(trainer)`` runs every ``on_step_every`` steps and
    at the end (not after a signal), e.g. to score the generator for a learning curve; its time
    counts neither in ``trainer.train_seconds`` nor in the logged throughput. Returns the logged rows.

    Raises :class:`TrainingInterrupted` after saving a checkpoint when SIGINT / SIGTERM
    arrived (with ``out_dir``), NonFiniteLossError saying which checkpoint is kept, and
    ``training.checkpoint_store.DiskFullError`` when a save finds the disk full.
    """
    main = trainer.rank == 0
    out_dir = Path(out_dir) if out_dir is not None else None
    loader, dataset = _loader(trainer, data, num_workers)
    check_batch_norm_batch(trainer.g_config, loader.batch_size)
    if validate:
        _validate(trainer, dataset)
    if trainer.recipe.bn_estimation_batches:
        trainer.keep_estimation_batches(dataset)
    per_epoch = batches_per_epoch(loader)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    total = steps if steps is not None else epochs * per_epoch
    if total < trainer.step:
        raise ValueError(f"asked to train until step {total} ({'steps' if steps is not None else 'epochs'}="
                         f"{steps if steps is not None else epochs}), but the trainer is at step {trainer.step} "
                         f"already; steps and epochs count the resumed ones too")
    per_step = loader.batch_size * trainer.world_size
    if main:
        log.info("effective batch size %d (%d per process x %d processes); %d batches per epoch; "
                 "training steps %d -> %d", per_step, loader.batch_size, trainer.world_size,
                 per_epoch, trainer.step, total)
    history = read_history(out_dir, trainer.step) if out_dir is not None and main else []
    if out_dir is not None and main:
        log.info("%s", checkpoint_disk_note(trainer, out_dir))
    trainer.stopped_early = False
    watch = WeightNormWatch(trainer.networks()) if main else None
    fit_start = time.perf_counter()
    window = _LossWindow()
    label = label or trainer.g_config.norm
    bar = tqdm(total=total, initial=trainer.step, disable=not (main and progress), dynamic_ncols=True,
               desc=f"train {label}", unit="step")
    first_step = trainer.step + 1
    interrupted = None
    try:
        with _StopOnSignal(out_dir is not None) as stop:
            while trainer.step < total and not trainer.stopped_early and interrupted is None:
                for batch in epoch_batches(loader, trainer.epoch, trainer.epoch_batch):
                    step_start = time.perf_counter()
                    try:
                        window.add(trainer.timed_step(batch, per_epoch))
                    except NonFiniteLossError as exc:
                        raise NonFiniteLossError(f"{exc} {_checkpoint_note(trainer, out_dir)}") from None
                    if main and trainer.step == first_step and trainer.step < total:
                        _log_time_left(label, time.perf_counter() - step_start, total - trainer.step)
                    bar.update(1)
                    done = trainer.step >= total
                    signalled = stop.signum is not None
                    if trainer.distributed and stop.enabled:  # every rank must stop at the same step
                        signalled = any_rank(signalled, trainer.device)
                    if signalled:
                        interrupted = stop.signum or signal.SIGTERM
                        done = True
                    if not done and max_seconds is not None and _time_is_up(trainer, fit_start, max_seconds):
                        trainer.stopped_early = done = True
                        if main:
                            log.warning("time cap of %.0f s reached: stopping at step %d of %d",
                                        max_seconds, trainer.step, total)
                    if _due(trainer.step, log_every) or done:
                        row = window.row(trainer, per_step)
                        history.append(row)
                        bar.set_postfix({k: f"{row[k]:.3g}" for k in (*window.losses, "images_per_s")})
                        if out_dir is not None and main:
                            append_row(out_dir, row)
                        if watch is not None:
                            watch.check(trainer.step)
                        window = _LossWindow()
                    if on_step is not None and (_due(trainer.step, on_step_every) or done) and interrupted is None:
                        paused = time.perf_counter()
                        on_step(trainer)
                        window.start += time.perf_counter() - paused
                    if out_dir is not None:
                        _save_outputs(trainer, out_dir, history, samples=_due(trainer.step, sample_every) or done,
                                      checkpoint=_due(trainer.step, save_every) or done)
                    if done:
                        break
    except _StoppedAtOnce as exc:
        # A save cut short leaves the previous checkpoint file whole (atomic writes).
        kept = (f"the last checkpoint saved, {trainer.checkpoint_path} of step {trainer.checkpoint_step}, is kept"
                if trainer.checkpoint_path is not None else "no checkpoint of this run was saved")
        raise TrainingInterrupted(f"{exc} after {trainer.step} steps; {kept}", signum=exc.signum,
                                  step=trainer.checkpoint_step if trainer.checkpoint_path else 0,
                                  checkpoint=trainer.checkpoint_path) from None
    finally:
        bar.close()
    trainer.sync_buffers()
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        raise TrainingInterrupted(f"{name}: stopped at step {trainer.step}; checkpoint {trainer.checkpoint_path} "
                                  f"saved", signum=interrupted, step=trainer.step, checkpoint=trainer.checkpoint_path)
    return history


def _log_time_left(label: str, step_seconds: float, steps_left: int) -> None:
    """One line: how long the steps left take at the first step's pace (an upper bound: it warms up)."""
    seconds = step_seconds * steps_left
    when = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"
    log.info("train %s: the first step took %.2f s; the %d steps left take up to about %s", label, step_seconds,
             steps_left, when)


def _time_is_up(trainer, fit_start: float, max_seconds: float) -> bool:
    # Every rank must stop at the same step.
    return any_rank(time.perf_counter() - fit_start > max_seconds, trainer.device)


def _loader(trainer, data, num_workers: int) -> tuple[DataLoader, object]:
    """(loader, dataset) of ``data``: a DataLoader as given, or one over a Dataset, shuffled by
    (seed, epoch) and split across ranks."""
    if isinstance(data, DataLoader):
        return data, data.dataset
    loader = make_loader(data, batch_size=trainer.recipe.batch_size, seed=trainer.recipe.seed, rank=trainer.rank,
                         world_size=trainer.world_size, num_workers=num_workers,
                         pin_memory=trainer.device.type == "cuda")
    return loader, data


class _LossWindow:
    """The losses of the steps since the last logged row, and when they started."""

    def __init__(self):
        self.losses: dict[str, list[float]] = {}
        self.steps, self.start = 0, time.perf_counter()

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.losses.setdefault(k, []).append(v)
        self.steps += 1

    def row(self, trainer, images_per_step: int) -> dict:
        """One logged row: position, time, throughput, lr and the window's mean losses."""
        images_per_s = self.steps * images_per_step / (time.perf_counter() - self.start)
        return {"step": trainer.step, "epoch": trainer.epoch, "seconds": round(trainer.train_seconds, 3),
                "images_per_s": round(images_per_s, 3),
                "lr_G": trainer.opt_G.param_groups[0]["lr"], "lr_D": trainer.opt_D.param_groups[0]["lr"],
                **{k: float(np.mean(v)) for k, v in self.losses.items()}}


def _save_outputs(trainer, out_dir: Path, history: list[dict], *, samples: bool, checkpoint: bool) -> None:
    """Sample grid (rank 0) and checkpoint + log.csv (collective) when due."""
    if samples and trainer.rank == 0:
        trainer.save_samples(out_dir / "samples" / f"step_{trainer.step:07d}.png")
    if checkpoint:
        trainer.save_checkpoint(out_dir / CHECKPOINT_NAME)
        if trainer.rank == 0:
            write_csv(out_dir, history)


def _validate(trainer, dataset) -> None:
    """check_dataset_labels on every rank; all ranks stop if any rejects the data."""
    error = None
    try:
        check_dataset_labels(dataset, trainer.g_config)
    except (ValueError, FileNotFoundError) as exc:
        error = exc
    if any_rank(error is not None, trainer.device) and error is None:
        raise RuntimeError("another process rejected the training data (see its error)")
    if error is not None:
        raise error


def _due(step: int, every: int) -> bool:
    """Whether a periodic action runs at ``step``; ``every`` 0 means never (only at the end)."""
    return every > 0 and step % every == 0
