"""Judging a deploy against the release before it: rank test, factor and floor must all agree."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import commit, healer, make_repo, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from services import HttpApp

from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.config import Config, load_config, parse_config
from healer.decide import Decision, Situation, decide
from healer.judge import REFERENCE_ALPHA, baseline_of, judge, reference_of
from healer.loop import Watchdog
from healer.model import (
    CheckResult,
    Comparison,
    Conclusion,
    Deploy,
    Metric,
    OpenIncident,
    Reference,
    ResolveIncident,
    Rollback,
    Verdict,
    Who,
)
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


def reference(samples: list[float], label: str = "stable-2", errors: int = 0) -> Reference:
    """The release before's pooled answered samples, and `errors` failed requests besides them."""
    return Reference(label, {"api": tuple(samples)}, {"api": len(samples) + errors}, {"api": errors})


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


def _lognormal(rng: random.Random, median_ms: float, n: int, sigma: float = 0.5) -> list[float]:
    return [rng.lognormvariate(math.log(median_ms), sigma) for _ in range(n)]


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.integers(3, 25), st.floats(0.1, 1.0), st.integers(0, 2**32 - 1))
def test_same_distribution_fails_no_more_often_than_the_false_alarm_rate(n: int, sigma: float, seed: int) -> None:
    """A release drawn from the same (heavy-tailed) distribution as the one before fails at most
    about REFERENCE_ALPHA of its cycles of `n` samples, even with no factor and no floor (seeded)."""
    rng = random.Random(seed)
    bare = config(max_latency_factor_vs_previous=1.0, min_latency_increase_vs_previous="0ms")
    trials, bare_fails, default_fails = 1000, 0, 0
    for _ in range(trials):
        ref = reference(_lognormal(rng, 150, 60, sigma))
        cycle = [http(*_lognormal(rng, 150, n, sigma))]
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


