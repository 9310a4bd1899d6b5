"""Judging cycles against the first healthy cycle: drift is a symptom, noise is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from healer.config import parse_config
from healer.judge import baseline_of, judge
from healer.model import CheckResult

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = parse_config(
    {
        "checks": [
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/"},
            {"name": "web", "type": "process", "match": "web"},
        ]
    },
    Path("healer.toml"),
)


def http(ms: float, ok: bool = True) -> CheckResult:
    return CheckResult("api", "http", ok, timedelta(milliseconds=ms), {"latency_ms": ms, "status": 200})


def proc(mb: float) -> CheckResult:
    return CheckResult("web", "process", True, None, {"count": 1, "rss_mb": mb})


BASE = baseline_of(judge([http(40), proc(100)], None, CONFIG.checks, NOW))


@pytest.mark.parametrize(
    ("latency", "ok"),
    [
        pytest.param(40, True, id="same"),
        pytest.param(119, True, id="under-factor"),
        pytest.param(125, True, id="3x-but-under-100ms-more"),
        pytest.param(150, False, id="over-both"),
        pytest.param(4000, False, id="much-slower"),
    ],
)
def test_latency_needs_both_the_factor_and_the_minimum_increase(latency: float, ok: bool) -> None:
    """Slower than 3x the baseline *and* 100 ms more is a symptom; either alone is noise."""
    v = judge([http(latency), proc(100)], BASE, CONFIG.checks, NOW)
    assert v.ok is ok
    assert ("http.latency" in v.symptoms) is (not ok)


def test_a_big_increase_under_the_factor_is_noise() -> None:
    """200 ms -> 450 ms is 250 ms more but under 3x: not a symptom."""
    base = baseline_of(judge([http(200), proc(100)], None, CONFIG.checks, NOW))
    assert judge([http(450), proc(100)], base, CONFIG.checks, NOW).ok
    assert not judge([http(650), proc(100)], base, CONFIG.checks, NOW).ok


def test_tiny_latencies_never_alarm() -> None:
    """2 ms -> 7 ms is more than 3x but nobody should be woken for it."""
    base = baseline_of(judge([http(2), proc(100)], None, CONFIG.checks, NOW))
    assert judge([http(7), proc(100)], base, CONFIG.checks, NOW).ok


def test_memory_over_the_baseline_is_a_process_symptom() -> None:
    """RSS over 2x the baseline and 50 MB more fails the process check with process.memory."""
    v = judge([http(40), proc(400)], BASE, CONFIG.checks, NOW)
    assert not v.ok and v.symptoms == ("process.memory",)
    assert "memory 400MB vs baseline 100MB" in (v.failing[0].error or "")
    assert judge([http(40), proc(180)], BASE, CONFIG.checks, NOW).ok


def test_without_a_baseline_only_absolute_failures_count() -> None:
    """Before the first healthy cycle, a slow answer is judged by the check alone."""
    assert judge([http(5000), proc(900)], None, CONFIG.checks, NOW).ok


def test_only_a_fully_healthy_cycle_makes_a_baseline() -> None:
    """A cycle with any failing check is never stored as the baseline."""
    assert baseline_of(judge([http(40, ok=False), proc(100)], None, CONFIG.checks, NOW)) is None
    assert BASE is not None and BASE.value("api", "latency_ms") == 40 and BASE.value("web", "rss_mb") == 100
