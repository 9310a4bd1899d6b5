"""The operations shared by the CLI and chat, on a real store: who is recorded, acks stop
reminders until the incident resolves, worsens or the ack expires (I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import config_from, healer

from healer import operations
from healer.alerts.outbox import AlertRecord, Outbox
from healer.alerts.pipeline import AlertMemory, CycleContext, IncidentMemory, Route, plan_alerts
from healer.chat.dispatch import Dispatcher
from healer.chatops import button_data
from healer.clock import SystemClock
from healer.config import ChatopsConfig, Config
from healer.model import CheckResult, Outcome, Verdict, Who
from healer.operations import Actor
from healer.store import CycleUpdate, Store

BOB = Actor.chat("telegram:2")


def _failing(tmp_path: Path) -> tuple[Config, int]:
    """A config and a store with one deploy whose incident is open."""
    config = config_from(
        tmp_path,
        'state_dir = "state"\n[app]\nname = "shop"\n[[checks]]\nname = "api"\ntype = "http"\n'
        'url = "http://127.0.0.1:9/health"\n[chatops]\noperate = ["telegram:2"]\nack_expires = "1h"\n',
    )
    now = SystemClock().now()
    with Store(config.db_path) as store:
        d, _ = store.ensure_deploy("a" * 40, now - timedelta(minutes=5))
        update = CycleUpdate(
            consecutive_failures=1, consecutive_passes=0, emergency_streak=0, baseline=None,
            open_incident_cause="api: http.down", resolve_incident=False,
        )  # fmt: skip
        store.record_cycle(d.id, Verdict(now, (CheckResult("api", "http", False),)), Who.LOOP, update)
        incident = store.current_deploy().open_incident  # type: ignore[union-attr]
    assert incident is not None
    return config, incident


def test_ack_is_recorded_announced_and_shown_in_status(tmp_path: Path) -> None:
    """An ack from chat is an action row by telegram:2, an announcement, and a line in `healer status`."""
    config, incident = _failing(tmp_path)
    result = operations.ack(config, BOB, "looking")
    assert result.done and result.reply.startswith(f"incident #{incident} acknowledged")
    again = operations.ack(config, BOB, "again")
    assert not again.done and again.reply.startswith(f"incident #{incident} is already acknowledged by telegram:2")
    with Store(config.db_path) as store:
        rows = store.actions(kind="ack")
    assert [(r.who, r.reason, r.incident_id, r.outcome) for r in rows] == [("telegram:2", "looking", incident, "ok")]
    said = [r.title for r in _said(config)]
    assert f"Acknowledged: incident #{incident}" in said
    proc = healer("--config", str(config.path), "status")
    assert "acked    by telegram:2" in proc.stdout and ": looking" in proc.stdout, proc.stdout


def test_a_rollback_after_the_ack_re_arms_the_reminders(tmp_path: Path) -> None:
    """The incident worsening (a rollback starts) ends the ack; a new ack holds again."""
    config, incident = _failing(tmp_path)
    operations.ack(config, BOB, "")
    later = SystemClock().now() + timedelta(seconds=1)
    with Store(config.db_path) as store:
        assert operations.acked(config, store, incident, later) is not None
        store.start_action(
            kind="rollback", name="stable-1", who=Who.LOOP, reason="5 failing cycles", now=later,
            deploy_id=None, incident_id=incident,
        )  # fmt: skip
        assert operations.acked(config, store, incident, later + timedelta(seconds=1)) is None
    assert operations.ack(config, BOB, "again").done


def test_an_ack_expires_and_ends_with_the_incident(tmp_path: Path) -> None:
    """ack_expires (1h here) ends an ack; so does the incident resolving."""
    config, incident = _failing(tmp_path)
    operations.ack(config, BOB, "")
    now = SystemClock().now()
    with Store(config.db_path) as store:
        assert operations.acked(config, store, incident, now + timedelta(minutes=59)) is not None
        assert operations.acked(config, store, incident, now + timedelta(minutes=61)) is None
        d = store.current_deploy()
        assert d is not None
        update = CycleUpdate(
            consecutive_failures=0, consecutive_passes=2, emergency_streak=0, baseline=None,
            open_incident_cause=None, resolve_incident=True,
        )  # fmt: skip
        store.record_cycle(d.id, Verdict(now, (CheckResult("api", "http", True),)), Who.LOOP, update)
        assert operations.acked(config, store, incident, now) is None
    assert operations.ack(config, BOB, "") == operations.AckResult(False, "no incident is open")


def test_an_acked_incident_gets_no_reminders() -> None:
    """The plan adds no reminder for an acknowledged incident, however long it has been quiet."""
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    memory = AlertMemory(incidents={3: IncidentMemory(opened=True, last_at=now - timedelta(hours=2))})
    base = CycleContext(app="shop", incident_id=3, incident_since=now - timedelta(hours=2), summary="api down")

    def events(ctx: CycleContext) -> list[str]:
        plan = plan_alerts([], context=ctx, memory=memory, routes=[Route("log")], now=now)
        return [i.event for p in plan.entries for i in p.message.items]

    assert events(base) == ["incident.reminder"]
    assert events(CycleContext(**{**_fields(base), "acked": True})) == []


def _fields(ctx: CycleContext) -> dict[str, object]:
    return {f: getattr(ctx, f) for f in ctx.__slots__}  # type: ignore[attr-defined]


def _said(config: Config) -> list[AlertRecord]:
    outbox = Outbox(config.db_path)
    try:
        return outbox.history()
    finally:
        outbox.close()


def test_a_chat_pause_records_who(tmp_path: Path) -> None:
    """A pause from chat keeps telegram:2 with the pause and on its action row, and is announced."""
    config, _ = _failing(tmp_path)
    until = operations.pause(config, BOB, timedelta(minutes=10), "testing")
    with Store(config.db_path) as store:
        pause = store.active_pause(SystemClock().now())
        rows = store.actions(kind="pause")
    assert pause is not None and pause.who == "telegram:2" and pause.until == until
    assert [(r.who, r.reason, r.outcome) for r in rows] == [("telegram:2", "testing", Outcome.OK)]
    assert operations.resume(config, BOB) == [config.fleet_host] and operations.resume(config, BOB) == []
    said = [(r.title, r.message.detail) for r in _said(config)]
    assert (
        "Paused for 10m",
        f"testing (by telegram:2); checks go on, no repair or rollback until {operations.when(until)}",
    ) in said


def test_healer_ack_from_the_command_line(tmp_path: Path) -> None:
    """`healer ack` runs the same operation: 0 and the reply when it acknowledged, 1 when not."""
    config, incident = _failing(tmp_path)
    first = healer("--config", str(config.path), "ack", "--note", "on it")
    assert first.returncode == 0 and first.stdout.startswith(f"incident #{incident} acknowledged"), first.stderr
    second = healer("--config", str(config.path), "ack")
    assert second.returncode == 1 and "already acknowledged by" in second.stdout
    with Store(config.db_path) as store:
        assert [(r.who, r.reason) for r in store.actions(kind="ack")] == [("person", "on it")]


@pytest.mark.parametrize("text", ["/status", "/history", "/ack", "/pause 10m x", "/resume", "/repair redis-flush",
                                  "/rollback bad release"])  # fmt: skip
async def test_every_verb_is_refused_to_a_user_in_no_list(tmp_path: Path, text: str) -> None:
    """Deny by default: whatever the verb, an unlisted user gets "not allowed", a chat.denied
    row, and nothing else changes; a user allowed to read may not operate."""
    config, _ = _failing(tmp_path)
    dispatcher = Dispatcher(config)
    for user in ("telegram:9", "slack:U9"):
        reply = await dispatcher.command(user, text)
        assert (reply.text, reply.buttons) == ("not allowed", ())
    with Store(config.db_path) as store:
        rows = store.actions()
        assert store.active_pause(SystemClock().now()) is None
    assert [(r.kind, r.who) for r in rows] == [("chat.denied", "telegram:9"), ("chat.denied", "slack:U9")]


async def test_a_destructive_command_waits_for_the_confirming_press(tmp_path: Path) -> None:
    """/rollback from an allowed user only asks; the confirmation names no incident and, once
    its words are lost (a restart), does nothing but say so."""
    config, _ = _failing(tmp_path)
    config = config.model_copy(update={"chatops": ChatopsConfig(act=("telegram:2",))})
    reply = await Dispatcher(config).command("telegram:2", "/rollback bad release")
    assert reply.text.startswith("roll back?") and [b.label for b in reply.buttons] == ["Yes, roll back now", "Cancel"]
    assert reply.issued is not None
    data = button_data(reply.buttons[0], None, reply.issued, b"k")
    step = await Dispatcher(config).press("telegram:2", data, b"k")  # a new process: the words are gone
    assert step.answer == "nothing to confirm: send /rollback REASON [REF] again" and step.run is None
    with Store(config.db_path) as store:
        assert store.actions(kind="rollback") == []


async def test_repair_names_the_host_it_runs_on_and_refuses_another(tmp_path: Path) -> None:
    """/repair KIND HOST asks for a confirmation only for this healer's own host; another host's
    repair is refused with where to run it (a playbook restarts local processes)."""
    config, _ = _failing(tmp_path)
    config = config.model_copy(update={"chatops": ChatopsConfig(act=("telegram:2",))})
    other = await Dispatcher(config).command("telegram:2", "/repair process-restart web-9")
    assert (
        other.text
        == (
            f"repair runs on the host whose processes it restarts, and chat reaches {config.fleet_host} only: "
            "on web-9, run `healer repair process-restart`"
        )
        and other.buttons == ()
    )
    here = await Dispatcher(config).command("telegram:2", f"/repair process-restart {config.fleet_host}")
    assert here.text.startswith("run process-restart? Press to confirm")
