"""Fleet mode's leadership and status: one healer leads each app, fenced (I/O).

`Leadership` holds one dedicated, unpooled PostgreSQL session (autocommit) for the whole run.
Every `renew_every(lease)` it reads the lease row and does what healer/lease.py `step()` says:
take over, renew, or follow. The leader keeps the app's advisory lock on that session so that a
follower notices its death at once; the lease row, not the lock, is what fences (see lease.py).

    leadership = Leadership.from_config(config)       # needs [fleet] and [state] dsn_env
    await leadership.start()                          # FleetError behind a transaction pooler
    runner = asyncio.create_task(leadership.run(stop))
    if leadership.is_leader:                          # on this host's monotonic clock
        await leadership.fenced(write)                # FencedError: the lease moved on; nothing written
    await leadership.close()                          # a leader hands the lease back at once

A transaction-pooling PgBouncer hands a client's session to other clients between its
transactions: the session-level lock would then be held by whichever client next got that
server session, and the leader's `holds_lock` would be a coin toss. `start()` refuses it: two
sessions of ours that share one server process are not two sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from healer import fleet_store, pg
from healer.clock import Clock, SystemClock
from healer.config import Config, StateDb
from healer.db import Database
from healer.errors import FencedError, FleetError, StoreError
from healer.fleet_judge import (
    HostVerdict,
    ReleaseJudgement,
    RollbackAsk,
    RollbackOrder,
    RollbackOutcome,
    asks_to_order,
    judge_release,
    rollback_outcome,
)
from healer.lease import Step, advisory_key, holder_name, renew_every, step, trusted_until
from healer.logging import log_event

log = logging.getLogger("healer")
T = TypeVar("T")

CONNECT_TIMEOUT = timedelta(seconds=5)
POOLED = (
    "is a transaction-pooling connection pooler (PgBouncer pool_mode = transaction), not one session: "
    "leadership holds a session-level advisory lock, which such a pooler hands to other clients between "
    "transactions; point [state] dsn_env at PostgreSQL itself or at a session-mode pool"
)


class Leadership:
    """This healer's standing in the fleet for one app: leader (at an epoch) or follower."""

    def __init__(self, server: pg.Server, *, app: str, host: str, lease: timedelta, clock: Clock | None = None) -> None:
        self.server = server
        self.app = app
        self.host = host
        self.lease = lease
        self.clock = clock or SystemClock()
        self.me = holder_name(host, os.getpid())
        self.key = advisory_key(app)
        self.epoch: int | None = None  # the epoch this healer last led at (None: never)
        self._trusted_until: timedelta | None = None  # monotonic; None: not leading
        self._conn: pg.AsyncConnection | None = None
        self._pid: int | None = None  # the server process of our session, when it opened
        self._locked = False  # our session holds the advisory lock
        self._use = asyncio.Lock()  # one statement sequence at a time on the one session
        self._exit: contextlib.AsyncExitStack | None = None
        self.db: Database | None = None  # the shared tables, for the fleet's rollbacks (opened by start)
        self.release: str | None = None  # the commit this host's app runs, as its last cycle saw it
        # set when a fleet rollback away from `release` waits for this host: the loop runs its
        # cycle at once (and follows it) rather than at its cadence, up to hours away
        self.ordered = asyncio.Event()

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None) -> Leadership:
        """The leadership `[fleet]` asks for, on the database of `[state] dsn_env`."""
        fleet, env = config.fleet, config.state.dsn_env
        if fleet is None or env is None:
            raise FleetError(f"{config.path}: fleet: expected [fleet] and [state] dsn_env")
        return cls(pg.server(env), app=config.fleet_app, host=config.fleet_host, lease=fleet.lease, clock=clock)

    @property
    def is_leader(self) -> bool:
        """Leading, and sure of it: the last renewal succeeded less than TRUST_SHARE of the lease
        ago on this host's monotonic clock (which counts on through a SIGSTOP)."""
        until = self._trusted_until
        return until is not None and self.clock.monotonic() < until

    # -- the session -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bring the fleet's tables up to date, open the session, refuse a transaction pooler.
        FleetError, StoreError, pg.Error."""
        shared = StateDb(Path(), self.server.env)
        await asyncio.to_thread(fleet_store.migrate, shared)
        self.db = await asyncio.to_thread(Database, shared)
        async with self._use:
            await self._open()

    async def _open(self) -> pg.AsyncConnection:
        """The session, opened again when the server dropped it (the lock went with it)."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        await self._drop()
        stack = contextlib.AsyncExitStack()
        try:
            conn = await stack.enter_async_context(pg.connect(self.server, CONNECT_TIMEOUT.total_seconds()))
            # 1. two sessions of ours open at once run in two server processes, unless a pooler
            #    hands them one server session in turn
            pid = await fleet_store.backend_pid(conn)
            async with pg.connect(self.server, CONNECT_TIMEOUT.total_seconds()) as probe:
                if await fleet_store.backend_pid(probe) == pid:
                    raise FleetError(f"postgresql {self.server.where} {POOLED}")
            # 2. a stopped healer's open transaction ends after the lease; lock waits are short
            await fleet_store.settle_session(conn, self.lease)
        except BaseException:
            await stack.aclose()
            raise
        self._exit, self._conn, self._pid, self._locked = stack, conn, pid, False
        return conn

    async def _drop(self) -> None:
        """Forget the session (its lock went with it on the server's side)."""
        exit_, self._exit, self._conn, self._locked = self._exit, None, None, False
        if exit_ is not None:
            with contextlib.suppress(Exception):
                await exit_.aclose()

    async def close(self) -> None:
        """Hand the lease back now if leading (a follower takes over at its next look), let go
        of the lock and close the session."""
        async with self._use:
            conn, epoch = self._conn, self.epoch
            if conn is not None and not conn.broken and self.is_leader and epoch is not None:
                with contextlib.suppress(pg.Error):
                    await fleet_store.release(conn, self.app, epoch=epoch)
            self._trusted_until = None
            await self._drop()
            if self.db is not None:
                self.db.close()
                self.db = None

    # -- the lease ---------------------------------------------------------------------------

    async def tick(self) -> Step:
        """Look at the lease once and take over, renew or follow (lease.step). A lost session
        makes this healer a follower until the next look opens a new one."""
        asked_at = self.clock.monotonic()
        async with self._use:
            try:
                conn = await self._open()
                done = await self._tick(conn)
            except (pg.Error, OSError, TimeoutError) as e:
                self._trusted_until = None
                await self._drop()
                log_event(log, "fleet.unreachable", level=logging.WARNING, app=self.app, error=self.server.reason(e))
                return Step.FOLLOW
        if done is Step.FOLLOW:
            if self._trusted_until is not None:
                log_event(log, "fleet.stepped_down", level=logging.WARNING, app=self.app, epoch=self.epoch)
            self._trusted_until = None
        else:
            self._trusted_until = trusted_until(asked_at, self.lease)
        return done

    async def _tick(self, conn: pg.AsyncConnection) -> Step:
        if self._locked:
            # behind a pooler that the start did not catch (it gave us a fresh server session)
            if await fleet_store.backend_pid(conn) != self._pid or not await fleet_store.holds_lock(conn, self.key):
                raise FleetError(f"postgresql {self.server.where} {POOLED}")
        else:
            self._locked = await fleet_store.try_lock(conn, self.key)
        async with conn.transaction():
            row, db_now = await fleet_store.read_lease(conn, self.app, for_update=True)
            what = step(row, me=self.me, my_epoch=self.epoch, has_lock=self._locked, db_now=db_now)
            if what is Step.TAKE_OVER:
                self.epoch = await fleet_store.take_over(
                    conn, self.app, holder=self.me, host=self.host, lease=self.lease, locked=self._locked
                )
                log_event(log, "fleet.leading", app=self.app, epoch=self.epoch, host=self.host)
            elif what is Step.RENEW and self.epoch is not None:
                await fleet_store.renew(conn, self.app, epoch=self.epoch, lease=self.lease, locked=self._locked)
        if what is Step.FOLLOW and self._locked:
            await fleet_store.unlock(conn, self.key)  # the holder takes it at its next renewal
            self._locked = False
        return what

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every renew_every(lease) until `stop` is set; then close(). A pooler found only
        now (it had given the start two server sessions) ends the ticking: this healer follows
        from then on, and says why."""
        try:
            while not stop.is_set():
                await self.tick()
                await self._look_for_orders()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), renew_every(self.lease).total_seconds())
        except FleetError as e:
            self._trusted_until = None
            log_event(log, "fleet.refused", level=logging.ERROR, app=self.app, error=str(e))
        finally:
            await self.close()

    async def _look_for_orders(self) -> None:
        """Set `ordered` when a fleet rollback away from this host's release waits for it (an
        unreadable table: the next look)."""
        if self.release is None or self.db is None or self.ordered.is_set():
            return
        try:
            order = await self.order_for(self.release)
        except StoreError:
            return
        if order is not None:
            log_event(log, "fleet.rollback_ordered_here", order=order.id, release=self.release[:12], to=order.to_ref)
            self.ordered.set()

    # -- what the leader does ----------------------------------------------------------------

    async def fenced(self, write: Callable[[pg.AsyncConnection], Awaitable[T]]) -> T:
        """Run `write` in one transaction on the session, only while the lease is still at our
        epoch and unexpired by the database's clock: FencedError otherwise (epoch 0 when this healer
        never led), and nothing is written."""
        async with self._use:
            if self.epoch is None:
                raise FencedError.lease(self.app, 0)
            conn = await self._open()
            return await fleet_store.fenced(conn, self.app, self.epoch, write)

    async def beat(self, beat: fleet_store.HostBeat) -> None:
        """Record this host's release, last cycle and health (the host registry)."""
        async with self._use:
            await fleet_store.heartbeat(await self._open(), beat)

    async def judge_release(self, release: str, healthy: bool, fresh: timedelta) -> ReleaseJudgement:
        """The fleet's judgement of `release` (fleet_judge.judge_release) from the host registry,
        this host counting with `healthy`, by the database's clock. pg.Error, OSError, TimeoutError
        when the registry cannot be read within a renewal's interval."""
        async with asyncio.timeout(renew_every(self.lease).total_seconds()), self._use:
            view = await fleet_store.read_fleet(await self._open(), self.app)
        hosts = [HostVerdict(h.host, h.release, h.healthy, h.seen_at) for h in view.hosts]
        return judge_release(hosts, host=self.host, release=release, healthy=healthy, now=view.db_now, fresh=fresh)

    # -- the fleet's rollbacks (healer/fleet_judge.py: RollbackOrder) ------------------------------

    def _shared(self) -> Database:
        if self.db is None:  # before start(), or after close() (healer stopping)
            raise StoreError(f"fleet {self.app}: the fleet's shared tables are not open")
        return self.db

    def _fence(self) -> fleet_store.LeaseFence:
        return fleet_store.LeaseFence(self.app, self.epoch or 0)

    async def order_rollback(self, order: RollbackOrder) -> int:
        """Record the rollback every host on `order.from_release` is to follow, fenced by this
        leader's lease (FencedError: it no longer leads, and nothing is recorded)."""
        return await asyncio.to_thread(fleet_store.order_rollback, self._shared(), self._fence(), order)

    async def order_for(self, release: str) -> RollbackOrder | None:
        """A fleet rollback away from `release` this host has yet to follow."""
        return await asyncio.to_thread(fleet_store.order_for, self._shared(), self.app, release, self.host)

    async def ask_rollback(self, ask: RollbackAsk) -> None:
        """A follower's ladder reached a rollback of its release: ask the leader (StoreError)."""
        await asyncio.to_thread(fleet_store.ask_rollback, self._shared(), self.app, ask)

    async def asked(self, release: str, healthy: bool, fresh: timedelta) -> list[tuple[RollbackAsk, ReleaseJudgement]]:
        """The leader's answer to the followers' asks (fleet_judge.asks_to_order), this host on
        `release` counting with `healthy`, by the database's clock. pg.Error, OSError,
        TimeoutError, StoreError when the tables cannot be read."""
        async with asyncio.timeout(renew_every(self.lease).total_seconds()), self._use:
            view = await fleet_store.read_fleet(await self._open(), self.app)
        hosts = [HostVerdict(h.host, h.release, h.healthy, h.seen_at) for h in view.hosts]
        asks, ordered = await asyncio.to_thread(fleet_store.rollback_asks, self._shared(), self.app)
        return asks_to_order(asks, hosts, leader=self.host, leader_release=release, leader_healthy=healthy,
                             ordered=ordered, now=view.db_now, fresh=fresh)  # fmt: skip

    async def report_rollback(self, order_id: int, ok: bool, detail: str, at: datetime) -> None:
        await asyncio.to_thread(fleet_store.report_rollback, self._shared(), order_id, self.host, ok, detail, at)

    async def settle_rollbacks(self, now: datetime, fresh: timedelta) -> list[RollbackOutcome]:
        """The outcomes of the fleet's rollbacks now complete (every live host reported, or the
        deadline passed), each recorded once, fenced: the leader announces what this returns."""
        async with asyncio.timeout(renew_every(self.lease).total_seconds()), self._use:
            view = await fleet_store.read_fleet(await self._open(), self.app)
        hosts = [HostVerdict(h.host, h.release, h.healthy, h.seen_at) for h in view.hosts]
        done = []
        for order, reports in await asyncio.to_thread(fleet_store.open_rollbacks, self._shared(), self.app):
            outcome = rollback_outcome(order, reports, hosts, now=now, fresh=fresh)
            if outcome is not None and await asyncio.to_thread(
                fleet_store.close_rollback, self._shared(), self._fence(), order.id, outcome.text
            ):
                done.append(outcome)
        return done

    async def report_cycle(self, release: str, at: datetime, healthy: bool) -> None:
        """After each of the loop's cycles: this host's line in the registry. A database that
        cannot be reached, or answers slower than a renewal's interval, costs the line, never
        the cycle (said in the log)."""
        self.release = release
        try:
            async with asyncio.timeout(renew_every(self.lease).total_seconds()):
                await self.beat(fleet_store.HostBeat(self.app, self.host, release, at, healthy))
        except (pg.Error, OSError, TimeoutError) as e:
            async with self._use:
                await self._drop()
            log_event(log, "fleet.unreachable", level=logging.WARNING, app=self.app, error=self.server.reason(e))


