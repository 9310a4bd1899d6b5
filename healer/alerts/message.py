"""What a person on a phone reads: the alert message and its renderings (pure).

An `AlertMessage` is what the pipeline stores in the outbox: the events of one cycle that go
to one group of channels, plus the context a reader needs (app, commit, phase, since when,
what healer will do next). Rendering happens at send time, so a late delivery can say so.

    render_text(msg)      plain text, for the log and as the chat fallback
    slack_payload(msg)    Slack Block Kit blocks + a plain-text fallback
    telegram_text(msg)    Telegram HTML (parse_mode=HTML), escaped, under 4096 characters
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from healer.config import format_elapsed
from healer.model import Alert, Severity

# ---- events ----------------------------------------------------------------------------------

INCIDENT_OPENED = "incident.opened"
INCIDENT_REMINDER = "incident.reminder"
INCIDENT_RESOLVED = "incident.resolved"
INCIDENT_FLAPPING = "incident.flapping"
META_CHANNEL_FAILING = "meta.channel_failing"
META_STORE_FAILED = "meta.store_failed"
META_STORE_RECOVERED = "meta.store_recovered"
META_CLOCK_STEP = "meta.clock_step"
TEST = "test"

# What a message sent while the state store could not be written says about itself: no row
# in the outbox, no history, no dedup memory beyond this process (it is written later).
NOT_RECORDED = "[not recorded: the state store cannot be written]"

# event -> the words a reader sees first
LABELS: Mapping[str, str] = {
    INCIDENT_OPENED: "Incident opened",
    INCIDENT_REMINDER: "Still failing",
    INCIDENT_RESOLVED: "Resolved",
    INCIDENT_FLAPPING: "Flapping",
    "repair.started": "Repairing",
    "repair.succeeded": "Repaired",
    "repair.failed": "Repair failed",
    "repair.capped": "Repair cap reached",
    "rollback.started": "Rolling back",
    "rollback.succeeded": "Rolled back",
    "rollback.failed": "Rollback failed",
    "healer.started": "Watching",
    "healer.stopped": "Stopped watching",
    "healer.held": "Waiting for a person",
    "phase.changed": "Phase changed",
    "pause.started": "Paused",
    "pause.ended": "Resumed",
    "deploy.bad": "Known-bad commit deployed",
    "meta.loop_behind": "healer is behind",
    META_STORE_FAILED: "healer cannot write its state",
    META_STORE_RECOVERED: "healer writes its state again",
    META_CLOCK_STEP: "The clock jumped",
    META_CHANNEL_FAILING: "Alert channel failing",
    TEST: "Test alert",
}
EVENTS = frozenset(LABELS)
META_EVENTS = frozenset(e for e in EVENTS if e.startswith("meta."))
_GOOD_EVENTS = frozenset({INCIDENT_RESOLVED, "repair.succeeded", "rollback.succeeded", "pause.ended"})
_ICONS = {Severity.CRITICAL: "🔴", Severity.WARNING: "🟠", Severity.INFO: "🔵"}
_GOOD_ICON = "✅"

# Telegram's limit for one message, after entity parsing; the same number as
# telegram.constants.MessageLimit.MAX_TEXT_LENGTH (not imported: this module is pure).
TELEGRAM_MAX_TEXT = 4096
# Block Kit limits: https://api.slack.com/reference/block-kit/blocks
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_TEXT_MAX = 4000  # the fallback; Slack itself cuts at 40,000
DELAYED_AFTER = timedelta(minutes=1)
TRUNCATED = "… [truncated]"
SHORT_COMMIT = 7


def label(event: str) -> str:
    """The reader's words for an event; unknown events show as written."""
    return LABELS.get(event, event)


