"""`healer demo`: a launch on this machine in under a minute, with nothing to set up (I/O).

In a temporary directory the demo builds a sample web app (healer.sampleapp) in a real git
repository: `v1.0` tagged `stable-v1`, then a bad `v1.1`. It deploys v1.0, starts a real
`healer run` on a healer.toml whose 72-hour launch window is squeezed into a minute with
ordinary durations, and plays the story while it shows, from healer's state store, every
cycle's verdict, every action and its outcome, and every alert as chat would show it:

1. a healthy baseline;
2. the app crashes (SIGKILL) and process-restart brings it back;
3. with redis-server on PATH: the rate limiter's keys are flooded, the app answers 429 to
   everyone, rate-limit-clear fixes it (skipped, saying why, without redis-server);
4. the bad v1.1 is deployed; restarting does not help; after five failing cycles healer rolls
   back to stable-v1 and the app is healthy again.

It ends with `healer history` and where the files are. Every process it started (healer run,
the app, redis-server) is stopped on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from healer import sampleapp
from healer.alerts.message import render_text
from healer.alerts.outbox import AlertRecord, Outbox
from healer.config import Config, load_config
from healer.errors import HealerError
from healer.model import CheckResult, Deploy, Severity
from healer.schedule import phase_at
from healer.store import ActionRow, CycleRow, IncidentRow, Store

APP_NAME = "demo-shop"
STABLE_TAG = "stable-v1"
DEADLINE = 58.0  # seconds: the whole story, set-up and clean-up included, fits in a minute
POLL = 0.1  # seconds between two looks at the state store
HEALER_START_WAIT = 15.0
STOP_WAIT = 5.0
_INDENT = 17  # the width of "  12.3s  incident " (where the chat bubbles start)
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "healer demo",
    "GIT_AUTHOR_EMAIL": "demo@healer.invalid",
    "GIT_COMMITTER_NAME": "healer demo",
    "GIT_COMMITTER_EMAIL": "demo@healer.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",  # the user's git settings (signing, hooks) have no say in the demo's repo
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}

# The demo's own process-restart: the shipped one with the minute-long window's numbers, so a
# restart that does not help is known within seconds, not after the shipped 60 s.
_PROCESS_RESTART = """\
# The shipped process-restart with the demo's compressed numbers (a real launch keeps 30m / 60s).
name = "process-restart"
description = "Restart the app (stop what [process] match finds, start [process] start), confirm it is healthy"
cooldown = "4s"
max_per_window = 2
verify = ["http", "process"]
verify_within = "3s"

[[steps]]
action = "process.restart"
timeout = "20s"
"""


_ACTS = (
    (
        "Deploy v1.0 and take the baseline",
        "The sample app v1.0 (tagged stable-v1) is deployed and `healer run` starts watching it. The first "
        "fully healthy cycle becomes the baseline that every later cycle of this deploy is judged against.",
    ),
    (
        "The app crashes",
        "The demo kills the app with SIGKILL. healer sees the process gone and the API down, opens an "
        "incident and runs process-restart, which starts the app again and checks that it is healthy.",
    ),
    (
        "A flood trips the rate limiter",
        "The app counts requests per client in the Redis keys ratelimit:<ip> and answers 429 past its limit. "
        "The demo fills those keys; healer sees http.rate_limited and runs rate-limit-clear.",
    ),
    (
        "A bad release",
        "v1.1 is deployed: checked out, and the app restarted on it. Its /health answers 500. healer opens a "
        "new launch window for it, tries process-restart, which cannot fix bad code, and after five failing "
        "cycles in a row rolls back to the newest stable tag, stable-v1.",
    ),
)


class DemoFailed(Exception):
    """The story could not go on: one line saying why."""


class _Interrupted(BaseException):
    """SIGTERM, turned into an exception like Ctrl-C's KeyboardInterrupt."""


@dataclass
class _Paths:
    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "app"

    @property
    def config(self) -> Path:
        return self.root / "healer.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def db(self) -> Path:
        return self.state / "healer.db"

    @property
    def playbooks(self) -> Path:
        return self.root / "playbooks"

    @property
    def healer_log(self) -> Path:
        return self.root / "healer.log"

    @property
    def app_log(self) -> Path:
        return self.state / "app.log"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"


# ---- the entry point ---------------------------------------------------------------------------


