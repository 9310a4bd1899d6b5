"""A slow drift of latency over the launch window: told once per deploy, never acted on (pure).

Each cycle is judged on its own (healer/judge.py): a latency creeping up a few milliseconds a
cycle passes every one of them, as each stays under `max_latency_factor` x the baseline or its
floor. Here the deploy's cycles are read together: an exponentially weighted moving average
(EWMA) of each check's latency, starting at the deploy's baseline and taking in every passing
result since, drifts when it is over `[escalation.drift] factor` x the baseline **and**
`min_increase` more, after at least `min_cycles` cycles. That is worth a person's look (a leak,
a growing table, a cache filling), not a restart or a rollback: it is an alert, sent at the
cycle where the EWMA first drifts, so once per deploy (and again only after `healer baseline
--reset`), whatever the loop's restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from healer.config import DriftConfig
from healer.judge import format_ms, latency_ms
from healer.model import Alert, Baseline, Event, Severity, Verdict

# Each cycle's weight in the EWMA: a drift shows within about 1 / WEIGHT cycles, while one slow
# cycle moves the average by a fifth of its excess only.
WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class Drift:
    """A check whose latency drifted: its EWMA, its baseline, over how many cycles."""

    check: str
    ewma_ms: float
    baseline_ms: float
    cycles: int

    def explain(self) -> str:
        """ "api: latency drifting up: EWMA 180 ms vs 60 ms baseline over 14 cycles" """
        return (
            f"{self.check}: latency drifting up: EWMA {format_ms(self.ewma_ms)} ms vs {format_ms(self.baseline_ms)} ms "
            f"baseline over {self.cycles} cycles"
        )


def drifted(cycles: Sequence[Verdict], baseline: Baseline, config: DriftConfig) -> tuple[Drift, ...]:
    """The checks whose latency EWMA drifts for the first time at the last of `cycles` (the
    deploy's loop cycles, oldest first).

    1. Only cycles from the baseline on count, and per check only results that passed with a
       latency: a failing cycle is the ladder's, not a drift.
    2. The EWMA starts at the baseline's latency and takes in each such result with WEIGHT.
    3. It drifts once `min_cycles` results are in, it is over `factor` x the baseline and at
       least `min_increase` more. Only a check whose first drift is at the last cycle is
       returned: the cycle to alert at. `factor` 0 turns the rule off.
    """
    counted = [c for c in cycles if c.at >= baseline.taken_at]
    if config.factor == 0 or not counted:
        return ()
    found = []
    for name, metrics in baseline.metrics.items():
        base = metrics.get("latency_ms")
        first = None if base is None else _first_drift(name, base, counted, config)
        if base is not None and first is not None and first[0] == len(counted) - 1:
            found.append(Drift(name, first[1], base, first[2]))
    return tuple(found)


def _first_drift(
    name: str, base: float, cycles: Sequence[Verdict], config: DriftConfig
) -> tuple[int, float, int] | None:
    """(index of the cycle, EWMA, results taken in) where check `name` first drifted, or None."""
    floor = config.min_increase / timedelta(milliseconds=1)
    ewma, n = base, 0
    for i, v in enumerate(cycles):
        x = next((latency_ms(r) for r in v.results if r.name == name and r.ok), None)
        if x is None:
            continue
        ewma, n = WEIGHT * x + (1 - WEIGHT) * ewma, n + 1
        if n >= config.min_cycles and ewma >= base * config.factor and ewma - base >= floor:
            return i, ewma, n
    return None


def drift_alerts(cycles: Sequence[Verdict], baseline: Baseline | None, config: DriftConfig) -> tuple[Alert, ...]:
    """A warning for each check whose latency first drifted at this cycle (`drifted`): it
    explains itself and says that healer does nothing about it."""
    if baseline is None:
        return ()
    return tuple(
        Alert(
            Event.LATENCY_DRIFTING,
            Severity.WARNING,
            f"{d.check}: latency drifting up",
            f"{d.explain()}; every cycle passed, so healer restarts and rolls back nothing: worth a look "
            "(a leak, a growing table, a filling cache)",
        )
        for d in drifted(cycles, baseline, config)
    )
