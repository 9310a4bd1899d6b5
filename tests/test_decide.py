"""The escalation rules over sequences of cycles (pure: plain data and a `now`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from healer.config import Config, parse_config
from healer.decide import PastRepair, Pause, PlaybookPolicy, Situation, decide
from healer.model import (
    Alert,
    CheckResult,
    Deploy,
    Hold,
    OpenIncident,
    Outcome,
    Repair,
    ResolveIncident,
    Rollback,
    Verdict,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = parse_config(
    {
        "checks": [
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/"},
            {"name": "web", "type": "process", "match": "web"},
        ]
    },
    Path("healer.toml"),
)
POLICIES = {
    "process-restart": PlaybookPolicy("process-restart", timedelta(minutes=5), 3),
    "redis-flush": PlaybookPolicy("redis-flush", timedelta(minutes=10), 2),
}


def verdict(ok: bool, at: datetime, *symptoms: str) -> Verdict:
    api = CheckResult(
        "api",
        "http",
        ok,
        timedelta(milliseconds=20),
        {"latency_ms": 20.0},
        None if ok else "500",
        () if ok else ("http.status",),
    )
    web = CheckResult("web", "process", not symptoms, None, {"count": 1.0}, None, tuple(symptoms))
    return Verdict(at, (api, web))


class Driver:
    """Applies decisions the way the loop does, so sequences can be tested as data."""

    def __init__(self, config: Config = CONFIG, **situation: object) -> None:
        self.config = config
        self.deploy = Deploy(id=1, commit="a" * 40, first_seen=T0)
        self.now = T0
        self.extra = situation
        self.repairs: list[PastRepair] = []
        self.incidents = 0
        self.log: list[object] = []

    def cycle(self, ok: bool, *symptoms: str) -> list[object]:
        self.now += timedelta(minutes=1)
        s = Situation(
            deploy=self.deploy, verdict=verdict(ok, self.now, *symptoms), now=self.now,
            repairs=tuple(self.repairs), playbooks=POLICIES, **self.extra,  # type: ignore[arg-type]
        )  # fmt: skip
        d = decide(s, self.config)
        open_id = self.deploy.open_incident
        for i in d.intents:
            if isinstance(i, OpenIncident):
                self.incidents += 1
                open_id = self.incidents
            elif isinstance(i, ResolveIncident):
                open_id = None
            elif isinstance(i, Repair):
                self.repairs.append(PastRepair(i.kind, self.now, Outcome.FAILED))
            elif isinstance(i, Hold):
                self.deploy = replace(self.deploy, held=i.reason)
        self.deploy = replace(
            self.deploy, consecutive_failures=d.consecutive_failures, consecutive_passes=d.consecutive_passes,
            emergency_streak=d.emergency_streak, open_incident=open_id,
            healthy_at=self.deploy.healthy_at or (self.now if ok else None),
        )  # fmt: skip
        self.log.extend(d.intents)
        return list(d.intents)


def kinds(intents: list[object]) -> list[str]:
    return [type(i).__name__ + (f":{i.event}" if isinstance(i, Alert) else "") for i in intents]


def test_five_failing_cycles_roll_back_and_the_count_says_so() -> None:
    """Failures 1–4 open one incident and repair; the fifth asks for a rollback."""
    d = Driver()
    first = d.cycle(False)
    assert kinds(first) == ["OpenIncident", "Alert:incident.opened"]
    for _ in range(3):
        assert not any(isinstance(i, Rollback) for i in d.cycle(False))
    fifth = d.cycle(False)
    assert any(isinstance(i, Rollback) for i in fifth)
    assert d.incidents == 1


def test_recovery_needs_recover_after_passes() -> None:
    """One pass does not resolve the incident; two do."""
    d = Driver()
    d.cycle(False)
    assert not any(isinstance(i, ResolveIncident) for i in d.cycle(True))
    assert any(isinstance(i, ResolveIncident) for i in d.cycle(True))


def test_a_flapping_check_keeps_one_incident() -> None:
    """fail, pass, fail, pass ... opens one incident and one alert, not one per flap."""
    d = Driver()
    for _ in range(6):
        d.cycle(False)
        d.cycle(True)
    assert d.incidents == 1
    assert sum(isinstance(i, Alert) and i.event == "incident.opened" for i in d.log) == 1
    assert not any(isinstance(i, Rollback) for i in d.log)


def test_a_noisy_single_failure_in_a_healthy_run_opens_one_short_incident() -> None:
    """A lone failing cycle opens an incident that the next two passes resolve."""
    d = Driver()
    for ok in (True, True, False, True, True, True):
        d.cycle(ok)
    assert d.incidents == 1 and d.deploy.open_incident is None


def test_repairs_follow_the_symptoms_with_cooldown_and_cap() -> None:
    """process.down restarts the process, not again within the cooldown, at most 3 times."""
    cfg = CONFIG.model_copy(update={"escalation": CONFIG.escalation.model_copy(update={"rollback_after": 100})})
    d = Driver(cfg)
    repairs_at = []
    for n in range(30):
        if any(isinstance(i, Repair) for i in d.cycle(False, "process.down")):
            repairs_at.append(n)
    assert repairs_at == [0, 5, 10]  # every 5 minutes (cooldown), three times (cap)
    capped = [i for i in d.log if isinstance(i, Alert) and i.event == "repair.capped"]
    assert len(capped) >= 1


def test_no_repair_for_symptoms_no_rule_names() -> None:
    """An http.status failure alone has no playbook: healer counts toward rollback."""
    d = Driver()
    assert not any(isinstance(i, Repair) for i in d.cycle(False))


def test_a_rolled_back_deploy_that_fails_holds_instead_of_rolling_back_again() -> None:
    """After an automatic rollback, healer does not loop: it holds and calls a person."""
    d = Driver()
    d.deploy = replace(d.deploy, via_rollback=True)
    for _ in range(5):
        intents = d.cycle(False)
    assert any(isinstance(i, Hold) for i in intents)
    assert any(isinstance(i, Alert) and i.event == "healer.held" for i in intents)
    assert not any(isinstance(i, Rollback) for i in d.log)
    more = d.cycle(False)
    assert not any(isinstance(i, Rollback | Repair) for i in more)


def test_no_stable_tag_holds() -> None:
    """With nothing to roll back to, healer holds and says so."""
    d = Driver(has_rollback_target=False)
    for _ in range(5):
        intents = d.cycle(False)
    assert any(isinstance(i, Hold) and "no stable tag" in i.reason for i in intents)


def test_pause_acts_on_nothing_but_keeps_counting() -> None:
    """Paused: failures are counted and the incident opens, no repair or rollback."""
    d = Driver(pause=Pause(until=T0 + timedelta(hours=1), reason="migrating"))
    for _ in range(8):
        d.cycle(False, "process.down")
    assert d.deploy.consecutive_failures == 8
    assert not any(isinstance(i, Repair | Rollback) for i in d.log)


def test_observe_mode_announces_the_rollback_once() -> None:
    """Observe mode asks for a would-be rollback at the fifth failure, not every cycle after."""
    d = Driver(observe=True)
    for _ in range(9):
        d.cycle(False)
    rollbacks = [i for i in d.log if isinstance(i, Rollback)]
    assert len(rollbacks) == 1 and rollbacks[0].observe


def test_an_emergency_confirmed_by_two_cycles_rolls_back_early() -> None:
    """Every one of several endpoints failing for two cycles rolls back before five failures."""
    cfg = parse_config(
        {"checks": [{"name": n, "type": "http", "url": "http://127.0.0.1:9/"} for n in ("api", "web")]},
        Path("healer.toml"),
    )
    deploy = Deploy(id=1, commit="a" * 40, first_seen=T0)
    down = tuple(CheckResult(n, "http", False, None, {}, "refused", ("http.down",)) for n in ("api", "web"))
    now = T0 + timedelta(minutes=5)  # past the deploy grace
    first = decide(Situation(deploy=deploy, verdict=Verdict(now, down), now=now), cfg)
    assert not any(isinstance(i, Rollback) for i in first.intents)
    deploy = replace(deploy, consecutive_failures=1, emergency_streak=first.emergency_streak, open_incident=1)
    second = decide(Situation(deploy=deploy, verdict=Verdict(now, down), now=now), cfg)
    assert any(isinstance(i, Rollback) and "emergency" in i.reason for i in second.intents)


def test_a_single_endpoint_down_waits_for_the_ordinary_count() -> None:
    """With one endpoint, a crash gets its repairs: no emergency rollback at cycle two."""
    d = Driver()
    d.cycle(False, "process.down")
    assert not any(isinstance(i, Rollback) for i in d.cycle(False, "process.down"))


def test_one_emergency_blip_never_rolls_back() -> None:
    """A single cycle with every endpoint down is not an emergency yet."""
    d = Driver()
    d.cycle(True)
    d.cycle(False)
    d.cycle(True)
    d.cycle(False)
    assert not any(isinstance(i, Rollback) for i in d.log)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60))
def test_any_sequence_rolls_back_at_most_once_per_deploy_window_and_never_while_held(seq: list[bool]) -> None:
    """Whatever the sequence, a rolled-back deploy never asks for another rollback."""
    d = Driver()
    d.deploy = replace(d.deploy, via_rollback=True)
    for ok in seq:
        d.cycle(ok)
    assert not any(isinstance(i, Rollback) for i in d.log)
    assert sum(isinstance(i, Hold) for i in d.log) <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60))
def test_incidents_open_only_after_resolving(seq: list[bool]) -> None:
    """At most one incident is open at a time; each opening follows a resolution."""
    d = Driver(has_rollback_target=False)
    open_now = False
    for ok in seq:
        for i in d.cycle(ok):
            if isinstance(i, OpenIncident):
                assert not open_now
                open_now = True
            if isinstance(i, ResolveIncident):
                assert open_now
                open_now = False


RESTART = {"process-restart": PlaybookPolicy("process-restart", timedelta(0), 5, restarts_app=True)}


def verifying(restart_age: timedelta, *, release_was_healthy: bool) -> Situation:
    """A failing cycle (the app down) while a restart started `restart_age` ago is still being
    verified beside the loop, on a new release (the deploy is the suspect) or on one that was
    healthy (its process died)."""
    now = T0 + timedelta(minutes=10)
    deploy = Deploy(
        id=2, commit="b" * 40, first_seen=T0, open_incident=1, consecutive_failures=1,
        healthy_at=T0 if release_was_healthy else None,
    )  # fmt: skip
    down = Verdict(now, (
        CheckResult("api", "http", False, None, {}, "connection refused", ("http.down",)),
        CheckResult("web", "process", False, None, {"count": 0.0}, None, ("process.down",)),
    ))  # fmt: skip
    return Situation(
        deploy=deploy, verdict=down, now=now, previous_healthy=True,
        repairs=(PastRepair("process-restart", now - restart_age, Outcome.STARTED),), playbooks=RESTART,
        incident_since=T0,
    )  # fmt: skip


def test_a_repair_still_being_verified_is_not_started_again_and_the_next_step_says_so() -> None:
    grace = CONFIG.escalation.repair_grace
    d = decide(verifying(grace / 2, release_was_healthy=True), CONFIG)
    assert not any(isinstance(i, Repair | Rollback | Hold) for i in d.intents)
    assert "process-restart started at 00:09:45 UTC, still being verified" in d.next_step
    assert d.consecutive_failures == 1  # a crash's restart is under way: not counted toward a rollback


def test_a_healthy_releases_restart_is_left_to_its_verification_past_the_grace_too() -> None:
    """The release was healthy and its process died: its restart is given all of verify_within."""
    d = decide(verifying(CONFIG.escalation.repair_grace * 3, release_was_healthy=True), CONFIG)
    assert not any(isinstance(i, Repair | Rollback | Hold) for i in d.intents)


def test_a_suspect_release_is_rolled_back_once_its_restarts_grace_is_over_without_waiting_for_its_verification() -> (
    None
):
    grace = CONFIG.escalation.repair_grace
    within = decide(verifying(grace - timedelta(seconds=1), release_was_healthy=False), CONFIG)
    assert not any(isinstance(i, Repair | Rollback) for i in within.intents)
    after = decide(verifying(grace, release_was_healthy=False), CONFIG)
    (rollback,) = [i for i in after.intents if isinstance(i, Rollback)]
    assert rollback.reason.startswith("a restart did not cure it") and "likely cause: deploy" in rollback.reason
    assert not any(isinstance(i, Repair) for i in after.intents)


def test_a_hold_says_what_failed_in_its_title() -> None:
    """ "Waiting for a person: api failing on the rolled-back version too", not "not acting"."""
    d = Driver()
    d.deploy = replace(d.deploy, via_rollback=True)
    for _ in range(5):
        d.cycle(False)
    (held,) = [i for i in d.log if isinstance(i, Alert) and i.event == "healer.held"]
    assert held.title == "api failing on the rolled-back version too"
    d = Driver(has_rollback_target=False)
    for _ in range(5):
        d.cycle(False)
    (held,) = [i for i in d.log if isinstance(i, Alert) and i.event == "healer.held"]
    assert held.title == "api failing, and no stable tag to roll back to"
