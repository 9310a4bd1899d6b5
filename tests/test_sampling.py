"""When an http check's first samples are borderline against the release before, and how many
more it takes (pure: plain data, the check's config and the time left)."""

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
from services import HttpApp

from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.checks.http import HttpCheck
from healer.clock import FakeClock
from healer.config import parse_config
from healer.loop import Watchdog
from healer.sampling import FirstSamples, errors_borderline, extra_samples, is_borderline
from healer.views import history_rows


def http_check(**options: Any) -> HttpCheck:
    table = {"name": "api", "type": "http", "url": "http://127.0.0.1:9/", **options}
    check = parse_config({"checks": [table]}, Path("healer.toml")).checks[0]
    assert isinstance(check, HttpCheck)
    return check


def answered(*ms: float, failed: int = 0) -> FirstSamples:
    """Requests that all got an HTTP answer in `ms`, `failed` of them with a wrong one."""
    return FirstSamples(len(ms), failed, tuple(ms))


CHECK = http_check()  # factor 1.5, floor 20 ms, 3 samples
# 60 reference samples around 50 ms (45..55), as 20 healthy cycles of 3 would give
POOLED = [45.0 + (i * 7) % 11 for i in range(60)]
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("samples", "pooled", "borderline"),
    [
        pytest.param((52, 48, 51), POOLED, False, id="as-fast-as-before-clear-no"),
        pytest.param((400, 420, 410), POOLED, False, id="8x-slower-all-three-clear-yes"),
        # one fast sample: factor and floor say yes, the rank test is short of p < 0.02 (p = 0.15)
        pytest.param((160, 45, 170), POOLED, True, id="one-fast-sample-rank-test-borderline"),
        # 1.5x exactly: the factor could fall either side with more samples
        pytest.param((74, 75, 76), POOLED, True, id="median-at-the-factor"),
        pytest.param((67, 68, 69), POOLED, True, id="median-just-under-the-factor"),
        pytest.param((62, 63, 64), POOLED, False, id="median-well-under-the-factor"),
        # 3x slower but only 18 ms more, against a 20 ms floor: borderline on the floor
        pytest.param((27, 28, 29), [9.0 + (i % 3) for i in range(60)], True, id="increase-at-the-floor"),
        pytest.param((14, 15, 16), [4.5 + (i % 3) for i in range(60)], False, id="increase-well-under-the-floor"),
        pytest.param((160, 45, 170), POOLED[:19], False, id="too-few-reference-samples"),
        pytest.param((), POOLED, False, id="no-answered-sample"),
    ],
)
def test_borderline_is_when_no_test_says_a_clear_no_and_not_all_a_clear_yes(
    samples: tuple[float, ...], pooled: list[float], borderline: bool
) -> None:
    """The rank test, the factor and the floor each read as yes, no or borderline decide it."""
    assert is_borderline(CHECK, samples, pooled) is borderline


@pytest.mark.parametrize(
    ("samples", "left", "extra"),
    [
        pytest.param((52, 48, 51), 4 * SECOND, 0, id="decided-takes-none"),
        pytest.param((160, 45, 170), 4 * SECOND, 6, id="borderline-takes-twice-samples-more"),
        # 6 more at 1.5 x 170 ms need 1.53 s; 1 s holds 3 of them
        pytest.param((160, 45, 170), SECOND, 3, id="only-what-fits-in-the-time-left"),
        pytest.param((160, 45, 170), timedelta(0), 0, id="no-time-left"),
    ],
)
def test_extra_samples_up_to_twice_the_samples_within_the_time_left(
    samples: tuple[float, ...], left: timedelta, extra: int
) -> None:
    """A borderline cycle takes up to 2 x `samples` more requests, as many as fit in its budget."""
    assert extra_samples(CHECK, 3, answered(*samples), POOLED, left) == extra


def test_twenty_samples_borderline_take_up_to_forty_more() -> None:
    """With `samples = 20`, a borderline cycle takes 40 more: 60 in all."""
    check = http_check(samples=20)
    first = [72.0 + i % 5 for i in range(20)]  # 1.48x the release before: at the factor
    assert is_borderline(check, first, POOLED)
    assert extra_samples(check, 20, answered(*first), POOLED, 60 * SECOND) == 40


@pytest.mark.parametrize(("sigma", "at_most"), [(0.5, 1 / 6), (0.2, 1 / 25)])
def test_an_app_as_fast_as_before_is_seldom_sampled_more(sigma: float, at_most: float) -> None:
    """A release drawn from the same (lognormal, heavy- or light-tailed) distribution as the one
    before is borderline in few of its cycles (seeded): healthy apps pay for few extra requests."""
    rng = random.Random(15)
    trials = 2000
    borderline = 0
    for _ in range(trials):
        pooled = [rng.lognormvariate(math.log(150), sigma) for _ in range(60)]
        cycle = [rng.lognormvariate(math.log(150), sigma) for _ in range(3)]
        borderline += is_borderline(CHECK, cycle, pooled)
    assert borderline / trials <= at_most


