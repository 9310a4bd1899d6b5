"""systemd notify on real unix datagram sockets, the watchdog pinger, and Liveness."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from healer import notify as notify_mod
from healer.config import parse_config
from healer.notify import (
    MIN_STALL_AFTER,
    Liveness,
    action_budget,
    notify,
    stall_limit,
    watchdog_interval,
    watchdog_pinger,
)


@pytest.fixture(autouse=True)
def _reset_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with notify's log-once flag down."""
    monkeypatch.setattr(notify_mod, "_warned", False)


@pytest.fixture
def path_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a short filesystem path (sun_path holds 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="hn-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace; returns it and its `@name` spelling."""
    name = f"healer-test-{uuid.uuid4().hex[:12]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield sock, "@" + name
    sock.close()


def _drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out: list[str] = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_notify_messages_arrive_on_a_path_socket(
    path_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """READY, WATCHDOG, STATUS and STOPPING arrive as datagrams on NOTIFY_SOCKET's path."""
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    for message in ("READY=1", "WATCHDOG=1", "STATUS=phase 1/3, healthy", "STOPPING=1"):
        assert notify(message) is True
    got = [sock.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1", "WATCHDOG=1", "STATUS=phase 1/3, healthy", "STOPPING=1"]


def test_notify_messages_arrive_on_an_abstract_socket(
    abstract_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leading @ in NOTIFY_SOCKET names the abstract namespace (a NUL byte on the wire)."""
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert notify("READY=1") is True
    assert sock.recv(4096) == b"READY=1"


def test_notify_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside systemd (no NOTIFY_SOCKET) nothing is sent and nothing fails."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_to_a_missing_socket_logs_once_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket that is gone costs a message and one log line, not an exception."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/tmp/healer-no-such-dir/notify")
    with caplog.at_level("WARNING", logger="healer.notify"):
        assert notify("WATCHDOG=1") is False
        assert notify("WATCHDOG=1") is False
    assert [r.getMessage() for r in caplog.records].count("notify.failed") == 1


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        pytest.param("120000000", None, timedelta(seconds=120), id="ours"),
        pytest.param("120000000", "self", timedelta(seconds=120), id="pid-is-us"),
        pytest.param("120000000", "1", None, id="pid-is-another-process"),
        pytest.param(None, None, None, id="unset"),
        pytest.param("0", None, None, id="zero"),
        pytest.param("soon", None, None, id="garbage"),
    ],
)
def test_watchdog_interval_reads_watchdog_usec(
    usec: str | None, pid: str | None, expected: timedelta | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_USEC is the interval, unless WATCHDOG_PID names another process."""
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected


async def test_pinger_pings_while_alive_and_stops_when_the_loop_hangs(
    abstract_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG=1 goes out at half the interval while alive(); none once alive() is false."""
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 100 ms: a ping every 50 ms
    alive = True
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_pinger(stop, lambda: alive))
    await asyncio.sleep(0.3)
    before = _drain(sock)
    assert before.count("WATCHDOG=1") >= 3
    alive = False
    await asyncio.sleep(0.3)
    after = _drain(sock)
    assert "WATCHDOG=1" not in after
    assert any(m.startswith("STATUS=loop stalled") for m in after)
    alive = True
    await asyncio.sleep(0.2)
    assert "WATCHDOG=1" in _drain(sock)
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_pinger_returns_at_once_without_a_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WATCHDOG_USEC: the pinger has nothing to do and ends."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(watchdog_pinger(asyncio.Event(), lambda: True), 1)


async def test_pinger_treats_a_failing_alive_as_a_hang(
    abstract_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception from alive() withholds the ping rather than crash the pinger."""
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)

    def broken() -> bool:
        raise RuntimeError("boom")

    stop = asyncio.Event()
    task = asyncio.create_task(watchdog_pinger(stop, broken, interval=timedelta(milliseconds=100)))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert "WATCHDOG=1" not in _drain(sock)


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_liveness_goes_stale_after_stall_after_without_a_beat() -> None:
    """Alive up to `stall_after` after the last beat, not after; a beat revives it."""
    mono = FakeMonotonic()
    live = Liveness(timedelta(seconds=60), monotonic=mono)
    assert live.is_alive()
    mono.t += 60
    assert live.is_alive()
    mono.t += 0.5
    assert not live.is_alive()
    assert live.age() == timedelta(seconds=60.5)
    live.beat()
    assert live.is_alive()
    assert live.beats == 1


def test_liveness_busy_covers_a_long_action_up_to_its_limit() -> None:
    """Inside busy(limit) the loop is alive without beats until the limit, then not."""
    mono = FakeMonotonic()
    live = Liveness(timedelta(seconds=60), monotonic=mono)
    with live.busy(timedelta(minutes=10)):
        mono.t += 9 * 60
        assert live.is_alive()
        mono.t += 61
        assert not live.is_alive()
    assert live.is_alive()  # leaving the block is progress


def test_stall_limit_and_action_budget_follow_the_config(tmp_path: Path) -> None:
    """The stall limit doubles the slowest check plus overhead; a rollback's budget covers its
    commands and verifications."""
    config = parse_config(
        {
            "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:1/", "timeout": "40s"}],
            "rollback": {"after": [["true"], ["true"]], "command_timeout": "5m"},
        },
        tmp_path / "healer.toml",
    )
    assert stall_limit(config) == 2 * (timedelta(seconds=40) + timedelta(seconds=10))
    # (2 commands + 2 git steps) * 5m + 3 * (verify_grace 5s + 40s + 1s)
    assert action_budget(config) == timedelta(minutes=20) + 3 * timedelta(seconds=46)
    small = parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:1/"}]}, tmp_path / "healer.toml"
    )
    assert stall_limit(small) == MIN_STALL_AFTER
