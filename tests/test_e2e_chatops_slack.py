"""Chat-ops over Slack Socket Mode against a real `healer run`: the /healer command and the
alerts' Block Kit buttons, allowed and unknown users, every envelope acknowledged (I/O)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chatfakes import SLACK_API, ChatFake
from chatops_run import Running, cli_json, wait_for
from helpers import git

from healer.chatops import Button, Verb, button_data, button_key

pytestmark = pytest.mark.e2e

BOB = "U111"  # in [chatops] act
EVE = "U999"  # in no list
CHANNEL = "C0123"


@pytest.fixture
def fake() -> Iterator[ChatFake]:
    f = ChatFake().start()
    yield f
    f.stop()


def running(tmp_path: Path, fake: ChatFake, *, repeat_every: str = "30m") -> Running:
    """healer run with Slack alerts by a bot token, Socket Mode on, and slack:BOB allowed everything."""
    os.environ.update({"SLACK_BOT_TOKEN": fake.slack_token, "SLACK_APP_TOKEN": fake.app_token})
    chat = f"""
        [alerts.slack]
        token_env = "SLACK_BOT_TOKEN"
        channel = "{CHANNEL}"
        api_url = "{fake.url}/api/"
        app_token_env = "SLACK_APP_TOKEN"
        [chatops]
        act = ["slack:{BOB}"]
        """
    return Running(tmp_path, chat, repeat_every=repeat_every)


def _posts(fake: ChatFake, words: str) -> list[str]:
    """The ts of healer's Slack messages containing `words`, with buttons, oldest first."""
    return [
        ts for ts, p in sorted(fake.slack_posts.items()) if words in (p.get("text") or "") and fake.slack_buttons(ts)
    ]


def _said(fake: ChatFake, n_before: int) -> str | None:
    """The text of healer's n-th command reply (a message opening with a section block)."""
    replies = [
        p["text"] for _, p in sorted(fake.slack_posts.items()) if (p.get("blocks") or [{}])[0].get("type") == "section"
    ]
    return replies[n_before] if len(replies) > n_before else None


def _n_said(fake: ChatFake) -> int:
    return sum(1 for p in fake.slack_posts.values() if (p.get("blocks") or [{}])[0].get("type") == "section")


def _ephemeral(fake: ChatFake, user: str) -> list[str]:
    return [str(b.get("text")) for b in fake.slack_calls("chat.postEphemeral") if b.get("user") == user]


def _told(fake: ChatFake, user: str, n_before: int) -> str | None:
    """The n-th answer healer gave `user` alone (an ephemeral message), once it came."""
    said = _ephemeral(fake, user)
    return said[n_before] if len(said) > n_before else None


def _button(fake: ChatFake, ts: str, label: str) -> dict[str, Any]:
    """The button labelled `label` on a message, as healer posted it (with its block_id)."""
    blocks = fake.slack_posts[ts]["blocks"]
    return next(
        {**e, "block_id": b["block_id"]}
        for b in blocks
        if b.get("type") == "actions"
        for e in b["elements"]
        if e["text"]["text"] == label
    )


