"""The loop, stepped one cycle at a time on a fake clock, against real apps and a real git repo."""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest
from helpers import commit, config_from, make_repo

from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.config import Config
from healer.loop import Watchdog
from healer.model import Alert, Severity
from healer.store import Store


def make_config(tmp_path: Path, url: str, **extra: str) -> Config:
    repo = make_repo(tmp_path / "app")
    esc = "\n".join(f"{k} = {v}" for k, v in extra.items())
    return config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [escalation]
        {esc}
        [[checks]]
        name = "api"
        type = "http"
        url = "{url}/health"
        timeout = "2s"
    """,
    )


@asynccontextmanager
async def watchdog(config: Config, clock: FakeClock, said: list[Alert] | None = None) -> AsyncIterator[Watchdog]:
    """A Watchdog on a fake clock; `said` collects the alerts it hands to the pipeline."""

    async def sink(items: list[Alert], *_: object) -> None:
        assert said is not None
        said.extend(items)

    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            yield Watchdog(config, store, ctx, clock=clock, alert_sink=None if said is None else sink)  # type: ignore[arg-type]
    finally:
        store.close()


async def test_first_healthy_cycle_becomes_the_baseline(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """The baseline is taken at the first fully healthy cycle and stored."""
    app = http_app("healthy")
    config = make_config(tmp_path, str(app))
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        report = await dog.step()
        assert report.verdict.ok
        deploy = dog.store.current_deploy()
        assert deploy is not None and deploy.baseline is not None
        assert deploy.baseline.value("api", "latency_ms") is not None


async def test_a_restart_resumes_window_baseline_and_failure_count(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """Closing and reopening everything keeps the deploy, its baseline and the count."""
    app = http_app("healthy")
    config = make_config(tmp_path, str(app), rollback_after="50")
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        await dog.step()
        app.behaviour = "error500"  # type: ignore[attr-defined]
        for _ in range(3):
            clock.advance(timedelta(minutes=1))
            await dog.step()
        before = dog.store.current_deploy()
    assert before is not None and before.consecutive_failures == 3
    async with watchdog(config, clock) as dog:
        clock.advance(timedelta(minutes=1))
        await dog.step()
        after = dog.store.current_deploy()
    assert after is not None
    assert (after.id, after.first_seen, after.baseline) == (before.id, before.first_seen, before.baseline)
    assert after.consecutive_failures == 4
    assert after.open_incident == before.open_incident


async def test_a_new_commit_starts_a_new_window_and_baseline(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """A new HEAD is a new deploy: its own first_seen, no baseline until it is healthy."""
    app = http_app("healthy")
    config = make_config(tmp_path, str(app))
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        await dog.step()
        first = dog.store.current_deploy()
        assert config.app.repo is not None
        sha = commit(config.app.repo, "v2")
        clock.advance(timedelta(hours=30))
        app.behaviour = "error500"  # type: ignore[attr-defined]
        await dog.step()
        second = dog.store.current_deploy()
    assert first is not None and second is not None
    assert second.id != first.id and second.commit == sha
    assert second.first_seen == clock.now()
    assert second.baseline is None and second.consecutive_failures == 1


async def test_a_noisy_healthy_app_opens_no_incident(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """10 % of requests failing, 3 samples a cycle: 30 cycles, not one incident."""
    app = http_app("flaky", fail_ratio=0.1)
    config = make_config(tmp_path, str(app))
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        for _ in range(30):
            report = await dog.step()
            assert report.verdict.ok, report.verdict.summary()
            clock.advance(timedelta(minutes=15))
        assert dog.store.incidents() == []


async def test_a_failing_app_opens_one_incident_and_recovers(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """Failing cycles open one incident; two passing cycles resolve it."""
    app = http_app("healthy")
    config = make_config(tmp_path, str(app), rollback_after="50")
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        await dog.step()
        app.behaviour = "error500"  # type: ignore[attr-defined]
        for _ in range(3):
            clock.advance(timedelta(minutes=1))
            await dog.step()
        app.behaviour = "healthy"  # type: ignore[attr-defined]
        for _ in range(2):
            clock.advance(timedelta(minutes=1))
            await dog.step()
        incidents = dog.store.incidents()
        actions = dog.store.actions()
    assert len(incidents) == 1 and incidents[0].resolved_at is not None
    assert "http.status" in incidents[0].cause
    assert actions == []  # no playbook is mapped to http.status alone


async def test_the_cadence_follows_the_phase_and_the_incident(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """Healthy: the next cycle is 15 min away; failing: 1 min."""
    app = http_app("healthy")
    config = make_config(tmp_path, str(app), rollback_after="50")
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        await dog.step()
        d = dog.store.current_deploy()
        assert d is not None
        assert await dog.due_at(d) == clock.now() + timedelta(minutes=15)
        app.behaviour = "error500"  # type: ignore[attr-defined]
        clock.advance(timedelta(minutes=15))
        await dog.step()
        d = dog.store.current_deploy()
        assert d is not None
        assert await dog.due_at(d) == clock.now() + timedelta(minutes=1)


async def test_without_a_stable_tag_five_failures_hold_and_record_why(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """No rollback target: the fifth failure holds the loop for a person, recorded."""
    app = http_app("error500")
    config = make_config(tmp_path, str(app))
    clock = FakeClock()
    async with watchdog(config, clock) as dog:
        for _ in range(5):
            await dog.step()
            clock.advance(timedelta(minutes=1))
        d = dog.store.current_deploy()
        holds = dog.store.actions(kind="hold")
    assert d is not None and d.held is not None and "no stable tag" in d.held
    assert len(holds) == 1 and holds[0].who == "loop"


async def test_a_stalled_loop_is_detected_and_alerted(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """A cycle that runs later than twice its cadence raises a meta alert that skips dedup."""
    import asyncio

    app = http_app("healthy")
    config = make_config(tmp_path, str(app))
    clock = FakeClock()
    seen: list[object] = []

    async def sink(items: list[object], *_: object) -> None:
        seen.extend(items)

    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=sink)  # type: ignore[arg-type]
            stop = asyncio.Event()
            task = asyncio.create_task(dog.run(stop))

            async def cycles(n: int) -> None:
                for _ in range(200):
                    if len(store.cycles()) >= n:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"no cycle {n}")

            await cycles(1)
            clock.advance(timedelta(minutes=15))  # on time
            await cycles(2)
            assert not any(getattr(a, "event", "") == "meta.loop_behind" for a in seen)
            clock.advance(timedelta(hours=2))  # the loop was stuck for two hours
            await cycles(3)
            stop.set()
            await task
    finally:
        store.close()
    behind = [a for a in seen if getattr(a, "event", "") == "meta.loop_behind"]
    assert len(behind) == 1 and behind[0].bypass_dedup  # type: ignore[attr-defined]


async def test_a_pause_holds_a_repair_and_expires_on_time(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """Paused: a failing process is not restarted; when the pause runs out, it is announced once."""
    from healer.decide import Pause

    app = http_app("healthy")
    config = make_config(tmp_path, str(app), rollback_after="50")
    clock = FakeClock()
    seen: list[object] = []

    async def sink(items: list[object], *_: object) -> None:
        seen.extend(items)

    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=sink)  # type: ignore[arg-type]
            store.add_pause(clock.now() + timedelta(minutes=30), "migrating", "ops", clock.now())
            assert store.active_pause(clock.now()) == Pause(clock.now() + timedelta(minutes=30), "migrating", "ops")
            app.behaviour = "error500"  # type: ignore[attr-defined]
            for _ in range(10):
                report = await dog.step()
                assert report.actions == []  # nothing acted on while paused
                clock.advance(timedelta(minutes=1))
            d = store.current_deploy()
            assert d is not None and d.consecutive_failures == 10 and d.held is None
            clock.advance(timedelta(minutes=25))
            assert store.active_pause(clock.now()) is None
            deploy = await dog.current_deploy()
            await dog._announce_expired_pauses(deploy, clock.now())
            await dog._announce_expired_pauses(deploy, clock.now())
    finally:
        store.close()
    ended = [a for a in seen if getattr(a, "event", "") == "pause.ended"]
    assert len(ended) == 1


async def test_a_commit_deployed_while_the_checks_run_is_not_rolled_back(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """The checks judged the old commit: a fix deployed meanwhile is neither rolled back nor marked bad."""
    from helpers import git

    app = http_app("error500")
    repo = make_repo(tmp_path / "app")
    git(repo, "tag", "stable-1")
    commit(repo, "v2")
    deploy_script = tmp_path / "deploy.py"
    deploy_script.write_text(
        "import subprocess, sys\n"
        f"subprocess.run(['git', '-C', {str(repo)!r}, '-c', 'user.name=t', '-c', 'user.email=t@t', "
        "'commit', '-q', '--allow-empty', '-m', 'the fix'], check=True)\n"
        "sys.exit(1)\n"
    )
    config = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        repo = "{repo}"
        [escalation]
        rollback_after = 1
        [[checks]]
        name = "api"
        type = "http"
        url = "{app}/health"
        timeout = "2s"
        [[checks]]
        name = "deployer"
        type = "command"
        argv = ["python3", "{deploy_script}"]
        timeout = "5s"
    """,
    )
    async with watchdog(config, FakeClock()) as dog:
        report = await dog.step()
        assert any("a new commit was deployed" in a for a in report.actions)
        assert dog.store.actions(kind="rollback") == []
        assert dog.store.bad_commits() == {}


