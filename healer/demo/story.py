"""`healer demo`: the right remedy for each failure, on this machine in under a minute (I/O).

In a temporary directory the demo builds a sample web app (healer.demo.sampleapp) in a real git
repository: `v1.0` tagged `stable-v1`, then a bad `v1.1`. The app needs Redis (its /health
answers 503 without it), so the demo starts a private redis-server on loopback. It deploys
v1.0, starts a real `healer run` on a healer.toml shaped like the README's (an http check, a
process check, a redis check, `[process]`, the default playbook rules) whose 72-hour launch
window is squeezed into a minute with ordinary durations, and plays the story while it shows,
from healer's state store, every cycle's verdict with its likely cause and healer's next step,
every action and its outcome, and every alert as chat would show it:

1. a healthy baseline;
2. the app crashes (SIGKILL): v1.0 was healthy, so the likely cause is `app process`;
   process-restart brings it back, and nothing is rolled back;
3. Redis goes down for a few seconds (stopped, then started again on the same port): the app
   answers 503 and the redis check fails in the same cycles, so the likely cause is
   `dependency redis`; healer restarts nothing and rolls back nothing, even past
   `rollback_after` failing cycles, says so in chat, and resolves the incident when Redis is
   back (skipped, saying why, without redis-server on PATH);
4. a deploy script ships the bad v1.1 the way the README's does (`healer deploy begin`, git
   checkout, restart the app, `healer deploy end`); v1.1 answers 500 while v1.0 was healthy,
   so the likely cause is `deploy`: one restart does not help, and healer rolls back to
   stable-v1 at once (no five-cycle wait), remembers v1.1 as bad, and the app serves v1.0.

The demo's `[rollback] after` is empty, so the rollback shows healer restarting the app itself
through `[process]` after the checkout, as it does for any app whose healer.toml names no
restart command of its own.

It ends with what the story proved, read back from the store and the app's /health, then
`healer status` and where the files are. Every process it started (healer run, the app,
redis-server) is stopped on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.resources
import json
import os
import re
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.rule import Rule
from rich.text import Text

from healer import runner
from healer.alerts.message import render_text
from healer.alerts.outbox import AlertRecord, Outbox
from healer.clock import SystemClock
from healer.config import Config, format_elapsed, load_config
from healer.demo import sampleapp
from healer.errors import HealerError
from healer.model import CheckResult, Deploy, Event, Severity
from healer.repair import SHIPPED_PACKAGE
from healer.schedule import phase_at
from healer.store import ActionRow, CycleRow, IncidentRow, Store

APP_NAME = "demo-shop"
STABLE_TAG = "stable-v1"
REDIS_CHECK = "redis"  # the name of the demo's redis check: the cause reads "dependency redis"
DEADLINE = 58.0  # seconds: the whole story, set-up and clean-up included, fits in a minute
POLL = 0.1  # seconds between two looks at the state store
HEALER_START_WAIT = 15.0
STOP_WAIT = 5.0
CLI_TIMEOUT = 20.0  # seconds for one `healer ...` command the demo runs (deploy begin/end, status)
_NO_PROCESS = re.compile(r"no running process whose command line contains '[^']*'")
_STARTED = re.compile(r"started `[^`]*` as pid")
# the deploy script's own `healer deploy begin` / `end`: the demo shows them as it runs them
_SCRIPT_KINDS = frozenset({"deploy.begin", "deploy.end"})
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

# The demo's own process-restart is the shipped one with the minute-long window's numbers, so a
# restart that does not help is known within seconds, not after the shipped 60 s (its backoff
# stays the shipped one: each deploy's first restart is at once).
_COMPRESSED = {"verify_within": "3s", "timeout": "20s"}


_ACTS = (
    (
        "Deploy v1.0 and take the baseline",
        "The sample app v1.0 (tagged stable-v1) is deployed and `healer run` starts watching it. The first "
        "fully healthy cycle becomes the baseline that every later cycle of this deploy is judged against.",
    ),
    (
        "The app crashes",
        "The demo kills the app with SIGKILL. v1.0 has been healthy, so healer names the likely cause "
        "`app process` and restarts the app (process-restart). A restart cures a crash: nothing is rolled back.",
    ),
    (
        "Redis goes down",
        "The demo stops redis-server for a few seconds, then starts it again on the same port. The app answers "
        "503 without Redis, and healer's redis check fails in the same cycles: the likely cause is "
        "`dependency redis`. Neither a restart nor a rollback brings Redis back, so healer does neither, even "
        "past rollback_after failing cycles: it says why in chat and resolves the incident when Redis returns.",
    ),
    (
        "A bad release",
        "A deploy script ships v1.1, whose /health answers 500, the way the README's does: `healer deploy "
        "begin`, git checkout, restart the app, `healer deploy end`. v1.0 was healthy, so the likely cause is "
        "`deploy`. One restart does not help; healer rolls back to stable-v1 at once, restarts the app on it "
        "([rollback] after is empty) and remembers v1.1 as bad.",
    ),
)


class DemoFailed(Exception):
    """The story could not go on: one line saying why."""


class _Interrupted(BaseException):
    """Ctrl-C or SIGTERM, as an exception (see _on_interrupt)."""


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
    """Play the demo; 0 when the story ended as told (see `_Demo.verdict`), 1 otherwise,
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
    restore = _on_interrupt()
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


