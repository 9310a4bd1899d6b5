"""Fleet leadership: the pure lease rules, then real contender processes sharing a real
PostgreSQL: one leader at a time, a takeover after kill -9, and a leader SIGSTOPped past its
lease that, woken, writes nothing and steps down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import config_from
from services import PostgresServer, start_pgbouncer, wait_until

from healer import pg
from healer.alerts.outbox import Outbox
from healer.clock import FakeClock
from healer.config import StateDb
from healer.db import WRITE_LOCK, Database
from healer.errors import FencedError, FleetError, StoreError
from healer.fleet import POOLED, Leadership
from healer.fleet_store import LeaseFence
from healer.lease import (
    LeaseRow,
    Step,
    advisory_key,
    holder_name,
    lock_ids,
    renew_every,
    step,
    trusted_until,
)
from healer.store import Store

CONTENDER = Path(__file__).parent / "fleet_contender.py"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=15)
# the processes' lease: short for a quick test, long enough that a busy 2-core machine renews
PROCESS_LEASE = 4.0
WAIT = 90.0  # generous: never a wall-clock assertion, only "eventually"


def _row(holder: str = "b:2", *, epoch: int = 3, expires_in: timedelta = LEASE, locked: bool = True) -> LeaseRow:
    return LeaseRow(holder, holder.split(":")[0], epoch, T0 - LEASE, T0 + expires_in, locked)


# ---- the rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "my_epoch", "has_lock", "expected"),
    [
        pytest.param(None, None, True, Step.TAKE_OVER, id="no-row-with-lock-takes-it"),
        pytest.param(None, None, False, Step.FOLLOW, id="no-row-without-lock-waits-for-the-locker"),
        pytest.param(_row("a:1"), 3, True, Step.RENEW, id="mine-renews"),
        pytest.param(_row("a:1", expires_in=-LEASE), 3, False, Step.RENEW, id="mine-past-expiry-nobody-took-it"),
        pytest.param(_row("a:1"), 2, False, Step.FOLLOW, id="my-host-older-epoch-is-not-mine"),
        pytest.param(_row(), None, False, Step.FOLLOW, id="anothers-live-lease"),
        pytest.param(_row(expires_in=timedelta(0)), None, False, Step.TAKE_OVER, id="expired-without-lock"),
        pytest.param(_row(), None, True, Step.TAKE_OVER, id="holder-lost-its-lock-session-ended"),
        pytest.param(_row(locked=False), None, True, Step.FOLLOW, id="holder-never-had-the-lock"),
    ],
)
def test_step_follows_the_lease_rules(
    row: LeaseRow | None, my_epoch: int | None, has_lock: bool, expected: Step
) -> None:
    """Each rule of lease.step, one row of plain data at T0."""
    assert step(row, me="a:1", my_epoch=my_epoch, has_lock=has_lock, db_now=T0) is expected


@dataclass
class _World:
    """The lease row and the lock as the database would keep them, driven by the pure rules."""

    clock: FakeClock = field(default_factory=lambda: FakeClock(T0))
    row: LeaseRow | None = None
    lock: str | None = None  # who holds the advisory lock
    trusted: dict[str, timedelta] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)

    def tick(self, me: str) -> Step:
        asked = self.clock.monotonic()
        if self.lock is None:
            self.lock = me
        has = self.lock == me
        what = step(self.row, me=me, my_epoch=self.epochs.get(me), has_lock=has, db_now=self.clock.now())
        now = self.clock.now()
        if what is Step.TAKE_OVER:
            epoch = 1 if self.row is None else self.row.epoch + 1
            self.row = LeaseRow(me, me, epoch, now, now + LEASE, has)
            self.epochs[me] = epoch
        elif what is Step.RENEW:
            assert self.row is not None
            self.row = replace(self.row, expires_at=now + LEASE, locked=has)
        if what is Step.FOLLOW:
            self.trusted.pop(me, None)
            if has:
                self.lock = None
        else:
            self.trusted[me] = trusted_until(asked, LEASE)
        return what

    def is_leader(self, me: str) -> bool:
        return me in self.trusted and self.clock.monotonic() < self.trusted[me]

    def fence_holds(self, me: str) -> bool:
        """What fleet_store.fenced checks: the row at my epoch, unexpired."""
        row = self.row
        return row is not None and row.epoch == self.epochs.get(me) and self.clock.now() < row.expires_at


def test_a_paused_leader_is_replaced_and_wakes_to_nothing() -> None:
    """On a fake clock: a leads; paused past its lease (its session, and lock, kept) b takes
    over; woken, a is no leader by its own clock, its fence fails, and its next look follows."""
    w = _World()
    assert w.tick("a") is Step.TAKE_OVER
    assert w.tick("b") is Step.FOLLOW
    for _ in range(10):  # a renews every third of the lease; b keeps following
        w.clock.advance(renew_every(LEASE))
        assert w.tick("a") is Step.RENEW
        assert w.tick("b") is Step.FOLLOW
    assert w.is_leader("a") and not w.is_leader("b")
    # a is SIGSTOPped: it neither renews nor lets go of its lock
    w.clock.advance(renew_every(LEASE))
    assert w.tick("b") is Step.FOLLOW
    w.clock.advance(LEASE)
    assert w.tick("b") is Step.TAKE_OVER
    assert w.lock == "a" and w.row is not None and w.row.locked is False and w.row.epoch == 2
    # a is SIGCONTed
    assert not w.is_leader("a")
    assert not w.fence_holds("a") and w.fence_holds("b")
    assert w.tick("a") is Step.FOLLOW and w.lock is None
    w.clock.advance(renew_every(LEASE))
    assert w.tick("b") is Step.RENEW and w.lock == "b" and w.row.locked is True


def test_a_dead_leaders_lock_lets_a_follower_take_over_before_the_lease_ends() -> None:
    """On a fake clock: the leader's session ends (its lock with it); the next follower to look
    takes over at once, long before the lease would have run out."""
    w = _World()
    w.tick("a")
    w.tick("b")
    w.clock.advance(renew_every(LEASE))
    w.tick("a")
    w.lock = None  # kill -9: PostgreSQL ends the session and drops the lock
    w.clock.advance(renew_every(LEASE))
    assert w.row is not None and not w.row.expired(w.clock.now())
    assert w.tick("b") is Step.TAKE_OVER and w.row.epoch == 2


def test_the_advisory_key_is_stable_per_app_and_shown_in_pg_locks_as_two_oids() -> None:
    """One bigint per app, the same in every process; pg_locks splits it into two unsigned oids."""
    assert advisory_key("shop-api") == advisory_key("shop-api") != advisory_key("shop-web")
    key = advisory_key("shop-api")
    high, low = lock_ids(key)
    assert 0 <= high < 2**32 and 0 <= low < 2**32
    assert ((high << 32) | low) == key & 0xFFFFFFFFFFFFFFFF
    assert holder_name("web-1", 42) == "web-1:42"


# ---- real processes ------------------------------------------------------------------------------


class Fleet:
    """Contender processes for one app (a fresh name per test) on the session's PostgreSQL."""

    def __init__(self, postgres: PostgresServer, tmp_path: Path) -> None:
        self.dsn = postgres.dsn
        self.app = f"app-{uuid.uuid4().hex[:8]}"
        self.dir = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS fleet_test_writes"
                " (id BIGSERIAL PRIMARY KEY, app TEXT NOT NULL, holder TEXT NOT NULL, epoch BIGINT NOT NULL)"
            )

    def start(self, host: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HEALER_STATE_DSN": self.dsn}
        with open(self.dir / f"{host}.out", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(CONTENDER), self.app, host, str(PROCESS_LEASE)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        self.procs[host] = proc
        # started: the fleet's tables exist
        assert wait_until(lambda: any("started" in e for e in self.events(host)), WAIT), self.output()
        return proc

    def events(self, host: str) -> list[dict[str, Any]]:
        lines = (self.dir / f"{host}.out").read_text().splitlines()
        return [json.loads(ln) for ln in lines if ln.startswith("{")]

    def output(self) -> str:
        return "\n".join(f"{h}: {(self.dir / f'{h}.out').read_text()[-1500:]}" for h in self.procs)

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql, (self.app, *args)).fetchall()

    def lease(self) -> tuple[str, int] | None:
        rows = self.query("SELECT holder, epoch FROM fleet_lease WHERE app = %s")
        return (rows[0][0], int(rows[0][1])) if rows else None

    def writes(self) -> list[tuple[int, str, int]]:
        return [(int(i), h, int(e)) for i, h, e in self.query(
            "SELECT id, holder, epoch FROM fleet_test_writes WHERE app = %s ORDER BY id")]  # fmt: skip

    def leader_writing(self, other_than: str | None = None) -> tuple[str, int]:
        """Wait until a holder (not `other_than`) leads and has written under its epoch."""

        def found() -> tuple[str, int] | None:
            lease = self.lease()
            if lease is None or lease[0] == other_than:
                return None
            return lease if any((h, e) == lease for _, h, e in self.writes()) else None

        assert wait_until(lambda: found() is not None, WAIT), f"no leader wrote:\n{self.output()}"
        lease = found()
        assert lease is not None
        return lease

    def host_of(self, holder: str) -> str:
        pid = int(holder.rsplit(":", 1)[1])
        return next(h for h, p in self.procs.items() if p.pid == pid)

    def assert_one_leader_at_a_time(self) -> None:
        """Ordered by commit, the writes' epochs never go back, and each epoch had one holder."""
        writes = self.writes()
        epochs = [e for _, _, e in writes]
        assert epochs == sorted(epochs), f"a write under an old epoch landed after a newer one: {writes}"
        holders: dict[int, set[str]] = {}
        for _, h, e in writes:
            holders.setdefault(e, set()).add(h)
        assert all(len(h) == 1 for h in holders.values()), holders

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with_signal(proc, signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def with_signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)


@pytest.fixture
def fleet(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(postgres_server, tmp_path)
    try:
        yield f
    finally:
        f.stop()


@pytest.mark.parametrize("n", [2, 3], ids=["two", "three"])
def test_contenders_have_exactly_one_leader_at_a_time(fleet: Fleet, n: int) -> None:
    """Two or three processes contend: one leads and writes, the others' fences refuse them, and
    when the leader stops (SIGTERM hands the lease back) another leads; never two at once."""
    for i in range(n):
        fleet.start(f"web-{i + 1}")
    holder, epoch = fleet.leader_writing()
    assert wait_until(lambda: len(fleet.writes()) >= 10, WAIT), fleet.output()
    leader = fleet.procs[fleet.host_of(holder)]
    leader.terminate()
    leader.wait(timeout=30)
    new_holder, new_epoch = fleet.leader_writing(other_than=holder)
    assert new_epoch > epoch
    fleet.stop()
    fleet.assert_one_leader_at_a_time()
    followers = [h for h in fleet.procs if fleet.host_of(holder) != h and fleet.host_of(new_holder) != h]
    for host in followers:  # whoever never led never wrote
        assert not any("wrote" in e for e in fleet.events(host)), fleet.events(host)


def test_kill_9_of_the_leader_lets_a_follower_lead(fleet: Fleet) -> None:
    """kill -9 of the leader: a follower takes over (with the next epoch) and writes."""
    for i in range(3):
        fleet.start(f"web-{i + 1}")
    holder, epoch = fleet.leader_writing()
    leader = fleet.procs[fleet.host_of(holder)]
    leader.kill()
    leader.wait(timeout=30)
    new_holder, new_epoch = fleet.leader_writing(other_than=holder)
    assert new_epoch == epoch + 1 and new_holder != holder
    fleet.stop()
    fleet.assert_one_leader_at_a_time()


def test_a_leader_stopped_past_its_lease_acts_on_nothing_when_it_wakes(fleet: Fleet) -> None:
    """SIGSTOP of the leader past its lease: the follower takes over; SIGCONT: the old leader's
    writes are fenced (none lands under its old epoch) and it follows."""
    for i in range(2):
        fleet.start(f"web-{i + 1}")
    holder, epoch = fleet.leader_writing()
    host = fleet.host_of(holder)
    old = fleet.procs[host]
    with_signal(old, signal.SIGSTOP)
    new_holder, new_epoch = fleet.leader_writing(other_than=holder)
    assert new_epoch > epoch
    seen = len(fleet.events(host))
    with_signal(old, signal.SIGCONT)

    def woke_and_followed() -> bool:
        after = fleet.events(host)[seen:]
        refused = [e for e in after if "fenced" in e or "lost" in e]
        return bool(refused) and any("follower" in e for e in after)

    assert wait_until(woke_and_followed, WAIT), fleet.output()
    after = fleet.events(host)[seen:]
    assert not any("leader" in e for e in after), after  # it never believed it led again
    first_new = min(i for i, _, e in fleet.writes() if e == new_epoch)
    late = [w for w in fleet.writes() if w[2] == epoch and w[0] > first_new]
    assert late == [], f"the stopped leader wrote after the takeover: {late}"
    assert fleet.lease() is not None and fleet.lease()[0] == new_holder  # type: ignore[index]
    fleet.stop()
    fleet.assert_one_leader_at_a_time()


# ---- poolers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_transaction_pooler_is_refused_and_a_session_pool_is_not(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Behind a real pgbouncer: in transaction mode two of our sessions share one server process,
    and start() refuses with one line saying why; in session mode it leads as on PostgreSQL."""
    bouncer = start_pgbouncer(postgres_server, mode)
    monkeypatch.setenv("HEALER_STATE_DSN", bouncer.dsn)

    async def contend() -> Step:
        leadership = Leadership(pg.server("HEALER_STATE_DSN"), app=f"pool-{mode}", host="web-1", lease=LEASE)
        try:
            await leadership.start()
            return await leadership.tick()
        finally:
            await leadership.close()

    try:
        if mode == "transaction":
            with pytest.raises(FleetError) as caught:
                asyncio.run(contend())
            assert str(caught.value) == f"postgresql 127.0.0.1:{bouncer.port}/postgres {POOLED}"
        else:
            assert asyncio.run(contend()) is Step.TAKE_OVER
    finally:
        bouncer.stop()


# ---- the lease as a fence of the state database ---------------------------------------------------


def test_a_lease_fence_writes_at_the_leaders_epoch_and_nothing_after_it_moved_on(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """db.write(fence=LeaseFence(app, epoch)) on the state database: written while the lease is at
    the epoch; refused with FencedError, and nothing written, once a takeover raised the epoch or
    the lease ran out."""
    monkeypatch.setenv("HEALER_STATE_DSN", postgres_server.dsn)
    app = f"fence-{uuid.uuid4().hex[:8]}"

    async def lead() -> int:
        leadership = Leadership(pg.server("HEALER_STATE_DSN"), app=app, host="web-1", lease=LEASE)
        await leadership.start()
        assert await leadership.tick() is Step.TAKE_OVER
        await leadership.close()
        assert leadership.epoch is not None
        return leadership.epoch

    epoch = asyncio.run(lead())
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:  # the lease, live again at its epoch
        conn.execute("UPDATE fleet_lease SET expires_at = now() + interval '1 hour' WHERE app = %s", (app,))
    db = Database(StateDb(tmp_path / "unused.db", "HEALER_STATE_DSN"))
    try:
        with db.write("creating the test table") as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS fence_test (app TEXT NOT NULL, n INTEGER NOT NULL)")

        def write(n: int) -> None:
            with db.write("a leader's write", fence=LeaseFence(app, epoch)) as tx:
                tx.execute("INSERT INTO fence_test (app, n) VALUES (?, ?)", (app, n))

        write(1)
        with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
            conn.execute("UPDATE fleet_lease SET epoch = epoch + 1 WHERE app = %s", (app,))  # a takeover
        with pytest.raises(
            FencedError, match=f"fleet {app}: not written, the lease of epoch {epoch} is no longer held"
        ):
            write(2)
        with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
            conn.execute("UPDATE fleet_lease SET epoch = %s, expires_at = now() WHERE app = %s", (epoch, app))
        with pytest.raises(FencedError):
            write(3)
        assert [r[0] for r in db.query("SELECT n FROM fence_test WHERE app = ?", (app,))] == [1]
    finally:
        db.close()


def test_each_host_keeps_its_own_store_and_shares_the_outbox(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two hosts of a fleet on one database: each one's deploys are its own (a host on another
    release opens no window in the other's store), the alert outbox is one table for both."""
    dsn = postgres_server.create_database()
    monkeypatch.setenv("HEALER_STATE_DSN", dsn)
    now = datetime.now(UTC)
    stores: dict[str, Store] = {}
    try:
        for host, commit in (("web-1", "a" * 40), ("web-2", "b" * 40)):
            (tmp_path / host).mkdir()
            config = config_from(tmp_path / host, f"""
                [state]
                dsn_env = "HEALER_STATE_DSN"
                [fleet]
                host = "{host}"
                [app]
                name = "shop"
                repo = "{tmp_path}"
                [[checks]]
                name = "up"
                type = "command"
                argv = ["true"]
                """)  # fmt: skip
            assert config.state_db.schema == f"healer_{host}" and config.shared_db.schema is None
            stores[host] = Store(config.state_db)
            stores[host].ensure_deploy(commit, now)
            outbox = Outbox(config.shared_db)
            outbox.close()
        assert stores["web-1"].ensure_deploy("a" * 40, now)[1] is False  # web-2's release left it alone
        assert stores["web-2"].current_deploy().commit == "b" * 40  # type: ignore[union-attr]
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_name IN ('deploys', 'alert_outbox') ORDER BY 1, 2"
            ).fetchall()
        assert tables == [("healer_web-1", "deploys"), ("healer_web-2", "deploys"), ("public", "alert_outbox")]
    finally:
        for store in stores.values():
            store.close()
        postgres_server.drop_database(dsn)


def test_a_writer_stopped_in_its_transaction_holds_no_one_up_and_a_timed_out_wait_leaves_nothing_open(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A healer stopped inside a write transaction (here: one left open, as SIGSTOP leaves it) is
    ended by the server (idle_in_transaction_session_timeout), so another's write gets through;
    a write whose wait for the lock times out fails with one StoreError line and leaves its
    connection usable (no aborted transaction left open)."""
    dsn = postgres_server.create_database()
    monkeypatch.setenv("HEALER_STATE_DSN", dsn)
    where = StateDb(tmp_path / "unused.db", "HEALER_STATE_DSN")
    db, stopped = Database(where), Database(where)
    try:
        with db.write("creating the test table") as tx:
            tx.execute("CREATE TABLE t (n INTEGER NOT NULL)")
        frozen = stopped.write("a write its process never finishes")
        frozen.__enter__()  # BEGIN and the write lock, then nothing: the process is stopped
        with db.write("a write behind it") as tx:
            tx.execute("INSERT INTO t (n) VALUES (1)")
        with psycopg.connect(dsn, autocommit=True) as holder:  # a lock holder without our timeouts
            holder.execute("BEGIN")
            holder.execute("SELECT pg_advisory_xact_lock(%s, %s)", WRITE_LOCK)
            with (
                pytest.raises(StoreError, match=r"a write that waits: .*lock timeout"),
                db.write("a write that waits") as tx,
            ):
                tx.execute("INSERT INTO t (n) VALUES (2)")
            holder.execute("COMMIT")
        with db.write("the next write") as tx:
            tx.execute("INSERT INTO t (n) VALUES (3)")
        assert [r[0] for r in db.query("SELECT n FROM t ORDER BY n")] == [1, 3]
        with pytest.raises(StoreError):  # woken: its session was ended, nothing of it is written
            frozen.__exit__(None, None, None)
    finally:
        db.close()
        stopped.close()
        postgres_server.drop_database(dsn)