def test_extending_a_pause_does_not_announce_the_first_one_as_expired(tmp_path: Path) -> None:
    """A pause replaced by a longer one is not 'expired': nothing claims healer is armed again."""
    from datetime import UTC, datetime

    store = Store(tmp_path / "s.db")
    try:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        store.add_pause(now + timedelta(hours=1), "db migration", "ops", now)
        store.add_pause(now + timedelta(hours=2), "db migration, extended", "ops", now + timedelta(minutes=5))
        assert store.expired_unannounced_pauses(now + timedelta(minutes=6)) == []
        assert store.active_pause(now + timedelta(minutes=90)) is not None
    finally:
        store.close()


async def test_a_rollback_that_loses_the_lock_race_says_and_holds_nothing(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """A person's rollback holds the lock: the loop's rollback announces nothing, holds nothing,
    records nothing; once the lock is free the next cycle rolls back and says so."""
    from helpers import git

    from healer import rollback
    from healer.alerts.shell import Alerts
    from healer.loop import AlertSink

    app = http_app("error500")
    config = make_config(tmp_path, str(app), rollback_after="1")
    repo = config.app.repo
    assert repo is not None
    git(repo, "tag", "stable-1")
    commit(repo, "v2")
    clock = FakeClock()
    alerts = Alerts(config, clock=clock)
    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=AlertSink(alerts, config, False))
            with rollback.rollback_lock(config.state_dir):
                report = await dog.step()
            assert report.actions == ["rollback: skipped, another rollback is running"]
            said = [i.event for a in alerts.history() for i in a.message.items]
            assert not [e for e in said if e.startswith("rollback.")], said
            d = store.current_deploy()
            assert d is not None and d.held is None
            assert store.actions(kind="rollback") == []

            clock.advance(timedelta(minutes=1))
            report = await dog.step()
            assert report.actions == ["rollback to stable-1: failed"]  # the app answers 500 whatever runs
            said = [i.event for a in alerts.history() for i in a.message.items]
            assert "rollback.started" in said
    finally:
        alerts.close()
        store.close()


