"""The postgres check against a real PostgreSQL: values, the connections ceiling, no DSN leaks."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from services import PostgresServer, free_port

from healer.model import CheckResult

RunProbe = Callable[..., Awaitable[CheckResult]]


async def test_live_postgres_passes_with_values(run_probe: RunProbe, postgres_server: PostgresServer) -> None:
    """A live PostgreSQL passes with latency and connections in use out of max_connections."""
    os.environ["DATABASE_URL"] = postgres_server.dsn
    r = await run_probe({"type": "postgres"}, postgres={})
    assert r.ok, r.error
    assert r.values["latency_ms"] > 0
    assert r.values["connections"] >= 1  # healer's own
    assert r.values["max_connections"] >= 10
    assert 0 < r.values["connections_percent"] <= 100
    assert r.latency is not None


async def test_connections_over_the_ceiling_is_a_symptom(run_probe: RunProbe, postgres_server: PostgresServer) -> None:
    """Connections in use over max_connections_percent fail with `postgres.connections`."""
    os.environ["HEALER_TEST_DSN"] = postgres_server.dsn
    r = await run_probe({"type": "postgres", "dsn_env": "HEALER_TEST_DSN", "max_connections_percent": 0.1})
    assert not r.ok
    assert r.symptoms == ("postgres.connections",)
    assert r.error and "connections in use" in r.error


async def test_unset_dsn_is_a_clear_failure(run_probe: RunProbe) -> None:
    """No DSN in the environment fails with an error naming the variable."""
    os.environ.pop("DATABASE_URL", None)
    r = await run_probe({"type": "postgres"}, postgres={})
    assert not r.ok
    assert r.symptoms == ("postgres.error",)
    assert r.error == "environment variable DATABASE_URL is not set"


async def test_unreachable_server_is_down_without_leaking_the_password(run_probe: RunProbe) -> None:
    """A server that is not there is `postgres.down`, and the DSN's password is not in the error."""
    os.environ["DATABASE_URL"] = f"postgresql://app:hunter2-pw@127.0.0.1:{free_port()}/shop"
    r = await run_probe({"type": "postgres", "timeout": "3s"}, postgres={})
    assert not r.ok
    assert r.symptoms == ("postgres.down",)
    assert r.error and "hunter2-pw" not in r.error
    assert "127.0.0.1" in r.error


async def test_bad_database_fails_without_leaking_the_password(
    run_probe: RunProbe, postgres_server: PostgresServer
) -> None:
    """A refused connection (no such database) names the reason but never the password."""
    os.environ["DATABASE_URL"] = f"postgresql://postgres:hunter2-pw@127.0.0.1:{postgres_server.port}/no_such_db"
    r = await run_probe({"type": "postgres"}, postgres={})
    assert r.symptoms == ("postgres.down",)
    assert r.error and "no_such_db" in r.error and "hunter2-pw" not in r.error
