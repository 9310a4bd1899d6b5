"""Between cycles, watch the app's processes and wake the loop when one exits (I/O, pidfd + psutil).

healer's cycles poll, and after the first day they are hours apart: an app that dies between
them (under `manager = "command"`, or a manager that does not restart it) would stay down
until the next one. So the loop also waits on this watcher, which holds one pidfd per process
of the app (`os.pidfd_open`, registered with the event loop's `add_reader`): the kernel makes
it readable the moment the process exits, at no cost while it runs. Where pidfds are not
available (not Linux, a kernel before 5.3) it polls the PIDs with psutil every FALLBACK_POLL.

Which processes (`discover`):

1. `[process] match` / `pidfile` and the `process` checks' own targets, found as a restart or
   the check finds them (never a healer process);
2. with none of those, the PID the manager names: `systemctl show --property=MainPID`,
   `supervisorctl pid NAME`, `pm2 pid NAME`. A manager's own events (supervisor's event
   listeners, PM2's bus, systemd's D-Bus signals) would need a listener configured inside the
   manager, an undocumented socket protocol or a D-Bus library; the manager's PID plus a
   pidfd tells the same exit as soon as they do, and asks the manager only when the PIDs
   change (at start, after an exit, after a repair), then every DISCOVER_EVERY.

A look that finds no process of an app that ran at the previous one wakes the loop too (a
manager that gave up restarting it, a process that started and died between two looks).
A process that exits while a repair or rollback runs — healer's own, or a person's through
`healer repair` / `healer rollback`, seen by their lock files — is that action's doing: it
wakes nothing (healer must not fight itself), and the PIDs are looked up again afterwards.

What the loop does with a wake is decided by the pure `early_cycle_at`: debounced (the
processes of one crash give one cycle) and bounded (a crash-looping app cannot make healer
spin).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

from healer import processes
from healer.actions.command import run_argv
from healer.actions.process import manager_argv
from healer.checks.process import ProcessCheck, target
from healer.clock import Clock
from healer.config import Config
from healer.errors import HealerError
from healer.ladder import Spacing, next_run_at
from healer.locks import holder
from healer.logging import log_event
from healer.rollback import LOCK_NAME as ROLLBACK_LOCK

log = logging.getLogger("healer")

# ---- the decision (pure) -------------------------------------------------------------------------

# Wakes this close together are one crash (a master and its workers, a process and its
# manager's restart): one cycle, run this long after the first of them.
DEBOUNCE = timedelta(milliseconds=500)
# A manager that restarts the app itself (supervisor's autorestart, PM2, systemd's Restart=)
# gets this long to do so before healer's cycle looks: healer then sees the app back rather
# than restarting it a second time on top of the manager.
MANAGER_SETTLE = timedelta(seconds=3)
# The bound: early cycles are spaced as the shipped process-restart playbook spaces restarts
# (the first at once, then 10 s, 30 s, 2 min, then every 10 min while the app keeps dying),
# through the ladder's own backoff rule, so a crash-looping app costs at most one early
# cycle per 10 minutes — the scheduled cycles go on as before.
EARLY_SPACING = Spacing(
    cooldown=timedelta(0),
    backoff=(timedelta(0), timedelta(seconds=10), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10)),
)
# Early cycles further back than this no longer count toward the bound: a crash a day is
# always looked at at once.
EARLY_MEMORY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Wake:
    """Something the watcher saw between cycles."""

    at: datetime
    why: str  # for people and the log: "app pid 1234 exited"


def settle_for(config: Config) -> timedelta:
    """How long after the first wake the early cycle runs: DEBOUNCE when healer alone restarts
    the app (`manager = "command"`, or no [process] section), MANAGER_SETTLE under a manager."""
    if config.process is None or config.process.manager == "command":
        return DEBOUNCE
    return MANAGER_SETTLE


def early_cycle_at(
    pending: Sequence[Wake], early_runs: Sequence[datetime], now: datetime, *, settle: timedelta
) -> datetime | None:
    """When the early cycle the pending wakes ask for may run (None: none pending).

    1. Debounce: `settle` after the first pending wake, so that the wakes of one crash,
       however many processes it ended, make one cycle (and a manager's own restart is seen).
    2. Bound: no sooner than the ladder's backoff (EARLY_SPACING) allows after the early cycles
       of the last EARLY_MEMORY: the first at once, a crash-looping app ever more slowly.
    """
    if not pending:
        return None
    at = min(w.at for w in pending) + settle
    bound = next_run_at(EARLY_SPACING, [t for t in early_runs if now - t < EARLY_MEMORY])
    return at if bound is None else max(at, bound)


def woken_why(pending: Sequence[Wake]) -> str:
    """One line for the log and the cycle: "app pid 1234 exited" (", pid 1235 exited", ...)."""
    whys = list(dict.fromkeys(w.why for w in pending))
    return "; ".join(whys[:3]) + (f" (and {len(whys) - 3} more)" if len(whys) > 3 else "")


# ---- finding the app's processes -----------------------------------------------------------------

# Ask the manager, or scan the process table, this often while something is watched (a PID
# that changed without an exit healer saw: a person's restart outside healer) ...
DISCOVER_EVERY = timedelta(minutes=5)
# ... and this often while nothing is (the app is down, or not started yet).
DISCOVER_EMPTY = timedelta(seconds=30)
# After an exit, look again this soon (the manager's restart, or healer's, has a new PID).
AFTER_EXIT = timedelta(seconds=1)
# Without pidfds, look at the PIDs this often.
FALLBACK_POLL = timedelta(seconds=2)
# A manager asked for the app's PID must answer within this.
_ASK_TIMEOUT = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class Pid:
    """A process to watch; `started` (psutil's create_time) tells a reused PID, when known."""

    pid: int
    started: float | None = None


def _scan(config: Config) -> list[Pid]:
    """The processes `[process]` and the process checks find (blocking), by healer/processes.py's
    rule, the one the check and a restart apply."""
    targets: list[tuple[str | None, Path | None, str | None]] = []
    pc = config.process
    if pc is not None and (pc.match or pc.pidfile):
        targets.append((pc.match, pc.pidfile, None))
    targets += [target(c, config) for c in config.checks if isinstance(c, ProcessCheck)]
    found: dict[int, Pid] = {}
    for match, pidfile, name in targets:
        for f in processes.find(match, pidfile, name, config.state_dir)[0]:
            found.setdefault(f.pid, Pid(f.pid, f.create_time))
    return list(found.values())


def watches_by_scan(config: Config) -> bool:
    """Are the app's processes found in the process table (else: asked of the manager)?"""
    pc = config.process
    return (pc is not None and bool(pc.match or pc.pidfile)) or any(isinstance(c, ProcessCheck) for c in config.checks)


async def _ask_manager(config: Config) -> list[Pid]:
    """The PID the manager says runs the app (step 2 of the module docstring); none when it
    runs nothing or cannot be asked (said in the log: the cycles go on as before)."""
    pc = config.process
    if pc is None or pc.manager == "command" or not pc.name:
        return []
    verb = ["show", "--property=MainPID", "--value"] if pc.manager == "systemd" else ["pid"]
    try:
        done = await run_argv(manager_argv(pc, *verb), timeout=_ASK_TIMEOUT, check=False)
    except HealerError as e:
        log_event(log, "watch.manager_error", level=logging.WARNING, error=str(e))
        return []
    if done.returncode != 0:
        return []
    return [Pid(int(w)) for w in done.output.split() if w.isdigit() and int(w) > 0]


async def discover(config: Config) -> list[Pid]:
    """The app's processes to watch now."""
    if watches_by_scan(config):
        return await asyncio.to_thread(_scan, config)
    return await _ask_manager(config)


def actions_running(state_dir: Path) -> bool:
    """Does any process (this one included) hold a repair's or a rollback's lock right now?
    flock locks belong to an open file, so locks.holder sees this process's own too."""
    paths = [state_dir / ROLLBACK_LOCK, *state_dir.glob("repair-*.lock")]
    return any(holder(path) is not None for path in paths)


def _same(p: Pid) -> bool:
    """Is `p` still running (the same process, not a zombie)? A PID a manager named has no
    start time: whatever live process holds it is taken for it."""
    if p.started is not None:
        return processes.alive(processes.Found(p.pid, p.started))
    try:
        return bool(psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


# ---- the watcher -----------------------------------------------------------------------------------


class Watcher:
    """Watches the app's processes beside the loop; `pending` holds what it saw, `changed` is set
    when a wake arrives. The loop takes the wakes when it runs a cycle (`take`) and asks for a
    fresh look at the PIDs after a cycle that acted (`refresh`)."""

    def __init__(
        self, config: Config, clock: Clock, *, acting: Callable[[], bool], use_pidfd: bool | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        self._acting = acting  # True while a repair or rollback (the loop's or a person's) runs
        self.use_pidfd = hasattr(os, "pidfd_open") if use_pidfd is None else use_pidfd
        self.pending: list[Wake] = []
        self.changed = asyncio.Event()
        self._refresh = asyncio.Event()
        self._fds: dict[int, int] = {}  # pid -> its pidfd
        self._polled: dict[int, Pid] = {}  # pid -> the process (no pidfd)
        self._timer: asyncio.TimerHandle | None = None  # the look after the latest exit
        self._seen_running = False  # the last look found the app running (or an exit since)

    @property
    def watched(self) -> list[int]:
        return sorted([*self._fds, *self._polled])

    def is_active(self) -> bool:
        """Whether there is anything to watch at all."""
        return self.config.process is not None or watches_by_scan(self.config)

    def take(self) -> list[Wake]:
        """The pending wakes, handed to the cycle that now runs (and cleared)."""
        out, self.pending = self.pending, []
        self.changed.clear()
        return out

    def refresh(self) -> None:
        """Look up the app's PIDs again now (a repair or rollback has just started new ones)."""
        self._refresh.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: find the PIDs (at start, when asked, after an exit, every DISCOVER_EVERY)
        and watch them."""
        if not self.is_active():
            return
        try:
            await self._watch_until(stop)
        except Exception as e:  # a bug here must not take the loop down: its cycles go on as before
            log_event(log, "watch.crashed", level=logging.ERROR, error=f"{type(e).__name__}: {e}")
        finally:
            self.close()

    async def _watch_until(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not stop.is_set():
            if self._refresh.is_set() or loop.time() >= due:
                self._refresh.clear()
                await self._discover()
                due = loop.time() + (DISCOVER_EVERY if self.watched else DISCOVER_EMPTY).total_seconds()
            if self._polled:
                for pid in await asyncio.to_thread(self._gone):
                    self._exited(pid)
            wait = due - loop.time()
            if self._polled:
                wait = min(wait, FALLBACK_POLL.total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_done(self._refresh.wait(), stop.wait()), max(wait, 0.0))

    def close(self) -> None:
        """Stop watching: the pidfds closed, the timer cancelled."""
        loop = asyncio.get_running_loop()
        for fd in self._fds.values():
            loop.remove_reader(fd)
            os.close(fd)
        self._fds.clear()
        self._polled.clear()
        if self._timer is not None:
            self._timer.cancel()

    async def _discover(self) -> None:
        try:
            found = await discover(self.config)
        except Exception as e:  # the watcher must never take the loop down
            log_event(log, "watch.error", level=logging.WARNING, error=f"{type(e).__name__}: {e}")
            return
        acting = self._acting()
        if acting:  # the action's new PIDs may not be there yet: look again soon
            self._look_soon()
        if found:
            self._seen_running = True
        elif self._seen_running and not acting and not self.watched:
            # it ran at the last look and has not come back (a manager that gave up, or a
            # process that started and died between two looks)
            self._seen_running = False
            self._wake("no process of the app is running")
        new = [p for p in found if p.pid not in self._fds and p.pid not in self._polled]
        for p in new:
            self._watch(p)
        if new:
            log_event(log, "watch.pids", pids=",".join(map(str, self.watched)), pidfd=self.use_pidfd)

    def _watch(self, p: Pid) -> None:
        """One pidfd per process, read by the event loop; or, without pidfds, a place in the poll."""
        if not self.use_pidfd:
            self._polled[p.pid] = p
            return
        try:
            fd = os.pidfd_open(p.pid)
        except ProcessLookupError:
            self._exited(p.pid)  # gone between the scan and now
            return
        except OSError as e:  # ENOSYS: Python has pidfd_open, the kernel (before 5.3) does not
            log_event(log, "watch.no_pidfd", error=e.strerror, then=f"polling every {FALLBACK_POLL.seconds}s")
            self.use_pidfd = False
            self._polled[p.pid] = p
            return
        if not _same(p):  # the PID was reused, or the process ended, since the scan
            os.close(fd)
            self._exited(p.pid)
            return
        self._fds[p.pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._on_pidfd, p.pid)

    def _on_pidfd(self, pid: int) -> None:
        fd = self._fds.pop(pid)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        self._exited(pid)

    def _gone(self) -> list[int]:
        """The polled PIDs that ended (blocking: psutil)."""
        gone = [pid for pid, p in list(self._polled.items()) if not _same(p)]
        for pid in gone:
            del self._polled[pid]
        return gone

    def _exited(self, pid: int) -> None:
        """A watched process is gone: a wake, unless a repair or rollback is running (its own
        doing); either way, look for the app's new PIDs soon."""
        if self._acting():
            log_event(log, "watch.exit_expected", pid=pid, why="a repair or rollback is running")
        else:
            self._wake(f"app pid {pid} exited", pid)
        self._look_soon()

    def _wake(self, why: str, pid: int | None = None) -> None:
        log_event(log, "watch.woke", why=why, pid=pid)
        self.pending.append(Wake(self.clock.now(), why))
        self.changed.set()

    def _look_soon(self) -> None:
        """Look up the PIDs again AFTER_EXIT from now."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(AFTER_EXIT.total_seconds(), self._refresh.set)


async def first_done(*waits: Awaitable[object]) -> None:
    """Return when the first of `waits` is done (a sleep, an event set); cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