class SteppedClock(FakeClock):
    """A fake clock whose wall clock is stepped at given monotonic moments while the loop sleeps
    on it, and that sets `stop` at the end: the loop's whole run, in simulated time."""

    def __init__(self, steps: dict[timedelta, timedelta], end: timedelta, stop: object) -> None:
        super().__init__()
        self.steps = dict(steps)
        self.end = end
        self.stop = stop

    async def sleep(self, delay: timedelta) -> None:
        await super().sleep(delay)
        for at, by in list(self.steps.items()):
            if self.monotonic() >= at:
                self.step(by)
                del self.steps[at]
        if self.monotonic() >= self.end:
            self.stop.set()  # type: ignore[attr-defined]


async def test_a_wall_clock_stepped_back_or_forward_an_hour_keeps_the_cadence_and_is_said_once(
    tmp_path: Path, http_app: Callable[..., object], caplog: pytest.LogCaptureFixture
) -> None:
    """Stepped back 1 h, then forward 1 h between cycles: a cycle every 10 s of monotonic time
    throughout, one meta.clock_step alert and one clock.stepped line per step, no "loop behind"."""
    import asyncio

    app = http_app("healthy")
    repo = make_repo(tmp_path / "app")
    config = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [schedule]
        phases = [{{ until = "72h", every = "10s" }}]
        [[checks]]
        name = "api"
        type = "http"
        url = "{app}/health"
        timeout = "2s"
        samples = 1
    """,
    )
    stop = asyncio.Event()
    S, H = timedelta(seconds=1), timedelta(hours=1)
    clock = SteppedClock({65 * S: -H, 125 * S: H}, end=175 * S, stop=stop)
    t0 = clock.now()
    seen: list[Alert] = []

    async def sink(items: list[Alert], *_: object) -> None:
        seen.extend(items)

    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=sink)  # type: ignore[arg-type]
            with caplog.at_level(logging.INFO, logger="healer"):
                await asyncio.wait_for(dog.run(stop), timeout=60)
        walls = [c.at for c in store.cycles()]
    finally:
        store.close()
    # each cycle's monotonic time, from its wall time and the wall clock's offset then
    monotonic = [at - t0 if at - t0 >= timedelta(0) else at - (t0 - H) for at in walls]
    assert monotonic == [i * 10 * S for i in range(18)]  # 0 s ... 170 s, not one missed or early
    assert walls[7] == t0 - H + 70 * S and walls[13] == t0 + 130 * S  # recorded in wall-clock time
    steps = [a for a in seen if a.event == "meta.clock_step"]
    assert [a.title for a in steps] == ["the wall clock jumped back 1h", "the wall clock jumped forward 1h"]
    assert all(a.severity is Severity.WARNING and a.bypass_dedup for a in steps)
    assert not [a for a in seen if a.event == "meta.loop_behind"]
    lines = [r for r in caplog.records if r.getMessage() == "clock.stepped"]
    assert [(r.levelno, r.healer_fields["way"]) for r in lines] == [
        (logging.WARNING, "back"),
        (logging.WARNING, "forward"),
    ]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("after", "event", "severity", "title"),
    [
        pytest.param("[]", "rollback.succeeded", Severity.WARNING, "to stable-1", id="healthy-again-is-a-warning"),
        pytest.param('[["false"]]', "rollback.failed", Severity.CRITICAL, "Rollback to stable-1: after command failed",
                     id="after-command-failed"),
    ],
)  # fmt: skip
async def test_the_loops_rollback_says_what_happened_at_the_right_severity(
    tmp_path: Path, after: str, event: str, severity: Severity, title: str
) -> None:
    """A rollback that left the app healthy is a warning, not critical; one whose `after`
    command failed says so instead of blaming the target."""
    from helpers import git

    repo = make_repo(tmp_path / "app")
    (repo / "good").write_text("ok\n")
    git(repo, "add", "good")
    git(repo, "commit", "-q", "-m", "release 1")
    git(repo, "tag", "stable-1")
    git(repo, "rm", "-q", "good")
    git(repo, "commit", "-q", "-m", "release 2 loses good")
    config = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        repo = "{repo}"
        [escalation]
        rollback_after = 1
        [rollback]
        after = {after}
        verify_grace = "0s"
        [[checks]]
        name = "good"
        type = "command"
        argv = ["test", "-f", "{repo}/good"]
    """,
    )
    seen: list[Alert] = []

    async def sink(items: list[Alert], *_: object) -> None:
        seen.extend(items)

    clock = FakeClock()
    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=sink)  # type: ignore[arg-type]
            for _ in range(3):
                await dog.step()
                if any(a.event.startswith("rollback.") and a.event != "rollback.started" for a in seen):
                    break
                clock.advance(timedelta(minutes=1))
    finally:
        store.close()
    (said,) = [a for a in seen if a.event in ("rollback.succeeded", "rollback.failed")]
    assert (said.event, said.severity, said.title) == (event, severity, title)


