"""Reports (pure, but for `load_report`, which reads the store it is given): uptime, incidents,
repairs, rollbacks, SLA and mean time to repair, figured from stored rows; rendered for a
terminal, JSON or chat; and when the chat summaries are due.

The rules, so the numbers can be checked by hand:

- uptime of a check: its passing results / all its results in the period (every recorded
  cycle counts once, whatever its cadence);
- an incident lasts from its opening (the first failing cycle) to its resolution (after
  `recover_after` passing cycles), or up to the end of the period while it is open;
- availability, which the SLA is judged on, is time-based: 1 - downtime / observed time, where
  downtime is the time some incident was open, and observed time runs from the later of the
  period's start and the first deploy healer saw, to the end. Failing periods are checked every
  minute and healthy ones every few hours, so counting cycles would overstate downtime;
- mean time to repair: the mean duration of the resolved incidents in the period;
- with no observed time there is no availability, and an SLA without data is not met.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from healer.config import format_elapsed

if TYPE_CHECKING:
    from rich.console import RenderableType

    from healer.store import ActionRow, CycleRow, IncidentRow, Store

DEFAULT_SLA_TARGET = 99.9  # percent of the observed time without an open incident
DAY = timedelta(days=1)
REPORTED_ACTIONS = ("repair", "rollback")
FINAL = "final"


# ---- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckUptime:
    """One check's results in the period."""

    name: str
    passed: int
    total: int

    @property
    def percent(self) -> float | None:
        return None if self.total == 0 else 100.0 * self.passed / self.total


@dataclass(frozen=True, slots=True)
class IncidentSpan:
    """An incident and how long it lasted (so far, while open)."""

    id: int
    opened_at: datetime
    resolved_at: datetime | None
    cause: str
    duration: timedelta

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True, slots=True)
class ActionEntry:
    """A repair or a rollback, as the report shows it."""

    at: datetime
    kind: str
    name: str
    who: str
    outcome: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Sla:
    """Availability over the observed time, against a target (both in percent)."""

    target: float
    availability: float | None
    downtime: timedelta
    observed: timedelta

    @property
    def is_met(self) -> bool:
        """downtime <= observed * (100 - target) / 100, in exact arithmetic: availability
        exactly at the target meets it (a float comparison could say 99.8999... < 99.9)."""
        if self.availability is None:
            return False
        allowed = Fraction(_us(self.observed)) * (100 - Fraction(str(self.target))) / 100
        return _us(self.downtime) <= allowed

    @property
    def allowed_downtime(self) -> timedelta:
        return self.observed * ((100.0 - self.target) / 100.0)


@dataclass(frozen=True, slots=True)
class Report:
    """Everything `healer report` shows for one period."""

    start: datetime
    end: datetime
    observed_from: datetime | None
    cycles: int
    cycles_ok: int
    checks: tuple[CheckUptime, ...]
    incidents: tuple[IncidentSpan, ...]
    repairs: tuple[ActionEntry, ...]
    rollbacks: tuple[ActionEntry, ...]
    sla: Sla
    mttr: timedelta | None

    @property
    def resolved(self) -> tuple[IncidentSpan, ...]:
        return tuple(i for i in self.incidents if not i.is_open)


def _us(d: timedelta) -> int:
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def check_uptime(cycles: Iterable[CycleRow]) -> tuple[CheckUptime, ...]:
    """Per check, passing results / all results, in the order the checks first appear."""
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for c in cycles:
        for r in c.results:
            total[r.name] += 1
            passed[r.name] += int(r.ok)
    return tuple(CheckUptime(name, passed[name], n) for name, n in total.items())


def incident_spans(incidents: Iterable[IncidentRow], now: datetime) -> tuple[IncidentSpan, ...]:
    """Each incident with its duration: to its resolution, or to `now` while open."""
    return tuple(
        IncidentSpan(
            i.id,
            i.opened_at,
            i.resolved_at,
            i.cause,
            max((i.resolved_at or now) - i.opened_at, timedelta(0)),
        )
        for i in sorted(incidents, key=lambda i: (i.opened_at, i.id))
    )


