"""The process actions: restart the app, or ask it to reload (I/O, psutil + child processes).

Through `[process] manager`: `systemctl restart NAME`, `pm2 restart NAME`,
`supervisorctl restart NAME` (`control` replaces the manager's command), each from PATH with
a timeout. With manager = "command" healer does it itself:

1. find the app's processes by `match` (a substring of the command line) or `pidfile`, by
   healer/processes.py's rule, the one the process check applies: never a healer process, and
   a pidfile whose process started after the file was written names a reused PID;
2. SIGTERM them (and SIGCONT, so a frozen process handles it), wait `stop_timeout`, SIGKILL
   what is left;
3. start `start` detached (its own session, stdin from /dev/null, output appended to
   `<state_dir>/app.log`, cwd `[process] cwd`), through a short-lived launcher so the app is
   not healer's child and outlives it;
4. confirm that a new process (a new PID, or the same PID with a new start time) is running
   within `start_timeout`.

psutil blocks, so every call into it runs in a worker thread; waits poll from the event loop,
so a step's timeout can always cut them short.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from healer.actions.command import resolve, run_argv, show_argv
from healer.errors import ActionError
from healer.files import make_private, private_dir
from healer.schema import PositiveDuration, StepBase, format_duration

if TYPE_CHECKING:
    from healer.config import Config, ProcessConfig
    from healer.processes import Found

_POLL = 0.1
_KILL_WAIT = 5.0
# After the started process exits, how long to look for the process it forked (a daemon).
_DAEMON_GRACE = 2.0
# A new process must still be alive this long after it was found.
_SETTLE = 0.3
LOG_NAME = "app.log"

_DEFAULT_COMMAND = {"systemd": ("systemctl",), "pm2": ("pm2",), "supervisor": ("supervisorctl",)}

# Starts argv[2:] in a new session with stdin from /dev/null and output to the log file named
# by argv[1] (or /dev/null), prints its PID and exits, leaving the app to init.
_LAUNCHER = """\
import subprocess, sys
log = sys.argv[1]
out = open(log, "ab") if log else subprocess.DEVNULL
p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                     start_new_session=True, close_fds=True)
print(p.pid, flush=True)
"""


class ProcessRestartStep(StepBase):
    """Restart the app through `[process] manager` (or stop and start it, manager = "command")."""

    action: Literal["process.restart"]
    timeout: PositiveDuration = timedelta(seconds=90)


class ProcessReloadStep(StepBase):
    """Ask the app to reload (reopen its pools) through the manager, or with a signal.

    `signal` overrides `[process] reload_signal`. With neither a manager that can reload nor
    a signal, the step is skipped and says so.
    """

    action: Literal["process.reload"]
    timeout: PositiveDuration = timedelta(seconds=30)
    signal: Annotated[str, Field(pattern=r"^(SIG)?[A-Z0-9]+$")] | None = None

    hints: ClassVar[Mapping[str, str]] = {"signal": 'expected a signal name like "SIGHUP"'}


def _section(config: Config, action: str) -> ProcessConfig:
    if config.process is None:
        msg = f"{action}: expected a [process] section (manager, name or start/match) in {config.path}"
        raise ActionError(msg)
    return config.process


def problems_restart(step: ProcessRestartStep, config: Config) -> list[str]:
    """Why process.restart cannot run with this config (empty: it can)."""
    if config.process is None:
        return [f"process.restart: expected a [process] section (manager, name or start/match) in {config.path}"]
    return []


def problems_reload(step: ProcessReloadStep, config: Config) -> list[str]:
    """Why process.reload cannot run (an unknown signal); not being configured is no problem:
    the step is then skipped."""
    name = _reload_signal_name(step, config)
    if name is not None:
        try:
            _signal(name)
        except ActionError as e:
            return [str(e)]
    return []


def manager_argv(pc: ProcessConfig, *verb: str) -> list[str]:
    """`systemctl restart NAME` and the like: the manager's command (or `control`), a verb, the name."""
    prefix = list(pc.control) if pc.control else list(_DEFAULT_COMMAND[pc.manager])
    return [*prefix, *verb, pc.name or ""]


def _target(pc: ProcessConfig) -> str:
    parts = []
    if pc.match:
        parts.append(f"command line contains {pc.match!r}")
    if pc.pidfile:
        parts.append(f"pidfile {pc.pidfile}")
    return " and ".join(parts)


def _cwd(config: Config, pc: ProcessConfig) -> Path:
    return pc.cwd if pc.cwd is not None else config.path.resolve().parent


def log_path(config: Config) -> Path:
    """Where a restarted app's output goes (manager = "command")."""
    return config.state_dir / LOG_NAME


# ---- plans -----------------------------------------------------------------------------------


