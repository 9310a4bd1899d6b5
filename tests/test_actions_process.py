"""process-restart and process.reload: through fake managers on PATH, and by healer itself
against real child processes."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import HEALER, healer, make_repo, write_config
from services import free_port, wait_for_port

from healer.actions import process as proc_actions
from healer.actions.process import ProcessReloadStep, ProcessRestartStep
from healer.checks import probe_context
from healer.clock import SystemClock
from healer.config import Config, parse_config
from healer.errors import ActionError
from healer.model import Outcome, Who
from healer.repair import run_repair
from healer.store import Store

RESTART = ProcessRestartStep(action="process.restart")
RELOAD = ProcessReloadStep(action="process.reload")

APP = """\
import http.server, json, os, signal, socket, sys, time
port, marker, mode = int(sys.argv[1]), sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else "ok")
here = os.path.dirname(os.path.abspath(__file__))
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, lambda *_: open(os.path.join(here, f"hup-{os.getpid()}"), "w").close())
if mode == "hung":  # listens, never answers
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen()
    while True:
        time.sleep(1)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid()}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer.allow_reuse_address = True
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""

FAKE = """\
#!{python}
import json, os, sys, time
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "pid": os.getpid()}}) + "\\n")
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
if os.environ.get("FAKE_EXIT", "0") != "0":
    print("Failed to restart shop.service: Unit shop.service not found.", file=sys.stderr)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


# ---- helpers ---------------------------------------------------------------------------------


class App:
    """The test app: a script, a port, a unique marker in its command line."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.script = directory / "app.py"
        self.script.write_text(APP)
        self.port = free_port()
        self.marker = f"healer-test-app-{uuid.uuid4().hex[:12]}"
        self.children: list[subprocess.Popen[bytes]] = []

    @property
    def start(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.port), self.marker]

    def run(self, mode: str = "ok") -> subprocess.Popen[bytes]:
        """Start a copy ourselves (as the old, running app)."""
        p = subprocess.Popen(
            [*self.start, mode], cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.children.append(p)
        assert wait_for_port(self.port), "the test app did not start"
        return p

    def pid_answering(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as r:
            return int(json.loads(r.read())["pid"])

    def running(self) -> list[int]:
        return sorted(
            p.pid for p in psutil.process_iter(["cmdline", "status"])
            if self.marker in " ".join(p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE
        )  # fmt: skip

    def cleanup(self) -> None:
        for p in psutil.process_iter(["cmdline"]):
            if self.marker in " ".join(p.info["cmdline"] or ()):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        for c in self.children:
            c.wait(timeout=5)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path)
    yield a
    a.cleanup()


def command_config(tmp_path: Path, app: App, **process: Any) -> Config:
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "checks": [
                {"name": "api", "type": "http", "url": f"http://127.0.0.1:{app.port}/", "samples": 1, "timeout": "1s"},
                {"name": "app", "type": "process", "match": app.marker},
            ],
            "process": {
                "manager": "command", "start": app.start, "match": app.marker, "cwd": str(tmp_path),
                "stop_timeout": "500ms", "start_timeout": "10s", **process,
            },
        },
        tmp_path / "healer.toml",
    )  # fmt: skip


def manager_config(tmp_path: Path, **process: Any) -> Config:
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}],
            "process": process,
        },
        tmp_path / "healer.toml",
    )


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH of fake systemctl, pm2 and supervisorctl that record their argv to FAKE_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "pm2", "supervisorctl"):
        path = bin_dir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line)["argv"] for line in log.read_text().splitlines()]


# ---- through a manager -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("process", "expected"),
    [
        pytest.param({"manager": "systemd", "name": "shop"}, ["systemctl", "restart", "shop"], id="systemd"),
        pytest.param({"manager": "pm2", "name": "shop"}, ["pm2", "restart", "shop"], id="pm2"),
        pytest.param({"manager": "supervisor", "name": "shop"}, ["supervisorctl", "restart", "shop"], id="supervisor"),
        pytest.param(
            {"manager": "supervisor", "name": "shop", "control": ["supervisorctl", "-c", "/etc/sv.conf"]},
            ["supervisorctl", "-c", "/etc/sv.conf", "restart", "shop"], id="control",
        ),
    ],
)  # fmt: skip
async def test_restart_runs_the_managers_command(
    tmp_path: Path, fake_bin: Path, process: dict[str, Any], expected: list[str]
) -> None:
    """process-restart runs exactly `<manager> restart NAME` from PATH."""
    detail = await proc_actions.restart(RESTART, manager_config(tmp_path, **process))
    assert calls(fake_bin) == [expected]
    assert detail == f"ran `{' '.join(expected)}`"


