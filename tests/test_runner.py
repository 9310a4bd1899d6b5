"""The one subprocess runner: real children, a bounded tail, timeouts and cancellation that kill the group."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest

from healer import runner
from healer.redact import MASK, add_secrets


def alive_with(marker: str) -> list[psutil.Process]:
    """Processes (zombies aside) whose argv holds `marker`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if marker in " ".join(p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def is_gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def unique_sleep() -> str:
    """A `sleep` duration no other process has in its argv: the marker to look for it by."""
    return f"1000.{random.randrange(10**8):08d}"


async def test_the_exit_status_and_both_streams_are_returned_in_order() -> None:
    """stdout and stderr land in one tail, as written; the exit status and time are reported."""
    done = await runner.run(["sh", "-c", "echo one; echo two >&2; exit 3"], timeout=timedelta(seconds=5))
    assert (done.returncode, done.timed_out, done.output) == (3, False, "one\ntwo\n")
    assert done.how() == "exited 3" and done.last_line() == "two"


async def test_a_death_by_signal_is_named() -> None:
    """A child that kills itself reports the negative signal number and its name."""
    done = await runner.run(["sh", "-c", "kill -TERM $$"], timeout=timedelta(seconds=5))
    assert done.returncode == -15 and done.signal == 15 and done.how() == "was killed by SIGTERM"


async def test_yes_for_three_seconds_keeps_a_bounded_tail_and_writes_nothing(tmp_path: Path) -> None:
    """`yes` until its timeout: the tail is at most 64 KiB, memory stays flat and no file grows anywhere."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    me = psutil.Process()
    rss_before = me.memory_info().rss
    done = await runner.run(["yes"], timeout=timedelta(seconds=3), cwd=tmp, env={**os.environ, "TMPDIR": str(tmp)})
    assert done.timed_out and done.truncated and done.returncode == -9
    assert 0 < len(done.output.encode()) <= runner.DEFAULT_TAIL
    assert set(done.output.splitlines()) == {"y"}  # whole lines: the cut fragment was dropped
    assert me.memory_info().rss - rss_before < 32 * 1024 * 1024
    assert list(tmp.iterdir()) == []


async def test_a_timeout_kills_a_backgrounded_grandchild() -> None:
    """`sleep 1000 &` then a sleep past the timeout: nothing of the group survives the kill."""
    marker = unique_sleep()
    done = await runner.run(["sh", "-c", f"sleep {marker} & sleep 30"], timeout=timedelta(milliseconds=500))
    assert done.timed_out and done.returncode == -9
    deadline = time.monotonic() + 2
    while alive_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []


async def test_cancelling_the_caller_kills_the_group() -> None:
    """A cancelled run (healer stopping) leaves no child or grandchild behind."""
    marker = unique_sleep()
    pids: list[int] = []

    async def started(pid: int) -> None:
        pids.append(pid)

    task = asyncio.create_task(
        runner.run(["sh", "-c", f"sleep {marker} & sleep 30"], timeout=timedelta(seconds=60), on_start=started)
    )
    while not alive_with(marker):
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pids) == 1 and is_gone(pids[0])
    deadline = time.monotonic() + 2
    while alive_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []


async def test_a_daemon_holding_the_output_does_not_hold_the_run() -> None:
    """The child's exit ends the run; what it started and left running keeps running."""
    marker = unique_sleep()
    done = await runner.run(["sh", "-c", f"sleep {marker} & echo started"], timeout=timedelta(seconds=10))
    try:
        # not timed out: the run ended at the child's exit, not at the daemon's (30 s after the timeout)
        assert (done.returncode, done.output, done.timed_out) == (0, "started\n", False)
        assert len(alive_with(marker)) == 1
    finally:
        for p in alive_with(marker):
            p.kill()


async def test_the_output_is_redacted() -> None:
    """A secret the process knows, and a password in a URL, never leave the runner."""
    add_secrets("R3disPw-runner")
    script = "echo REDIS=R3disPw-runner; echo postgresql://shop:DbPw-runner@db/shop"
    done = await runner.run(["sh", "-c", script], timeout=timedelta(seconds=5))
    assert "R3disPw-runner" not in done.output and "DbPw-runner" not in done.output
    assert done.output == f"REDIS={MASK}\npostgresql://shop:{MASK}@db/shop\n"


async def test_a_missing_program_raises_before_anything_runs(tmp_path: Path) -> None:
    """argv[0] that does not exist is FileNotFoundError; no pipe is left open."""
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        await runner.run([str(tmp_path / "nope")], timeout=timedelta(seconds=5))
    # at most as many: an earlier test's leftovers may be collected meanwhile, never one more
    assert len(os.listdir("/proc/self/fd")) <= fds


async def test_no_shell_is_involved() -> None:
    """Metacharacters are plain arguments."""
    done = await runner.run(
        [sys.executable, "-c", "import sys; print(sys.argv[1])", "a; $HOME"], timeout=timedelta(seconds=5)
    )
    assert done.output == "a; $HOME\n"


async def test_an_on_start_that_fails_kills_the_group() -> None:
    """When the hook told of the start raises (a journal that cannot be written), nothing is left running."""
    marker = unique_sleep()

    async def broken(pid: int) -> None:
        while not alive_with(marker):
            await asyncio.sleep(0.05)
        raise OSError("journal not written")

    with pytest.raises(OSError, match="journal not written"):
        await runner.run(["sh", "-c", f"sleep {marker} & sleep 30"], timeout=timedelta(seconds=60), on_start=broken)
    deadline = time.monotonic() + 2
    while alive_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []


def _group_left_behind(seconds: float) -> subprocess.Popen[bytes]:
    """A process group of two sleepers, as a killed healer leaves a rollback's command."""
    return subprocess.Popen(["sh", "-c", f"sleep {seconds} & sleep {seconds}; wait"], start_new_session=True)


def _wait_members(pgid: int, n: int) -> None:
    """Until `n` processes of the group run: sh forks its sleepers after Popen returns."""
    deadline = time.monotonic() + 30
    while len(runner.group_members(pgid)) < n:
        assert time.monotonic() < deadline, f"process group {pgid} never had {n} members"
        time.sleep(0.02)


async def test_outlast_waits_for_a_group_that_ends() -> None:
    """A group left running that ends within the wait is waited for, not killed."""
    group = _group_left_behind(2)
    try:
        _wait_members(group.pid, 3)
        ended = await runner.outlast(group.pid, timedelta(seconds=30))
        assert ended is not None and not ended.killed
        assert runner.group_members(group.pid) == []
    finally:
        group.kill()
        group.wait(5)


async def test_outlast_kills_a_group_that_outruns_the_wait() -> None:
    """A group still running at the end of the wait is SIGKILLed, grandchildren included."""
    group = _group_left_behind(300)
    try:
        ended = await runner.outlast(group.pid, timedelta(milliseconds=300))
        assert ended is not None and ended.killed
        assert runner.group_members(group.pid) == []
        assert group.wait(5) == -signal.SIGKILL
    finally:
        group.kill()
        group.wait(5)


async def test_outlast_of_a_group_that_is_gone_is_none() -> None:
    """Nothing of the group is running: there is nothing to wait for."""
    group = _group_left_behind(0)
    group.wait(5)
    assert await runner.outlast(group.pid, timedelta(seconds=5)) is None
