"""Logging for the whole program: one JSON line per event on stderr, secrets redacted (I/O).

Every library logs through the stdlib, so redaction lives in one `logging.Filter` installed on
the handlers: it sees the records of every logger, healer's and the libraries' (httpx logs the
Telegram token inside request URLs; slack-sdk logs the webhook URL at DEBUG). The filter uses
the process-wide redactor of healer/redact.py, the same one that cleans stored and sent text.

    setup_logging("info", secrets=[...])         # once, at start
    log_event(log, "repair.started", kind="redis-flush")
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from healer.redact import REDACTOR, Redactor, add_secrets, redact

if TYPE_CHECKING:
    from healer.config import Config, Secret

# Redactor, redact and add_secrets live in healer.redact (one redactor for logs, the store,
# chat and command output); they are named here too for the modules that log.
__all__ = [
    "EVENT_ATTR",
    "FIELDS_ATTR",
    "QUIET_LOGGERS",
    "JsonFormatter",
    "RedactingFilter",
    "Redactor",
    "SafeStreamHandler",
    "add_secrets",
    "known_secrets",
    "log_event",
    "redact",
    "setup_logging",
]

QUIET_LOGGERS = ("httpx", "httpcore", "slack_sdk", "telegram", "urllib3", "asyncio")
FIELDS_ATTR = "healer_fields"
EVENT_ATTR = "healer_event"


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, fields and traceback; drops nothing."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or REDACTOR

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
    from healer.config import Secret
    from healer.redact import env_values

    return [Secret(v) for v in env_values(config, os.environ)]