def plan_restart(step: ProcessRestartStep, config: Config) -> str:
    """What process.restart would do."""
    pc = _section(config, "process.restart")
    if pc.manager != "command":
        return f"run `{show_argv(manager_argv(pc, 'restart'))}`"
    assert pc.start is not None
    return (
        f"stop the processes whose {_target(pc)} (never a healer process): SIGTERM, "
        f"SIGKILL after {format_duration(pc.stop_timeout)}; then start `{show_argv(pc.start)}` detached "
        f"in {_cwd(config, pc)}, output to {log_path(config)}; "
        f"confirm a new PID within {format_duration(pc.start_timeout)}"
    )


def plan_reload(step: ProcessReloadStep, config: Config) -> str:
    """What process.reload would do."""
    how = _reload_how(step, config)
    return how if isinstance(how, str) else f"run `{show_argv(how)}`"


def _reload_signal_name(step: ProcessReloadStep, config: Config) -> str | None:
    return step.signal or (config.process.reload_signal if config.process else None)


def _reload_how(step: ProcessReloadStep, config: Config) -> list[str] | str:
    """The argv that reloads the app, or a sentence: the signal to send, or why it is skipped."""
    pc = config.process
    sig = _reload_signal_name(step, config)
    if pc is None:
        return "skip the reload: no [process] section says how (set [process] manager or reload_signal)"
    short = None if sig is None else (sig[3:] if sig.startswith("SIG") else sig)
    if sig is not None and (pc.match or pc.pidfile):
        return f"send SIG{short} to the processes whose {_target(pc)}"
    if pc.manager == "systemd":
        return manager_argv(pc, "reload") if short is None else manager_argv(pc, "kill", f"--signal=SIG{short}")
    if pc.manager == "pm2":
        return manager_argv(pc, "reload") if short is None else manager_argv(pc, "sendSignal", f"SIG{short}")
    if pc.manager == "supervisor":
        # `supervisorctl reload` restarts supervisord itself: signal the program instead
        return manager_argv(pc, "signal", short or "HUP")
    return 'skip the reload: manager = "command" and no [process] reload_signal (e.g. "SIGHUP") is set'


def _signal(name: str) -> signal.Signals:
    full = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return signal.Signals[full]
    except KeyError:
        msg = f'process.reload: unknown signal {name!r}; expected a name like "SIGHUP"'
        raise ActionError(msg) from None


# ---- finding processes -------------------------------------------------------------------------


def _find(pc: ProcessConfig, state_dir: Path) -> list[Found]:
    """The app's processes by healer/processes.py's rule, the one the process check applies
    (blocking: run in a thread)."""
    from healer import processes  # psutil: here, not with the playbooks (healer/actions/registry.py)

    found, _ = processes.find(pc.match, pc.pidfile, None, state_dir)
    return found


def _signal_all(found: Sequence[Found], sig: signal.Signals, state_dir: Path) -> None:
    """Send `sig` to each process that is still the one found (psutil checks PID reuse) and
    is not healer (asked again: one may have started since it was found)."""
    import psutil  # type: ignore[import-untyped]  # here, not with the playbooks (healer/actions/registry.py)

    from healer import processes

    excluded = processes.protected(state_dir)
    for f in found:
        if f.pid in excluded:
            continue
        p = processes.handle(f)
        if p is None:
            continue  # gone, or a different process now holds the PID
        try:
            if processes.is_healer(p.cmdline()):
                continue
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:
            msg = f"not allowed to send {sig.name} to pid {f.pid} (run healer as the app's user)"
            raise ActionError(msg) from None


def _still_alive(found: Sequence[Found]) -> list[Found]:
    from healer import processes  # psutil: here, not with the playbooks (healer/actions/registry.py)

    return [f for f in found if processes.alive(f)]


