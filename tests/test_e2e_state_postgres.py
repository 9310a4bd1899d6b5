"""End-to-end: a real `healer run` keeping its state in a real PostgreSQL ([state] dsn_env),
`healer status` / `healer history` reading it from there, and the server restarting under it (I/O)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import HEALER, healer, make_repo, write_config
from services import HttpApp, PostgresServer, start_postgres, wait_until

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret-in-the-dsn"  # trust auth lets any password in; it must show up nowhere


@pytest.fixture
def state_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for the test, its DSN (with a password) in $HEALER_STATE_DSN."""
    dsn = postgres_server.create_database()
    os.environ["HEALER_STATE_DSN"] = dsn.replace("postgres@", f"postgres:{PASSWORD}@")
    yield dsn
    postgres_server.drop_database(dsn)


def _config(tmp_path: Path, url: str) -> Path:
    repo = make_repo(tmp_path / "app")
    return write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [state]
        dsn_env = "HEALER_STATE_DSN"
        [app]
        name = "shop"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "1h", every = "300ms" }}]
        incident_every = "300ms"
        [[checks]]
        name = "api"
        type = "http"
        url = "{url}/health"
        timeout = "1s"
        samples = 1
    """,
    )


def _status(config: Path) -> dict[str, object]:
    proc = healer("--config", str(config), "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_healer_run_keeps_its_state_in_postgresql(
    tmp_path: Path, http_app: Callable[..., HttpApp], state_dsn: str
) -> None:
    """The loop records its cycles and its failing streak in PostgreSQL, status and history read
    them back from there, no healer.db is made, and the DSN's password is in no output."""
    app = http_app("healthy")
    config = _config(tmp_path, app.url)
    run = subprocess.Popen([*HEALER, "--config", str(config), "run"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert wait_until(lambda: (_status(config).get("last_cycle") or {}).get("ok") is True, timeout=60)
        app.behaviour = "error500"
        assert wait_until(lambda: int(_status(config)["consecutive_failures"]) >= 2, timeout=60)  # type: ignore[call-overload]
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err[-2000:]
    assert PASSWORD not in out + err
    history = healer("--config", str(config), "history", "--json", "--since", "1h")
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    checks = [r for r in rows if r["type"] == "check"]
    assert any(r["ok"] for r in checks) and any(not r["ok"] for r in checks)
    assert any(r["type"] == "alert" for r in rows)  # "healer started", from the outbox in PostgreSQL
    with psycopg.connect(state_dsn) as conn:
        cycles = conn.execute("SELECT COUNT(*) FROM cycles").fetchone()
        versions = dict(conn.execute("SELECT component, version FROM schema_version").fetchall())
    assert cycles is not None and cycles[0] == len(checks)
    assert set(versions) == {"store", "outbox"}
    assert not (tmp_path / "state" / "healer.db").exists()


def test_an_unset_dsn_variable_exits_2_with_one_line_and_makes_nothing(tmp_path: Path) -> None:
    """`healer run` with [state] dsn_env naming an unset variable: exit 2, one line, no state dir."""
    config = _config(tmp_path, "http://127.0.0.1:9")
    os.environ.pop("HEALER_STATE_DSN", None)
    proc = healer("--config", str(config), "run")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"healer: {config}: state.dsn_env: environment variable HEALER_STATE_DSN is not set"
        " (it holds the PostgreSQL DSN)"
    ]
    assert not (tmp_path / "state").exists()


def test_healer_run_rides_out_its_postgresql_restarting(tmp_path: Path, http_app: Callable[..., HttpApp]) -> None:
    """PostgreSQL stops under a running healer and comes back: healer keeps watching from memory,
    reconnects, writes what it kept, says the store works again, and goes on recording there."""
    server = start_postgres()
    try:
        os.environ["HEALER_STATE_DSN"] = server.dsn
        config = _config(tmp_path, http_app("healthy").url)
        run = subprocess.Popen([*HEALER, "--config", str(config), "run"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)  # fmt: skip
        try:
            assert wait_until(lambda: (_status(config).get("last_cycle") or {}).get("ok") is True, timeout=60)
            server.halt()
            time.sleep(2)  # a few cycles (300 ms apart) find no server
            assert run.poll() is None
            server.start()
            seen = _status(config)["last_cycle"]["at"]  # type: ignore[index]
            assert wait_until(lambda: _status(config)["last_cycle"]["at"] > seen, timeout=60)  # type: ignore[index]
        finally:
            run.send_signal(signal.SIGTERM)
            _out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err[-2000:]
        assert '"event": "store.unwritable"' in err and '"event": "store.recovered"' in err
    finally:
        server.stop()
