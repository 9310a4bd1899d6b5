"""The process check: the app's processes are alive, and their memory and CPU (I/O, psutil).

Processes are found by `match` (a substring of the command line), `pidfile` (the PID in the
file, plus its descendants) or `process_name`; the check falls back on `[process] match` /
`pidfile`. Which processes those are is healer/processes.py's rule, the same one a restart
applies: never healer itself, its ancestors or a lock holder, so a match string that happens
to sit in healer's (or pytest's) command line does not find healer. `matched()` shows people
what a check finds, and `split_groups()` warns when a match finds more than one process group
(two copies of the app). psutil blocks, so the scan runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from healer.checks.base import measured
from healer.model import CheckResult
from healer.schema import CheckBase, Factor, RelPath, Size, format_size

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

    from healer import processes
    from healer.checks.base import ProbeContext
    from healer.config import Config

# CPU use is the delta between two readings this far apart.
_CPU_INTERVAL = 0.2
_MB = 2**20  # rss_mb is in MiB


class ProcessCheck(CheckBase):
    """The app's processes are alive; their memory stays near the baseline."""

    type: Literal["process"]
    match: str | None = None  # substring of the command line; default: [process] match
    pidfile: RelPath | None = None
    process_name: str | None = None
    min_count: Annotated[int, Field(ge=1)] = 1
    max_rss: Size | None = None  # absolute ceiling, all matched processes together
    max_memory_factor: Factor = 2.0  # vs the baseline RSS
    min_memory_increase: Size = 50 * 2**20  # ... and at least this much more (noise)
    # vs the median RSS of the release before's healthy cycles (at least 5 of them) ...
    max_memory_factor_vs_previous: Factor = 2.0
    min_memory_increase_vs_previous: Size = 100 * 2**20  # ... and at least this much more
    max_cpu_percent: Annotated[float, Field(gt=0)] | None = None


def needs(check: ProcessCheck, config: Config) -> tuple[str, str] | None:
    """Something to find the processes by: its own match, pidfile or process_name, or [process]'s."""
    has_default = config.process is not None and bool(config.process.match or config.process.pidfile)
    if check.match or check.pidfile or check.process_name or has_default:
        return None
    return "", "expected match, pidfile or process_name (or [process] match) for a process check"


@dataclass(frozen=True, slots=True)
class _Scan:
    """What the worker thread found."""

    count: int
    rss: int  # bytes, all processes together
    cpu_percent: float
    problem: str | None = None  # why nothing was found, when that is known (pidfile)


@dataclass(frozen=True, slots=True)
class Match:
    """One process a check found."""

    pid: int
    cmdline: str
    pgid: int | None  # None when it ended before it could be read
    sid: int | None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "cmdline": self.cmdline, "pgid": self.pgid, "sid": self.sid}


def target(check: ProcessCheck, config: Config) -> tuple[str | None, Path | None, str | None]:
    """(match, pidfile, process_name) the check looks for: its own, else `[process]`'s."""
    if not (check.match or check.pidfile or check.process_name) and config.process is not None:
        return config.process.match, config.process.pidfile, None
    return check.match, check.pidfile, check.process_name


def matched(match: str | None, pidfile: Path | None, name: str | None, state_dir: Path | None = None) -> list[Match]:
    """The processes a check with this target() finds now, with their command lines and
    groups (blocking)."""
    from healer import processes  # psutil: here, not with the config (healer/checks/registry.py)

    found, _ = processes.find(match, pidfile, name, state_dir)
    return [m for m in map(_match, found) if m is not None]


def split_groups(where: str, found: Sequence[Match]) -> str | None:
    """A warning when a match finds processes in more than one process group: two copies of
    the app (a master and its workers share one group), whose RSS the check adds up and both
    of which a restart would stop."""
    groups: dict[int | None, list[int]] = {}
    for m in found:
        groups.setdefault(m.pgid, []).append(m.pid)
    if len(groups) < 2:
        return None
    pids = "; ".join(", ".join(map(str, g)) for g in groups.values())
    return f"{where} finds {len(groups)} separate process groups (pids {pids}): make it more specific"


def _match(f: processes.Found) -> Match | None:
    import psutil  # here, not with the config (healer/checks/registry.py)

    from healer import processes

    p = processes.handle(f)
    if p is None:
        return None
    try:
        cmdline = " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        cmdline = "?"
    try:
        return Match(f.pid, cmdline, os.getpgid(f.pid), os.getsid(f.pid))
    except OSError:
        return Match(f.pid, cmdline, None, None)


async def probe(check: ProcessCheck, ctx: ProbeContext) -> CheckResult:
    """Find the processes, then compare count, RSS and CPU with the check's ceilings."""
    match, pidfile, name = target(check, ctx.config)
    scan = await asyncio.to_thread(_scan, match, pidfile, name, ctx.config.state_dir)

    values: dict[str, float] = {"count": scan.count}
    if scan.count:
        values["rss_mb"] = round(scan.rss / _MB, 3)
        values["cpu_percent"] = round(scan.cpu_percent, 2)
    symptoms: list[str] = []
    errors: list[str] = []
    if scan.count < check.min_count:
        symptoms.append("process.down")
        what = _describe_target(match, pidfile, name)
        found = scan.problem or f"{scan.count} running"
        errors.append(f"expected at least {check.min_count} process(es) {what}, {found}")
    if check.max_rss is not None and scan.count and scan.rss > check.max_rss:
        symptoms.append("process.memory")
        errors.append(f"RSS {format_size(scan.rss)} is over the {format_size(check.max_rss)} ceiling")
    if check.max_cpu_percent is not None and scan.count and scan.cpu_percent > check.max_cpu_percent:
        symptoms.append("process.cpu")
        errors.append(f"CPU {scan.cpu_percent:.0f}% is over the {check.max_cpu_percent:g}% ceiling")
    return measured(check, values, symptoms, errors)


def _describe_target(match: str | None, pidfile: Path | None, name: str | None) -> str:
    if pidfile is not None:
        return f"from pidfile {pidfile}"
    if match:
        return f"matching {match!r}"
    return f"named {name!r}"


def _scan(match: str | None, pidfile: Path | None, name: str | None, state_dir: Path) -> _Scan:
    """Find the processes (blocking), then measure them."""
    from healer import processes  # psutil: here, not with the config (healer/checks/registry.py)

    found, problem = processes.find(match, pidfile, name, state_dir)
    procs = [p for p in map(processes.handle, found) if p is not None]
    if not procs:
        return _Scan(0, 0, 0.0, problem)
    return _measure(procs)


def _measure(procs: list[psutil.Process]) -> _Scan:
    """RSS and CPU summed over the processes that are still alive after the CPU interval."""
    import psutil  # here, not with the config (healer/checks/registry.py)

    alive: list[psutil.Process] = []
    for p in procs:
        try:
            p.cpu_percent(None)  # the first reading only sets the starting point
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:  # another user's process: alive, not measurable
            pass
        alive.append(p)
    time.sleep(_CPU_INTERVAL)
    count, rss, cpu = 0, 0, 0.0
    for p in alive:
        try:
            with p.oneshot():
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
        except psutil.NoSuchProcess:  # ended in between: it no longer counts
            continue
        except psutil.Error:  # AccessDenied: alive, not measurable
            pass
        count += 1
    return _Scan(count, rss, cpu)
