"""4. Footprint: peak RSS of `healer run` watching 20 checks, and its CPU seconds over 60 s between cycles.

The 20 checks: 14 http (3 samples each) against a loopback app, 2 system, 2 process (the app's process),
2 command (`true`). The cadence is every 10 minutes, so after the first cycle the next 60 s are idle: the loop
only polls HEAD (about once a second) and refreshes its liveness in the store. CPU is utime + stime of the
healer process itself from /proc/<pid>/stat; peak RSS is its VmHWM from /proc/<pid>/status.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, child_env, healer_argv, http_app, log, stop, write

IDLE_S = 60.0
GOAL_RSS_MB = 80.0
GOAL_IDLE_CPU_S = 0.5
MARKER = "healer-bench-footprint-app"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def _cycles(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return int(c.execute("SELECT COUNT(*) FROM cycles").fetchone()[0])
    except sqlite3.Error:
        return 0


def _bare_rss_mb() -> float:
    """A bare interpreter's peak RSS, for scale."""
    code = (
        "import pathlib; lines = pathlib.Path('/proc/self/status').read_text().splitlines(); "
        "print(next(x for x in lines if x.startswith('VmHWM')).split()[1])"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True, env=child_env())
    return int(out.stdout) / 1024


def run(work: Path) -> dict[str, Any]:
    log(f"footprint: healer run with 20 checks, {IDLE_S:g} s idle")
    repo = work / "app"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "app.py").write_text("print('hello')\n")
    env = {**child_env(), "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@localhost", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@localhost"}  # fmt: skip
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "commit.gpgsign=false", "commit", "-q", "-m", "v1"],
    ):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, capture_output=True)
    with http_app(marker=MARKER) as (base, _):
        checks = [f'[[checks]]\nname = "api{i}"\ntype = "http"\nurl = "{base}/fast?{i}"\n' for i in range(14)]
        system = 'type = "system"\nmemory_max_percent = 99.0\ndisk_max_percent = 99.0\n'
        checks += [f'[[checks]]\nname = "host{i}"\n{system}' for i in range(2)]
        checks += [f'[[checks]]\nname = "proc{i}"\ntype = "process"\nmatch = "{MARKER}"\n' for i in range(2)]
        checks += [f'[[checks]]\nname = "cmd{i}"\ntype = "command"\nargv = ["true"]\n' for i in range(2)]
        config = write(
            work / "healer.toml",
            f'state_dir = "state"\n[app]\nname = "bench"\nrepo = "{repo}"\n'
            '[schedule]\nphases = [{ until = "72h", every = "10m" }]\n' + "\n".join(checks),
        )
        db = work / "state" / "healer.db"
        with open(work / "healer-run.log", "wb") as out:
            proc = subprocess.Popen(healer_argv(config, "run"), stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                                    stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while _cycles(db) < 1:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"healer run made no cycle: {(work / 'healer-run.log').read_text()[-2000:]}")
                time.sleep(0.2)
            time.sleep(3)  # let the first cycle's follow-up work (alerts, summaries, pruning) finish
            cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
            time.sleep(IDLE_S)
            cpu1, t1 = _cpu_s(proc.pid), time.monotonic()
            cycles_after = _cycles(db)
            peak = _status_mb(proc.pid, "VmHWM")
            rss_now = _status_mb(proc.pid, "VmRSS")
        finally:
            stop(proc)
    idle = (cpu1 - cpu0) * IDLE_S / (t1 - t0)
    with sqlite3.connect(db) as c:
        ok = c.execute("SELECT ok FROM cycles ORDER BY id LIMIT 1").fetchone()[0]
    bare = _bare_rss_mb()
    return {
        "rss_mb": round(peak, 1),
        "idle_cpu_s": round(idle, 3),
        "footprint": {
            "goal": f"rss < {GOAL_RSS_MB:g} MB, idle CPU < {GOAL_IDLE_CPU_S} s per {IDLE_S:g} s",
            "met": peak < GOAL_RSS_MB and idle < GOAL_IDLE_CPU_S,
            "rss_at_end_mb": round(rss_now, 1),
            "python_bare_rss_mb": round(bare, 1),
            "idle_window_s": round(t1 - t0, 1),
            "cycles_in_idle_window": cycles_after - 1,
            "first_cycle_ok": bool(ok),
            "checks": {"http": 14, "system": 2, "process": 2, "command": 2},
            "note": (
                "`healer run` (python -m healer) watching 20 checks: 14 http (3 samples each) against a loopback "
                "app, 2 system, 2 process (the app's process, by command line), 2 command (`true`); phases every "
                "10m, no alert channel but the log, no server, no heartbeat. rss_mb: VmHWM (peak resident set) "
                f"of the healer process after its first cycle and {IDLE_S:g} s idle. idle_cpu_s: utime + stime of "
                f"the healer process over the {IDLE_S:g} s after the first cycle (+3 s), when no cycle is due: "
                "the loop polls HEAD and writes its liveness to the store about once a second."
            ),
        },
    }
