"""`[fleet]` in healer.toml and `healer status --fleet`: real `healer run` processes, one per
"host", sharing a real PostgreSQL; the registry and the lease read back through the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import HEALER, healer, make_repo, write_config
from services import HttpApp, PostgresServer, start_pgbouncer, wait_until

pytestmark = pytest.mark.e2e

WAIT = 90.0


def fleet_config(directory: Path, url: str, app: str, host: str, *, state: bool = True) -> Path:
    repo = make_repo(directory / "app")
    state_section = '[state]\ndsn_env = "HEALER_STATE_DSN"' if state else ""
    return write_config(
        directory,
        f"""
        state_dir = "state"
        [app]
        name = "{app}"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "1h", every = "300ms" }}]
        [[checks]]
        name = "api"
        type = "http"
        url = "{url}/health"
        timeout = "1s"
        samples = 1
        {state_section}
        [fleet]
        host = "{host}"
        lease = "3s"
    """,
    )


@pytest.fixture
def runs() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(config: Path) -> subprocess.Popen[str]:
        with open(config.parent / "run.log", "w") as log:
            p = subprocess.Popen(
                [*HEALER, "--config", str(config), "run"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def status(config: Path) -> dict[str, Any]:
    proc = healer("--config", str(config), "status", "--fleet", "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_a_fleet_without_a_state_database_is_one_config_error(tmp_path: Path) -> None:
    """[fleet] needs [state] dsn_env: one line naming both, exit 2."""
    config = fleet_config(tmp_path, "http://127.0.0.1:9", "shop", "web-1", state=False)
    proc = healer("--config", str(config), "status", "--fleet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"healer: {config}: fleet: expected [state] dsn_env too (the fleet shares its state in PostgreSQL)"
    ]


def test_status_fleet_shows_every_host_and_who_leads(
    tmp_path: Path,
    http_app: Callable[..., HttpApp],
    postgres_server: PostgresServer,
    runs: Callable[[Path], subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two `healer run`s of one app: both hosts listed with their release and health, one of
    them leading; SIGTERM of the leader hands the lease to the other."""
    monkeypatch.setenv("HEALER_STATE_DSN", postgres_server.dsn)
    app = f"shop-{uuid.uuid4().hex[:6]}"
    url = http_app().url
    configs = {h: fleet_config(tmp_path / h, url, app, h) for h in ("web-1", "web-2")}
    procs = {h: runs(c) for h, c in configs.items()}

    def settled() -> dict[str, Any] | None:
        data = status(configs["web-1"])
        hosts = data["hosts"]
        ready = len(hosts) == 2 and all(h["healthy"] and h["release"] for h in hosts)
        return data if ready and data["leader"] and data["leader"]["live"] else None

    assert wait_until(lambda: settled() is not None, WAIT), [
        (c.parent / "run.log").read_text() for c in configs.values()
    ]
    data = settled()
    assert data is not None and data["app"] == app
    leader = data["leader"]["host"]
    assert [h["host"] for h in data["hosts"] if h["leads"]] == [leader]
    text = healer("--config", str(configs["web-2"]), "status", "--fleet")
    assert text.returncode == 0, text.stderr
    assert f"{leader} leads since" in text.stdout and f"{leader} (leader)" in text.stdout
    assert "web-1" in text.stdout and "web-2" in text.stdout and "healthy" in text.stdout

    procs[leader].send_signal(signal.SIGTERM)
    assert procs[leader].wait(timeout=30) == 0
    other = next(h for h in procs if h != leader)

    def handed_over() -> bool:
        lead = status(configs[other])["leader"]
        return bool(lead and lead["live"] and lead["host"] == other and lead["epoch"] > data["leader"]["epoch"])

    assert wait_until(handed_over, WAIT), status(configs[other])


def test_healer_run_behind_a_transaction_pooler_exits_2_saying_why(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`healer run` with [fleet] through a transaction-pooling pgbouncer: one line, exit 2."""
    bouncer = start_pgbouncer(postgres_server, "transaction")
    try:
        monkeypatch.setenv("HEALER_STATE_DSN", bouncer.dsn)
        config = fleet_config(tmp_path, "http://127.0.0.1:9", "shop", "web-1")
        proc = healer("--config", str(config), "run")
        assert proc.returncode == 2, proc.stderr
        [line] = [ln for ln in proc.stderr.splitlines() if not ln.startswith("{")]
        assert line.startswith(f"healer: postgresql 127.0.0.1:{bouncer.port}/postgres is a transaction-pooling")
        assert "session-mode pool" in line
    finally:
        bouncer.stop()
