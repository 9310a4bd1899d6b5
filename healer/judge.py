"""Judging a cycle against the deploy's baseline and the release before it (pure).

A check fails on its own absolute terms (wrong status, process gone, over a ceiling);
judge() adds the baseline-relative symptoms: latency worse than `max_latency_factor` times
the baseline *and* at least `min_latency_increase` slower (no alarm on 2 ms -> 7 ms), and
memory over `max_memory_factor` times the baseline *and* `min_memory_increase` more. Which
rules apply to a check is decided by the keys its model has, never by its type.

With a reference (the pooled samples of the release before this deploy, issue 15), each check
is also compared with that release, which its own baseline cannot see when the deploy is worse
from its first request. Each comparison is recorded with the result (`CheckResult.compared`) as
pass, fail or inconclusive; only a fail fails the check, so an inconclusive one never counts
toward a restart or a rollback.
- Latency (`max_latency_factor_vs_previous`, `<type>.latency`): three things must agree
  (Kayenta's judge, with floors): a one-sided Mann-Whitney U test of this cycle's samples against
  the reference's at p < REFERENCE_ALPHA, a median at least the factor times
  the reference's, and at least `min_latency_increase_vs_previous` slower. The evidence goes
  with the result (`vs_previous_*` values) for decide's emergency rule.
- Errors (`min_errors_vs_previous`, `<type>.errors`): the share of failed requests, by a
  one-sided Fisher's exact test at p < REFERENCE_ALPHA, with at least `min_errors_vs_previous`
  failed and a share `min_error_rate_increase_vs_previous` points over the reference's.
- Memory (`max_memory_factor_vs_previous`, `<type>.memory`) and a check's own number (`value`:
  a Prometheus query's error ratio or p99, `max_factor_vs_previous`, `<type>.value`): over the
  factor times the median of the release before's cycles *and* the floor more. One number per
  cycle gives no samples for a rank test: the median of the pooled cycles stands against a
  noisy one.
With fewer than MIN_REFERENCE_SAMPLES reference samples or requests (latency, errors), or
MIN_REFERENCE_VALUES reference cycles (memory, value), a comparison is inconclusive.

A check that measures one number of its own is judged against its baseline like a latency, with
keys in its own unit: over `max_factor` times the baseline's value *and* `min_increase` more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Protocol, TypeGuard

from healer.model import Baseline, CheckResult, Comparison, Conclusion, Metric, Reference, Verdict
from healer.stats import fisher_greater, mann_whitney_greater, median, remove_outliers

if TYPE_CHECKING:  # annotations only: checks/http.py reads sampling.py, which reads this module
    from healer.config import CheckConfig

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


class ErrorsComparedToPrevious(Protocol):
    """A check whose share of failed requests is compared with the release before's (`<type>.errors`)."""

    @property
    def min_errors_vs_previous(self) -> int: ...
    @property
    def min_error_rate_increase_vs_previous(self) -> float: ...


class MemoryComparedToPrevious(Protocol):
    """A check whose memory (`rss_mb`) is compared with the release before's (`<type>.memory`)."""

    @property
    def max_memory_factor_vs_previous(self) -> float: ...
    @property
    def min_memory_increase_vs_previous(self) -> int: ...


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


@dataclass(frozen=True, slots=True)
class LatencyEffect:
    """A cycle's latency against the release before's as the judge reads it (the median of
    each, the reference whole: medians are robust to its outliers), and the two bars the effect
    must clear: `factor` times as slow and `floor` ms more (`max_latency_factor_vs_previous`,
    `min_latency_increase_vs_previous`). healer/sampling.py reads the same numbers."""

    now: float  # ms, this cycle's median
    before: float  # ms, the release before's median
    factor: float
    floor: float  # ms

    @property
    def ratio(self) -> float:
        return self.now / self.before if self.before > 0 else math.inf

    @property
    def increase(self) -> float:
        return self.now - self.before

    @property
    def slower(self) -> bool:
        """Both bars cleared: as many times slower as the factor says, and the floor more."""
        return self.ratio >= self.factor and self.increase >= self.floor


def latency_effect(check: ComparedToPrevious, samples_ms: Sequence[float], pooled_ms: Sequence[float]) -> LatencyEffect:
    """This cycle's samples against the release before's pooled ones, with the check's bars."""
    floor = check.min_latency_increase_vs_previous / timedelta(milliseconds=1)
    return LatencyEffect(median(samples_ms), median(pooled_ms), check.max_latency_factor_vs_previous, floor)


@cache
def _keys(model: type[CheckConfig]) -> frozenset[str]:
    """The keys a check type's model has (cached: judged every cycle, for every check)."""
    return frozenset(model.model_fields)


