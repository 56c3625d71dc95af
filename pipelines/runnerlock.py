"""One runner per state database: a lock held for the runner's life.

Two runtimes on one state database would both resume its pending retries
and deliver each twice, and both fire its schedules. The lock is an
``flock`` on a file beside the database (``state.db.lock``), so the kernel
releases it when the holder dies, however it dies: no stale lock to clean
up after a crash. The file holds the holder's pid, for the error a second
runner prints. The CLI's read-only commands never take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pipelines.errors import StateError
from pipelines.store import private_directory


def lock_path(state: Path) -> Path:
    return state.with_name(state.name + ".lock")


class RunnerLock:
    """``acquire()`` or ``StateError`` naming the path and the holder's pid;
    ``release()`` (also done by the kernel when the process ends)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.path = lock_path(state)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            private_directory(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(
                f"state database {self.state}: cannot create its lock {self.path}:"
                f" {exc.strerror}; point state at a writable place"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateError(
                f"state database {self.state} is in use by another runner"
                f"{f' (pid {holder})' if holder else ''}: stop it, or give this pipeline"
                " another state path"
            ) from None
        self._fd = fd  # held from here: release() closes it whatever follows
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is for the message a second runner prints; the lock holds

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # The file stays: removing it would let a third runner lock a new
        # file while a second still waits on the old one's descriptor.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
