"""Chat-ops over Telegram against a real `healer run`: buttons and commands from allowed and
unknown users, confirmation, double presses, expired buttons, and a second poller (409) (I/O)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chatfakes import ChatFake
from chatops_run import Running, cli_json, wait_for
from helpers import git

from healer.chatops import Button, Verb, button_data, button_key

pytestmark = pytest.mark.e2e

BOB = 111  # in [chatops] act
EVE = 999  # in no list
CHATS = (4242, 4243, 4244)


def running(tmp_path: Path, fake: ChatFake) -> Running:
    """healer run with Telegram alerts to three chats and telegram:BOB allowed everything."""
    os.environ.update({"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": ",".join(map(str, CHATS))})
    chat = f"""
        [alerts.telegram]
        api_url = "{fake.url}"
        [chatops]
        act = ["telegram:{BOB}"]
        """
    return Running(tmp_path, chat)


@pytest.fixture
def fake() -> Iterator[ChatFake]:
    f = ChatFake().start()
    yield f
    f.stop()


def _incident_messages(fake: ChatFake) -> dict[int, int]:
    """chat id -> message id of the incident alert with buttons, once all three chats have one."""
    out: dict[int, int] = {}
    for mid, m in sorted(fake.messages.items()):
        if "Incident opened" in (m.get("text") or "") and m.get("reply_markup"):
            out.setdefault(m["chat_id"], mid)
    return out if len(out) == len(CHATS) else {}


def _answer(fake: ChatFake, qid: str) -> str | None:
    for body in fake.calls("answerCallbackQuery"):
        if body.get("callback_query_id") == qid:
            return str(body.get("text", ""))
    return None


def _replies(fake: ChatFake, chat: int) -> list[str]:
    """What healer answered commands in `chat` (its messages that reply to one)."""
    sent = [m for m in fake.calls("sendMessage") if str(m.get("chat_id")) == str(chat)]
    return [str(m["text"]) for m in sent if "reply_parameters" in m or "reply_to_message_id" in m]


def _reply(fake: ChatFake, chat: int, n_before: int) -> str | None:
    replies = _replies(fake, chat)
    return replies[n_before] if len(replies) > n_before else None


def _ask(fake: ChatFake, user: int, text: str) -> str:
    """`user` sends `text` in the first chat; healer's reply, once it came."""
    n = len(_replies(fake, CHATS[0]))
    fake.say(user, CHATS[0], text)
    return str(wait_for(lambda: _reply(fake, CHATS[0], n), f"the reply to {text}"))


