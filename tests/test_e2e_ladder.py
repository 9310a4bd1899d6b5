"""End-to-end: the right remedy for each failure, against a real `healer run`.

Each story runs the sample app from a real git repository (tagged `stable-1`) under a real
manager — healer's own "command" manager, a private PM2 or a private supervisord — with a
healer.toml shaped like the README's: one `http` check and a `[process]` section, no
`process` check, the shipped playbooks, and a one-second cadence. Then it breaks the app the way
production does (a crash, a wedge, a hang, a bad release, a release that crashes at start, Redis
going away, a deploy that stops the app on purpose) and checks what an on-call person would:
is the app serving, which release, and what does `healer history` say healer did and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from chatfakes import ChatFake
from helpers import HEALER, commit, git, healer, make_repo, stop_healer
from services import Pm2, Supervisord, free_port, start_redis, wait_for_port

from healer.alerts.outbox import Outbox
from healer.demo import sampleapp
from healer.store import Store

pytestmark = pytest.mark.e2e

APP = "shop"


def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"not within {timeout:g}s: {what}")


class Story:
    """The app in its repo, its manager, healer.toml, and a running `healer run`."""

    def __init__(self, tmp: Path, manager: str = "command", *, redis_url: str | None = None) -> None:
        self.tmp = tmp
        self.repo = make_repo(tmp / "app")
        self.port = free_port()
        self.redis_url = redis_url
        self.manager = manager
        self.env = {**os.environ}
        self.pm2: Pm2 | None = None
        self.sv: Supervisord | None = None
        self.healer_proc: subprocess.Popen[str] | None = None
        self.children: list[subprocess.Popen[bytes]] = []
        self.release("1.0")
        git(self.repo, "tag", "stable-1")
        needs: dict[str, Any] = {"redis_url": redis_url, "needs_redis": True} if redis_url else {}
        self.argv = sampleapp.serve_argv(self.repo, self.port, **needs)
        self.match = sampleapp.match_text(self.repo)

    # -- the app and its releases --------------------------------------------------------------

    def release(self, version: str, **settings: object) -> str:
        """Commit app.json for a new release (not yet running)."""
        (self.repo / "app.json").write_text(json.dumps({"version": version, **settings}))
        git(self.repo, "add", "app.json")
        return commit(self.repo, f"release {version}")

    def start_app(self) -> None:
        if self.manager == "pm2":
            self.pm2 = self.pm2 or Pm2()
            self.env = {**os.environ, **self.pm2.env}
            self.pm2.start(APP, self.argv, self.repo)
        elif self.manager == "supervisor":
            if self.sv is None:
                self.sv = Supervisord(APP, self.argv, self.repo)
                self.sv.start()
                self.env = {**os.environ, **self.sv.env}
            else:
                self.sv.ctl("start", APP)
        else:
            with open(self.tmp / "app.log", "ab") as log:
                self.children.append(
                    subprocess.Popen(
                        self.argv,
                        cwd=self.repo,
                        start_new_session=True,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                    )
                )

    def app_pids(self) -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"]) if self.match in " ".join(p.info["cmdline"] or [])]

    def stop_app(self, sig: signal.Signals = signal.SIGKILL) -> None:
        for pid in self.app_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def serving(self) -> str | None:
        """The version /health answers 200 with, or None."""
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
        except httpx.HTTPError:
            return None
        return str(r.json().get("version")) if r.status_code == 200 else None

    # -- healer ------------------------------------------------------------------------------

    def write_config(self, extra: str = "") -> Path:
        """healer.toml shaped like the README's; `extra` holds more [escalation] keys."""
        if self.manager == "pm2":
            assert self.pm2 is not None
            process = self.pm2.process_toml(APP)
        elif self.manager == "supervisor":
            assert self.sv is not None
            process = self.sv.process_toml(APP)
        else:
            process = (
                f'[process]\nmanager = "command"\nstart = {json.dumps(self.argv)}\n'
                f"match = {json.dumps(self.match)}\ncwd = {json.dumps(str(self.repo))}\n"
            )
        checks = ""
        if self.redis_url:
            checks = f'[[checks]]\nname = "cache"\ntype = "redis"\n[redis]\nurl = "{self.redis_url}"\n'
        text = f"""\
state_dir = "state"
[app]
name = "{APP}"
repo = "{self.repo}"
stable_tags = "stable-*"
[schedule]
phases = [{{ until = "72h", every = "1s" }}]
incident_every = "1s"
[escalation]
repair_grace = "2s"                 # the stories' time: a restart is verified before this ends anyway
{extra}
[[checks]]
name = "api"
type = "http"
url = "http://127.0.0.1:{self.port}/health"
timeout = "2s"
{checks}
{process}
"""
        self.config = self.tmp / "healer.toml"
        self.config.write_text(text)
        return self.config

    def run_healer(self, *, healthy_first: bool = True) -> None:
        with open(self.tmp / "healer.log", "a") as log:
            self.healer_proc = subprocess.Popen(
                [*HEALER, "--config", str(self.config), "run"], env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, text=True,
            )  # fmt: skip
        if healthy_first:
            wait_until(lambda: self.healthy_cycles() >= 1, 20, "a first healthy cycle")

    def kill_healer(self) -> None:
        """kill -9: no clean stop, nothing flushed but what the store already holds."""
        assert self.healer_proc is not None
        self.healer_proc.kill()
        self.healer_proc.wait(10)

    def current(self) -> Any:
        """The deploy healer watches now."""
        s = Store(self.config.parent / "state" / "healer.db")
        try:
            return s.current_deploy()
        finally:
            s.close()

    def bad_commits(self) -> dict[str, str]:
        s = Store(self.config.parent / "state" / "healer.db")
        try:
            return s.bad_commits()
        finally:
            s.close()

    def healthy_cycles(self) -> int:
        db = self.config.parent / "state" / "healer.db"
        if not db.exists():
            return 0
        s = Store(db)
        try:
            cs = s.cycles()
            return sum(1 for c in cs if c.ok and c.who == "loop")
        finally:
            s.close()

    def rows(self, type_: str | None = None) -> list[dict[str, Any]]:
        """`healer history --json`, as a person reads it."""
        out = healer("--config", str(self.config), "history", "--since", "1h", "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        return [r for r in rows if type_ is None or r["type"] == type_]

    def repairs(self, outcome: str | None = None) -> list[dict[str, Any]]:
        done = [r for r in self.rows("repair") if r["outcome"] != "started" and r["outcome"] != "skipped"]
        return [r for r in done if outcome is None or r["outcome"] == outcome]

    def stop(self) -> None:
        stop_healer(self.healer_proc, 15)
        self.stop_app()
        for pid in self.app_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if self.pm2 is not None:
            self.pm2.kill()
        if self.sv is not None:
            self.sv.stop()
        self.stop_app()
        for child in self.children:
            child.kill()
            child.wait(5)

    def log(self) -> str:
        return (self.tmp / "healer.log").read_text()[-3000:]


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Callable[..., Story]]:
    made: list[Story] = []

    def make(manager: str = "command", extra: str = "", env: dict[str, str] | None = None, **options: Any) -> Story:
        s = Story(tmp_path, manager, **options)
        made.append(s)
        s.start_app()
        assert wait_for_port(s.port), "the sample app did not start"
        s.env.update(env or {})
        s.write_config(extra)
        s.run_healer()
        return s

    yield make
    for s in made:
        s.stop()


