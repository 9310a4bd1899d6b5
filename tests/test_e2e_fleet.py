"""End-to-end fleet mode: two real `healer run` processes, each with its own clone of the app's
repository and its own state_dir, sharing one real PostgreSQL ([state] dsn_env, [fleet]) and one
loopback Telegram (I/O): one leader, only it answers chat, and each alert is delivered once."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chatfakes import ChatFake
from chatops_run import cli_json
from helpers import HEALER, clone, make_repo, stop_healer, write_config
from services import PostgresServer, wait_until

pytestmark = pytest.mark.e2e

BOB = 111  # in [chatops] operate
CHAT = 4242
LEASE = "4s"  # short for a quick takeover; long enough that a busy 2-core machine renews
WAIT = 90.0  # generous: never a wall-clock assertion, only "eventually"


class Host:
    """One host of the fleet: its clone of the repository, its healer.toml and its `healer run`."""

    def __init__(self, root: Path, name: str, origin: Path, fake: ChatFake, check: str = "true") -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        self.repo = clone(origin, self.dir / "app")
        body = f"""
            state_dir = "state"
            [state]
            dsn_env = "HEALER_STATE_DSN"
            [fleet]
            host = "{name}"
            lease = "{LEASE}"
            [app]
            name = "shop"
            repo = "{self.repo}"
            [schedule]
            phases = [{{ until = "1h", every = "500ms" }}]
            [[checks]]
            name = "release"
            type = "command"
            argv = ["{check}"]
            [alerts]
            timeout = "2s"
            [alerts.telegram]
            api_url = "{fake.url}"
            [chatops]
            operate = ["telegram:{BOB}"]
            """
        self.config = write_config(self.dir, textwrap.dedent(body))
        self.log = self.dir / "run.log"
        with self.log.open("a") as sink:
            self.proc = subprocess.Popen(
                [*HEALER, "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self) -> None:
        stop_healer(self.proc)


class Fleet:
    def __init__(self, dsn: str, fake: ChatFake) -> None:
        self.dsn = dsn
        self.fake = fake
        self.hosts: dict[str, Host] = {}

    def leader(self) -> str | None:
        """The host whose lease is live, by the database's clock (None before the tables exist)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            try:
                row = conn.execute("SELECT host FROM fleet_lease WHERE app = 'shop' AND expires_at > now()").fetchone()
            except psycopg.errors.UndefinedTable:
                return None
        return None if row is None else str(row[0])

    def output(self) -> str:
        return "\n".join(f"--- {h.name}:\n{h.log.read_text()[-3000:]}" for h in self.hosts.values())


@pytest.fixture
def fake() -> Iterator[ChatFake]:
    f = ChatFake().start()
    yield f
    f.stop()


