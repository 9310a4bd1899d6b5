"""Which playbooks a failing cycle runs: dispatch rules, cooldown, backoff and cap (pure: plain data and a `now`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import Config, parse_config
from healer.decide import PastRepair, PlaybookPolicy, Situation, choose_repairs
from healer.ladder import Attribution, Cause
from healer.model import Alert, CheckResult, Deploy, Intent, Outcome, Repair, Verdict
from healer.repair import policies

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def config(process: bool = True, **playbooks: Any) -> Config:
    data: dict[str, Any] = {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}]}
    if process:
        data["process"] = {"manager": "systemd", "name": "shop"}
    return parse_config({**data, "playbooks": playbooks}, Path("healer.toml"))


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
        pytest.param(("http.status",), (), [], id="a-4xx-has-no-rule"),
        pytest.param(("http.status", "http.5xx"), (), ["process-restart"], id="5xx-restarts"),
        pytest.param(("http.down",), (), ["process-restart"], id="not-answering-restarts"),
        pytest.param(("http.timeout",), (), ["process-restart"], id="wedged-restarts"),
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
    assert names(choose_repairs(situation(symptoms, repairs), DEFAULT).intents) == expected


def test_a_playbook_without_a_policy_is_never_chosen() -> None:
    """A rule naming a playbook nobody knows does nothing rather than fail."""
    s = situation(("process.down",))
    s = Situation(s.deploy, s.verdict, s.now, playbooks={})
    assert choose_repairs(s, DEFAULT).intents == []


def test_observe_mode_counts_would_be_runs_against_the_cap() -> None:
    """In observe mode a "would repair" record counts, so the shadow run shows the same pacing."""
    past = (run("process-restart", 5 * MIN, Outcome.SKIPPED, "observe"),)
    assert names(choose_repairs(situation(("process.down",), past, observe=True), DEFAULT).intents) == []
    intents = choose_repairs(situation(("process.down",), observe=True), DEFAULT).intents
    assert [(i.kind, i.observe) for i in intents if isinstance(i, Repair)] == [("process-restart", True)]


def test_a_user_rule_sends_a_symptom_to_a_user_playbook() -> None:
    """Rules in healer.toml replace the defaults."""
    cfg = config(rules=[{"when": ["http.status"], "run": "warm-cache"}])
    s = situation(("http.status", "process.down"))
    s = Situation(s.deploy, s.verdict, s.now, playbooks={"warm-cache": PlaybookPolicy("warm-cache", MIN, 1)})
    assert names(choose_repairs(s, cfg).intents) == ["warm-cache"]


def test_one_failure_in_ten_requests_restarts_at_most_a_few_times_an_hour() -> None:
    """An app failing one request in ten (a cycle of three samples fails when two do) is not
    restarted on every failure: the backoff and the cap keep it to a few restarts an hour."""
    shipped = policies(DEFAULT)
    rng = random.Random(7)
    past: list[PastRepair] = []
    failing = False
    now = NOW
    end = NOW + timedelta(hours=1)
    while now < end:
        failed = sum(rng.random() < 0.1 for _ in range(3)) >= 2
        if failed:
            result = CheckResult("api", "http", False, None, {}, "500", ("http.status", "http.5xx"))
            s = Situation(
                deploy=Deploy(id=1, commit="a" * 40, first_seen=NOW - timedelta(hours=2), consecutive_failures=1),
                verdict=Verdict(now, (result,)), now=now, repairs=tuple(past), playbooks=shipped,
            )  # fmt: skip
            for i in choose_repairs(s, DEFAULT).intents:
                if isinstance(i, Repair):
                    past.append(PastRepair(i.kind, now, Outcome.OK))
        failing = failed
        now += timedelta(minutes=1) if failing else timedelta(minutes=15)
    restarts = [p for p in past if p.name == "process-restart"]
    assert len(restarts) <= 2


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        pytest.param((), ["process-restart"], id="first-restart-at-once"),
        pytest.param((20,), ["process-restart"], id="second-crash-20s-later-restarts"),
        pytest.param((5,), [], id="second-within-10s-waits"),
        pytest.param((60, 20), [], id="third-within-30s-waits"),
        pytest.param((90, 40), ["process-restart"], id="third-after-30s-restarts"),
        pytest.param((900, 800, 700, 600, 500), ["repair.capped"], id="five-restarts-cap"),
    ],
)  # fmt: skip
def test_restarts_back_off_instead_of_going_silent(ago: tuple[int, ...], expected: list[str]) -> None:
    """Successive restarts wait 0 s, 10 s, 30 s, 2 m, 10 m, up to the cap of five per window."""
    shipped = policies(DEFAULT)
    past = tuple(run("process-restart", timedelta(seconds=a), Outcome.OK) for a in ago)
    s = situation(("http.down",), past)
    s = Situation(s.deploy, s.verdict, s.now, repairs=past, playbooks=shipped)
    choice = choose_repairs(s, DEFAULT)
    assert names(choice.intents) == expected
    if not expected:
        assert choice.restart_pending
        assert any("process-restart in backoff until" in x for x in choice.skipped)


def test_a_dependency_cause_runs_its_own_playbooks_and_restarts_at_most_once() -> None:
    """Redis slow and the app answering 500: redis-flush, and no restart loop for the app."""
    cfg = parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}, {"name": "cache", "type": "redis"}],
         "redis": {}, "process": {"manager": "systemd", "name": "shop"}},
        Path("healer.toml"),
    )  # fmt: skip
    api = CheckResult("api", "http", False, None, {}, "500", ("http.status", "http.5xx"))
    cache = CheckResult("cache", "redis", False, None, {}, "slow", ("redis.latency",))
    att = Attribution(Cause.DEPENDENCY, "cache failing", ("cache",))
    s = Situation(
        deploy=Deploy(id=1, commit="a" * 40, first_seen=NOW - timedelta(hours=1)),
        verdict=Verdict(NOW, (api, cache)), now=NOW, playbooks=policies(cfg),
    )  # fmt: skip
    assert names(choose_repairs(s, cfg, att).intents) == ["redis-flush"]


def test_a_restart_is_never_chosen_without_a_process_section() -> None:
    """With no [process], healer has no way to restart the app: the ladder goes on without it."""
    bare = config(process=False)
    s = situation(("http.down",))
    s = Situation(s.deploy, s.verdict, s.now, playbooks=policies(bare))
    assert names(choose_repairs(s, bare).intents) == []


def test_some_requests_answering_5xx_restart_only_when_a_second_cycle_agrees() -> None:
    """2 of 3 requests 5xx is as often noise as not: no restart on that cycle alone; the next
    failing cycle restarts; every request failing restarts at once."""
    shipped = policies(DEFAULT)

    def choose(samples_ok: float, last_ok: bool | None) -> list[str]:
        r = CheckResult("api", "http", False, None, {"samples_ok": samples_ok, "status": 500.0}, "500",
                        ("http.status", "http.5xx"))  # fmt: skip
        deploy = Deploy(id=1, commit="a" * 40, first_seen=NOW - timedelta(hours=1), last_ok=last_ok)
        s = Situation(deploy=deploy, verdict=Verdict(NOW, (r,)), now=NOW, playbooks=shipped)
        return names(choose_repairs(s, DEFAULT).intents)

    assert choose(1, last_ok=True) == []
    assert choose(1, last_ok=False) == ["process-restart"]
    assert choose(0, last_ok=True) == ["process-restart"]


@pytest.mark.parametrize(
    ("samples_ok", "symptoms", "restarts"),
    [
        # one request answered in time, two did not (a heavy-tailed pause): not a wedge
        pytest.param(1, ("http.timeout",), False, id="partly-timed-out-waits"),
        pytest.param(1, ("http.down",), False, id="partly-refused-waits"),
        pytest.param(0, ("http.timeout",), True, id="every-request-timed-out-is-a-wedge"),
        # the process gone as well: a crash, acted on at once whatever the requests did
        pytest.param(1, ("http.down", "process.down"), True, id="process-down-too"),
    ],
)
def test_partly_failed_requests_of_any_kind_wait_for_a_second_failing_cycle(
    samples_ok: float, symptoms: tuple[str, ...], restarts: bool
) -> None:
    """The app answered some requests correctly, so it is neither crashed nor wedged: a first
    failing cycle of partly failed requests (5xx, timeouts, refused) does not restart it."""
    r = CheckResult("api", "http", False, None, {"samples_ok": samples_ok}, "no answer", symptoms)
    deploy = Deploy(id=1, commit="a" * 40, first_seen=NOW - timedelta(hours=1), last_ok=True)
    s = Situation(deploy=deploy, verdict=Verdict(NOW, (r,)), now=NOW, playbooks=policies(DEFAULT))
    assert names(choose_repairs(s, DEFAULT).intents) == (["process-restart"] if restarts else [])