async def test_the_loop_samples_a_borderline_release_more_and_says_how_many(
    tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """A release 1.6x slower than the one before (a real loopback app) is borderline on its three
    samples against the 1.5 factor: healer takes six more, and the verdict and `healer history`
    name the nine samples it was judged on."""
    app = http_app("slow", delay=0.2)
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
        timeout = "10s"
        """,
    )
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=3))
    store = BufferedStore(cfg.db_path)
    try:
        async with probe_context(cfg) as ctx:
            dog = Watchdog(cfg, store, ctx, clock=clock)
            for _ in range(7):  # 21 samples of the release before: enough to judge against
                report = await dog.step()
                assert report.verdict.ok and report.verdict.results[0].values["samples"] == 3
                clock.advance(timedelta(minutes=15))
            commit(repo, "v2")
            app.delay = 0.32
            hits = app.hits
            report = await dog.step()
    finally:
        store.close()
    (api,) = report.verdict.results
    assert app.hits - hits == 9 and api.values["samples"] == 9 and len(api.samples_ms) == 9
    assert not api.ok and api.symptoms == ("http.latency",)
    assert api.error is not None and re.fullmatch(
        r"median \d+ ms vs \d+ ms in \w+ \(1\.\d×, p [<=] 0\.\d+, 9 vs \d+ samples\)", api.error
    ), api.error
    rows = [r for r in history_rows(cfg, timedelta(days=1)) if r["type"] == "check" and not r["ok"]]
    assert len(rows) == 1 and "9 vs" in rows[0]["detail"] and rows[0]["detail"].startswith("api: median "), rows


@pytest.mark.parametrize(
    ("first", "borderline"),
    [
        pytest.param(answered(30, 31, 29), False, id="none-failed"),
        pytest.param(answered(30, 31, 29, failed=1), True, id="1-of-3-failed"),
        pytest.param(answered(30, 31, 29, failed=2), True, id="2-of-3-failed"),
        # every request answered 500: a broken release, or random errors falling together
        pytest.param(answered(30, 31, 29, failed=3), True, id="all-answered-500"),
        # refused or timed out, every one: a crash or a wedge
        pytest.param(FirstSamples(3, 3, ()), False, id="all-refused-or-timed-out"),
        pytest.param(FirstSamples(3, 2, (30.0,)), True, id="2-of-3-timed-out"),
        pytest.param(FirstSamples(0, 0, ()), False, id="none-sent"),
    ],
)
def test_errors_are_borderline_when_some_requests_failed_or_all_could_be_noise(
    first: FirstSamples, borderline: bool
) -> None:
    """Partly failed requests are borderline, and so are requests that all got a failing HTTP
    answer; all refused or timed out decides at once."""
    assert errors_borderline(first) is borderline


@pytest.mark.parametrize(
    ("first", "left", "extra"),
    [
        pytest.param(answered(30, 31, 29, failed=2), 4 * SECOND, 6, id="partly-failed-takes-six"),
        # no reference at all: failed requests need none to be borderline
        pytest.param(answered(30, 31, 29, failed=1), 4 * SECOND, 6, id="one-failed-takes-six"),
        pytest.param(answered(30, 31, 29, failed=3), 4 * SECOND, 6, id="all-500-takes-six"),
        # 1.5 x 31 ms a request: 100 ms hold 2 more
        pytest.param(answered(30, 31, 29, failed=2), timedelta(milliseconds=100), 2, id="what-fits"),
        pytest.param(FirstSamples(3, 3, ()), 4 * SECOND, 0, id="all-refused-takes-none"),
    ],
)
def test_failed_requests_take_more_samples_within_the_time_left(
    first: FirstSamples, left: timedelta, extra: int
) -> None:
    """The errors' borderline takes up to 2 x `samples` more, as many as fit, with no reference needed."""
    assert extra_samples(CHECK, 3, first, (), left) == extra


def test_a_healthy_app_with_ten_percent_errors_seldom_fails_a_cycle_once_sampled_more() -> None:
    """At 10 % random errors, 2 or 3 of 3 requests fail in 2.8 % of cycles; judged on the share
    over the nine requests a borderline cycle takes, a cycle fails (most of them failed) in about
    0.1 % (under 0.3 % seeded); an app failing 70 % of its requests fails about 90 % of its cycles,
    more often than the 78 % that three samples alone would fail."""
    rng = random.Random(15)

    def failing_share(rate: float, trials: int = 5000) -> float:
        failed_cycles = 0
        for _ in range(trials):
            outcomes = [rng.random() < rate for _ in range(9)]
            first = answered(30, 30, 30, failed=sum(outcomes[:3]))
            n = 3 + extra_samples(CHECK, 3, first, (), 4 * SECOND)
            failed_cycles += sum(outcomes[:n]) * 2 > n
        return failed_cycles / trials

    assert failing_share(0.10) < 0.003
    assert failing_share(0.70) > 0.85