def run_demo(*, keep: bool = False, console: Console | None = None, workdir: Path | None = None) -> int:
    """Play the demo; 0 when it ended with a healthy app after the rollback, 1 otherwise,
    130 when interrupted (Ctrl-C or SIGTERM). Every process it started is stopped before it
    returns. `workdir` (default: a new temporary directory) is where everything goes; it is
    removed at the end unless `keep`.
    """
    con = console or Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    if workdir is None:
        root = Path(tempfile.mkdtemp(prefix="healer-demo-"))
    else:
        root = Path(workdir).resolve()
        if root.exists() and any(root.iterdir()):
            con.print(f"[red]the demo needs an empty directory[/]: {root} is not empty")
            return 1
        root.mkdir(parents=True, exist_ok=True)
    demo = _Demo(_Paths(root), con, keep=keep)
    restore = _on_sigterm_interrupt()
    code = 1
    try:
        code = 0 if demo.play() else 1
    except (KeyboardInterrupt, _Interrupted):
        con.print()
        con.print("[yellow]interrupted[/]: stopping everything the demo started")
        code = 130
    except DemoFailed as e:
        con.print(f"[red]the demo could not go on[/]: {e}")
        code = 1
    finally:
        with _signals_held():
            demo.shutdown()
            demo.report_files(code)
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
        restore()
    return code