# ---- what only the leader runs ---------------------------------------------------------------

LEADING_LOOK = timedelta(seconds=1)  # how often while_leading looks at is_leader


async def while_leading(
    leadership: Leadership, run: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event
) -> None:
    """Run `run()` only while this healer leads: started when it becomes the leader, cancelled
    when it no longer is (a follower, a lost session), until `stop`. Chat-ops polls this way, so
    that one healer of the fleet answers each command (two pollers of one Telegram bot would
    also take each other's updates)."""
    task: asyncio.Task[None] | None = None
    try:
        while not stop.is_set():
            if leadership.is_leader:
                died = task is not None and task.done() and not task.cancelled() and task.exception() is not None
                if died and task is not None:  # started again at this look: never a crash loop faster than it
                    log_event(log, "fleet.leader_task_died", level=logging.ERROR, error=repr(task.exception()))
                if task is None or died:
                    task = asyncio.create_task(run())
            elif task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                task = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LEADING_LOOK.total_seconds())
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# ---- healer status --fleet ----------------------------------------------------------------------


async def fleet_status(config: Config) -> dict[str, Any]:
    """What `healer status --fleet` shows: every host of the app, its release, last cycle and
    health, and who leads since when (times in ISO 8601, by the database's clock)."""
    fleet, env = config.fleet, config.state.dsn_env
    if fleet is None or env is None:
        raise FleetError(f"{config.path}: status --fleet: expected a [fleet] section (and [state] dsn_env)")
    server = pg.server(env)
    app = config.fleet_app
    try:
        await asyncio.to_thread(fleet_store.migrate, config.shared_db)
        async with pg.connect(server, CONNECT_TIMEOUT.total_seconds()) as conn:
            view = await fleet_store.read_fleet(conn, app)
    except (pg.Error, OSError, TimeoutError) as e:
        raise FleetError(f"postgresql {server.where}: cannot read the fleet: {server.reason(e)}") from None
    lease = view.lease
    leader = None
    if lease is not None:
        leader = {
            "holder": lease.holder,
            "host": lease.host,
            "epoch": lease.epoch,
            "since": _iso(lease.since),
            "expires_at": _iso(lease.expires_at),
            "live": not lease.expired(view.db_now),
        }
    hosts = [
        {
            "host": h.host,
            "release": h.release,
            "last_cycle_at": None if h.last_cycle_at is None else _iso(h.last_cycle_at),
            "healthy": h.healthy,
            "seen_at": _iso(h.seen_at),
            "leads": lease is not None and not lease.expired(view.db_now) and lease.host == h.host,
        }
        for h in view.hosts
    ]
    return {"app": app, "now": _iso(view.db_now), "leader": leader, "hosts": hosts}


def _iso(t: datetime) -> str:
    """A database time in UTC (the server's TimeZone setting may be any)."""
    return t.astimezone(UTC).isoformat()
