"""healer's one file lock, held and fought over by real child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from healer.errors import LockedError, StoreError
from healer.locks import FileLock, holder

Hold = Callable[..., "subprocess.Popen[str]"]

# A child that takes the lock with FileLock, says so, and holds it for `argv[2]` seconds.
_HOLD = """\
import sys, time
from datetime import timedelta
from pathlib import Path
from healer.locks import FileLock
with FileLock(Path(sys.argv[1]), "test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold() -> Iterator[Hold]:
    """A factory: a child process that holds the lock at `path` for `seconds`; killed after the test."""
    children: list[subprocess.Popen[str]] = []

    def start(path: Path, seconds: float = 60) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
        children.append(p)
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        return p

    yield start
    for p in children:
        p.kill()
        p.wait(5)
        assert p.stdout is not None
        p.stdout.close()


def test_a_held_lock_names_its_holder(tmp_path: Path, hold: Hold) -> None:
    """Another process holding the lock: LockedError with its PID, and holder() says the same."""
    path = tmp_path / "state" / "x.lock"
    child = hold(path)
    with pytest.raises(LockedError, match=f"rollback is already running \\(PID {child.pid}\\)"):
        FileLock(path, "rollback").acquire()
    assert holder(path) == child.pid


def test_the_kernel_drops_a_killed_holders_lock(tmp_path: Path, hold: Hold) -> None:
    """kill -9 of the holder frees the lock: the PID left in the file does not hold it."""
    path = tmp_path / "x.lock"
    child = hold(path)
    child.kill()
    child.wait(5)
    assert path.read_text().strip() == str(child.pid)
    assert holder(path) is None
    with FileLock(path, "healer run"):
        assert holder(path) != child.pid


def test_release_empties_the_file_and_frees_the_lock(tmp_path: Path) -> None:
    """Once released, the file names nobody and the lock can be taken again, also by this process."""
    path = tmp_path / "x.lock"
    assert holder(path) is None  # no file yet
    lock = FileLock(path, "repair fix")
    lock.acquire()
    assert path.read_text().strip().isdigit()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    lock.release()
    lock.release()  # twice is harmless
    assert path.read_text() == ""
    assert holder(path) is None
    with FileLock(path, "repair fix"):
        pass


def test_patience_waits_out_a_holder_that_lets_go(tmp_path: Path, hold: Hold) -> None:
    """A lock held for an instant (holder()'s peek) is taken by a patient acquire, not refused."""
    path = tmp_path / "x.lock"
    child = hold(path, 0.3)
    lock = FileLock(path, "healer run", patience=timedelta(seconds=30))
    lock.acquire()
    assert child.wait(5) == 0
    lock.release()


def test_a_state_dir_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    """The lock's directory cannot be created (a file is in the way): StoreError naming it."""
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create the state directory"):
        FileLock(tmp_path / "file" / "x.lock", "healer run").acquire()


def test_holder_lets_go_of_a_free_lock(tmp_path: Path) -> None:
    """holder() on a free lock releases it again: an impatient acquire right after it succeeds,
    and then holder() names this process."""
    path = tmp_path / "x.lock"
    with FileLock(path, "a"):
        pass
    assert holder(path) is None
    with FileLock(path, "b"):
        assert holder(path) == os.getpid()