async def _wait_gone(found: Sequence[Found], timeout: float) -> list[Found]:
    """Poll until every process has exited or `timeout` passes; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = list(found)
    while left:
        left = await asyncio.to_thread(_still_alive, left)
        if not left or time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL)
    return left


# ---- the actions -------------------------------------------------------------------------------


async def restart(step: ProcessRestartStep, config: Config, *, playbook: str = "") -> str:
    """Restart the app through its manager, or stop and start it (manager = "command")."""
    pc = _section(config, "process.restart")
    if pc.manager != "command":
        return await _restart_by_manager(step, config, pc)
    return await _restart_by_command(config, pc)


async def _restart_by_manager(step: ProcessRestartStep, config: Config, pc: ProcessConfig) -> str:
    argv = manager_argv(pc, "restart")
    state = config.state_dir
    before = await asyncio.to_thread(_find, pc, state) if (pc.match or pc.pidfile) else None
    await run_argv(argv, timeout=step.timeout)
    text = f"ran `{show_argv(argv)}`"
    if before is not None:
        after = await asyncio.to_thread(_find, pc, state)
        text += f" (pid {_pids(before)} -> {_pids(after)})"
    return text


async def _restart_by_command(config: Config, pc: ProcessConfig) -> str:
    """Steps 1-4 of the module docstring."""
    assert pc.start is not None  # ProcessConfig requires it for manager = "command"
    cwd = _cwd(config, pc)
    exe = resolve(pc.start[0], cwd)
    state = config.state_dir
    old = await asyncio.to_thread(_find, pc, state)
    stopped = ""
    if old:
        await asyncio.to_thread(_signal_all, old, signal.SIGTERM, state)
        # a stopped (SIGSTOP, frozen) process holds SIGTERM pending until it runs again: wake it,
        # as systemd does after its stop signal, so a hung app stops now, not at the SIGKILL
        await asyncio.to_thread(_signal_all, old, signal.SIGCONT, state)
        left = await _wait_gone(old, pc.stop_timeout.total_seconds())
        killed = len(left)
        if left:
            await asyncio.to_thread(_signal_all, left, signal.SIGKILL, state)
            left = await _wait_gone(left, _KILL_WAIT)
            if left:
                msg = f"pid {_pids(left)} survived SIGKILL; not starting a second copy"
                raise ActionError(msg)
        stopped = f"stopped pid {_pids(old)}" + (
            f" ({killed} needed SIGKILL after {format_duration(pc.stop_timeout)})" if killed else " (SIGTERM)"
        )
    else:
        stopped = f"no running process whose {_target(pc)}"
    new_pid = await _launch(config, [exe, *pc.start[1:]], cwd)
    new = await _confirm(pc, old, new_pid, config)
    return f"{stopped}; started `{show_argv(pc.start)}` as pid {_pids(new)}"


async def _launch(config: Config, argv: Sequence[str], cwd: Path) -> int:
    """Start `argv` detached through the launcher; returns the app's PID."""
    log = log_path(config)
    try:
        # the launcher appends to the file as it is: create it private here, in a private dir
        private_dir(log.parent)
        make_private(log)
    except OSError as e:
        msg = f"cannot create {log}: {e.strerror}"
        raise ActionError(msg) from None
    if not cwd.is_dir():
        msg = f"[process] cwd: {cwd} is not a directory"
        raise ActionError(msg)
    done = await run_argv(
        [sys.executable, "-I", "-c", _LAUNCHER, str(log), *argv],
        timeout=timedelta(seconds=30), cwd=cwd, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        msg = f"cannot start `{show_argv(argv)}`: {done.last_line() or f'exit {done.returncode}'}"
        raise ActionError(msg)
    try:
        return int(done.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        msg = f"cannot start `{show_argv(argv)}`: the launcher printed no PID"
        raise ActionError(msg) from None


async def _confirm(pc: ProcessConfig, old: Sequence[Found], started: int, config: Config) -> list[Found]:
    """Wait up to `start_timeout` for a new process of the app (one not among `old`)."""
    import psutil  # here, not with the playbooks (healer/actions/registry.py)

    from healer import processes

    old_ids = set(old)
    deadline = time.monotonic() + pc.start_timeout.total_seconds()
    started_gone_at: float | None = None

    def look() -> tuple[list[Found], bool]:
        new = [f for f in _find(pc, config.state_dir) if f not in old_ids]
        try:
            p = psutil.Process(started)
            up = p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            up = False
        return new, up

    while True:
        new, up = await asyncio.to_thread(look)
        if new:
            await asyncio.sleep(_SETTLE)
            still = [f for f in new if await asyncio.to_thread(processes.alive, f)]
            if still:
                return still
        now = time.monotonic()
        if not up:
            started_gone_at = started_gone_at or now
            if now - started_gone_at >= _DAEMON_GRACE:
                msg = f"the app (pid {started}) exited right after it started; see {log_path(config)}"
                raise ActionError(msg)
        if now >= deadline:
            msg = (
                f"started pid {started}, but no new process whose {_target(pc)} appeared within "
                f"{format_duration(pc.start_timeout)}; see {log_path(config)}"
            )
            raise ActionError(msg)
        await asyncio.sleep(_POLL * 2)


async def reload(step: ProcessReloadStep, config: Config, *, playbook: str = "") -> str:
    """Ask the app to reopen its pools: `[process] reload_signal` to its processes, or the
    manager's reload; skipped (and said so) when neither is configured."""
    how = _reload_how(step, config)
    if isinstance(how, list):
        await run_argv(how, timeout=step.timeout)
        return f"ran `{show_argv(how)}`"
    if how.startswith("skip"):
        return how.replace("skip the reload", "skipped the reload", 1)
    pc = config.process
    assert pc is not None
    name = _reload_signal_name(step, config)
    assert name is not None
    sig = _signal(name)
    found = await asyncio.to_thread(_find, pc, config.state_dir)
    if not found:
        msg = f"process.reload: no running process whose {_target(pc)} to send {sig.name} to"
        raise ActionError(msg)
    await asyncio.to_thread(_signal_all, found, sig, config.state_dir)
    return f"sent {sig.name} to pid {_pids(found)}"


def _pids(found: Sequence[Found]) -> str:
    return ", ".join(str(f.pid) for f in found) or "none"