def _on_sigterm_interrupt() -> Callable[[], None]:
    """SIGTERM ends the demo like Ctrl-C does (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted()

    old = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, old)

    return restore


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A second Ctrl-C during clean-up must not leave processes behind: hold the signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---- the story ---------------------------------------------------------------------------------


class _Demo:
    def __init__(self, paths: _Paths, console: Console, *, keep: bool) -> None:
        self.p = paths
        self.con = console
        self.keep = keep
        self.t0 = time.monotonic()
        self.deadline = self.t0 + DEADLINE
        self.port = 0
        self.redis_port: int | None = None
        self.redis_skipped: str | None = None
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.healer_proc: subprocess.Popen[bytes] | None = None
        self.config: Config | None = None
        self.commits: dict[str, str] = {}  # "v1.0" / "v1.1" -> sha
        self.feed: _Feed | None = None

    # -- output --

    def stamp(self) -> str:
        return f"{time.monotonic() - self.t0:5.1f}s"

    def say(self, who: str, text: str | Text, style: str = "") -> None:
        line = Text(f"{self.stamp()}  ", style="dim")
        line.append(f"{who:<9}", style=style or "bold")
        line.append(text if isinstance(text, Text) else Text(text))
        self.con.print(line)

    def act(self, n: int) -> None:
        title, what = _ACTS[n - 1]
        self.con.print()
        self.con.print(Rule(f"[bold]{n}. {title}[/]", align="left", style="cyan"))
        self.con.print(Text(textwrap.fill(what, width=max(min(self.con.width, 100) - 2, 40)), style="italic"))

    # -- the whole play --

    def play(self) -> bool:
        """Set up, play the four acts, and say whether the story ended well."""
        c = self.con
        c.print(Rule("[bold]healer demo[/]: a launch, a crash, a flood, a bad release and a rollback", style="cyan"))
        c.print(f"Everything happens in [bold]{self.p.root}[/] and on 127.0.0.1; nothing else is touched.")
        c.print("healer's 72-hour launch window is squeezed into one minute with ordinary healer.toml durations.")
        self.set_up()
        self.act(1)
        self.start_healer()
        self.wait("the baseline", 15, lambda f: f.baseline_taken(1) and f.ok_cycles(1) >= 2)
        self.act(2)
        self.crash_app()
        self.wait("process-restart to bring the app back", 20, lambda f: f.repaired("process-restart") and f.settled())
        self.act(3)
        if self.redis_port is None:
            self.say("skipped", f"this act needs redis-server, and {self.redis_skipped}", "yellow")
        else:
            self.flood_rate_limit()
            self.wait("rate-limit-clear to fix it", 20, lambda f: f.repaired("rate-limit-clear") and f.settled())
        self.act(4)
        self.deploy_bad()
        self.wait("the rollback", 35, lambda f: f.rollback_finished())
        self.wait("healthy cycles after the rollback", 10, lambda f: f.rolled_back_and_healthy() or f.held())
        ok = self.verdict()
        self.stop_healer()
        self.show_history()
        return ok

    def wait(self, what: str, timeout: float, pred: Callable[[_Feed], bool]) -> None:
        """Show the story from the store until `pred` holds; DemoFailed after `timeout`."""
        assert self.feed is not None
        end = min(time.monotonic() + timeout, self.deadline)
        status = self.con.status(f"waiting for {what}…") if self.con.is_terminal else contextlib.nullcontext()
        with status:
            while True:
                self.feed.poll()
                if pred(self.feed):
                    return
                self.check_healer_alive()
                if time.monotonic() > end:
                    late = (
                        "the demo's one-minute budget ran out" if end == self.deadline else f"not within {timeout:g}s"
                    )
                    raise DemoFailed(f"waited for {what}: {late}")
                time.sleep(POLL)

    # -- 0. set-up --

    def set_up(self) -> None:
        self.port = _free_port()
        self.start_redis()
        self.make_repo()
        self.write_config()
        self.say("app", f"deploying v1.0 on http://127.0.0.1:{self.port}")
        self.restart_app()
        self.wait_http(200)

    def start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            self.redis_skipped = "redis-server is not on PATH (apt-get install redis-server adds it)"
            self.say("redis", f"not started: {self.redis_skipped}", "yellow")
            return
        port = _free_port()
        self.p.redis_dir.mkdir(parents=True)
        self.redis_proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.p.redis_dir),
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--logfile", str(self.p.redis_dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        end = time.monotonic() + 5
        while True:
            try:
                if sampleapp.redis_call(url, ("PING",)) == ["PONG"]:
                    break
            except (OSError, sampleapp.RedisError):
                pass
            if self.redis_proc.poll() is not None or time.monotonic() > end:
                self.redis_skipped = f"redis-server did not start (see {self.p.redis_dir / 'redis.log'})"
                self.say("redis", f"not started: {self.redis_skipped}", "yellow")
                self.stop_redis()
                return
            time.sleep(0.05)
        self.redis_port = port
        self.say("redis", f"redis-server on 127.0.0.1:{port} (pid {self.redis_proc.pid}) for the app's rate limiter")

    @property
    def redis_url(self) -> str | None:
        return None if self.redis_port is None else f"redis://127.0.0.1:{self.redis_port}/0"

    def git(self, *args: str) -> str:
        argv = ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args]
        env = {**os.environ, **_GIT_ENV}
        done = subprocess.run(argv, cwd=self.p.repo, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DemoFailed(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def make_repo(self) -> None:
        if shutil.which("git") is None:
            raise DemoFailed("git is not on PATH (apt-get install git)")
        repo = self.p.repo
        repo.mkdir(parents=True)
        self.git("init", "-q")
        (repo / "README.md").write_text(
            "# demo-shop\n\nThe sample app of `healer demo`. Its code is healer.sampleapp; this "
            "repository holds what a release changes: app.json.\n"
        )
        (repo / sampleapp.SETTINGS).write_text(json.dumps({"version": "1.0", "broken": False}, indent=2) + "\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "v1.0: first release")
        self.commits["v1.0"] = self.git("rev-parse", "HEAD")
        self.git("tag", "-a", STABLE_TAG, "-m", "v1.0, known good")
        bad = {
            "version": "1.1",
            "broken": True,
            "error": "KeyError: 'SESSION_SECRET' (the new session store reads a setting nobody set)",
        }
        (repo / sampleapp.SETTINGS).write_text(json.dumps(bad, indent=2) + "\n")
        self.git("commit", "-q", "-am", "v1.1: sessions in the new store")
        self.commits["v1.1"] = self.git("rev-parse", "HEAD")
        self.git("checkout", "-q", "--detach", STABLE_TAG)
        self.say("git", f"{repo}: v1.0 {self.commits['v1.0'][:7]} (tag {STABLE_TAG}), "
                        f"v1.1 {self.commits['v1.1'][:7]} (bad); checked out v1.0")  # fmt: skip

    def write_config(self) -> None:
        p = self.p
        p.playbooks.mkdir(parents=True, exist_ok=True)
        (p.playbooks / "process-restart.toml").write_text(_PROCESS_RESTART)
        p.config.write_text(_config_text(self.p, self.port, self.redis_url))
        try:
            self.config = load_config(p.config)
        except HealerError as e:
            raise DemoFailed(f"the demo wrote a healer.toml healer refuses: {e}") from None
        self.say("config", f"{p.config} (phases 20s/40s/60s, incident_every 1s, rollback_after 5)")

    def restart_argv(self) -> list[str]:
        return sampleapp.restart_argv(self.p.repo, self.port, redis_url=self.redis_url, log=self.p.app_log)

    def restart_app(self) -> None:
        """The deploy step: the same command as healer.toml's `[rollback] after`."""
        self.p.state.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            self.restart_argv(), cwd=self.p.repo, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=30, start_new_session=True, check=False,
        )  # fmt: skip
        line = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if done.returncode != 0:
            raise DemoFailed(f"the app did not start: {line[-1] if line else done.returncode} (see {self.p.app_log})")
        self.say("app", line[-1] if line else "restarted")

    def wait_http(self, status: int, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        got: int | str = "no answer"
        while time.monotonic() < end:
            got = _http_status(self.port)
            if got == status:
                return
            time.sleep(0.05)
        raise DemoFailed(f"the app's /health answered {got}, expected {status} (see {self.p.app_log})")

    # -- 1. healer run --

    def start_healer(self) -> None:
        argv = [sys.executable, "-m", "healer", "--config", str(self.p.config), "run"]
        env = {k: v for k, v in os.environ.items() if k != "HEALER_CONFIG"}
        with self.p.healer_log.open("ab") as log:
            self.healer_proc = subprocess.Popen(
                argv, cwd=self.p.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                start_new_session=True,
            )  # fmt: skip
        self.say("healer", f"`healer --config {self.p.config.name} run` started (pid {self.healer_proc.pid}), "
                           f"its JSON log in {self.p.healer_log.name}")  # fmt: skip
        assert self.config is not None
        self.feed = _Feed(self, self.config)
        end = time.monotonic() + HEALER_START_WAIT
        while not self.p.db.exists():
            self.check_healer_alive()
            if time.monotonic() > end:
                raise DemoFailed(f"healer run wrote no state within {HEALER_START_WAIT:g}s (see {self.p.healer_log})")
            time.sleep(POLL)

    def check_healer_alive(self) -> None:
        if self.healer_proc is not None and self.healer_proc.poll() is not None:
            tail = _tail(self.p.healer_log)
            raise DemoFailed(f"healer run exited with {self.healer_proc.returncode}: {tail}")

    # -- 2. the crash --

    def crash_app(self) -> None:
        pids = sampleapp.running(sampleapp.match_text(self.p.repo))
        if not pids:
            raise DemoFailed("the app is not running: nothing to crash")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.say("demo", f"kill -9 {' '.join(map(str, pids))}: the app is gone", "bold red")

    # -- 3. the flood --

    def flood_rate_limit(self) -> None:
        url = self.redis_url
        assert url is not None
        # the app's limit is per client per minute; 127.0.0.1 is healer's checks (and everyone here)
        commands = [("SET", "ratelimit:127.0.0.1", "1000000", "EX", "600")]
        commands += [("SET", f"ratelimit:10.0.{i // 250}.{i % 250 + 1}", "5000", "EX", "600") for i in range(500)]
        sampleapp.redis_call(url, *commands)
        self.say("demo", f"wrote {len(commands)} ratelimit:* keys over the limit: the app now answers 429", "bold red")

    # -- 4. the bad release --

    def deploy_bad(self) -> None:
        assert self.feed is not None
        # deploy right after a cycle, so healer's next look at HEAD finds v1.1 already running
        self.feed.wait_next_cycle(self.deadline)
        self.git("checkout", "-q", "--detach", self.commits["v1.1"])
        self.say("deploy", f"git checkout {self.commits['v1.1'][:7]} (v1.1), then restart the app", "bold red")
        self.restart_app()

    def verdict(self) -> bool:
        """Whether the story ended well, from the store: a loop rollback to stable-v1 that
        succeeded, and healthy cycles of stable-v1 after it."""
        assert self.feed is not None
        self.feed.poll()
        ok = self.feed.rolled_back_and_healthy()
        if ok:
            self.outcome = f"rolled back to {STABLE_TAG} ({self.commits['v1.0'][:7]}); the app is healthy"
            self.say("result", self.outcome, "bold green")
        else:
            self.outcome = "the story did not end with a healthy app after a rollback"
            self.say("result", self.outcome, "bold red")
        return ok

    # -- the end --

    def stop_healer(self) -> None:
        proc = self.healer_proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.wait(STOP_WAIT)
        if self.feed is not None:
            self.feed.poll()
        self.say("healer", f"stopped (exit {proc.returncode})")

    def show_history(self) -> None:
        """`healer history` of the run, rendered here (the same rows the command prints)."""
        if self.config is None:
            return
        from healer.cli import history_rows

        self.con.print()
        self.con.print(Rule(f"[bold]healer --config {self.p.config} history --since 1h[/]", align="left", style="cyan"))
        try:
            rows = history_rows(self.config, timedelta(hours=1))
        except HealerError as e:
            self.con.print(f"[red]cannot read the history[/]: {e}")
            return
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("when", "what", "who", "outcome", "detail"):
            table.add_column(col, overflow="fold", no_wrap=col in ("when", "what"))
        for r in rows:
            outcome = r.get("outcome") or ("ok" if r.get("ok") else ("FAIL" if r.get("ok") is False else ""))
            if r["type"] == "check":
                detail = r.get("what", "")
            else:
                detail = " ".join(str(x) for x in (r.get("what", ""), r.get("why", ""), r.get("detail", "")) if x)
            bad, good = outcome in ("FAIL", "failed", "error"), outcome == "ok" and r["type"] != "check"
            style = "red" if bad else ("green" if good else "")
            detail = _clip(detail.replace(sys.executable, "python"), 160)
            table.add_row(str(r["at"])[11:23], r["type"], r.get("who", ""), outcome, detail, style=style)
        self.con.print(table)

    def shutdown(self) -> None:
        """Stop everything the demo started, whatever state the story is in.

        1. healer run (SIGTERM, then SIGKILL to its process group), so it restarts nothing;
        2. every process whose command line names the demo's directory (the app, however
           started: by the demo, by healer's process-restart or by a rollback);
        3. redis-server.
        """
        try:
            self.stop_healer()
        except Exception:  # clean-up goes on whatever happened
            if self.healer_proc is not None:
                _killpg(self.healer_proc.pid)
        _stop_matching(str(self.p.root))
        self.stop_redis()
        if self.feed is not None:
            self.feed.close()

    def stop_redis(self) -> None:
        proc = self.redis_proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                proc.wait(STOP_WAIT)
        self.redis_proc = None

    def report_files(self, code: int) -> None:
        c = self.con
        took = time.monotonic() - self.t0
        c.print()
        word = {0: "[green]done[/]", 130: "[yellow]interrupted[/]"}.get(code, "[red]failed[/]")
        c.print(f"{word} in {took:.0f}s (exit {code}); every process the demo started is stopped.")
        if self.keep:
            c.print(f"The files are kept in [bold]{self.p.root}[/]:")
            for name, path in (
                ("healer.toml", self.p.config), ("the app's git repo", self.p.repo),
                ("healer's state (SQLite)", self.p.db), ("healer's JSON log", self.p.healer_log),
                ("the app's output", self.p.app_log), ("the demo's playbook", self.p.playbooks),
            ):  # fmt: skip
                c.print(f"  {name:<24} {path}")
            c.print(f"Look around: healer --config {self.p.config} status | history | report")
        else:
            c.print(f"The files in {self.p.root} are removed; `healer demo --keep` keeps them "
                    "(healer.toml, the git repo, the state store, the logs).")  # fmt: skip
        c.print("Watch your own app: copy healer.toml from the repository, edit it (every key is commented), "
                "and start `healer run` after each deploy.")  # fmt: skip


def _config_text(p: _Paths, port: int, redis_url: str | None) -> str:
    """The demo's healer.toml: a real one, with the launch window squeezed into a minute."""
    q = json.dumps
    start = sampleapp.serve_argv(p.repo, port, redis_url=redis_url)
    after = sampleapp.restart_argv(p.repo, port, redis_url=redis_url, log=p.app_log)
    redis = (
        ""
        if redis_url is None
        else f"""
[redis]                       # the rate limiter's counters, for rate-limit-clear
url = {q(redis_url)}
rate_limit_patterns = ["ratelimit:*"]
"""
    )
    return f"""\
# Written by `healer demo`: the keys of a real launch, with the 72-hour window squeezed into a
# minute. Copy healer.toml from the repository for your own app; it has every key commented.
state_dir = "state"

[app]
name = {q(APP_NAME)}
repo = {q(str(p.repo))}
stable_tags = "stable-*"
tag_stable_after = "50s"

[schedule]                    # offsets from the deploy: 6h/24h/72h become 20s/40s/60s
phases = [
  {{ until = "20s", every = "1s" }},
  {{ until = "40s", every = "2s" }},
  {{ until = "60s", every = "3s" }},
]
incident_every = "1s"

[escalation]
rollback_after = 5
recover_after = 2
repair_grace = "1s"

[[checks]]
name = "api"
type = "http"
url = "http://127.0.0.1:{port}/health"
timeout = "1s"
samples = 1

[[checks]]
name = "app"
type = "process"              # finds the app by [process] match
timeout = "1s"

[process]
manager = "command"           # healer stops the matched processes and starts `start` itself
start = {q(start)}
match = {q(sampleapp.match_text(p.repo))}
cwd = {q(str(p.repo))}
stop_timeout = "3s"
start_timeout = "10s"
{redis}
[rollback]
after = [{q(after)}]          # the app's own restart, on the checked-out code
command_timeout = "20s"
verify_grace = "1s"

[playbooks]
dir = "playbooks"             # process-restart with the demo's numbers
max_per_cycle = 1
rules = [
  {{ when = ["http.rate_limited"], run = "rate-limit-clear" }},
  {{ when = ["process.down", "process.memory"], run = "process-restart" }},
  {{ when = ["http.status", "http.timeout"], run = "process-restart" }},
]

[alerts]
repeat_every = "10m"
[alerts.log]                  # alerts as chat would show them, in healer's log
min_severity = "info"
"""


# ---- the view: the story, read back from the state store ---------------------------------------


@dataclass(frozen=True, slots=True)
class _Event:
    """One thing to show, in time order; `rank` orders things of the same moment."""

    at: datetime
    rank: int
    kind: str  # deploy | cycle | opened | resolved | started | finished | alert
    row: Deploy | CycleRow | IncidentRow | ActionRow | AlertRecord


@dataclass
class _Seen:
    cycle: int = 0  # the last cycle id shown
    alert: int = 0  # the last outbox id shown
    deploys: set[int] = field(default_factory=set)
    incidents: dict[int, bool] = field(default_factory=dict)  # id -> its end was shown
    actions: dict[int, str] = field(default_factory=dict)  # id -> the outcome shown
    phase: tuple[int, int] | None = None  # (deploy, phase index) of the last cycle shown
    streak: dict[int, int] = field(default_factory=dict)  # deploy -> failing cycles in a row
    log_offset: int = 0


class _Feed:
    """Reads the state store and the alert outbox (and healer's log, for errors only), prints
    what is new in time order, and answers the story's questions from the same rows."""

    def __init__(self, demo: _Demo, config: Config) -> None:
        self.demo = demo
        self.config = config
        self.seen = _Seen()
        self.store: Store | None = None
        self.outbox: Outbox | None = None
        self.deploys: list[Deploy] = []
        self.cycles: list[CycleRow] = []
        self.actions: list[ActionRow] = []
        self.incidents: list[IncidentRow] = []
        self.alerts: list[AlertRecord] = []

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.outbox is not None:
            self.outbox.close()
        self.store = self.outbox = None

    # -- reading --

    def poll(self) -> None:
        """Read everything again (a demo's worth of rows is small) and show what is new."""
        if self.store is None:
            if not self.demo.p.db.exists():
                return
            self.store = Store(self.demo.p.db)
            self.outbox = Outbox(self.demo.p.db)
        assert self.outbox is not None
        try:
            self.deploys = self.store.deploys()
            self.cycles = self.store.cycles()
            self.actions = self.store.actions()
            self.incidents = self.store.incidents()
            self.alerts = self.outbox.history()
        except HealerError:
            return  # the database was busy for a moment: the next poll reads it
        for e in sorted(self._new(), key=lambda e: (e.at, e.rank)):
            self._show(e)
        self._read_log()

    def _new(self) -> Iterator[_Event]:
        seen = self.seen
        for d in self.deploys:
            if d.id not in seen.deploys:
                seen.deploys.add(d.id)
                yield _Event(d.first_seen, 0, "deploy", d)
        for c in self.cycles:
            if c.id > seen.cycle:
                seen.cycle = c.id
                yield _Event(c.at, 1, "cycle", c)
        for i in self.incidents:
            if i.id not in seen.incidents:
                seen.incidents[i.id] = False
                yield _Event(i.opened_at, 2, "opened", i)
            if i.resolved_at is not None and not seen.incidents[i.id]:
                seen.incidents[i.id] = True
                yield _Event(i.resolved_at, 2, "resolved", i)
        for a in self.actions:
            shown = seen.actions.get(a.id)
            if shown is None and a.kind in ("repair", "rollback"):
                yield _Event(a.at, 3, "started", a)
            if a.outcome != shown and a.outcome != "started":
                yield _Event(a.finished_at or a.at, 4, "finished", a)
            seen.actions[a.id] = a.outcome
        for r in self.alerts:
            if r.id > seen.alert:
                seen.alert = r.id
                yield _Event(r.created_at, 5, "alert", r)

    def _read_log(self) -> None:
        """New lines of healer's JSON log: what went wrong inside healer is shown in red."""
        try:
            with self.demo.p.healer_log.open("rb") as f:
                f.seek(self.seen.log_offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.seen.log_offset += end + 1
        for raw in data[: end + 1].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                if raw.strip():  # a traceback or a library's print: healer's own lines are JSON
                    self.demo.say("healer", Text(_clip(raw.decode(errors="replace"), 300)), "red")
                continue
            if not isinstance(line, dict) or line.get("logger") == "healer.alert":
                continue  # the log channel's alerts are shown from the outbox
            if line.get("level") in ("error", "critical") and not str(line.get("event", "")).startswith("rollback."):
                what = line.get("error") or line.get("msg") or line.get("detail") or ""
                self.demo.say("healer", Text(_clip(f"{line.get('event')}: {what}", 300)), "red")

    # -- showing --

    def _show(self, e: _Event) -> None:
        row = e.row
        if isinstance(row, Deploy):
            self._show_deploy(row)
        elif isinstance(row, CycleRow):
            self._show_cycle(row)
        elif isinstance(row, IncidentRow):
            self._show_incident(row, opened=e.kind == "opened")
        elif isinstance(row, ActionRow):
            self._show_action(row, started=e.kind == "started")
        else:
            self._show_alert(row)

    def _show_deploy(self, d: Deploy) -> None:
        name = next((f" ({k})" for k, v in self.demo.commits.items() if v == d.commit), "")
        how = ", the rollback's result (never rolled back again)" if d.via_rollback else ""
        self.demo.say("deploy", f"#{d.id}: healer watches {d.commit[:7]}{name}{how}: a new launch window", "bold blue")

    def _show_cycle(self, c: CycleRow) -> None:
        d = next((x for x in self.deploys if x.id == c.deploy_id), None)
        if d is None:
            return
        ph = phase_at(d.first_seen, c.at, self.config.schedule)
        if self.seen.phase != (d.id, ph.index):
            self.seen.phase = (d.id, ph.index)
            self.demo.say("phase", f"deploy #{d.id} is in {ph.label}", "magenta")
        checks = " · ".join(_result_text(r) for r in c.results)
        if self._is_rollback_check(d, c):
            t = Text("✓ " if c.ok else "✗ ", style="green" if c.ok else "red")
            t.append(f"the rollback's own check: {checks}")
            self.demo.say("check", t)
            return
        streak = 0 if c.ok else self.seen.streak.get(d.id, 0) + 1
        self.seen.streak[d.id] = streak
        t = Text("✓ healthy  ", style="green") if c.ok else Text("✗ failing  ", style="red")
        t.append(checks)
        if not c.ok:
            t.append(f"  [{streak} of {self.config.escalation.rollback_after} before a rollback]", style="red")
        self.demo.say("cycle", t)
        if d.baseline is not None and abs((d.baseline.taken_at - c.at).total_seconds()) < 0.001:
            self.demo.say("baseline", f"taken for {d.commit[:7]}: later cycles of this deploy are judged against it")

    def _is_rollback_check(self, d: Deploy, c: CycleRow) -> bool:
        """The check a rollback runs after its `after` commands is recorded under the new
        deploy before the loop's first cycle of it."""
        if not d.via_rollback:
            return False
        return any(
            a.kind == "rollback" and a.at <= c.at and (a.finished_at is None or c.at <= a.finished_at)
            for a in self.actions
        )

    def _show_incident(self, i: IncidentRow, *, opened: bool) -> None:
        closed = " (closed: a new commit was deployed)"
        if opened:
            self.demo.say("incident", f"#{i.id} opened: {i.cause.removesuffix(closed)}", "bold red")
        elif i.cause.endswith(closed):
            self.demo.say("incident", f"#{i.id} closed with its deploy: a new commit is at HEAD", "bold")
        else:
            self.demo.say(
                "incident", f"#{i.id} resolved: {self.config.escalation.recover_after} passing cycles", "bold green"
            )

    def _show_action(self, a: ActionRow, *, started: bool) -> None:
        what = f"to {a.name}" if a.kind == "rollback" else a.name
        if started:
            self.demo.say(a.kind, f"{what}: started, because {a.reason}", "bold yellow")
            return
        detail = "" if a.detail.startswith("{") else _clip(a.detail.replace(sys.executable, "python"), 400)
        style = "bold green" if a.outcome == "ok" else ("bold" if a.outcome == "skipped" else "bold red")
        self.demo.say(a.kind, Text(f"{what}: {a.outcome.upper()}" + (f" — {detail}" if detail else "")), style)

    def _show_alert(self, r: AlertRecord) -> None:
        channels = ", ".join(f"{d.channel} channel" for d in r.deliveries) or "no channel"
        style = {Severity.CRITICAL: "red", Severity.WARNING: "yellow"}.get(r.severity, "blue")
        width = max(min(self.demo.con.width - _INDENT, 100), 40)
        text = Text(render_text(r.message).replace(sys.executable, "python"))
        panel = Panel(text, title=f"chat, via the {channels}", title_align="left", border_style=style, width=width)
        self.demo.con.print(Padding(panel, (0, 0, 0, _INDENT)))

    # -- the story's questions --

    def baseline_taken(self, deploy_id: int) -> bool:
        return any(d.id == deploy_id and d.baseline is not None for d in self.deploys)

    def ok_cycles(self, deploy_id: int) -> int:
        return sum(1 for c in self.cycles if c.deploy_id == deploy_id and c.ok)

    def repaired(self, name: str) -> bool:
        """The playbook ran for the current deploy and fixed it."""
        d = self.current
        return d is not None and any(
            a.kind == "repair" and a.name == name and a.deploy_id == d.id and a.outcome == "ok" for a in self.actions
        )

    @property
    def current(self) -> Deploy | None:
        return self.deploys[-1] if self.deploys else None

    def settled(self) -> bool:
        """The current deploy has no open incident and its last cycle passed."""
        d = self.current
        return d is not None and d.open_incident is None and d.last_ok is True

    def held(self) -> bool:
        return bool(self.current and self.current.held)

    def rollback_finished(self) -> bool:
        return self.held() or any(a.kind == "rollback" and a.outcome != "started" for a in self.actions)

    def rolled_back_and_healthy(self) -> bool:
        """The loop rolled back to stable-v1, and the loop's cycles of it pass."""
        d = self.current
        done = any(
            a.kind == "rollback" and a.who == "loop" and a.outcome == "ok" and a.name == STABLE_TAG
            for a in self.actions
        )
        return bool(
            done
            and d is not None
            and d.commit == self.demo.commits.get("v1.0")
            and d.via_rollback
            and not d.held
            and d.last_ok is True
            and d.consecutive_passes >= 2
        )

    def wait_next_cycle(self, deadline: float) -> None:
        """Until the loop records a new cycle, so the next one is a whole cadence away."""
        self.poll()
        last = self.seen.cycle
        while self.seen.cycle == last and time.monotonic() < deadline:
            time.sleep(0.02)
            self.poll()


def _result_text(r: CheckResult) -> str:
    if r.type == "http":
        status = int(r.values.get("status", 0))
        lat = "" if r.latency is None else f" in {r.latency.total_seconds() * 1000:.0f}ms"
        base = f"{r.name} {status or 'no answer'}{lat}"
    elif r.type == "process":
        n = int(r.values.get("count", r.values.get("processes", 0)))
        base = f"{r.name} {n} process{'es' if n != 1 else ''}"
    else:
        base = r.name
    if r.ok:
        return base
    return f"{base} ({', '.join(r.symptoms) or 'failed'})"


# ---- small helpers -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_status(port: int) -> int | str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError as e:
        return f"no answer ({e.strerror or e})"
    finally:
        conn.close()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    last = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(_clip(ln, 300) for ln in last) or "(empty log)"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _ancestors() -> set[int]:
    out, pid = set(), os.getpid()
    while pid > 1:
        out.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return out


def _stop_matching(text: str) -> list[int]:
    """SIGTERM, then SIGKILL, every process (but us and our parents) whose command line
    contains `text`; returns their PIDs."""
    mine = _ancestors()
    pids = sampleapp.running(text, exclude=mine)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 3
    left = pids
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = sampleapp.running(text, exclude=mine)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids
