"""The shipped manager files keep healer running: a real PM2 and a real supervisord run `healer run`
with deploy/ecosystem.config.js and deploy/supervisor.conf, pointed at test paths (I/O).

Each manager must restart healer after SIGKILL (an OOM kill is one) and leave it stopped after
exit 2 (a config error). The files' restart keys are kept as shipped; only supervisor's startsecs
is shortened, so a test takes seconds. There is no systemd here: its unit's keys are read instead.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import make_repo, write_config
from services import HttpApp, Pm2, Supervisord, pid_alive, wait_until

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RESTART_WAIT = 1.5  # seconds to watch for a restart that must not come (PM2 restarts at once)
SHORT_STARTSECS = "1"  # the shipped 5 s, shortened


def healer_config(tmp_path: Path, url: str, *, broken: bool = False) -> Path:
    """A minimal valid healer.toml (one http check, state in tmp_path); `broken` adds an unknown key."""
    repo = make_repo(tmp_path / "app")
    return write_config(
        tmp_path,
        f"""
        state_dir = "state"
        {"no_such_key = 1" if broken else ""}
        [app]
        name = "shop"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "1h", every = "1s" }}]
        incident_every = "1s"
        [[checks]]
        name = "api"
        type = "http"
        url = "{url}/health"
        timeout = "1s"
        """,
    )


def healer_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "healer", "--config", str(config), "run"]


# ---- PM2 -------------------------------------------------------------------------------------


def start_under_pm2(pm2: Pm2, config: Path, cwd: Path, argv: list[str] | None = None) -> None:
    """`pm2 start` a wrapper ecosystem file that requires the shipped one and replaces only the
    command (healer on `config`, or `argv`) and its directory."""
    argv = argv or healer_argv(config)
    wrapper = pm2.home / "healer.config.js"
    wrapper.write_text(
        f"""
const shipped = require({json.dumps(str(DEPLOY / "ecosystem.config.js"))});
const app = shipped.apps[0];
module.exports = {{
  apps: [{{
    ...app,
    script: {json.dumps(argv[0])},
    args: {json.dumps(argv[1:])},
    cwd: {json.dumps(str(cwd))},
  }}],
}};
"""
    )
    pm2.run("start", str(wrapper))


def pm2_env(pm2: Pm2) -> dict[str, Any]:
    (app,) = [a for a in pm2.jlist() if a["name"] == "healer"]
    env = app["pm2_env"]
    assert isinstance(env, dict)
    return env


def test_pm2_restarts_healer_after_sigkill(pm2: Pm2, tmp_path: Path, http_app: Callable[..., HttpApp]) -> None:
    """Under the shipped PM2 file a `healer run` killed with SIGKILL comes back with a new PID."""
    start_under_pm2(pm2, healer_config(tmp_path, http_app().url), tmp_path)
    env = pm2_env(pm2)
    # PM2 keeps a one-item list as the item itself
    assert env["stop_exit_codes"] in (2, [2]) and env["autorestart"] is True
    log = Path(env["pm_out_log_path"])
    assert wait_until(lambda: log.exists() and '"level"' in log.read_text(), 20), pm2.status("healer")
    pid = pm2.pid("healer")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: pm2.pid("healer") not in (None, pid), 15), pm2_env(pm2)["status"]
    new = pm2.pid("healer")
    assert new is not None and pid_alive(new) and not pid_alive(pid)
    assert pm2_env(pm2)["restart_time"] == 1


def test_pm2_logs_every_healer_line_to_one_file(pm2: Pm2, tmp_path: Path, http_app: Callable[..., HttpApp]) -> None:
    """The shipped PM2 file sends healer's stderr and stdout to one healer.log, not the error log."""
    start_under_pm2(pm2, healer_config(tmp_path, http_app().url), tmp_path)
    env = pm2_env(pm2)
    log = pm2.home / "logs" / "healer.log"
    assert env["pm_out_log_path"] == env["pm_err_log_path"] == str(log)
    assert wait_until(lambda: log.exists() and '"level": "info"' in log.read_text(), 20), log
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["level"] == "info" for line in lines)
    assert not list((pm2.home / "logs").glob("*error*"))


def test_pm2_leaves_healer_stopped_after_exit_2(pm2: Pm2, tmp_path: Path, http_app: Callable[..., HttpApp]) -> None:
    """Under the shipped PM2 file a config error (exit 2) is not restarted."""
    start_under_pm2(pm2, healer_config(tmp_path, http_app().url, broken=True), tmp_path)
    assert wait_until(lambda: pm2_env(pm2)["status"] == "stopped", 20), pm2_env(pm2)["status"]
    time.sleep(RESTART_WAIT)
    env = pm2_env(pm2)
    assert (env["status"], env["exit_code"], env["restart_time"]) == ("stopped", 2, 0)
    assert "no_such_key" in (pm2.home / "logs" / "healer.log").read_text()


def test_pm2_stop_is_not_undone(pm2: Pm2, tmp_path: Path, http_app: Callable[..., HttpApp]) -> None:
    """`pm2 stop healer` ends healer (SIGINT, exit 0) and PM2 does not start it again."""
    start_under_pm2(pm2, healer_config(tmp_path, http_app().url), tmp_path)
    pid = pm2.pid("healer")
    assert pid is not None
    pm2.run("stop", "healer")
    assert wait_until(lambda: not pid_alive(pid), 20)
    time.sleep(RESTART_WAIT)
    env = pm2_env(pm2)
    assert (env["status"], env["restart_time"]) == ("stopped", 0)


