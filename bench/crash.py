"""6. Crash to detection and crash to healthy: healer's watcher beside supervisor's autorestart and superlance's httpok.

The same app (healer.demo.sampleapp, from a git repo) is killed with SIGKILL, CRASHES times per setup, each time healthy
and idle before the kill:

- healer, manager = "command": `healer run` with every cadence an hour, so only the watcher (a pidfd on the app's
  PID) can bring the early cycle that restarts it; a fresh state dir per crash (no backoff carried over);
- healer, manager = "supervisor" (autorestart=false): the PID asked of `supervisorctl pid`, the restart through
  `supervisorctl restart` after MANAGER_SETTLE;
- supervisor alone, autorestart=true (the reference for a restart): supervisord reaps the child and spawns it again;
- superlance httpok under supervisor (autorestart=false), on TICK_5 (its fastest tick): the reference for detection
  by polling the URL. httpok restarts only a program in the RUNNING state, so it never brings a crashed app back.

Detection is when the tool knew: healer's `watch.woke` log line, supervisord's `exited:` log line, the line httpok
writes when its check fails (stamped as it appears; httpok writes no time). Healthy is when /health answers 200
again (polled every 10 ms). Figures are medians and ratios against the references measured in the same run.
Needs supervisor and superlance in the venv (`pip install supervisor superlance`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import PYTHON, child_env, free_port, healer_argv, log, median, stop, wait_for_port, write
from healer.demo import sampleapp

CRASHES = 3
HEALTHY_WITHIN = 30.0  # seconds; past it the setup is said not to bring the app back
HTTPOK_WITHIN = 15.0  # httpok's check runs every 5 s (TICK_5) and retries a refused connection for its -t
BIN = Path(PYTHON).parent
APP = "shop"


def _git_repo(repo: Path) -> Path:
    repo.mkdir(parents=True)
    (repo / "app.json").write_text(json.dumps({"version": "1.0"}))
    env = {**child_env(), "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@localhost"}  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "commit.gpgsign=false", "commit", "-qm", "v1"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    return repo


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _until(pred: Callable[[], Any], timeout: float, every: float = 0.01) -> float | None:
    """The time.time() at which `pred` first held, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.time()
        time.sleep(every)
    return None


def _app_pid(repo: Path) -> int | None:
    """The sample app's PID (by its command line), without psutil's import cost."""
    text = sampleapp.match_text(repo)
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    stat = (d / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[0] != "Z":
                        return int(d.name)
    return None


# ---- supervisord -----------------------------------------------------------------------------------


class Supervisor:
    """A supervisord of our own with the app as [program:shop], and httpok as an event listener if asked."""

    def __init__(self, work: Path, argv: list[str], cwd: Path, port: int, *, autorestart: bool, httpok: bool) -> None:
        self.dir = work
        work.mkdir(parents=True)
        self.sock = work / "supervisor.sock"
        self.conf = work / "supervisord.conf"
        self.log = work / "supervisord.log"
        self.httpok_log = work / "httpok.log"
        lines = [
            "[unix_http_server]", f"file={self.sock}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.log}", f"pidfile={work / 'supervisord.pid'}", f"childlogdir={work}",
            "loglevel=info", "user=root" if os.geteuid() == 0 else "", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "", "[supervisorctl]", f"serverurl=unix://{self.sock}", "",
            f"[program:{APP}]", f"command={' '.join(argv)}", f"directory={cwd}", "autostart=true",
            f"autorestart={'true' if autorestart else 'false'}", "startsecs=1", "startretries=3",
            "stopasgroup=true", "killasgroup=true", "redirect_stderr=true", f"stdout_logfile={work / 'app.log'}", "",
        ]  # fmt: skip
        if httpok:
            lines += [
                "[eventlistener:httpok]", f"command={BIN / 'httpok'} -p {APP} -t 2 http://127.0.0.1:{port}/health",
                "events=TICK_5", f"stderr_logfile={self.httpok_log}", f"stdout_logfile={work / 'httpok.out'}", "",
            ]  # fmt: skip
        self.conf.write_text("\n".join(lines))
        self.control = [str(BIN / "supervisorctl"), "-c", str(self.conf)]
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(self.conf)], env=child_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if _until(lambda: self.state() == "RUNNING", 20, 0.1) is None:
            raise RuntimeError(f"supervisord did not start {APP}: {self.log.read_text()[-1500:]}")

    def rpc(self) -> Any:
        """supervisord's XML-RPC interface, on a fresh connection (one that failed is not reused)."""
        from supervisor.xmlrpc import SupervisorTransport  # the venv's supervisor: a bench requirement

        return xmlrpc.client.ServerProxy("http://127.0.0.1", SupervisorTransport(None, None, f"unix://{self.sock}"))

    def state(self) -> str | None:
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            return str(self.rpc().supervisor.getProcessInfo(APP)["statename"])
        return None

    def pid(self) -> int:
        return int(self.rpc().supervisor.getProcessInfo(APP)["pid"])

    def exited_at(self, after: float) -> float | None:
        """When supervisord logged the app's exit (its own clock, local time, milliseconds), after `after`."""
        for line in self.log.read_text().splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ exited: " + APP, line)
            if m:
                t = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
                if t >= after - 0.002:
                    return t
        return None

    def close(self) -> None:
        stop(self.proc, timeout=15)


