# A frozen copy of healer/judge.py at commit d27d8a3 (judge.py unchanged since 6fea62a): healer's decision
# rules before the statistical judge of issue 15, replayed by bench/judgement.py as the policy
# "healer-previous". Only imports differ. Do not edit: it is the reference the live code is measured against.
"""Judging a cycle against the deploy's baseline (pure).

A check fails on its own absolute terms (wrong status, process gone, over a ceiling);
judge() adds the baseline-relative symptoms: latency worse than `max_latency_factor` times
the baseline *and* at least `min_latency_increase` slower (no alarm on 2 ms -> 7 ms), and
memory over `max_memory_factor` times the baseline *and* `min_memory_increase` more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from healer.checks.http import HttpCheck
from healer.checks.postgres import PostgresCheck
from healer.checks.process import ProcessCheck
from healer.checks.redis import RedisCheck
from healer.config import CheckConfig
from healer.model import Baseline, CheckResult, Verdict


def judge(
    results: Sequence[CheckResult],
    baseline: Baseline | None,
    checks: Sequence[CheckConfig],
    at: datetime,
) -> Verdict:
    """The verdict of a cycle: each result, with baseline symptoms added where it drifted."""
    by_name: Mapping[str, CheckConfig] = {c.name: c for c in checks}
    judged = []
    for r in results:
        check = by_name.get(r.name)
        if check is not None and baseline is not None:
            r = _against_baseline(r, check, baseline)
        judged.append(r)
    return Verdict(at=at, results=tuple(judged))


def _against_baseline(r: CheckResult, check: CheckConfig, baseline: Baseline) -> CheckResult:
    problems: list[str] = []
    symptoms = list(r.symptoms)
    if isinstance(check, HttpCheck | RedisCheck | PostgresCheck):
        slow = _drifted(
            r.values.get("latency_ms"),
            baseline.value(r.name, "latency_ms"),
            check.max_latency_factor,
            check.min_latency_increase.total_seconds() * 1000,
        )
        if slow:
            problems.append(f"latency {slow[0]:.0f}ms vs baseline {slow[1]:.0f}ms")
            symptoms.append(f"{r.type}.latency")
    if isinstance(check, ProcessCheck):
        big = _drifted(
            r.values.get("rss_mb"),
            baseline.value(r.name, "rss_mb"),
            check.max_memory_factor,
            check.min_memory_increase / 2**20,
        )
        if big:
            problems.append(f"memory {big[0]:.0f}MB vs baseline {big[1]:.0f}MB")
            symptoms.append("process.memory")
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
