"""Judging a deploy against the release before it: rank test, factor and floor must all agree."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import commit, config_from, make_repo
from hypothesis import given, settings
from hypothesis import strategies as st
from services import HttpApp

from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.config import Config, parse_config
from healer.judge import REFERENCE_ALPHA, judge, reference_of
from healer.loop import Watchdog
from healer.model import CheckResult, Reference, Verdict, Who
from healer.store import CycleUpdate, Store

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def config(**http: Any) -> Config:
    check = {"name": "api", "type": "http", "url": "http://127.0.0.1:9/", **http}
    return parse_config({"checks": [check]}, Path("healer.toml"))


CONFIG = config()


def http(*ms: float, errors: int = 0) -> CheckResult:
    med = sorted(ms)[len(ms) // 2] if ms else None
    return CheckResult(
        "api", "http", True, None if med is None else timedelta(milliseconds=med),
        {"samples": len(ms) + errors, "samples_ok": len(ms), "status": 200.0},
        samples_ms=tuple(ms), sample_errors=errors,
    )  # fmt: skip


def reference(samples: list[float], label: str = "stable-2") -> Reference:
    return Reference(label, {"api": tuple(samples)}, {"api": len(samples)}, {"api": 0})


# 60 samples around 50 ms (45..55), as 20 healthy cycles of 3 would give
REF = reference([45 + (i * 7) % 11 for i in range(60)])
# and around 5 ms: a release 3x slower is still only 10 ms slower
REF_5MS = reference([4.5 + (i * 7) % 11 / 10 for i in range(60)])


@pytest.mark.parametrize(
    ("samples", "ref", "ok"),
    [
        pytest.param((52, 48, 51), REF, True, id="same-as-before"),
        pytest.param((400, 420, 410), REF, False, id="8x-slower"),
        pytest.param((120, 125, 130), REF, False, id="2.5x-slower"),
        pytest.param((14, 15, 16), REF_5MS, True, id="3x-but-under-the-20ms-floor"),
        pytest.param((160, 45, 170), REF, True, id="one-fast-sample-the-rank-test-disagrees"),
        pytest.param((400, 420, 410), reference([50.0] * 10), True, id="too-few-reference-samples"),
        pytest.param((), REF, True, id="no-answered-sample-this-cycle"),
    ],
)
def test_latency_vs_the_release_before_needs_test_factor_and_floor(
    samples: tuple[float, ...], ref: Reference, ok: bool
) -> None:
    """Only when the rank test, the factor and the floor agree is the check failed."""
    v = judge([http(*samples)], None, CONFIG.checks, NOW, reference=ref)
    assert v.ok is ok
    if not ok:
        assert v.results[0].symptoms == ("http.latency",)


def test_the_verdict_explains_itself() -> None:
    """The error names both medians, the release before, the ratio, p and the sample counts."""
    v = judge([http(400, 420, 410)], None, CONFIG.checks, NOW, reference=REF)
    assert v.results[0].error == "median 410 ms vs 50 ms in stable-2 (8.2×, p = 0.002, 3 vs 60 samples)"
    slow = [2000.0 + i for i in range(20)]
    v = judge([http(*slow)], None, CONFIG.checks, NOW, reference=REF)
    assert v.results[0].error == "median 2010 ms vs 50 ms in stable-2 (40×, p < 0.001, 20 vs 60 samples)"


def test_without_a_reference_nothing_changes() -> None:
    """reference=None (the first deploy, every old caller) judges as before."""
    r = http(400, 420, 410)
    assert judge([r], None, CONFIG.checks, NOW).results == (r,)


def test_an_existing_latency_failure_is_not_said_twice() -> None:
    """A check already slow over its ceiling keeps its one http.latency symptom."""
    cfg = config(max_latency="300ms")
    r = CheckResult(
        "api", "http", False, timedelta(milliseconds=410), {}, "median latency 410 ms is over the 300ms ceiling",
        ("http.latency",), samples_ms=(400, 410, 420),
    )  # fmt: skip
    assert judge([r], None, cfg.checks, NOW, reference=REF).results == (r,)


def _lognormal(rng: random.Random, median_ms: float, n: int) -> list[float]:
    return [rng.lognormvariate(math.log(median_ms), 0.5) for _ in range(n)]


def test_same_distribution_fails_no_more_often_than_the_false_alarm_rate() -> None:
    """A release drawn from the same (heavy-tailed) distribution as the one before fails at most
    about REFERENCE_ALPHA of its cycles, even with no factor and no floor (seeded)."""
    rng = random.Random(15)
    bare = config(max_latency_factor_vs_previous=1.0, min_latency_increase="0ms")
    trials, bare_fails, default_fails = 2000, 0, 0
    for _ in range(trials):
        ref = reference(_lognormal(rng, 150, 60))
        cycle = [http(*_lognormal(rng, 150, 3))]
        bare_fails += not judge(cycle, None, bare.checks, NOW, reference=ref).ok
        default_fails += not judge(cycle, None, CONFIG.checks, NOW, reference=ref).ok
    bound = REFERENCE_ALPHA + 3 * math.sqrt(REFERENCE_ALPHA / trials)
    assert bare_fails / trials <= bound
    assert default_fails <= bare_fails


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.floats(5, 500))
def test_forty_times_slower_with_20_samples_is_always_failed(seed: int, median_ms: float) -> None:
    """20 samples 40 times slower than the release before fail the check, whatever its speed."""
    rng = random.Random(seed)
    ref = reference(_lognormal(rng, median_ms, 60))
    v = judge([http(*_lognormal(rng, 40 * median_ms, 20))], None, CONFIG.checks, NOW, reference=ref)
    assert not v.ok and "http.latency" in v.results[0].symptoms


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(0.1, 5000), min_size=1, max_size=25),
    st.lists(st.floats(0.1, 50), max_size=19),
)
def test_too_little_reference_is_inconclusive_and_fails_nothing(now: list[float], before: list[float]) -> None:
    """With fewer than 20 reference samples the rule never fails a check, however slow it is."""
    v = judge([http(*now)], None, CONFIG.checks, NOW, reference=reference(before))
    assert v.ok


def test_reference_of_pools_the_first_healthy_cycles() -> None:
    """Only fully healthy cycles are pooled, the first `cycles` of them, with request counts."""
    bad = Verdict(NOW, (CheckResult("api", "http", False, samples_ms=(999.0,), sample_errors=2),))
    good = [Verdict(NOW + timedelta(minutes=i), (http(10.0 + i, 20.0, errors=1),)) for i in range(5)]
    ref = reference_of([bad, *good], "abc123", cycles=3)
    assert ref.label == "abc123"
    assert ref.samples_ms["api"] == (10.0, 20.0, 11.0, 20.0, 12.0, 20.0)
    assert ref.requests["api"] == 9 and ref.errors["api"] == 3


def _update() -> CycleUpdate:
    return CycleUpdate(
        consecutive_failures=0, consecutive_passes=0, emergency_streak=0, baseline=None,
        open_incident_cause=None, resolve_incident=False,
    )  # fmt: skip


def test_the_store_finds_the_last_good_release_before_and_its_healthy_cycles(tmp_path: Path) -> None:
    """The reference is the latest earlier deploy with healthy loop cycles whose commit is not
    marked bad; its healthy loop cycles come back oldest first, with their raw samples."""
    with Store(tmp_path / "state.db") as store:
        a, _ = store.ensure_deploy("a" * 40, NOW)
        for i in range(4):
            store.record_cycle(a.id, Verdict(NOW + timedelta(minutes=i), (http(10.0 + i),)), Who.LOOP, _update())
        store.record_cycle(a.id, Verdict(NOW, (http(99.0),)), Who.PERSON, None)  # healer check, not the loop
        b, _ = store.ensure_deploy("b" * 40, NOW + timedelta(hours=1))
        store.record_cycle(b.id, Verdict(NOW + timedelta(hours=1), (http(500.0),)), Who.LOOP, _update())
        store.mark_bad("b" * 40, "slow", NOW + timedelta(hours=2))
        c, _ = store.ensure_deploy("c" * 40, NOW + timedelta(hours=2))
        assert store.reference_cycles(a.id, 20) is None
        found = store.reference_cycles(c.id, 3)
        assert found is not None
        before, verdicts = found
        assert before.id == a.id
        assert [v.results[0].samples_ms for v in verdicts] == [(10.0,), (11.0,), (12.0,)]


async def test_the_loop_judges_a_new_deploy_against_the_release_before(
    tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """A release far slower than the one before fails its first cycle with http.latency naming
    that release, although it never had a fast cycle of its own."""
    app = http_app("healthy")
    repo = make_repo(tmp_path / "app")
    cfg = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [[checks]]
        name = "api"
        type = "http"
        url = "{app.url}/health"
        timeout = "5s"
        """,
    )
    clock = FakeClock()
    store = BufferedStore(cfg.db_path)
    try:
        async with probe_context(cfg) as ctx:
            dog = Watchdog(cfg, store, ctx, clock=clock)
            for _ in range(7):  # 21 samples: enough to judge against
                assert (await dog.step()).verdict.ok
                clock.advance(timedelta(minutes=15))
            before = store.current_deploy()
            commit(repo, "v2")
            app.behaviour, app.delay = "slow", 0.3
            report = await dog.step()
    finally:
        store.close()
    assert before is not None and report.deploy.id != before.id
    (api,) = report.verdict.results
    assert not api.ok and api.symptoms == ("http.latency",)
    # the reference is the 21 samples less any beyond 1.5 IQR (a loopback app has a few)
    assert api.error is not None and re.search(
        rf"in {before.commit[:12]} \(\d+×, p [<=] 0\.\d+, 3 vs \d+ samples\)", api.error
    )


