"""End-to-end: a real `healer run` keeping its state in a real PostgreSQL ([state] dsn_env),
`healer status` / `healer history` reading it from there, and the server restarting under it (I/O)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import HEALER, healer, make_repo, write_config
from services import HttpApp, PostgresServer, free_port, start_postgres, wait_until

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


FLEET = """
[fleet]
host = "web-1"
lease = "4s"
"""


def _start(config: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """`healer run`, its log lines (stderr) in `log`."""
    with log.open("ab") as f:
        return subprocess.Popen([*HEALER, "--config", str(config), "run"], stdout=f, stderr=f,
                                stdin=subprocess.DEVNULL, env={**os.environ, **env})  # fmt: skip


def _events(log: Path, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]


@pytest.mark.parametrize("fleet", [False, True], ids=["store", "fleet"])
def test_healer_run_waits_for_a_postgresql_that_is_down_at_start(
    tmp_path: Path, http_app: Callable[..., HttpApp], fleet: bool
) -> None:
    """PostgreSQL is down when healer starts (a host and its database rebooting together): healer
    says what it waits for and does not exit; once the server is up it records its cycles there
    (in a fleet, it also joins and leads). The DSN's password is in no line."""
    server = start_postgres()
    try:
        server.halt()
        os.environ["HEALER_STATE_DSN"] = server.dsn.replace("postgres@", f"postgres:{PASSWORD}@")
        config = _config(tmp_path, http_app("healthy").url)
        if fleet:
            config.write_text(config.read_text() + FLEET)
        log = tmp_path / "healer.log"
        run = _start(config, log)
        try:
            assert wait_until(lambda: len(_events(log, "healer.waiting")) >= 2, timeout=120), log.read_text()
            assert run.poll() is None
            server.start()
            assert wait_until(lambda: (_status(config).get("last_cycle") or {}).get("ok") is True, timeout=120)
            if fleet:
                with psycopg.connect(server.dsn) as conn:
                    assert wait_until(lambda: conn.execute("SELECT host FROM fleet_lease").fetchall() == [("web-1",)],
                                      timeout=60)  # fmt: skip
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(timeout=60)
        assert run.returncode == 0, log.read_text()[-2000:]
        waited = _events(log, "healer.waiting")
        assert {e["level"] for e in waited} == {"warning"}
        assert all(e["waiting_for"] == "the PostgreSQL database of $HEALER_STATE_DSN" for e in waited)
        assert all("Connection refused" in str(e["error"]) for e in waited), waited
        assert [e["retry_in_s"] for e in waited[:3]] == [1, 2, 4][: len(waited[:3])]
        assert len(_events(log, "healer.waited")) == 1 and len(_events(log, "healer.started")) == 1
        assert PASSWORD not in log.read_text()
    finally:
        server.stop()


def test_a_stop_signal_while_waiting_for_postgresql_ends_healer_cleanly(tmp_path: Path) -> None:
    """SIGTERM while healer waits for its PostgreSQL: exit 0, a normal stop (systemd does not restart
    it), having told systemd it is up (READY=1) and, in its status, what it waits for."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    os.environ["HEALER_STATE_DSN"] = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/healer"
    config = _config(tmp_path, "http://127.0.0.1:9")
    log = tmp_path / "healer.log"
    run = _start(config, log, NOTIFY_SOCKET=str(sock_path))
    try:
        got = [sock.recv(4096).decode(), sock.recv(4096).decode()]
        assert got[0] == "READY=1"
        assert got[1].startswith("STATUS=waiting for PostgreSQL: postgresql 127.0.0.1:"), got
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        sock.close()
    assert [e["signal"] for e in _events(log, "healer.stopped")] == ["SIGTERM"]
    assert _events(log, "healer.started") == []
    assert PASSWORD not in log.read_text() + "".join(got)


@pytest.mark.parametrize("fleet", [False, True], ids=["store", "fleet"])
def test_a_database_that_does_not_exist_is_a_config_error_not_a_wait(
    tmp_path: Path, postgres_server: PostgresServer, fleet: bool
) -> None:
    """A DSN naming a database the server does not have: exit 2 and one line at once, as before
    (waiting would hide a mistake a person must fix)."""
    os.environ["HEALER_STATE_DSN"] = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{postgres_server.port}/no_such_db"
    config = _config(tmp_path, "http://127.0.0.1:9")
    if fleet:
        config.write_text(config.read_text() + FLEET)
    proc = healer("--config", str(config), "run")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"healer: postgresql 127.0.0.1:{postgres_server.port}/no_such_db: cannot ")
    assert line.endswith('database "no_such_db" does not exist'), line
    assert PASSWORD not in proc.stderr


def test_status_and_history_with_postgresql_down_say_so_in_one_line(tmp_path: Path) -> None:
    """`healer status` and `healer history` against a PostgreSQL that does not answer: one line,
    a non-zero exit, at once (they never wait)."""
    os.environ["HEALER_STATE_DSN"] = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/healer"
    config = _config(tmp_path, "http://127.0.0.1:9")
    for command in (["status"], ["history", "--since", "1h"]):
        proc = healer("--config", str(config), *command)
        assert proc.returncode != 0
        [line] = proc.stderr.splitlines()
        assert "Connection refused" in line and PASSWORD not in line, line
