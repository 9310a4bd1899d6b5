"""When the next cycle is due (pure): the phase table, the incident cadence, the repair grace.

Offsets are from the deploy (when healer first saw the commit), not from healer's start,
so a restarted healer keeps its place in the launch window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from healer.config import ScheduleConfig, format_duration


@dataclass(frozen=True, slots=True)
class PhaseInfo:
    """Where a moment falls in the launch window."""

    index: int  # 0-based; == len(phases) once the window is over
    count: int
    every: timedelta
    start: timedelta
    until: timedelta | None  # None after the window

    @property
    def in_window(self) -> bool:
        return self.until is not None

    @property
    def label(self) -> str:
        if self.until is None:
            return f"after the launch window (every {format_duration(self.every)})"
        return (
            f"phase {self.index + 1}/{self.count} ({format_duration(self.start) if self.start else '0'}"
            f"–{format_duration(self.until)}, every {format_duration(self.every)})"
        )


def phase_at(deploy_at: datetime, now: datetime, schedule: ScheduleConfig) -> PhaseInfo:
    """The phase that `now` falls in; after the window, the last cadence goes on."""
    age = max(now - deploy_at, timedelta(0))
    start = timedelta(0)
    for i, p in enumerate(schedule.phases):
        if age < p.until:
            return PhaseInfo(i, len(schedule.phases), p.every, start, p.until)
        start = p.until
    last = schedule.phases[-1]
    return PhaseInfo(len(schedule.phases), len(schedule.phases), last.every, last.until, None)


def next_due(
    *,
    deploy_at: datetime,
    last_cycle_at: datetime | None,
    failing: bool,
    schedule: ScheduleConfig,
    last_repair_at: datetime | None = None,
    repair_grace: timedelta = timedelta(0),
) -> datetime:
    """When the next cycle runs.

    1. No cycle yet for this deploy: now (the deploy time is the earliest moment).
    2. Failing: `incident_every` after the last cycle, so escalation takes minutes.
    3. Healthy: the cadence of the phase the last cycle ran in, but never past the start of
       a later, faster phase... phases only slow down in practice, so the phase's own cadence.
    4. After a repair, not before `repair_grace` has passed, so the app gets time to recover.
    """
    if last_cycle_at is None:
        return deploy_at
    every = schedule.incident_every if failing else phase_at(deploy_at, last_cycle_at, schedule).every
    due = last_cycle_at + every
    if not failing:
        # a phase boundary does not delay a cycle that a shorter next phase would run sooner
        nxt = phase_at(deploy_at, due, schedule)
        due = min(due, max(last_cycle_at + nxt.every, deploy_at + nxt.start))
    if last_repair_at is not None and last_repair_at >= last_cycle_at:
        due = max(due, last_repair_at + repair_grace)
    return due


def cycles_in(deploy_at: datetime, until: datetime, schedule: ScheduleConfig) -> list[datetime]:
    """All healthy-cadence cycle times from the deploy to `until` (for status and tests)."""
    out: list[datetime] = []
    t: datetime | None = None
    while True:
        t = next_due(deploy_at=deploy_at, last_cycle_at=t, failing=False, schedule=schedule)
        if t > until:
            return out
        out.append(t)
