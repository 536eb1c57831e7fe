"""Claims on runs: the per-run lock, so that two processes never train (or clear) the same run at once, and the
signal guard that keeps a clean-up whole."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLock:
    """An exclusive claim on one run, so two processes never train (or clear) the same run at once.

    The claim is an OS lock (flock) on a hidden file beside the run's folder: the kernel drops it when
    its process ends, however it ends (kill -9 included), so there is nothing stale to take over. The
    file names its holder (host and pid) for people; it is removed on release while still locked, and a
    claim on a file that was replaced meanwhile is retried, so two holders are impossible (one machine;
    a shared network filesystem may not honour flock).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir.parent / f".{run_dir.name}.lock"
        self.me = f"{socket.gethostname()} {os.getpid()}"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                os.ftruncate(fd, 0)
                os.write(fd, self.me.encode())
                self._fd = fd
                return True
            os.close(fd)  # released (and removed) by its holder while we waited: claim the new file

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


@contextmanager
def uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM arriving inside the block take effect at its end, so that a clean-up (locks released,
    one after another) is never cut in half. Outside the main thread, where handlers cannot be set, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        if held:  # delivered again, now to the handlers that were in place: they raise here, after the block
            signal.raise_signal(held[0])


class Claims:
    """The run locks one process holds. A lock is taken and remembered in one step, and `release()` frees every
    one, whatever signal arrives meanwhile: a stopped process leaves no lock file behind."""

    def __init__(self) -> None:
        self.locks: list[RunLock] = []

    def take(self, run_dir: Path) -> RunLock | None:
        """The run's lock, or None when another process holds it."""
        with uninterrupted():
            lock = RunLock(run_dir)
            if not lock.acquire():
                return None
            self.locks.append(lock)
        return lock

    def release(self) -> None:
        with uninterrupted():
            while self.locks:
                self.locks.pop().release()


def clear_orphan_lock(run_dir: Path) -> None:
    """Remove the lock file a killed process left beside a run, if nobody holds it now."""
    lock = RunLock(run_dir)
    if lock.path.exists() and lock.acquire():
        lock.release()