def test_slack_socket_mode_buttons_and_commands(tmp_path: Path, fake: ChatFake) -> None:
    """Through Socket Mode, pressing the alerts' own Block Kit buttons: an unknown user changes
    nothing and is told "not allowed"; an expired button and a double press do nothing but say
    so; an allowed user pauses (button and /healer), acks, cancels a /healer rollback, and rolls
    back with Roll back now + the confirming press; messages are updated with who did what and
    lose their buttons; every envelope is acked."""
    run = running(tmp_path, fake, repeat_every="3s")
    config, repo = run.config, run.repo
    envelopes: list[str] = []
    try:
        wait_for(fake.socket_connected, "the Socket Mode connection")
        opened = wait_for(lambda: _posts(fake, "Incident opened"), "the incident alert")[0]
        assert [label for label, _ in fake.slack_buttons(opened)] == ["Ack", "Pause 1h", "Roll back now"]
        assert {e["action_id"] for e in fake.slack_posts[opened]["blocks"][-1]["elements"]} == {
            "healer-ack", "healer-pause", "healer-rollback"
        }  # fmt: skip
        first, second = wait_for(lambda: _posts(fake, "Still failing")[:2] if len(_posts(fake, "Still failing")) > 1
                                 else None, "two reminders")  # fmt: skip
        incident = cli_json(config, "status")["open_incident"]["id"]

        # someone not in [chatops]: "not allowed", nothing changes
        envelopes.append(fake.click(EVE, opened, "Pause 1h"))
        assert wait_for(lambda: _told(fake, EVE, 0), "an answer") == "not allowed"
        n = _n_said(fake)
        envelopes.append(fake.slash(EVE, CHANNEL, "pause 10m testing"))
        assert wait_for(lambda: _said(fake, n), "a reply") == "not allowed"
        assert cli_json(config, "status")["pause"] is None
        assert [label for label, _ in fake.slack_buttons(opened)] == ["Ack", "Pause 1h", "Roll back now"]

        # an expired Ack button, correctly signed with the bot token: said so, nothing done
        told = len(_ephemeral(fake, BOB))
        old = datetime.now(UTC) - timedelta(days=2)
        stale = button_data(Button("Ack", Verb.ACK), incident, old, button_key(fake.slack_token))
        envelopes.append(fake.click_action(BOB, opened, {**_button(fake, opened, "Ack"), "value": stale}))
        assert "expired" in wait_for(lambda: _told(fake, BOB, told), "an answer")
        assert cli_json(config, "status")["ack"] is None
        assert [label for label, _ in fake.slack_buttons(opened)] == ["Ack", "Pause 1h", "Roll back now"]

        # Pause 1h on a reminder, Ack on the opening, then Ack again (a double press)
        envelopes.append(fake.click(BOB, first, "Pause 1h"))
        wait_for(lambda: "Paused until" in (fake.slack_posts[first]["text"] or ""), "the pause update")
        assert not fake.slack_buttons(first) and f"slack:{BOB}" in fake.slack_posts[first]["text"]
        ack = _button(fake, opened, "Ack")
        envelopes.append(fake.click(BOB, opened, "Ack"))
        wait_for(lambda: f"Acknowledged by slack:{BOB}" in (fake.slack_posts[opened]["text"] or ""), "the ack update")
        assert not fake.slack_buttons(opened)
        assert cli_json(config, "status")["ack"]["who"] == f"slack:{BOB}"
        told = len(_ephemeral(fake, BOB))
        envelopes.append(fake.click_action(BOB, opened, ack))
        assert wait_for(lambda: _told(fake, BOB, told), "an answer").startswith("already done: Acknowledged")

        # /healer pause
        n = _n_said(fake)
        envelopes.append(fake.slash(BOB, CHANNEL, "pause 10m testing"))
        assert wait_for(lambda: _said(fake, n), "a reply").startswith("paused until")
        assert cli_json(config, "status")["pause"]["reason"] == "testing"

        # /healer rollback asks; Cancel does nothing
        n = _n_said(fake)
        envelopes.append(fake.slash(BOB, CHANNEL, "rollback bad release"))
        assert wait_for(lambda: _said(fake, n), "a reply").startswith("roll back?")
        ask = next(
            ts for ts in sorted(fake.slack_posts, reverse=True) if "roll back?" in (fake.slack_posts[ts]["text"] or "")
        )
        told = len(_ephemeral(fake, BOB))
        envelopes.append(fake.click(BOB, ask, "Cancel"))
        assert wait_for(lambda: _told(fake, BOB, told), "an answer") == "cancelled"
        wait_for(lambda: not fake.slack_buttons(ask), "the confirmation's buttons gone")
        assert git(repo, "tag", "--points-at", "HEAD").strip() == ""

        # Roll back now on the other reminder: the first press asks, the second does it
        told = len(_ephemeral(fake, BOB))
        envelopes.append(fake.click(BOB, second, "Roll back now"))
        assert "confirm" in wait_for(lambda: _told(fake, BOB, told), "an answer")
        wait_for(lambda: [label for label, _ in fake.slack_buttons(second)] == ["Yes, roll back now", "Cancel"],
                 "the confirmation buttons")  # fmt: skip
        yes = _button(fake, second, "Yes, roll back now")
        envelopes.append(fake.click(BOB, second, "Yes, roll back now"))
        wait_for(lambda: "rolled back" in (fake.slack_posts[second]["text"] or ""), "the rollback update", timeout=90)
        assert f"(by slack:{BOB})" in fake.slack_posts[second]["text"] and not fake.slack_buttons(second)
        assert any(b["ts"] == second and "rolled back" in b["text"] for b in fake.slack_calls("chat.update"))
        assert git(repo, "tag", "--points-at", "HEAD").strip() == "stable-1"
        told = len(_ephemeral(fake, BOB))
        envelopes.append(fake.click_action(BOB, second, yes))
        assert wait_for(lambda: _told(fake, BOB, told), "an answer").startswith("already done: rolled back")
        wait_for(lambda: all(fake.acked(e) for e in envelopes), "every envelope acked")
    finally:
        log = run.stop()
    rows: list[dict[str, Any]] = cli_json(config, "history")
    who = {(r["type"], r["who"]) for r in rows if r["type"] in ("pause", "ack", "rollback", "chat.denied")}
    assert who == {
        ("pause", f"slack:{BOB}"), ("ack", f"slack:{BOB}"), ("rollback", f"slack:{BOB}"),
        ("chat.denied", f"slack:{EVE}"),
    }, log[-3000:]  # fmt: skip
    rollbacks = [r for r in rows if r["type"] == "rollback"]
    assert [r["why"] for r in rollbacks] == [f"Roll back now pressed on incident #{incident}"], log[-3000:]


