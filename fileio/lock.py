"""One writer per output folder: a ``.lock`` file holding the writer's pid.

    with folder_lock(Path("reports/x"), "run_analysis.py"):
        ...   # a second process on reports/x gets FolderLocked naming the pid holding it

A lock left by a process that no longer exists (killed with SIGKILL, machine restart) is taken
over with a warning. The lock is advisory: it guards against two of our own commands, not
against other programs writing into the folder.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

LOCK_NAME = ".lock"
log = logging.getLogger(__name__)


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock."""


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # none, or not a possible process id
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _try_create(path: Path, owner: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {owner}\n")
    return True


def acquire(folder: Path, owner: str) -> Path:
    """Create ``folder/.lock`` for this process (creating the folder); FolderLocked when a live
    process holds it; a lock of a dead process is replaced with a warning."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    for _ in range(3):
        if _try_create(path, owner):
            return path
        pid = _read_pid(path)
        if pid == os.getpid():
            raise FolderLocked(f"{folder}: already locked by this process ({path})")
        if pid is not None and pid_alive(pid):
            raise FolderLocked(f"{folder} is in use by process {pid} ({path.read_text().strip()}); wait for it "
                               f"to finish or write to another folder (if no such process runs, delete {path})")
        log.warning("%s: taking over the lock of process %s, which no longer runs", folder, pid)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise FolderLocked(f"{folder}: could not take the lock {path} (other processes keep taking it)")


def release(path: Path) -> None:
    """Remove a lock file this process created (no error when it is already gone)."""
    try:
        if _read_pid(path) == os.getpid():
            path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


@contextlib.contextmanager
def folder_lock(folder: Path, owner: str):
    """Hold ``folder/.lock`` for the duration of the block (see :func:`acquire`)."""
    path = acquire(folder, owner)
    try:
        yield path
    finally:
        release(path)
