"""The fleet's tables in PostgreSQL: the lease row, the host registry, fenced writes (I/O).

All of the fleet's SQL is here, on a psycopg connection from healer/pg.py in autocommit (each
function that needs a transaction opens its own). Timestamps are the database's `now()`, so
that every host's lease is measured on one clock.

    migrate(config.shared_db)                                        # the tables (blocking)
    row, db_now = await read_lease(conn, app, for_update=True)      # inside conn.transaction()
    await fenced(conn, app, epoch, write)                            # FencedError unless epoch holds
    await heartbeat(conn, HostBeat(app, host, release, last_cycle_at, healthy))
    view = await read_fleet(conn, app)                               # for healer status --fleet
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from healer.config import StateDb
from healer.db import Database, Migration, Tx
from healer.errors import FencedError
from healer.lease import LeaseRow, lock_ids
from healer.pg import AsyncConnection

T = TypeVar("T")

# The fleet's tables, a component of the state database like the store's and the outbox's
# (healer/db.py: Migration). Fleet mode needs PostgreSQL ([state] dsn_env), so only the PostgreSQL
# words ever run; the SQLite ones keep the migration whole (db.py words every component for both).
_LEASE = """CREATE TABLE IF NOT EXISTS fleet_lease (
    app TEXT PRIMARY KEY,
    holder TEXT NOT NULL,              -- host:pid of the leading healer
    host TEXT NOT NULL,                -- its [fleet] host
    epoch BIGINT NOT NULL,             -- raised on every takeover
    since {time} NOT NULL,             -- when this epoch began
    renewed_at {time} NOT NULL,
    expires_at {time} NOT NULL,
    locked BOOLEAN NOT NULL            -- the holder held the advisory lock at its last renewal
);
CREATE TABLE IF NOT EXISTS fleet_hosts (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    release TEXT,                      -- the commit (or tag) the host runs
    last_cycle_at {time},
    healthy BOOLEAN,                   -- its last cycle's verdict; NULL: none yet
    seen_at {time} NOT NULL,           -- its healer's last heartbeat
    PRIMARY KEY (app, host)
)"""
MIGRATIONS = (
    Migration(
        1,
        "the lease and the host registry",
        _LEASE.format(time="TEXT"),
        postgres=_LEASE.format(time="TIMESTAMPTZ"),  # the lease is timed by the database's now()
    ),
)
FLEET = "fleet"  # the component's name in schema_version


def migrate(where: StateDb) -> None:
    """Bring the fleet's tables up to date on the state database (blocking: run it in a thread).
    Safe against other hosts starting at once: db.migrate writes under the store's write lock."""
    db = Database(where)
    try:
        db.migrate(FLEET, MIGRATIONS)
    finally:
        db.close()


# Is the lease still at this epoch, unexpired by the database's clock? Read FOR SHARE: a takeover
# (read FOR UPDATE) waits for the fenced transaction, so what was read holds until its commit.
_FENCE = "SELECT 1 FROM fleet_lease WHERE app = {p} AND epoch = {p} AND expires_at > now() FOR SHARE"


@dataclass(frozen=True, slots=True)
class LeaseFence:
    """A db.write fence (healer/db.py: Fence): the transaction is written only while `app`'s
    lease is at `epoch` and unexpired; FencedError otherwise, and nothing is written."""

    app: str
    epoch: int

    def check(self, tx: Tx) -> None:
        if not tx.query(_FENCE.format(p="?"), (self.app, self.epoch)):
            raise FencedError.lease(self.app, self.epoch)


# ---- the session: its lock, its backend ---------------------------------------------------------