def test_telegram_buttons_and_commands_act_for_allowed_users_only(tmp_path: Path, fake: ChatFake) -> None:
    """Ack, Pause 1h and Roll back now + confirm do their work for an allowed user, record who and
    edit the message; an unknown user changes nothing and is told "not allowed"; a double press
    and an expired button do nothing but say so; /pause from chat pauses."""
    run = running(tmp_path, fake)
    config = run.config
    try:
        msgs = wait_for(lambda: _incident_messages(fake), "the incident alert in every chat")
        a, b, c = (msgs[chat] for chat in CHATS)
        assert [label for label, _ in fake.buttons(a)] == ["Ack", "Pause 1h", "Roll back now"]
        incident = cli_json(config, "status")["open_incident"]["id"]

        # someone not in [chatops]: told "not allowed", nothing changes
        qid = fake.press(EVE, a, "Pause 1h")
        assert wait_for(lambda: _answer(fake, qid), "an answer") == "not allowed"
        n = len(_replies(fake, CHATS[0]))
        fake.say(EVE, CHATS[0], "/pause 10m testing")
        assert wait_for(lambda: _reply(fake, CHATS[0], n), "a reply") == "not allowed"
        status = cli_json(config, "status")
        assert status["pause"] is None and status["ack"] is None
        assert [label for label, _ in fake.buttons(a)] == ["Ack", "Pause 1h", "Roll back now"]

        # Pause 1h
        qid = fake.press(BOB, a, "Pause 1h")
        wait_for(lambda: "Paused until" in (fake.messages[a]["text"] or ""), "the message edited")
        assert f"by telegram:{BOB}" in fake.messages[a]["text"] and not fake.buttons(a)
        pause = cli_json(config, "status")["pause"]
        assert pause is not None and f"incident #{incident}" in pause["reason"]

        # Ack, then the same button again (a double press)
        ack_data = dict(fake.buttons(b))["Ack"]
        qid = fake.press(BOB, b, "Ack")
        wait_for(lambda: f"Acknowledged by telegram:{BOB}" in (fake.messages[b]["text"] or ""), "the ack edit")
        assert not fake.buttons(b)
        assert cli_json(config, "status")["ack"]["who"] == f"telegram:{BOB}"
        qid = fake.press_data(BOB, b, ack_data)
        assert wait_for(lambda: _answer(fake, qid), "an answer").startswith("already done: Acknowledged")

        # an expired button, correctly signed by the bot's token
        old = datetime.now(UTC) - timedelta(days=2)
        stale = button_data(Button("Ack", Verb.ACK), incident, old, button_key(fake.token))
        qid = fake.press_data(BOB, c, stale)
        assert "expired" in wait_for(lambda: _answer(fake, qid), "an answer")

        # /pause from chat
        n = len(_replies(fake, CHATS[2]))
        fake.say(BOB, CHATS[2], "/pause 10m testing")
        assert wait_for(lambda: _reply(fake, CHATS[2], n), "a reply").startswith("paused until")
        assert cli_json(config, "status")["pause"]["reason"] == "testing"

        # the pause's announcement carries Resume
        def resume_button() -> int | None:
            found = [mid for mid, m in fake.messages.items() if m["chat_id"] == CHATS[2] and "testing" in m["text"]]
            return next((mid for mid in reversed(found) if dict(fake.buttons(mid)).get("Resume")), None)

        fake.press(BOB, wait_for(resume_button, "the pause announcement"), "Resume")
        wait_for(lambda: cli_json(config, "status")["pause"] is None, "the resume")

        # Roll back now: a first press asks, the second does it
        qid = fake.press(BOB, c, "Roll back now")
        assert "confirm" in wait_for(lambda: _answer(fake, qid), "an answer")
        assert [label for label, _ in fake.buttons(c)] == ["Yes, roll back now", "Cancel"]
        fake.press(BOB, c, "Yes, roll back now")
        wait_for(lambda: "rolled back" in (fake.messages[c]["text"] or ""), "the rollback edit", timeout=90)
        assert f"(by telegram:{BOB})" in fake.messages[c]["text"] and not fake.buttons(c)
        assert git(run.repo, "tag", "--points-at", "HEAD").strip() == "stable-1"

        def said(*words: str) -> bool:
            return any(all(w in (m["text"] or "") for w in words) for m in fake.telegram_messages())

        # every chat hears who did what
        wait_for(lambda: said("Paused for 1h", f"telegram:{BOB}") and said("Rolled back", f"telegram:{BOB}"), "news")
    finally:
        log = run.stop()
    rows = cli_json(config, "history")
    who = {(r["type"], r["who"]) for r in rows if r["type"] in ("pause", "ack", "rollback", "chat.denied")}
    assert who == {
        ("pause", f"telegram:{BOB}"), ("ack", f"telegram:{BOB}"), ("rollback", f"telegram:{BOB}"),
        ("chat.denied", f"telegram:{EVE}"),
    }, log[-3000:]  # fmt: skip


def test_a_second_poller_is_said_once_and_the_loop_goes_on(tmp_path: Path, fake: ChatFake) -> None:
    """Telegram's 409 (another poller on the token) stops polling with one log line and one
    alert; healer keeps checking."""
    fake.set_mode("telegram", "conflict")
    run = running(tmp_path, fake)
    try:
        wait_for(lambda: any("Chat commands off" in (m["text"] or "") for m in fake.telegram_messages()), "the alert")
        cycles = len([r for r in cli_json(run.config, "history") if r["type"] == "check"])
        time.sleep(2)
        later = len([r for r in cli_json(run.config, "history") if r["type"] == "check"])
    finally:
        log = run.stop()
    polls = [r for r in fake.requests if r.method == "getUpdates"]
    assert len(polls) == 1, log[-2000:]
    assert log.count('"event": "chatops.stopped"') == 1
    assert fake.token.split(":", 1)[1] not in log
    assert later > cycles


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("garbage", id="not-json"),
        pytest.param("shape", id="wrong-shape"),
        pytest.param("reset", id="down"),
    ],
)
def test_a_garbled_or_down_chat_api_never_delays_a_cycle_and_polling_backs_off(
    tmp_path: Path, fake: ChatFake, mode: str
) -> None:
    """The Bot API answering garbage (not JSON, or JSON of the wrong shape) or dropping every
    connection: cycles keep their cadence, polls back off and the outage is logged once; when
    Telegram answers again a command is answered."""
    fake.set_mode("telegram", mode)
    run = running(tmp_path, fake)
    try:
        wait_for(lambda: cli_json(run.config, "status").get("last_cycle"), "a first cycle")
        time.sleep(6)
        polls = [r for r in fake.requests if r.method == "getUpdates"]
        checks = [r for r in cli_json(run.config, "history") if r["type"] == "check"]
        assert 2 <= len(polls) <= 4  # 1 s, 2 s, 4 s apart: not a busy loop
        assert len(checks) >= 3  # the first cycle, then one every 2 s (incident_every)
        fake.set_mode("telegram", "ok")
        reply = _ask(fake, BOB, "/status")
        assert reply.startswith("shop: loop") and "FAILING" in reply
    finally:
        log = run.stop()
    assert log.count('"event": "chatops.poll_failed"') == 1
    assert fake.token not in log and fake.token.split(":", 1)[1] not in log
    assert log.count('"event": "chatops.poll_recovered"') == 1


