"""The one way healer runs a program: argv only, its own process group, bounded output (I/O).

Command checks, playbook steps (and the process managers' CLIs) and rollback hooks all run
through `run()`:

- an argv list, never a shell string; stdin is /dev/null;
- a new session, so the child's pid is its process group: a timeout or a cancellation
  SIGKILLs the whole group, grandchildren included, and reaps the child;
- stdout and stderr go into one pipe that only healer reads; only the last `tail` bytes are
  kept (a ring buffer), so memory stays bounded and nothing goes to disk, whatever the program
  writes (`yes` writes gigabytes in seconds);
- the child's exit ends the wait: a background grandchild that keeps the pipe open (a daemon a
  restart hook started) does not hold healer, and is left running;
- the output is decoded and redacted before anyone sees it.

A process group that a run left behind when healer was killed (a rollback's `after` command
journaled with its group) is waited for, then killed, by `outlast()`; the demo kills the
groups it started with `kill_group()`.

    done = await run(["systemctl", "restart", "shop"], timeout=timedelta(seconds=30))
    done.returncode, done.timed_out, done.output, done.last_line()
    await outlast(pgid, timeout=timedelta(minutes=5))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from healer.redact import redact

# Bytes of output kept, from the end: the last lines of an error, with room to spare.
DEFAULT_TAIL = 64 * 1024
# How long a killed child may take to be reaped.
_REAP_TIMEOUT = 5.0
_READ_SIZE = 64 * 1024
# Reads made after the child exited: what it wrote before exiting is in the pipe's buffer
# (64 KiB on Linux); more than that comes from a grandchild still writing, which is not waited for.
_DRAIN_READS = 8
# Seconds between looks at a process group that another run left behind (see outlast()).
_POLL = 0.1


@dataclass(frozen=True, slots=True)
class Finished:
    """A child that ended: by itself, or killed by us at its timeout (`timed_out`)."""

    argv: tuple[str, ...]
    returncode: int  # the exit status; -N when signal N ended it (-9 after a timeout)
    output: str  # the last bytes of stdout and stderr, interleaved as written, redacted
    timed_out: bool
    elapsed: timedelta
    truncated: bool = False  # the program wrote more than was kept

    @property
    def signal(self) -> int | None:
        """The signal that ended the child, if one did."""
        return -self.returncode if self.returncode < 0 else None

    def how(self) -> str:
        """How it ended, for a message: "exited 3", "was killed by SIGTERM"."""
        if self.returncode >= 0:
            return f"exited {self.returncode}"
        return f"was killed by {signal_name(-self.returncode)}"

    def last_line(self, limit: int = 300) -> str:
        """The last non-empty line of output, cut to `limit` characters."""
        for line in reversed(self.output.splitlines()):
            if line.strip():
                text = line.strip()
                return text if len(text) <= limit else text[: limit - 1] + "…"
        return ""


def signal_name(num: int) -> str:
    """SIGKILL for 9; "signal 99" for a number Python does not name."""
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class _Tail:
    """The last `size` bytes fed to it, in memory that never exceeds twice that."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.total = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._buf += chunk
        if len(self._buf) > 2 * self.size:  # trimmed in batches: one copy per `size` bytes read
            del self._buf[: -self.size]

    def text(self) -> str:
        data = bytes(self._buf[-self.size :])
        if self.total > len(data):
            # the first line is a fragment; a secret cut in two would escape redaction
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""
        return data.decode("utf-8", "replace")


