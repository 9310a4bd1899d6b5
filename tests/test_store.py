"""The state store on a real SQLite file and on a real PostgreSQL database: deploy windows, cycles
and their counters, causes, rollups, upserts, fences, schema migrations (a database from the
release before schema_version included), and the context manager (I/O)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from services import PostgresServer, free_port, wait_until

from healer import pg
from healer.alerts.message import AlertMessage
from healer.alerts.outbox import MIGRATIONS as OUTBOX_MIGRATIONS
from healer.alerts.outbox import Outbox
from healer.config import StateDb, load_config
from healer.db import Database, Tx
from healer.errors import ConfigError, FencedError, StoreError, StoreUnreachable
from healer.model import Alert, CheckResult, Deploy, DeployState, Event, Severity, Verdict, Who
from healer.store import MIGRATIONS, CycleUpdate, Store

LEGACY = Path(__file__).parent / "data" / "healer-db-before-schema-version.sql"

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def verdict(ok: bool, at: datetime) -> Verdict:
    return Verdict(at, (CheckResult("api", "http", ok, None, {"status": 200.0 if ok else 500.0}),))


def update(
    failures: int = 0, *, cause: str | None = None, settled: bool = True, opens: str | None = None
) -> CycleUpdate:
    return CycleUpdate(
        consecutive_failures=failures, consecutive_passes=0, emergency_streak=0, baseline=None,
        open_incident_cause=opens, resolve_incident=False, cause=cause, next_step="watching", settled=settled,
    )  # fmt: skip


def test_a_new_commit_opens_a_new_window_and_closes_the_old_incident(state_db: StateDb) -> None:
    """HEAD moving is a new deploy; the incident of the one it replaced is closed with it."""
    with Store(state_db) as store:
        a, new = store.ensure_deploy("a" * 40, T0)
        assert new and store.ensure_deploy("a" * 40, T0 + timedelta(minutes=1)) == (a, False)
        store.record_cycle(a.id, verdict(False, T0), Who.LOOP, update(1, opens="api failing"))
        b, new = store.ensure_deploy("b" * 40, T0 + timedelta(minutes=2))
        assert new and b.id > a.id
        assert store.previous_deploy(b.id) is not None and store.previous_deploy(a.id) is None
        closed = store.incidents()[0]
        assert closed.resolved_at is not None and "a new commit was deployed" in closed.cause


def test_cycles_keep_their_cause_and_next_step_and_the_first_settled_healthy_cycle(state_db: StateDb) -> None:
    """The likely cause is stored with a failing cycle; only a settled healthy cycle makes the
    release 'once healthy'."""
    with Store(state_db) as store:
        d, _ = store.ensure_deploy("a" * 40, T0)
        store.record_cycle(d.id, verdict(True, T0), Who.LOOP, update(settled=False))
        assert store.deploy(d.id).healthy_at is None  # type: ignore[union-attr]
        store.record_cycle(d.id, verdict(False, T0 + timedelta(minutes=1)), Who.LOOP, update(1, cause="deploy"))
        store.record_cycle(d.id, verdict(True, T0 + timedelta(minutes=2)), Who.LOOP, update())
        assert store.deploy(d.id).healthy_at == T0 + timedelta(minutes=2)  # type: ignore[union-attr]
        assert store.last_cause(d.id) == "deploy"
        rows = store.cycles()
        assert [(c.ok, c.cause) for c in rows] == [(True, None), (False, "deploy"), (True, None)]
        assert rows[1].to_json()["cause"] == "deploy" and rows[1].next_step == "watching"


def test_a_deploy_goes_from_new_to_healthy_to_stable_and_a_rolled_back_commit_stays_bad(state_db: StateDb) -> None:
    """The lifecycle is read from what is stored: the first settled healthy cycle, the stable tag,
    the hold, and the commit marked bad, which a later deploy of the same commit inherits."""
    with Store(state_db) as store:
        d, _ = store.ensure_deploy("a" * 40, T0)

        def state() -> DeployState:
            now = store.deploy(d.id)
            assert now is not None
            return now.state

        assert state() is DeployState.NEW
        store.record_cycle(d.id, verdict(True, T0), Who.LOOP, update())
        assert state() is DeployState.HEALTHY
        store.set_stable_tag(d.id, "stable-1")
        assert state() is DeployState.STABLE
        store.set_held(d.id, "the rolled-back version is failing too")
        assert state() is DeployState.HELD
        store.mark_bad("a" * 40, "5 consecutive failing cycles", T0 + timedelta(hours=1))
        assert state() is DeployState.BAD
        assert [x.bad for x in store.deploys()] == ["5 consecutive failing cycles"]
        store.ensure_deploy("b" * 40, T0 + timedelta(hours=2))
        again, new = store.ensure_deploy("a" * 40, T0 + timedelta(hours=3))
        assert new and again.state is DeployState.BAD
        assert [x.state for x in store.deploys()] == [DeployState.BAD, DeployState.NEW, DeployState.BAD]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, DeployState.NEW, id="new"),
        pytest.param({"healthy_at": T0}, DeployState.HEALTHY, id="healthy"),
        pytest.param({"healthy_at": T0, "stable_tag": "stable-1"}, DeployState.STABLE, id="stable"),
        pytest.param({"stable_tag": "stable-1", "held": "why"}, DeployState.HELD, id="held-wins-over-stable"),
        pytest.param({"held": "why", "bad": "rolled back"}, DeployState.BAD, id="bad-wins-over-held"),
        pytest.param({"via_rollback": True}, DeployState.NEW, id="a-rollbacks-result-starts-new"),
    ],
)
def test_the_deploy_state_is_derived_from_its_fields(fields: dict[str, object], expected: DeployState) -> None:
    """BAD wins over HELD, HELD over STABLE, STABLE over HEALTHY; how it came is not a state."""
    assert Deploy(id=1, commit="a" * 40, first_seen=T0, **fields).state is expected  # type: ignore[arg-type]


def _legacy_db(path: Path) -> Path:
    """A healer.db as the release before schema_version left it (tests/data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(LEGACY.read_text())
    db.close()
    return path


def test_a_database_from_the_release_before_schema_version_opens_and_migrates(tmp_path: Path) -> None:
    """Its rows are all there, its tables are stamped with their versions, the outbox gains its
    claim columns, and both take new writes."""
    path = _legacy_db(tmp_path / "healer.db")
    with Store(path) as store:
        d = store.current_deploy()
        assert d is not None and d.open_incident == 1 and len(store.cycles()) == 3
        assert store.last_cause(d.id) == "deploy" and store.meta() == {"pid": "123"}
        assert store.check_totals(T0, T0 + timedelta(hours=1)) == [("api", 2, 3)]
        store.record_cycle(d.id, verdict(True, T0 + timedelta(minutes=3)), Who.LOOP, update())
        assert store.db.version("store") == len(MIGRATIONS)
        assert store.alert_delivery_counts() == {}  # the outbox has not opened (migrated) yet
    outbox = Outbox(path)
    try:
        assert outbox.pending_count() == 1 and outbox.claim(1, "slack", T0, timedelta(minutes=1))
        assert outbox.mark_delivered(1, "slack", T0)
    finally:
        outbox.close()
    with Store(path) as store:
        assert store.alert_delivery_counts() == {("slack", "delivered"): 1, ("telegram", "delivered"): 1}
        assert store.db.version("outbox") == len(OUTBOX_MIGRATIONS) and len(store.cycles()) == 4


def test_a_database_from_an_older_healer_gains_the_new_columns_and_the_rollups(tmp_path: Path) -> None:
    """A file from before causes, healthy_at and check_hours existed: the columns are added, the
    rollups filled from the cycles kept, the rows stay."""
    path = _legacy_db(tmp_path / "healer.db")
    db = sqlite3.connect(path)
    for table, column in (("deploys", "healthy_at"), ("cycles", "cause"), ("cycles", "next_step")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("DROP TABLE check_hours")
    db.commit()
    db.close()
    with Store(path) as store:
        assert len(store.cycles()) == 3 and store.cycles()[1].cause is None
        d = store.current_deploy()
        assert d is not None and d.healthy_at is None
        assert store.check_totals(T0, T0 + timedelta(hours=1)) == [("api", 2, 3)]
        store.record_cycle(d.id, verdict(False, T0 + timedelta(minutes=5)), Who.LOOP, update(1, cause="unknown"))
        assert store.last_cause(d.id) == "unknown"


def test_every_component_is_at_its_last_migration_and_opening_again_changes_nothing(state_db: StateDb) -> None:
    """A new database gets every migration once; a second open (another process) finds nothing to do."""
    with Store(state_db) as store:
        Outbox(state_db).close()
        assert (store.db.version("store"), store.db.version("outbox")) == (len(MIGRATIONS), len(OUTBOX_MIGRATIONS))
    with Store(state_db) as again:
        Outbox(state_db).close()
        assert again.db.version("outbox") == len(OUTBOX_MIGRATIONS)


def test_rollups_reports_and_pruning_read_the_same_on_both_databases(state_db: StateDb) -> None:
    """The per-hour check rollups (the one JSON query that differs), totals, upserts, and a prune
    that recounts the hour it cuts into."""
    with Store(state_db) as store:
        d, _ = store.ensure_deploy("a" * 40, T0)
        for n in range(4):
            store.record_cycle(d.id, verdict(n != 2, T0 + timedelta(minutes=40 * n)), Who.LOOP, update())
        assert store.check_totals(T0, T0 + timedelta(hours=3)) == [("api", 3, 4)]
        assert store.cycle_totals(T0, T0 + timedelta(hours=3)) == (4, 3, T0)
        assert store.cycle_counts() == {True: 3, False: 1}
        store.mark_bad("a" * 40, "first", T0)
        store.mark_bad("a" * 40, "second", T0)
        assert store.bad_commits() == {"a" * 40: "second"}
        store.record_press("ack:1:x", "ann", "acked", T0)
        store.record_press("ack:1:x", "bob", "acked again", T0)
        assert store.press("ack:1:x") == "acked"
        store.set_meta(a="1")
        store.set_meta(a="2", b=None)
        assert store.meta() == {"a": "2"}
        assert store.prune(T0 + timedelta(minutes=50)) == 2  # the cycles at 0 and 40 minutes
        assert store.check_totals(T0, T0 + timedelta(hours=3)) == [("api", 1, 2)]


class _Refuse:
    """A fence that no longer holds (a leader whose epoch moved on)."""

    def check(self, tx: Tx) -> None:
        assert tx.query("SELECT COUNT(*) FROM deploys")[0][0] == 1  # reads inside the transaction
        raise FencedError("epoch 3 is stale (the lease is at epoch 4)")


def test_a_fenced_write_is_refused_and_writes_nothing(state_db: StateDb) -> None:
    """With a fence that no longer holds, a write raises FencedError and leaves no row behind."""
    with Store(state_db) as store:
        d, _ = store.ensure_deploy("a" * 40, T0)
        store.fence = _Refuse()
        with pytest.raises(FencedError, match="epoch 3 is stale"):
            store.record_cycle(d.id, verdict(True, T0), Who.LOOP, update())
        store.fence = None
        assert store.cycles() == []


def test_an_unset_dsn_variable_is_a_config_error_and_nothing_is_made(tmp_path: Path) -> None:
    """[state] dsn_env naming an unset variable: one line naming the key and the variable."""
    config = tmp_path / "healer.toml"
    config.write_text('[state]\ndsn_env = "HEALER_STATE_DSN"\n[[checks]]\nname = "api"\ntype = "http"\n'
                      'url = "http://127.0.0.1:1/"\n')  # fmt: skip
    os.environ.pop("HEALER_STATE_DSN", None)
    with pytest.raises(ConfigError) as e:
        load_config(config)
    assert e.value.lines() == [
        f"{config}: state.dsn_env: environment variable HEALER_STATE_DSN is not set (it holds the PostgreSQL DSN)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["healer.toml"]


def test_a_server_that_refuses_is_one_line_without_the_dsn(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """A wrong database: a StoreError naming host:port/database, never the DSN or its password."""
    dsn = f"postgresql://postgres:hunter2secret@127.0.0.1:{postgres_server.port}/no_such_db"
    os.environ["HEALER_STATE_DSN"] = dsn
    with pytest.raises(StoreError) as e:
        Store(StateDb(tmp_path / "healer.db", "HEALER_STATE_DSN"))
    text = str(e.value)
    assert "\n" not in text and "hunter2secret" not in text and dsn not in text
    assert text.startswith(f"postgresql 127.0.0.1:{postgres_server.port}/no_such_db: cannot open the state database")
    assert not (tmp_path / "healer.db").exists()


@pytest.mark.parametrize(
    ("where", "passing"),
    [
        pytest.param("127.0.0.1:{free}/postgres", True, id="nothing-listens"),
        pytest.param("no-such-host.invalid:5432/postgres", True, id="no-dns-answer"),
        pytest.param("127.0.0.1:{port}/no_such_db", False, id="no-such-database"),
        pytest.param("nobody@127.0.0.1:{port}/postgres", False, id="no-such-role"),
    ],
)
def test_a_server_that_cannot_be_reached_is_told_from_one_that_refuses(
    postgres_server: PostgresServer, tmp_path: Path, where: str, passing: bool
) -> None:
    """StoreUnreachable (`healer run` waits) only for what passes by itself; a missing database or
    role stays a plain StoreError (exit 2): a person must fix it."""
    user = "" if "@" in where else "postgres@"
    dsn = "postgresql://" + user + where.format(free=free_port(), port=postgres_server.port)
    os.environ["HEALER_STATE_DSN"] = dsn
    with pytest.raises(StoreError) as e:
        Store(StateDb(tmp_path / "healer.db", "HEALER_STATE_DSN"))
    assert isinstance(e.value, StoreUnreachable) is passing, str(e.value)
    assert "cannot open the state database" in str(e.value)


REFUSED = 'connection to server at "127.0.0.1", port 5432 failed: '


@pytest.mark.parametrize(
    ("text", "passing"),
    [
        pytest.param(REFUSED + "FATAL:  the database system is starting up", True, id="starting-up"),
        pytest.param(REFUSED + "FATAL:  the database system is shutting down", True, id="shutting-down"),
        pytest.param(REFUSED + "FATAL:  sorry, too many clients already", True, id="full"),
        pytest.param(REFUSED + "timeout expired", True, id="timeout"),
        pytest.param(REFUSED + 'FATAL:  password authentication failed for user "healer"', False, id="password"),
        pytest.param(REFUSED + 'FATAL:  no pg_hba.conf entry for host "10.0.0.5"', False, id="pg-hba"),
        pytest.param(
            'connection to server at "localhost" (::1), port 5432 failed: Connection refused\n'
            'connection to server at "localhost" (127.0.0.1), port 5432 failed: '
            'FATAL:  password authentication failed for user "healer"',
            False,
            id="one-address-refused-the-next-denied",
        ),
        pytest.param("fe_sendauth: no password supplied", False, id="no-password"),
        pytest.param("something we have never seen", False, id="unknown-words"),
    ],
)
def test_which_connection_failures_pass_by_themselves(text: str, passing: bool) -> None:
    """libpq's words (a failed connection has no SQLSTATE): waiting cures the server starting,
    stopping, full or silent; it never cures authentication, pg_hba.conf or words we do not know."""
    assert pg.is_passing(pg.OperationalError(text)) is passing


def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    """The loop writes while a person's `healer status` reads: the reader sees every committed
    cycle, and opening a second store in the same process does not break the first one's locks."""
    path = tmp_path / "healer.db"
    with Store(path) as writer:
        d, _ = writer.ensure_deploy("a" * 40, T0)
        for n in range(3):
            writer.record_cycle(d.id, verdict(True, T0 + timedelta(minutes=n)), Who.LOOP, update())
            with Store(path) as reader:
                assert len(reader.cycles()) == n + 1
        assert Path(f"{path}-wal").exists()
        writer.record_cycle(d.id, verdict(True, T0 + timedelta(minutes=9)), Who.LOOP, update())
        assert len(writer.cycles()) == 4


def _count_in_a_child(path: Path) -> int:
    code = (
        "import sys; from pathlib import Path; from healer.store import Store\n"
        "with Store(Path(sys.argv[1])) as s: print(len(s.cycles()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_another_process_reading_never_loses_the_writers_wal(tmp_path: Path) -> None:
    """The loop holds the database (two connections: the store and the outbox) while `healer
    status` processes come and go: every committed cycle stays visible to them. Opening and
    closing the file in the writer's process would drop its SQLite locks (POSIX record locks go
    with any descriptor closed), and the next reader to leave would delete the live WAL."""
    path = tmp_path / "healer.db"
    with Store(path) as writer, Store(path) as second:
        d, _ = writer.ensure_deploy("a" * 40, T0)
        for n in range(3):
            writer.record_cycle(d.id, verdict(True, T0 + timedelta(minutes=n)), Who.LOOP, update())
            with Store(path):  # another connection opened and closed in the writer's process
                pass
            assert _count_in_a_child(path) == n + 1
        assert len(second.cycles()) == 3


def test_write_transactions_are_serialised_across_connections(state_db: StateDb) -> None:
    """A write transaction waits for another connection's to commit (SQLite's BEGIN IMMEDIATE, a
    transaction-level advisory lock on PostgreSQL): a read-then-write inside one, such as a fence's
    epoch check, sees nothing change under it."""
    first, second = Database(state_db), Database(state_db)
    order: list[str] = []

    def other() -> None:
        with second.write("second"):
            order.append("second")

    try:
        with first.write("first"):
            waiting = threading.Thread(target=other)
            waiting.start()
            assert not wait_until(lambda: bool(order), timeout=0.5)  # it waits ...
            order.append("first")
        waiting.join(timeout=30)
        assert order == ["first", "second"]  # ... until the first one commits
    finally:
        first.close()
        second.close()


def test_tables_a_newer_healer_migrated_are_refused_not_downgraded(state_db: StateDb) -> None:
    """Another host upgraded first: an older healer says so in one line and leaves the version."""
    with Store(state_db) as store, store.db.write("bump") as tx:
        tx.execute("UPDATE schema_version SET version = 99 WHERE component = 'store'")
    with pytest.raises(StoreError, match=r"the store tables are at schema version 99, this healer knows 1: upgrade"):
        Store(state_db)
    probe = Database(state_db)
    try:
        assert probe.version("store") == 99
    finally:
        probe.close()


@pytest.fixture
def pg_state(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A database of its own on the session's PostgreSQL, its DSN in $HEALER_STATE_DSN: (DSN, healer.db path)."""
    dsn = postgres_server.create_database()
    os.environ["HEALER_STATE_DSN"] = dsn
    try:
        yield dsn, tmp_path / "healer.db"
    finally:
        postgres_server.drop_database(dsn)


def _fill_public(path: Path) -> None:
    """What a healer run with [state] dsn_env alone leaves in public: a deploy, three cycles, an alert."""
    with Store(StateDb(path, "HEALER_STATE_DSN")) as store:
        d, _ = store.ensure_deploy("a" * 40, T0)
        for n in range(3):
            store.record_cycle(d.id, verdict(n != 1, T0 + timedelta(minutes=n)), Who.LOOP, update())
    outbox = Outbox(StateDb(path, "HEALER_STATE_DSN"))
    try:
        outbox.enqueue(AlertMessage((Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api failing"),), "shop", T0),
                       ["log"])  # fmt: skip
    finally:
        outbox.close()


def _host(path: Path, host: str) -> StateDb:
    return StateDb(path, "HEALER_STATE_DSN", schema=f"healer_{host}")


def test_a_store_in_public_moves_into_the_first_fleet_host_s_schema(pg_state: tuple[str, Path]) -> None:
    """[fleet] added to a healer that kept its store in public: the first host to open its store
    takes public's store tables (history, ids) with their version; the outbox stays shared in
    public; a second host starts empty; public has no store left to take."""
    dsn, path = pg_state
    _fill_public(path)
    with Store(_host(path, "web-1")) as web1:
        deploy = web1.current_deploy()
        assert deploy is not None and deploy.commit == "a" * 40
        assert [c.ok for c in web1.cycles()] == [True, False, True]
        d2, _ = web1.ensure_deploy("b" * 40, T0 + timedelta(hours=1))  # its ids go on from public's
        assert d2.id == deploy.id + 1
    with Store(_host(path, "web-2")) as web2:
        assert web2.current_deploy() is None and web2.cycles() == []
    with psycopg.connect(dsn) as conn:
        where = dict(conn.execute(
            "SELECT table_name, string_agg(table_schema, ',' ORDER BY table_schema) FROM information_schema.tables "
            "WHERE table_name IN ('deploys', 'alert_outbox', 'schema_version') GROUP BY table_name"
        ).fetchall())  # fmt: skip
        public = dict(conn.execute("SELECT component, version FROM public.schema_version").fetchall())
        web1_versions = dict(conn.execute('SELECT component, version FROM "healer_web-1".schema_version').fetchall())
    assert where == {
        "deploys": "healer_web-1,healer_web-2",
        "alert_outbox": "public",
        "schema_version": "healer_web-1,healer_web-2,public",
    }
    assert public == {"outbox": len(OUTBOX_MIGRATIONS)} and web1_versions == {"store": len(MIGRATIONS)}


def test_of_two_hosts_joining_at_once_one_takes_public_s_store(pg_state: tuple[str, Path]) -> None:
    """Two fleet hosts open their stores at the same moment: exactly one has public's history,
    the other an empty store, and nothing fails."""
    _, path = pg_state
    _fill_public(path)
    start = threading.Barrier(2)
    found: dict[str, int] = {}

    def open_store(host: str) -> None:
        start.wait()
        with Store(_host(path, host)) as store:
            found[host] = len(store.cycles())

    threads = [threading.Thread(target=open_store, args=(h,)) for h in ("web-1", "web-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(found.values()) == [0, 3], found
