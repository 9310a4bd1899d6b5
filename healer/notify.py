"""systemd's notify protocol without a library, and the loop's liveness it vouches for (I/O).

    notify("READY=1")                  # no-op (False) when NOTIFY_SOCKET is unset; never raises
    liveness = Liveness(stall_limit(config))
    liveness.beat()                    # the loop made progress (each iteration)
    with liveness.busy(action_budget(config)):   # a long repair or rollback is progress too
        ...
    task = asyncio.create_task(watchdog_pinger(stop, liveness.is_alive))

The pinger runs on the loop's own event loop, so an event loop blocked by a synchronous call
stops the pings by itself; `alive()` catches the other kind of hang, an await that never ends.
Protocol: https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from healer.logging import log_event

if TYPE_CHECKING:
    from healer.config import Config

log = logging.getLogger("healer.notify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

# A healthy loop beats every iteration: at least once a second while it waits (HEAD_POLL),
# and after each cycle, whose probes run concurrently, each bounded by its check's timeout.
# This floor keeps a slow disk or a GC pause from looking like a hang.
MIN_STALL_AFTER = timedelta(seconds=60)
# Late by less than this, a loop is never called stalled or behind. Its beats get the higher
# MIN_STALL_AFTER: a stall there has systemd kill healer, a mistake that costs more.
MIN_OVERDUE = timedelta(seconds=30)
# Store writes, git and alert hand-off in one cycle, on top of the slowest check.
_CYCLE_OVERHEAD = timedelta(seconds=10)
# One repair (a playbook: a few steps of 30-90 s each, then up to 30 s of verification).
DEFAULT_REPAIR_BUDGET = timedelta(minutes=10)
# What rollback.run_rollback does besides the `after` commands: checkout, tag/stash.
_ROLLBACK_GIT_STEPS = 2

_warned = False


def notify(message: str) -> bool:
    """Send one message (`READY=1`, `WATCHDOG=1`, `STATUS=...`, `STOPPING=1`) to systemd.

    False, and nothing done, when NOTIFY_SOCKET is unset (not run by systemd with
    Type=notify). Never raises: a failure is logged once and reported as False.
    """
    global _warned
    address = os.environ.get(NOTIFY_SOCKET_ENV, "")
    if not address:
        return False
    if address.startswith("@"):  # the abstract namespace: a leading NUL byte on the wire
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a full queue loses one message rather than stall the loop
            sock.connect(address)
            sock.sendall(message.encode("utf-8", "replace"))
        return True
    except (OSError, ValueError) as e:
        if not _warned:
            _warned = True
            log_event(
                log, "notify.failed", level=logging.WARNING, socket=address.replace("\0", "@"),
                message=message.split("=", 1)[0], error=f"{type(e).__name__}: {e}",
            )  # fmt: skip
        return False


def watchdog_interval() -> timedelta | None:
    """systemd's WatchdogSec as this process sees it (WATCHDOG_USEC), or None when off.

    A WATCHDOG_PID naming another process means the watchdog is not ours (sd_watchdog_enabled).
    """
    usec = os.environ.get(WATCHDOG_USEC_ENV, "").strip()
    pid = os.environ.get(WATCHDOG_PID_ENV, "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return timedelta(microseconds=int(usec))


async def watchdog_pinger(stop: asyncio.Event, alive: Callable[[], bool], *, interval: timedelta | None = None) -> None:
    """Send WATCHDOG=1 at half the watchdog interval, but only while `alive()` holds.

    Returns at once when there is no watchdog (no WATCHDOG_USEC and no `interval`). When
    `alive()` turns false the pings stop, so systemd kills and restarts a hung healer one
    interval later; the journal says why (one `watchdog.withheld` event, and a STATUS line).
    """
    full = interval if interval is not None else watchdog_interval()
    if full is None or full <= timedelta(0):
        return
    every = full.total_seconds() / 2
    withholding = False
    while not stop.is_set():
        try:
            ok = alive()
        except Exception:  # a broken probe of liveness is a hang: let systemd act
            ok = False
        if ok:
            notify("WATCHDOG=1")
            if withholding:
                withholding = False
                log_event(log, "watchdog.resumed")
        elif not withholding:
            withholding = True
            log_event(log, "watchdog.withheld", level=logging.ERROR,
                      reason="the loop made no progress; systemd will restart healer")  # fmt: skip
            notify("STATUS=loop stalled: watchdog pings withheld")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


# ---- liveness ------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Liveness:
    """When the loop last made progress, and whether that is recent enough (thread-safe).

    Alive while the last beat is at most `stall_after` old, or while inside a `busy()` block
    that has not outrun its limit. Monotonic time: a wall-clock jump is not a hang. Creating
    it counts as a beat (the loop is starting).

    The loop also says here whether its state store can be written (`store_failed()`,
    `store_ok()`): a loop that works from memory is alive, so systemd's watchdog leaves it be,
    but it is not healthy, and /healthz and /metrics say so.
    """

    def __init__(
        self,
        stall_after: timedelta = MIN_STALL_AFTER,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.stall_after = stall_after
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._busy: list[float] = []  # deadlines of the busy() blocks we are in
        self._last = monotonic()
        self._last_wall = wall()
        self._beats = 0
        self._store_error: tuple[str, datetime] | None = None  # (why, since when)

    def beat(self) -> None:
        """The loop made progress now."""
        with self._lock:
            self._last = self._monotonic()
            self._last_wall = self._wall()
            self._beats += 1

    @contextlib.contextmanager
    def busy(self, limit: timedelta) -> Iterator[None]:
        """Inside, the loop counts as alive for up to `limit` without beating (a rollback)."""
        self.beat()
        with self._lock:
            deadline = self._monotonic() + limit.total_seconds()
            self._busy.append(deadline)
        try:
            yield
        finally:
            with self._lock:
                self._busy.remove(deadline)
            self.beat()

    def age(self) -> timedelta:
        """How long since the last beat."""
        with self._lock:
            return timedelta(seconds=max(0.0, self._monotonic() - self._last))

    def last_seen(self) -> datetime:
        """Wall-clock time of the last beat (for /metrics and humans)."""
        with self._lock:
            return self._last_wall

    @property
    def beats(self) -> int:
        """Beats so far (0 until the loop's first iteration)."""
        return self._beats

    def store_failed(self, error: str) -> None:
        """The state store cannot be written (the loop goes on from memory)."""
        with self._lock:
            since = self._store_error[1] if self._store_error is not None else self._wall()
            self._store_error = (error, since)

    def store_ok(self) -> None:
        """The state store can be written again."""
        with self._lock:
            self._store_error = None

    @property
    def store_error(self) -> tuple[str, datetime] | None:
        """(why, since when) while the state store cannot be written, else None."""
        with self._lock:
            return self._store_error

    def is_alive(self) -> bool:
        """The rule the watchdog pings and /healthz apply."""
        with self._lock:
            now = self._monotonic()
            if any(now <= d for d in self._busy):
                return True
            return now - self._last <= self.stall_after.total_seconds()


def overdue_after(every: timedelta, floor: timedelta = MIN_OVERDUE) -> timedelta:
    """The one liveness rule: a loop that shows progress every `every` is stalled once it has
    not for twice that, and never sooner than `floor`. Applied to the beats (stall_limit), to
    the store's `loop_seen` (`healer status`) and to a cycle that runs late (meta.loop_behind)."""
    return max(2 * every, floor)


def stall_limit(config: Config) -> timedelta:
    """How long the loop may go without a beat outside busy(): overdue after its longest
    ordinary iteration (the slowest check plus the cycle's own work), never under MIN_STALL_AFTER."""
    slowest = max(c.timeout for c in config.checks)
    return overdue_after(slowest + _CYCLE_OVERHEAD, MIN_STALL_AFTER)


def action_budget(config: Config) -> timedelta:
    """A bound on one repair or rollback, for `Liveness.busy()`.

    Each of their steps has its own timeout; this only catches a hang that none of them
    bounds. A rollback: the git steps and every `after` command at `command_timeout`, then up
    to three verifications (`verify_grace` plus the slowest check). A repair: a fixed budget.
    """
    from healer.rollback_plan import VERIFY_TRIES  # with the config: only the loop, which has it, asks

    slowest = max(c.timeout for c in config.checks)
    rb = config.rollback
    commands = (len(rb.after) + _ROLLBACK_GIT_STEPS) * rb.command_timeout
    verify = VERIFY_TRIES * (rb.verify_grace + slowest + timedelta(seconds=1))
    rollback = commands + verify
    return max(rollback, DEFAULT_REPAIR_BUDGET)
