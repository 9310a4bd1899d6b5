"""What a person on a phone reads: the alert message and its renderings (pure).

An `AlertMessage` is what the pipeline stores in the outbox: the events of one cycle that go
to one group of channels, plus the context a reader needs (app, commit, phase, since when,
what healer will do next). Rendering happens at send time, so a late delivery can say so.

    render_text(msg)      plain text, for the log and as the chat fallback
    heading, footer, ...  the pieces each channel's module renders its own format from
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from healer.config import format_elapsed
from healer.model import Alert, Event, Severity

# ---- events ----------------------------------------------------------------------------------

# What a message sent while the state store could not be written says about itself: no row
# in the outbox, no history, no dedup memory beyond this process (it is written later).
NOT_RECORDED = "[not recorded: the state store cannot be written]"

# event -> the words a reader sees first (every Event has them: tests/test_alerts_message.py)
LABELS: Mapping[Event, str] = {
    Event.INCIDENT_OPENED: "Incident opened",
    Event.INCIDENT_CAUSE: "Likely cause",
    Event.INCIDENT_REMINDER: "Still failing",
    Event.INCIDENT_RESOLVED: "Resolved",
    Event.INCIDENT_FLAPPING: "Flapping",
    Event.REPAIR_STARTED: "Repairing",
    Event.REPAIR_SUCCEEDED: "Repaired",
    Event.REPAIR_FAILED: "Repair failed",
    Event.REPAIR_CAPPED: "Repair cap reached",
    Event.ROLLBACK_STARTED: "Rolling back",
    Event.ROLLBACK_SUCCEEDED: "Rolled back",
    Event.ROLLBACK_FAILED: "Rollback failed",
    Event.HEALER_STARTED: "Watching",
    Event.HEALER_STOPPED: "Stopped watching",
    Event.HEALER_HELD: "Waiting for a person",
    Event.HEALER_BLIND: "healer cannot probe",
    Event.PHASE_CHANGED: "Phase changed",
    Event.PAUSE_STARTED: "Paused",
    Event.PAUSE_ENDED: "Resumed",
    Event.INCIDENT_ACKED: "Acknowledged",
    Event.CHATOPS_STOPPED: "Chat commands off",
    Event.DEPLOY_BAD: "Known-bad commit deployed",
    Event.DEPLOY_TAGGED: "Tagged stable",
    Event.LATENCY_DRIFTING: "Latency drifting up",
    Event.REPORT_DAILY: "Daily report",
    Event.REPORT_FINAL: "Launch window report",
    Event.META_LOOP_BEHIND: "healer is behind",
    Event.META_STORE_FAILED: "healer cannot write its state",
    Event.META_STORE_RECOVERED: "healer writes its state again",
    Event.META_CLOCK_STEP: "The clock jumped",
    Event.META_CHANNEL_FAILING: "Alert channel failing",
    Event.TEST: "Test alert",
}
_GOOD_EVENTS = frozenset({Event.INCIDENT_RESOLVED, Event.REPAIR_SUCCEEDED, Event.ROLLBACK_SUCCEEDED, Event.PAUSE_ENDED})
_ICONS = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}
_GOOD_ICON = "✅"

DELAYED_AFTER = timedelta(minutes=1)
TRUNCATED = "… [truncated]"
SHORT_COMMIT = 7


def label(event: Event) -> str:
    """The reader's words for an event."""
    return LABELS[event]