def test_a_kill_between_the_acked_press_and_the_action_does_nothing_and_a_new_press_acts_once(
    tmp_path: Path, fake: ChatFake
) -> None:
    """kill -9 after healer acked a press but before it acted: Slack will not send it again and the
    next healer does nothing with it; the message keeps its buttons, and pressing again acts once."""
    run = running(tmp_path, fake)
    try:
        wait_for(fake.socket_connected, "the Socket Mode connection")
        opened = wait_for(lambda: _posts(fake, "Incident opened"), "the incident alert")[0]
        fake.set_mode(SLACK_API, "hang", method="chat.postEphemeral")  # healer is held between the two
        pressed = fake.click(BOB, opened, "Pause 1h")
        wait_for(lambda: [r for r in fake.requests if r.method == "chat.postEphemeral"], "healer taking the press")
        assert fake.acked(pressed)
        run.kill()
        fake.set_mode(SLACK_API, "ok")
        wait_for(lambda: not fake.socket_connected(), "the dead connection closed")
        run.start()
        wait_for(fake.socket_connected, "the new healer's connection")
        # a later command is answered by the new healer: the earlier press did nothing meanwhile
        n = _n_said(fake)
        fake.slash(BOB, CHANNEL, "status")
        assert wait_for(lambda: _said(fake, n), "a reply").startswith("shop: loop")
        assert cli_json(run.config, "status")["pause"] is None
        assert [label for label, _ in fake.slack_buttons(opened)] == ["Ack", "Pause 1h", "Roll back now"]
        fake.click(BOB, opened, "Pause 1h")
        wait_for(lambda: "Paused until" in (fake.slack_posts[opened]["text"] or ""), "the pause, pressed again")
    finally:
        log = run.stop()
    pauses = [r for r in cli_json(run.config, "history") if r["type"] == "pause"]
    assert [p["who"] for p in pauses] == [f"slack:{BOB}"], log[-3000:]
