"""Judging a cycle against the deploy's baseline (pure).

A check fails on its own absolute terms (wrong status, process gone, over a ceiling);
judge() adds the baseline-relative symptoms: latency worse than `max_latency_factor` times
the baseline *and* at least `min_latency_increase` slower (no alarm on 2 ms -> 7 ms), and
memory over `max_memory_factor` times the baseline *and* `min_memory_increase` more. Which
rules apply to a check is decided by the keys its model has, never by its type.

With a reference (the pooled samples of the release before this deploy, issue 15), the
latency of a check with `max_latency_factor_vs_previous` also fails when it is worse than that
release's, which its own baseline cannot see when the deploy is slow from its first request.
Three things must agree (Kayenta's judge, with floors): a one-sided Mann-Whitney U test of this
cycle's samples against the reference's (outliers removed) at p < REFERENCE_ALPHA, a median at least
`max_latency_factor_vs_previous` times the reference's, and at least
`min_latency_increase_vs_previous` slower. With fewer than MIN_REFERENCE_SAMPLES reference
samples, or no sample answered this cycle, the rule is inconclusive: it fails nothing. The
evidence goes with the result (`vs_previous_*` values) for decide's emergency rule.

A check that measures one number of its own (`value`: a Prometheus query's error ratio or p99)
is judged by the same two rules, with keys in its own unit: over `max_factor` times the
baseline's value *and* `min_increase` more, and over `max_factor_vs_previous` times the median
of the release before's values (one per healthy cycle) *and* `min_increase_vs_previous` more
(`<type>.value`). One number per cycle gives no samples for a rank test: the median of the
pooled cycles stands against a noisy one, and with fewer than MIN_REFERENCE_VALUES of them the
rule is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import cache
from typing import Protocol, TypeGuard

from healer.config import CheckConfig
from healer.model import Baseline, CheckResult, Reference, Verdict
from healer.stats import mann_whitney_greater, median, remove_outliers

# Kayenta's default confidence (0.98): at one test per cycle, a release no slower than the one
# before fails this test in about 2 cycles of 100; the factor and the floor stop the rest.
REFERENCE_ALPHA = 0.02
# Fewer pooled samples than this (a release before watched for under 7 cycles) decide nothing.
MIN_REFERENCE_SAMPLES = 20
# The healthy cycles of the release before pooled into its reference (the loop reads them).
REFERENCE_CYCLES = 20
# Fewer values of the release before than this (one per healthy cycle) decide nothing.
MIN_REFERENCE_VALUES = 5


# What a check's model declares decides how it is judged, not its type: a check type added
# with these keys is judged like the others that have them (healer/checks/registry.py).


class LatencyBounded(Protocol):
    """A check whose latency drifting from the baseline fails it (`<type>.latency`)."""

    @property
    def max_latency_factor(self) -> float: ...
    @property
    def min_latency_increase(self) -> timedelta: ...


class MemoryBounded(Protocol):
    """A check whose memory (`rss_mb`) drifting from the baseline fails it (`<type>.memory`)."""

    @property
    def max_memory_factor(self) -> float: ...
    @property
    def min_memory_increase(self) -> int: ...


class ComparedToPrevious(Protocol):
    """A check whose latency samples are compared with the release before's (`<type>.latency`)."""

    @property
    def max_latency_factor_vs_previous(self) -> float: ...
    @property
    def min_latency_increase_vs_previous(self) -> timedelta: ...


class ValueBounded(Protocol):
    """A check whose `value` drifting from the baseline fails it (`<type>.value`); `label`
    says what the value is in the explanation ("error ratio 0.12 vs 0.003 at baseline")."""

    @property
    def label(self) -> str: ...
    @property
    def max_factor(self) -> float: ...
    @property
    def min_increase(self) -> float: ...


class ValueComparedToPrevious(Protocol):
    """A check whose `value` is compared with the release before's values (`<type>.value`)."""

    @property
    def label(self) -> str: ...
    @property
    def max_factor_vs_previous(self) -> float: ...
    @property
    def min_increase_vs_previous(self) -> float: ...


@cache
def _keys(model: type[CheckConfig]) -> frozenset[str]:
    """The keys a check type's model has (cached: judged every cycle, for every check)."""
    return frozenset(model.model_fields)


