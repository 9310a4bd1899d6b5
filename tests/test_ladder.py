"""The remedy ladder and attribution as scenarios over a fake clock (pure: plain data and a `now`).

Each scenario drives decide() cycle by cycle the way the loop does (the store's counters, the
repairs recorded with their outcomes, the first healthy cycle) and checks what an experienced
on-call engineer would have done: restart what a restart cures, roll back only what the deploy
broke, and only tell people when neither can help.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import Config, parse_config
from healer.decide import PastRepair, Situation, decide
from healer.ladder import Cause, answered, attribute, deploy_grace, settled
from healer.model import (
    Alert,
    CheckResult,
    Deploy,
    Hold,
    Intent,
    OpenIncident,
    Outcome,
    Repair,
    ResolveIncident,
    Rollback,
    Verdict,
)
from healer.repair import policies

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SEC = timedelta(seconds=1)


def config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "checks": [
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/health"},
            {"name": "cache", "type": "redis"},
        ],
        "redis": {},
        "process": {"manager": "pm2", "name": "shop"},
        "escalation": {"rollback_after": 5},
        **extra,
    }
    return parse_config(data, Path("healer.toml"))


CONFIG = config()

# what the checks see, by name
HEALTHY = {"api": ("ok", 200), "cache": ("ok", 0)}
CRASHED = {"api": ("http.down", 0), "cache": ("ok", 0)}
WEDGED = {"api": ("http.timeout", 0), "cache": ("ok", 0)}
ANSWERS_500 = {"api": ("http.5xx", 500), "cache": ("ok", 0)}
REDIS_DOWN = {"api": ("http.5xx", 503), "cache": ("redis.error", 0)}


def verdict(at: datetime, seen: dict[str, tuple[str, int]]) -> Verdict:
    results = []
    for name, (symptom, status) in seen.items():
        kind = "http" if name == "api" else "redis"
        ok = symptom == "ok"
        symptoms: tuple[str, ...] = ()
        if not ok:
            symptoms = ("http.status", symptom) if symptom == "http.5xx" else (symptom,)
        values = {"status": float(status)} if kind == "http" else {}
        results.append(CheckResult(name, kind, ok, None, values, None if ok else symptom, symptoms))
    return Verdict(at, tuple(results))


class Loop:
    """Applies decisions as the loop does: counters, incidents, repairs and their outcomes."""

    def __init__(
        self, cfg: Config = CONFIG, *, age: timedelta = timedelta(hours=1), healthy: bool = True,
        previous_healthy: bool | None = True, via_rollback: bool = False, head_moved: bool = True,
    ) -> None:  # fmt: skip
        self.cfg = cfg
        self.now = T0
        self.deploy = Deploy(
            id=2, commit="b" * 40, first_seen=T0 - age, via_rollback=via_rollback,
            healthy_at=T0 - age if healthy else None,
        )  # fmt: skip
        self.previous_healthy = previous_healthy
        self.head_moved = head_moved
        self.repairs: list[PastRepair] = []
        self.incident_since: datetime | None = None
        self.last_cause: str | None = None
        self.log: list[Intent] = []
        self.causes: list[str | None] = []
        self.steps: list[str] = []
        self.begun_until: datetime | None = None
        self.ended_commit: str | None = None

    def cycle(
        self, seen: dict[str, tuple[str, int]], *, repair_ok: bool = True, after: timedelta = SEC
    ) -> list[Intent]:
        self.now += after
        v = verdict(self.now, seen)
        s = Situation(
            deploy=self.deploy, verdict=v, now=self.now, repairs=tuple(self.repairs),
            playbooks=policies(self.cfg), previous_healthy=self.previous_healthy, head_moved=self.head_moved,
            incident_since=self.incident_since, previous_cause=self.last_cause,
            deploy_begun_until=self.begun_until, deploy_ended_commit=self.ended_commit,
        )  # fmt: skip
        d = decide(s, self.cfg)
        open_id = self.deploy.open_incident
        for i in d.intents:
            if isinstance(i, OpenIncident):
                open_id, self.incident_since = 1, self.now
            elif isinstance(i, ResolveIncident):
                open_id, self.incident_since = None, None
            elif isinstance(i, Repair):
                self.repairs.append(PastRepair(i.kind, self.now, Outcome.OK if repair_ok else Outcome.FAILED))
            elif isinstance(i, Hold):
                self.deploy = replace(self.deploy, held=i.reason)
        label = None if d.attribution is None else d.attribution.label
        if not v.ok:
            self.last_cause = label
        self.deploy = replace(
            self.deploy, consecutive_failures=d.consecutive_failures, consecutive_passes=d.consecutive_passes,
            emergency_streak=d.emergency_streak, open_incident=open_id,
            healthy_at=self.deploy.healthy_at or (self.now if v.ok else None),
        )  # fmt: skip
        self.log.extend(d.intents)
        self.causes.append(label)
        self.steps.append(d.next_step)
        return list(d.intents)

    def restarts(self) -> int:
        return sum(isinstance(i, Repair) and i.kind == "process-restart" for i in self.log)

    def rollbacks(self) -> list[Rollback]:
        return [i for i in self.log if isinstance(i, Rollback)]

    def alerts(self, event: str) -> list[Alert]:
        return [i for i in self.log if isinstance(i, Alert) and i.event == event]


def test_a_crash_of_a_healthy_release_is_restarted_at_once_and_never_rolled_back() -> None:
    """The app process dies on a release that was healthy: restart, healthy again, no rollback."""
    loop = Loop()
    intents = loop.cycle(CRASHED)
    assert [i.kind for i in intents if isinstance(i, Repair)] == ["process-restart"]
    assert loop.causes[-1] == "app process"
    for _ in range(3):
        loop.cycle(HEALTHY)
    assert loop.rollbacks() == [] and loop.deploy.open_incident is None


@pytest.mark.parametrize("seen", [CRASHED, WEDGED], ids=["crashed", "wedged"])
def test_a_second_crash_soon_after_a_cured_first_is_restarted_again(seen: dict[str, tuple[str, int]]) -> None:
    """20 s after a restart that cured the first failure, a second one is restarted too."""
    loop = Loop()
    loop.cycle(seen)
    for _ in range(3):
        loop.cycle(HEALTHY)
    loop.cycle(seen, after=20 * SEC)
    assert loop.restarts() == 2
    assert loop.rollbacks() == []


def test_a_crash_loop_backs_off_counts_nothing_while_a_restart_waits_and_rolls_back_last() -> None:
    """A healthy release that keeps crashing: restarts at 0, 10 s, 30 s, 2 m, 10 m; failures
    count toward a rollback only once restarts are exhausted, and the release is not condemned."""
    loop = Loop()
    at: list[datetime] = []
    for _ in range(40 * 60):
        if loop.rollbacks():
            break
        before = loop.restarts()
        loop.cycle(CRASHED, repair_ok=False)
        if loop.restarts() > before:
            at.append(loop.now)
    gaps = [round((b - a).total_seconds()) for a, b in itertools.pairwise(at)]
    assert gaps == [10, 30, 120, 600]
    assert len(loop.rollbacks()) == 1
    assert loop.rollbacks()[0].mark_bad is False
    assert any("in backoff until" in s for s in loop.steps)
    assert loop.alerts("repair.capped")


def test_a_release_answering_500_from_its_first_cycle_is_restarted_once_then_rolled_back() -> None:
    """The deploy is the suspect: one restart (cheap), it fails, the rollback follows at once
    and remembers the release as bad."""
    loop = Loop(age=timedelta(minutes=5), healthy=False)
    loop.cycle(ANSWERS_500, repair_ok=False)
    assert loop.restarts() == 1 and loop.causes[-1] == "deploy"
    loop.cycle(ANSWERS_500, repair_ok=False, after=60 * SEC)  # the restart's backoff is over: still no second one
    assert loop.restarts() == 1
    assert len(loop.rollbacks()) == 1 and loop.rollbacks()[0].mark_bad
    assert "likely cause: deploy" in loop.rollbacks()[0].reason


def test_a_failing_first_release_with_no_history_is_unknown_and_rolls_back_after_the_count() -> None:
    """The first deploy healer ever sees fails: restarts, then the ordinary count, no verdict on the release."""
    loop = Loop(age=timedelta(minutes=5), healthy=False, previous_healthy=None)
    for _ in range(5):
        loop.cycle(ANSWERS_500, repair_ok=False)
    assert set(loop.causes) == {"unknown"}
    assert len(loop.rollbacks()) == 1 and not loop.rollbacks()[0].mark_bad


def test_a_dependency_outage_rolls_nothing_back_restarts_nothing_and_names_the_dependency() -> None:
    """Redis down for half a minute: no rollback, no restart, an alert naming Redis, resolved when it returns."""
    loop = Loop()
    for _ in range(30):
        loop.cycle(REDIS_DOWN)
    assert loop.rollbacks() == [] and loop.restarts() == 0
    assert set(loop.causes) == {"dependency cache"}
    opened = loop.alerts("incident.opened")
    assert len(opened) == 1 and "likely cause: dependency cache" in opened[0].title
    assert all("no rollback or restart loop while cache fails" in s for s in loop.steps)
    assert loop.deploy.consecutive_failures == 0
    loop.cycle(HEALTHY)
    loop.cycle(HEALTHY)
    assert loop.alerts("incident.resolved") and loop.deploy.open_incident is None


def test_a_dependency_that_comes_to_explain_an_open_incident_is_said_once() -> None:
    """The app failed first, then Redis is seen down: one alert says Redis is the likely cause."""
    loop = Loop()
    loop.cycle(CRASHED)
    for _ in range(5):
        loop.cycle(REDIS_DOWN)
    said = loop.alerts("incident.cause")
    assert len(said) == 1 and "dependency cache" in said[0].title


def test_a_full_disk_is_the_hosts_not_the_deploys() -> None:
    """A system check failing alone is a dependency (the host): it never rolls the deploy back."""
    cfg = parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}, {"name": "host", "type": "system"}]},
        Path("healer.toml"),
    )
    loop = Loop(cfg)
    disk = CheckResult("host", "system", False, None, {"disk_percent": 97.0}, "disk", ("system.disk",))
    api = CheckResult("api", "http", True, None, {"status": 200.0})
    for _ in range(10):
        loop.now += timedelta(minutes=1)
        d = decide(Situation(deploy=loop.deploy, verdict=Verdict(loop.now, (api, disk)), now=loop.now), cfg)
        loop.deploy = replace(loop.deploy, consecutive_failures=d.consecutive_failures, open_incident=1)
        assert not any(isinstance(i, Rollback) for i in d.intents)
    assert d.attribution is not None and d.attribution.cause is Cause.DEPENDENCY


def test_a_crash_on_a_host_with_a_full_disk_is_still_restarted() -> None:
    """The host's gauges do not explain the app not answering: the crash gets its restart."""
    cfg = parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}, {"name": "host", "type": "system"}],
         "process": {"manager": "systemd", "name": "shop"}},
        Path("healer.toml"),
    )  # fmt: skip
    disk = CheckResult("host", "system", False, None, {"disk_percent": 97.0}, "disk", ("system.disk",))
    down = CheckResult("api", "http", False, None, {}, "refused", ("http.down",))
    deploy = Deploy(id=1, commit="a" * 40, first_seen=T0 - timedelta(hours=1), healthy_at=T0 - timedelta(hours=1))
    d = decide(Situation(deploy=deploy, verdict=Verdict(T0, (down, disk)), now=T0, playbooks=policies(cfg)), cfg)
    assert d.attribution is not None and d.attribution.cause is Cause.APP_PROCESS
    assert [i.kind for i in d.intents if isinstance(i, Repair)] == ["process-restart"]