def downtime(incidents: Iterable[IncidentSpan], start: datetime, end: datetime) -> timedelta:
    """The time within [start, end] during which at least one incident was open."""
    spans = sorted(
        (max(i.opened_at, start), min(i.resolved_at or end, end))
        for i in incidents
    )  # fmt: skip
    total = timedelta(0)
    cur_start: datetime | None = None
    cur_end: datetime | None = None
    for a, b in spans:
        if b <= a:
            continue
        if cur_end is None or a > cur_end:
            if cur_start is not None and cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    if cur_start is not None and cur_end is not None:
        total += cur_end - cur_start
    return total


def mean_time_to_repair(incidents: Iterable[IncidentSpan]) -> timedelta | None:
    """Mean open -> resolved of the resolved incidents; None when none was resolved."""
    done = [i.duration for i in incidents if not i.is_open]
    if not done:
        return None
    return sum(done, timedelta(0)) / len(done)


def availability(down: timedelta, observed: timedelta) -> float | None:
    """Percent of the observed time without an open incident; None without observed time."""
    if observed <= timedelta(0):
        return None
    return 100.0 * (1.0 - min(down, observed) / observed)


def build_report(
    cycles: Iterable[CycleRow],
    incidents: Iterable[IncidentRow],
    actions: Iterable[ActionRow],
    *,
    start: datetime,
    now: datetime,
    watched_since: datetime | None = None,
    sla_target: float = DEFAULT_SLA_TARGET,
) -> Report:
    """The report for [start, now] from stored rows (rows outside the period are ignored).

    `watched_since`: when healer first saw a deploy here (`Store.watched_since()`); the
    observed time starts there when that is later than `start`. Without it, at the first row
    of the period.
    """
    in_period = [c for c in cycles if start <= c.at <= now]
    return _assemble(
        CycleTotals(len(in_period), sum(1 for c in in_period if c.ok), min((c.at for c in in_period), default=None)),
        check_uptime(in_period), incidents, actions, start=start, now=now, watched_since=watched_since,
        sla_target=sla_target,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class CycleTotals:
    """The cycles of a period, counted: how many, how many passed, when the first was."""

    total: int
    ok: int
    first_at: datetime | None


def _assemble(
    totals: CycleTotals,
    checks: tuple[CheckUptime, ...],
    incidents: Iterable[IncidentRow],
    actions: Iterable[ActionRow],
    *,
    start: datetime,
    now: datetime,
    watched_since: datetime | None,
    sla_target: float,
) -> Report:
    """build_report() from the period's cycles already counted (by hand or by the store)."""
    spans = tuple(
        s for s in incident_spans(incidents, now)
        if s.opened_at <= now and (s.resolved_at is None or s.resolved_at >= start)
    )  # fmt: skip
    entries = [
        ActionEntry(a.at, a.kind, a.name, a.who, a.outcome, a.reason, a.detail)
        for a in sorted(actions, key=lambda a: (a.at, a.id))
        if a.kind in REPORTED_ACTIONS and start <= a.at <= now
    ]
    if watched_since is not None:
        observed_from: datetime | None = max(start, watched_since)
    else:
        firsts = ([] if totals.first_at is None else [totals.first_at]) + [max(s.opened_at, start) for s in spans]
        observed_from = min(firsts) if firsts else None
    observed = timedelta(0) if observed_from is None else max(now - observed_from, timedelta(0))
    down = timedelta(0) if observed_from is None else downtime(spans, observed_from, now)
    return Report(
        start=start,
        end=now,
        observed_from=observed_from,
        cycles=totals.total,
        cycles_ok=totals.ok,
        checks=checks,
        incidents=spans,
        repairs=tuple(e for e in entries if e.kind == "repair"),
        rollbacks=tuple(e for e in entries if e.kind == "rollback"),
        sla=Sla(sla_target, availability(down, observed), down, observed),
        mttr=mean_time_to_repair(spans),
    )


def load_report(store: Store, *, start: datetime, now: datetime, sla_target: float = DEFAULT_SLA_TARGET) -> Report:
    """build_report() over the store's rows for [start, now]. The cycles are counted by the
    store (per-hour totals), not read one by one: a 30-day report over a 1-minute cadence would
    otherwise parse 43,200 cycles of results."""
    total, ok, first_at = store.cycle_totals(start, now)
    checks = tuple(CheckUptime(name, passed, n) for name, passed, n in store.check_totals(start, now))
    return _assemble(
        CycleTotals(total, ok, first_at),
        checks,
        store.incidents(since=start),
        store.actions(since=start),
        start=start,
        now=now,
        watched_since=store.watched_since(),
        sla_target=sla_target,
    )


def outcomes(entries: Iterable[ActionEntry]) -> dict[str, int]:
    """How many ended each way: {"ok": 2, "failed": 1}."""
    return dict(sorted(Counter(e.outcome for e in entries).items()))


# ---- scheduled summaries ---------------------------------------------------------------------


def due_summaries(
    deploy_first_seen: datetime,
    window: timedelta,
    last_sent: datetime | None,
    now: datetime,
    *,
    every: timedelta = DAY,
) -> list[str]:
    """The chat summaries due now: `day-N` once a day during the launch window, `final` when it
    ends.

    Marks fall at first_seen + N * every strictly inside the window, and at first_seen + window
    (the final one). A mark is due when last_sent < mark <= now; `last_sent` is when the last
    summary of this deploy went out (None: never). Missed daily marks collapse into the
    latest, and once the final one is due the daily ones are not: it covers them.
    """
    end = deploy_first_seen + window
    if now >= end:
        return [FINAL] if last_sent is None or last_sent < end else []
    if every <= timedelta(0) or now < deploy_first_seen + every:
        return []
    n = int((now - deploy_first_seen) / every)  # the latest mark passed
    mark = deploy_first_seen + n * every
    if mark >= end or (last_sent is not None and last_sent >= mark):
        return []
    return [f"day-{n}"]


def summary_period(
    label: str, deploy_first_seen: datetime, window: timedelta, *, every: timedelta = DAY
) -> tuple[datetime, datetime]:
    """The period a summary covers: day N is [first_seen + (N-1)*every, first_seen + N*every];
    the final one is the whole window."""
    if label == FINAL:
        return deploy_first_seen, deploy_first_seen + window
    n = int(label.removeprefix("day-"))
    return deploy_first_seen + (n - 1) * every, deploy_first_seen + n * every


# ---- rendering -------------------------------------------------------------------------------


def format_percent(x: float | None, places: int = 3) -> str:
    """Cut, never rounded up: 99.8999 shows as 99.899 %, not as a target met."""
    if x is None:
        return "n/a"
    scale = 10**places
    # the epsilon undoes float noise (99.9 * 1000 = 99899.99999999999) without rounding up
    return f"{math.floor(x * scale + 1e-6) / scale:.{places}f}%"


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON data (durations in seconds, times in ISO 8601)."""

    def entries(es: Sequence[ActionEntry]) -> dict[str, Any]:
        return {
            "total": len(es),
            "by_outcome": outcomes(es),
            "items": [
                {"at": e.at.isoformat(), "name": e.name, "who": e.who, "outcome": e.outcome,
                 "reason": e.reason, "detail": e.detail}
                for e in es
            ],
        }  # fmt: skip

    s = report.sla
    return {
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "observed_from": _ts(report.observed_from),
        "cycles": {"total": report.cycles, "ok": report.cycles_ok},
        "checks": [
            {"name": c.name, "passed": c.passed, "total": c.total, "uptime_percent": c.percent} for c in report.checks
        ],
        "incidents": [
            {
                "id": i.id,
                "opened_at": i.opened_at.isoformat(),
                "resolved_at": _ts(i.resolved_at),
                "open": i.is_open,
                "duration_seconds": i.duration.total_seconds(),
                "cause": i.cause,
            }
            for i in report.incidents
        ],
        "repairs": entries(report.repairs),
        "rollbacks": entries(report.rollbacks),
        "sla": {
            "target_percent": s.target,
            "availability_percent": s.availability,
            "met": s.is_met,
            "downtime_seconds": s.downtime.total_seconds(),
            "allowed_downtime_seconds": s.allowed_downtime.total_seconds(),
            "observed_seconds": s.observed.total_seconds(),
        },
        "mttr_seconds": None if report.mttr is None else report.mttr.total_seconds(),
    }


def _when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _sla_line(s: Sla) -> str:
    if s.availability is None:
        return f"SLA {s.target:g}%: no data (healer observed nothing in this period)"
    verdict = "met" if s.is_met else "MISSED"
    return (
        f"SLA {s.target:g}%: {verdict}, availability {format_percent(s.availability)} "
        f"({format_elapsed(s.downtime)} down in {format_elapsed(s.observed)}; "
        f"the target allows {format_elapsed(s.allowed_downtime)})"
    )


def _outcome_text(entries: Sequence[ActionEntry]) -> str:
    if not entries:
        return "none"
    by = outcomes(entries)
    return f"{len(entries)} (" + ", ".join(f"{k} {n}" for k, n in by.items()) + ")"


def render_text(report: Report, title: str) -> str:
    """Plain text, for chat summaries and for a terminal without colours."""
    lines = [f"{title}: {_when(report.start)} to {_when(report.end)}", _sla_line(report.sla)]
    if report.checks:
        lines.append(
            "Uptime: "
            + ", ".join(f"{c.name} {format_percent(c.percent, 2)} ({c.passed}/{c.total})" for c in report.checks)
        )
    else:
        lines.append("Uptime: no checks recorded")
    open_ = sum(1 for i in report.incidents if i.is_open)
    mttr = "n/a" if report.mttr is None else format_elapsed(report.mttr)
    lines.append(f"Incidents: {len(report.incidents)} ({open_} open), mean time to repair {mttr}")
    for i in report.incidents:
        state = "open for" if i.is_open else "lasted"
        lines.append(f"  #{i.id} {_when(i.opened_at)}, {state} {format_elapsed(i.duration)}: {i.cause}")
    lines.append(f"Repairs: {_outcome_text(report.repairs)}")
    lines.append(f"Rollbacks: {_outcome_text(report.rollbacks)}")
    return "\n".join(lines)


def render(report: Report, title: str) -> RenderableType:
    """For a terminal: the headline figures, then tables of checks, incidents and actions."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = report.sla
    colour = "green" if s.is_met else "red"
    head = Text.assemble(
        (f"{title}", "bold"), f"  {_when(report.start)} to {_when(report.end)}\n",
        (_sla_line(s), colour), "\n",
        f"cycles {report.cycles} ({report.cycles_ok} healthy), incidents {len(report.incidents)}, "
        f"mean time to repair {'n/a' if report.mttr is None else format_elapsed(report.mttr)}",
    )  # fmt: skip
    parts: list[RenderableType] = [head]
    checks = Table(title="uptime per check", title_justify="left")
    for col in ("check", "uptime", "passed", "results"):
        checks.add_column(col, justify="left" if col == "check" else "right")
    for c in report.checks:
        checks.add_row(c.name, format_percent(c.percent, 2), str(c.passed), str(c.total))
    parts.append(checks)
    if report.incidents:
        inc = Table(title="incidents", title_justify="left")
        for col in ("#", "opened", "resolved", "duration", "cause"):
            inc.add_column(col, overflow="fold")
        for i in report.incidents:
            resolved = "[red]open[/]" if i.resolved_at is None else _when(i.resolved_at)
            inc.add_row(str(i.id), _when(i.opened_at), resolved, format_elapsed(i.duration), i.cause)
        parts.append(inc)
    acts = [*report.repairs, *report.rollbacks]
    if acts:
        table = Table(title=f"repairs {_outcome_text(report.repairs)}, rollbacks {_outcome_text(report.rollbacks)}",
                      title_justify="left")  # fmt: skip
        for col in ("when", "what", "name", "who", "outcome", "why"):
            table.add_column(col, overflow="fold")
        for e in sorted(acts, key=lambda e: e.at):
            style = "green" if e.outcome == "ok" else ("red" if e.outcome in ("failed", "error") else "")
            outcome = f"[{style}]{e.outcome}[/]" if style else e.outcome
            table.add_row(_when(e.at), e.kind, e.name, e.who, outcome, e.reason)
        parts.append(table)
    return Group(*parts)