def test_pm2_stop_signals_healer_alone(pm2: Pm2, tmp_path: Path) -> None:
    """`pm2 stop` sends its SIGINT to healer only: a child healer waits for (a rollback's `after`
    command, in its own session as healer's runner starts it) is not signalled and runs on."""
    hit, child_pid = tmp_path / "child-got-sigint", tmp_path / "child.pid"
    child = (
        "import signal, sys, time; "
        "signal.signal(signal.SIGINT, lambda *_: open(sys.argv[1], 'w').write('INT')); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"c = subprocess.Popen([sys.executable, '-c', {child!r}, {str(hit)!r}], start_new_session=True); "
        f"open({str(child_pid)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    start_under_pm2(pm2, tmp_path / "unused.toml", tmp_path, argv=[sys.executable, "-c", parent])
    assert pm2_env(pm2)["treekill"] is False
    assert wait_until(lambda: child_pid.exists() and child_pid.read_text(), 20)
    pid, kid = pm2.pid("healer"), int(child_pid.read_text())
    assert pid is not None
    try:
        pm2.run("stop", "healer")
        assert wait_until(lambda: not pid_alive(pid), 20)
        time.sleep(0.3)
        assert pid_alive(kid) and not hit.exists()
    finally:
        os.kill(kid, signal.SIGKILL)


# ---- supervisord -----------------------------------------------------------------------------


def shipped_program(cwd: Path) -> dict[str, str]:
    """deploy/supervisor.conf's [program:healer] with the test's directory and a shorter
    startsecs, without its command and log file (the helper writes the test's); every other key
    as shipped."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(DEPLOY / "supervisor.conf")
    program = dict(parser["program:healer"])
    for key in ("command", "stdout_logfile", "stdout_logfile_maxbytes", "stdout_logfile_backups"):
        program.pop(key)
    return program | {"directory": str(cwd), "startsecs": SHORT_STARTSECS}


def test_supervisord_restarts_healer_after_sigkill(
    supervisord: Callable[..., Supervisord], tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """Under the shipped [program:healer] a `healer run` killed with SIGKILL comes back with a new PID."""
    config = healer_config(tmp_path, http_app().url)
    sv = supervisord("healer", healer_argv(config), options=shipped_program(tmp_path))
    assert sv.state() == "RUNNING", sv.log()
    pid = sv.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: sv.pid() not in (None, pid), 15), sv.daemon_log()
    assert wait_until(lambda: sv.state() == "RUNNING", 15), sv.daemon_log()
    assert not pid_alive(pid)


@pytest.mark.parametrize(
    ("startsecs", "state"),
    [
        # exitcodes do not count while starting: startretries=0 is what keeps it down
        pytest.param("60", "FATAL", id="exit-2-while-starting"),
        pytest.param("0", "EXITED", id="exit-2-once-running"),
    ],
)
def test_supervisord_leaves_healer_stopped_after_exit_2(
    supervisord: Callable[..., Supervisord],
    tmp_path: Path,
    http_app: Callable[..., HttpApp],
    startsecs: str,
    state: str,
) -> None:
    """Under the shipped [program:healer] a config error (exit 2) is started once and not again."""
    config = healer_config(tmp_path, http_app().url, broken=True)
    program = shipped_program(tmp_path) | {"startsecs": startsecs}
    sv = supervisord("healer", healer_argv(config), options=program)
    assert wait_until(lambda: sv.state() == state, 15), sv.daemon_log()
    time.sleep(RESTART_WAIT)
    assert sv.state() == state and sv.pid() is None
    assert sv.daemon_log().count("spawned: 'healer'") == 1, sv.daemon_log()
    assert "no_such_key" in sv.log()


# ---- systemd ---------------------------------------------------------------------------------


def unit_keys(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given in a systemd unit file (keys may repeat)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        keys.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return keys


def test_systemd_unit_restarts_after_a_kill_not_after_exit_2_and_keeps_files_private() -> None:
    """The unit restarts on failure (SIGKILL and OOM kills included), never after exit 2, with UMask 0077."""
    keys = unit_keys(DEPLOY / "healer.service")
    # on-failure restarts after every end but a clean one; SIGKILL is not clean unless listed in
    # SuccessExitStatus (https://www.freedesktop.org/software/systemd/man/systemd.service.html)
    assert keys["Service.Restart"] == ["on-failure"]
    assert "2" in " ".join(keys["Service.RestartPreventExitStatus"]).split()
    success = " ".join(keys.get("Service.SuccessExitStatus", [])).split()
    prevent = " ".join(keys["Service.RestartPreventExitStatus"]).split()
    assert not {"SIGKILL", "KILL", "9"} & {*success, *prevent}
    assert keys["Service.UMask"] == ["0077"]


def test_the_managers_stop_signal_reaches_healer_alone() -> None:
    """systemd (KillMode=mixed) and supervisor (stopasgroup=false) signal healer, not what it waits
    for, and give it more time to stop than a repair or rollback in flight gets."""
    from healer.loop import STOP_ACTION_WAIT

    keys = unit_keys(DEPLOY / "healer.service")
    assert keys["Service.KillMode"] == ["mixed"]
    assert int(keys["Service.TimeoutStopSec"][0]) > STOP_ACTION_WAIT.total_seconds() + 2
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(DEPLOY / "supervisor.conf")
    program = parser["program:healer"]
    assert program["stopasgroup"] == "false"
    assert int(program["stopwaitsecs"]) > STOP_ACTION_WAIT.total_seconds() + 2