# ---- healer ----------------------------------------------------------------------------------------


def _healer_toml(work: Path, repo: Path, port: int, process: str) -> Path:
    return write(
        work / "healer.toml",
        f"""
        state_dir = "state"
        [app]
        name = "{APP}"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "72h", every = "1h" }}]
        incident_every = "1h"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:{port}/health"
        timeout = "2s"
        """
        + process,
    )


def _woke_at(log_path: Path) -> float | None:
    for line in log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if row.get("event") == "watch.woke":
                return datetime.fromisoformat(row["ts"]).timestamp()
    return None


def _watching(log_path: Path) -> bool:
    return any('"watch.pids"' in line for line in log_path.read_text().splitlines())


@contextlib.contextmanager
def _healer_run(config: Path) -> Iterator[Path]:
    """A fresh `healer run` (its state dir emptied), once it watches the app; yields its log."""
    shutil.rmtree(config.parent / "state", ignore_errors=True)
    log_path = config.parent / "healer.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(healer_argv(config, "run"), stdout=subprocess.DEVNULL, stderr=out, env=child_env(),
                                stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        if _until(lambda: _watching(log_path) or proc.poll() is not None, 60, 0.05) is None or proc.poll() is not None:
            raise RuntimeError(f"healer run does not watch the app: {log_path.read_text()[-2000:]}")
        time.sleep(1.5)  # the first cycle and its follow-up work done: healer idle, as between hourly cycles
        yield log_path
    finally:
        stop(proc, timeout=20)


def _crash(pid: int, port: int, detected: Callable[[float], float | None], within: float) -> dict[str, Any]:
    """SIGKILL `pid`, then look every 10 ms for the detection and /health answering 200 (up to `within`):
    seconds to each, None where it did not happen."""
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    seen: float | None = None
    healthy: float | None = None
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and (seen is None or healthy is None):
        if healthy is None and _healthy(port):
            healthy = time.time()
        if seen is None:
            seen = detected(t0)
        time.sleep(0.01)
    return {
        "detect_s": None if seen is None else round(seen - t0, 4),
        "healthy_s": None if healthy is None else round(healthy - t0, 3),
    }


