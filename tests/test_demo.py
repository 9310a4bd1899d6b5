"""End-to-end: `healer demo` plays the whole launch story against a real `healer run`; the story
is read back from the state store and the alert outbox, never from the printed text."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from healer.alerts.outbox import AlertRecord, DeliveryState, Outbox
from healer.config import Config, load_config
from healer.demo import STABLE_TAG, run_demo
from healer.model import Deploy
from healer.store import ActionRow, CycleRow, IncidentRow, Store

pytestmark = pytest.mark.e2e

HAS_REDIS = bool(subprocess.run(["sh", "-c", "command -v redis-server"], capture_output=True).stdout.strip())


@dataclass(frozen=True)
class Run:
    """One demo run and what it left in its directory."""

    root: Path
    code: int
    seconds: float
    output: str
    config: Config
    deploys: list[Deploy]
    cycles: list[CycleRow]
    actions: list[ActionRow]
    incidents: list[IncidentRow]
    bad_commits: dict[str, str]
    alerts: list[AlertRecord]

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root / "app", capture_output=True, text=True, check=True)
        return done.stdout.strip()


def play(root: Path, env: dict[str, str] | None = None) -> Run:
    """Run the demo in this process (keeping its directory) and read back its state."""
    out = io.StringIO()
    saved = os.environ.copy()
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    start = time.monotonic()
    try:
        code = run_demo(keep=True, console=Console(file=out, width=120), workdir=root)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    seconds = time.monotonic() - start
    config = load_config(root / "healer.toml")
    store = Store(config.db_path)
    outbox = Outbox(config.db_path)
    try:
        return Run(
            root, code, seconds, out.getvalue(), config, store.deploys(), store.cycles(), store.actions(),
            store.incidents(), store.bad_commits(), outbox.history(),
        )  # fmt: skip
    finally:
        store.close()
        outbox.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return play(tmp_path_factory.mktemp("demo") / "run")


def leftovers(root: Path) -> list[str]:
    """Live processes whose command line names `root`."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or ())
        if str(root) in cmd and p.pid != os.getpid():
            out.append(f"{p.pid}: {cmd}")
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ports_of(config: Config) -> list[int]:
    """The app's port and, when the demo had one, redis-server's."""
    ports = [int(str(config.checks[0].url).rsplit(":", 1)[1].split("/")[0])]  # type: ignore[union-attr]
    if config.redis is not None:
        ports.append(int(config.redis.url.rsplit(":", 1)[1].split("/")[0]))
    return ports


# ---- the story ---------------------------------------------------------------------------------


def test_the_demo_ends_with_a_healthy_app_after_a_rollback_within_a_minute(run: Run) -> None:
    """The demo exits 0, in under 60 seconds, set-up and clean-up included."""
    assert run.code == 0, run.output[-3000:]
    assert run.seconds < 60


def test_the_launch_story_happens_in_order(run: Run) -> None:
    """Baseline, crash fixed by process-restart, (rate limit cleared), bad deploy, failed repairs,
    rollback to stable-v1, healthy again: in that order, as the store recorded it."""
    stable = run.git("rev-parse", f"{STABLE_TAG}^{{commit}}")
    bad = run.git("for-each-ref", "refs/heads", "--format=%(objectname)")
    assert bad and bad != stable
    d1, d2, d3 = run.deploys
    assert [(d.commit, d.via_rollback) for d in run.deploys] == [(stable, False), (bad, False), (stable, True)]

    # 1. a healthy baseline: the first cycle of the deploy
    first = next(c for c in run.cycles if c.deploy_id == d1.id)
    assert first.ok and d1.baseline is not None and d1.baseline.taken_at == first.at

    # 2. the crash: process.down, fixed by process-restart
    repairs_1 = [a for a in run.actions if a.kind == "repair" and a.deploy_id == d1.id]
    crash_fix = repairs_1[0]
    assert (crash_fix.name, crash_fix.outcome, crash_fix.who) == ("process-restart", "ok", "loop")
    crash = next(i for i in run.incidents if i.id == crash_fix.incident_id)
    assert "process.down" in crash.cause and crash.resolved_at is not None

    # 3. the flood, where redis-server is on PATH: http.rate_limited, fixed by rate-limit-clear
    if HAS_REDIS:
        flood_fix = repairs_1[1]
        assert (flood_fix.name, flood_fix.outcome) == ("rate-limit-clear", "ok")
        flood = next(i for i in run.incidents if i.id == flood_fix.incident_id)
        assert "http.rate_limited" in flood.cause and flood.resolved_at is not None
        assert crash.resolved_at < flood.opened_at
    assert len(repairs_1) == (2 if HAS_REDIS else 1)

    # 4. the bad release: every cycle fails, restarts are tried and fail, then the rollback
    assert d1.baseline.taken_at < crash_fix.at < d2.first_seen
    # (healer may look at the new HEAD a moment before the app restarted on it: a first cycle of
    # the old process may pass; the five before the rollback never do)
    bad_cycles = [c for c in run.cycles if c.deploy_id == d2.id]
    n = run.config.escalation.rollback_after
    assert len(bad_cycles) >= n
    assert not any(c.ok for c in bad_cycles[-n:])
    assert all("http.status" in c.summary for c in bad_cycles if not c.ok)
    repairs_2 = [a for a in run.actions if a.kind == "repair" and a.deploy_id == d2.id]
    assert repairs_2 and all(a.name == "process-restart" and a.outcome == "failed" for a in repairs_2)
    rollbacks = [a for a in run.actions if a.kind == "rollback"]
    assert len(rollbacks) == 1
    rb = rollbacks[0]
    assert (rb.who, rb.outcome, rb.name, rb.deploy_id) == ("loop", "ok", STABLE_TAG, d2.id)
    assert max(a.at for a in repairs_2) < bad_cycles[-1].at <= rb.at
    assert d2.first_seen < rb.at

    # 5. healthy again: the loop's cycles of the rolled-back commit pass, the last one included
    after = [c for c in run.cycles if c.deploy_id == d3.id]
    assert after and all(c.ok for c in after)
    assert run.cycles[-1].deploy_id == d3.id and run.cycles[-1].ok
    assert d3.baseline is not None and d3.last_ok is True and d3.held is None
    assert d3.first_seen >= rb.at