def test_the_role_key_makes_any_check_a_dependency() -> None:
    """`role = "dependency"` on an http check of another service: its failure explains the app's."""
    cfg = parse_config(
        {"checks": [
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/"},
            {"name": "payments", "type": "http", "url": "http://127.0.0.1:10/", "role": "dependency"},
        ]},
        Path("healer.toml"),
    )  # fmt: skip
    down = CheckResult("payments", "http", False, None, {}, "down", ("http.down",))
    api = CheckResult("api", "http", False, None, {"status": 502.0}, "502", ("http.status", "http.5xx"))
    deploy = Deploy(id=1, commit="a" * 40, first_seen=T0, healthy_at=T0)
    att = attribute(Verdict(T0, (api, down)), deploy, cfg, previous_healthy=True)
    assert att.cause is Cause.DEPENDENCY and att.label == "dependency payments"


def test_a_deploy_that_stops_the_app_is_left_alone_within_the_grace() -> None:
    """HEAD moved and nothing answers: record only (no count, no incident, no action) for up to
    deploy_grace; then the ladder applies."""
    loop = Loop(age=timedelta(0), healthy=False)
    for _ in range(30):
        assert loop.cycle(CRASHED) == []
    assert set(loop.causes) == {"deploy in progress"}
    assert loop.deploy.consecutive_failures == 0 and loop.deploy.open_incident is None
    for _ in range(31):
        loop.cycle(CRASHED)
    assert loop.restarts() == 1


