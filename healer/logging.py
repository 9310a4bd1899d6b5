"""Logging for the whole program: one JSON line per event on stderr, secrets redacted (I/O).

Every library logs through the stdlib, so redaction lives in one `logging.Filter` installed on
the handlers: it sees the records of every logger, healer's and the libraries' (httpx logs the
Telegram token inside request URLs; slack-sdk logs the webhook URL at DEBUG).

    setup_logging("info", secrets=[...])         # once, at start
    log_event(log, "repair.started", kind="redis-flush")
    redact("text that may hold a secret")        # for error messages and alert text
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from healer.config import Config, Secret

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would blank out ordinary words; they are not secrets worth the name
QUIET_LOGGERS = ("httpx", "httpcore", "slack_sdk", "telegram", "urllib3", "asyncio")
FIELDS_ATTR = "healer_fields"
EVENT_ATTR = "healer_event"

# Shapes of secrets we redact even when nobody told us their value.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a Telegram bot token inside a Bot API URL: .../bot123456:AAE.../sendMessage
    (re.compile(r"bot\d+:[A-Za-z0-9_-]+"), "bot" + MASK),
    # a bare Telegram bot token: 123456789:AAE... (35 characters after the colon)
    (re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}"), MASK),
    # a Slack incoming webhook path
    (
        re.compile(r"hooks\.slack\.com/(services|workflows|triggers)/[^\s\"'<>]+"),
        r"hooks.slack.com/\1/" + MASK,
    ),
    # Slack tokens: xoxb- (bot), xoxp- (user), xapp- (app) ...
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]+"), MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), MASK),
    # the password part of a URL: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + MASK + "@"),
)


class Redactor:
    """Replaces known secret values, and anything shaped like a token or webhook, with ***."""

    def __init__(self, secrets: Iterable[Secret | str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: Secret | str | None) -> None:
        """Learn more secret values (and their URL-quoted spellings)."""
        found = set(self._values)
        before = len(found)
        for s in secrets:
            if s is None:
                continue
            value = s if isinstance(s, str) else s.reveal()
            for v in _variants(value):
                if len(v) >= MIN_SECRET_LENGTH:
                    found.add(v)
        if len(found) == before:
            return  # nothing new: channels call this before every send
        with self._lock:
            # longest first, so a secret that contains another is replaced whole
            self._values = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def value(self, v: Any) -> Any:
        """Redact strings inside a JSON-like value."""
        if isinstance(v, str):
            return self(v)
        if isinstance(v, Mapping):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        return v


def _variants(value: str) -> set[str]:
    value = value.strip()
    if not value:
        return set()
    out = {value, quote(value, safe=""), quote(value, safe="/:")}
    # a URL's password also shows up on its own (psycopg, redis errors)
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        out.add(password)
    return out


_REDACTOR = Redactor()


def redact(text: str) -> str:
    """`text` with every secret known to this process (and every token-shaped string) masked."""
    return _REDACTOR(text)


def add_secrets(*secrets: Secret | str | None) -> None:
    """Tell the process-wide redactor about more secret values."""
    _REDACTOR.add(*secrets)


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, fields and traceback; drops nothing."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or _REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = r(message)
        record.args = None
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, Mapping):
            setattr(record, FIELDS_ATTR, r.value(fields))
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = r(record.exc_text)
            # the formatter would re-render exc_info only when exc_text is empty; keep the type
            # for those who look, but the traceback text is the redacted one
        if record.stack_info:
            record.stack_info = r(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: {"ts", "level", "logger", "event", ...fields}."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, EVENT_ATTR, None)
        if event:
            out["event"] = event
        else:
            out["event"] = "log"
            out["msg"] = record.getMessage()
        fields = getattr(record, FIELDS_ATTR, None)
        if isinstance(fields, Mapping):
            for k, v in fields.items():
                out.setdefault(str(k), v)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


class SafeStreamHandler(logging.StreamHandler[TextIO]):
    """A stream handler that never raises: a full disk or closed pipe loses a line, not the loop."""

    def handleError(self, record: logging.LogRecord) -> None:
        return


def log_event(
    logger: logging.Logger,
    event: str,
    /,
    *,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Log a dotted event with fields: `log_event(log, "repair.started", kind="redis-flush")`."""
    if logger.isEnabledFor(level):
        extra = {EVENT_ATTR: event, FIELDS_ATTR: fields}
        logger.log(level, event, exc_info=exc_info, extra=extra)


_HANDLER_MARK = "_healer_handler"


def setup_logging(
    level: str | int = "info",
    secrets: Iterable[Secret | str | None] = (),
    *,
    stream: TextIO | None = None,
) -> RedactingFilter:
    """Configure the root logger once: JSON lines on stderr, secrets redacted, libraries quiet.

    1. Teach the process-wide redactor the given secrets.
    2. Replace any handler a previous call installed with one SafeStreamHandler + JsonFormatter
       + RedactingFilter.
    3. Set the chatty libraries (httpx, httpcore, slack_sdk, telegram) to WARNING.

    Returns the filter, to install on any other handler (a test's capture, a file).
    """
    add_secrets(*secrets)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    handler = SafeStreamHandler(stream or sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter())
    flt = RedactingFilter()
    handler.addFilter(flt)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return flt


def known_secrets(config: Config) -> list[Secret]:
    """Every secret healer.toml points at through an `*_env` key, read from the environment."""
    from healer.config import read_secret

    names: list[str | None] = []
    a = config.alerts
    if a.slack:
        names += [a.slack.webhook_url_env, a.slack.token_env]
    if a.telegram:
        names.append(a.telegram.token_env)
    if config.redis:
        names.append(config.redis.password_env)
    if config.postgres:
        names.append(config.postgres.dsn_env)
    names.append(config.heartbeat.url_env)
    for c in config.checks:
        names.append(getattr(c, "dsn_env", None))
    out: list[Secret] = []
    for n in names:
        s = read_secret(n)
        if s is not None:
            out.append(s)
    return out