def assert_no_rollback(s: Story) -> None:
    assert s.rows("rollback") == [], s.rows("rollback")


def test_a_crash_is_restarted_and_so_is_a_second_one_soon_after(story: Callable[..., Story]) -> None:
    """The app process is killed: healer restarts it through [process] within seconds, history
    says the likely cause was the app process; killed again some seconds later, it is restarted
    again (the backoff starts short); never a rollback."""
    s = story()
    s.stop_app()
    wait_until(lambda: s.serving() == "1.0" and s.repairs("ok"), 30, "the app restarted and serving")
    repair = s.repairs("ok")[0]
    assert repair["what"] == "process-restart" and repair["who"] == "loop"
    assert "likely cause: app process" in repair["why"]
    time.sleep(3)
    s.stop_app()
    wait_until(lambda: s.serving() == "1.0" and len(s.repairs("ok")) >= 2, 60, "the second restart")
    wait_until(lambda: s.current().open_incident is None, 60, "the incident resolved")
    assert_no_rollback(s)


def test_a_hung_app_is_restarted(story: Callable[..., Story]) -> None:
    """Every process of the app frozen (SIGSTOP), requests timing out: restarted, not rolled back."""
    s = story()
    s.stop_app(signal.SIGSTOP)
    wait_until(lambda: s.serving() == "1.0" and s.repairs("ok"), 45, "the hung app restarted")
    assert_no_rollback(s)
    checks = [r for r in s.rows("check") if not r["ok"]]
    assert any("http.timeout" in r["what"] for r in checks)