# ---- the message -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertItem:
    """One event of a cycle, as the pipeline kept it."""

    event: str
    severity: Severity
    title: str
    detail: str = ""
    incident_id: int | None = None
    bypass_dedup: bool = False

    @classmethod
    def from_intent(cls, a: Alert) -> AlertItem:
        return cls(a.event, a.severity, a.title, a.detail, a.incident_id, a.bypass_dedup)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "severity": self.severity.name.lower(),
            "title": self.title,
            "detail": self.detail,
            "incident_id": self.incident_id,
            "bypass_dedup": self.bypass_dedup,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AlertItem:
        inc = d.get("incident_id")
        return cls(
            event=str(d["event"]),
            severity=Severity[str(d["severity"]).upper()],
            title=str(d["title"]),
            detail=str(d.get("detail") or ""),
            incident_id=None if inc is None else int(inc),
            bypass_dedup=bool(d.get("bypass_dedup", False)),
        )


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """The events of one cycle for one group of channels, with what a reader needs around them.

    The headline is the most severe item (the first of equals); the others follow in cycle order.
    """

    items: tuple[AlertItem, ...]
    app: str
    created_at: datetime
    commit: str | None = None
    phase: str | None = None
    since: datetime | None = None  # when the open incident began
    next_step: str | None = None  # "rollback in 2 more failing cycles"
    cause: str | None = None  # the likely cause of the failing cycle: "dependency redis", "deploy", ...
    observe: bool = False  # healer runs in observe mode: it acts on nothing
    note: str | None = None  # a line shown under the heading: NOT_RECORDED

    def __post_init__(self) -> None:
        if not self.items:
            msg = "AlertMessage needs at least one item"
            raise ValueError(msg)

    @property
    def headline(self) -> AlertItem:
        top = max(i.severity for i in self.items)
        return next(i for i in self.items if i.severity == top)

    @property
    def event(self) -> str:
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
    def others(self) -> tuple[AlertItem, ...]:
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
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AlertMessage:
        since = d.get("since")
        return cls(
            items=tuple(AlertItem.from_json(i) for i in d["items"]),
            app=str(d["app"]),
            created_at=datetime.fromisoformat(str(d["created_at"])),
            commit=d.get("commit"),
            phase=d.get("phase"),
            since=None if since is None else datetime.fromisoformat(str(since)),
            next_step=d.get("next_step"),
            cause=d.get("cause"),
            observe=bool(d.get("observe", False)),
            note=d.get("note"),
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
    item = AlertItem(TEST, Severity.INFO, "healer can reach this channel", "No action needed.", bypass_dedup=True)
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


def _delayed_prefix(delayed: timedelta | None) -> str:
    return f"[delayed {format_elapsed(delayed)}] " if delayed else ""


def _icon(msg: AlertMessage) -> str:
    return _GOOD_ICON if msg.event in _GOOD_EVENTS else _ICONS[msg.severity]


def _heading(msg: AlertMessage) -> str:
    obs = " (observe mode)" if msg.observe else ""
    return f"{_icon(msg)} {msg.app}: {label(msg.event)}{obs}"


def _since_line(msg: AlertMessage) -> str | None:
    if msg.since is None:
        return None
    at = msg.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Since {at} ({format_elapsed(msg.created_at - msg.since)})"


def _next_line(msg: AlertMessage) -> str | None:
    """ "Likely cause: dependency redis. Next: no rollback or restart loop while redis fails: telling people" """
    cause = f"Likely cause: {msg.cause}." if msg.cause and "likely cause" not in msg.title else ""
    step = f"Next: {_clip(msg.next_step, 300)}" if msg.next_step else ""
    return " ".join(x for x in (cause, step) if x) or None


def _footer(msg: AlertMessage) -> str:
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


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATED))] + TRUNCATED


def _item_line(i: AlertItem) -> str:
    first = i.detail.strip().splitlines()[0] if i.detail.strip() else ""
    tail = f" — {_clip(first, 200)}" if first else ""
    return f"• {label(i.event)}: {i.title}{tail}"


# ---- plain text ------------------------------------------------------------------------------


def render_text(msg: AlertMessage, *, delayed: timedelta | None = None) -> str:
    """Plain text: heading, what happened, the cycle's other events, since when, next, context."""
    lines = [_delayed_prefix(delayed) + _heading(msg), *([msg.note] if msg.note else []), msg.title]
    if msg.detail.strip():
        lines.append(msg.detail.strip())
    lines += [_item_line(i) for i in msg.others]
    lines += [x for x in (_since_line(msg), _next_line(msg)) if x]
    lines.append(_footer(msg))
    return "\n".join(lines)


# ---- Slack -----------------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn treats as control characters.

    https://api.slack.com/reference/surfaces/formatting#escaping — and only those three.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_clip(raw: str, limit: int) -> str:
    """Escape `raw` and keep the result within `limit` characters, never cutting an entity."""
    out = slack_escape(raw)
    if len(out) <= limit:
        return out
    cut = _fit_escaped(raw, limit - len(TRUNCATED), slack_escape, len)
    return slack_escape(cut) + TRUNCATED