async def run(
    argv: Sequence[str],
    *,
    timeout: timedelta,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    tail: int = DEFAULT_TAIL,
    on_start: Callable[[int], Awaitable[object]] | None = None,
) -> Finished:
    """Run `argv` until it exits, or kill its process group after `timeout`.

    1. Start it in a new session, stdin from /dev/null, stdout and stderr into one pipe.
       `on_start(pid)` is awaited once it runs (the pid is also its process group's id), within
       the timeout: a rollback journals which group runs, so that a resume after kill -9 can
       wait for it (outlast()).
    2. Read the pipe as output comes, keeping the last `tail` bytes.
    3. Wait for the child to exit within `timeout`; at the timeout, or when the caller is
       cancelled or `on_start` raises, SIGKILL its whole process group and reap it (the
       cancellation or the error is re-raised).
    4. Read what the child left in the pipe, then stop reading: whatever still holds the pipe
       (a daemon it started) is not waited for.
    5. Decode and redact the tail.

    Raises OSError when the program cannot be started (FileNotFoundError when argv[0] or `cwd`
    does not exist, PermissionError when it is not executable).
    """
    loop = asyncio.get_running_loop()
    kept = _Tail(tail)
    # A pipe of our own rather than asyncio's PIPE: on Python 3.11, Process.wait() also waits
    # for asyncio's pipes to close, which a grandchild holding them would stretch to the timeout.
    rfd, wfd = os.pipe()
    try:
        os.set_blocking(rfd, False)
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=wfd,
            stderr=wfd,
            start_new_session=True,
        )
    except BaseException:
        os.close(rfd)
        raise
    finally:
        os.close(wfd)  # the child holds its own copy; ours would keep the pipe open forever

    def readable() -> None:
        try:
            chunk = os.read(rfd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            kept.feed(chunk)
        else:
            loop.remove_reader(rfd)  # end of output: nothing holds the pipe any more

    loop.add_reader(rfd, readable)
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout.total_seconds()):
                if on_start is not None:
                    await on_start(proc.pid)
                await proc.wait()
        except TimeoutError:
            timed_out = True
            await _reap_group(proc)
        except BaseException:
            await _reap_group(proc)
            raise
        _drain(rfd, kept)
    finally:
        loop.remove_reader(rfd)
        os.close(rfd)
    return Finished(
        argv=tuple(argv),
        returncode=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
        output=redact(kept.text()),
        timed_out=timed_out,
        elapsed=timedelta(seconds=time.monotonic() - start),
        truncated=kept.total > tail,
    )


def _drain(fd: int, kept: _Tail) -> None:
    """Read what is already in the pipe, without waiting for more."""
    for _ in range(_DRAIN_READS):
        try:
            chunk = os.read(fd, _READ_SIZE)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        kept.feed(chunk)


async def _reap_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group, then reap the child.

    The group is killed even when the child itself has already exited: what it started
    (`sleep 1000 &`) is still in the group and must not outlive a timeout reported as killed.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # a setuid child: at least the one we started
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    # reap it even when our caller is being cancelled: a child left unreaped is a zombie
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), _REAP_TIMEOUT)


# ---- a process group another run left behind -----------------------------------------------------


def kill_group(pgid: int) -> None:
    """SIGKILL process group `pgid`, when it is still there and ours to kill."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, read from /proc (proc(5): after
    the command name in `stat` come the state, the parent's PID and the process group)."""
    if pgid <= 1:
        return []
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            out.append(int(entry.name))
    return out


@dataclass(frozen=True, slots=True)
class Outlasted:
    """How a process group that was found running ended."""

    waited: timedelta  # how long it was waited for
    killed: bool  # it outran the wait and was SIGKILLed


async def outlast(pgid: int, timeout: timedelta, *, kill_wait: timedelta = timedelta(seconds=5)) -> Outlasted | None:
    """Wait up to `timeout` for process group `pgid` (started by a run that is gone, such as a
    rollback interrupted by kill -9) to end, then SIGKILL what is left of it and wait up to
    `kill_wait` for it to go. None when nothing of the group was running."""
    if not await asyncio.to_thread(group_members, pgid):
        return None
    began = time.monotonic()
    while await asyncio.to_thread(group_members, pgid):
        if time.monotonic() - began >= timeout.total_seconds():
            kill_group(pgid)
            deadline = time.monotonic() + kill_wait.total_seconds()
            while await asyncio.to_thread(group_members, pgid) and time.monotonic() < deadline:
                await asyncio.sleep(_POLL)
            return Outlasted(waited=timeout, killed=True)
        await asyncio.sleep(_POLL)
    return Outlasted(waited=timedelta(seconds=time.monotonic() - began), killed=False)
