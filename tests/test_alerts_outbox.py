"""The alert outbox in SQLite and in PostgreSQL: per-channel state, order, restarts, the pipeline's
memory, and claims: senders sharing one outbox (two processes on one PostgreSQL) send each alert
once (I/O)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chatfakes import healer_config
from services import wait_until

from healer.alerts.message import AlertMessage
from healer.alerts.outbox import DeliveryState, Outbox, retry_delay
from healer.alerts.pipeline import FLEET
from healer.alerts.shell import Alerts, CycleContext, LogChannel
from healer.clock import FakeClock
from healer.config import StateDb
from healer.model import Alert, Event, Severity

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def msg(title: str, at: datetime = T0, event: Event = Event.REPAIR_STARTED) -> AlertMessage:
    return AlertMessage(items=(Alert(event, Severity.WARNING, title, "", 1),), app="shop-api", created_at=at)


@pytest.fixture
def db(state_db: StateDb) -> StateDb:
    return state_db


def test_tables_are_created_in_the_shared_state_database_in_wal_mode(tmp_path: Path) -> None:
    """Opening the outbox creates its own tables, WAL journal, in the given file."""
    db = tmp_path / "state" / "healer.db"
    Outbox(db).close()
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alert_outbox", "alert_deliveries", "alert_items"} <= tables
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    Outbox(db).close()  # opening again is fine


def test_each_channel_has_its_own_state(db: StateDb) -> None:
    """Delivered to telegram, still pending for slack: the same alert, tracked per channel."""
    ob = Outbox(db)
    aid = ob.enqueue(msg("a"), ["slack", "telegram"])
    assert ob.mark_delivered(aid, "telegram", T0)
    assert [d.alert_id for d in ob.due("telegram", T0)] == []
    assert [d.alert_id for d in ob.due("slack", T0)] == [aid]
    assert ob.pending_count() == 1
    [rec] = ob.history(T0 - timedelta(hours=1))
    states = {d.channel: d.state for d in rec.deliveries}
    assert states == {"slack": DeliveryState.PENDING, "telegram": DeliveryState.DELIVERED}
    ob.close()


def test_a_delivery_is_marked_once(db: StateDb) -> None:
    """Once a channel accepted a message, marking it again changes nothing and says so."""
    ob = Outbox(db)
    aid = ob.enqueue(msg("a"), ["slack"])
    assert ob.mark_delivered(aid, "slack", T0) is True
    assert ob.mark_delivered(aid, "slack", T0) is False
    ob.mark_failed(aid, "slack", "late error", retry_at=T0)  # a stale failure cannot reopen it
    assert ob.due("slack", T0 + timedelta(days=1)) == []
    ob.close()


def test_entries_survive_closing_and_reopening(db: StateDb) -> None:
    """A restart keeps every undelivered message, in order, with its attempts."""
    ob = Outbox(db)
    ids = [ob.enqueue(msg(f"m{i}", T0 + timedelta(seconds=i)), ["slack", "telegram"]) for i in range(3)]
    ob.mark_delivered(ids[0], "slack", T0)
    ob.mark_failed(ids[1], "slack", "slack: server error 500", retry_at=T0 + timedelta(seconds=30))
    ob.close()

    ob = Outbox(db)
    assert ob.pending_count() == 5
    assert ob.pending_count("slack") == 2
    assert [d.message.title for d in ob.due("telegram", T0)] == ["m0", "m1", "m2"]
    assert ob.due("slack", T0) == []  # the oldest waits for its retry ...
    due = ob.due("slack", T0 + timedelta(seconds=30))  # ... and the next waits behind it
    assert [(d.message.title, d.attempts) for d in due] == [("m1", 1), ("m2", 0)]
    [h] = [r for r in ob.history() if r.id == ids[1]]
    assert {d.channel: d.last_error for d in h.deliveries}["slack"] == "slack: server error 500"
    ob.close()


def test_permanent_failure_lets_the_next_message_go(db: StateDb) -> None:
    """A message refused for good is not tried again and does not hold up the ones after it."""
    ob = Outbox(db)
    a = ob.enqueue(msg("a"), ["slack"])
    b = ob.enqueue(msg("b"), ["slack"])
    ob.mark_failed(a, "slack", "slack: refused with 404 no_service", retry_at=None, permanent=True)
    assert [d.alert_id for d in ob.due("slack", T0)] == [b]
    assert ob.next_try_at("slack") == T0
    ob.close()


def test_ignore_schedule_for_flush(db: StateDb) -> None:
    """A flush at shutdown tries the head even while it waits for its retry time."""
    ob = Outbox(db)
    a = ob.enqueue(msg("a"), ["slack"])
    ob.mark_failed(a, "slack", "down", retry_at=T0 + timedelta(minutes=30))
    assert ob.due("slack", T0) == []
    assert [d.alert_id for d in ob.due("slack", T0, ignore_schedule=True)] == [a]
    ob.close()


def test_a_retry_planned_before_the_clock_was_stepped_back_does_not_sit_on_alerts(db: StateDb) -> None:
    """A retry 15 min ahead waits; one 2 h ahead (the wall clock went back an hour or more since it
    was planned) is due now: no retry is ever planned that far."""
    ob = Outbox(db)
    a = ob.enqueue(msg("a"), ["slack"])
    ob.mark_failed(a, "slack", "down", retry_at=T0 + timedelta(minutes=15))
    assert ob.due("slack", T0) == []
    ob.mark_failed(a, "slack", "down", retry_at=T0 + timedelta(hours=2))
    assert [d.alert_id for d in ob.due("slack", T0)] == [a]
    ob.close()


def test_history_since(db: StateDb) -> None:
    """`healer history --since` sees the alerts created in the window, oldest first, as JSON."""
    ob = Outbox(db)
    ob.enqueue(msg("old", T0 - timedelta(days=2)), ["log"])
    ob.enqueue(msg("new", T0), ["log"])
    recs = ob.history(T0 - timedelta(hours=24))
    assert [r.title for r in recs] == ["new"]
    js = recs[0].to_json()
    assert js["event"] == "repair.started" and js["deliveries"][0]["state"] == "pending"
    ob.close()


def test_prune_keeps_what_is_still_pending(db: StateDb) -> None:
    """Retention forgets old delivered alerts, never undelivered ones."""
    ob = Outbox(db)
    a = ob.enqueue(msg("a", T0 - timedelta(days=100)), ["log"])
    ob.enqueue(msg("b", T0 - timedelta(days=100)), ["log"])
    ob.mark_delivered(a, "log", T0)
    assert ob.prune(T0 - timedelta(days=90)) == 1
    assert [r.title for r in ob.history()] == ["b"]
    ob.close()


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        pytest.param(1, timedelta(seconds=30), id="first"),
        pytest.param(2, timedelta(seconds=60), id="second"),
        pytest.param(4, timedelta(seconds=240), id="fourth"),
        pytest.param(50, timedelta(minutes=15), id="capped"),
    ],
)
def test_retry_delay_doubles_up_to_a_cap(attempts: int, expected: timedelta) -> None:
    """Between failed batches: 30s, 1m, 2m, 4m ... 15m."""
    assert retry_delay(attempts) == expected


def test_dedup_memory_survives_a_restart(tmp_path: Path, db: StateDb) -> None:
    """After a restart mid-incident, healer does not announce the open incident again."""
    cfg = healer_config(tmp_path)
    clock = FakeClock(T0)
    ctx = CycleContext(app="shop-api", incident_id=7, incident_since=T0, summary="api: http.status")
    opened = Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api is failing", incident_id=7)

    a = Alerts(cfg, outbox=Outbox(db), clock=clock, channels=[LogChannel()])
    assert len(a.submit_sync([opened], ctx, T0).entries) == 1
    a.close()

    clock.advance(timedelta(minutes=5))
    b = Alerts(cfg, outbox=Outbox(db), clock=clock, channels=[LogChannel()])
    assert b.submit_sync([opened], ctx, clock.now()).entries == ()
    clock.advance(timedelta(minutes=25))
    [entry] = b.submit_sync([opened], ctx, clock.now()).entries
    assert [i.event for i in entry.message.items] == ["incident.reminder"]
    resolved = Alert(Event.INCIDENT_RESOLVED, Severity.INFO, "api is healthy", incident_id=7)
    assert len(b.submit_sync([resolved], CycleContext(app="shop-api"), clock.now()).entries) == 1
    assert b.submit_sync([resolved], CycleContext(app="shop-api"), clock.now()).entries == ()
    assert [r.event for r in b.history()] == [
        "incident.opened",
        "incident.reminder",
        "incident.resolved",
    ]
    b.close()


def test_hosts_sharing_one_outbox_each_remember_their_own_incidents(tmp_path: Path, db: StateDb) -> None:
    """A fleet's hosts share the outbox: web-2's incident #1 is announced although web-1's
    incident #1 was, each host's repeat is still dropped, and each host's history holds its own
    alerts and the fleet's."""
    cfg = healer_config(tmp_path)
    a = Alerts(cfg, outbox=Outbox(db), channels=[LogChannel()])
    opened = Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api is failing", incident_id=1)
    for host in ("web-1", "web-2"):
        ctx = CycleContext(app=f"shop on {host}", incident_id=1, incident_since=T0, source=host)
        [entry] = a.submit_sync([opened], ctx, T0).entries
        assert entry.message.app == f"shop on {host}"
        assert a.submit_sync([opened], ctx, T0).entries == ()  # its own memory
    fleet = CycleContext(app="shop (fleet)", source=FLEET)
    a.submit_sync(
        [Alert(Event.ROLLBACK_SUCCEEDED, Severity.INFO, "the fleet's rollback", bypass_dedup=True)], fleet, T0
    )
    a.close()
    ob = Outbox(db)
    assert [r.message.app for r in ob.history(None, ("web-2", FLEET))] == ["shop on web-2", "shop (fleet)"]
    assert len(ob.history()) == 3
    ob.close()