@pytest.mark.parametrize(
    ("process", "step", "expected"),
    [
        pytest.param({"manager": "systemd", "name": "shop"}, RELOAD, ["systemctl", "reload", "shop"], id="systemd"),
        pytest.param(
            {"manager": "systemd", "name": "shop", "reload_signal": "SIGHUP"}, RELOAD,
            ["systemctl", "kill", "--signal=SIGHUP", "shop"], id="systemd-signal",
        ),
        pytest.param({"manager": "pm2", "name": "shop"}, RELOAD, ["pm2", "reload", "shop"], id="pm2"),
        pytest.param(
            {"manager": "pm2", "name": "shop"}, ProcessReloadStep(action="process.reload", signal="SIGUSR2"),
            ["pm2", "sendSignal", "SIGUSR2", "shop"], id="pm2-step-signal",
        ),
        pytest.param(
            {"manager": "supervisor", "name": "shop"}, RELOAD,
            ["supervisorctl", "signal", "HUP", "shop"], id="supervisor",
        ),
        pytest.param(
            {"manager": "supervisor", "name": "shop", "reload_signal": "USR1"}, RELOAD,
            ["supervisorctl", "signal", "USR1", "shop"], id="supervisor-signal",
        ),
    ],
)  # fmt: skip
async def test_reload_asks_the_manager(
    tmp_path: Path, fake_bin: Path, process: dict[str, Any], step: ProcessReloadStep, expected: list[str]
) -> None:
    """process.reload: the manager's reload, or its way of sending the configured signal."""
    detail = await proc_actions.reload(step, manager_config(tmp_path, **process))
    assert calls(fake_bin) == [expected]
    assert detail == f"ran `{' '.join(expected)}`"


async def test_reload_without_a_way_is_skipped_and_says_so(tmp_path: Path, fake_bin: Path, app: App) -> None:
    """manager = "command" with no reload_signal: nothing is run, and the detail says why."""
    detail = await proc_actions.reload(RELOAD, command_config(tmp_path, app))
    assert detail.startswith('skipped the reload: manager = "command" and no [process] reload_signal')
    assert calls(fake_bin) == []