_LATENCY_KEYS = frozenset({"max_latency_factor", "min_latency_increase"})
_MEMORY_KEYS = frozenset({"max_memory_factor", "min_memory_increase"})
_PREVIOUS_KEYS = frozenset({"max_latency_factor_vs_previous", "min_latency_increase_vs_previous"})
_ERRORS_PREVIOUS_KEYS = frozenset({"min_errors_vs_previous", "min_error_rate_increase_vs_previous"})
_MEMORY_PREVIOUS_KEYS = frozenset({"max_memory_factor_vs_previous", "min_memory_increase_vs_previous"})
_VALUE_KEYS = frozenset({"label", "max_factor", "min_increase"})
_VALUE_PREVIOUS_KEYS = frozenset({"label", "max_factor_vs_previous", "min_increase_vs_previous"})


def _is_latency_bounded(check: CheckConfig) -> TypeGuard[LatencyBounded]:
    return _keys(type(check)) >= _LATENCY_KEYS


def _is_memory_bounded(check: CheckConfig) -> TypeGuard[MemoryBounded]:
    return _keys(type(check)) >= _MEMORY_KEYS


def _is_compared_to_previous(check: CheckConfig) -> TypeGuard[ComparedToPrevious]:
    return _keys(type(check)) >= _PREVIOUS_KEYS


def _is_errors_compared_to_previous(check: CheckConfig) -> TypeGuard[ErrorsComparedToPrevious]:
    return _keys(type(check)) >= _ERRORS_PREVIOUS_KEYS