def _on_interrupt() -> Callable[[], None]:
    """Ctrl-C and SIGTERM end the demo the same way, through one handler that raises
    _Interrupted where the main thread is (only it can set handlers). Not Python's default
    KeyboardInterrupt for Ctrl-C: Python installs that only when SIGINT was not ignored at start,
    and a process started in the background by a non-interactive shell (`cmd &`, as CI scripts
    do) inherits SIGINT ignored, so a Ctrl-C (SIGINT) then did nothing and the story ran on."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted()

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

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
        self.outage: tuple[datetime, datetime] | None = None  # Redis down: from the stop to the resolution

    # -- output --

    def stamp(self) -> str:
        return f"{time.monotonic() - self.t0:5.1f}s"

    def say(self, who: str, text: str | Text, style: str = "") -> None:
        line = Text(f"{self.stamp()}  ", style="dim")
        line.append(f"{who:<9}", style=style or "bold")
        line.append(text if isinstance(text, Text) else Text(text))
        self.con.print(line)

    def catch_up(self) -> None:
        """Show what healer did until now, so the demo's next line lands in time order."""
        if self.feed is not None:
            self.feed.poll()

    def say_more(self, text: Text) -> None:
        """A second line under the last one, wrapped at the same indent."""
        self.con.print(Padding(text, (0, 0, 0, _INDENT)))

    def act(self, n: int) -> None:
        title, what = _ACTS[n - 1]
        self.con.print()
        self.con.print(Rule(f"[bold]{n}. {title}[/]", align="left", style="cyan"))
        self.con.print(Text(textwrap.fill(what, width=max(min(self.con.width, 100) - 2, 40)), style="italic"))

    # -- the whole play --

    def play(self) -> bool:
        """Set up, play the four acts, and say whether the story ended as told."""
        c = self.con
        c.print(Rule("[bold]healer demo[/]: a crash, a Redis outage and a bad release, each with its own remedy",
                     style="cyan"))  # fmt: skip
        c.print(f"Everything happens in [bold]{self.p.root}[/] and on 127.0.0.1; nothing else is touched.")
        c.print("healer's 72-hour launch window is squeezed into one minute with ordinary healer.toml durations.")
        self.set_up()
        self.act(1)
        self.start_healer()
        self.wait("the baseline", 15, lambda f: f.baseline_taken(1) and f.ok_cycles(1) >= 2)
        self.act(2)
        crashed = self.crash_app()
        self.wait("process-restart to bring the app back", 20,
                  lambda f: f.repaired("process-restart", since=crashed) and f.settled())  # fmt: skip
        self.act(3)
        if self.redis_port is None:
            self.say("skipped", f"this act needs redis-server, and {self.redis_skipped}", "yellow")
        else:
            self.redis_outage()
        self.act(4)
        self.deploy_bad()
        self.wait("the rollback", 30, lambda f: f.rollback_finished())
        self.wait("healthy cycles after the rollback", 10, lambda f: f.rolled_back_and_healthy() or f.held())
        ok = self.verdict()
        self.show_status()
        self.stop_healer()
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
        needs = " (it needs Redis: /health answers 503 without it)" if self.redis_url else ""
        self.say("app", f"deploying v1.0 on http://127.0.0.1:{self.port}{needs}")
        self.say_more(Text(f"→ {self.restart_app()}", style="dim"))
        self.wait_http(200)

    def start_redis(self, port: int | None = None) -> None:
        """Start the demo's redis-server (on `port`, else a free one), or say why not."""
        exe = shutil.which("redis-server")
        if exe is None:
            self.redis_skipped = "redis-server is not on PATH (apt-get install redis-server adds it)"
            self.say("redis", f"not started: {self.redis_skipped}", "yellow")
            return
        again = port is not None
        port = port or _free_port()
        self.p.redis_dir.mkdir(parents=True, exist_ok=True)
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
                self.stop_redis()
                why = f"redis-server did not start (see {self.p.redis_dir / 'redis.log'})"
                if again:
                    raise DemoFailed(why)
                self.redis_skipped = why
                self.say("redis", f"not started: {why}", "yellow")
                return
            time.sleep(0.02)
        self.redis_port = port
        self.catch_up()
        what = "started again" if again else "for the app, which cannot work without it"
        self.say("redis", f"redis-server on 127.0.0.1:{port} (pid {self.redis_proc.pid}) {what}")

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
            "# demo-shop\n\nThe sample app of `healer demo`. Its code is healer.demo.sampleapp; this "
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
        self.say("git", f"{repo.name}/: v1.0 {self.commits['v1.0'][:7]} (tag {STABLE_TAG}), "
                        f"v1.1 {self.commits['v1.1'][:7]} (bad); checked out v1.0")  # fmt: skip

    def write_config(self) -> None:
        p = self.p
        p.playbooks.mkdir(parents=True, exist_ok=True)
        (p.playbooks / "process-restart.toml").write_text(_process_restart_text())
        p.config.write_text(_config_text(self.p, self.port, self.redis_url))
        try:
            self.config = load_config(p.config)
        except HealerError as e:
            raise DemoFailed(f"the demo wrote a healer.toml healer refuses: {e}") from None
        checks = ", ".join(f"{c.name} ({c.type})" for c in self.config.checks)
        self.say("config", f"{p.config.name}: checks {checks}; phases 20s/40s/60s, rollback_after 5")

    def restart_argv(self) -> list[str]:
        return sampleapp.restart_argv(
            self.p.repo, self.port, redis_url=self.redis_url, log=self.p.app_log, needs_redis=self.redis_url is not None
        )

    def restart_app(self) -> str:
        """The deploy's restart step: stop the app, then start it on the checked-out code."""
        self.p.state.mkdir(parents=True, exist_ok=True)
        stopped = _stop_matching(sampleapp.match_text(self.p.repo))
        done = subprocess.run(
            self.restart_argv(), cwd=self.p.repo, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=30, start_new_session=True, check=False,
        )  # fmt: skip
        line = (done.stdout.strip() or done.stderr.strip()).splitlines()
        if done.returncode != 0:
            raise DemoFailed(f"the app did not start: {line[-1] if line else done.returncode} (see {self.p.app_log})")
        started = line[-1].removeprefix("restart: ").split(";")[0] if line else "started"
        return f"stopped pid {', '.join(map(str, stopped))}; {started}" if stopped else started

    def wait_http(self, status: int, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        got: int | str = "no answer"
        while time.monotonic() < end:
            got = _get_health(self.port)[0]
            if got == status:
                return
            time.sleep(0.05)
        raise DemoFailed(f"the app's /health answered {got}, expected {status} (see {self.p.app_log})")

    def healer_cli(self, *args: str) -> str:
        """Run `healer --config healer.toml ARGS` as a person or a deploy script would; its output."""
        argv = [sys.executable, "-m", "healer", "--config", str(self.p.config), *args]
        env = {k: v for k, v in os.environ.items() if k != "HEALER_CONFIG"}
        env["COLUMNS"] = str(self.con.width)
        try:
            done = subprocess.run(
                argv, cwd=self.p.root, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                timeout=CLI_TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"`healer {' '.join(args)}` took over {CLI_TIMEOUT:g}s") from None
        if done.returncode != 0:
            raise DemoFailed(f"`healer {' '.join(args)}` exited {done.returncode}: {_clip(done.stderr, 300)}")
        return done.stdout.rstrip()

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

    def crash_app(self) -> datetime:
        """Kill the app; when (a restart before it, on a slow machine, is not this one's)."""
        at = datetime.now(UTC)
        pids = sampleapp.running(sampleapp.match_text(self.p.repo))
        if not pids:
            raise DemoFailed("the app is not running: nothing to crash")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.catch_up()
        self.say("demo", f"kill -9 {' '.join(map(str, pids))}: the app is gone", "bold red")
        return at

    # -- 3. the Redis outage --

    def redis_outage(self) -> None:
        """Stop Redis until healer has seen more failing cycles than `rollback_after`, start it
        again on the same port, and wait until the incident is resolved."""
        assert self.feed is not None and self.config is not None and self.redis_port is not None
        port = self.redis_port
        # right after a cycle, so the app's check and the redis check of the next one both see it
        self.feed.wait_next_cycle(self.deadline)
        self.stop_redis()
        down_at = self.feed.now()
        self.catch_up()
        self.say("demo", f"redis-server on port {port} stopped: the app's /health now answers 503", "bold red")
        n = self.config.escalation.rollback_after + 1
        self.wait(
            f"{n} failing cycles blamed on Redis",
            20,
            lambda f: f.dependency_told(down_at) and len(f.failing_since(down_at, f"dependency {REDIS_CHECK}")) >= n,
        )
        self.feed.wait_next_cycle(self.deadline)
        self.start_redis(port)
        self.wait("the incident to resolve", 15, lambda f: f.settled())
        self.outage = (down_at, self.feed.now())

    # -- 4. the bad release --

    def deploy_bad(self) -> None:
        """The README's deploy script: `healer deploy begin`, check out the new release, restart
        the app on it (stop, then start, as `systemctl restart` does), `healer deploy end`."""
        assert self.feed is not None
        self.script("healer deploy begin --for 1m", lambda: self.healer_cli("deploy", "begin", "--for", "1m"))
        # check out right after a cycle, and stop the old process at once: healer must never see
        # v1.0 answer for the new commit
        self.feed.wait_next_cycle(self.deadline)
        v11 = self.commits["v1.1"]
        self.script(f"git checkout {v11[:7]}", lambda: self.git("checkout", "-q", "--detach", v11) or "HEAD is v1.1")
        self.script("restart the app", self.restart_app)
        self.script("healer deploy end", lambda: self.healer_cli("deploy", "end"))

    def script(self, command: str, run: Callable[[], str]) -> None:
        """One step of the deploy script: the command, then what it printed."""
        self.catch_up()
        self.say("script", Text(f"$ {command}", style="bold"))
        self.say_more(Text(f"→ {run()}", style="dim"))

    def verdict(self) -> bool:
        """Whether the story ended as told, from the store and the app's /health:

        1. the crash: a process-restart cured it, and nothing was rolled back before v1.1;
        2. the Redis outage (when it was played): no repair and no rollback while it lasted, and
           an alert that named the dependency;
        3. the bad release: exactly one rollback, by the loop, to stable-v1, v1.1 remembered as
           bad, healthy cycles after it, and /health answering 200 with version 1.0.
        """
        f = self.feed
        assert f is not None
        f.poll()
        checks: list[tuple[bool, str]] = []
        d1, d2 = [*f.deploys, None, None][:2]
        on_d1 = [a for a in f.actions if d1 is not None and a.deploy_id == d1.id]
        cured = any(a.kind == "repair" and a.name == "process-restart" and a.outcome == "ok" for a in on_d1)
        early = any(a.kind == "rollback" for a in on_d1)
        checks.append((
            cured and not early,
            f"the crash: {'process-restart cured it' if cured else 'no restart cured it'}; "
            f"{'ROLLED BACK' if early else 'no rollback'}",
        ))  # fmt: skip
        if self.outage is not None:
            start, end = self.outage
            acted = [a for a in f.actions if a.kind in ("repair", "rollback") and start <= a.at <= end]
            blamed = len(f.failing_since(start, f"dependency {REDIS_CHECK}"))
            did = f"{len(acted)} action(s) taken" if acted else "no restart, no rollback"
            checks.append((
                not acted and f.dependency_told(start),
                f"the Redis outage: {blamed} failing cycles blamed on dependency {REDIS_CHECK}; {did}; "
                "resolved when Redis came back",
            ))  # fmt: skip
        failed = [a for a in f.actions if a.kind == "repair" and d2 is not None and a.deploy_id == d2.id]
        rollbacks = [a for a in f.actions if a.kind == "rollback" and a.outcome != "started"]
        bad = self.commits.get("v1.1", "")
        marked = bad in f.bad_commits()
        one = [(a.name, a.outcome) for a in rollbacks] == [(STABLE_TAG, "ok")]
        checks.append((
            one and marked and f.rolled_back_and_healthy(),
            f"the bad release: {_count(len(failed), 'restart')} did not help, then "
            f"{_count(len(rollbacks), 'rollback')} to {STABLE_TAG}; v1.1 ({bad[:7]}) "
            f"{'is remembered as bad' if marked else 'NOT remembered as bad'}",
        ))  # fmt: skip
        status, body = _get_health(self.port)
        serving = status == 200 and isinstance(body, dict) and body.get("version") == "1.0"
        shown = json.dumps(body) if isinstance(body, dict) else str(body)
        checks.append((serving, f"the app now: GET /health -> {status} {shown}"))
        for ok, text in checks:
            self.say("result", Text(("✓ " if ok else "✗ ") + text), "bold green" if ok else "bold red")
        return all(ok for ok, _ in checks)

    # -- the end --

    def show_status(self) -> None:
        """`healer status`, as a person would run it now."""
        self.con.print()
        self.con.print(Rule(f"[bold]$ healer --config {self.p.config} status[/]", align="left", style="cyan"))
        try:
            self.con.print(Text(self.healer_cli("status")))
        except DemoFailed as e:
            self.con.print(f"[red]healer status failed[/]: {e}")

    def stop_healer(self) -> None:
        proc = self.healer_proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            runner.kill_group(proc.pid)
            proc.wait(STOP_WAIT)
        if self.feed is not None:
            self.feed.poll()
        self.say("healer", f"stopped (exit {proc.returncode})")

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
                runner.kill_group(self.healer_proc.pid)
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
                runner.kill_group(proc.pid)
                proc.wait(STOP_WAIT)
        self.redis_proc = None

    def report_files(self, code: int) -> None:
        c = self.con
        took = format_elapsed(timedelta(seconds=time.monotonic() - self.t0))
        c.print()
        word = {0: "[green]done[/]", 130: "[yellow]interrupted[/]"}.get(code, "[red]failed[/]")
        c.print(f"{word} in {took} (exit {code}); every process the demo started is stopped.")
        if self.keep:
            c.print(f"The files are kept in [bold]{self.p.root}[/]:")
            for name, path in (
                ("healer.toml", self.p.config), ("the app's git repo", self.p.repo),
                ("healer's state (SQLite)", self.p.db), ("healer's JSON log", self.p.healer_log),
                ("the app's output", self.p.app_log), ("the demo's playbook", self.p.playbooks),
            ):  # fmt: skip
                c.print(f"  {name:<24} {path}")
            c.print(f"Look around: healer --config {self.p.config} history | report")
        else:
            c.print(f"The files in {self.p.root} are removed; `healer demo --keep` keeps them "
                    "(healer.toml, the git repo, the state store, the logs).")  # fmt: skip
        c.print("Watch your own app: copy healer.toml from the repository, edit it (every key is commented), "
                "and start `healer run` after each deploy.")  # fmt: skip


def _process_restart_text() -> str:
    """The shipped process-restart playbook with the demo's compressed numbers (`_COMPRESSED`)."""
    text = importlib.resources.files(SHIPPED_PACKAGE).joinpath("process-restart.toml").read_text("utf-8")
    for key, value in _COMPRESSED.items():
        text, n = re.subn(rf'(?m)^(\s*{key}\s*=\s*)"[^"]*"', rf'\g<1>"{value}"', text)
        if n != 1:
            raise DemoFailed(f"{SHIPPED_PACKAGE}/process-restart.toml: expected one {key} = to compress, found {n}")
    numbers = ", ".join(f'{k} = "{v}"' for k, v in _COMPRESSED.items())
    return f"# healer demo: the shipped process-restart, with {numbers} to fit the demo's minute.\n{text}"


def _config_text(p: _Paths, port: int, redis_url: str | None) -> str:
    """The demo's healer.toml: shaped like the README's, with the launch window squeezed into a minute."""
    q = json.dumps
    needs = redis_url is not None
    start = sampleapp.serve_argv(p.repo, port, redis_url=redis_url, needs_redis=needs)
    redis = (
        ""
        if redis_url is None
        else f"""
[[checks]]
name = {q(REDIS_CHECK)}
type = "redis"                # a dependency: its failure explains the app's; never a rollback
timeout = "1s"
"""
    )
    redis_section = "" if redis_url is None else f"\n[redis]\nurl = {q(redis_url)}\n"
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
deploy_grace = "5s"           # 60s in a real launch

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
{redis}
[process]
manager = "command"           # healer stops the matched processes and starts `start` itself
start = {q(start)}
match = {q(sampleapp.match_text(p.repo))}
cwd = {q(str(p.repo))}
stop_timeout = "3s"
start_timeout = "10s"
{redis_section}
[rollback]
after = []                    # none: after the checkout, healer restarts the app through [process]
command_timeout = "20s"
verify_grace = "1s"

[playbooks]
dir = "playbooks"             # process-restart with the demo's numbers
# rules: the defaults (see healer.toml in the repository)

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
            if a.kind in _SCRIPT_KINDS:
                continue
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
        t = Text("✓ healthy  ", style="green") if c.ok else Text("✗ failing  ", style="red")
        t.append(checks)
        self.demo.say("cycle", t)
        if not c.ok and c.cause:
            why = Text("likely cause: ", style="dim")
            why.append(c.cause, style="bold")
            if c.next_step:
                why.append(" → next: ", style="dim")
                why.append(_next_text(c.cause, c.next_step))
            self.demo.say_more(why)
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
        detail = "" if a.detail.startswith("{") else _clip(_shorter(a.detail), 240)
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

    def repaired(self, name: str, since: datetime | None = None) -> bool:
        """The playbook ran for the current deploy (after `since`) and fixed it."""
        d = self.current
        return d is not None and any(
            a.kind == "repair" and a.name == name and a.deploy_id == d.id and a.outcome == "ok"
            and (since is None or a.at >= since)
            for a in self.actions
        )  # fmt: skip

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

    def now(self) -> datetime:
        """Now, on the clock healer's rows are stamped with (UTC)."""
        return SystemClock().now()

    def failing_since(self, since: datetime, cause: str) -> list[CycleRow]:
        """The loop's failing cycles since `since` whose likely cause was `cause`."""
        return [c for c in self.cycles if c.at >= since and not c.ok and c.cause == cause]

    def dependency_told(self, since: datetime) -> bool:
        """An incident opened since `since` names the demo's Redis as the likely cause, and its
        opening alert, which says so, is in the outbox."""
        label = f"likely cause: dependency {REDIS_CHECK}"
        ids = {i.id for i in self.incidents if i.opened_at >= since and label in i.cause}
        return any(
            r.incident_id in ids and r.event == Event.INCIDENT_OPENED and label in render_text(r.message)
            for r in self.alerts
        )

    def bad_commits(self) -> dict[str, str]:
        return {} if self.store is None else self.store.bad_commits()

    def wait_next_cycle(self, deadline: float) -> None:
        """Until the loop records a new cycle, so the next one is a whole cadence away."""
        self.poll()
        last = self.seen.cycle
        while self.seen.cycle == last and time.monotonic() < deadline:
            time.sleep(0.02)
            self.poll()


def _result_text(r: CheckResult) -> str:
    lat = "" if r.latency is None else f" in {r.latency.total_seconds() * 1000:.0f}ms"
    if r.type == "http":
        status = int(r.values.get("status", 0))
        base = f"{r.name} {status or 'no answer'}{lat}"
    elif r.type == "process":
        n = int(r.values.get("count", r.values.get("processes", 0)))
        base = f"{r.name} {n} process{'es' if n != 1 else ''}"
    elif r.type == "redis":
        base = f"{r.name} PONG{lat}" if r.ok else f"{r.name} no answer"
    else:
        base = r.name
    if r.ok:
        return base
    return f"{base} ({', '.join(r.symptoms) or 'failed'})"


def _shorter(detail: str) -> str:
    """An action's detail without the app's whole command line, which the feed has no room for
    (`healer history` shows it whole)."""
    detail = _NO_PROCESS.sub("nothing was running", detail.replace(sys.executable, "python"))
    return _STARTED.sub("started the app ([process] start) as pid", detail)


def _next_text(cause: str, step: str) -> str:
    """healer's next step, without the cause it may repeat ("likely cause dependency redis: ...")."""
    return step.removeprefix(f"likely cause {cause}: ")


# ---- small helpers -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_health(port: int) -> tuple[int | str, object]:
    """GET /health: (status, the JSON body), or ("no answer (...)", None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as e:
        return f"no answer ({e.strerror or e})", None
    finally:
        conn.close()
    try:
        body: object = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return resp.status, body


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    last = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(_clip(ln, 300) for ln in last) or "(empty log)"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


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