_LATENCY_KEYS = frozenset({"max_latency_factor", "min_latency_increase"})
_MEMORY_KEYS = frozenset({"max_memory_factor", "min_memory_increase"})
_PREVIOUS_KEYS = frozenset({"max_latency_factor_vs_previous", "min_latency_increase_vs_previous"})
_VALUE_KEYS = frozenset({"label", "max_factor", "min_increase"})
_VALUE_PREVIOUS_KEYS = frozenset({"label", "max_factor_vs_previous", "min_increase_vs_previous"})


def _is_latency_bounded(check: CheckConfig) -> TypeGuard[LatencyBounded]:
    return _keys(type(check)) >= _LATENCY_KEYS


def _is_memory_bounded(check: CheckConfig) -> TypeGuard[MemoryBounded]:
    return _keys(type(check)) >= _MEMORY_KEYS


def _is_compared_to_previous(check: CheckConfig) -> TypeGuard[ComparedToPrevious]:
    return _keys(type(check)) >= _PREVIOUS_KEYS


def _is_value_bounded(check: CheckConfig) -> TypeGuard[ValueBounded]:
    return _keys(type(check)) >= _VALUE_KEYS


def _is_value_compared_to_previous(check: CheckConfig) -> TypeGuard[ValueComparedToPrevious]:
    return _keys(type(check)) >= _VALUE_PREVIOUS_KEYS


def judge(
    results: Sequence[CheckResult],
    baseline: Baseline | None,
    checks: Sequence[CheckConfig],
    at: datetime,
    reference: Reference | None = None,
) -> Verdict:
    """The verdict of a cycle: each result, with baseline symptoms added where it drifted from
    the deploy's own baseline or, for a check with `max_latency_factor_vs_previous`, from the
    release before (`reference`)."""
    by_name: Mapping[str, CheckConfig] = {c.name: c for c in checks}
    judged = []
    for r in results:
        check = by_name.get(r.name)
        if check is not None and baseline is not None:
            r = _against_baseline(r, check, baseline)
        if check is not None and reference is not None and _is_compared_to_previous(check):
            r = _against_reference(r, check, reference)
        if check is not None and reference is not None and _is_value_compared_to_previous(check):
            r = _value_against_reference(r, check, reference)
        judged.append(r)
    return Verdict(at=at, results=tuple(judged))


def _against_reference(r: CheckResult, check: ComparedToPrevious, reference: Reference) -> CheckResult:
    """The result, failed with `<type>.latency` when rank test, factor and floor all say slower."""
    pooled = reference.samples_ms.get(r.name, ())
    slow = f"{r.type}.latency"
    if len(pooled) < MIN_REFERENCE_SAMPLES or not r.samples_ms or slow in r.symptoms:
        return r  # inconclusive, or already failed for latency (own baseline, ceiling)
    ref = remove_outliers(pooled)
    now, before = median(r.samples_ms), median(ref)
    floor = check.min_latency_increase_vs_previous / timedelta(milliseconds=1)
    if now < before * check.max_latency_factor_vs_previous or now - before < floor:
        return r
    test = mann_whitney_greater(r.samples_ms, ref)
    if test.p >= REFERENCE_ALPHA:
        return r
    p = "p < 0.001" if test.p < 0.001 else f"p = {test.p:.3f}"
    problem = (
        f"median {_ms(now)} ms vs {_ms(before)} ms in {reference.label} "
        f"({_times(now, before)}, {p}, {len(r.samples_ms)} vs {len(ref)} samples)"
    )
    error = "; ".join(([r.error] if r.error else []) + [problem])
    # the evidence, for decide's emergency rule (strong evidence escalates faster): how many
    # times slower, and whether every sample of the cycle was slower than the reference's slowest
    values = {
        **r.values,
        "vs_previous_ratio": round(now / before, 3) if before > 0 else math.inf,
        "vs_previous_all_slower": float(min(r.samples_ms) > max(ref)),
    }
    return replace(r, ok=False, error=error, symptoms=(*r.symptoms, slow), values=values)


