"""connection-reset against a real PostgreSQL: only the app's own stuck backends are ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from services import PostgresServer

from healer.actions import postgres as pg_actions
from healer.actions.postgres import PostgresTerminateStep
from healer.config import Config, parse_config
from healer.errors import ActionError

STEP = PostgresTerminateStep(action="postgres.terminate_backends")
APP_ROLE = "shop_app"
OTHER_ROLE = "report_app"


def make_config(tmp_path: Path, **section: Any) -> Config:
    return parse_config(
        {
            "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}],
            "postgres": {"dsn_env": "TEST_PG_DSN", "idle_in_transaction": "100ms", **section},
        },
        tmp_path / "healer.toml",
    )


def dsn_for(server: PostgresServer, user: str) -> str:
    return f"postgresql://{user}@127.0.0.1:{server.port}/postgres"


@pytest.fixture(scope="session")
def roles(postgres_server: PostgresServer) -> PostgresServer:
    """Two ordinary login roles (the app's and another's); APP_ROLE may signal backends."""
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        for role in (APP_ROLE, OTHER_ROLE):
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT pg_signal_backend TO {APP_ROLE}")
    return postgres_server


Open = Callable[..., Awaitable[psycopg.AsyncConnection[Any]]]


@pytest.fixture
async def backend(roles: PostgresServer) -> AsyncIterator[Open]:
    """Opens real client sessions: `await backend("shop", stuck=True, user=...)`; closes them after."""
    conns: list[psycopg.AsyncConnection[Any]] = []

    async def open_(app: str, *, stuck: bool = False, user: str = APP_ROLE) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(dsn_for(roles, user), application_name=app, autocommit=not stuck)
        conns.append(conn)
        await conn.execute("SELECT 1")  # with autocommit off this opens a transaction: idle in transaction
        return conn

    yield open_
    for c in conns:
        with contextlib.suppress(psycopg.Error):
            await c.close()


async def alive(server: PostgresServer, *conns: psycopg.AsyncConnection[Any]) -> list[bool]:
    """Whether each session's backend still exists, asked from a separate superuser session."""
    pids = [c.info.backend_pid for c in conns]
    async with await psycopg.AsyncConnection.connect(server.dsn, autocommit=True) as admin:
        cur = await admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
        found = {r[0] for r in await cur.fetchall()}
    return [p in found for p in pids]


async def test_stuck_ends_only_the_apps_idle_in_transaction_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: PostgresServer, backend: Open
) -> None:
    """terminate = "stuck": the app's idle-in-transaction session goes; its idle one, another
    application's stuck one and a superuser's stuck one stay."""
    stuck = await backend("shop", stuck=True)
    idle = await backend("shop")
    other = await backend("other", stuck=True)
    other_role = await backend("other", stuck=True, user=OTHER_ROLE)
    superuser = await backend("shop", stuck=True, user="postgres")
    await asyncio.sleep(0.3)  # older than idle_in_transaction (100ms)
    monkeypatch.setenv("TEST_PG_DSN", roles.dsn)
    detail = await pg_actions.terminate_backends(STEP, make_config(tmp_path, application_name="shop"))
    assert detail == f"terminated 1 stuck backend of 'shop' (pids {stuck.info.backend_pid})"
    assert await alive(roles, stuck, idle, other, other_role, superuser) == [False, True, True, True, True]


async def test_stuck_leaves_a_transaction_younger_than_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: PostgresServer, backend: Open
) -> None:
    """A transaction idle for less than idle_in_transaction is a request in flight: it stays."""
    fresh = await backend("shop", stuck=True)
    monkeypatch.setenv("TEST_PG_DSN", roles.dsn)
    config = make_config(tmp_path, application_name="shop", idle_in_transaction="1h")
    assert await pg_actions.terminate_backends(STEP, config) == "terminated 0 stuck backends of 'shop'"
    assert await alive(roles, fresh) == [True]


async def test_all_ends_every_app_session_but_never_others_nor_healers_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: PostgresServer, backend: Open
) -> None:
    """terminate = "all": both "shop" sessions go; another application's and one named
    "healer" stay."""
    stuck = await backend("shop", stuck=True)
    idle = await backend("shop")
    other = await backend("other", stuck=True)
    monkeypatch.setenv("TEST_PG_DSN", dsn_for(roles, APP_ROLE))
    healer_named = await backend("healer")
    config = make_config(tmp_path, application_name="shop", terminate="all")
    detail = await pg_actions.terminate_backends(STEP, config)
    assert detail.startswith("terminated 2 backends of 'shop'")
    assert await alive(roles, stuck, idle, other, healer_named) == [False, False, True, True]


async def test_healer_never_ends_its_own_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: PostgresServer, backend: Open
) -> None:
    """With application_name = "healer" and a role that may signal, healer's own session is
    excluded by pg_backend_pid() and the action still reports."""
    namesake = await backend("healer")
    monkeypatch.setenv("TEST_PG_DSN", dsn_for(roles, APP_ROLE))
    config = make_config(tmp_path, application_name="healer", terminate="all")
    detail = await pg_actions.terminate_backends(STEP, config)
    assert detail == f"terminated 1 backend of 'healer' (pids {namesake.info.backend_pid})"


async def test_database_and_user_narrow_the_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: PostgresServer, backend: Open
) -> None:
    """With [postgres] user set, a "shop" session of another role is not the app's."""
    mine = await backend("shop", stuck=True)
    theirs = await backend("shop", stuck=True, user=OTHER_ROLE)
    await asyncio.sleep(0.3)
    monkeypatch.setenv("TEST_PG_DSN", roles.dsn)
    config = make_config(tmp_path, application_name="shop", user=APP_ROLE, database="postgres")
    assert (await pg_actions.terminate_backends(STEP, config)).startswith("terminated 1 stuck backend")
    assert await alive(roles, mine, theirs) == [False, True]
    config = make_config(tmp_path, application_name="shop", database="elsewhere")
    assert (await pg_actions.terminate_backends(STEP, config)).startswith("terminated 0")


async def test_the_step_overrides_the_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roles: PostgresServer, backend: Open
) -> None:
    """A playbook step's `terminate = "all"` wins over [postgres] terminate."""
    idle = await backend("shop")
    monkeypatch.setenv("TEST_PG_DSN", roles.dsn)
    step = PostgresTerminateStep(action="postgres.terminate_backends", terminate="all")
    assert (await pg_actions.terminate_backends(step, make_config(tmp_path, application_name="shop"))).startswith(
        "terminated 1 backend"
    )
    assert await alive(roles, idle) == [False]


def test_without_application_name_it_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whose backends to end must be configured; nothing runs without it."""
    monkeypatch.setenv("TEST_PG_DSN", "postgresql://x@127.0.0.1:1/x")
    problems = pg_actions.problems(STEP, make_config(tmp_path))
    assert problems == [
        "postgres.terminate_backends: refusing to run without [postgres] application_name "
        "(whose backends it may end; other applications' are never touched)"
    ]
    with pytest.raises(ActionError, match="refusing to run without"):
        asyncio.run(pg_actions.terminate_backends(STEP, make_config(tmp_path)))


async def test_an_unreachable_database_is_an_action_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused becomes ActionError naming host and port, never the DSN's password."""
    from services import free_port

    monkeypatch.setenv("TEST_PG_DSN", f"postgresql://shop:pg-s3cret@127.0.0.1:{free_port()}/shop")
    with pytest.raises(ActionError) as err:
        await pg_actions.terminate_backends(STEP, make_config(tmp_path, application_name="shop", timeout="2s"))
    assert "pg-s3cret" not in str(err.value) and "127.0.0.1" in str(err.value)
