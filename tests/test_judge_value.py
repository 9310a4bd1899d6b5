"""judge's rules for a check that measures one number (`value`): against the deploy's baseline and
against the release before's pooled values (pure: results built by hand, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import parse_config
from healer.judge import MIN_REFERENCE_VALUES, judge, reference_of
from healer.model import Baseline, CheckResult, Reference, Verdict

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def checks(**options: Any) -> Any:
    table = {"name": "errors", "type": "prometheus", "url": "http://127.0.0.1:9090", "query": "q",
             "label": "error ratio", "min_increase": 0.01, **options}  # fmt: skip
    return parse_config({"checks": [table]}, Path("healer.toml")).checks


def result(value: float, *, ok: bool = True, error: str | None = None, symptoms: tuple[str, ...] = ()) -> CheckResult:
    return CheckResult("errors", "prometheus", ok, values={"value": value}, error=error, symptoms=symptoms)


def baseline(value: float) -> Baseline:
    return Baseline(T0, {"errors": {"value": value}})


def reference(*values: float) -> Reference:
    return Reference("stable-1", {}, {}, {}, {"errors": values})


def judged(r: CheckResult, base: Baseline | None = None, ref: Reference | None = None, **options: Any) -> CheckResult:
    return judge([r], base, checks(**options), T0, ref).results[0]


def test_a_value_many_times_its_baseline_and_over_the_floor_fails() -> None:
    r = judged(result(0.12), baseline(0.003))
    assert not r.ok and r.symptoms == ("prometheus.value",)
    assert r.error == "error ratio 0.12 vs 0.003 at baseline (40×)"


@pytest.mark.parametrize(
    ("now", "base"),
    [
        pytest.param(0.009, 0.001, id="9x-but-under-the-floor"),
        pytest.param(0.25, 0.1, id="over-the-floor-but-under-3x"),
    ],
)
def test_factor_and_floor_must_both_say_worse(now: float, base: float) -> None:
    assert judged(result(now), baseline(base)).ok


def test_from_a_zero_baseline_the_floor_decides() -> None:
    r = judged(result(0.02), baseline(0.0))
    assert r.error == "error ratio 0.02 vs 0 at baseline (from 0)"


def test_a_value_over_the_release_befores_fails_with_the_explanation() -> None:
    r = judged(result(0.12), ref=reference(0.003, 0.002, 0.003, 0.004, 0.003))
    assert not r.ok and r.symptoms == ("prometheus.value",)
    assert r.error == "error ratio 0.12 vs 0.003 in stable-1 (40×, median of 5 cycles)"


def test_one_bad_cycle_of_the_release_before_does_not_raise_its_bar() -> None:
    """The median of the pooled values stands against one noisy cycle."""
    r = judged(result(0.05), ref=reference(0.002, 0.002, 0.2, 0.002, 0.002, 0.002))
    assert not r.ok and r.error is not None and "vs 0.002 in stable-1" in r.error


def test_too_few_values_of_the_release_before_is_inconclusive() -> None:
    r = judged(result(0.12), ref=reference(*[0.003] * (MIN_REFERENCE_VALUES - 1)))
    assert r.ok and r.error is None


@pytest.mark.parametrize(
    ("now", "before", "options"),
    [
        pytest.param(0.009, 0.001, {}, id="9x-but-under-the-floor"),
        pytest.param(0.14, 0.1, {}, id="over-the-floor-but-under-1.5x"),
        pytest.param(0.04, 0.02, {"min_increase_vs_previous": 0.05}, id="its-own-floor"),
    ],
)
def test_against_the_release_before_factor_and_floor_must_both_say_worse(
    now: float, before: float, options: dict[str, Any]
) -> None:
    assert judged(result(now), ref=reference(*[before] * 5), **options).ok


def test_a_value_already_failed_is_not_failed_twice() -> None:
    """Over max_value (the probe's own judgement) and over the baseline: one symptom, both reasons."""
    r = result(0.12, ok=False, error="error ratio 0.12 is over the max_value 0.05", symptoms=("prometheus.value",))
    out = judged(r, baseline(0.003), reference(*[0.003] * 5))
    assert out.symptoms == ("prometheus.value",)
    assert out.error == "error ratio 0.12 is over the max_value 0.05; error ratio 0.12 vs 0.003 at baseline (40×)"


def test_reference_of_pools_one_value_per_healthy_cycle() -> None:
    """Only the fully healthy cycles, the first `cycles` of them, give their values."""
    bad = Verdict(T0, (result(0.5, ok=False, symptoms=("prometheus.value",)),))
    good = [Verdict(T0 + timedelta(minutes=i + 1), (result(0.001 * (i + 1)),)) for i in range(4)]
    ref = reference_of([bad, *good], "stable-1", cycles=3)
    assert ref.values == {"errors": (0.001, 0.002, 0.003)}
    assert ref.samples_ms == {}