def test_the_rollback_went_to_stable_v1_and_remembers_the_bad_commit(run: Run) -> None:
    """The work tree is at stable-v1's commit, and the commit rolled back from is known bad."""
    stable = run.git("rev-parse", f"{STABLE_TAG}^{{commit}}")
    bad = run.git("for-each-ref", "refs/heads", "--format=%(objectname)")
    assert run.git("rev-parse", "HEAD") == stable
    rb = next(a for a in run.actions if a.kind == "rollback")
    assert f"{STABLE_TAG} ({stable[:7]}) from {bad[:7]}" in rb.detail
    assert bad in run.bad_commits and stable not in run.bad_commits
    assert all(i.resolved_at is not None for i in run.incidents)


def test_the_alerts_tell_the_story_once(run: Run) -> None:
    """The outbox holds the story's alerts in order, each delivered, none twice on a channel."""
    events = [i.event for r in run.alerts for i in r.message.items]
    story = ["incident.opened", "repair.succeeded", "incident.resolved"]
    if HAS_REDIS:
        story += ["incident.opened", "repair.succeeded", "incident.resolved"]
    story += ["incident.opened", "repair.failed", "rollback.started", "rollback.succeeded"]
    it = iter(events)
    missing = [e for e in story if e not in it]  # `in` on an iterator consumes it: a subsequence test
    assert not missing, events
    for r in run.alerts:
        assert r.deliveries and all(d.state is DeliveryState.DELIVERED for d in r.deliveries), r.to_json()
    per_channel: Counter[tuple[str, str, int | None, str]] = Counter()
    for r in run.alerts:
        for d in r.deliveries:
            for i in r.message.items:
                key = (d.channel, i.event, i.incident_id, "" if i.incident_id is not None else i.title + i.detail)
                per_channel[key] += 1
    assert [k for k, n in per_channel.items() if n > 1] == []


def test_the_demo_leaves_no_process_behind(run: Run) -> None:
    """healer run, the app (however it was started) and redis-server are all gone."""
    assert leftovers(run.root) == []
    for port in ports_of(run.config):
        assert not listening(port), port


def test_without_redis_server_the_flood_is_skipped_and_the_story_still_ends_well(tmp_path: Path) -> None:
    """On a machine without redis-server (a fresh Debian after scripts/install), the rate-limit act
    says it was skipped and why; the rest of the story is the same."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    r = play(tmp_path / "run", env={**os.environ, "PATH": str(bin_dir)})
    assert r.code == 0, r.output[-3000:]
    assert "redis-server is not on PATH" in r.output
    assert r.config.redis is None
    assert next(a.name for a in r.actions if a.kind == "repair") == "process-restart"
    assert not any(a.name == "rate-limit-clear" for a in r.actions)
    assert next(a for a in r.actions if a.kind == "rollback").outcome == "ok"
    assert leftovers(r.root) == []


# ---- interrupted -------------------------------------------------------------------------------


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    root = tmp_path / "run"
    code = (
        "import sys; from pathlib import Path; from healer.demo import run_demo; "
        "sys.exit(run_demo(keep=True, workdir=Path(sys.argv[1])))"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    yield p, root
    if p.poll() is None:
        p.kill()
    p.communicate(timeout=10)
    for line in leftovers(root):  # only when the test failed: never leave a demo running
        with contextlib.suppress(psutil.Error):
            psutil.Process(int(line.split(":")[0])).kill()


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="ctrl-c"), pytest.param(signal.SIGTERM, id="sigterm")])
def test_an_interrupted_demo_stops_everything_it_started(
    demo_process: tuple[subprocess.Popen[str], Path], sig: int
) -> None:
    """Ctrl-C or SIGTERM in the middle of the story: exit 130, and healer run, the app and
    redis-server are stopped."""
    p, root = demo_process
    db = root / "state" / "healer.db"
    end = time.monotonic() + 30
    while True:
        assert p.poll() is None, p.communicate()[0]
        if db.exists():
            store = Store(db)
            try:
                if store.cycles():
                    break
            finally:
                store.close()
        assert time.monotonic() < end, "the demo did not get to healer's first cycle"
        time.sleep(0.1)
    started = leftovers(root)
    assert any(" run" in s for s in started) and any("sampleapp serve" in s for s in started), started
    ports = ports_of(load_config(root / "healer.toml"))
    p.send_signal(sig)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 130, out
    assert "interrupted" in out
    assert leftovers(root) == []
    for port in ports:
        assert not listening(port), port
