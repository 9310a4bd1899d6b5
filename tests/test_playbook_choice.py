"""Which playbooks a failing cycle runs: dispatch rules, cooldown and cap (pure: plain data and a `now`)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import Config, parse_config
from healer.decide import PastRepair, PlaybookPolicy, Situation, choose_repairs
from healer.model import Alert, CheckResult, Deploy, Intent, Outcome, Repair, Verdict
from healer.repair import policies

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def config(**playbooks: Any) -> Config:
    return parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}], "playbooks": playbooks},
        Path("healer.toml"),
    )


DEFAULT = config()
POLICIES = {
    "process-restart": PlaybookPolicy("process-restart", 15 * MIN, 3),
    "redis-flush": PlaybookPolicy("redis-flush", 30 * MIN, 3),
    "connection-reset": PlaybookPolicy("connection-reset", 10 * MIN, 5),
    "rate-limit-clear": PlaybookPolicy("rate-limit-clear", 10 * MIN, 6),
}


def situation(symptoms: tuple[str, ...], repairs: tuple[PastRepair, ...] = (), observe: bool = False) -> Situation:
    result = CheckResult("api", "http", False, None, {}, "failing", symptoms)
    return Situation(
        deploy=Deploy(id=1, commit="a" * 40, first_seen=NOW - timedelta(hours=1), consecutive_failures=1),
        verdict=Verdict(NOW, (result,)),
        now=NOW,
        repairs=repairs,
        playbooks=POLICIES,
        observe=observe,
    )


def run(name: str, ago: timedelta, outcome: Outcome = Outcome.FAILED, note: str = "") -> PastRepair:
    return PastRepair(name, NOW - ago, outcome, note)


def names(intents: list[Intent]) -> list[str]:
    out = []
    for i in intents:
        if isinstance(i, Repair):
            out.append(i.kind)
        elif isinstance(i, Alert):
            out.append(i.event)
    return out


@pytest.mark.parametrize(
    ("symptoms", "repairs", "expected"),
    [
        pytest.param(("process.down",), (), ["process-restart"], id="process-down-restarts"),
        pytest.param(("process.memory",), (), ["process-restart"], id="memory-over-baseline-restarts"),
        pytest.param(("redis.latency",), (), ["redis-flush"], id="redis-latency-flushes"),
        pytest.param(("postgres.connections",), (), ["connection-reset"], id="pg-connections-reset"),
        pytest.param(("http.rate_limited",), (), ["rate-limit-clear"], id="429s-clear-the-limiter"),
        pytest.param(("http.status",), (), [], id="no-rule-no-repair"),
        pytest.param(
            ("process.down", "redis.latency", "postgres.latency"), (),
            ["process-restart", "redis-flush"], id="at-most-two-per-cycle-in-rule-order",
        ),
        pytest.param(("process.down",), (run("process-restart", 14 * MIN),), [], id="cooling-down"),
        pytest.param(
            ("process.down",), (run("process-restart", 15 * MIN),), ["process-restart"], id="cooldown-over",
        ),
        pytest.param(
            ("process.down",), (run("redis-flush", 1 * MIN),), ["process-restart"], id="cooldown-is-per-playbook",
        ),
        pytest.param(
            ("process.down",),
            (run("process-restart", 120 * MIN), run("process-restart", 90 * MIN), run("process-restart", 60 * MIN)),
            ["repair.capped"], id="cap-reached-is-announced",
        ),
        pytest.param(
            ("process.down",),
            (
                run("process-restart", 120 * MIN), run("process-restart", 90 * MIN),
                run("process-restart", 60 * MIN), run("process-restart", 30 * MIN, Outcome.SKIPPED, "cap"),
            ),
            [], id="cap-announced-once",
        ),
        pytest.param(
            ("process.down",),
            (run("process-restart", 120 * MIN, Outcome.SKIPPED), run("process-restart", 60 * MIN, Outcome.SKIPPED),
             run("process-restart", 20 * MIN, Outcome.SKIPPED)),
            ["process-restart"], id="skipped-runs-do-not-count",
        ),
        pytest.param(
            ("process.down",), (run("process-restart", 20 * MIN, Outcome.ERROR),), ["process-restart"],
            id="an-error-counts-for-cooldown-too",
        ),
    ],
)  # fmt: skip
def test_choose_repairs(symptoms: tuple[str, ...], repairs: tuple[PastRepair, ...], expected: list[str]) -> None:
    """The dispatch rules pick playbooks; cooldown and cap hold them back."""
    assert names(choose_repairs(situation(symptoms, repairs), DEFAULT)) == expected


def test_a_playbook_without_a_policy_is_never_chosen() -> None:
    """A rule naming a playbook nobody knows does nothing rather than fail."""
    s = situation(("process.down",))
    s = Situation(s.deploy, s.verdict, s.now, playbooks={})
    assert choose_repairs(s, DEFAULT) == []


def test_observe_mode_counts_would_be_runs_against_the_cap() -> None:
    """In observe mode a "would repair" record counts, so the shadow run shows the same pacing."""
    past = (run("process-restart", 5 * MIN, Outcome.SKIPPED, "observe"),)
    assert names(choose_repairs(situation(("process.down",), past, observe=True), DEFAULT)) == []
    intents = choose_repairs(situation(("process.down",), observe=True), DEFAULT)
    assert [(i.kind, i.observe) for i in intents if isinstance(i, Repair)] == [("process-restart", True)]


def test_a_user_rule_sends_a_symptom_to_a_user_playbook() -> None:
    """Rules in healer.toml replace the defaults."""
    cfg = config(rules=[{"when": ["http.status"], "run": "warm-cache"}])
    s = situation(("http.status", "process.down"))
    s = Situation(s.deploy, s.verdict, s.now, playbooks={"warm-cache": PlaybookPolicy("warm-cache", MIN, 1)})
    assert names(choose_repairs(s, cfg)) == ["warm-cache"]


def test_one_failure_in_ten_requests_restarts_at_most_twice_an_hour() -> None:
    """A flaky app failing every few cycles gets a restart or two in an hour, not one per failure."""
    shipped = policies(DEFAULT)
    past: list[PastRepair] = []
    start = NOW
    for minute in range(0, 60):
        now = start + timedelta(minutes=minute)
        if minute % 3:  # two cycles in three pass
            continue
        result = CheckResult("api", "http", False, None, {}, "500", ("process.down",))
        s = Situation(
            deploy=Deploy(id=1, commit="a" * 40, first_seen=start, consecutive_failures=1),
            verdict=Verdict(now, (result,)), now=now, repairs=tuple(past), playbooks=shipped,
        )  # fmt: skip
        for i in choose_repairs(s, DEFAULT):
            if isinstance(i, Repair):
                past.append(PastRepair(i.kind, now, Outcome.OK))
    restarts = [p for p in past if p.name == "process-restart"]
    assert 1 <= len(restarts) <= 2
    assert all(b.at - a.at >= shipped["process-restart"].cooldown for a, b in itertools.pairwise(restarts))
