"""The command check: run an argv (never a shell string); exit `expect_exit` passes (I/O).

The command runs through healer's one runner (healer/runner.py): in its own process group, so
a timeout kills it and everything it started, with only the last 64 KiB of its output kept
(redacted). The last line of that output goes into the error.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from healer import runner
from healer.checks.base import budget, failed
from healer.model import CheckResult
from healer.schema import Argv, CheckBase, RelPath, format_duration

if TYPE_CHECKING:
    from healer.checks.base import ProbeContext

_LINE_MAX = 200


class CommandCheck(CheckBase):
    """Runs an argv (never a shell string); exit status `expect_exit` is ok."""

    type: Literal["command"]
    argv: Argv
    expect_exit: int = 0
    cwd: RelPath | None = None


async def probe(check: CommandCheck, ctx: ProbeContext) -> CheckResult:
    """1. run the command within the budget; 2. judge the exit, quoting the last line of output
    when it failed."""
    try:
        done = await runner.run(check.argv, timeout=timedelta(seconds=budget(check.timeout)), cwd=check.cwd)
    except FileNotFoundError:
        where = f" (cwd {check.cwd})" if check.cwd else ""
        return failed(check, f"cannot run {check.argv[0]!r}: not found{where}", "command.error")
    except OSError as e:
        return failed(check, f"cannot run {check.argv[0]!r}: {e.strerror or e}", "command.error")
    latency_ms = round(done.elapsed.total_seconds() * 1000, 3)
    if done.timed_out:
        return failed(
            check,
            f"{check.argv[0]} did not finish within {format_duration(check.timeout)} and was killed",
            "command.timeout",
            latency_ms=latency_ms,
        )
    values = {"exit_code": done.returncode, "latency_ms": latency_ms}
    if done.returncode == check.expect_exit:
        return CheckResult(check.name, check.type, ok=True, latency=done.elapsed, values=values)
    line = done.last_line(_LINE_MAX)
    error = f"{check.argv[0]} {done.how()} (expected {check.expect_exit})" + (f": {line}" if line else "")
    return CheckResult(
        check.name,
        check.type,
        ok=False,
        latency=done.elapsed,
        values=values,
        error=error,
        symptoms=("command.failed",),
    )
