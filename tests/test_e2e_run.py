"""End-to-end: real `healer run` processes, signals and kill -9, read back from the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import HEALER, commit, healer, make_repo, write_config

from healer.store import Store

pytestmark = pytest.mark.e2e


def fast_config(tmp_path: Path, url: str, *, extra_checks: str = "", rollback_after: int = 50) -> Path:
    repo = make_repo(tmp_path / "app")
    return write_config(
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
        rollback_after = {rollback_after}
        [[checks]]
        name = "api"
        type = "http"
        url = "{url}/health"
        timeout = "1s"
        samples = 1
        {extra_checks}
    """,
    )


@pytest.fixture
def runs() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(config: Path, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [*HEALER, "--config", str(config), "run", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def wait_for(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def deploy_of(config: Path) -> dict[str, object]:
    proc = healer("--config", str(config), "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def failing_cycles(state: Path) -> int:
    s = Store(state / "healer.db")
    try:
        return sum(1 for c in s.cycles() if not c.ok and c.who == "loop")
    finally:
        s.close()


def failures(state: Path) -> int:
    s = Store(state / "healer.db")
    try:
        d = s.current_deploy()
        return -1 if d is None else d.consecutive_failures
    finally:
        s.close()


def test_kill_9_and_restart_resumes_the_failure_count(
    tmp_path: Path, http_app: Callable[..., object], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """A `healer run` killed with SIGKILL and started again continues its count and window."""
    app = http_app("healthy")
    config = fast_config(tmp_path, str(app))
    state = tmp_path / "state"
    p = runs(config)
    wait_for(
        lambda: (
            (state / "healer.db").exists() and failures(state) == 0 and deploy_of(config).get("baseline") is not None
        )
    )
    first = deploy_of(config)
    app.behaviour = "error500"  # type: ignore[attr-defined]
    wait_for(lambda: failures(state) >= 3)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    killed_at = failures(state)
    p2 = runs(config)
    wait_for(lambda: failures(state) > killed_at)
    after = deploy_of(config)
    assert after["deploy"]["id"] == first["deploy"]["id"]  # type: ignore[index]
    assert after["deploy"]["first_seen"] == first["deploy"]["first_seen"]  # type: ignore[index]
    assert after["baseline"] == first["baseline"]
    assert failures(state) == killed_at + 1 or failures(state) > killed_at
    p2.send_signal(signal.SIGTERM)
    p2.wait(timeout=10)
    s = Store(state / "healer.db")
    try:
        assert len(s.incidents()) == 1  # the restart did not open a second incident
        cycles = s.cycles()
    finally:
        s.close()
    # no failing cycle was lost or counted twice: the count equals the failing cycles in a row
    tail = 0
    for c in reversed(cycles):
        if c.ok:
            break
        tail += 1
    assert failures(state) == tail


def test_sigterm_stops_cleanly_and_a_second_run_exits_2_naming_the_pid(
    tmp_path: Path, http_app: Callable[..., object], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """One loop per state dir; SIGTERM ends it with exit 0 and a stop event."""
    config = fast_config(tmp_path, str(http_app("healthy")))
    p = runs(config)
    wait_for(lambda: deploy_of(config)["loop"]["alive"] is True)  # type: ignore[index]
    second = healer("--config", str(config), "run")
    assert second.returncode == 2
    assert f"PID {p.pid}" in second.stderr
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=5)
    assert p.returncode == 0, err
    assert '"event": "healer.stopped"' in err
    assert deploy_of(config)["loop"]["running"] is False


def test_a_new_commit_during_a_run_starts_a_new_window(
    tmp_path: Path, http_app: Callable[..., object], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """Deploying a new commit while healer runs gives it its own deploy and baseline."""
    config = fast_config(tmp_path, str(http_app("healthy")))
    p = runs(config)
    wait_for(lambda: deploy_of(config).get("baseline") is not None)
    sha = commit(tmp_path / "app", "v2")
    wait_for(
        lambda: (
            (deploy_of(config).get("deploy") or {}).get("commit") == sha
            and deploy_of(config).get("baseline") is not None
        )
    )
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=5)


def test_the_loop_survives_dead_services_and_garbage(
    tmp_path: Path, http_app: Callable[..., object], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """A dead Redis, a refused port and a garbage answer are failed checks, not a crash."""
    garbage = http_app("garbage")
    extra = f"""
        [[checks]]
        name = "cache"
        type = "redis"
        url = "redis://127.0.0.1:1/0"
        timeout = "1s"
        [[checks]]
        name = "junk"
        type = "http"
        url = "{garbage}/"
        timeout = "1s"
        samples = 1
        [[checks]]
        name = "gone"
        type = "http"
        url = "http://127.0.0.1:1/"
        timeout = "1s"
        samples = 1
    """
    config = fast_config(tmp_path, str(http_app("healthy")), extra_checks=extra)
    p = runs(config)
    state = tmp_path / "state"
    # Redis is down: the failing cycles are blamed on the dependency and not counted toward a
    # rollback, so count the failing cycles the loop recorded
    wait_for(lambda: (state / "healer.db").exists() and failing_cycles(state) >= 3)
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=5)
    assert p.returncode == 0
    assert "Traceback" not in err


def test_run_survives_a_closed_stderr(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """With its log stream gone (a full disk, a closed pipe), the loop keeps cycling."""
    config = fast_config(tmp_path, str(http_app("healthy")))
    p = subprocess.Popen(
        [*HEALER, "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert p.stderr is not None
        p.stderr.close()  # every later write to stderr fails with EPIPE
        state = tmp_path / "state"
        wait_for(lambda: (state / "healer.db").exists())
        s = Store(state / "healer.db")
        try:
            wait_for(lambda: len(s.cycles()) >= 5)
        finally:
            s.close()
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=5)
    _ = os


def test_a_repo_that_is_not_git_exits_2_before_starting(tmp_path: Path) -> None:
    """[app] repo pointing at a plain directory is refused at start, with nothing created."""
    (tmp_path / "plain").mkdir()
    config = write_config(
        tmp_path,
        """
        state_dir = "state"
        [app]
        repo = "plain"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:1/"
    """,
    )
    proc = healer("--config", str(config), "run", timeout=30)
    assert proc.returncode == 2
    assert "not a git work tree" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_run_speaks_systemd_notify_on_a_real_socket(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """Under Type=notify, healer sends READY=1, a STATUS per cycle and STOPPING=1 on SIGTERM."""
    import socket

    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    config = fast_config(tmp_path, str(http_app("healthy")))
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    p = subprocess.Popen(
        [*HEALER, "--config", str(config), "run"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        got: list[str] = []
        while not any(m.startswith("STATUS=") for m in got):
            got.append(sock.recv(4096).decode())
        assert got[0] == "READY=1"
        assert "healthy" in next(m for m in got if m.startswith("STATUS="))
        p.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in got:
            got.append(sock.recv(4096).decode())
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        sock.close()


def test_sigterm_is_not_held_up_by_a_hanging_chat(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """A Slack webhook that never answers does not keep healer from stopping promptly."""
    hang = http_app("hang")
    config = fast_config(tmp_path, str(http_app("healthy")))
    with open(config, "a") as f:
        f.write('\n[alerts.slack]\nwebhook_url_env = "SLACK_WEBHOOK_URL"\n')
    env = {**os.environ, "SLACK_WEBHOOK_URL": f"{hang}/services/T/B/X"}
    p = subprocess.Popen(
        [*HEALER, "--config", str(config), "run"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: deploy_of(config)["loop"]["alive"] is True)  # type: ignore[index]
        time.sleep(0.5)  # a send to the hanging webhook is now in flight
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0  # the alert timeout is 10 s: healer did not wait for it
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_state_dir_that_cannot_be_created_exits_2(tmp_path: Path) -> None:
    """state_dir under a regular file: one line naming it, exit 2, no traceback."""
    (tmp_path / "afile").write_text("")
    config = write_config(
        tmp_path,
        """
        state_dir = "afile/st"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:1/"
    """,
    )
    proc = healer("--config", str(config), "run", timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "state" in proc.stderr and "Traceback" not in proc.stderr
