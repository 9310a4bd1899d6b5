"""The alert pipeline's decisions: dedup per incident, reminders, grouping, routing (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from healer.alerts.pipeline import (
    FLAP_LIMIT,
    AlertMemory,
    AlertPlan,
    CycleContext,
    IncidentMemory,
    Route,
    plan_alerts,
)
from healer.model import Alert, Event, Severity

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REPEAT = timedelta(minutes=30)
ROUTES = (Route("log"), Route("slack"), Route("telegram", Severity.CRITICAL))
CTX = CycleContext(app="shop-api", commit="abc1234", phase="0-6h")


@dataclass
class Memory:
    """Plays the outbox's part: folds each plan into the memory the next cycle sees."""

    incidents: dict[int, IncidentMemory] = field(default_factory=dict)
    recent: dict[tuple[str, int | None, str], datetime] = field(default_factory=dict)
    openings: list[tuple[datetime, str]] = field(default_factory=list)
    flapping: dict[str, datetime] = field(default_factory=dict)

    def snapshot(self) -> AlertMemory:
        return AlertMemory(dict(self.incidents), dict(self.recent), tuple(self.openings), dict(self.flapping))

    def fold(self, plan: AlertPlan, now: datetime) -> None:
        for r in plan.remember:
            i = r.item
            if i.event == "incident.opened":
                self.openings.append((now, r.group or ""))
            if i.event == "incident.flapping":
                self.flapping[r.group or ""] = now
            if not r.muted:
                self.recent[(i.event, i.incident_id, i.title)] = now
            if i.incident_id is not None:
                m = self.incidents.get(i.incident_id, IncidentMemory())
                self.incidents[i.incident_id] = IncidentMemory(
                    opened=m.opened or (i.event == "incident.opened" and not r.muted),
                    muted=m.muted or (i.event == "incident.opened" and r.muted),
                    resolved=m.resolved or i.event == "incident.resolved",
                    last_at=now,
                    severity=m.severity if i.event == "incident.resolved" else max(m.severity, i.severity),
                )


def run(
    mem: Memory,
    intents: Sequence[Alert],
    now: datetime,
    ctx: CycleContext = CTX,
    routes: Sequence[Route] = ROUTES,
) -> AlertPlan:
    plan = plan_alerts(intents, context=ctx, memory=mem.snapshot(), routes=routes, repeat_every=REPEAT, now=now)
    mem.fold(plan, now)
    return plan


def events(plan: AlertPlan, channel: str = "slack") -> list[str]:
    return [i.event for p in plan.entries if channel in p.channels for i in p.message.items]


def opened(inc: int = 1) -> Alert:
    return Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api is failing: HTTP 503", "", incident_id=inc)


def resolved(inc: int = 1) -> Alert:
    return Alert(Event.INCIDENT_RESOLVED, Severity.INFO, "api is healthy again", "", incident_id=inc)


def failing(inc: int = 1, since: datetime = T0) -> CycleContext:
    return replace(CTX, incident_id=inc, incident_since=since, summary="api: http.status")


def test_one_incident_over_many_cycles_gives_opened_reminders_at_repeat_every_and_resolved() -> None:
    """Cycles every minute for 65 minutes: opened once, reminders at 30m and 60m, resolved once."""
    mem = Memory()
    story: list[tuple[int, str]] = []
    for minute in range(66):
        now = T0 + timedelta(minutes=minute)
        # decide() may repeat incident.opened every failing cycle; the pipeline says it once
        intents = [opened()] if minute < 65 else [resolved()]
        ctx = failing() if minute < 65 else CTX
        plan = run(mem, intents, now, ctx)
        story += [(minute, e) for e in events(plan)]
    assert story == [
        (0, "incident.opened"),
        (30, "incident.reminder"),
        (60, "incident.reminder"),
        (65, "incident.resolved"),
    ]


def test_five_cycles_give_one_opened_and_one_resolved() -> None:
    """One incident over 5 cycles within repeat_every: one opened, no reminder, one resolved."""
    mem = Memory()
    seen: list[str] = []
    reminder = Alert(Event.INCIDENT_REMINDER, Severity.WARNING, "x", "", 1)
    cycles: list[list[Alert]] = [[opened()], [opened()], [], [reminder], [resolved(), resolved()]]
    for n, intents in enumerate(cycles):
        ctx = failing() if n < 4 else CTX
        seen += events(run(mem, intents, T0 + timedelta(minutes=n), ctx))
    assert seen == ["incident.opened", "incident.resolved"]


