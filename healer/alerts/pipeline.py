"""Which alerts go out, grouped how, to which channels (pure).

The loop hands `plan_alerts` the Alert intents of one cycle, the cycle's context and what was
sent before (`AlertMemory`, read from the outbox). The plan says which messages to put in the
outbox for which channels, and what to remember. No I/O, no clock: `now` is an argument.

Rules, applied to each intent in cycle order (earlier intents of the cycle count as "before"):

1. `bypass_dedup` (meta alerts about healer itself, the test alert): always kept.
2. `incident.opened`: once per incident. When `FLAP_LIMIT` incidents of the same group already
   opened within `repeat_every`, the opening is muted (and its resolution with it) and one
   `incident.flapping` notice per group and `repeat_every` says so: a flapping check gives a
   bounded number of messages. A group is one deploy (the context's commit) and one failure
   (the opening's title: what fails and its likely cause), so an unrelated incident — another
   cause, another deploy — is always announced, however many came before it.
3. `incident.resolved`: once per incident, and not for a muted one.
4. `incident.reminder`: only while the incident is unresolved and nothing was said about it
   for `repeat_every`. The plan also adds a reminder by itself when the context names an open
   incident that has been quiet that long, so the loop need not emit them; none while a person
   has acknowledged it (`CycleContext.acked`).
5. any other event with an incident: the same (event, incident, title) once per `repeat_every`
   (observe mode's "would repair" every cycle is said once, not every minute).
6. anything else: kept.

Then routing: a channel receives the kept items at or above its minimum severity; channels that
receive the same items share one message (one outbox entry per cycle per channel group).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from healer.alerts.message import AlertMessage
from healer.config import Config, format_elapsed
from healer.model import Alert, Event, Severity

FLAP_LIMIT = 3  # incident openings announced per repeat_every; more is flapping
DEFAULT_REPEAT_EVERY = timedelta(minutes=30)

FLEET = "fleet"  # CycleContext.source of what the fleet's leader says for every host
DedupKey = tuple[str, int | None, str]  # (event, incident_id, title)
Group = str  # what flaps together: "<commit> <what fails — likely cause>" (flap_group)


@dataclass(frozen=True, slots=True)
class Route:
    """A channel and the least severe alert it takes."""

    channel: str
    min_severity: Severity = Severity.INFO


@dataclass(frozen=True, slots=True)
class CycleContext:
    """What the loop knows at the end of a cycle that a reader needs."""

    app: str
    commit: str | None = None
    phase: str | None = None  # e.g. "0-6h, every 15m"
    incident_id: int | None = None  # the incident still open after this cycle
    incident_since: datetime | None = None  # when it opened
    summary: str = ""  # what is failing now, e.g. "api: http.status"; used in reminders
    next_step: str | None = None  # e.g. rollback_countdown(failures, rollback_after)
    cause: str | None = None  # the likely cause of the failing cycle: "dependency redis", "deploy", ...
    observe: bool = False
    acked: bool = False  # a person acknowledged the open incident (chatops.ack_in_force): no reminders
    # whose alerts these are, in an outbox several healers share ([fleet]): this host's name, or
    # FLEET for the fleet's own (a coordinated rollback); "" for the one healer of its outbox.
    # Dedup remembers per source: incident #1 of one host is not incident #1 of another.
    source: str = ""

    @classmethod
    def of(cls, config: Config, *, fleet: bool = False, **fields: Any) -> CycleContext:
        """The context of `config`'s healer: its app (on its host, in a fleet) and source; with
        `fleet`, of what it says for the whole fleet (a coordinated rollback)."""
        if fleet:
            return cls(app=f"{config.app.name} (fleet)", source=FLEET, **fields)
        return cls(app=config.alert_app, source=config.alert_source, **fields)


@dataclass(frozen=True, slots=True)
class IncidentMemory:
    """What was said about one incident."""

    opened: bool = False  # its opening was announced
    muted: bool = False  # its opening was folded into a flapping notice
    resolved: bool = False  # its end was announced (or muted)
    last_at: datetime | None = None  # the last message (or muted opening) about it
    severity: Severity = Severity.WARNING  # the most severe message about it


@dataclass(frozen=True, slots=True)
class AlertMemory:
    """What was planned before, as far as the rules need it."""

    incidents: Mapping[int, IncidentMemory] = field(default_factory=dict)
    recent: Mapping[DedupKey, datetime] = field(default_factory=dict)  # last planned at
    openings: tuple[tuple[datetime, Group], ...] = ()  # incident openings (announced or muted), recent ones
    flapping: Mapping[Group, datetime] = field(default_factory=dict)  # the last flapping notice per group


@dataclass(frozen=True, slots=True)
class Remembered:
    """One item to write to the memory (the outbox's item table)."""

    item: Alert
    muted: bool = False  # not sent: folded into a flapping notice
    group: Group | None = None  # an opening's or a flapping notice's group


@dataclass(frozen=True, slots=True)
class Planned:
    """One outbox entry: a message and the channels it goes to."""

    message: AlertMessage
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertPlan:
    """The outcome of one cycle's planning."""

    entries: tuple[Planned, ...]
    remember: tuple[Remembered, ...]
    dropped: tuple[tuple[Alert, str], ...] = ()  # (item, why), for the log
    source: str = ""  # CycleContext.source: whose alerts, in a shared outbox


@dataclass(slots=True)
class _State:
    incidents: dict[int, IncidentMemory]
    recent: dict[DedupKey, datetime]
    openings: list[tuple[datetime, Group]]
    flapping: dict[Group, datetime]


def _key(i: Alert) -> DedupKey:
    return (i.event, i.incident_id, i.title)


def flap_group(opening: Alert, context: CycleContext) -> Group:
    """What an incident's opening flaps with: the same failure (its title names what fails and
    the likely cause) on the same deploy."""
    return f"{context.commit or ''} {opening.title}"


def plan_alerts(
    intents: Sequence[Alert],
    *,
    context: CycleContext,
    memory: AlertMemory,
    routes: Sequence[Route],
    repeat_every: timedelta = DEFAULT_REPEAT_EVERY,
    now: datetime,
) -> AlertPlan:
    """Deduplicate, group and route one cycle's alerts (the rules are in the module docstring)."""
    st = _State(dict(memory.incidents), dict(memory.recent), list(memory.openings), dict(memory.flapping))
    kept: list[Alert] = []
    remember: list[Remembered] = []
    dropped: list[tuple[Alert, str]] = []

    def keep(i: Alert, group: Group | None = None) -> None:
        kept.append(i)
        remember.append(Remembered(i, group=group))
        st.recent[_key(i)] = now
        if i.incident_id is not None:
            m = st.incidents.get(i.incident_id, IncidentMemory())
            sev = m.severity if i.event == Event.INCIDENT_RESOLVED else max(m.severity, i.severity)
            st.incidents[i.incident_id] = replace(m, last_at=now, severity=sev)

    def recently(at: datetime | None) -> bool:
        return at is not None and now - at < repeat_every

    for i in intents:
        inc = i.incident_id
        mem = st.incidents.get(inc, IncidentMemory()) if inc is not None else IncidentMemory()
        if i.bypass_dedup:
            keep(i)
        elif i.event == Event.INCIDENT_OPENED and inc is not None:
            if mem.opened or mem.muted:
                dropped.append((i, "already announced"))
                continue
            group = flap_group(i, context)
            recent_openings = [t for t, g in st.openings if g == group and recently(t)]
            st.openings.append((now, group))
            if len(recent_openings) >= FLAP_LIMIT:
                st.incidents[inc] = replace(mem, muted=True, last_at=now, severity=max(mem.severity, i.severity))
                remember.append(Remembered(i, muted=True, group=group))
                dropped.append((i, "flapping"))
                if not recently(st.flapping.get(group)):
                    st.flapping[group] = now
                    keep(_flapping_item(i, len(recent_openings) + 1, repeat_every), group)
                continue
            keep(i, group)
            st.incidents[inc] = replace(st.incidents[inc], opened=True)
        elif i.event == Event.INCIDENT_RESOLVED and inc is not None:
            if mem.resolved:
                dropped.append((i, "already announced"))
                continue
            if mem.muted:
                st.incidents[inc] = replace(mem, resolved=True)
                remember.append(Remembered(i, muted=True))
                dropped.append((i, "flapping"))
                continue
            keep(i)
            st.incidents[inc] = replace(st.incidents[inc], resolved=True)
        elif i.event == Event.INCIDENT_REMINDER and inc is not None:
            if mem.resolved:
                dropped.append((i, "resolved"))
            elif recently(mem.last_at):
                dropped.append((i, "reminded recently"))
            else:
                keep(i)
        elif inc is not None and recently(st.recent.get(_key(i))):
            dropped.append((i, "said within repeat_every"))
        else:
            keep(i)

    reminder = _due_reminder(context, st, now, repeat_every)
    if reminder is not None:
        keep(reminder)

    entries = _route(kept, context, routes, now, st.incidents)
    return AlertPlan(entries=entries, remember=tuple(remember), dropped=tuple(dropped), source=context.source)


def with_remembered(
    memory: AlertMemory,
    remembered: Sequence[tuple[datetime, Remembered]],
    *,
    now: datetime,
    repeat_every: timedelta = DEFAULT_REPEAT_EVERY,
) -> AlertMemory:
    """`memory` plus items remembered at the given times but not stored: the plans of alerts
    sent while the outbox could not be written. Folded as the outbox folds its rows
    (`Outbox.memory`), so dedup holds across an outage of the state store."""
    incidents = dict(memory.incidents)
    recent = dict(memory.recent)
    openings = list(memory.openings)
    flapping = dict(memory.flapping)
    for at, r in remembered:
        i = r.item
        if i.incident_id is not None:
            m = incidents.get(i.incident_id, IncidentMemory())
            incidents[i.incident_id] = IncidentMemory(
                opened=m.opened or (i.event == Event.INCIDENT_OPENED and not r.muted),
                muted=m.muted or (i.event == Event.INCIDENT_OPENED and r.muted),
                resolved=m.resolved or i.event == Event.INCIDENT_RESOLVED,
                last_at=at,
                severity=m.severity if i.event == Event.INCIDENT_RESOLVED else max(m.severity, i.severity),
            )
        if now - at < repeat_every:
            if not r.muted:
                recent[_key(i)] = max(at, recent.get(_key(i), at))
            if i.event == Event.INCIDENT_OPENED:
                openings.append((at, r.group or ""))
        if i.event == Event.INCIDENT_FLAPPING:
            group = r.group or ""
            flapping[group] = max(at, flapping.get(group, at))
    return AlertMemory(incidents=incidents, recent=recent, openings=tuple(openings), flapping=flapping)


def _flapping_item(opening: Alert, count: int, repeat_every: timedelta) -> Alert:
    """The notice that folds a group's openings: its title says what keeps failing."""
    return Alert(
        Event.INCIDENT_FLAPPING,
        Severity.WARNING,
        f"{opening.title}: {count} incidents within {format_elapsed(repeat_every)}",
        "The same checks keep failing and recovering for the same likely cause. Further openings "
        "and resolutions of this failure are not announced until it settles; reminders continue, "
        "and any other failure is announced as usual.",
    )


def _due_reminder(ctx: CycleContext, st: _State, now: datetime, repeat_every: timedelta) -> Alert | None:
    """A reminder for the context's open incident when it has been quiet for `repeat_every`."""
    inc = ctx.incident_id
    if inc is None or ctx.acked:
        return None
    mem = st.incidents.get(inc, IncidentMemory())
    if mem.resolved or (mem.last_at is not None and now - mem.last_at < repeat_every):
        return None
    detail = f"Open for {format_elapsed(now - ctx.incident_since)}." if ctx.incident_since else ""
    title = ctx.summary or "the incident is still open"
    if ctx.cause:
        title += f" — likely cause: {ctx.cause}"
    return Alert(
        Event.INCIDENT_REMINDER,
        max(Severity.WARNING, mem.severity),
        title,
        detail,
        incident_id=inc,
    )


def _route(
    kept: Sequence[Alert],
    ctx: CycleContext,
    routes: Sequence[Route],
    now: datetime,
    incidents: Mapping[int, IncidentMemory] | None = None,
) -> tuple[Planned, ...]:
    """Each channel gets the items at or above its `min_severity`; an incident's resolution goes
    to every channel that was told of the incident (at its most severe message), whatever the
    resolution's own severity: people told that something broke are told that it recovered."""
    told = incidents or {}

    def reaches(i: Alert, r: Route) -> bool:
        if i.severity >= r.min_severity:
            return True
        if i.event == Event.INCIDENT_RESOLVED and i.incident_id is not None and i.incident_id in told:
            return told[i.incident_id].severity >= r.min_severity
        return False

    groups: dict[tuple[Alert, ...], list[str]] = {}
    for r in routes:
        items = tuple(i for i in kept if reaches(i, r))
        if items:
            groups.setdefault(items, []).append(r.channel)
    out = []
    for items, channels in groups.items():
        msg = AlertMessage(
            items=items,
            app=ctx.app,
            created_at=now,
            commit=ctx.commit,
            phase=ctx.phase,
            since=ctx.incident_since,
            next_step=ctx.next_step,
            cause=ctx.cause,
            observe=ctx.observe,
        )
        out.append(Planned(msg, tuple(channels)))
    return tuple(out)