async def backend_pid(conn: AsyncConnection) -> int:
    """The server process serving this session (a pooler in transaction mode changes it)."""
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def settle_session(conn: AsyncConnection, lease: timedelta) -> None:
    """Bound what a stalled healer can hold: a transaction left open by a process that was
    stopped in it is ended by the server after `lease` (its row locks would otherwise keep the
    others from taking over), and no lock wait outlasts a third of it."""
    ms = max(1, int(lease.total_seconds() * 1000))
    for key, value in (("idle_in_transaction_session_timeout", ms), ("lock_timeout", max(1, ms // 3))):
        await conn.execute("SELECT set_config(%s, %s, false)", (key, f"{value}ms"))


async def try_lock(conn: AsyncConnection, key: int) -> bool:
    """pg_try_advisory_lock: take the session-level lock now, or say another session has it."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def unlock(conn: AsyncConnection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def holds_lock(conn: AsyncConnection, key: int) -> bool:
    """Does this very session (backend) hold the lock? False behind a pooler that moved us."""
    classid, objid = lock_ids(key)
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        " AND classid = %s::oid AND objid = %s::oid AND objsubid = 1 AND granted)",
        (classid, objid),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


# ---- the lease -----------------------------------------------------------------------------------

_LEASE_COLUMNS = "holder, host, epoch, since, expires_at, locked, now()"


async def read_lease(conn: AsyncConnection, app: str, *, for_update: bool = False) -> tuple[LeaseRow | None, datetime]:
    """The app's lease row (None: never taken) and the database's clock. `for_update` locks the
    row until the caller's transaction ends: a fenced write in flight finishes first."""
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(f"SELECT {_LEASE_COLUMNS} FROM fleet_lease WHERE app = %s{lock}", (app,))
    row = await cur.fetchone()
    if row is None:
        now = await conn.execute("SELECT now()")
        db_now = await now.fetchone()
        assert db_now is not None
        return None, db_now[0]
    holder, host, epoch, since, expires_at, locked, db_now = row
    return LeaseRow(holder, host, int(epoch), since, expires_at, bool(locked)), db_now


async def take_over(conn: AsyncConnection, app: str, *, holder: str, host: str, lease: timedelta, locked: bool) -> int:
    """Become the holder with the next epoch (the first is 1); the new epoch. Called inside the
    transaction that read the row for update."""
    cur = await conn.execute(
        "INSERT INTO fleet_lease (app, holder, host, epoch, since, renewed_at, expires_at, locked)"
        " VALUES (%s, %s, %s, 1, now(), now(), now() + %s, %s)"
        " ON CONFLICT (app) DO UPDATE SET holder = excluded.holder, host = excluded.host,"
        " epoch = fleet_lease.epoch + 1, since = now(), renewed_at = now(), expires_at = excluded.expires_at,"
        " locked = excluded.locked RETURNING epoch",
        (app, holder, host, lease, locked),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def renew(conn: AsyncConnection, app: str, *, epoch: int, lease: timedelta, locked: bool) -> bool:
    """Push the lease at `epoch` on by `lease` from now; False when the epoch is no longer it."""
    cur = await conn.execute(
        "UPDATE fleet_lease SET renewed_at = now(), expires_at = now() + %s, locked = %s WHERE app = %s AND epoch = %s",
        (lease, locked, app, epoch),
    )
    return cur.rowcount == 1


async def release(conn: AsyncConnection, app: str, *, epoch: int) -> None:
    """End the lease at `epoch` now (a leader that stops): a follower takes over at its next look."""
    await conn.execute(
        "UPDATE fleet_lease SET expires_at = now(), locked = false WHERE app = %s AND epoch = %s", (app, epoch)
    )


async def fenced(conn: AsyncConnection, app: str, epoch: int, write: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `write` in one transaction only while the lease is at `epoch` and not expired.

    1. Read the lease row FOR SHARE: a takeover (FOR UPDATE) waits for this transaction, so the
       epoch read holds until the commit.
    2. Not at `epoch`, or expired by the database's clock: raise FencedError; nothing is written.
    3. Otherwise run `write` on the same connection and commit.
    """
    async with conn.transaction():
        cur = await conn.execute(_FENCE.format(p="%s"), (app, epoch))
        if await cur.fetchone() is None:
            raise FencedError.lease(app, epoch)
        return await write(conn)


# ---- the hosts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostBeat:
    """What a host's healer says of itself after each cycle."""

    app: str
    host: str
    release: str | None
    last_cycle_at: datetime | None
    healthy: bool | None


@dataclass(frozen=True, slots=True)
class HostRow:
    host: str
    release: str | None
    last_cycle_at: datetime | None
    healthy: bool | None
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class FleetView:
    """Every host of an app and its lease, as `healer status --fleet` shows them."""

    app: str
    hosts: tuple[HostRow, ...]
    lease: LeaseRow | None
    db_now: datetime


async def heartbeat(conn: AsyncConnection, beat: HostBeat) -> None:
    """Record a host's release, last cycle and health, seen now."""
    await conn.execute(
        "INSERT INTO fleet_hosts (app, host, release, last_cycle_at, healthy, seen_at)"
        " VALUES (%s, %s, %s, %s, %s, now())"
        " ON CONFLICT (app, host) DO UPDATE SET release = excluded.release,"
        " last_cycle_at = excluded.last_cycle_at, healthy = excluded.healthy, seen_at = now()",
        (beat.app, beat.host, beat.release, beat.last_cycle_at, beat.healthy),
    )


async def read_fleet(conn: AsyncConnection, app: str) -> FleetView:
    """The app's hosts (by name) and its lease."""
    lease, db_now = await read_lease(conn, app)
    cur = await conn.execute(
        "SELECT host, release, last_cycle_at, healthy, seen_at FROM fleet_hosts WHERE app = %s ORDER BY host", (app,)
    )
    hosts = tuple(HostRow(*row) for row in await cur.fetchall())
    return FleetView(app, hosts, lease, db_now)
