"""The state store on a real SQLite file: deploy windows, cycles and their counters, causes,
migrations from an older database, and the context manager (I/O)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from healer.model import CheckResult, Deploy, DeployState, Verdict, Who
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


def test_a_deploy_goes_from_new_to_healthy_to_stable_and_a_rolled_back_commit_stays_bad(tmp_path: Path) -> None:
    """The lifecycle is read from what is stored: the first settled healthy cycle, the stable tag,
    the hold, and the commit marked bad, which a later deploy of the same commit inherits."""
    with Store(tmp_path / "healer.db") as store:
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
