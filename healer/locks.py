"""healer's one file lock: an exclusive flock on a file that holds the owner's PID (I/O).

One `healer run` per state dir (`healer.lock`), one rollback at a time (`rollback.lock`), one
run of a playbook at a time (`repair-<name>.lock`): all three are this lock. The kernel
releases a flock when its holder dies, even on kill -9, so a stale lock file is never a held
one; the PID inside only names the holder for people (and keeps a restart from signalling it,
see healer/processes.py).

    with FileLock(state_dir / "rollback.lock", "rollback"):   # LockedError names the holder
        ...
    holder(state_dir / "healer.lock")                          # who holds it, without waiting
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from healer.errors import LockedError, StoreError
from healer.files import private_dir, private_fd

_RETRY_EVERY = 0.05  # seconds between tries while a lock is held for an instant
# holder() takes a lock for an instant (`healer status` peeks at the run lock, the watcher at the
# rollback and repair locks): a lock that is peeked at waits this long before calling it held
PEEKED = timedelta(milliseconds=200)


class FileLock:
    """An exclusive, non-blocking flock on `path`, with our PID written in it.

    `acquire()` raises LockedError naming the holder's PID when another process holds it, and
    StoreError when the file cannot be created (the state dir is not ours to write). Holding it
    for `patience` more is for a lock that holder() peeks at: that peek takes it for an instant.
    """

    def __init__(self, path: Path, what: str, *, patience: timedelta = timedelta(0)) -> None:
        self.path = path
        self.what = what  # for LockedError: "healer run", "rollback", "repair redis-flush"
        self.patience = patience
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (see the class docstring), then write our PID in it."""
        fd = _open(self.path)
        deadline = time.monotonic() + self.patience.total_seconds()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(_RETRY_EVERY)
                    continue
                pid = _pid_in(fd)
                os.close(fd)
                raise LockedError(self.what, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the file and let go of the lock (closing the file releases the flock)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # a full or read-only disk: closing still releases it
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder(path: Path) -> int | None:
    """The PID holding the lock at `path`; None when nobody holds it; -1 when somebody does
    but the file names no PID. Takes the lock for an instant to find out."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            return pid if pid is not None else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    """The lock file, created 0600 in a 0700 state dir; StoreError saying which could not be made."""
    try:
        private_dir(path.parent)
    except OSError as e:
        msg = f"{path.parent}: cannot create the state directory (state_dir): {e.strerror}"
        raise StoreError(msg) from None
    try:
        return private_fd(path)
    except OSError as e:
        msg = f"{path}: cannot open the lock file: {e.strerror}"
        raise StoreError(msg) from None


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
