"""End-to-end: `healer demo` plays its story against a real `healer run` — a crash restarted with
no rollback, a Redis outage where healer does nothing but say why, a bad release rolled back once.
The story is read back from the state store, the alert outbox, git and the app's log; only the
app's last /health answer is read from what the demo printed."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
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
from healer.config import DEFAULT_RULES, Config, load_config
from healer.demo.story import REDIS_CHECK, STABLE_TAG, run_demo
from healer.model import Deploy
from healer.store import ActionRow, CycleRow, IncidentRow, Store

pytestmark = pytest.mark.e2e


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
    """The demo with its whole story, the Redis act included: redis-server must be on PATH
    (scripts/test installs it); without it this fails, naming what to install."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server, or run scripts/test)")
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


def commits(run: Run) -> tuple[str, str]:
    """stable-v1's commit and the bad v1.1's (the only branch head: the demo works detached)."""
    stable = run.git("rev-parse", f"{STABLE_TAG}^{{commit}}")
    bad = run.git("for-each-ref", "refs/heads", "--format=%(objectname)")
    assert bad and bad != stable
    return stable, bad


def test_the_demo_tells_its_story_within_a_minute(run: Run) -> None:
    """The demo exits 0, in under 60 seconds, set-up and clean-up included, on a healer.toml
    with the default playbook rules."""
    assert run.code == 0, run.output[-3000:]
    assert run.seconds < 60
    assert run.config.playbooks.rules == DEFAULT_RULES


def test_a_crash_is_restarted_and_nothing_is_rolled_back(run: Run) -> None:
    """After the baseline, the SIGKILLed app is blamed on the app process and restarted by the
    loop; the deploy stays v1.0, with no rollback."""
    stable, _ = commits(run)
    d1 = run.deploys[0]
    assert (d1.commit, d1.via_rollback) == (stable, False)
    first = next(c for c in run.cycles if c.deploy_id == d1.id)
    assert first.ok and d1.baseline is not None and d1.baseline.taken_at == first.at

    fix = next(a for a in run.actions if a.kind == "repair")
    assert (fix.name, fix.outcome, fix.who, fix.deploy_id) == ("process-restart", "ok", "loop", d1.id)
    assert "likely cause: app process" in fix.reason
    crash = next(i for i in run.incidents if i.id == fix.incident_id)
    assert "likely cause: app process" in crash.cause and crash.resolved_at is not None
    assert d1.baseline.taken_at < crash.opened_at
    assert not [a for a in run.actions if a.kind == "rollback" and a.deploy_id == d1.id]


def test_a_redis_outage_is_blamed_on_redis_and_healer_does_nothing_else(run: Run) -> None:
    """Redis down: more failing cycles than rollback_after, each blamed on `dependency redis`;
    no restart and no rollback while it lasts; an alert naming the dependency; the incident
    resolved when Redis is back."""
    d1 = run.deploys[0]
    outage = next(i for i in run.incidents if f"likely cause: dependency {REDIS_CHECK}" in i.cause)
    assert outage.deploy_id == d1.id and outage.resolved_at is not None
    during = [c for c in run.cycles if outage.opened_at <= c.at < outage.resolved_at and not c.ok]
    assert len(during) > run.config.escalation.rollback_after
    assert {c.cause for c in during} == {f"dependency {REDIS_CHECK}"}
    assert all("redis.down" in c.summary for c in during)
    acted = [a for a in run.actions if outage.opened_at <= a.at <= outage.resolved_at]
    assert acted == [], acted
    told = [r for r in run.alerts if r.incident_id == outage.id]
    opened = next(r for r in told if r.event == "incident.opened")
    assert f"likely cause: dependency {REDIS_CHECK}" in opened.title
    assert any(r.event == "incident.resolved" for r in told)
    crash = next(i for i in run.incidents if "likely cause: app process" in i.cause)
    assert crash.resolved_at is not None and crash.resolved_at < outage.opened_at


