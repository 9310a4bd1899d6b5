"""The state store on a real SQLite file: deploy windows, cycles and their counters, causes,
migrations from an older database, and the context manager (I/O)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from healer.model import CheckResult, Verdict, Who
from healer.store import CycleUpdate, Store

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


def test_a_new_commit_opens_a_new_window_and_closes_the_old_incident(tmp_path: Path) -> None:
    """HEAD moving is a new deploy; the incident of the one it replaced is closed with it."""
    with Store(tmp_path / "healer.db") as store:
        a, new = store.ensure_deploy("a" * 40, T0)
        assert new and store.ensure_deploy("a" * 40, T0 + timedelta(minutes=1)) == (a, False)
        store.record_cycle(a.id, verdict(False, T0), Who.LOOP, update(1, opens="api failing"))
        b, new = store.ensure_deploy("b" * 40, T0 + timedelta(minutes=2))
        assert new and b.id > a.id
        assert store.previous_deploy(b.id) is not None and store.previous_deploy(a.id) is None
        closed = store.incidents()[0]
        assert closed.resolved_at is not None and "a new commit was deployed" in closed.cause


def test_cycles_keep_their_cause_and_next_step_and_the_first_settled_healthy_cycle(tmp_path: Path) -> None:
    """The likely cause is stored with a failing cycle; only a settled healthy cycle makes the
    release 'once healthy'."""
    with Store(tmp_path / "healer.db") as store:
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


def test_a_database_from_an_older_healer_gains_the_new_columns(tmp_path: Path) -> None:
    """Opening a database written before causes and healthy_at existed adds them, keeping the rows."""
    path = tmp_path / "healer.db"
    with Store(path) as store:
        d, _ = store.ensure_deploy("a" * 40, T0)
        store.record_cycle(d.id, verdict(True, T0), Who.LOOP, update())
    db = sqlite3.connect(path)
    for table, column in (("deploys", "healthy_at"), ("cycles", "cause"), ("cycles", "next_step")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.commit()
    db.close()
    with Store(path) as store:
        assert len(store.cycles()) == 1 and store.cycles()[0].cause is None
        assert store.current_deploy() is not None and store.current_deploy().healthy_at is None  # type: ignore[union-attr]
        store.record_cycle(d.id, verdict(False, T0 + timedelta(minutes=1)), Who.LOOP, update(1, cause="unknown"))
        assert store.last_cause(d.id) == "unknown"


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