def _cycles_to_rollback(samples: tuple[float, ...], cycles: int = 8) -> int | None:
    """Drive judge() and decide() over a new deploy whose every cycle gives `samples` against REF,
    as the loop does; the cycle (1-based) whose decision rolls back, or None."""
    from dataclasses import replace

    from healer.decide import Situation, decide
    from healer.model import Deploy, Rollback

    deploy = Deploy(id=2, commit="b" * 40, first_seen=NOW)
    for n in range(1, cycles + 1):
        at = NOW + timedelta(minutes=n)
        v = judge([http(*samples)], None, CONFIG.checks, at, reference=REF)
        d = decide(Situation(deploy=deploy, verdict=v, now=at, previous_healthy=True), CONFIG)
        if any(isinstance(i, Rollback) for i in d.intents):
            return n
        deploy = replace(
            deploy, consecutive_failures=d.consecutive_failures, emergency_streak=d.emergency_streak,
            open_incident=deploy.open_incident or 1,
        )  # fmt: skip
    return None


def test_strong_evidence_of_a_slow_release_rolls_back_after_confirm_cycles() -> None:
    """8x slower than the release before, every request slower than its slowest: an emergency,
    rolled back at the second cycle (confirm_cycles); 2.5x slower is a regression too, but waits
    for rollback_after (5); as slow as before never rolls back."""
    assert _cycles_to_rollback((400, 420, 410)) == 2
    assert _cycles_to_rollback((120, 125, 130)) == 5
    assert _cycles_to_rollback((52, 48, 51)) is None
