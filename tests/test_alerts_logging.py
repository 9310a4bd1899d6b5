"""healer.logging: JSON lines, one redacting filter for all loggers, a handler that never raises."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

import healer.logging as hlog
from healer.config import Secret
from healer.logging import RedactingFilter, Redactor, log_event, redact, setup_logging
from healer.redact import MASK

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
WEBHOOK = "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging changes the root logger and library levels: put them back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in hlog.QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(x) for x in stream.getvalue().splitlines() if x.strip()]


def test_one_json_line_per_event_with_fields() -> None:
    """log_event writes {"ts", "level", "logger", "event", ...fields} on one line."""
    out = io.StringIO()
    setup_logging("debug", stream=out)
    log_event(logging.getLogger("healer.loop"), "repair.started", kind="redis-flush", attempt=2)
    [line] = lines(out)
    assert line["event"] == "repair.started"
    assert line["level"] == "info"
    assert line["logger"] == "healer.loop"
    assert line["kind"] == "redis-flush" and line["attempt"] == 2
    assert str(line["ts"]).endswith("+00:00")


def test_known_secrets_and_token_shapes_are_redacted_everywhere_in_a_record() -> None:
    """Message, %-args, fields and traceback: the token and the webhook URL are masked."""
    out = io.StringIO()
    setup_logging("debug", [Secret(TOKEN), Secret(WEBHOOK)], stream=out)
    log = logging.getLogger("some.library")
    log.info("POST https://api.telegram.org/bot%s/sendMessage", TOKEN)
    log_event(log, "alerts.delivery_failed", url=WEBHOOK, nested={"u": [WEBHOOK]})
    try:
        raise RuntimeError(f"The token `{TOKEN}` was rejected by the server.")
    except RuntimeError:
        log.exception("failed")
    text = out.getvalue()
    assert TOKEN not in text and "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in text
    assert WEBHOOK not in text and "XXXXXXXXXXXXXXXXXXXXXXXX" not in text
    assert "***" in text
    assert len(lines(out)) == 3


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        pytest.param(
            "GET https://api.telegram.org/bot987654:ZZZsecretZZZ/getMe",
            "ZZZsecretZZZ",
            id="bot-url",
        ),
        pytest.param(
            "token 987654321:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA here",
            "AAAAAAAAAAAAAAAAAAAAAAAAA",
            id="bare-token",
        ),
        pytest.param("url https://hooks.slack.com/services/T1/B2/abc123", "abc123", id="webhook"),
        pytest.param("Authorization: Bearer xoxb-1111-2222-abcdef", "abcdef", id="slack-token"),
        pytest.param("dsn postgresql://shop:hunter22@db:5432/shop", "hunter22", id="url-password"),
    ],
)
def test_secret_shapes_are_redacted_without_being_told(text: str, leak: str) -> None:
    """Telegram tokens, Slack webhooks and tokens, URL passwords: masked by pattern."""
    assert leak not in redact(text)


def test_library_loggers_are_quiet_but_the_filter_covers_them_at_debug() -> None:
    """httpx is set to WARNING; back at DEBUG, its lines are still redacted by the filter."""
    out = io.StringIO()
    setup_logging("debug", [TOKEN], stream=out)
    assert logging.getLogger("httpx").level == logging.WARNING
    assert logging.getLogger("slack_sdk").level == logging.WARNING
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1:1/bot%s/sendMessage "200 OK"', TOKEN)
    assert TOKEN not in out.getvalue()
    assert f"bot{MASK}" in out.getvalue() or f"/{MASK}/" in out.getvalue()


def test_a_broken_stream_never_raises() -> None:
    """A closed stderr (a full disk, a closed pipe) loses the line; logging goes on."""
    out = io.StringIO()
    setup_logging("info", stream=out)
    out.close()
    log_event(logging.getLogger("healer"), "cycle.done", ok=True)  # must not raise


def test_setup_twice_keeps_one_handler() -> None:
    """Calling setup_logging again replaces its handler instead of doubling every line."""
    out = io.StringIO()
    setup_logging("info", stream=io.StringIO())
    setup_logging("info", stream=out)
    log_event(logging.getLogger("healer"), "x")
    assert len(lines(out)) == 1
    assert sum(1 for h in logging.getLogger().handlers if getattr(h, "_healer_handler", False)) == 1


def test_redactor_prefers_the_longest_secret() -> None:
    """A secret that contains another is masked whole."""
    r = Redactor(["abcd", "abcdefgh"])
    assert r("x abcdefgh y") == f"x {MASK} y"
    flt = RedactingFilter(r)
    rec = logging.LogRecord("n", logging.INFO, __file__, 1, "v=%s", ("abcdefgh",), None)
    assert flt.filter(rec) and rec.getMessage() == f"v={MASK}"