def _value_against_reference(r: CheckResult, check: ValueComparedToPrevious, reference: Reference) -> CheckResult:
    """The result, failed with `<type>.value` when its value is over both the factor and the
    floor above the median of the release before's values."""
    pooled = reference.values.get(r.name, ())
    now = r.values.get("value")
    symptom = f"{r.type}.value"
    if now is None or len(pooled) < MIN_REFERENCE_VALUES or symptom in r.symptoms:
        return r  # inconclusive, or already failed on its value (ceiling, own baseline)
    before = median(pooled)
    if now < before * check.max_factor_vs_previous or now - before < check.min_increase_vs_previous:
        return r
    problem = (
        f"{check.label} {now:.4g} vs {before:.4g} in {reference.label} "
        f"({_times(now, before)}, median of {len(pooled)} cycles)"
    )
    error = "; ".join(([r.error] if r.error else []) + [problem])
    return replace(r, ok=False, error=error, symptoms=(*r.symptoms, symptom))


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def _times(now: float, before: float) -> str:
    if before <= 0:
        return "from 0"
    ratio = now / before
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def reference_of(verdicts: Sequence[Verdict], label: str, cycles: int = REFERENCE_CYCLES) -> Reference:
    """The reference a release's cycles give: the raw samples of its first `cycles` fully
    healthy ones, pooled per check (requests sent and failed counted alongside), and each
    cycle's `value` of a check that measures one."""
    samples: dict[str, list[float]] = {}
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    values: dict[str, list[float]] = {}
    for v in [v for v in verdicts if v.ok][:cycles]:
        for r in v.results:
            if "value" in r.values:
                values.setdefault(r.name, []).append(r.values["value"])
            if not r.samples_ms and not r.sample_errors:
                continue
            samples.setdefault(r.name, []).extend(r.samples_ms)
            requests[r.name] = requests.get(r.name, 0) + int(r.values.get("samples", len(r.samples_ms)))
            errors[r.name] = errors.get(r.name, 0) + r.sample_errors
    pooled = {k: tuple(v) for k, v in values.items()}
    return Reference(label, {k: tuple(v) for k, v in samples.items()}, requests, errors, pooled)


def _against_baseline(r: CheckResult, check: CheckConfig, baseline: Baseline) -> CheckResult:
    problems: list[str] = []
    symptoms = list(r.symptoms)
    if _is_latency_bounded(check):
        slow = _drifted(
            r.values.get("latency_ms"),
            baseline.value(r.name, "latency_ms"),
            check.max_latency_factor,
            check.min_latency_increase.total_seconds() * 1000,
        )
        if slow:
            problems.append(f"latency {slow[0]:.0f}ms vs baseline {slow[1]:.0f}ms")
            symptoms.append(f"{r.type}.latency")
    if _is_memory_bounded(check):
        big = _drifted(
            r.values.get("rss_mb"),
            baseline.value(r.name, "rss_mb"),
            check.max_memory_factor,
            check.min_memory_increase / 2**20,
        )
        if big:
            problems.append(f"memory {big[0]:.0f}MB vs baseline {big[1]:.0f}MB")
            symptoms.append(f"{r.type}.memory")
    if _is_value_bounded(check):
        drift = _drifted(r.values.get("value"), baseline.value(r.name, "value"), check.max_factor, check.min_increase)
        if drift:
            problems.append(f"{check.label} {drift[0]:.4g} vs {drift[1]:.4g} at baseline ({_times(*drift)})")
            symptoms.append(f"{r.type}.value")
    if not problems:
        return r
    error = "; ".join(([r.error] if r.error else []) + problems)
    return replace(r, ok=False, error=error, symptoms=tuple(dict.fromkeys(symptoms)))


def _drifted(
    current: float | None, base: float | None, factor: float, min_increase: float
) -> tuple[float, float] | None:
    """(current, base) when current is over factor x base and at least min_increase more."""
    if current is None or base is None:
        return None
    if current > base * factor and current - base >= min_increase:
        return current, base
    return None


def baseline_of(verdict: Verdict) -> Baseline | None:
    """The baseline a fully healthy cycle gives: every check's measured values."""
    if not verdict.ok or not verdict.results:
        return None
    metrics: dict[str, dict[str, float]] = {}
    for r in verdict.results:
        values = dict(r.values)
        if r.latency is not None:
            values.setdefault("latency_ms", r.latency / timedelta(milliseconds=1))
        metrics[r.name] = values
    return Baseline(taken_at=verdict.at, metrics=metrics)
