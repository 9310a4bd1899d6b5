"""The PM2 and supervisord test helpers drive real managers: start, PID, restart, nothing left (I/O)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from services import Pm2, Supervisord, pid_alive, wait_until

from healer.actions.process import manager_argv
from healer.config import parse_config

# a marker in the command line, to tell it in /proc
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600); 'healer-test-sleeper'"]
CHECKS = [{"name": "api", "type": "http", "url": "http://127.0.0.1:1/health"}]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_pm2_starts_reports_and_restarts_a_program(pm2: Pm2, tmp_path: Path) -> None:
    """pm2.start runs the argv under a private PM2 whose `pm2 restart` gives the program a new PID."""
    pid = pm2.start("sleeper", SLEEPER, tmp_path)
    assert pid_alive(pid) and "healer-test-sleeper" in _cmdline(pid)
    assert Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()
    new = pm2.restart("sleeper")
    assert new is not None and new != pid and pid_alive(new)
    assert not pid_alive(pid)


def test_pm2_env_points_a_child_pm2_at_the_same_daemon(pm2: Pm2, tmp_path: Path) -> None:
    """A child process given pm2.env and healer's [process] argv restarts the app in that daemon."""
    pid = pm2.start("sleeper", SLEEPER, tmp_path)
    config = parse_config({"checks": CHECKS, "process": pm2.process_section("sleeper")}, tmp_path / "healer.toml")
    assert config.process is not None
    argv = manager_argv(config.process, "restart")
    assert argv == ["pm2", "restart", "sleeper"]
    proc = subprocess.run(argv, env=pm2.env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    new = pm2.pid("sleeper")
    assert new is not None and new != pid


def test_pm2_kill_leaves_nothing_running(tmp_path: Path) -> None:
    """Pm2.kill stops the program and the daemon and removes PM2_HOME."""
    pm2 = Pm2()
    try:
        pid = pm2.start("sleeper", SLEEPER, tmp_path)
        daemon = pm2.daemon_pid()
        assert daemon is not None and pid_alive(daemon)
    finally:
        pm2.kill()
    assert not pid_alive(pid) and not pid_alive(daemon)
    assert not pm2.home.exists()


def test_supervisord_starts_reports_and_restarts_a_program(
    supervisord: Callable[..., Supervisord], tmp_path: Path
) -> None:
    """supervisord(...) runs the program, and `supervisorctl -c CONF restart` gives it a new PID."""
    sv = supervisord("sleeper", SLEEPER, tmp_path)
    assert sv.state() == "RUNNING"
    pid = sv.pid()
    assert pid is not None and "healer-test-sleeper" in _cmdline(pid)
    assert Path(f"/proc/{pid}/cwd").resolve() == tmp_path.resolve()
    new = sv.restart()
    assert new is not None and new != pid and pid_alive(new)
    assert not pid_alive(pid)


def test_supervisord_control_argv_works_from_healers_process_section(
    supervisord: Callable[..., Supervisord], tmp_path: Path
) -> None:
    """healer's [process] argv for the helper (control = supervisorctl -c CONF) restarts the program."""
    sv = supervisord("sleeper", SLEEPER, tmp_path)
    pid = sv.pid()
    config = parse_config({"checks": CHECKS, "process": sv.process_section()}, tmp_path / "healer.toml")
    assert config.process is not None
    argv = manager_argv(config.process, "restart")
    assert argv == [*sv.control_argv, "restart", "sleeper"]
    proc = subprocess.run(argv, env=sv.env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    new = sv.pid()
    assert new is not None and new != pid


def test_supervisord_does_not_restart_a_program_that_died(
    supervisord: Callable[..., Supervisord], tmp_path: Path
) -> None:
    """With the helper's default autorestart=false a killed program stays down: healer restarts it."""
    sv = supervisord("sleeper", SLEEPER, tmp_path)
    pid = sv.pid()
    assert pid is not None
    subprocess.run(["kill", "-9", str(pid)], check=True)
    assert wait_until(lambda: sv.state() == "EXITED", 10), sv.state()
    assert sv.pid() is None


def test_supervisord_stop_leaves_nothing_running(tmp_path: Path) -> None:
    """Supervisord.stop ends the program and supervisord and removes its directory."""
    sv = Supervisord("sleeper", SLEEPER, tmp_path)
    try:
        sv.start()
        pid = sv.pid()
        assert pid is not None
        assert sv.process is not None
        daemon = sv.process.pid
    finally:
        sv.stop()
    assert not pid_alive(pid) and not pid_alive(daemon)
    assert not sv.dir.exists()
