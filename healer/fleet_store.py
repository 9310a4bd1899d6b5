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
from healer.db import Database, Migration, Row, Tx
from healer.errors import FencedError
from healer.fleet_judge import RollbackAsk, RollbackOrder
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
    Migration(
        2,
        "the fleet's rollbacks and each host's report",
        """CREATE TABLE IF NOT EXISTS fleet_rollbacks (
    id INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    epoch INTEGER NOT NULL,            -- the leader's, when it decided
    from_release TEXT NOT NULL,        -- the commit every host on it leaves
    target TEXT NOT NULL,              -- the commit they go to
    to_ref TEXT NOT NULL,              -- its stable tag, for people
    reason TEXT NOT NULL,
    started_at TEXT NOT NULL,          -- ISO 8601 UTC, by the leader's clock
    deadline TEXT NOT NULL,            -- hosts that have not reported by then did not follow
    outcome TEXT                       -- the one outcome announced; NULL: still waiting
);
CREATE TABLE IF NOT EXISTS fleet_rollback_reports (
    rollback_id INTEGER NOT NULL REFERENCES fleet_rollbacks(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    ok INTEGER NOT NULL,               -- 1: checked out, restarted and verified healthy
    detail TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (rollback_id, host)
)""",
    ),
    Migration(
        3,
        "hosts asking the leader for the fleet's rollback",
        """CREATE TABLE IF NOT EXISTS fleet_rollback_asks (
    app TEXT NOT NULL,
    host TEXT NOT NULL,
    release TEXT NOT NULL,             -- the commit the host runs, which its ladder would roll back
    target TEXT NOT NULL,              -- the commit its rollback would go to
    to_ref TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,                  -- ISO 8601 UTC, by the host's clock
    PRIMARY KEY (app, host)
)""",
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


# ---- the fleet's rollbacks (on the state database seam; blocking) --------------------------------

_ORDER = "id, from_release, target, to_ref, reason, started_at, deadline"


def _order(row: Row) -> RollbackOrder:
    at, deadline = (datetime.fromisoformat(t) for t in (row[5], row[6]))
    return RollbackOrder(int(row[0]), row[1], row[2], row[3], row[4], at, deadline)


def order_rollback(db: Database, fence: LeaseFence | None, order: RollbackOrder, app: str = "") -> int:
    """Record a rollback for the fleet of `app`; the order's id. The leader's is fenced by its
    lease; a person's (fence None: epoch 0) needs no lease, as their command needs no leader."""
    app, epoch = (app, 0) if fence is None else (fence.app, fence.epoch)
    with db.write("cannot record the fleet's rollback", fence=fence) as tx:
        return tx.insert(
            "INSERT INTO fleet_rollbacks (app, epoch, from_release, target, to_ref, reason, started_at, deadline)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (app, epoch, order.from_release, order.target, order.to_ref, order.reason,
             order.started_at.isoformat(), order.deadline.isoformat()),
        )  # fmt: skip


def order_for(db: Database, app: str, release: str, host: str) -> RollbackOrder | None:
    """The newest fleet rollback away from `release` that `host` has not reported on."""
    rows = db.query(
        f"SELECT {_ORDER} FROM fleet_rollbacks r WHERE app = ? AND from_release = ? AND NOT EXISTS"
        " (SELECT 1 FROM fleet_rollback_reports p WHERE p.rollback_id = r.id AND p.host = ?) ORDER BY id DESC LIMIT 1",
        (app, release, host),
    )
    return _order(rows[0]) if rows else None


def ask_rollback(db: Database, app: str, ask: RollbackAsk) -> None:
    """Record a follower's ask (its newest replaces its last)."""
    with db.write("cannot ask the fleet's leader for a rollback") as tx:
        tx.execute(
            "INSERT INTO fleet_rollback_asks (app, host, release, target, to_ref, reason, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app, host) DO UPDATE SET release = excluded.release,"
            " target = excluded.target, to_ref = excluded.to_ref, reason = excluded.reason, at = excluded.at",
            (app, ask.host, ask.release, ask.target, ask.to_ref, ask.reason, ask.at.isoformat()),
        )


def rollback_asks(db: Database, app: str) -> tuple[list[RollbackAsk], set[str]]:
    """The app's asks, and the releases a fleet rollback was ever ordered away from."""
    asks = [
        RollbackAsk(r[0], r[1], r[2], r[3], r[4], datetime.fromisoformat(r[5]))
        for r in db.query(
            "SELECT host, release, target, to_ref, reason, at FROM fleet_rollback_asks WHERE app = ?", (app,)
        )
    ]
    ordered = {str(r[0]) for r in db.query("SELECT DISTINCT from_release FROM fleet_rollbacks WHERE app = ?", (app,))}
    return asks, ordered


def report_rollback(db: Database, order_id: int, host: str, ok: bool, detail: str, at: datetime) -> None:
    """A host's word on a fleet rollback: followed (checked out, restarted, healthy) or not."""
    with db.write("cannot report on the fleet's rollback") as tx:
        tx.execute(
            "INSERT INTO fleet_rollback_reports (rollback_id, host, ok, detail, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (rollback_id, host) DO NOTHING",
            (order_id, host, int(ok), detail, at.isoformat()),
        )


def open_rollbacks(db: Database, app: str) -> list[tuple[RollbackOrder, dict[str, bool]]]:
    """The app's fleet rollbacks whose outcome is not announced yet, with each host's report."""
    orders = [
        _order(r) for r in db.query(f"SELECT {_ORDER} FROM fleet_rollbacks WHERE app = ? AND outcome IS NULL", (app,))
    ]
    out = []
    for order in orders:
        rows = db.query("SELECT host, ok FROM fleet_rollback_reports WHERE rollback_id = ?", (order.id,))
        out.append((order, {str(r[0]): bool(r[1]) for r in rows}))
    return out


def close_rollback(db: Database, fence: LeaseFence, order_id: int, outcome: str) -> bool:
    """Record the one outcome, fenced; False when another leader announced it first."""
    with db.write("cannot record the fleet rollback's outcome", fence=fence) as tx:
        cur = tx.execute("UPDATE fleet_rollbacks SET outcome = ? WHERE id = ? AND outcome IS NULL", (outcome, order_id))
        return cur.rowcount == 1


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