def test_flapping_groups_survive_a_restart(tmp_path: Path, db: StateDb) -> None:
    """After a restart, the folded failure stays folded and another failure is announced."""
    cfg = healer_config(tmp_path)
    a = Alerts(cfg, outbox=Outbox(db), channels=[LogChannel()])
    for inc in range(1, 5):
        ctx = CycleContext(app="shop-api", commit="abc", incident_id=inc, incident_since=T0)
        a.submit_sync([Alert("incident.opened", Severity.WARNING, "x", incident_id=inc)], ctx, T0)
    a.close()
    b = Alerts(cfg, outbox=Outbox(db), channels=[LogChannel()])
    ctx = CycleContext(app="shop-api", commit="abc", incident_id=5, incident_since=T0)
    same = b.submit_sync([Alert("incident.opened", Severity.WARNING, "x", incident_id=5)], ctx, T0)
    assert same.entries == ()
    ctx = CycleContext(app="shop-api", commit="abc", incident_id=6, incident_since=T0)
    other = b.submit_sync([Alert("incident.opened", Severity.WARNING, "y", incident_id=6)], ctx, T0)
    assert [i.event for p in other.entries for i in p.message.items] == ["incident.opened"]
    b.close()


def test_flapping_state_survives_a_restart(tmp_path: Path, db: StateDb) -> None:
    """Muted openings are remembered too: their resolutions stay quiet after a restart."""
    cfg = healer_config(tmp_path)
    a = Alerts(cfg, outbox=Outbox(db), channels=[LogChannel()])
    for inc in range(1, 5):
        ctx = CycleContext(app="shop-api", incident_id=inc, incident_since=T0)
        a.submit_sync([Alert(Event.INCIDENT_OPENED, Severity.WARNING, "x", incident_id=inc)], ctx, T0)
    a.close()
    b = Alerts(cfg, outbox=Outbox(db), channels=[LogChannel()])
    plan = b.submit_sync(
        [Alert(Event.INCIDENT_RESOLVED, Severity.INFO, "ok", incident_id=4)],
        CycleContext("shop-api"),
        T0,
    )
    assert plan.entries == ()
    assert [r.event for r in b.history()].count("incident.flapping") == 1
    b.close()