@pytest.mark.parametrize("manager", ["pm2", "supervisor"])
def test_a_wedged_app_is_restarted_through_its_manager(story: Callable[..., Story], manager: str) -> None:
    """Under PM2 and under supervisor, a wedged app (alive, every request hangs) is restarted
    with `pm2 restart` / `supervisorctl restart`; no rollback."""
    s = story(manager)
    before = s.app_pids()
    s.stop_app(signal.SIGSTOP)
    wait_until(lambda: s.serving() == "1.0" and s.repairs("ok"), 60, f"the wedged app restarted by {manager}")
    detail = s.repairs("ok")[0]["detail"]
    assert ("pm2" if manager == "pm2" else "supervisorctl") in detail and "restart" in detail
    assert not set(before) & set(s.app_pids())
    assert_no_rollback(s)


def test_a_release_answering_500_is_rolled_back_once_and_the_stable_tag_serves(
    story: Callable[..., Story],
) -> None:
    """A bad release deployed (HEAD moves, the app restarts on it, /health answers 500): one
    restart does not help, healer rolls back to stable-1 once, restarts the app on it (no
    `[rollback] after`), and the bad commit is remembered as bad."""
    s = story()
    bad = s.release("2.0", broken=True)
    s.stop_app()
    s.start_app()
    wait_until(lambda: s.rows("rollback") and s.rows("rollback")[-1]["outcome"] != "started", 90, "a rollback")
    wait_until(lambda: s.serving() == "1.0", 30, "the stable release serving")
    rollbacks = s.rows("rollback")
    assert len(rollbacks) == 1 and rollbacks[0]["outcome"] == "ok", rollbacks
    assert "likely cause: deploy" in rollbacks[0]["why"]
    assert "restarted the app" in rollbacks[0]["detail"]
    assert git(s.repo, "rev-parse", "HEAD") == git(s.repo, "rev-parse", "stable-1^{commit}")
    status = json.loads(healer("--config", str(s.config), "status", "--json").stdout)
    assert status["deploy"]["via_rollback"]
    assert bad in s.bad_commits()
    time.sleep(3)
    assert len(s.rows("rollback")) == 1