def test_a_hanging_bot_api_never_delays_a_cycle(tmp_path: Path, fake: ChatFake) -> None:
    """The Bot API answering nothing at all (getUpdates, sendMessage, every method): cycles keep
    coming and being recorded while the one poll waits, and the loop shows alive; once Telegram
    answers, the held-back incident alert reaches every chat and a command is answered."""
    fake.set_mode("telegram", "hang")
    run = running(tmp_path, fake)

    def checks() -> int:
        return len([r for r in cli_json(run.config, "history") if r["type"] == "check"])

    try:
        wait_for(lambda: {"getUpdates", "sendMessage"} <= {r.method for r in fake.requests}, "healer calling")
        first = wait_for(checks, "a first cycle")
        wait_for(lambda: checks() >= first + 5, "five more cycles while the Bot API hangs")
        assert cli_json(run.config, "status")["loop"]["alive"]
        assert len([r for r in fake.requests if r.method == "getUpdates"]) <= 2  # the poll waits, no busy loop
        assert fake.telegram_messages() == []
        fake.set_mode("telegram", "ok")
        wait_for(lambda: _incident_messages(fake), "the incident alert in every chat, once Telegram answers")
        reply = _ask(fake, BOB, "/status")
        assert reply.startswith("shop: loop") and "FAILING" in reply
    finally:
        log = run.stop()
    assert fake.token not in log and fake.token.split(":", 1)[1] not in log


def test_a_press_while_healer_is_killed_is_done_once_after_the_restart(tmp_path: Path, fake: ChatFake) -> None:
    """kill -9 before a press is fetched: the next healer does it, once; another kill -9 and
    restart do not do it again (the next update id is kept before acting)."""
    run = running(tmp_path, fake)
    try:
        message = wait_for(lambda: _incident_messages(fake), "the incident alert")[CHATS[0]]
        run.kill()
        fake.press(BOB, message, "Pause 1h")
        run.start()
        wait_for(lambda: "Paused until" in (fake.messages[message]["text"] or ""), "the pause, after the restart")
        run.kill()

        def polls() -> int:
            return len([r for r in fake.requests if r.method == "getUpdates"])

        before = polls()
        run.start()
        wait_for(lambda: polls() > before, "the third healer polling")
        time.sleep(1)
    finally:
        log = run.stop()
    pauses = [r for r in cli_json(run.config, "history") if r["type"] == "pause"]
    assert [p["who"] for p in pauses] == [f"telegram:{BOB}"], log[-3000:]