def test_an_outbox_from_before_flapping_groups_opens_and_remembers(tmp_path: Path) -> None:
    """The alert_items table of an older healer gains its flap_group column; its rows are kept."""
    db = tmp_path / "healer.db"
    old = sqlite3.connect(db)
    old.execute(
        "CREATE TABLE alert_items (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER, at TEXT NOT NULL,"
        " event TEXT NOT NULL, severity TEXT NOT NULL, incident_id INTEGER, title TEXT NOT NULL,"
        " muted INTEGER NOT NULL DEFAULT 0)"
    )
    old.execute(
        "INSERT INTO alert_items (at, event, severity, incident_id, title) VALUES (?, ?, ?, ?, ?)",
        ("2026-03-01T12:00:00.000000Z", "incident.opened", "warning", 1, "x"),
    )
    old.commit()
    old.close()
    box = Outbox(db)
    memory = box.memory(T0 + timedelta(minutes=1), timedelta(minutes=30))
    assert memory.openings == ((T0, ""),) and memory.incidents[1].opened
    box.close()


def test_a_claim_keeps_other_senders_off_until_it_lapses(db: StateDb) -> None:
    """Of two outboxes on one database, the one that claimed the row sends it; the other may take
    it only once the claim lapsed (its sender died mid-send), and nobody once it is delivered."""
    a, b = Outbox(db, owner="host-a"), Outbox(db, owner="host-b")
    try:
        aid = a.enqueue(msg("m"), ["slack"])
        assert a.claim(aid, "slack", T0, timedelta(minutes=1))
        assert not b.claim(aid, "slack", T0 + timedelta(seconds=59), timedelta(minutes=1))
        assert a.claim(aid, "slack", T0 + timedelta(seconds=30), timedelta(minutes=1))  # its own: renewed
        assert b.claim(aid, "slack", T0 + timedelta(minutes=2), timedelta(minutes=1))
        assert b.mark_delivered(aid, "slack", T0 + timedelta(minutes=2))
        assert not a.claim(aid, "slack", T0 + timedelta(hours=1), timedelta(minutes=1))
    finally:
        a.close()
        b.close()