def test_a_release_many_times_slower_than_the_one_before_is_rolled_back_and_history_says_latency(
    story: Callable[..., Story],
) -> None:
    """Release 1.0 answers in about a millisecond through some healthy cycles (their samples are
    its reference). Release 2.0 answers every request correctly, 300 ms later: under any ceiling
    a user would set, and its own first cycle would be its baseline. Judged against 1.0 from its
    first cycle, it is rolled back to stable-1, and history says latency, against what. healer is
    killed (-9) between the two releases: the pooled reference is the store's, not its memory."""
    s = story()
    wait_until(lambda: s.healthy_cycles() >= 8, 40, "release 1.0's reference cycles")
    s.kill_healer()
    slow = s.release("2.0", delay_ms=300)
    s.stop_app()
    s.start_app()
    s.run_healer(healthy_first=False)
    wait_until(lambda: s.rows("rollback") and s.rows("rollback")[-1]["outcome"] != "started", 90, "a rollback")
    wait_until(lambda: s.serving() == "1.0", 30, "the stable release serving")
    rollbacks = s.rows("rollback")
    assert len(rollbacks) == 1 and rollbacks[0]["outcome"] == "ok", rollbacks
    # 300 ms against about a millisecond, every request slower than 1.0's slowest: strong
    # evidence, rolled back as an emergency (or, on a machine too loaded for that, for latency)
    why = rollbacks[0]["why"]
    assert "slower than the release before" in why or "http.latency" in why, rollbacks[0]
    assert git(s.repo, "rev-parse", "HEAD") == git(s.repo, "rev-parse", "stable-1^{commit}")
    slow_checks = [r for r in s.rows("check") if not r["ok"] and "http.latency" in r["what"]]
    assert slow_checks, s.rows("check")
    # the verdict explains itself: how slow, against which release, how sure
    assert any(" vs " in r["detail"] and "in stable-1" in r["detail"] for r in slow_checks), [
        r["detail"] for r in slow_checks
    ]
    table = healer("--config", str(s.config), "history", "--since", "1h").stdout
    assert "in stable-1" in table, table
    assert slow in s.bad_commits()
    # `healer baseline` shows what the release now serving is judged against besides itself
    shown = healer("--config", str(s.config), "baseline")
    assert shown.returncode == 0 and "release before: stable-1" in shown.stdout, shown.stdout + shown.stderr
    ref = json.loads(healer("--config", str(s.config), "baseline", "--json").stdout)["reference"]
    assert ref["release"] == "stable-1" and ref["checks"]["api"]["samples"] >= 20, ref


def test_a_release_that_crashes_at_start_is_rolled_back_and_started_on_the_stable_tag(
    story: Callable[..., Story],
) -> None:
    """The new release exits at start: after the deploy grace, a restart fails, healer rolls
    back and starts the app on stable-1."""
    s = story(extra='deploy_grace = "3s"')
    s.release("2.0", crash=True)
    s.stop_app()
    s.start_app()  # crashes at once
    wait_until(lambda: s.rows("rollback") and s.rows("rollback")[-1]["outcome"] != "started", 90, "a rollback")
    wait_until(lambda: s.serving() == "1.0", 30, "the stable release started and serving")
    rollbacks = s.rows("rollback")
    assert len(rollbacks) == 1 and rollbacks[0]["outcome"] == "ok", rollbacks
    assert git(s.repo, "rev-parse", "HEAD") == git(s.repo, "rev-parse", "stable-1^{commit}")


def test_redis_down_for_half_a_minute_rolls_nothing_back_and_names_redis(
    story: Callable[..., Story], tmp_path: Path
) -> None:
    """The app needs Redis and answers 503 without it; healer's redis check fails too: no
    rollback, at most one restart, an alert naming the dependency, and the incident resolves
    when Redis is back."""
    redis = start_redis(tmp_path / "redis")
    try:
        s = story(redis_url=redis.url)
        port = redis.port
        redis.stop()
        time.sleep(30)
        checks = [r for r in s.rows("check") if not r["ok"] and r["who"] == "loop"]
        assert checks and all(r["cause"] == "dependency cache" for r in checks), checks[:3]
        redis = start_redis(tmp_path / "redis2", port=port)
        wait_until(lambda: s.serving() == "1.0", 30, "the app healthy again")
        wait_until(lambda: any(r["type"] == "incident.resolved" for r in s.rows()), 30, "the incident resolved")
        assert_no_rollback(s)
        assert len([r for r in s.repairs() if r["what"] == "process-restart"]) <= 1
        alerts = [r for r in s.rows("alert") if "incident.opened" in r["detail"]]
        assert alerts and "likely cause: dependency cache" in alerts[0]["what"], alerts
    finally:
        redis.stop()


def test_a_deploy_that_stops_the_app_for_half_a_minute_is_left_alone(story: Callable[..., Story]) -> None:
    """HEAD moves, the deploy script stops the app (a migration) and starts it 30 s later:
    healer records but restarts and rolls back nothing."""
    s = story()
    s.release("1.1")
    s.stop_app(signal.SIGTERM)
    time.sleep(30)
    s.start_app()
    wait_until(lambda: s.serving() == "1.1", 20, "the new release serving")
    time.sleep(2)
    assert s.repairs() == [], s.repairs()
    assert_no_rollback(s)
    failing = [r for r in s.rows("check") if not r["ok"] and r["who"] == "loop"]
    assert failing and all(r["cause"] == "deploy in progress" for r in failing)


