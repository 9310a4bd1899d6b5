"""The redis check against real redis-servers: values, ceilings, a dead port, passwords."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from services import RedisServer, free_port, start_redis

from healer.model import CheckResult

RunProbe = Callable[..., Awaitable[CheckResult]]


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that requires a password and has a maxmemory."""
    server = start_redis(tmp_path / "redis", args=("--requirepass", "pw-s3cret", "--maxmemory", "4mb"))
    yield server
    server.stop()


async def test_live_redis_passes_with_values(run_probe: RunProbe, redis_server: RedisServer) -> None:
    """A live Redis passes with PING latency, used memory and clients in the values."""
    r = await run_probe({"type": "redis"}, redis={"url": redis_server.url})
    assert r.ok, r.error
    assert 0 < r.values["latency_ms"] < 1000
    assert r.values["used_memory_mb"] > 0
    assert r.values["clients"] >= 1
    assert "memory_percent" not in r.values  # no maxmemory set
    assert r.latency is not None


async def test_check_url_overrides_the_section(run_probe: RunProbe, redis_server: RedisServer) -> None:
    """The check's own url wins over `[redis] url`."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    r = await run_probe({"type": "redis", "url": redis_server.url}, redis={"url": dead})
    assert r.ok, r.error


async def test_dead_port_is_down(run_probe: RunProbe) -> None:
    """Nothing listening is `redis.down`, quickly (no client-side retries)."""
    r = await run_probe({"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "timeout": "5s"})
    assert not r.ok
    assert r.symptoms == ("redis.down",)
    assert r.error and "cannot connect" in r.error


async def test_ceilings_give_symptoms(run_probe: RunProbe, redis_server: RedisServer) -> None:
    """Used memory over max_memory and clients over max_clients are symptoms."""
    with socket.create_connection(("127.0.0.1", redis_server.port)):  # one more client
        r = await run_probe({"type": "redis", "url": redis_server.url, "max_memory": "1KB",
                             "max_clients": 1})  # fmt: skip
    assert not r.ok
    assert r.symptoms == ("redis.memory", "redis.clients")
    assert r.values["clients"] >= 2


async def test_password_from_the_environment(run_probe: RunProbe, locked_redis: RedisServer) -> None:
    """The password comes from the variable named by password_env; memory % uses maxmemory."""
    os.environ["HEALER_TEST_REDIS_PW"] = "pw-s3cret"
    section = {"url": locked_redis.url, "password_env": "HEALER_TEST_REDIS_PW"}
    r = await run_probe({"type": "redis", "max_memory_percent": 0.1}, redis=section)
    assert r.symptoms == ("redis.memory",), r.error
    assert 0 < r.values["memory_percent"] < 100


async def test_wrong_password_fails_without_showing_it(run_probe: RunProbe, locked_redis: RedisServer) -> None:
    """A refused password is `redis.error`, and the password is not in the error."""
    os.environ["HEALER_TEST_REDIS_PW"] = "wrong-pw-123"
    section = {"url": locked_redis.url, "password_env": "HEALER_TEST_REDIS_PW"}
    r = await run_probe({"type": "redis"}, redis=section)
    assert not r.ok
    assert r.symptoms == ("redis.error",)
    assert r.error and "wrong-pw-123" not in r.error


async def test_url_password_never_appears_in_the_error(run_probe: RunProbe) -> None:
    """A password inside the URL is stripped from the error of a failed check."""
    r = await run_probe({"type": "redis", "url": f"redis://:hunter2-pw@127.0.0.1:{free_port()}/0"})
    assert r.symptoms == ("redis.down",)
    assert r.error and "hunter2-pw" not in r.error and "127.0.0.1" in r.error