def _watched(directory: Path, repo: Path, app: HttpApp) -> Path:
    """healer.toml for an app in `repo` answering at `app`, one http check on it."""
    return write_config(
        directory,
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


async def test_the_loop_judges_a_new_deploy_against_the_release_before(
    tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """A release far slower than the one before fails its first cycle with http.latency naming
    that release, although it never had a fast cycle of its own."""
    app = http_app("healthy")
    repo = make_repo(tmp_path / "app")
    cfg = load_config(_watched(tmp_path, repo, app))
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


def _drive(cycles: Sequence[CheckResult], ref: Reference | None) -> list[Decision]:
    """Drive judge() and decide() over a new deploy whose cycles give `cycles` against `ref`, as
    the loop does (counters, incident, baseline, healthy_at); the decisions, up to a rollback."""
    deploy = Deploy(id=2, commit="b" * 40, first_seen=NOW)
    out = []
    for n, r in enumerate(cycles, 1):
        at = NOW + timedelta(minutes=n)
        v = judge([r], deploy.baseline, CONFIG.checks, at, reference=ref)
        d = decide(Situation(deploy=deploy, verdict=v, now=at, previous_healthy=True), CONFIG)
        out.append(d)
        if any(isinstance(i, Rollback) for i in d.intents):
            break
        opened = any(isinstance(i, OpenIncident) for i in d.intents)
        resolved = any(isinstance(i, ResolveIncident) for i in d.intents)
        deploy = replace(
            deploy, consecutive_failures=d.consecutive_failures, consecutive_passes=d.consecutive_passes,
            emergency_streak=d.emergency_streak, open_incident=None if resolved else (deploy.open_incident or
            (1 if opened else None)), baseline=deploy.baseline or baseline_of(v),
            healthy_at=deploy.healthy_at or (at if v.ok else None),
        )  # fmt: skip
    return out


def _cycles_to_rollback(samples: tuple[float, ...], cycles: int = 8) -> int | None:
    """The cycle (1-based) at which a new deploy whose every cycle gives `samples` against REF
    is rolled back, or None."""
    decisions = _drive([http(*samples)] * cycles, REF)
    rolled = any(isinstance(i, Rollback) for i in decisions[-1].intents)
    return len(decisions) if rolled else None


def test_strong_evidence_of_a_slow_release_rolls_back_after_confirm_cycles() -> None:
    """8x slower than the release before, every request slower than its slowest: an emergency,
    rolled back at the second cycle (confirm_cycles); 2.5x slower is a regression too, but waits
    for rollback_after (5); as slow as before never rolls back."""
    assert _cycles_to_rollback((400, 420, 410)) == 2
    assert _cycles_to_rollback((120, 125, 130)) == 5
    assert _cycles_to_rollback((52, 48, 51)) is None


# ---- the share of failed requests ----------------------------------------------------------------

# 60 requests of the release before, 6 of them failed (10 %)
REF_10PCT = reference([45 + (i * 7) % 11 for i in range(54)], errors=6)


def _failing(failed: int, of: int) -> CheckResult:
    """A cycle of `of` requests, `failed` of them failed; the probe fails it on a majority."""
    r = http(*[50.0] * (of - failed), errors=failed)
    return replace(r, ok=False, symptoms=("http.5xx",)) if failed * 2 >= of else r


def _compared(r: CheckResult, metric: Metric) -> Comparison | None:
    return next((c for c in r.compared if c.metric is metric), None)


@pytest.mark.parametrize(
    ("ref", "failed", "of", "conclusion"),
    [
        pytest.param(REF, 3, 10, Conclusion.FAIL, id="3-of-10-vs-none-before"),
        pytest.param(REF_10PCT, 8, 20, Conclusion.FAIL, id="8-of-20-vs-10pct-before"),
        pytest.param(REF_10PCT, 4, 10, Conclusion.PASS, id="4-of-10-vs-10pct-before-p-0.03"),
        pytest.param(REF_10PCT, 2, 10, Conclusion.PASS, id="2-of-10-under-the-minimum-count"),
        pytest.param(REF_10PCT, 3, 10, Conclusion.PASS, id="3-of-10-vs-10pct-before-is-not-significant"),
        pytest.param(REF, 3, 25, Conclusion.PASS, id="3-of-25-under-the-20-point-margin"),
        pytest.param(REF, 0, 3, Conclusion.PASS, id="none-failed"),
        pytest.param(reference([50.0] * 15), 3, 10, Conclusion.INCONCLUSIVE, id="15-reference-requests"),
    ],
)
def test_errors_vs_the_release_before_need_a_count_a_margin_and_fishers_test(
    ref: Reference, failed: int, of: int, conclusion: Conclusion
) -> None:
    """The share of failed requests fails the check only with at least 3 failed, 20 points over
    the release before's share, and Fisher's exact test at p < 0.02; with under 20 reference
    requests it is inconclusive and fails nothing."""
    (r,) = judge([_failing(failed, of)], None, CONFIG.checks, NOW, reference=ref).results
    c = _compared(r, Metric.ERRORS)
    assert c is not None and c.conclusion is conclusion and c.against == "stable-2"
    assert r.ok is (conclusion is not Conclusion.FAIL)
    assert ("http.errors" in r.symptoms) is (conclusion is Conclusion.FAIL)


def test_an_error_verdict_explains_itself() -> None:
    """The failure names both counts, the release before and p; a pass keeps its counts."""
    (r,) = judge([_failing(6, 20)], None, CONFIG.checks, NOW, reference=reference([50.0] * 398, errors=2)).results
    assert r.error == "6 of 20 requests failed vs 2 of 400 in stable-2 (p < 0.001)"
    (r,) = judge([_failing(3, 10)], None, CONFIG.checks, NOW, reference=REF_10PCT).results
    c = _compared(r, Metric.ERRORS)
    assert c is not None and c.why == "3 of 10 requests failed vs 6 of 60, p = 0.112"


def test_a_check_the_probe_failed_on_its_requests_is_not_compared_for_errors() -> None:
    """Most requests failed: the probe said so (http.5xx); no http.errors on top of it."""
    (r,) = judge([_failing(3, 3)], None, CONFIG.checks, NOW, reference=REF).results
    assert r.symptoms == ("http.5xx",) and _compared(r, Metric.ERRORS) is None


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.floats(0.005, 0.15), st.integers(4, 25), st.integers(0, 2**32 - 1))
def test_an_error_rate_like_the_release_befores_fails_no_more_often_than_the_false_alarm_rate(
    rate: float, n: int, seed: int
) -> None:
    """Requests failing at random as often as they did in the release before (20 cycles of `n`)
    fail http.errors at most about REFERENCE_ALPHA of the cycles, even with no minimum count and
    no margin; the default floors fail fewer (seeded)."""
    rng = random.Random(seed)
    bare = config(min_errors_vs_previous=1, min_error_rate_increase_vs_previous=0.01)
    trials, bare_fails, default_fails = 400, 0, 0
    for _ in range(trials):
        before = _binomial(rng, 20 * n, rate)
        ref = reference([50.0] * (20 * n - before), errors=before)
        cycle = [_failing(_binomial(rng, n, rate), n)]
        bare_fails += "http.errors" in judge(cycle, None, bare.checks, NOW, reference=ref).symptoms
        default_fails += "http.errors" in judge(cycle, None, CONFIG.checks, NOW, reference=ref).symptoms
    assert bare_fails / trials <= REFERENCE_ALPHA + 3 * math.sqrt(REFERENCE_ALPHA / trials)
    assert default_fails <= bare_fails


# ---- memory ----------------------------------------------------------------------------------------

MEMORY = parse_config({"checks": [{"name": "web", "type": "process", "match": "web"}]}, Path("healer.toml"))


def proc(mb: float) -> CheckResult:
    return CheckResult("web", "process", True, None, {"count": 1.0, "rss_mb": mb})


def rss(*mb: float) -> Reference:
    return Reference("stable-2", {}, {}, {}, rss_mb={"web": mb})


@pytest.mark.parametrize(
    ("now", "ref", "conclusion"),
    [
        pytest.param(210.0, rss(*[200.0] * 20), Conclusion.PASS, id="as-before"),
        pytest.param(420.0, rss(*[200.0] * 20), Conclusion.FAIL, id="2.1x-and-220MB-more"),
        pytest.param(390.0, rss(*[200.0] * 20), Conclusion.PASS, id="under-2x"),
        pytest.param(120.0, rss(*[50.0] * 5), Conclusion.PASS, id="2.4x-but-under-the-100MiB-floor"),
        pytest.param(420.0, rss(198.0, 1000.0, 201.0, 199.0, 200.0), Conclusion.FAIL, id="median-not-mean"),
        pytest.param(900.0, rss(200.0, 200.0, 200.0), Conclusion.INCONCLUSIVE, id="3-reference-cycles"),
    ],
)
def test_memory_vs_the_release_before_needs_factor_and_floor(
    now: float, ref: Reference, conclusion: Conclusion
) -> None:
    """RSS fails process.memory over 2x the median of the release before's cycles and 100 MiB
    more; with under 5 of them it is inconclusive and fails nothing."""
    (r,) = judge([proc(now)], None, MEMORY.checks, NOW, reference=ref).results
    c = _compared(r, Metric.MEMORY)
    assert c is not None and c.conclusion is conclusion
    assert r.ok is (conclusion is not Conclusion.FAIL)
    assert ("process.memory" in r.symptoms) is (conclusion is Conclusion.FAIL)


def test_a_memory_verdict_explains_itself() -> None:
    """The failure names both sizes, the release before, the ratio and how many cycles."""
    (r,) = judge([proc(420.0)], None, MEMORY.checks, NOW, reference=rss(*[200.0] * 20)).results
    assert r.error == "memory 420 MB vs 200 MB in stable-2 (2.1×, median of 20 cycles)"
    (r,) = judge([proc(900.0)], None, MEMORY.checks, NOW, reference=rss(200.0, 200.0, 200.0)).results
    assert r.inconclusive[0].describe(r.name) == "web: memory inconclusive vs stable-2 (3 reference values, need 5)"


def test_reference_of_keeps_each_healthy_cycles_rss() -> None:
    """The release before's memory is one RSS per fully healthy cycle."""
    cycles = [Verdict(NOW + timedelta(minutes=i), (proc(200.0 + i),)) for i in range(3)]
    assert reference_of(cycles, "abc").rss_mb == {"web": (200.0, 201.0, 202.0)}


# ---- inconclusive: recorded, shown, never counted ----------------------------------------------------


def test_too_little_reference_is_recorded_as_inconclusive() -> None:
    """Each comparison the release before has too little data for is recorded, said for people,
    and fails nothing."""
    v = judge([http(400, 420, 410, errors=1)], None, CONFIG.checks, NOW, reference=reference([50.0] * 10))
    assert v.ok
    assert v.results[0].compared == (
        Comparison(Metric.LATENCY, Conclusion.INCONCLUSIVE, "stable-2", "10 reference samples, need 20"),
        Comparison(Metric.ERRORS, Conclusion.INCONCLUSIVE, "stable-2", "10 reference requests, need 20"),
    )
    assert v.inconclusive == (
        "api: latency inconclusive vs stable-2 (10 reference samples, need 20)",
        "api: errors inconclusive vs stable-2 (10 reference requests, need 20)",
    )


def test_comparisons_survive_the_store_and_older_rows_still_load() -> None:
    """A result's comparisons go through its JSON and back; a row stored before they existed
    loads with none."""
    (r,) = judge([_failing(3, 10)], None, CONFIG.checks, NOW, reference=REF).results
    assert r.compared and CheckResult.from_json(r.to_json()) == r
    old = {"name": "api", "type": "http", "ok": True, "latency_ms": 50.0, "values": {}, "error": None, "symptoms": []}
    assert CheckResult.from_json(old).compared == ()


_CYCLES = st.lists(st.tuples(st.lists(st.floats(0.1, 20_000), max_size=8), st.integers(0, 8)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_CYCLES)
def test_inconclusive_never_escalates(cycles: list[tuple[list[float], int]]) -> None:
    """Against a release before with too little data, whatever the cycles (slow, failing,
    healthy), every comparison is inconclusive and decide does exactly what it does with no
    release before at all: no restart, rollback, incident or count comes from it."""
    results = [_failing(failed, len(ms) + failed) if ms or failed else http() for ms, failed in cycles]
    results = [replace(r, samples_ms=tuple(ms)) for r, (ms, _) in zip(results, cycles, strict=True)]
    small = reference([50.0] * 10)
    for r in results:
        (judged,) = judge([r], None, CONFIG.checks, NOW, reference=small).results
        assert all(c.conclusion is Conclusion.INCONCLUSIVE for c in judged.compared)
    assert _drive(results, small) == _drive(results, None)


async def test_history_status_and_baseline_say_what_could_not_be_judged(
    tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """A release before watched for two cycles (6 samples) is too little to judge the next one
    against: its cycle passes, and `healer history`, `status` and `baseline` say what was
    inconclusive and why."""
    app = http_app("healthy")
    repo = make_repo(tmp_path / "app")
    path = _watched(tmp_path, repo, app)
    cfg = load_config(path)
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    store = BufferedStore(cfg.db_path)
    try:
        async with probe_context(cfg) as ctx:
            dog = Watchdog(cfg, store, ctx, clock=clock)
            for _ in range(2):
                assert (await dog.step()).verdict.ok
                clock.advance(timedelta(minutes=15))
            before = store.current_deploy()
            commit(repo, "v2")
            report = await dog.step()
    finally:
        store.close()
    assert before is not None
    label = before.commit[:12]
    latency = f"api: latency inconclusive vs {label} (6 reference samples, need 20)"
    errors = f"api: errors inconclusive vs {label} (6 reference requests, need 20)"
    assert report.verdict.ok and report.verdict.inconclusive == (latency, errors)

    rows = json.loads(healer("--config", str(path), "history", "--json").stdout)
    last = [r for r in rows if r["type"] == "check"][-1]
    assert last["ok"] and last["detail"] == f"{latency}; {errors}"
    assert [(c["check"], c["metric"], c["conclusion"]) for c in last["compared"]] == [
        ("api", "latency", "inconclusive"),
        ("api", "errors", "inconclusive"),
    ]
    assert "latency inconclusive vs" in healer("--config", str(path), "history").stdout
    status = healer("--config", str(path), "status").stdout
    assert (
        f"vs       {label}: api latency inconclusive (6 reference samples, need 20), "
        "errors inconclusive (6 reference requests, need 20)"
    ) in status, status
    assert json.loads(healer("--config", str(path), "status", "--json").stdout)["last_cycle"]["compared"]
    shown = healer("--config", str(path), "baseline")
    assert latency in shown.stdout and errors in shown.stdout, shown.stdout + shown.stderr
