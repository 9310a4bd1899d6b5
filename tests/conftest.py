"""Shared fixtures: real services on loopback (HTTP apps, redis-server, PostgreSQL) and a clean
environment for every test (I/O).

    free_port()        -> a free TCP port on 127.0.0.1 (a plain function, also importable)
    http_app(...)      -> HttpApp: .url (base URL), .behaviour (switchable), .delay, .requests
    redis_server       -> RedisServer: .port, .url        (session-wide)
    postgres_server    -> PostgresServer: .port, .dsn     (session-wide)
    state_db           -> StateDb: healer's state, once on a SQLite file and once on a fresh
                          PostgreSQL database (its DSN in $HEALER_TEST_STATE_DSN)
    run_probe          -> `await run_probe({"type": "http", "url": ...}, redis={...})`: builds a
                          validated Config with that one check and runs it once -> CheckResult
    pm2                -> Pm2: a private PM2 daemon (own PM2_HOME); .start(name, argv, cwd) -> pid,
                          .pid(name), .restart(name), .env and .process_toml(name) for healer;
                          `pm2 kill` at teardown
    supervisord(...)   -> Supervisord: `supervisord("app", argv, cwd)` runs a private supervisord
                          with that one program started; .pid(), .restart(), .control_argv, .env,
                          .process_toml() for healer; shut down at teardown
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from services import (
    HttpApp,
    Pm2,
    PostgresServer,
    RedisServer,
    Supervisord,
    free_port,
    start_postgres,
    start_redis,
    start_supervisord,
)

from healer.config import StateDb, parse_config
from healer.model import CheckResult, Reference
from healer.redact import REDACTOR

__all__ = ["free_port"]

# Modules whose module-scoped fixture is costly (the demo's whole story, a Prometheus with rates,
# the judgement replay): under pytest-xdist each runs whole on one worker, so that fixture runs
# once, not once per worker. Every other test is scheduled on its own.
ONE_WORKER_MODULES = ("tests/test_demo.py", "tests/test_checks_prometheus.py", "tests/test_bench_judgement.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Load scheduling, one test at a time, except ONE_WORKER_MODULES, each sent as one unit.

    Not xdist's `--dist loadgroup` with `xdist_group` marks: on pytest 9.2 it silently groups
    nothing (pytest-xdist issue 1386, open), and those modules' fixtures ran on every worker."""
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneWorkerModules(config, log)


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    """Whatever a test does to os.environ is undone after it (httpx's `clean_environ`)."""
    saved = os.environ.copy()
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def clean_redactor() -> Iterator[None]:
    """Secrets a test teaches the process-wide redactor are forgotten after it."""
    yield
    REDACTOR.reset()


@pytest.fixture
def http_app() -> Iterator[Callable[..., HttpApp]]:
    """A factory: `http_app("flaky", fail_ratio=1/3)` starts a real HTTP app on a free port."""
    apps: list[HttpApp] = []

    def start(behaviour: str = "healthy", **options: Any) -> HttpApp:
        app = HttpApp(behaviour, **options)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (no persistence); never the system's."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (trust auth, user postgres); never the system's."""
    server = start_postgres()
    yield server
    server.stop()


STATE_DSN_ENV = "HEALER_TEST_STATE_DSN"


@pytest.fixture(params=["sqlite", "postgres"])
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateDb]:
    """healer's state on each backend: a SQLite file in tmp_path, or a database of its own on the
    session's PostgreSQL, dropped after the test."""
    path = tmp_path / "state" / "healer.db"
    if request.param == "sqlite":
        yield StateDb(path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    dsn = server.create_database()
    os.environ[STATE_DSN_ENV] = dsn
    try:
        yield StateDb(path, STATE_DSN_ENV)
    finally:
        server.drop_database(dsn)


@pytest.fixture
def pm2() -> Iterator[Pm2]:
    """A PM2 daemon of our own (private PM2_HOME), killed with its apps after the test."""
    manager = Pm2()
    try:
        yield manager
    finally:
        manager.kill()


@pytest.fixture
def supervisord() -> Iterator[Callable[..., Supervisord]]:
    """A factory: `supervisord("app", argv, cwd)` runs a supervisord of our own with that one
    program (autorestart=false unless `options` says otherwise); each is shut down after the test."""
    started: list[Supervisord] = []

    def start(name: str, argv: Sequence[str], cwd: Path | None = None, **kwargs: Any) -> Supervisord:
        server = start_supervisord(name, argv, cwd, **kwargs)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def run_probe() -> Callable[..., Awaitable[CheckResult]]:
    """Run one check, given as its healer.toml table (name defaults to "c"), through run_check;
    `reference`: the release before, as the loop hands it to the probes."""
    from dataclasses import replace

    from healer.checks import probe_context, run_check

    async def run(check: dict[str, Any], reference: Reference | None = None, **sections: Any) -> CheckResult:
        config = parse_config({"checks": [{"name": "c", **check}], **sections}, Path("healer.toml"))
        async with probe_context(config) as ctx:
            return await run_check(replace(ctx, reference=reference), config.checks[0])

    return run
