"""Chat-ops over Slack Socket Mode against a real `healer run`: the /healer command and the
alerts' Block Kit buttons, allowed and unknown users, every envelope acknowledged (I/O)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chatfakes import ChatFake
from chatops_run import Running, cli_json, wait_for
from helpers import git

pytestmark = pytest.mark.e2e

BOB = "U111"  # in [chatops] act
EVE = "U999"  # in no list
CHANNEL = "C0123"


@pytest.fixture
def fake() -> Iterator[ChatFake]:
    f = ChatFake().start()
    yield f
    f.stop()


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


def test_slack_socket_mode_buttons_and_commands(tmp_path: Path, fake: ChatFake) -> None:
    """Through Socket Mode: an unknown user changes nothing and is told "not allowed"; an allowed
    one pauses with /healer, presses Pause 1h and Ack on the alerts, and rolls back with /healer
    plus a confirming press; messages are updated with who did what; every envelope is acked."""
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
    run = Running(tmp_path, chat, repeat_every="3s")
    config, repo = run.config, run.repo
    envelopes: list[str] = []
    try:
        wait_for(fake.socket_connected, "the Socket Mode connection")
        opened = wait_for(lambda: _posts(fake, "Incident opened"), "the incident alert")[0]
        assert [label for label, _ in fake.slack_buttons(opened)] == ["Ack", "Pause 1h", "Roll back now"]

        # someone not in [chatops]: "not allowed", nothing changes
        envelopes.append(fake.click(EVE, opened, "Pause 1h"))
        assert wait_for(lambda: _ephemeral(fake, EVE), "an answer") == ["not allowed"]
        n = _n_said(fake)
        envelopes.append(fake.slash(EVE, CHANNEL, "pause 10m testing"))
        assert wait_for(lambda: _said(fake, n), "a reply") == "not allowed"
        assert cli_json(config, "status")["pause"] is None

        # Pause 1h on a reminder, Ack on the opening
        reminder = wait_for(lambda: _posts(fake, "Still failing"), "a reminder")[0]
        envelopes.append(fake.click(BOB, reminder, "Pause 1h"))
        wait_for(lambda: "Paused until" in (fake.slack_posts[reminder]["text"] or ""), "the pause update")
        assert not fake.slack_buttons(reminder) and f"slack:{BOB}" in fake.slack_posts[reminder]["text"]
        envelopes.append(fake.click(BOB, opened, "Ack"))
        wait_for(lambda: f"Acknowledged by slack:{BOB}" in (fake.slack_posts[opened]["text"] or ""), "the ack update")
        assert cli_json(config, "status")["ack"]["who"] == f"slack:{BOB}"

        # /healer pause
        n = _n_said(fake)
        envelopes.append(fake.slash(BOB, CHANNEL, "pause 10m testing"))
        assert wait_for(lambda: _said(fake, n), "a reply").startswith("paused until")
        assert cli_json(config, "status")["pause"]["reason"] == "testing"

        # /healer rollback, then the confirming press
        n = _n_said(fake)
        envelopes.append(fake.slash(BOB, CHANNEL, "rollback bad release"))
        assert wait_for(lambda: _said(fake, n), "a reply").startswith("roll back?")
        ask = next(
            ts for ts in sorted(fake.slack_posts, reverse=True) if "roll back?" in (fake.slack_posts[ts]["text"] or "")
        )
        envelopes.append(fake.click(BOB, ask, "Yes, roll back now"))
        wait_for(lambda: "rolled back" in (fake.slack_posts[ask]["text"] or ""), "the rollback update", timeout=90)
        assert git(repo, "tag", "--points-at", "HEAD").strip() == "stable-1"
        assert all(fake.acked(e) for e in envelopes)
    finally:
        log = run.stop()
    rows: list[dict[str, Any]] = cli_json(config, "history")
    who = {(r["type"], r["who"]) for r in rows if r["type"] in ("pause", "ack", "rollback", "chat.denied")}
    assert who == {
        ("pause", f"slack:{BOB}"), ("ack", f"slack:{BOB}"), ("rollback", f"slack:{BOB}"),
        ("chat.denied", f"slack:{EVE}"),
    }, log[-3000:]  # fmt: skip
    rollback = next(r for r in rows if r["type"] == "rollback")
    assert rollback["why"] == "bad release"
