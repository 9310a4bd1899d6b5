"""End-to-end: signals at the awkward moments of a real `healer run` — a restart waiting for a
slow app to stop, a rollback's `after` command — and SIGHUP. Nothing is left half done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import HEALER, commit, git, make_repo, write_config
from services import free_port, wait_for_port

from healer.alerts.outbox import Outbox
from healer.model import ActionNote
from healer.store import ActionRow, Store

pytestmark = pytest.mark.e2e

# An app whose release came up wedged (a `wedge` file beside it at start: /health answers
# 500, and the file is used up), and which stops slowly: on SIGTERM it finishes its work and
# exits `slow` seconds later. A restart therefore waits for it; the new process is healthy.
SLOW_APP = """\
import http.server, json, os, signal, sys, threading
port, marker, slow = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
here = os.path.dirname(os.path.abspath(__file__))
flag = os.path.join(here, "wedge")
wedged = os.path.exists(flag)
if wedged:
    os.remove(flag)
signal.signal(signal.SIGTERM, lambda *_: threading.Timer(slow, os._exit, (0,)).start())
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "wedged": wedged}).encode()
        self.send_response(500 if wedged else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"""


class SlowApp:
    """The app above, in its own directory, with a unique marker in its command line."""

    def __init__(self, directory: Path, slow: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.script = directory / "app.py"
        self.script.write_text(SLOW_APP)
        self.port = free_port()
        self.marker = f"healer-slow-app-{uuid.uuid4().hex[:12]}"
        self.start = [sys.executable, str(self.script), str(self.port), self.marker, str(slow)]
        self.children: list[subprocess.Popen[bytes]] = []

    def run_wedged(self) -> int:
        """Start the wedged release ourselves, detached, as the deploy left it."""
        (self.dir / "wedge").touch()
        p = subprocess.Popen(
            self.start, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.children.append(p)
        assert wait_for_port(self.port), "the app did not start"
        return p.pid

    def answer(self) -> tuple[int, dict[str, object]]:
        """(status, body) of /health."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def kill_all(self) -> None:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.marker.encode() in (entry / "cmdline").read_bytes():
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    continue
        for c in self.children:
            c.wait(timeout=10)


@pytest.fixture
def runs() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `healer run` children; any still running at the end is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(config: Path) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [*HEALER, "--config", str(config), "run"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


@pytest.fixture
def slow_app(tmp_path: Path) -> Iterator[Callable[[float], SlowApp]]:
    apps: list[SlowApp] = []

    def make(slow: float) -> SlowApp:
        apps.append(SlowApp(tmp_path / "slowapp", slow))
        return apps[-1]

    yield make
    for a in apps:
        a.kill_all()


def wait_for(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not met within {timeout}s")


def actions(state: Path, kind: str) -> list[ActionRow]:
    s = Store(state / "healer.db")
    try:
        return s.actions(kind=kind)
    finally:
        s.close()


def alerted(state: Path) -> list[tuple[str, str]]:
    """(event, title) of every alert item healer queued for chat."""
    outbox = Outbox(state / "healer.db")
    try:
        return [(i.event, i.title) for a in outbox.history() for i in a.message.items]
    finally:
        outbox.close()


def restart_config(tmp_path: Path, app: SlowApp) -> Path:
    repo = make_repo(tmp_path / "repo")
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
        rollback_after = 50
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:{app.port}/health"
        timeout = "1s"
        samples = 1
        [process]
        manager = "command"
        start = {json.dumps(app.start)}
        match = "{app.marker}"
        cwd = "{app.dir}"
        stop_timeout = "30s"
        start_timeout = "10s"
        """,
    )


def started_repair(state: Path) -> bool:
    return any(a.outcome == "started" for a in actions(state, "repair")) if (state / "healer.db").exists() else False


def test_sigterm_while_a_restart_waits_lets_it_finish(
    tmp_path: Path, slow_app: Callable[[float], SlowApp], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """SIGTERM while process-restart waits for a slow app to stop: healer finishes the restart
    (within its stop bound), the app runs again, and healer exits 0."""
    app = slow_app(2.0)
    old = app.run_wedged()
    config = restart_config(tmp_path, app)
    state = tmp_path / "state"
    p = runs(config)
    wait_for(lambda: started_repair(state), what="the restart began")
    time.sleep(0.3)  # the app has its SIGTERM and takes 2 s to stop
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    status, body = app.answer()
    assert status == 200 and body["pid"] != old, body
    (row,) = actions(state, "repair")
    assert (row.name, row.outcome, row.note) == ("process-restart", "ok", ""), row.detail
    assert '"event": "healer.stopping"' in err and '"waiting_for": "process-restart"' in err
    assert '"event": "healer.stopped"' in err


def answering_pid(app: SlowApp) -> object:
    """The PID /health names, or None while nothing answers (the restart in between)."""
    try:
        return app.answer()[1]["pid"]
    except OSError:
        return None


def loop_cycles(state: Path) -> int:
    s = Store(state / "healer.db")
    try:
        return sum(1 for c in s.cycles() if c.who == "loop")
    finally:
        s.close()


def test_sigterm_while_a_restart_is_verified_beside_the_loop_is_recorded_interrupted_and_resumed(
    tmp_path: Path, slow_app: Callable[[float], SlowApp], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """The restarted app comes up wedged too: the restart's verification goes on beside the
    loop, which keeps judging the app. SIGTERM lets the verification go on for the stop bound,
    then records the restart interrupted; the next start runs it again, and the app serves."""
    app = slow_app(1.0)
    old = app.run_wedged()
    config = restart_config(tmp_path, app)
    config.write_text(config.read_text().replace("rollback_after = 50", 'rollback_after = 50\nrepair_grace = "1s"'))
    state = tmp_path / "state"
    first = runs(config)
    wait_for(lambda: started_repair(state), what="the restart began")
    (app.dir / "wedge").touch()  # the process the restart starts comes up wedged as well
    wait_for(lambda: answering_pid(app) not in (None, old), what="the restarted app answers")
    judged = loop_cycles(state)
    wait_for(lambda: loop_cycles(state) >= judged + 3, what="cycles while the restart is verified")
    (row,) = actions(state, "repair")
    assert row.outcome == "started"  # still being verified (process-restart: verify_within 60s)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=25)
    assert first.returncode == 0, err
    assert '"waiting_for": "verifying process-restart"' in err and '"event": "healer.interrupted"' in err
    (cut,) = actions(state, "repair")
    assert (cut.outcome, cut.note) == ("error", ActionNote.INTERRUPTED), cut.detail

    runs(config)
    wait_for(lambda: len(actions(state, "repair")) == 2 and actions(state, "repair")[1].outcome != "started",
             timeout=60, what="the repair was run again")  # fmt: skip
    again = actions(state, "repair")[1]
    assert again.outcome == "ok" and again.reason.startswith(f"run again: repair #{cut.id} was interrupted")
    status, _ = app.answer()
    assert status == 200


def test_sigterm_past_the_bound_is_recorded_interrupted_and_the_next_start_completes_it(
    tmp_path: Path, slow_app: Callable[[float], SlowApp], runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """An app slower to stop than healer's stop bound: the restart is recorded as interrupted
    (not a run for backoff and caps), and the next `healer run` runs it again and says so."""
    app = slow_app(14.0)
    old = app.run_wedged()
    config = restart_config(tmp_path, app)
    state = tmp_path / "state"
    first = runs(config)
    wait_for(lambda: started_repair(state), what="the restart began")
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=20)
    assert first.returncode == 0, err  # the 10 s bound, then a clean stop (the app takes 14 s)
    assert '"event": "healer.interrupted"' in err and '"event": "healer.stopped"' in err
    (cut,) = actions(state, "repair")
    assert (cut.outcome, cut.note) == ("error", ActionNote.INTERRUPTED)
    assert cut.detail.startswith("interrupted: ")
    s = Store(state / "healer.db")
    try:
        d = s.current_deploy()
        assert d is not None and s.past_repairs(d.id) == ()  # not a run
    finally:
        s.close()
    assert app.answer()[1]["pid"] == old  # still stopping: the restart is half done

    second = runs(config)
    wait_for(lambda: len(actions(state, "repair")) == 2 and actions(state, "repair")[1].outcome != "started",
             timeout=60, what="the repair was run again")  # fmt: skip
    cut, again = actions(state, "repair")
    assert cut.note == ActionNote.LOOKED_AT
    assert again.outcome == "ok" and again.reason.startswith(f"run again: repair #{cut.id} was interrupted")
    status, body = app.answer()
    assert status == 200 and body["pid"] != old
    s = Store(state / "healer.db")
    try:
        d = s.current_deploy()
        assert d is not None and [r.name for r in s.past_repairs(d.id)] == ["process-restart"]
    finally:
        s.close()
    said = alerted(state)
    assert ("repair.succeeded", "process-restart, interrupted when healer stopped, run again") in said
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=20)
    assert second.returncode == 0, err
    assert '"event": "repair.resumed"' in err


# ---- a rollback's `after` command ----------------------------------------------------------------


def rollback_config(tmp_path: Path, after: list[str]) -> Path:
    """A repo whose stable-1 is healthy (it has `healthy`) and whose HEAD is not; one failing
    cycle rolls back, and the check passes on the rolled-back code."""
    repo = make_repo(tmp_path / "repo")
    (repo / "healthy").write_text("yes\n")
    git(repo, "add", "healthy")
    git(repo, "commit", "-q", "-m", "healthy release")
    git(repo, "tag", "stable-1")
    git(repo, "rm", "-q", "healthy")
    commit(repo, "broken release")
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
        rollback_after = 1
        [[checks]]
        name = "release"
        type = "command"
        argv = ["test", "-f", "{repo / "healthy"}"]
        timeout = "2s"
        [rollback]
        after = [{json.dumps(after)}]
        command_timeout = "20s"
        verify_grace = "0s"
        """,
    )


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) members of process group `pgid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[2] == str(pgid) and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def running_after(state: Path) -> int | None:
    """The process group of the `after` command the rollback's journal says is running."""
    if not (state / "healer.db").exists():
        return None
    for row in actions(state, "rollback"):
        if row.outcome == "started":
            running = json.loads(row.detail).get("running")
            if running:
                return int(running["pgid"])
    return None


def test_kill_9_during_an_after_command_then_the_resume_runs_it_exactly_once(
    tmp_path: Path, runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """healer killed -9 while `after` runs: the command goes on alone; the next start waits for
    it, does not run it again, finishes the rollback, and leaves nothing running."""
    marker = tmp_path / f"marker-{uuid.uuid4().hex[:8]}"
    # the command ends when the test says so, not after a sleep that a slow second start outlasts
    release = tmp_path / "release"
    wait_release = f"while [ ! -e {release} ]; do sleep 0.05; done; echo done >> {marker}"
    config = rollback_config(tmp_path, ["sh", "-c", wait_release])
    state = tmp_path / "state"
    first = runs(config)
    wait_for(lambda: running_after(state), what="the after command is running")
    pgid = running_after(state)
    assert pgid is not None
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert group_alive(pgid), "the after command died with healer"
    assert not marker.exists()

    second = runs(config)
    # the resume holds the rollback lock (its PID in the file) while it waits for the command:
    # only then does the command end (read, not flocked: a peek could make the resume skip)
    lock = state / "rollback.lock"
    wait_for(lambda: lock.read_text().strip() == str(second.pid), what="the resume took the rollback lock")
    assert group_alive(pgid) and not marker.exists()
    release.touch()
    wait_for(lambda: actions(state, "rollback") and actions(state, "rollback")[0].outcome != "started",
             timeout=60, what="the rollback was resumed")  # fmt: skip
    (row,) = actions(state, "rollback")
    assert row.outcome == "ok", row.detail
    assert marker.read_text() == "done\n"  # ran to completion exactly once
    assert f"for process group {pgid}, which the interrupted run left running" in row.detail
    assert "after command 1 finished on its own (exit 0): not run again" in row.detail
    assert group_alive(pgid) == []
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=20)
    assert second.returncode == 0, err
    assert marker.read_text() == "done\n"


def test_sigterm_during_an_after_command_lets_it_finish(
    tmp_path: Path, runs: Callable[..., subprocess.Popen[str]]
) -> None:
    """SIGTERM while `after` runs: the command is not signalled, healer waits for it and the
    rollback's verification, then exits 0; the rollback is done, not left for a resume."""
    marker = tmp_path / f"marker-{uuid.uuid4().hex[:8]}"
    config = rollback_config(
        tmp_path, ["sh", "-c", f"trap 'echo TERM >> {marker}' TERM; sleep 3; echo done >> {marker}"]
    )
    state = tmp_path / "state"
    p = runs(config)
    wait_for(lambda: running_after(state), what="the after command is running")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert marker.read_text() == "done\n"  # not signalled, finished once
    (row,) = actions(state, "rollback")
    assert row.outcome == "ok", row.detail
    assert '"waiting_for": "rollback"' in err


def test_sighup_stops_cleanly_and_says_so(tmp_path: Path, runs: Callable[..., subprocess.Popen[str]]) -> None:
    """SIGHUP (a closed terminal) ends healer like SIGTERM: exit 0, "healer stopped" logged and
    queued for chat, naming the signal."""
    marker = tmp_path / "unused"
    config = rollback_config(tmp_path, ["sh", "-c", f"echo done >> {marker}"])
    state = tmp_path / "state"
    p = runs(config)
    wait_for(lambda: ("healer.started", "act mode") in alerted(state) if (state / "healer.db").exists() else False,
             what="healer started")  # fmt: skip
    p.send_signal(signal.SIGHUP)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    stopped = [json.loads(line) for line in err.splitlines() if '"event": "healer.stopped"' in line]
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGHUP"
    assert ("healer.stopped", "healer stopped") in alerted(state)