def test_an_app_down_when_healer_first_starts_is_restarted_at_once() -> None:
    """The first release healer watches is no deploy in progress: an app down then is restarted."""
    loop = Loop(age=timedelta(0), healthy=False, previous_healthy=None, head_moved=False)
    assert any(isinstance(i, Repair) for i in loop.cycle(CRASHED))


def test_a_broken_release_that_answers_500_is_judged_at_once() -> None:
    """A 500 is an answer: the grace ends and the ladder starts on the first cycle."""
    loop = Loop(age=timedelta(0), healthy=False)
    intents = loop.cycle(ANSWERS_500)
    assert any(isinstance(i, Repair) for i in intents)
    assert loop.causes == ["deploy"]


def test_deploy_begin_holds_everything_and_deploy_end_judges_at_once() -> None:
    """`healer deploy begin` holds all action while the script runs; `end` ends the grace at once."""
    loop = Loop(age=timedelta(0), healthy=False)
    loop.begun_until = T0 + timedelta(minutes=30)
    for _ in range(5):
        assert loop.cycle(ANSWERS_500) == []
    loop.begun_until = None
    loop.ended_commit = loop.deploy.commit
    assert any(isinstance(i, Repair) for i in loop.cycle(CRASHED))


def test_a_rolled_back_release_that_fails_gets_one_restart_then_healer_holds() -> None:
    """After an automatic rollback the ladder runs again (a restart) before healer holds; never a second rollback."""
    loop = Loop(age=timedelta(seconds=10), healthy=False, previous_healthy=False, via_rollback=True)
    loop.cycle(CRASHED, repair_ok=False)
    assert loop.restarts() == 1
    loop.cycle(CRASHED, repair_ok=False)
    assert any(isinstance(i, Hold) for i in loop.log)
    assert loop.rollbacks() == []