async def test_reload_signal_goes_to_the_matched_processes(tmp_path: Path, app: App) -> None:
    """With reload_signal and match, healer signals the app's processes itself."""
    old = app.run()
    detail = await proc_actions.reload(RELOAD, command_config(tmp_path, app, reload_signal="SIGHUP"))
    assert detail == f"sent SIGHUP to pid {old.pid}"
    deadline = time.monotonic() + 5
    while not (tmp_path / f"hup-{old.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / f"hup-{old.pid}").exists()
    assert app.running() == [old.pid]


async def test_a_failing_manager_is_an_action_error_quoting_it(
    tmp_path: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-zero exit names the command and its last line of output."""
    monkeypatch.setenv("FAKE_EXIT", "1")
    with pytest.raises(ActionError) as err:
        await proc_actions.restart(RESTART, manager_config(tmp_path, manager="systemd", name="shop"))
    assert (
        str(err.value)
        == "`systemctl restart shop` exited 1: Failed to restart shop.service: Unit shop.service not found."
    )


async def test_a_manager_missing_from_path_is_an_action_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No pm2 on PATH: say so, run nothing."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ActionError, match=r"^pm2: not found on PATH$"):
        await proc_actions.restart(RESTART, manager_config(tmp_path, manager="pm2", name="shop"))


async def test_a_manager_that_hangs_is_killed_and_the_repair_failed(
    tmp_path: Path, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart past its timeout is killed and recorded as failed."""
    monkeypatch.setenv("FAKE_SLEEP", "30")
    pb = tmp_path / "pb"
    pb.mkdir()
    (pb / "restart.toml").write_text(
        textwrap.dedent("""
        name = "process-restart"
        description = "restart, quickly"
        [[steps]]
        action = "process.restart"
        timeout = "500ms"
    """)
    )
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}],
            "process": {"manager": "systemd", "name": "shop"},
            "playbooks": {"dir": str(pb)},
        },
        tmp_path / "healer.toml",
    )
    store = Store(config.db_path)
    try:
        async with probe_context(config) as ctx:
            result = await run_repair(
                "process-restart", config=config, ctx=ctx, store=store, clock=SystemClock(),
                who=Who.PERSON, reason="test", deploy_id=None,
            )  # fmt: skip
        assert result.outcome is Outcome.FAILED
        assert "step 1 (process.restart) timed out after 500ms" in result.detail
        (row,) = store.actions()
        assert (row.outcome, row.detail) == ("failed", result.detail)
    finally:
        store.close()
    pid = json.loads(fake_bin.read_text().splitlines()[0])["pid"]
    time.sleep(0.2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


# ---- by healer itself (manager = "command") ----------------------------------------------------


async def test_command_restart_replaces_a_running_app_and_verifies_it(tmp_path: Path, app: App) -> None:
    """The old process is stopped, a new PID serves, and process-restart's checks pass."""
    old = app.run()
    assert app.pid_answering() == old.pid
    config = command_config(tmp_path, app)
    store = Store(config.db_path)
    try:
        async with probe_context(config) as ctx:
            result = await run_repair(
                "process-restart", config=config, ctx=ctx, store=store, clock=SystemClock(),
                who=Who.PERSON, reason="memory over baseline", deploy_id=None,
            )  # fmt: skip
    finally:
        store.close()
    assert result.ok and result.outcome is Outcome.OK, result.detail
    (new,) = app.running()
    assert new != old.pid and old.poll() is not None
    assert app.pid_answering() == new
    assert result.detail.startswith(f"stopped pid {old.pid} (SIGTERM); started `")
    assert f"as pid {new}; api, app healthy after" in result.detail
    assert psutil.Process(new).cwd() == str(tmp_path)
    assert (tmp_path / "state" / "app.log").exists()


async def test_command_restart_starts_a_crashed_app(tmp_path: Path, app: App) -> None:
    """Nothing running: nothing to stop, the app is started and confirmed."""
    detail = await proc_actions.restart(RESTART, command_config(tmp_path, app))
    (new,) = app.running()
    assert detail == (
        f"no running process whose command line contains {app.marker!r}; started `{' '.join(app.start)}` as pid {new}"
    )
    assert wait_for_port(app.port)


async def test_command_restart_replaces_a_hung_app(tmp_path: Path, app: App) -> None:
    """An app that accepts connections and never answers is replaced by one that answers."""
    old = app.run("hung")
    await proc_actions.restart(RESTART, command_config(tmp_path, app))
    (new,) = app.running()
    assert new != old.pid and old.poll() is not None
    assert wait_for_port(app.port) and app.pid_answering() == new


async def test_an_app_that_ignores_sigterm_is_killed(tmp_path: Path, app: App) -> None:
    """SIGTERM ignored: after stop_timeout, SIGKILL."""
    old = app.run("stubborn")
    time.sleep(0.3)  # let it install its handler
    detail = await proc_actions.restart(RESTART, command_config(tmp_path, app))
    assert detail.startswith(f"stopped pid {old.pid} (1 needed SIGKILL after 500ms)")
    assert old.wait(timeout=5) == -signal.SIGKILL
    (new,) = app.running()
    assert wait_for_port(app.port) and app.pid_answering() == new


async def test_an_app_that_dies_at_once_is_an_action_error(tmp_path: Path, app: App) -> None:
    """A start command that exits right away is not a restart: say so, point at the log."""
    start = [sys.executable, "-c", "import sys; sys.exit(3)", app.marker]
    with pytest.raises(ActionError, match=r"exited right after it started; see .*app\.log"):
        await proc_actions.restart(RESTART, command_config(tmp_path, app, start=start))


@pytest.mark.e2e
def test_a_repair_by_hand_never_stops_the_running_loop(tmp_path: Path, app: App) -> None:
    """`healer repair process-restart` restarts the app and leaves a `healer run` whose command line
    contains the match text running, same PID."""
    old = app.run()
    home = tmp_path / app.marker  # healer's own command line names its config: the match text is in it
    repo = make_repo(home / "repo")
    config = write_config(
        home,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "1h", every = "1h" }}]
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:{app.port}/"
        samples = 1
        [process]
        manager = "command"
        start = {json.dumps(app.start)}
        match = "{app.marker}"
        cwd = "{tmp_path}"
        stop_timeout = "2s"
        """,
    )
    loop = subprocess.Popen(
        [*HEALER, "--config", str(config), "run"], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lock = home / "state" / "healer.lock"
        deadline = time.monotonic() + 20
        while not (lock.exists() and lock.read_text().strip() == str(loop.pid)):
            assert loop.poll() is None and time.monotonic() < deadline, "healer run did not start"
            time.sleep(0.05)
        assert app.marker in " ".join(psutil.Process(loop.pid).cmdline())
        out = healer("--config", str(config), "repair", "process-restart", "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        assert loop.poll() is None, "the repair stopped the running healer"
        (new,) = set(app.running()) - {loop.pid}
        assert new != old.pid and old.poll() is not None
        assert app.pid_answering() == new
        assert lock.read_text().strip() == str(loop.pid)
        assert f"stopped pid {old.pid} (SIGTERM)" in out.stdout
    finally:
        loop.send_signal(signal.SIGTERM)
        _, err = loop.communicate(timeout=20)
    assert loop.returncode == 0, err
