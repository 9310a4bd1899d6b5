"""Chat-ops rules: deny by default, command parsing, buttons that expire and cannot be forged,
and when an ack holds (pure)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from healer.chatops import (
    Ack,
    Button,
    Command,
    Press,
    Refused,
    Stage,
    Unknown,
    Verb,
    ack_in_force,
    alert_buttons,
    button_data,
    confirm_buttons,
    host_tag,
    is_allowed,
    parse_command,
    read_press,
)
from healer.config import ChatopsConfig

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = b"bot-token"
LISTS = ChatopsConfig(read=("slack:U1",), operate=("telegram:2",), act=("telegram:3",))


@pytest.mark.parametrize(
    ("user", "verb", "allowed"),
    [
        pytest.param("telegram:9", Verb.STATUS, False, id="unlisted-reads-nothing"),
        pytest.param("slack:U1", Verb.STATUS, True, id="read-reads"),
        pytest.param("slack:U1", Verb.PAUSE, False, id="read-cannot-pause"),
        pytest.param("telegram:2", Verb.PAUSE, True, id="operate-pauses"),
        pytest.param("telegram:2", Verb.HISTORY, True, id="operate-includes-read"),
        pytest.param("telegram:2", Verb.ROLLBACK, False, id="operate-cannot-roll-back"),
        pytest.param("telegram:3", Verb.ROLLBACK, True, id="act-rolls-back"),
        pytest.param("telegram:3", Verb.ACK, True, id="act-includes-operate"),
        pytest.param("slack:U2", Verb.ACK, False, id="other-platform-id"),
    ],
)
def test_authorisation_is_deny_by_default_with_levels(user: str, verb: Verb, allowed: bool) -> None:
    """Only listed users may act, each up to their level."""
    assert is_allowed(LISTS, user, verb) is allowed


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        pytest.param("/pause 10m db migration", Command(Verb.PAUSE, ("10m", "db", "migration")), id="telegram"),
        pytest.param("/status@healer_bot", Command(Verb.STATUS), id="bot-named"),
        pytest.param("rollback bad deploy", Command(Verb.ROLLBACK, ("bad", "deploy")), id="slack-text"),
        pytest.param("/Ack", Command(Verb.ACK), id="any-case"),
    ],
)
def test_commands_parse(text: str, parsed: Command) -> None:
    """Telegram's /verb and Slack's /healer text parse alike."""
    assert parse_command(text) == parsed


def test_unknown_command_lists_the_known_ones() -> None:
    """An unknown verb is answered with the list of verbs."""
    out = parse_command("/deploy now")
    assert isinstance(out, Unknown)
    assert "unknown command '/deploy'" in out.reply and "pause DURATION REASON" in out.reply


def test_incident_alert_buttons_and_resume_on_a_pause() -> None:
    """An incident alert offers Ack, Pause 1h, Roll back now; a pause offers Resume; a resolution none."""
    assert [b.label for b in alert_buttons("incident.opened", 4)] == ["Ack", "Pause 1h", "Roll back now"]
    assert [b.label for b in alert_buttons("pause.started", None)] == ["Resume"]
    assert alert_buttons("incident.resolved", 4) == ()
    assert alert_buttons("healer.started", None) == ()


def test_button_data_fits_telegram_and_reads_back() -> None:
    """Callback data is at most 64 bytes and names the verb, the incident and when it was issued."""
    for b in (*alert_buttons("incident.opened", 123456), *confirm_buttons(Verb.ROLLBACK)):
        data = button_data(b, 123456, NOW, KEY)
        assert len(data.encode()) <= 64
        press = read_press(data, KEY, NOW + timedelta(seconds=30))
        assert isinstance(press, Press)
        assert (press.verb, press.incident_id, press.stage) == (b.verb, 123456, b.stage)


def test_a_button_names_its_fleet_host_and_an_older_one_names_none() -> None:
    """In a fleet a button carries the host that sent its alert (a short digest: the data still
    fits 64 bytes for a 64-character host name); a button from before (no host field) still reads,
    naming none; the host cannot be changed without breaking the MAC."""
    host = "h" * 64
    data = button_data(Button("Yes", Verb.ROLLBACK, Stage.CONFIRM), 10**9, NOW, KEY, host_tag(host))
    assert len(data.encode()) <= 64
    press = read_press(data, KEY, NOW)
    assert isinstance(press, Press) and press.host == host_tag(host) != host_tag("web-2")
    body = f"ack:7:{data.split(':')[2]}"
    old = read_press(f"{body}:{hmac.new(KEY, body.encode(), hashlib.sha256).hexdigest()[:16]}", KEY, NOW)
    assert isinstance(old, Press) and (old.verb, old.incident_id, old.host) == (Verb.ACK, 7, None)
    forged = data.replace(host_tag(host), host_tag("web-2"))
    assert isinstance(read_press(forged, KEY, NOW), Refused)


@pytest.mark.parametrize(
    ("stage", "age", "expired"),
    [
        pytest.param(Stage.ASK, timedelta(hours=23), False, id="alert-button-a-day"),
        pytest.param(Stage.ASK, timedelta(hours=25), True, id="old-alert-button"),
        pytest.param(Stage.CONFIRM, timedelta(minutes=1), False, id="fresh-confirm"),
        pytest.param(Stage.CONFIRM, timedelta(minutes=3), True, id="stale-confirm"),
    ],
)
def test_buttons_expire(stage: Stage, age: timedelta, expired: bool) -> None:
    """An old button does nothing but say it expired; a confirmation lives two minutes."""
    data = button_data(Button("x", Verb.ROLLBACK, stage), 7, NOW, KEY)
    out = read_press(data, KEY, NOW + age)
    assert isinstance(out, Refused) is expired
    if expired:
        assert isinstance(out, Refused) and "expired" in out.reply


def test_a_forged_or_edited_button_is_refused() -> None:
    """Changing the verb or the incident (or another key) breaks the MAC."""
    data = button_data(Button("Ack", Verb.ACK), 7, NOW, KEY)
    assert isinstance(read_press(data.replace("ack:", "rollback!:", 1), KEY, NOW), Refused)
    assert isinstance(read_press(data, b"other", NOW), Refused)
    assert isinstance(read_press("garbage", KEY, NOW), Refused)


ACK = Ack(1, NOW, "telegram:2")


@pytest.mark.parametrize(
    ("resolved", "worsened", "later", "holds"),
    [
        pytest.param(False, [], timedelta(hours=1), True, id="fresh"),
        pytest.param(True, [], timedelta(hours=1), False, id="resolved"),
        pytest.param(False, [NOW + timedelta(minutes=5)], timedelta(hours=1), False, id="rollback-after-ack"),
        pytest.param(False, [NOW - timedelta(minutes=5)], timedelta(hours=1), True, id="rollback-before-ack"),
        pytest.param(False, [], timedelta(hours=4), False, id="expired"),
    ],
)
def test_ack_holds_until_resolved_worse_or_expired(
    resolved: bool, worsened: list[datetime], later: timedelta, holds: bool
) -> None:
    """An ack silences reminders until the incident resolves, worsens, or ack_expires passes."""
    assert (
        ack_in_force(ACK, resolved=resolved, worsened_at=worsened, now=NOW + later, expires=timedelta(hours=4)) is holds
    )