@pytest.fixture
def fleet(postgres_server: PostgresServer, fake: ChatFake, tmp_path: Path) -> Iterator[Fleet]:
    dsn = postgres_server.create_database()
    os.environ.update({"HEALER_STATE_DSN": dsn, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": str(CHAT)})
    f = Fleet(dsn, fake)
    try:
        yield f
    finally:
        for host in f.hosts.values():
            host.stop()
        postgres_server.drop_database(dsn)


def _replies(fake: ChatFake) -> list[str]:
    """healer's answers to commands (its messages that reply to one)."""
    sent = [m for m in fake.calls("sendMessage") if str(m.get("chat_id")) == str(CHAT)]
    return [str(m["text"]) for m in sent if "reply_parameters" in m or "reply_to_message_id" in m]


def _eventually(pred: Callable[[], Any], fleet: Fleet, what: str) -> None:
    assert wait_until(lambda: bool(pred()), WAIT), f"timed out waiting for {what}\n{fleet.output()}"


def test_one_leader_answers_chat_and_each_alert_goes_once(tmp_path: Path, fleet: Fleet, fake: ChatFake) -> None:
    """Two healers share one PostgreSQL and one bot: each one's "started" alert reaches the chat
    once (an outbox row is claimed by one sender), a command is answered once, by the leader
    alone; when the leader stops, the other leads and answers the next command, once."""
    origin = make_repo(tmp_path / "origin")
    for name in ("web-1", "web-2"):
        fleet.hosts[name] = Host(tmp_path, name, origin, fake)

    def started(pid: int) -> list[str]:
        return [str(m["text"]) for m in fake.telegram_messages() if f"started (PID {pid}," in str(m.get("text"))]

    for host in fleet.hosts.values():
        _eventually(lambda h=host: started(h.proc.pid), fleet, f"{host.name}'s start alert")  # type: ignore[misc]
    _eventually(fleet.leader, fleet, "a leader")
    first = fleet.leader()
    assert first is not None

    fake.say(BOB, CHAT, "/status")
    _eventually(lambda: len(_replies(fake)) >= 1, fleet, "the answer to /status")
    time.sleep(3)  # room for a second answer, were a follower polling too
    assert len(_replies(fake)) == 1, _replies(fake)

    fleet.hosts[first].stop()  # a leader that stops hands the lease back
    _eventually(lambda: fleet.leader() not in (None, first), fleet, "the other host leading")
    fake.say(BOB, CHAT, "/status")
    _eventually(lambda: len(_replies(fake)) >= 2, fleet, "the new leader's answer to /status")
    time.sleep(3)
    assert len(_replies(fake)) == 2, _replies(fake)
    for host in fleet.hosts.values():  # each alert once, however many senders share the outbox
        assert len(started(host.proc.pid)) == 1, fleet.output()


@pytest.mark.parametrize("how", ["kill-9", "sigstop"])
def test_a_leader_killed_or_stopped_past_its_lease_is_replaced_and_answers_nothing(
    tmp_path: Path, fleet: Fleet, fake: ChatFake, how: str
) -> None:
    """kill -9 of the leading healer, or SIGSTOP past its lease: the other healer leads and
    answers chat; a stopped leader woken again (SIGCONT) follows, and each command is still
    answered once."""
    origin = make_repo(tmp_path / "origin")
    for name in ("web-1", "web-2"):
        fleet.hosts[name] = Host(tmp_path, name, origin, fake)
    _eventually(fleet.leader, fleet, "a leader")
    first = fleet.leader()
    assert first is not None
    old = fleet.hosts[first].proc
    old.send_signal(signal.SIGKILL if how == "kill-9" else signal.SIGSTOP)
    try:
        _eventually(lambda: fleet.leader() not in (None, first), fleet, "the other host leading")
        fake.say(BOB, CHAT, "/status")
        _eventually(lambda: len(_replies(fake)) >= 1, fleet, "the new leader's answer")
    finally:
        old.send_signal(signal.SIGCONT)
    if how == "sigstop":
        fake.say(BOB, CHAT, "/status")
        _eventually(lambda: len(_replies(fake)) >= 2, fleet, "the answer after the old leader woke")
        time.sleep(3)  # room for a second answer, were the woken healer still polling
        assert len(_replies(fake)) == 2, _replies(fake)
        assert fleet.leader() != first


def test_chat_speaks_for_the_fleet_an_alerts_ack_acks_its_host_and_a_pause_pauses_every_host(
    tmp_path: Path, fleet: Fleet, fake: ChatFake
) -> None:
    """The leader (web-1, healthy) answers for the fleet: the Ack button of the follower's
    (web-2's, failing) incident alert acks web-2's incident, not the leader's own; /pause pauses
    both hosts (each one's `healer status` says so); /status lists both hosts."""
    origin = make_repo(tmp_path / "origin")
    fleet.hosts["web-1"] = Host(tmp_path, "web-1", origin, fake)
    _eventually(lambda: fleet.leader() == "web-1", fleet, "web-1 leading")
    fleet.hosts["web-2"] = Host(tmp_path, "web-2", origin, fake, check="false")
    web1, web2 = (fleet.hosts[h].config for h in ("web-1", "web-2"))

    def alert() -> int | None:
        """The message id of web-2's incident alert, with its buttons."""
        for mid, m in sorted(fake.messages.items()):
            text = str(m.get("text") or "")
            if "Incident opened" in text and "shop on web-2" in text and m.get("reply_markup"):
                return mid
        return None

    _eventually(alert, fleet, "web-2's incident alert")
    mid = alert()
    assert mid is not None
    incident = cli_json(web2, "status")["open_incident"]["id"]
    fake.press(BOB, mid, "Ack")
    _eventually(lambda: "Acknowledged on web-2 by" in str(fake.messages[mid]["text"]), fleet, "the ack")
    assert cli_json(web2, "status")["ack"]["who"] == f"telegram:{BOB}"
    assert cli_json(web1, "status")["ack"] is None
    assert f"incident #{incident}" in str(fake.messages[mid]["text"])

    fake.say(BOB, CHAT, "/pause 10m db migration")
    _eventually(lambda: _replies(fake), fleet, "the answer to /pause")
    assert _replies(fake)[0].startswith("paused on web-1, web-2 until"), _replies(fake)
    for config in (web1, web2):
        assert cli_json(config, "status")["pause"]["reason"] == "db migration"

    fake.say(BOB, CHAT, "/status")
    _eventually(lambda: len(_replies(fake)) >= 2, fleet, "the answer to /status")
    status = _replies(fake)[1]
    assert "fleet of 2, led by web-1" in status and "web-2:" in status and "paused until" in status, status