def test_a_kill_between_the_press_and_the_action_does_nothing_and_a_new_press_acts_once(
    tmp_path: Path, fake: ChatFake
) -> None:
    """kill -9 after healer took a press but before it acted: the next healer does not run it
    (at most once), the message keeps its buttons, and pressing again acts once."""
    run = running(tmp_path, fake)
    try:
        msgs = wait_for(lambda: _incident_messages(fake), "the incident alert")
        message, other = msgs[CHATS[0]], msgs[CHATS[1]]
        fake.set_mode("telegram", "hang", method="answerCallbackQuery")  # healer is held between the two
        fake.press(BOB, message, "Pause 1h")
        wait_for(lambda: [r for r in fake.requests if r.method == "answerCallbackQuery"], "healer taking the press")
        run.kill()
        fake.set_mode("telegram", "ok")
        run.start()
        # a later press is done by the new healer: the earlier one, had it come back, came first
        fake.press(BOB, other, "Ack")
        wait_for(lambda: "Acknowledged by" in (fake.messages[other]["text"] or ""), "the ack after the restart")
        assert cli_json(run.config, "status")["pause"] is None
        assert [label for label, _ in fake.buttons(message)] == ["Ack", "Pause 1h", "Roll back now"]
        fake.press(BOB, message, "Pause 1h")
        wait_for(lambda: "Paused until" in (fake.messages[message]["text"] or ""), "the pause, pressed again")
    finally:
        log = run.stop()
    pauses = [r for r in cli_json(run.config, "history") if r["type"] == "pause"]
    assert [p["who"] for p in pauses] == [f"telegram:{BOB}"], log[-3000:]


def test_every_verb_answers_by_level_and_refuses_below_it(tmp_path: Path, fake: ChatFake) -> None:
    """Each verb from a user at each level of [chatops]: read runs /status and /history, operate
    also /ack, /pause, /resume, act also /repair (confirmed); everything above a user's level,
    and everything from a user in no list, is "not allowed", recorded, and changes nothing."""
    reader, operator, marker = 201, 202, tmp_path / "repaired"
    (tmp_path / "pb").mkdir()
    (tmp_path / "pb" / "fix.toml").write_text(
        f'description = "touch it"\nverify_within = "1s"\n[[steps]]\naction = "command"\nargv = ["touch", "{marker}"]\n'
    )
    os.environ.update({"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": str(CHATS[0])})
    chat = f"""
        [playbooks]
        dir = "pb"
        [alerts.telegram]
        api_url = "{fake.url}"
        [chatops]
        read = ["telegram:{reader}"]
        operate = ["telegram:{operator}"]
        act = ["telegram:{BOB}"]
        """
    run = Running(tmp_path, chat)

    try:
        incident = wait_for(lambda: cli_json(run.config, "status").get("open_incident"), "the incident")["id"]
        denied = [
            (EVE, "/status"), (EVE, "/history"),
            (reader, "/ack"), (reader, "/pause 10m x"), (reader, "/resume"), (reader, "/repair fix"),
            (operator, "/repair fix"), (operator, "/rollback bad release"),
        ]  # fmt: skip
        for user, text in denied:
            assert _ask(fake, user, text) == "not allowed", (user, text)
        status = cli_json(run.config, "status")
        assert status["pause"] is None and status["ack"] is None and not marker.exists()

        assert _ask(fake, reader, "/status").startswith("shop: loop")
        assert "not allowed" not in _ask(fake, reader, "/history")
        assert _ask(fake, operator, "/ack on it").startswith(f"incident #{incident} acknowledged")
        assert _ask(fake, operator, "/pause 10m op").startswith("paused until")
        assert _ask(fake, operator, "/resume").startswith("resumed")

        # /repair asks; an operator pressing the confirmation is refused; the actor's press runs it
        assert _ask(fake, BOB, "/repair fix").startswith("run fix?")
        confirm = max(mid for mid, m in fake.messages.items() if (m["text"] or "").startswith("run fix?"))
        qid = fake.press(operator, confirm, "Yes, repair now")
        assert wait_for(lambda: _answer(fake, qid), "an answer") == "not allowed"
        fake.press(BOB, confirm, "Yes, repair now")
        wait_for(lambda: "fix: NOT fixed" in (fake.messages[confirm]["text"] or ""), "the repair's result", timeout=60)
        assert marker.exists()
    finally:
        log = run.stop()
    rows = cli_json(run.config, "history")
    denied_to = sorted(r["who"] for r in rows if r["type"] == "chat.denied")
    assert denied_to == sorted([f"telegram:{u}" for u, _ in denied] + [f"telegram:{operator}"]), log[-3000:]
    who = {(r["type"], r["who"]) for r in rows if r["type"] in ("pause", "resume", "ack", "repair")}
    assert who == {
        ("ack", f"telegram:{operator}"), ("pause", f"telegram:{operator}"), ("resume", f"telegram:{operator}"),
        ("repair", f"telegram:{BOB}"),
    }, log[-3000:]  # fmt: skip
