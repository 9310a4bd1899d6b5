"""A real `healer run` for the chat-ops end-to-end tests: it watches a repo whose HEAD (v2) fails
its check and whose stable-1 passes, so an incident opens at once and a rollback cures it (I/O)."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import HEALER, commit, git, healer, make_repo, write_config


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `pred` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cli_json(config: Path, *args: str) -> Any:
    proc = healer("--config", str(config), *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


class Running:
    """`healer run` with `chat` (the [alerts.*] channel and [chatops] sections) appended to its
    healer.toml; no automatic rollback within a test's time (100 cycles, 2 s apart)."""

    def __init__(self, tmp_path: Path, chat: str, *, repeat_every: str = "30m") -> None:
        repo = make_repo(tmp_path / "app")
        git(repo, "tag", "stable-1")
        commit(repo, "v2")
        at_stable = ["sh", "-c", f"git -C {repo} tag --points-at HEAD | grep -q stable"]
        self.repo = repo
        base = f"""
            state_dir = "state"
            [app]
            name = "shop"
            repo = "{repo}"
            [schedule]
            phases = [{{ until = "1h", every = "300ms" }}]
            incident_every = "2s"
            [escalation]
            rollback_after = 100
            deploy_grace = "0s"
            [[checks]]
            name = "release"
            type = "command"
            argv = {json.dumps(at_stable)}
            [rollback]
            verify_grace = "0s"
            [alerts]
            timeout = "2s"
            repeat_every = "{repeat_every}"
            """
        self.config = write_config(tmp_path, textwrap.dedent(base) + textwrap.dedent(chat))
        self.log = tmp_path / "run.log"
        self.start()

    def start(self) -> None:
        with self.log.open("a") as sink:
            self.proc = subprocess.Popen(
                [*HEALER, "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        """kill -9: nothing runs on the way out."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> str:
        """SIGTERM; returns the log."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        return self.log.read_text()