def test_a_restart_against_a_broken_release_is_verified_beside_the_loop_and_superseded_by_the_rollback(
    story: Callable[..., Story],
) -> None:
    """A bad release: its restart (verify_within 60 s) does not cure it. Cycles go on while the
    restart is verified, and the rollback comes once the restart's repair_grace is over — it
    ends the verification (recorded failed, superseded) instead of waiting it out."""
    s = story()
    s.release("2.0", broken=True)
    s.stop_app()
    s.start_app()
    wait_until(lambda: s.rows("rollback") and s.rows("rollback")[-1]["outcome"] != "started", 90, "a rollback")
    wait_until(lambda: s.serving() == "1.0", 30, "the stable release serving")
    (restart,) = [r for r in s.rows("repair") if r["outcome"] != "skipped"]
    assert restart["what"] == "process-restart" and restart["outcome"] == "failed", restart
    assert "superseded by the rollback" in restart["detail"], restart["detail"]
    (rollback,) = s.rows("rollback")
    assert rollback["outcome"] == "ok" and "a restart did not cure it" in rollback["why"], rollback
    # the loop judged the release again while the restart was being verified
    during = [r for r in s.rows("check") if restart["at"] < r["at"] < rollback["at"]]
    assert during and not any(r["ok"] for r in during), during
    outbox = Outbox(s.config.parent / "state" / "healer.db")
    try:
        said = [r.message.next_step for r in outbox.history()]
    finally:
        outbox.close()
    assert "checking that process-restart worked, while cycles go on" in said, said


CHAT = """\
deploy_grace = "0s"                 # each crash below comes after its release has served
[alerts]
repeat_every = "30m"
timeout = "2s"
[alerts.slack]
webhook_url_env = "SLACK_WEBHOOK_URL"
min_severity = "warning"
[alerts.telegram]
api_url = "{url}"
min_severity = "warning"
"""


def test_every_incident_is_told_opened_repaired_and_resolved_at_min_severity_warning(
    story: Callable[..., Story],
) -> None:
    """Four crashes in a row, each once the one before resolved: two on release 1.0, then one on
    each of two new releases. Slack and Telegram, at min_severity "warning", are told of each:
    opened, repaired, resolved. None is folded into "Flapping", though four incidents opened
    within repeat_every: those of a new release are unrelated to the ones before."""
    fake = ChatFake().start()
    try:
        env = {"SLACK_WEBHOOK_URL": fake.webhook_url, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_CHAT_ID": "4242"}
        s = story(extra=CHAT.format(url=fake.url), env=env)
        for n, version in enumerate(["1.0", "1.0", "1.1", "1.2"], start=1):
            if n > 2:
                s.release(version)
                wait_until(lambda: s.current().commit == git(s.repo, "rev-parse", "HEAD") and s.current().last_ok,
                           30, f"release {version} watched")  # fmt: skip
            s.stop_app()
            wait_until(lambda: s.current().open_incident is not None, 30, f"incident {n} opened")
            wait_until(lambda: s.serving() and s.current().open_incident is None, 60, f"incident {n} resolved")

        def untold() -> list[tuple[str, int, set[str]]]:
            """(channel, incident, what it was not told) for each gap."""
            out = []
            for name, messages in (("slack", fake.slack_messages()), ("telegram", fake.telegram_messages())):
                texts = [json.dumps(m, ensure_ascii=False) for m in messages]
                for n in range(1, 5):
                    mine = [t for t in texts if f"incident #{n}" in t]
                    missing = {w for w in ("Incident opened", "Repaired", "Resolved") if not any(w in t for t in mine)}
                    if missing:
                        out.append((name, n, missing))
            return out

        wait_until(lambda: not untold(), 20, "every incident told in chat")
        assert "Flapping" not in fake.all_text()
    finally:
        fake.stop()
    assert_no_rollback(s)
