"""Rendering alert messages for a person on a phone: text, Slack blocks, Telegram HTML (pure)."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from healer.alerts.message import (
    LABELS,
    AlertMessage,
    delay_of,
    render_text,
    rollback_countdown,
    rollback_failure_title,
    watching_after_repair,
)
from healer.alerts.slack import slack_payload
from healer.alerts.telegram import TELEGRAM_MAX_TEXT, telegram_length, telegram_text
from healer.model import Alert, Event, Severity

NOW = datetime(2026, 3, 1, 14, 15, tzinfo=UTC)


def message(*items: Alert, **kw: object) -> AlertMessage:
    base: dict[str, object] = {
        "app": "shop-api",
        "created_at": NOW,
        "commit": "4f2a9c1d0e5b6a7f",
        "phase": "0-6h, every 15m",
        "since": NOW - timedelta(minutes=12),
        "next_step": "rollback in 2 more failing cycles",
    }
    base.update(kw)
    return AlertMessage(items=items, **base)  # type: ignore[arg-type]


OPENED = Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api is failing: HTTP 503", "GET /health -> 503 (3/3)", 7)
REPAIR = Alert(Event.REPAIR_STARTED, Severity.WARNING, "process-restart for api", "", 7)
FAILED = Alert(Event.REPAIR_FAILED, Severity.CRITICAL, "process-restart did not fix api", "still 503", 7)


class _Tags(HTMLParser):
    """Collects the tags of Telegram HTML and checks they are balanced."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.seen: set[str] = set()
        self.text = ""
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.stack.append(tag)
        self.seen.add(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False

    def handle_data(self, data: str) -> None:
        self.text += data


def parse_html(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    p.close()
    return p


def test_text_says_what_broke_since_when_and_what_is_next() -> None:
    """The plain text names the app, the short commit, the phase, since when and the next step."""
    text = render_text(message(OPENED))
    assert "shop-api" in text
    assert "Incident opened" in text
    assert "api is failing: HTTP 503" in text
    assert "GET /health -> 503" in text
    assert "commit 4f2a9c1" in text and "4f2a9c1d" not in text
    assert "phase 0-6h, every 15m" in text
    assert "Since 2026-03-01 14:03 UTC (12m)" in text
    assert "Next: rollback in 2 more failing cycles" in text
    assert "incident #7" in text


def test_headline_is_the_most_severe_event_and_others_follow_in_order() -> None:
    """Three events of a cycle: the critical one leads, the other two are listed in cycle order."""
    msg = message(OPENED, REPAIR, FAILED)
    assert msg.event == "repair.failed"
    assert msg.severity is Severity.CRITICAL
    text = render_text(msg)
    lines = text.splitlines()
    assert "Repair failed" in lines[0]
    assert text.index("• Incident opened") < text.index("• Repairing")


def test_delayed_delivery_is_marked() -> None:
    """A message delivered more than a minute late starts with [delayed 12m]."""
    msg = message(OPENED)
    late = delay_of(msg, NOW + timedelta(minutes=12))
    assert late == timedelta(minutes=12)
    assert delay_of(msg, NOW + timedelta(seconds=30)) is None
    assert render_text(msg, delayed=late).startswith("[delayed 12m] ")
    assert slack_payload(msg, delayed=late)["text"].startswith("[delayed 12m] ")
    assert "[delayed 12m]" in slack_payload(msg, delayed=late)["blocks"][0]["text"]["text"]
    assert telegram_text(msg, delayed=late).startswith("<b>[delayed 12m] ")


def test_slack_payload_has_blocks_and_a_text_fallback() -> None:
    """Header, section, the cycle's other events, context; mrkdwn escapes & < > only."""
    p = slack_payload(message(OPENED, REPAIR))
    types = [b["type"] for b in p["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert p["blocks"][0]["text"]["type"] == "plain_text"
    assert len(p["blocks"][0]["text"]["text"]) <= 150
    assert "api is failing" in p["blocks"][1]["text"]["text"]
    assert "Repairing" in p["blocks"][2]["text"]["text"]
    context = " ".join(e["text"] for e in p["blocks"][3]["elements"])
    assert "rollback in 2 more failing cycles" in context and "4f2a9c1" in context
    assert "api is failing" in p["text"]


@pytest.mark.parametrize(
    "title",
    [
        pytest.param("<b>&", id="html"),
        pytest.param("api </b><script>alert(1)</script> & <!channel>", id="script-and-mention"),
        pytest.param("GET /a?x=1&y=<2> \"q\" 'q'", id="query-string"),
    ],
)
def test_markup_in_endpoint_names_is_escaped(title: str) -> None:
    """Markup characters in titles arrive as text: escaped for Slack mrkdwn and Telegram HTML."""
    item = Alert(Event.INCIDENT_OPENED, Severity.WARNING, title, f"detail {title}", 1)
    p = slack_payload(message(item))
    section = p["blocks"][1]["text"]["text"]
    assert "<" not in section and ">" not in section
    assert section.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").count(title) == 2
    html = telegram_text(message(item))
    parsed = parse_html(html)
    assert parsed.balanced
    assert parsed.seen <= {"b", "i", "code"}
    assert parsed.text.count(title) == 2


def test_telegram_escapes_title_with_tags_and_ampersand() -> None:
    """A title `<b>&` is sent as `&lt;b&gt;&amp;`."""
    item = Alert(Event.INCIDENT_OPENED, Severity.WARNING, "<b>&", "", 1)
    assert "&lt;b&gt;&amp;" in telegram_text(message(item))


@pytest.mark.parametrize(
    "detail",
    [
        pytest.param("x" * 10_000, id="10k-plain"),
        pytest.param("<&>" * 4000, id="12k-all-escaped"),
        pytest.param("🔥" * 5000, id="emoji-utf16"),
        pytest.param("line\n" * 3000, id="many-lines"),
    ],
)
def test_telegram_text_stays_under_4096_with_a_marker(detail: str) -> None:
    """A 10,000-character failure is cut to fit 4096 UTF-16 units, at a marker, tags balanced."""
    msg = message(Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api <down>", detail, 1), REPAIR)
    html = telegram_text(msg)
    assert telegram_length(html) <= TELEGRAM_MAX_TEXT
    assert len(html) <= TELEGRAM_MAX_TEXT
    assert "[truncated]" in html
    parsed = parse_html(html)
    assert parsed.balanced
    assert "Next: rollback in 2 more failing cycles" in parsed.text  # the context survives the cut
    assert "&lt;down&gt;" in html


def test_slack_section_stays_within_block_kit_limits() -> None:
    """A 10,000-character detail is cut to Slack's 3000-character section limit, escaped whole."""
    msg = message(Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api", "<&>" * 4000, 1))
    p = slack_payload(msg)
    section = p["blocks"][1]["text"]["text"]
    assert len(section) <= 3000
    assert section.endswith("[truncated]")
    body = section.removesuffix("… [truncated]")
    assert "&lt;&amp;&gt;" in body
    assert re.search(r"&[a-z]*$", body) is None  # never cut inside an entity
    assert len(p["text"]) <= 4000


def test_message_round_trips_through_json() -> None:
    """What the outbox stores is what it reads back."""
    msg = message(OPENED, FAILED, observe=True)
    assert AlertMessage.from_json(msg.to_json()) == msg


def test_every_event_has_the_words_a_reader_sees_first() -> None:
    """A heading never shows a raw dotted name: every Event has a label, and only Events do."""
    assert set(LABELS) == set(Event)
    for event in Event:
        heading = render_text(message(Alert(event, Severity.INFO, "t"))).splitlines()[0]
        assert heading.endswith(f"shop-api: {LABELS[event]}")


def test_healer_emits_no_event_as_a_bare_string() -> None:
    """Every Alert healer builds names an Event member (mypy checks the type; this, the spelling)."""
    root = Path(__file__).parent.parent / "healer"
    bare = [
        f"{path.relative_to(root)}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("Alert", "_announce")
        and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and "." in a.value for a in node.args[:2])
    ]
    assert bare == []


def test_stored_event_names_read_back_as_events() -> None:
    """An item written before events were an enum reads back as the same Event."""
    stored = {"event": "deploy.tagged", "severity": "info", "title": "stable-1", "detail": "", "incident_id": None}
    item = Alert.from_json(stored)
    assert item.event is Event.DEPLOY_TAGGED
    assert item.to_json() == {**stored, "bypass_dedup": False}


@pytest.mark.parametrize(
    ("failures", "after", "observe", "expected"),
    [
        pytest.param(3, 5, False, "rollback in 2 more failing cycles", id="two-left"),
        pytest.param(4, 5, False, "rollback in 1 more failing cycle", id="one-left"),
        pytest.param(5, 5, False, "rollback now", id="now"),
        pytest.param(1, 5, True, "would roll back in 4 more failing cycles", id="observe"),
    ],
)
def test_rollback_countdown(failures: int, after: int, observe: bool, expected: str) -> None:
    """The next step while failing counts down to the rollback."""
    assert rollback_countdown(failures, after, observe=observe) == expected


@pytest.mark.parametrize(
    ("recover_after", "expected"),
    [
        pytest.param(2, "watching: the incident resolves after 2 passing cycles", id="two"),
        pytest.param(1, "watching: the incident resolves after 1 passing cycle", id="one"),
    ],
)
def test_after_a_repair_that_worked_the_next_step_is_watching(recover_after: int, expected: str) -> None:
    """No rollback countdown right after "Repaired": the incident resolves on passing cycles."""
    assert watching_after_repair(recover_after) == expected
    assert "rollback" not in expected


@pytest.mark.parametrize(
    ("commands_failed", "restart", "expected"),
    [
        pytest.param(True, False, "Rollback to stable-2: after command failed", id="after-command"),
        pytest.param(True, True, "Rollback to stable-2: the restart through [process] failed", id="restart"),
        pytest.param(False, False, "stable-2 is not healthy either", id="target-unhealthy"),
    ],
)
def test_a_failed_rollback_says_what_failed(commands_failed: bool, restart: bool, expected: str) -> None:
    """An `after` command that failed is not the target failing its checks."""
    assert rollback_failure_title("stable-2", commands_failed=commands_failed, restart=restart) == expected


def test_a_message_needs_an_item() -> None:
    """An empty message is a bug, not an alert."""
    with pytest.raises(ValueError, match="at least one item"):
        AlertMessage(items=(), app="a", created_at=NOW)