async def test_after_a_repair_that_worked_the_next_step_is_watching_not_a_rollback_countdown(
    tmp_path: Path,
) -> None:
    """ "Repaired" comes with "watching: the incident resolves after 2 passing cycles"."""
    mark = f"healer-test-{uuid.uuid4().hex}"
    repo = make_repo(tmp_path / "app")
    config = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        repo = "{repo}"
        [process]
        manager = "command"
        start = ["{sys.executable}", "-c", "import time; time.sleep(60)", "{mark}"]
        match = "{mark}"
        [[checks]]
        name = "app"
        type = "process"
    """,
    )
    steps: list[tuple[list[str], str]] = []

    async def sink(items: list[Alert], _deploy: object, _verdict: object, next_step: str, *_: object) -> None:
        steps.append(([a.event for a in items], next_step))

    clock = FakeClock()
    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=sink)  # type: ignore[arg-type]
            for _ in range(5):
                await dog.step()
                if any("repair.succeeded" in events for events, _ in steps):
                    break
                clock.advance(timedelta(minutes=1))
    finally:
        store.close()
        for p in psutil.process_iter(["cmdline"]):
            if mark in " ".join(p.info["cmdline"] or []):
                os.kill(p.pid, signal.SIGKILL)
    (next_step,) = [step for events, step in steps if "repair.succeeded" in events]
    assert next_step == "watching: the incident resolves after 2 passing cycles"


async def test_an_incident_closed_by_a_new_commit_is_told_closed(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """People told that an incident opened hear that it closed when a new commit replaced the
    failing release, not silence."""
    app = http_app("healthy")
    config = make_config(tmp_path, str(app), rollback_after="50")
    said: list[Alert] = []
    clock = FakeClock()
    async with watchdog(config, clock, said) as dog:
        await dog.step()
        app.behaviour = "error500"  # type: ignore[attr-defined]
        clock.advance(timedelta(minutes=1))
        await dog.step()
        (opened,) = [a for a in said if a.event == "incident.opened"]
        assert config.app.repo is not None
        sha = commit(config.app.repo, "v2")
        clock.advance(timedelta(minutes=1))
        await dog.step()
        incidents = dog.store.incidents()
    (closed,) = [a for a in said if a.event == "incident.resolved"]
    assert closed.incident_id == opened.incident_id == incidents[0].id
    assert closed.title == f"closed: {sha[:12]} was deployed"
    assert incidents[0].resolved_at is not None