def test_without_a_process_section_a_crash_counts_to_the_rollback_as_before() -> None:
    """No [process]: healer cannot restart, so the ordinary count decides."""
    cfg = config(process=None)
    data = cfg.model_dump(exclude={"path"})
    data.pop("process")
    loop = Loop(parse_config({k: v for k, v in data.items() if v is not None}, Path("healer.toml")))
    for _ in range(5):
        loop.cycle(CRASHED)
    assert loop.restarts() == 0 and len(loop.rollbacks()) == 1


def test_answered_and_grace_helpers() -> None:
    """A status of any kind is an answer; the grace names how long it still lasts."""
    assert answered(verdict(T0, ANSWERS_500), CONFIG)
    assert not answered(verdict(T0, CRASHED), CONFIG)
    deploy = Deploy(id=1, commit="a" * 40, first_seen=T0)
    text = deploy_grace(deploy, verdict(T0 + 20 * SEC, CRASHED), T0 + 20 * SEC, CONFIG)
    assert text is not None and "40s" in text
    assert deploy_grace(deploy, verdict(T0 + 61 * SEC, CRASHED), T0 + 61 * SEC, CONFIG) is None


def test_a_healthy_cycle_right_after_head_moved_is_not_the_new_releases() -> None:
    """Within deploy_grace of HEAD moving the old process may still answer: not settled; the
    first release healer watches, a rollback's result and `healer deploy end` are."""
    deploy = Deploy(id=2, commit="b" * 40, first_seen=T0)
    assert not settled(deploy, T0 + 5 * SEC, CONFIG, head_moved=True, ended_commit=None)
    assert settled(deploy, T0 + 61 * SEC, CONFIG, head_moved=True, ended_commit=None)
    assert settled(deploy, T0 + 5 * SEC, CONFIG, head_moved=False, ended_commit=None)
    assert settled(deploy, T0 + 5 * SEC, CONFIG, head_moved=True, ended_commit="b" * 40)
    assert settled(replace(deploy, via_rollback=True), T0, CONFIG, head_moved=True, ended_commit=None)


def test_a_passing_prometheus_query_is_not_the_app_answering() -> None:
    """Within deploy_grace, the app's own check down and a Prometheus query passing (its window
    may still hold the release before's requests) is still "does not answer yet"; a process
    check that passes, which asks the app itself, is an answer."""
    prom = {"name": "errors", "type": "prometheus", "url": "http://127.0.0.1:9090", "query": "q", "min_increase": 0.01}
    proc = {"name": "web", "type": "process", "match": "shop"}
    cfg = config(checks=[{"name": "api", "type": "http", "url": "http://127.0.0.1:9/health"}, prom, proc])
    down = CheckResult("api", "http", False, None, {"status": 0.0}, "http.down", ("http.down",))
    query = CheckResult("errors", "prometheus", True, None, {"value": 0.001})
    web_up = CheckResult("web", "process", True, None, {"count": 1.0})
    web_down = CheckResult("web", "process", False, None, {"count": 0.0}, "process.down", ("process.down",))
    assert not answered(Verdict(T0, (down, query, web_down)), cfg)
    assert answered(Verdict(T0, (down, query, web_up)), cfg)
    deploy = Deploy(id=2, commit="b" * 40, first_seen=T0)
    at = T0 + 10 * SEC
    text = deploy_grace(deploy, Verdict(at, (down, query, web_down)), at, cfg)
    assert text is not None and text.startswith("the new release does not answer yet")
