"""Distributed training helpers: torchrun setup, rank agreement, and a resumable data order.

    info = setup_distributed()          # no-op for one process; gloo on CPU, nccl on CUDA
    loader = make_loader(dataset, batch_size=8, seed=0, rank=info.rank, world_size=info.world_size)

The data order depends only on (seed, epoch, rank), so one process and N processes use the
same logic, and a run can restart part-way through an epoch.
"""
from __future__ import annotations

import itertools
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Initialise torch.distributed from torchrun's environment (no-op for one process).

    nccl on CUDA (one GPU per local rank), gloo on CPU. Multi-node runs need nothing more
    than torchrun's rendezvous flags (``--nnodes``, ``--rdzv-endpoint``...).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if world_size <= 1:
        return DistInfo(device=device or ("cuda" if use_cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = f"cuda:{local_rank}"
    else:
        dev = "cpu"
        # Processes on one machine share its cores.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, local_rank, world_size, dev)


def cleanup_distributed() -> None:
    """Destroy the process group, if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """Whether this process is part of an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (plain ``flag`` for one process)."""
    if not is_distributed():
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value)
    return bool(value.item())


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled per epoch from ``seed``) that can start an epoch part-way.

    Works without a process group when ``num_replicas``/``rank`` are given, so one process
    and N processes use the same data order logic.
    """

    def __init__(self, dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Next iteration yields epoch ``epoch``'s order from its ``start``-th sample on."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader worker init: a Ctrl-C or SIGTERM sent to the whole process group is for the
    training process (which saves a checkpoint, then shuts its workers down), not for the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: Dataset, *, batch_size: int = 1, seed: int = 0, rank: int = 0,
                world_size: int = 1, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Shuffled, drop-last loader whose order depends only on (seed, epoch, rank)."""
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    if sampler.num_samples < batch_size:
        raise ValueError(f"the dataset has {len(dataset)} samples ({sampler.num_samples} per process "
                         f"for {world_size} processes); a batch needs {batch_size}")
    # A private generator: creating iterators must not consume the global RNG (resume exactness).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=True, pin_memory=pin_memory, worker_init_fn=_ignore_stop_signals,
                      generator=torch.Generator().manual_seed(seed))


def batches_per_epoch(loader: DataLoader) -> int:
    """Full batches one process reads per epoch."""
    if isinstance(loader.sampler, ResumableSampler):
        return loader.sampler.num_samples // loader.batch_size
    return len(loader)


def epoch_batches(loader: DataLoader, epoch: int, start_batch: int):
    """Iterator over epoch ``epoch``'s batches from its ``start_batch``-th on."""
    sampler = loader.sampler
    dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if isinstance(sampler, ResumableSampler):
        sampler.set_position(epoch, start_batch * loader.batch_size)
        return iter(loader)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    # A foreign loader cannot start part-way: skip the batches already used.
    return itertools.islice(iter(loader), start_batch, None)
