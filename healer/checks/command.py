"""The command check: run an argv (never a shell string); exit `expect_exit` passes (I/O).

The command runs in its own session (process group), so a timeout kills it and everything it
started. Its output goes to a temporary file; the last line goes into the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from datetime import timedelta
from typing import IO, TYPE_CHECKING

from healer.checks import budget, failed
from healer.config import CommandCheck, format_duration
from healer.model import CheckResult

if TYPE_CHECKING:
    from healer.checks import ProbeContext

_TAIL = 4096  # bytes of output kept
_LINE_MAX = 200


async def probe(check: CommandCheck, ctx: ProbeContext) -> CheckResult:
    """1. start the command, its output going to a temporary file; 2. wait within the budget;
    3. judge the exit, quoting the last line of output when it failed."""
    # A file rather than a pipe: on Python 3.11 wait() also waits for the pipes to close, which
    # a background grandchild holding stdout would stretch to the timeout.
    deadline = asyncio.get_running_loop().time() + budget(check.timeout)
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *check.argv,
                cwd=check.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            where = f" (cwd {check.cwd})" if check.cwd else ""
            return failed(check, f"cannot run {check.argv[0]!r}: not found{where}", "command.error")
        except OSError as e:
            return failed(check, f"cannot run {check.argv[0]!r}: {e.strerror or e}", "command.error")
        try:
            async with asyncio.timeout_at(deadline):
                code = await proc.wait()
        except TimeoutError:
            await _kill(proc)
            return failed(
                check,
                f"{check.argv[0]} did not finish within {format_duration(check.timeout)} and was killed",
                "command.timeout",
                latency_ms=round((time.perf_counter() - start) * 1000, 3),
            )
        finally:
            if proc.returncode is None:  # cancelled from outside: leave nothing running
                await _kill(proc)
        latency = time.perf_counter() - start
        values = {"exit_code": code, "latency_ms": round(latency * 1000, 3)}
        if code == check.expect_exit:
            return CheckResult(check.name, check.type, ok=True, latency=timedelta(seconds=latency), values=values)
        line = _last_line(_tail(out))
    how = f"killed by {_signal_name(-code)}" if code < 0 else f"exited {code}"
    error = f"{check.argv[0]} {how} (expected {check.expect_exit})" + (f": {line}" if line else "")
    return CheckResult(
        check.name,
        check.type,
        ok=False,
        latency=timedelta(seconds=latency),
        values=values,
        error=error,
        symptoms=("command.failed",),
    )


def _tail(out: IO[bytes]) -> bytes:
    """The last few KB the command wrote (a small local file: reading it barely blocks)."""
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - _TAIL))
    return out.read()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's whole process group, then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(proc.wait(), 2)


def _last_line(output: bytes) -> str:
    lines = [ln.strip() for ln in output.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= _LINE_MAX else last[: _LINE_MAX - 1] + "…"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