def test_reminder_carries_how_long_and_what_fails() -> None:
    """A reminder says what is failing and for how long, at the incident's severity."""
    mem = Memory()
    run(mem, [opened()], T0, failing())
    run(
        mem,
        [Alert(Event.ROLLBACK_FAILED, Severity.CRITICAL, "rollback failed", "", incident_id=1)],
        T0,
        failing(),
    )
    plan = run(mem, [], T0 + REPEAT, failing())
    [entry] = [p for p in plan.entries if "telegram" in p.channels]
    [item] = entry.message.items
    assert item.event == "incident.reminder"
    assert item.severity is Severity.CRITICAL  # the incident reached critical: the on-call chat hears it
    assert item.title == "api: http.status"
    assert item.detail == "Open for 30m."


def test_three_events_in_one_cycle_are_one_message() -> None:
    """opened + repair.started + repair.failed in one cycle: one message per channel group."""
    mem = Memory()
    plan = run(
        mem,
        [
            opened(),
            Alert(Event.REPAIR_STARTED, Severity.WARNING, "process-restart", incident_id=1),
            Alert(Event.REPAIR_FAILED, Severity.WARNING, "process-restart did not help", incident_id=1),
        ],
        T0,
        failing(),
    )
    assert len(plan.entries) == 1
    [entry] = plan.entries
    assert entry.channels == ("log", "slack")
    assert [i.event for i in entry.message.items] == [
        "incident.opened",
        "repair.started",
        "repair.failed",
    ]


def test_a_warning_does_not_reach_a_critical_only_channel() -> None:
    """Routing by severity: telegram (critical) hears only the critical event of the cycle."""
    mem = Memory()
    plan = run(
        mem,
        [
            opened(),
            Alert(Event.ROLLBACK_STARTED, Severity.CRITICAL, "rolling back to stable-3", incident_id=1),
        ],
        T0,
        failing(),
    )
    by_channels = {p.channels: [i.event for i in p.message.items] for p in plan.entries}
    assert by_channels == {
        ("log", "slack"): ["incident.opened", "rollback.started"],
        ("telegram",): ["rollback.started"],
    }
    assert run(Memory(), [opened()], T0).entries[0].channels == ("log", "slack")


def test_the_resolution_reaches_every_channel_that_was_told_of_the_incident() -> None:
    """A channel at min_severity = "warning" that heard "opened" hears "resolved" (an INFO item)
    too; a critical-only channel that heard nothing of the incident is not told it is over."""
    routes = (Route("log"), Route("slack", Severity.WARNING), Route("telegram", Severity.CRITICAL))
    mem = Memory()
    run(mem, [opened()], T0, failing(), routes)
    plan = run(mem, [resolved()], T0 + timedelta(minutes=2), CTX, routes)
    assert {c for p in plan.entries for c in p.channels if "incident.resolved" in events(plan, c)} == {"log", "slack"}
    mem = Memory()
    run(
        mem,
        [opened(), Alert(Event.ROLLBACK_STARTED, Severity.CRITICAL, "to stable-3", incident_id=1)],
        T0,
        failing(),
        routes,
    )
    plan = run(mem, [resolved()], T0 + timedelta(minutes=2), CTX, routes)
    assert "incident.resolved" in events(plan, "telegram")


def test_meta_alerts_bypass_dedup() -> None:
    """A meta alert about healer itself goes out every time it is raised."""
    mem = Memory()
    meta = Alert(Event.META_LOOP_BEHIND, Severity.WARNING, "the loop is 3m behind", bypass_dedup=True)
    counts = [len(run(mem, [meta], T0 + timedelta(minutes=m)).entries) for m in range(3)]
    assert counts == [1, 1, 1]


def test_the_same_incident_event_is_said_once_per_repeat_every() -> None:
    """Observe mode's "would repair" every cycle is said once per repeat_every, not every minute."""
    mem = Memory()
    would = Alert(Event.REPAIR_STARTED, Severity.WARNING, "would run process-restart", incident_id=1)
    said = [m for m in range(61) if events(run(mem, [would], T0 + timedelta(minutes=m), failing()))]
    # each saying also counts as news about the incident, so no reminder is added in between
    assert said == [0, 30, 60]