def slack_payload(msg: AlertMessage, *, delayed: timedelta | None = None) -> dict[str, Any]:
    """Block Kit blocks (header, what happened, other events, context) + a `text` fallback."""
    head = _clip(_delayed_prefix(delayed) + _heading(msg), SLACK_HEADER_MAX)
    main = f"*{slack_escape(_clip(msg.title, 500))}*"
    if msg.note:
        main = f"_{slack_escape(msg.note)}_\n{main}"
    if msg.detail.strip():
        room = SLACK_SECTION_MAX - len(main) - 1
        main += "\n" + _slack_clip(msg.detail.strip(), room)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": main}},
    ]
    if msg.others:
        listed = "\n".join(_item_line(i) for i in msg.others)
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _slack_clip(listed, SLACK_SECTION_MAX)},
            }
        )
    context = [x for x in (_since_line(msg), _next_line(msg)) if x] + [_footer(msg)]
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _slack_clip(c, 2000)} for c in context],
        }
    )
    return {"text": _clip(render_text(msg, delayed=delayed), SLACK_TEXT_MAX), "blocks": blocks}


# ---- Telegram --------------------------------------------------------------------------------


def telegram_length(text: str) -> int:
    """Telegram counts UTF-16 code units; an emoji is two."""
    return len(text.encode("utf-16-le")) // 2


def _tg_escape(text: str) -> str:
    # Telegram's HTML mode knows &lt; &gt; &amp; &quot; and numeric entities:
    # https://core.telegram.org/bots/api#html-style
    return html.escape(text, quote=True)


def _fit_escaped(raw: str, budget: int, escape: Callable[[str], str], measure: Callable[[str], int]) -> str:
    """The longest prefix of `raw` whose escaped form measures at most `budget`."""
    used = 0
    for n, ch in enumerate(raw):
        used += measure(escape(ch))
        if used > budget:
            return raw[:n]
    return raw


@dataclass(frozen=True, slots=True)
class _Line:
    pre: str  # markup before the text (already HTML)
    text: str  # raw text, escaped when rendered
    post: str = ""  # markup after the text, closing what `pre` opened

    def html(self) -> str:
        return self.pre + _tg_escape(self.text) + self.post


def telegram_text(msg: AlertMessage, *, delayed: timedelta | None = None) -> str:
    """HTML for parse_mode=HTML: every piece of text escaped, tags balanced, at most 4096 long.

    The heading and the context lines are always kept; the body (what happened, the cycle's
    other events) is cut to fit, never inside an entity or a tag, with a marker at the cut.
    """
    head = [_Line("<b>", _delayed_prefix(delayed) + _heading(msg), "</b>")]
    if msg.note:
        head.append(_Line("<i>", msg.note, "</i>"))
    body = [_Line("<b>", msg.title, "</b>")]
    if msg.detail.strip():
        body.append(_Line("", msg.detail.strip()))
    for i in msg.others:
        first = i.detail.strip().splitlines()[0] if i.detail.strip() else ""
        tail = f" — {_clip(first, 200)}" if first else ""
        body.append(_Line(f"• <b>{_tg_escape(label(i.event))}:</b> ", i.title + tail))
    tail_lines = [_Line("<i>", x, "</i>") for x in (_since_line(msg), _next_line(msg)) if x]
    tail_lines.append(_Line("<code>", _footer(msg), "</code>"))

    fixed = "\n".join(x.html() for x in head + tail_lines)
    full = "\n".join(x.html() for x in head + body + tail_lines)
    if telegram_length(full) <= TELEGRAM_MAX_TEXT:
        return full
    marker = _tg_escape(TRUNCATED)
    budget = TELEGRAM_MAX_TEXT - telegram_length(fixed) - 2 - telegram_length(marker)  # 2 newlines
    kept: list[str] = []
    for line in body:
        cost = telegram_length(line.html()) + (1 if kept else 0)
        if cost <= budget:
            kept.append(line.html())
            budget -= cost
            continue
        room = budget - (1 if kept else 0) - telegram_length(line.pre + line.post)
        if room > 0:
            part = _fit_escaped(line.text, room, _tg_escape, telegram_length)
            if part:
                kept.append(line.pre + _tg_escape(part) + line.post)
        break
    text_body = "\n".join(kept) + marker
    return "\n".join([*(x.html() for x in head), text_body, *(x.html() for x in tail_lines)])


__all__ = [
    "EVENTS",
    "META_CLOCK_STEP",
    "META_EVENTS",
    "META_STORE_FAILED",
    "META_STORE_RECOVERED",
    "NOT_RECORDED",
    "TELEGRAM_MAX_TEXT",
    "AlertItem",
    "AlertMessage",
    "alert_test_message",
    "delay_of",
    "label",
    "render_text",
    "rollback_countdown",
    "rollback_failure_title",
    "slack_payload",
    "telegram_text",
    "watching_after_repair",
]