_SENDER = """
import asyncio, os, sys, time
from datetime import timedelta
from pathlib import Path
from healer.alerts.outbox import Outbox, Sender
from healer.config import StateDb
from healer.model import Severity

class FileChannel:
    name, kind, min_severity = "slack", "slack", Severity.INFO
    async def send(self, message, *, delayed=None):
        await asyncio.sleep(0.005)  # a send takes a while: the other sender tries meanwhile
        with open(sys.argv[3], "a") as f:
            f.write(f"{message.title} {os.getpid()}\\n")

async def main():
    outbox = Outbox(StateDb(Path(sys.argv[1]), sys.argv[2] or None))
    sender = Sender(outbox, [FileChannel()])
    Path(sys.argv[4]).touch()
    while not Path(sys.argv[5]).exists():  # both senders start together
        await asyncio.sleep(0.01)
    deadline = time.monotonic() + 120
    while outbox.pending_count() and time.monotonic() < deadline:
        await sender.deliver_due()
        await asyncio.sleep(0.01)
    outbox.close()

asyncio.run(main())
"""


def test_two_sender_processes_on_one_outbox_send_each_alert_once(db: StateDb, tmp_path: Path) -> None:
    """Two processes deliver the same outbox at once (healers on two hosts): every alert reaches
    the channel exactly once, in order."""
    box = Outbox(db)
    titles = [f"alert-{n:02d}" for n in range(30)]
    for t in titles:
        box.enqueue(msg(t), ["slack"])
    sent, go = tmp_path / "sent.txt", tmp_path / "go"
    argv = [sys.executable, "-c", _SENDER, str(db.path), db.dsn_env or "", str(sent)]
    children = [subprocess.Popen([*argv, str(tmp_path / f"ready{n}"), str(go)]) for n in range(2)]
    try:
        assert wait_until(lambda: all((tmp_path / f"ready{n}").exists() for n in range(2)), timeout=60)
        go.touch()
        for child in children:
            assert child.wait(timeout=180) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    lines = sent.read_text().splitlines()
    assert [line.split()[0] for line in lines] == titles
    assert box.pending_count() == 0
    assert {d.state for r in box.history() for d in r.deliveries} == {DeliveryState.DELIVERED}
    box.close()