def test_flapping_check_gives_a_bounded_number_of_messages() -> None:
    """An incident opening and resolving every other minute for an hour: a bounded few messages."""
    mem = Memory()
    sent: list[str] = []
    for inc, minute in enumerate(range(0, 60, 2), start=1):
        sent += events(run(mem, [opened(inc)], T0 + timedelta(minutes=minute), failing(inc)))
        sent += events(run(mem, [resolved(inc)], T0 + timedelta(minutes=minute + 1)))
    # per half hour: FLAP_LIMIT openings with their resolutions, then one flapping notice
    assert sent.count("incident.flapping") == 2
    assert sent.count("incident.opened") <= 2 * FLAP_LIMIT
    assert sent.count("incident.resolved") == sent.count("incident.opened")
    assert len(sent) <= 2 * (2 * FLAP_LIMIT + 1)


def test_resolution_of_a_muted_incident_is_not_announced_but_reminders_continue() -> None:
    """A flapping-muted incident that stays open still gets reminders."""
    mem = Memory()
    for inc in range(1, FLAP_LIMIT + 1):
        run(mem, [opened(inc)], T0, failing(inc))
        run(mem, [resolved(inc)], T0)
    plan = run(mem, [opened(99)], T0 + timedelta(minutes=1), failing(99))
    assert events(plan) == ["incident.flapping"]
    assert events(run(mem, [], T0 + timedelta(minutes=2), failing(99))) == []
    assert events(run(mem, [], T0 + timedelta(minutes=31), failing(99))) == ["incident.reminder"]


def test_unrelated_incidents_are_each_announced_however_many_flapped_before() -> None:
    """One failure flapping on one deploy is folded; an incident with another cause, or on
    another deploy, is announced from its opening to its resolution all the same."""
    mem = Memory()
    for inc in range(1, FLAP_LIMIT + 2):
        run(mem, [opened(inc)], T0 + timedelta(minutes=inc), failing(inc))
        run(mem, [resolved(inc)], T0 + timedelta(minutes=inc))
    assert mem.flapping  # the api's own failure flapped
    other_cause = Alert("incident.opened", Severity.WARNING, "cache failing — likely cause: dependency redis", "", 20)
    plan = run(mem, [other_cause], T0 + timedelta(minutes=10), failing(20))
    assert events(plan) == ["incident.opened"]
    assert events(run(mem, [resolved(20)], T0 + timedelta(minutes=11))) == ["incident.resolved"]
    next_deploy = replace(failing(21), commit="def5678")
    assert events(run(mem, [opened(21)], T0 + timedelta(minutes=12), next_deploy)) == ["incident.opened"]
    assert events(run(mem, [resolved(21)], T0 + timedelta(minutes=13))) == ["incident.resolved"]
    # ... while the flapping failure itself stays folded
    assert events(run(mem, [opened(22)], T0 + timedelta(minutes=14), failing(22))) == []


def test_the_flapping_notice_says_what_keeps_failing() -> None:
    mem = Memory()
    for inc in range(1, FLAP_LIMIT + 2):
        plan = run(mem, [opened(inc)], T0 + timedelta(minutes=inc), failing(inc))
    notice = [i for p in plan.entries for i in p.message.items]
    assert [i.event for i in notice] == ["incident.flapping"]
    assert notice[0].title == f"api is failing: HTTP 503: {FLAP_LIMIT + 1} incidents within 30m"


def test_plan_keeps_items_from_the_intent_in_order_and_records_them() -> None:
    """Every kept item is remembered, so the next cycle (or the next start) knows it was said."""
    plan = run(
        Memory(),
        [opened(), Alert(Event.HEALER_STARTED, Severity.INFO, "watching abc1234")],
        T0,
        failing(),
    )
    assert [r.item.event for r in plan.remember] == ["incident.opened", "healer.started"]
    assert all(isinstance(r.item, Alert) for r in plan.remember)


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        pytest.param(Severity.INFO, {("log", "slack")}, id="info"),
        pytest.param(Severity.WARNING, {("log", "slack")}, id="warning"),
        pytest.param(Severity.CRITICAL, {("log", "slack", "telegram")}, id="critical"),
    ],
)
def test_routing_by_min_severity(severity: Severity, expected: set[tuple[str, ...]]) -> None:
    """Each channel gets alerts at or above its minimum."""
    plan = run(Memory(), [Alert(Event.PHASE_CHANGED, severity, "phase 6-24h")], T0)
    assert {p.channels for p in plan.entries} == expected


def test_no_routes_no_entries() -> None:
    """With every channel above the alert's severity, nothing is queued (it is still remembered)."""
    plan = run(Memory(), [opened()], T0, routes=(Route("telegram", Severity.CRITICAL),))
    assert plan.entries == ()
    assert [r.item.event for r in plan.remember] == ["incident.opened"]