# ---- the message -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """The events of one cycle for one group of channels, with what a reader needs around them.

    The headline is the most severe item (the first of equals); the others follow in cycle order.
    """

    items: tuple[Alert, ...]
    app: str
    created_at: datetime
    commit: str | None = None
    phase: str | None = None
    since: datetime | None = None  # when the open incident began
    next_step: str | None = None  # "rollback in 2 more failing cycles"
    cause: str | None = None  # the likely cause of the failing cycle: "dependency redis", "deploy", ...
    observe: bool = False  # healer runs in observe mode: it acts on nothing
    note: str | None = None  # a line shown under the heading: NOT_RECORDED
    host: str | None = None  # [fleet]: the host whose alert it is (CycleContext.source): its buttons act on it

    def __post_init__(self) -> None:
        if not self.items:
            msg = "AlertMessage needs at least one item"
            raise ValueError(msg)

    @property
    def headline(self) -> Alert:
        top = max(i.severity for i in self.items)
        return next(i for i in self.items if i.severity == top)

    @property
    def event(self) -> Event:
        return self.headline.event

    @property
    def severity(self) -> Severity:
        return self.headline.severity

    @property
    def title(self) -> str:
        return self.headline.title

    @property
    def detail(self) -> str:
        return self.headline.detail

    @property
    def incident_id(self) -> int | None:
        h = self.headline.incident_id
        return h if h is not None else next((i.incident_id for i in self.items if i.incident_id is not None), None)

    @property
    def bypass_dedup(self) -> bool:
        return all(i.bypass_dedup for i in self.items)

    @property
    def others(self) -> tuple[Alert, ...]:
        h = self.headline
        return tuple(i for i in self.items if i is not h)

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [i.to_json() for i in self.items],
            "app": self.app,
            "created_at": self.created_at.isoformat(),
            "commit": self.commit,
            "phase": self.phase,
            "since": None if self.since is None else self.since.isoformat(),
            "next_step": self.next_step,
            "cause": self.cause,
            "observe": self.observe,
            "note": self.note,
            "host": self.host,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AlertMessage:
        since = d.get("since")
        return cls(
            items=tuple(Alert.from_json(i) for i in d["items"]),
            app=str(d["app"]),
            created_at=datetime.fromisoformat(str(d["created_at"])),
            commit=d.get("commit"),
            phase=d.get("phase"),
            since=None if since is None else datetime.fromisoformat(str(since)),
            next_step=d.get("next_step"),
            cause=d.get("cause"),
            observe=bool(d.get("observe", False)),
            note=d.get("note"),
            host=d.get("host"),
        )


def rollback_countdown(consecutive_failures: int, rollback_after: int, *, observe: bool = False) -> str:
    """The next step while failing: "rollback in 2 more failing cycles"."""
    left = rollback_after - consecutive_failures
    verb = "would roll back" if observe else "rollback"
    if left <= 0:
        return f"{verb} now"
    return f"{verb} in {left} more failing cycle{'' if left == 1 else 's'}"


def alert_test_message(app: str, now: datetime) -> AlertMessage:
    """The message `healer alert test` sends."""
    item = Alert(Event.TEST, Severity.INFO, "healer can reach this channel", "No action needed.", bypass_dedup=True)
    return AlertMessage(items=(item,), app=app, created_at=now)


def watching_after_repair(recover_after: int) -> str:
    """The next step after a repair that worked: the incident resolves once the checks pass
    `recover_after` cycles in a row (a rollback countdown would contradict "Repaired")."""
    return f"watching: the incident resolves after {recover_after} passing cycle{'' if recover_after == 1 else 's'}"


def rollback_failure_title(to_ref: str, *, commands_failed: bool, restart: bool = False) -> str:
    """What failed in a rollback that moved HEAD: its `after` commands, or the restart through
    [process] that stands in for them (the target was never tried), or the target itself,
    which the checks found unhealthy."""
    if commands_failed:
        what = "the restart through [process]" if restart else "after command"
        return f"Rollback to {to_ref}: {what} failed"
    return f"{to_ref} is not healthy either"


# ---- shared pieces ---------------------------------------------------------------------------


def delay_of(msg: AlertMessage, now: datetime) -> timedelta | None:
    """How late a delivery at `now` is, when it is late enough to say so."""
    late = now - msg.created_at
    return late if late > DELAYED_AFTER else None


def _icon(msg: AlertMessage) -> str:
    return _GOOD_ICON if msg.event in _GOOD_EVENTS else _ICONS[msg.severity]


def heading(msg: AlertMessage, delayed: timedelta | None = None) -> str:
    """ "[delayed 12m] 🟠 shop-api: Incident opened (observe mode)" """
    late = f"[delayed {format_elapsed(delayed)}] " if delayed else ""
    obs = " (observe mode)" if msg.observe else ""
    return f"{late}{_icon(msg)} {msg.app}: {label(msg.event)}{obs}"


def _since_line(msg: AlertMessage) -> str | None:
    if msg.since is None:
        return None
    at = msg.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Since {at} ({format_elapsed(msg.created_at - msg.since)})"


def _next_line(msg: AlertMessage) -> str | None:
    """ "Likely cause: dependency redis. Next: no rollback or restart loop while redis fails: telling people" """
    cause = f"Likely cause: {msg.cause}." if msg.cause and "likely cause" not in msg.title else ""
    step = f"Next: {clip(msg.next_step, 300)}" if msg.next_step else ""
    return " ".join(x for x in (cause, step) if x) or None


def context_lines(msg: AlertMessage) -> list[str]:
    """Since when, and what is likely and next: the lines between the body and the footer."""
    return [x for x in (_since_line(msg), _next_line(msg)) if x]


def footer(msg: AlertMessage) -> str:
    """ "shop-api · commit 4f2a9c1 · phase 0-6h, every 15m · incident #7 · warning" """
    parts = [msg.app]
    if msg.commit:
        parts.append(f"commit {msg.commit[:SHORT_COMMIT]}")
    if msg.phase:
        parts.append(f"phase {msg.phase}")
    if msg.incident_id is not None and msg.incident_id > 0:
        # a negative id is provisional: the incident opened while the store could not be
        # written (healer/backlog.py) and has no number yet
        parts.append(f"incident #{msg.incident_id}")
    parts.append(msg.severity.name.lower())
    return " · ".join(parts)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a marker where it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATED))] + TRUNCATED


def item_tail(i: Alert) -> str:
    """What follows another event's title in a message: " — " and its detail's first line."""
    first = i.detail.strip().splitlines()[0] if i.detail.strip() else ""
    return f" — {clip(first, 200)}" if first else ""


def item_line(i: Alert) -> str:
    """Another event of the cycle, on one line: "• Repairing: process-restart for api" """
    return f"• {label(i.event)}: {i.title}{item_tail(i)}"


def fit_escaped(raw: str, budget: int, escape: Callable[[str], str], measure: Callable[[str], int]) -> str:
    """The longest prefix of `raw` whose escaped form measures at most `budget`: a cut that
    never falls inside an entity."""
    used = 0
    for n, ch in enumerate(raw):
        used += measure(escape(ch))
        if used > budget:
            return raw[:n]
    return raw


# ---- plain text ------------------------------------------------------------------------------


def render_text(msg: AlertMessage, *, delayed: timedelta | None = None) -> str:
    """Plain text: heading, what happened, the cycle's other events, since when, next, context.

    Each channel's module renders for its own chat from the same pieces (slack.py, telegram.py).
    """
    lines = [heading(msg, delayed), *([msg.note] if msg.note else []), msg.title]
    if msg.detail.strip():
        lines.append(msg.detail.strip())
    lines += [item_line(i) for i in msg.others]
    lines += context_lines(msg)
    lines.append(footer(msg))
    return "\n".join(lines)


__all__ = [
    "LABELS",
    "NOT_RECORDED",
    "TRUNCATED",
    "AlertMessage",
    "alert_test_message",
    "clip",
    "context_lines",
    "delay_of",
    "fit_escaped",
    "footer",
    "heading",
    "item_line",
    "item_tail",
    "label",
    "render_text",
    "rollback_countdown",
    "rollback_failure_title",
    "watching_after_repair",
]
