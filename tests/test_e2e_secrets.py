"""End-to-end: secrets printed by a failing check and a failing rollback hook, and echoed back by
Slack and the heartbeat service, appear nowhere healer writes, prints, serves or sends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from chatfakes import SLACK, ChatFake
from helpers import HEALER, commit, git, healer, make_repo, write_config
from services import free_port, wait_for_port

from healer.redact import MASK

pytestmark = pytest.mark.e2e

DB_PASSWORD = "S3cr3tPw-e2e"
REDIS_PASSWORD = "R3disPw-e2e"
WEBHOOK_PATH = "/services/T0E2E0001/B0E2E0002/WebhookSecretE2eXyz123"
PRINT_SECRETS = ["sh", "-c", "echo $DATABASE_URL; echo REDIS_PASSWORD=$REDIS_PASSWORD; exit 1"]
# the other way round, so the last line quoted from the rollback hook holds the DSN
HOOK_PRINTS_SECRETS = ["sh", "-c", "echo REDIS_PASSWORD=$REDIS_PASSWORD; echo migrate failed: $DATABASE_URL; exit 1"]


class EchoingHeartbeat:
    """A heartbeat service that answers 500 and quotes the URL it was sent (its secret uuid)."""

    def __init__(self) -> None:
        self.hits = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                service.hits += 1
                body = f"no check at http://{self.headers['Host']}{self.path}".encode()
                self.send_response(500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def heartbeat() -> Iterator[EchoingHeartbeat]:
    service = EchoingHeartbeat()
    yield service
    service.close()


def wait_for(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def cli_json(config: Path, *args: str) -> object:
    proc = healer("--config", str(config), *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # a loopback URL of the test's own
            return str(r.read().decode())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{url}: {e.code} {e.read().decode()}") from None


def test_no_secret_reaches_the_store_the_cli_the_server_or_the_chats(
    tmp_path: Path, heartbeat: EchoingHeartbeat
) -> None:
    """DSN, Redis password, heartbeat URL and webhook path: masked in the database, every --json,
    /status, /metrics, the log and what Slack and Telegram received."""
    fake = ChatFake(webhook_path=WEBHOOK_PATH).start()
    fake.set_mode(SLACK, "500", echo=True)
    dsn = f"postgresql://shop:{DB_PASSWORD}@127.0.0.1:{free_port()}/shop"
    beat_uuid = str(uuid.uuid4())
    beat_url = f"http://127.0.0.1:{heartbeat.port}/ping/{beat_uuid}"
    secrets = [DB_PASSWORD, dsn, REDIS_PASSWORD, beat_uuid, beat_url, WEBHOOK_PATH, WEBHOOK_PATH[-22:], fake.token]
    os.environ.update({
        "DATABASE_URL": dsn,
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "HEARTBEAT_URL": beat_url,
        "SLACK_WEBHOOK_URL": fake.webhook_url,
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_CHAT_ID": "4242",
    })  # fmt: skip
    repo = make_repo(tmp_path / "app")
    git(repo, "tag", "stable-1")
    commit(repo, "v2")
    port = free_port()
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "1h", every = "300ms" }}]
        incident_every = "300ms"
        [escalation]
        rollback_after = 2
        deploy_grace = "0s"
        [[checks]]
        name = "migrations"
        type = "command"
        argv = {json.dumps(PRINT_SECRETS)}
        timeout = "5s"
        [redis]
        password_env = "REDIS_PASSWORD"
        [postgres]
        dsn_env = "DATABASE_URL"
        [rollback]
        after = [{json.dumps(HOOK_PRINTS_SECRETS)}]
        verify_grace = "0s"
        [heartbeat]
        url_env = "HEARTBEAT_URL"
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
    log = tmp_path / "run.log"  # a file: a pipe nobody reads would fill and stall healer's logging
    with log.open("w") as sink:
        run = subprocess.Popen(
            [*HEALER, "--config", str(config), "run"],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    outputs: dict[str, str] = {}
    try:
        assert wait_for_port(port)

        def rollback_failed() -> bool:
            rows = cli_json(config, "history")
            assert isinstance(rows, list)
            return any(r.get("type") == "rollback" and r.get("outcome") == "failed" for r in rows)

        def slack_refused() -> bool:
            return any(r.status == 500 for r in fake.requests if r.service == SLACK)

        try:
            wait_for(rollback_failed)
        except AssertionError:
            raise AssertionError(log.read_text()[-5000:]) from None
        wait_for(lambda: slack_refused() and heartbeat.hits >= 2 and bool(fake.telegram_messages()))
        time.sleep(4)  # the sender's quick retries end and the Slack error is stored
        try:
            outputs["/status"] = get(f"http://127.0.0.1:{port}/status")
        except AssertionError as e:
            raise AssertionError(str(e) + log.read_text()[-4000:]) from None
        outputs["/metrics"] = get(f"http://127.0.0.1:{port}/metrics")
        for command in ("status", "history", "report", "check"):
            outputs[f"{command} --json"] = json.dumps(cli_json(config, command))
        outputs["check"] = healer("--config", str(config), "check").stdout
        outputs["alert test"] = healer("--config", str(config), "alert", "test").stdout
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=20)
        fake.stop()
    outputs["run (stdout, log)"] = log.read_text()
    for path in sorted((tmp_path / "state").rglob("*")):
        if path.is_file():
            outputs[str(path.relative_to(tmp_path))] = path.read_bytes().decode("utf-8", "replace")
    outputs["chat bodies"] = fake.all_text()

    assert any(name.startswith("state/healer.db") for name in outputs)
    for name, text in outputs.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into {name}"
    # the secrets were there to leak, and were masked where they were quoted
    history = outputs["history --json"]
    assert f"migrate failed: {MASK}" in history, history
    assert f"REDIS_PASSWORD={MASK}" in outputs["check --json"]
    assert MASK in outputs["chat bodies"]
    assert MASK in outputs["state/healer.db"] + outputs.get("state/healer.db-wal", "")
