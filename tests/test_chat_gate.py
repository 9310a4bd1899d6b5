"""Chat-ops' fleet gate with the real SDKs against the loopback fakes (I/O): a listener whose
healer stopped leading acts on nothing more and leaves the update to the next leader (Telegram:
its offset is not confirmed past it; Slack: its envelope is not acknowledged), who answers it
once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chatfakes import ChatFake
from services import wait_until

from healer.chat import memory
from healer.chat.dispatch import Dispatcher
from healer.chat.slack import slack_listener
from healer.chat.telegram import telegram_listener
from healer.config import Config, parse_config

BOB = 111
CHAT = 4242
SLACK_USER = "U111"
CHANNEL = "C0123"
WAIT = 60.0


@pytest.fixture
def fake() -> Iterator[ChatFake]:
    f = ChatFake().start()
    yield f
    f.stop()


def _config(tmp_path: Path, fake: ChatFake, monkeypatch: pytest.MonkeyPatch) -> Config:
    """One healer with Telegram and Slack (Socket Mode) chat-ops, BOB allowed to read."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake.token)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", str(CHAT))
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake.slack_token)
    monkeypatch.setenv("SLACK_APP_TOKEN", fake.app_token)
    data = {
        "state_dir": str(tmp_path / ".healer"),
        "app": {"name": "shop"},
        "checks": [{"name": "api", "type": "command", "argv": ["true"]}],
        "alerts": {
            "timeout": "2s",
            "telegram": {"api_url": fake.url},
            "slack": {
                "token_env": "SLACK_BOT_TOKEN",
                "channel": CHANNEL,
                "api_url": f"{fake.url}/api/",
                "app_token_env": "SLACK_APP_TOKEN",
            },
        },
        "chatops": {"read": [f"telegram:{BOB}", f"slack:{SLACK_USER}"]},
    }
    return parse_config(data, tmp_path / "healer.toml")


def _gate(*answers: bool) -> Callable[[], bool]:
    """A leadership that says `answers` in turn, then no: the healer stopped leading."""
    said = iter(answers)
    return lambda: next(said, False)


def _replies(fake: ChatFake) -> list[str]:
    sent = [m for m in fake.calls("sendMessage") if str(m.get("chat_id")) == str(CHAT)]
    return [str(m["text"]) for m in sent if "reply_parameters" in m or "reply_to_message_id" in m]


async def _until(pred: Callable[[], object]) -> None:
    assert await asyncio.to_thread(wait_until, lambda: bool(pred()), WAIT)


async def test_telegram_a_healer_that_stopped_leading_leaves_the_update_to_the_next_poller(
    tmp_path: Path, fake: ChatFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands arrive in one getUpdates batch; the gate closes after the first was acted on:
    the second is not kept as handled, the listener stops, and the next listener (the new leader)
    answers the second alone, once."""
    config = _config(tmp_path, fake, monkeypatch)
    fake.say(BOB, CHAT, "/status")
    fake.say(BOB, CHAT, "/history")
    first = min(u["update_id"] for u in fake._updates)

    # the poll and the first update pass the gate; the second does not
    old = telegram_listener(config, Dispatcher(config, leading=_gate(True, True)))
    assert old is not None
    assert await asyncio.wait_for(old.run(), WAIT) is True  # stopped at the gate
    assert await asyncio.to_thread(memory.offset, config) == first + 1  # the second is not past
    assert len(fake.calls("getUpdates")) == 1  # no poll confirmed anything beyond the first

    new = telegram_listener(config, Dispatcher(config))
    assert new is not None
    task = asyncio.create_task(new.run())
    try:
        await _until(lambda: len(_replies(fake)) >= 2)
        await asyncio.sleep(1)  # room for a third answer, were an update handled twice
    finally:
        task.cancel()
    replies = _replies(fake)
    assert len(replies) == 2, replies
    assert replies[0].startswith("shop: loop") and not replies[1].startswith("shop: loop")  # /status, /history


async def test_slack_a_healer_that_stopped_leading_does_not_ack_and_the_next_listener_answers(
    tmp_path: Path, fake: ChatFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An envelope that reaches a listener whose healer no longer leads is not acknowledged; the
    listener closes its connection; Slack delivers it again to the new leader's, which acks and
    answers it once."""
    config = _config(tmp_path, fake, monkeypatch)
    old = slack_listener(config, Dispatcher(config, leading=_gate(True)))  # connects, then no longer leads
    assert old is not None
    stopped = asyncio.create_task(old.run())
    await _until(fake.socket_connected)
    eid = fake.slash(SLACK_USER, CHANNEL, "status")
    assert await asyncio.wait_for(stopped, WAIT) is True
    await _until(lambda: not fake.socket_connected())
    assert not fake.acked(eid) and not fake.slack_calls("chat.postMessage")

    new = slack_listener(config, Dispatcher(config))
    assert new is not None
    task = asyncio.create_task(new.run())
    try:
        await _until(fake.socket_connected)
        assert fake.redeliver() == [eid]
        await _until(lambda: fake.slack_calls("chat.postMessage"))
        await asyncio.sleep(1)  # room for a second answer
    finally:
        task.cancel()
    assert fake.acked(eid)
    answers = fake.slack_calls("chat.postMessage")
    assert len(answers) == 1 and str(answers[0]["text"]).startswith("shop: loop"), answers