def _is_memory_compared_to_previous(check: CheckConfig) -> TypeGuard[MemoryComparedToPrevious]:
    return _keys(type(check)) >= _MEMORY_PREVIOUS_KEYS


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
    the deploy's own baseline or from the release before (`reference`), and each comparison
    with the release before recorded as pass, fail or inconclusive (`CheckResult.compared`)."""
    by_name: Mapping[str, CheckConfig] = {c.name: c for c in checks}
    judged = []
    for r in results:
        check = by_name.get(r.name)
        probed_ok = r.ok  # the probe's own verdict, before any baseline's
        if check is not None and baseline is not None:
            r = _against_baseline(r, check, baseline)
        if check is not None and reference is not None and _is_compared_to_previous(check):
            r = _against_reference(r, check, reference)
        if check is not None and reference is not None and _is_errors_compared_to_previous(check) and probed_ok:
            r = _errors_against_reference(r, check, reference)
        if check is not None and reference is not None and _is_memory_compared_to_previous(check):
            r = _memory_against_reference(r, check, reference)
        if check is not None and reference is not None and _is_value_compared_to_previous(check):
            r = _value_against_reference(r, check, reference)
        judged.append(r)
    return Verdict(at=at, results=tuple(judged))


def _compared(r: CheckResult, c: Comparison, symptom: str, values: Mapping[str, float] | None = None) -> CheckResult:
    """The result with the comparison recorded; a failing one fails it with `symptom`, its
    evidence added to the error (and `values`, the evidence decide reads)."""
    if c.conclusion is not Conclusion.FAIL:
        return replace(r, compared=(*r.compared, c))
    error = "; ".join(([r.error] if r.error else []) + [c.why])
    return replace(
        r, ok=False, error=error, symptoms=(*r.symptoms, symptom), values={**r.values, **(values or {})},
        compared=(*r.compared, c),
    )  # fmt: skip


# What each comparison needs of the release before: how much of it there is, at least how much
# it must be, and what it is called ("4 reference samples, need 20").
_NEEDS: Mapping[Metric, tuple[Callable[[Reference, str], int], int, str]] = {
    Metric.LATENCY: (lambda ref, name: len(ref.samples_ms.get(name, ())), MIN_REFERENCE_SAMPLES, "samples"),
    Metric.ERRORS: (lambda ref, name: ref.requests.get(name, 0), MIN_REFERENCE_SAMPLES, "requests"),
    Metric.MEMORY: (lambda ref, name: len(ref.rss_mb.get(name, ())), MIN_REFERENCE_VALUES, "values"),
    Metric.VALUE: (lambda ref, name: len(ref.values.get(name, ())), MIN_REFERENCE_VALUES, "values"),
}


def _too_few(metric: Metric, reference: Reference, check: str) -> Comparison | None:
    """INCONCLUSIVE when the release before gave too little of what `metric` compares."""
    count, need, what = _NEEDS[metric]
    have = count(reference, check)
    if have >= need:
        return None
    return Comparison(metric, Conclusion.INCONCLUSIVE, reference.label, f"{have} reference {what}, need {need}")


def compared_metrics(check: CheckConfig) -> tuple[Metric, ...]:
    """What a check is compared with the release before on (its model's keys say)."""
    rules = (
        (Metric.LATENCY, _is_compared_to_previous(check)),
        (Metric.ERRORS, _is_errors_compared_to_previous(check)),
        (Metric.MEMORY, _is_memory_compared_to_previous(check)),
        (Metric.VALUE, _is_value_compared_to_previous(check)),
    )
    return tuple(m for m, applies in rules if applies)


def shortfalls(checks: Sequence[CheckConfig], reference: Reference) -> tuple[str, ...]:
    """The comparisons the release before has too little data for: each is inconclusive every
    cycle until a later release has more (for `healer baseline`)."""
    out = []
    for check in checks:
        for metric in compared_metrics(check):
            short = _too_few(metric, reference, check.name)
            if short is not None:
                out.append(short.describe(check.name))
    return tuple(out)


def _against_reference(r: CheckResult, check: ComparedToPrevious, reference: Reference) -> CheckResult:
    """The result, failed with `<type>.latency` when rank test, factor and floor all say slower."""
    pooled = reference.samples_ms.get(r.name, ())
    slow = f"{r.type}.latency"
    if not r.samples_ms or slow in r.symptoms:
        return r  # no request answered (the check failed on them), or already failed for latency
    short = _too_few(Metric.LATENCY, reference, r.name)
    if short is not None:
        return _compared(r, short, slow)
    effect = latency_effect(check, r.samples_ms, pooled)
    now, before = effect.now, effect.before
    seen = f"median {format_ms(now)} ms vs {format_ms(before)} ms"
    counts = f"{len(r.samples_ms)} vs {len(pooled)} samples"
    if not effect.slower:
        return _compared(r, Comparison(Metric.LATENCY, Conclusion.PASS, reference.label, f"{seen}, {counts}"), slow)
    # the rank test and the median need no outlier removal (ranks and medians are robust to
    # them); removing them from the reference alone made a release drawn from the same heavy-
    # tailed distribution fail up to 13 % of its cycles instead of REFERENCE_ALPHA
    test = mann_whitney_greater(r.samples_ms, pooled)
    if test.p >= REFERENCE_ALPHA:
        why = f"{seen}, {_p(test.p)}, {counts}"
        return _compared(r, Comparison(Metric.LATENCY, Conclusion.PASS, reference.label, why), slow)
    why = f"{seen} in {reference.label} ({_times(now, before)}, {_p(test.p)}, {counts})"
    # the evidence, for decide's emergency rule (strong evidence escalates faster): how many
    # times slower, and whether every sample of the cycle was slower than the reference's slowest
    # ordinary one (its outliers beyond 1.5 IQR removed, as Kayenta's IQRDetector does)
    evidence = {
        "vs_previous_ratio": round(effect.ratio, 3),
        "vs_previous_all_slower": float(min(r.samples_ms) > max(remove_outliers(pooled))),
    }
    return _compared(r, Comparison(Metric.LATENCY, Conclusion.FAIL, reference.label, why), slow, evidence)


def _errors_against_reference(r: CheckResult, check: ErrorsComparedToPrevious, reference: Reference) -> CheckResult:
    """The result, failed with `<type>.errors` when its share of failed requests is over the
    release before's by a one-sided Fisher's exact test (p < REFERENCE_ALPHA) with at least
    `min_errors_vs_previous` of them failed and a share `min_error_rate_increase_vs_previous`
    points higher: a handful of errors is noise, and a rank test on sparse errors calls them a
    pass (kayenta #426). Judged only where the probe passed the check: one that failed on most
    of its requests has said so already."""
    total = _requests_of(r)
    if not total:
        return r
    symptom = f"{r.type}.errors"
    ref_total, ref_errors = reference.requests.get(r.name, 0), reference.errors.get(r.name, 0)
    short = _too_few(Metric.ERRORS, reference, r.name)
    if short is not None:
        return _compared(r, short, symptom)
    errors = r.sample_errors
    seen = f"{errors} of {total} requests failed vs {ref_errors} of {ref_total}"
    # the margin in whole numbers (cross-multiplied): 3 of 10 vs 1 of 10 is 20 points, not 19.999...
    over = (
        100 * (errors * ref_total - ref_errors * total) >= check.min_error_rate_increase_vs_previous * total * ref_total
    )
    if errors < check.min_errors_vs_previous or not over:
        return _compared(r, Comparison(Metric.ERRORS, Conclusion.PASS, reference.label, seen), symptom)
    p = fisher_greater(errors, total, ref_errors, ref_total)
    if p >= REFERENCE_ALPHA:
        return _compared(r, Comparison(Metric.ERRORS, Conclusion.PASS, reference.label, f"{seen}, {_p(p)}"), symptom)
    why = f"{seen} in {reference.label} ({_p(p)})"
    return _compared(r, Comparison(Metric.ERRORS, Conclusion.FAIL, reference.label, why), symptom)


def _memory_against_reference(r: CheckResult, check: MemoryComparedToPrevious, reference: Reference) -> CheckResult:
    """The result, failed with `<type>.memory` when its RSS is over both the factor and the
    floor above the median of the release before's cycles' RSS."""
    return _level_against_reference(
        r, Metric.MEMORY, r.values.get("rss_mb"), reference.rss_mb.get(r.name, ()), reference,
        check.max_memory_factor_vs_previous, check.min_memory_increase_vs_previous / 2**20,
        "memory", lambda mb: f"{mb:.0f} MB",
    )  # fmt: skip


def _value_against_reference(r: CheckResult, check: ValueComparedToPrevious, reference: Reference) -> CheckResult:
    """The result, failed with `<type>.value` when its value is over both the factor and the
    floor above the median of the release before's values."""
    return _level_against_reference(
        r, Metric.VALUE, r.values.get("value"), reference.values.get(r.name, ()), reference,
        check.max_factor_vs_previous, check.min_increase_vs_previous, check.label, lambda v: f"{v:.4g}",
    )  # fmt: skip


def _level_against_reference(
    r: CheckResult,
    metric: Metric,
    now: float | None,
    pooled: Sequence[float],
    reference: Reference,
    factor: float,
    floor: float,
    name: str,
    show: Callable[[float], str],
) -> CheckResult:
    """One number a cycle (memory, a query's value) against the median of the release
    before's, one per healthy cycle: no samples for a rank test, so the median of the pooled
    cycles stands against a noisy one, and with fewer than MIN_REFERENCE_VALUES of them the
    comparison is inconclusive. Fails `<type>.<metric>` over both `factor` × and `floor` more;
    `name` and `show` say what the number is ("memory", "420 MB")."""
    symptom = f"{r.type}.{metric}"
    if now is None or symptom in r.symptoms:
        return r  # nothing measured (the process is gone), or already failed on it (ceiling, own baseline)
    short = _too_few(metric, reference, r.name)
    if short is not None:
        return _compared(r, short, symptom)
    before = median(pooled)
    seen = f"{name} {show(now)} vs {show(before)}"
    cycles = f"median of {len(pooled)} cycles"
    if now < before * factor or now - before < floor:
        return _compared(r, Comparison(metric, Conclusion.PASS, reference.label, f"{seen}, {cycles}"), symptom)
    why = f"{seen} in {reference.label} ({_times(now, before)}, {cycles})"
    return _compared(r, Comparison(metric, Conclusion.FAIL, reference.label, why), symptom)


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_ms(v: float) -> str:
    """Milliseconds as the verdicts say them: one decimal under 10 ms, whole ones above."""
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def latency_ms(r: CheckResult) -> float | None:
    """The latency a result measured, in ms: its `latency_ms` value, else its `latency`."""
    if "latency_ms" in r.values:
        return r.values["latency_ms"]
    return None if r.latency is None else r.latency / timedelta(milliseconds=1)


def _times(now: float, before: float) -> str:
    if before <= 0:
        return "from 0"
    ratio = now / before
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def reference_of(verdicts: Sequence[Verdict], label: str, cycles: int = REFERENCE_CYCLES) -> Reference:
    """The reference a release's cycles give: the raw samples of its first `cycles` fully
    healthy ones, pooled per check (requests sent and failed counted alongside), and each
    cycle's `value` of a check that measures one and RSS of one that measures memory."""
    samples: dict[str, list[float]] = {}
    requests: dict[str, int] = {}
    errors: dict[str, int] = {}
    values: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    for v in [v for v in verdicts if v.ok][:cycles]:
        for r in v.results:
            if "value" in r.values:
                values.setdefault(r.name, []).append(r.values["value"])
            if "rss_mb" in r.values:
                rss.setdefault(r.name, []).append(r.values["rss_mb"])
            if not r.samples_ms and not r.sample_errors:
                continue
            samples.setdefault(r.name, []).extend(r.samples_ms)
            requests[r.name] = requests.get(r.name, 0) + _requests_of(r)
            errors[r.name] = errors.get(r.name, 0) + r.sample_errors
    pooled = {k: tuple(v) for k, v in values.items()}
    return Reference(
        label,
        {k: tuple(v) for k, v in samples.items()},
        requests,
        errors,
        pooled,
        {k: tuple(v) for k, v in rss.items()},
    )


def _requests_of(r: CheckResult) -> int:
    """How many requests a result's samples come from: answered or not (`samples`), else those
    it kept a latency or a failure of."""
    return int(r.values.get("samples", len(r.samples_ms) + r.sample_errors))


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
        ms = latency_ms(r)
        metrics[r.name] = dict(r.values) if ms is None else {**r.values, "latency_ms": ms}
    return Baseline(taken_at=verdict.at, metrics=metrics)
