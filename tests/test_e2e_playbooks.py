"""End-to-end: an app broken in each of the four ways; `healer check` fails, a real `healer run`
runs the matching playbook, the checks pass again, and `healer history` says what and why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis
from helpers import HEALER, healer, make_repo, write_config
from services import PostgresServer, RedisServer, free_port, start_redis, wait_for_port

from healer.demo import sampleapp

pytestmark = pytest.mark.e2e


@dataclass
class App:
    repo: Path
    port: int
    start: list[str]
    match: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """A factory: the sample app from its git repo, started detached, stopped at the end."""
    apps: list[App] = []
    procs: list[subprocess.Popen[bytes]] = []

    def start(**options: object) -> App:
        repo = make_repo(tmp_path / "app")
        (repo / "app.json").write_text(json.dumps({"version": "1.0", "broken": False}))
        port = free_port()
        argv = sampleapp.serve_argv(repo, port, **options)  # type: ignore[arg-type]
        procs.append(
            subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        assert wait_for_port(port), "the sample app did not start"
        a = App(repo, port, argv, sampleapp.match_text(repo))
        apps.append(a)
        return a

    yield start
    for a in apps:
        for p in psutil.process_iter(["cmdline"]):
            if a.match in " ".join(p.info["cmdline"] or []):
                p.kill()
    for proc in procs:
        proc.kill()
        proc.wait(5)


def config_for(tmp_path: Path, a: App, extra: str) -> Path:
    return write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{a.repo}"
        [schedule]
        phases = [{{ until = "1h", every = "500ms" }}]
        incident_every = "500ms"
        [escalation]
        rollback_after = 50
        repair_grace = "0s"
        [[checks]]
        name = "api"
        type = "http"
        url = "{a.url}/health"
        timeout = "2s"
        samples = 1
        min_latency_increase = "1s"       # these stories are not about latency: a loaded CI machine's blip is not one
        [process]
        manager = "command"
        start = {json.dumps(a.start)}
        match = "{a.match}"
        {extra}
        """,
    )


def repaired_by(config: Path, kind: str, env: dict[str, str] | None = None, timeout: float = 40) -> dict[str, object]:
    """Run `healer run` until a `kind` repair finished; return its history row."""
    p = subprocess.Popen(
        [*HEALER, "--config", str(config), "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rows = json.loads(healer("--config", str(config), "history", "--json").stdout or "[]")
            done = [r for r in rows if r["type"] == "repair" and r["what"] == kind and r["outcome"] != "started"]
            if done:
                return done[0]
            time.sleep(0.3)
        raise AssertionError(f"no {kind} repair within {timeout}s")
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=10)
        assert "Traceback" not in err, err


def assert_story(config: Path, kind: str, symptom: str, env: dict[str, str] | None = None) -> None:
    before = healer("--config", str(config), "check")
    assert before.returncode == 1, before.stdout
    assert symptom in before.stdout
    row = repaired_by(config, kind, env)
    assert row["outcome"] == "ok", row
    assert row["who"] == "loop" and symptom in str(row["why"])
    after = subprocess.run(
        [*HEALER, "--config", str(config), "check"], env=env, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert after.returncode == 0, after.stdout


def test_a_crashed_process_is_restarted(tmp_path: Path, app: Callable[..., App]) -> None:
    """process.down -> process-restart: a new process answers and history says why."""
    a = app()
    config = config_for(tmp_path, a, f'[[checks]]\nname = "web"\ntype = "process"\nmatch = "{a.match}"\ntimeout = "2s"')
    for p in psutil.process_iter(["cmdline"]):
        if a.match in " ".join(p.info["cmdline"] or []):
            p.kill()
            p.wait(5)
    assert_story(config, "process-restart", "process.down")


def test_rate_limited_answers_clear_the_counters(
    tmp_path: Path, app: Callable[..., App], redis_server: RedisServer
) -> None:
    """429s from the app -> rate-limit-clear deletes the counters; the app answers 200 again."""
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    a = app(redis_url=url, rate_limit=1000)
    r = redis.Redis.from_url(url)
    r.set("ratelimit:127.0.0.1", 10**6, ex=120)
    r.set("session:keep", "1")
    config = config_for(tmp_path, a, f'[redis]\nurl = "{url}"')
    assert_story(config, "rate-limit-clear", "http.rate_limited")
    assert r.get("session:keep") == b"1"  # nothing but the rate-limit keys was touched
    r.flushdb()
    r.close()


def test_redis_memory_over_its_limit_flushes_the_cache_db(tmp_path: Path, app: Callable[..., App]) -> None:
    """redis.memory -> redis-flush empties the cache database and leaves the others alone."""
    server = start_redis(tmp_path / "redis")
    try:
        a = app()
        r = redis.Redis(port=server.port, db=1)
        pipe = r.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"cache:{i}", b"x" * 4096)
        pipe.execute()
        keep = redis.Redis(port=server.port, db=0)
        keep.set("user:1", "kept")
        extra = f"""
        [[checks]]
        name = "cache"
        type = "redis"
        max_memory = "8MB"
        timeout = "2s"
        min_latency_increase = "1s"       # as for "api": a PING slowed by a loaded machine is not this story
        [redis]
        url = "redis://127.0.0.1:{server.port}/0"
        cache_db = 1
        """
        config = config_for(tmp_path, a, extra)
        assert_story(config, "redis-flush", "redis.memory")
        assert r.dbsize() == 0 and keep.get("user:1") == b"kept"
        r.close()
        keep.close()
    finally:
        server.stop()


def test_stuck_database_connections_are_reset(
    tmp_path: Path, app: Callable[..., App], postgres_server: PostgresServer
) -> None:
    """postgres.connections -> connection-reset ends the app's stuck backends, not the others'."""
    import psycopg

    a = app()
    with psycopg.connect(postgres_server.dsn, autocommit=True) as admin:
        # the app's own role: healer never ends a superuser's session
        admin.execute("DO $$ BEGIN CREATE ROLE shop LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    app_dsn = postgres_server.dsn.replace("postgres@", "shop@", 1)
    stuck = []
    for _ in range(15):
        c = psycopg.connect(app_dsn, application_name="shop")
        c.execute("SELECT 1")  # now idle in transaction
        stuck.append(c)
    other = psycopg.connect(postgres_server.dsn, application_name="billing")
    other.execute("SELECT 1")
    time.sleep(1.2)
    env = {**os.environ, "DATABASE_URL": postgres_server.dsn}
    extra = """
        [[checks]]
        name = "db"
        type = "postgres"
        max_connections_percent = 10.0
        timeout = "3s"
        min_latency_increase = "1s"       # as for "api": a connect slowed by a loaded machine is not this story
        [postgres]
        dsn_env = "DATABASE_URL"
        application_name = "shop"
        idle_in_transaction = "1s"
    """
    config = config_for(tmp_path, a, extra)
    try:
        os.environ["DATABASE_URL"] = postgres_server.dsn  # for the `healer check` calls
        assert_story(config, "connection-reset", "postgres.connections", env)
        assert all(c.closed or c.broken for c in _probe(stuck))
        assert other.execute("SELECT 1").fetchone() == (1,)  # another application's session survives
    finally:
        for c in [*stuck, other]:
            c.close()


def _probe(conns: list[object]) -> list[object]:
    """Touch each connection so psycopg notices a terminated backend."""
    import contextlib

    import psycopg

    for c in conns:
        with contextlib.suppress(psycopg.Error):
            c.execute("SELECT 1")  # type: ignore[attr-defined]
    return conns
