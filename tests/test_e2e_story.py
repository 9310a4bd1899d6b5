"""End-to-end: a bad deploy that a real `healer run` tries to repair and then rolls back, told to
the real Slack and Telegram SDKs pointed at loopback fakes, with Slack down for the first half."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from chatfakes import SLACK, ChatFake
from helpers import HEALER, git, healer, write_config
from services import free_port, wait_for_port

from healer.alerts.outbox import Outbox
from healer.demo import sampleapp

pytestmark = pytest.mark.e2e

FAST_RESTART = """
name = "process-restart"
description = "the shipped restart with a short verification window, for the test"
cooldown = "2s"
max_per_window = 1
verify = ["http"]
verify_within = "2s"
[[steps]]
action = "process.restart"
timeout = "20s"
"""


def wait_for(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def history(config: Path) -> list[dict[str, object]]:
    return json.loads(healer("--config", str(config), "history", "--json").stdout or "[]")


def heads(messages: list[dict[str, object]]) -> list[str]:
    """The first line of each message, without Telegram's tags or a delay marker."""
    out = []
    for m in messages:
        first = re.sub(r"</?b>", "", str(m["text"]).splitlines()[0])
        out.append(re.sub(r"^\[delayed [^\]]+\] ", "", first))
    return out


def test_a_bad_deploy_is_told_in_order_once_and_nothing_is_lost(tmp_path: Path) -> None:
    """Slack down for the first half: Telegram gets the story live, Slack the same story later, once."""
    fake = ChatFake().start()
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.json").write_text(json.dumps({"version": "1.0", "broken": False}))
    git(repo, "add", "app.json")
    git(repo, "commit", "-q", "-m", "v1.0")
    git(repo, "tag", "stable-1")
    (repo / "app.json").write_text(json.dumps({"version": "1.1", "broken": True}))
    git(repo, "commit", "-q", "-am", "v1.1: broken")
    port = free_port()
    start = sampleapp.serve_argv(repo, port)
    app = subprocess.Popen(start, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for_port(port)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "process-restart.toml").write_text(FAST_RESTART)
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "1h", every = "500ms" }}]
        incident_every = "500ms"
        [escalation]
        repair_grace = "0s"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:{port}/health"
        timeout = "2s"
        samples = 1
        [process]
        manager = "command"
        start = {json.dumps(start)}
        match = "{sampleapp.match_text(repo)}"
        [rollback]
        after = [{json.dumps(sampleapp.restart_argv(repo, port, log=tmp_path / "restart.log"))}]
        verify_grace = "0s"
        [playbooks]
        dir = "playbooks"
        rules = [{{ when = ["http.status"], run = "process-restart" }}]
        [alerts]
        timeout = "2s"
        [alerts.slack]
        webhook_url_env = "SLACK_WEBHOOK_URL"
        [alerts.telegram]
        api_url = "{fake.url}"
        """,
    )
    env = {
        **os.environ,
        "SLACK_WEBHOOK_URL": fake.webhook_url,
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_CHAT_ID": "4242",
    }
    fake.set_mode(SLACK, "500")
    run = subprocess.Popen(
        [*HEALER, "--config", str(config), "run"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # the bad deploy fails, a restart is tried and does not help, the loop rolls back
        wait_for(lambda: any(r["type"] == "rollback" and r["outcome"] == "ok" for r in history(config)))
        wait_for(lambda: sum(1 for r in history(config) if r["type"] == "check" and r["ok"]) >= 2)
        fake.set_mode(SLACK, "ok")  # Slack is back for the second half
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=15)
        assert run.returncode == 0, err
        # whatever Slack missed is still in the outbox; the next start delivers it
        outbox = Outbox(tmp_path / "state" / "healer.db")
        try:
            if outbox.pending_count():
                again = subprocess.Popen(
                    [*HEALER, "--config", str(config), "run"],
                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    wait_for(lambda: outbox.pending_count() == 0, timeout=90)
                finally:
                    again.send_signal(signal.SIGTERM)
                    again.wait(15)
            assert outbox.pending_count() == 0
        finally:
            outbox.close()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for p in psutil.process_iter(["cmdline"]):
            if sampleapp.match_text(repo) in " ".join(p.info["cmdline"] or []):
                p.kill()
        app.kill()
        app.wait()
        fake.stop()

    story = ["Incident opened", "Rolling back", "Rolled back"]
    for name, msgs in (("telegram", fake.telegram_messages()), ("slack", fake.slack_messages())):
        got = heads(msgs)
        seen = [s for h in got for s in story if s in h]
        assert seen == story, (name, got)  # every step, in order, once
        text = "\n".join(str(m["text"]) for m in msgs)
        # the restart that did not help is told before the rollback
        assert text.index("process-restart") < text.index("Rolling back"), (name, text)
    telegram_text = [str(m["text"]) for m in fake.telegram_messages()]
    assert len(telegram_text) == len(set(telegram_text))  # no message twice
    slack_text = [str(m["text"]) for m in fake.slack_messages()]
    assert len(slack_text) == len(set(slack_text))
    assert len(slack_text) <= 12  # a short story, not a message per cycle
    assert any(r.service == SLACK and not r.accepted for r in fake.requests)  # Slack really was down
    assert fake.token not in "".join(telegram_text + slack_text)
    assert "rollback" in " ".join(str(r["type"]) for r in history(config))