def _healer_command(work: Path) -> list[dict[str, Any]]:
    repo = _git_repo(work / "app")
    port = free_port()
    argv = sampleapp.serve_argv(repo, port)
    process = (f'[process]\nmanager = "command"\nstart = {json.dumps(argv)}\n'
               f"match = {json.dumps(sampleapp.match_text(repo))}\ncwd = {json.dumps(str(repo))}\n")  # fmt: skip
    config = _healer_toml(work, repo, port, process)
    first = subprocess.Popen(argv, cwd=repo, start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    out = []
    try:
        wait_for_port(port)
        for _ in range(CRASHES):
            with _healer_run(config) as log_path:
                pid = _app_pid(repo)
                assert pid is not None
                out.append(_crash(pid, port, lambda t0, p=log_path: _woke_at(p), HEALTHY_WITHIN))
    finally:
        stop(first)
        pid = _app_pid(repo)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    return out


def _under_supervisor(work: Path, *, autorestart: bool, httpok: bool, with_healer: bool) -> list[dict[str, Any]]:
    repo = _git_repo(work / "app")
    port = free_port()
    sv = Supervisor(work / "sv", sampleapp.serve_argv(repo, port), repo, port, autorestart=autorestart, httpok=httpok)
    out = []
    try:
        wait_for_port(port)
        if with_healer:
            process = f'[process]\nmanager = "supervisor"\nname = "{APP}"\ncontrol = {json.dumps(sv.control)}\n'
            config = _healer_toml(work, repo, port, process)
        for _ in range(CRASHES):
            if not _until(lambda: _healthy(port), 20):
                sv.rpc().supervisor.startProcess(APP)
                _until(lambda: _healthy(port), 20)
            if with_healer:
                with _healer_run(config) as log_path:
                    out.append(_crash(sv.pid(), port, lambda t0, p=log_path: _woke_at(p), HEALTHY_WITHIN))
            elif httpok:
                out.append(_crash(sv.pid(), port, _httpok_detector(sv), HTTPOK_WITHIN))
            else:
                out.append(_crash(sv.pid(), port, sv.exited_at, HEALTHY_WITHIN))
    finally:
        sv.close()
    return out


def _httpok_detector(sv: Supervisor) -> Callable[[float], float | None]:
    """Now, once httpok has written that its check failed since this was made (httpok writes no time: the
    line is stamped when the bench, looking every 10 ms, first sees it)."""

    def failures() -> int:
        text = sv.httpok_log.read_text() if sv.httpok_log.exists() else ""
        return text.count("Restarting selected processes")

    before = failures()
    return lambda t0: time.time() if failures() > before else None


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    detect = [r["detect_s"] for r in runs if r["detect_s"] is not None]
    healthy = [r["healthy_s"] for r in runs if r["healthy_s"] is not None]
    return {
        "runs": runs,
        "detect_s_median": round(median(detect), 4) if detect else None,
        "healthy_s_median": round(median(healthy), 3) if healthy else None,
        "restarted": f"{len(healthy)}/{len(runs)}",
    }


def run(work: Path) -> dict[str, Any]:
    log(f"crash: {CRASHES} SIGKILLs each: healer (command), healer (supervisor), supervisor autorestart, httpok")
    work.mkdir(parents=True, exist_ok=True)
    setups = {
        "healer_command": _summary(_healer_command(work / "healer-command")),
        "healer_supervisor": _summary(
            _under_supervisor(work / "healer-sv", autorestart=False, httpok=False, with_healer=True)
        ),
        "supervisor_autorestart": _summary(
            _under_supervisor(work / "sv-autorestart", autorestart=True, httpok=False, with_healer=False)
        ),
        "httpok_tick5": _summary(_under_supervisor(work / "httpok", autorestart=False, httpok=True, with_healer=False)),
    }
    ours, sv, httpok = setups["healer_command"], setups["supervisor_autorestart"], setups["httpok_tick5"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else float(f"{a / b:.2g}")

    healthy_ratio = ratio(ours["healthy_s_median"], sv["healthy_s_median"])
    detect_vs_httpok = ratio(ours["detect_s_median"], httpok["detect_s_median"])
    setups["ratios"] = {
        "healer_command_detect_vs_supervisor": ratio(ours["detect_s_median"], sv["detect_s_median"]),
        "healer_supervisor_healthy_vs_supervisor_autorestart": ratio(
            setups["healer_supervisor"]["healthy_s_median"], sv["healthy_s_median"]
        ),
    }
    return {
        "crash_detect_ms": None if ours["detect_s_median"] is None else round(ours["detect_s_median"] * 1000, 1),
        "crash_to_healthy_s": ours["healthy_s_median"],
        "crash_healthy_ratio_vs_supervisor": healthy_ratio,
        "crash_detect_ratio_vs_httpok": detect_vs_httpok,
        "crash": {
            "goal": "a crash between hourly cycles is restarted within a few seconds (healthy < 10 s), every time",
            "met": ours["restarted"] == f"{CRASHES}/{CRASHES}" and (ours["healthy_s_median"] or 99) < 10,
            **setups,
            "note": (
                f"SIGKILL of the sample app, healthy and idle before, {CRASHES} times per setup. healer: `healer run` "
                "with every cadence 1h (only the watcher can wake it), a fresh state dir per crash; detect = its "
                "watch.woke log line; under supervisor (autorestart=false) it asks `supervisorctl pid` and waits "
                "MANAGER_SETTLE (3 s) before its cycle. supervisor_autorestart: detect = supervisord's `exited:` "
                "log line. httpok_tick5: superlance httpok -t 2 on TICK_5, autorestart=false; detect = its "
                "'Restarting selected processes' line; it restarts only RUNNING programs, so a crashed one never "
                "comes back. healthy = /health answering 200, polled every 10 ms. Ratios: healer (command) over "
                "the reference, medians."
            ),
        },
    }
