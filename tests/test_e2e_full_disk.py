"""End-to-end: a real `healer run` whose state dir fills up (a 2 MB tmpfs) while the app goes
down, and then gets its room back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chatfakes import ChatFake
from helpers import HEALER, healer, make_repo, write_config
from services import free_port, wait_for_port
from smalldisk import SmallDisk

from healer.alerts.message import NOT_RECORDED

pytestmark = pytest.mark.e2e


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"not in time: {what}")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # the test's own loopback server
            return int(r.status), str(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def store_ok(port: int) -> float:
    _, text = get(f"http://127.0.0.1:{port}/metrics")
    line = next(x for x in text.splitlines() if x.startswith("healer_store_ok "))
    return float(line.split()[1])


def history(config: Path) -> list[dict[str, object]]:
    proc = healer("--config", str(config), "history", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list)
    return rows


def events(log: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("event") == name:
            out.append(row)
    return out


def test_a_full_disk_is_said_judged_from_memory_and_written_once_freed(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """State dir full while the app fails: one error line, the incident reaches Telegram and Slack
    marked not recorded, /healthz 503 and healer_store_ok 0; freed: 200, 1, and `healer history`
    shows the outage's cycles and incident."""
    disk = SmallDisk(tmp_path / "state")
    fake = ChatFake().start()
    app = http_app("healthy")
    os.environ.update({
        "SLACK_WEBHOOK_URL": fake.webhook_url, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": "4242",
    })  # fmt: skip
    port = free_port()
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{make_repo(tmp_path / "app")}"
        [schedule]
        phases = [{{ until = "1h", every = "300ms" }}]
        incident_every = "300ms"
        [escalation]
        rollback_after = 50
        [[checks]]
        name = "api"
        type = "http"
        url = "{app}/health"
        timeout = "1s"
        samples = 1
        [server]
        listen = "127.0.0.1:{port}"
        [alerts]
        timeout = "2s"
        [alerts.slack]
        webhook_url_env = "SLACK_WEBHOOK_URL"
        [alerts.telegram]
        api_url = "{fake.url}"
        """,
    )
    log = tmp_path / "run.log"  # outside the small disk
    with log.open("w") as sink:
        run = subprocess.Popen(
            [*HEALER, "--config", str(config), "run"], stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )

    def telegram(text: str) -> list[str]:
        return [str(m["text"]) for m in fake.telegram_messages() if text in str(m["text"])]

    def slack(text: str) -> list[str]:
        return [str(m["text"]) for m in fake.slack_messages() if text in str(m["text"])]

    try:
        assert wait_for_port(port)
        wait_for(lambda: sum(1 for r in history(config) if r.get("ok") is True) >= 2, "two healthy cycles")
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")

        disk.fill()
        full_at = datetime.now(UTC)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 503, "/healthz 503")
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 503 and "disk is full" in body, body
        assert store_ok(port) == 0
        wait_for(lambda: bool(telegram("healer cannot write its state")), "the store alert in Telegram")
        assert NOT_RECORDED in telegram("healer cannot write its state")[0]

        app.behaviour = "error500"  # type: ignore[attr-defined]
        wait_for(lambda: bool(telegram("Incident opened")) and bool(slack("Incident opened")), "the incident alert")
        assert NOT_RECORDED in telegram("Incident opened")[0]
        assert NOT_RECORDED in slack("Incident opened")[0]
        time.sleep(5)  # the app stays down for a while, the disk full all along
        app.behaviour = "healthy"  # type: ignore[attr-defined]
        wait_for(lambda: bool(telegram("Resolved")), "the resolution in Telegram")
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 503  # still nothing written
        outage = [r for r in history(config) if r["type"] == "check" and str(r["at"]) >= full_at.isoformat()]
        assert outage == []  # the database has nothing of it yet

        disk.free()
        freed_at = datetime.now(UTC)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n"), "/healthz 200 again")
        assert store_ok(port) == 1
        wait_for(lambda: bool(telegram("healer writes its state again")), "the recovery alert")
        rows = [r for r in history(config) if full_at.isoformat() <= str(r["at"]) <= freed_at.isoformat()]
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=20)
        fake.stop()
        disk.close()
    assert code == 0, log.read_text()[-3000:]
    failing = [r for r in rows if r["type"] == "check" and r["ok"] is False]
    assert len(failing) >= 5, rows  # about 5 s of failing cycles at a 300 ms cadence
    assert [r for r in rows if r["type"] == "check" and r["ok"] is True]  # and the healthy ones around them
    assert [r["type"] for r in rows if str(r["type"]).startswith("incident.")] == [
        "incident.opened",
        "incident.resolved",
    ]
    incident_alerts = [r for r in rows if r["type"] == "alert" and "incident.opened" in str(r["detail"])]
    assert incident_alerts and "telegram: delivered" in str(incident_alerts[0]["outcome"])
    assert len(events(log, "store.unwritable")) == 1
    assert events(log, "store.unwritable")[0]["level"] == "error"
    assert len(events(log, "store.recovered")) == 1
