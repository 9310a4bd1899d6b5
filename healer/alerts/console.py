"""The log channel: an alert written as one log event (I/O, through logging).

Always available, so an alert is never only in the outbox: whatever the chat channels do, the
process manager's journal has it. Its minimum severity is `[alerts.log] min_severity`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from healer.alerts.message import AlertMessage, render_text
from healer.config import ChannelSection, format_elapsed
from healer.logging import log_event
from healer.model import Severity

log = logging.getLogger("healer.alert")

_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.ERROR,
}


class Section(ChannelSection):
    """`[alerts.log]`: only the minimum severity; the channel is there without the table too."""


@dataclass(frozen=True, slots=True)
class LogChannel:
    """Writes `{"event": "alert", "alert": "<event>", "severity": ..., "text": ...}`."""

    min_severity: Severity = Severity.INFO
    name: str = "log"
    kind: str = "log"

    async def send(self, message: AlertMessage, *, delayed: timedelta | None = None) -> None:
        log_event(
            log,
            "alert",
            level=_LEVELS[message.severity],
            alert=message.event,
            events=[i.event for i in message.items],
            severity=message.severity.name.lower(),
            incident_id=message.incident_id,
            title=message.title,
            delayed=None if delayed is None else format_elapsed(delayed),
            text=render_text(message, delayed=delayed),
        )


def channels(section: Section, *, timeout: timedelta, buttons: bool = False) -> list[LogChannel]:
    """The log channel for `[alerts.log]` (a log line takes no `timeout`, and has no `buttons`)."""
    return [LogChannel(section.severity)]