def test_a_bad_release_is_rolled_back_once_right_after_a_restart_failed(run: Run) -> None:
    """v1.1 answers 500: blamed on the deploy, one process-restart fails, then at once (not after
    five cycles) exactly one rollback to stable-v1, which restarted the app itself; v1.1 is
    remembered as bad and the rolled-back v1.0 passes every cycle."""
    stable, bad = commits(run)
    assert [(d.commit, d.via_rollback) for d in run.deploys] == [(stable, False), (bad, False), (stable, True)]
    _, d2, d3 = run.deploys
    assert d2.healthy_at is None
    bad_cycles = [c for c in run.cycles if c.deploy_id == d2.id]
    assert bad_cycles and not any(c.ok for c in bad_cycles)
    blamed = [c for c in bad_cycles if c.cause == "deploy"]
    assert blamed and {c.cause for c in bad_cycles} <= {"deploy", "deploy in progress"}
    assert len(blamed) < run.config.escalation.rollback_after
    restarts = [a for a in run.actions if a.kind == "repair" and a.deploy_id == d2.id]
    assert [(a.name, a.outcome) for a in restarts] == [("process-restart", "failed")]
    rollbacks = [a for a in run.actions if a.kind == "rollback"]
    assert len(rollbacks) == 1
    rb = rollbacks[0]
    assert (rb.who, rb.outcome, rb.name, rb.deploy_id) == ("loop", "ok", STABLE_TAG, d2.id)
    assert "likely cause: deploy" in rb.reason
    assert run.config.rollback.after == () and "restarted the app" in rb.detail
    assert f"{STABLE_TAG} ({stable[:7]}) from {bad[:7]}" in rb.detail
    assert restarts[0].at < rb.at
    assert run.git("rev-parse", "HEAD") == stable
    assert bad in run.bad_commits and stable not in run.bad_commits

    after = [c for c in run.cycles if c.deploy_id == d3.id]
    assert after and all(c.ok for c in after)
    assert run.cycles[-1].deploy_id == d3.id
    assert d3.last_ok is True and d3.held is None and d3.first_seen >= rb.at
    assert all(i.resolved_at is not None for i in run.incidents)


def test_the_app_serves_v1_0_at_the_end(run: Run) -> None:
    """The demo's last look at /health, before it stopped everything, got 200 from v1.0, and the
    last process started was v1.0's."""
    assert 'GET /health -> 200 {"status": "ok", "version": "1.0"' in run.output
    started = [ln for ln in (run.root / "state" / "app.log").read_text().splitlines() if ln.startswith("sampleapp ")]
    assert started[-1].startswith("sampleapp 1.0 "), started


def test_the_alerts_tell_the_story_once(run: Run) -> None:
    """The outbox holds the story's alerts in order, each delivered, none twice on a channel."""
    events = [i.event for r in run.alerts for i in r.message.items]
    story = ["incident.opened", "repair.succeeded", "incident.resolved"]
    story += ["incident.opened", "incident.resolved"]  # the Redis outage
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


def test_without_redis_server_the_outage_is_skipped_and_the_story_still_ends_well(tmp_path: Path) -> None:
    """On a machine without redis-server (a fresh Debian after scripts/install), the Redis act
    says it was skipped and why; the crash and the bad release play as before."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    r = play(tmp_path / "run", env={**os.environ, "PATH": str(bin_dir)})
    assert r.code == 0, r.output[-3000:]
    assert "redis-server is not on PATH" in r.output
    assert r.config.redis is None and [c.type for c in r.config.checks] == ["http", "process"]
    assert [(a.name, a.outcome) for a in r.actions if a.kind == "repair"] == [
        ("process-restart", "ok"),
        ("process-restart", "failed"),
    ]
    assert [a.outcome for a in r.actions if a.kind == "rollback"] == ["ok"]
    assert leftovers(r.root) == []


# ---- interrupted -------------------------------------------------------------------------------


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    root = tmp_path / "run"
    code = (
        "import sys; from pathlib import Path; from healer.demo.story import run_demo; "
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
    out, _ = p.communicate(timeout=60)  # healer run may finish an action first (its 10 s stop bound)
    assert p.returncode == 130, out
    assert "interrupted" in out
    assert leftovers(root) == []
    for port in ports:
        assert not listening(port), port
