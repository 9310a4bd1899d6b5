"""The pipeline's shell: the channels from healer.toml, the outbox, and `healer alert test` (I/O).

The loop's view of it:

    alerts = Alerts(config, clock=clock)                    # opens the outbox in config.state_db
    task = tg.create_task(alerts.run(stop))                  # the sender, beside the loop
    ...each cycle:
    await alerts.submit(cycle_alert_intents, CycleContext(...), now)
    ...at shutdown (after submitting healer.stopped):
    left = await alerts.flush(timedelta(seconds=5)); alerts.close()

When the outbox cannot be written (a full disk), `submit` sends the cycle's messages straight
to their channels, marked NOT_RECORDED, and keeps them (bounded) in memory: they count for
dedup, and are written, as delivered or as pending for a channel that did not take them,
at the first submit that finds the store writable again.

`healer history` reads `alerts.history(since)` (or `Outbox(config.shared_db).history(since)`).
The channels are config.CHANNELS' modules (healer/alerts/__init__.py); none imports its chat
SDK until it sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from healer.alerts.console import LogChannel
from healer.alerts.message import (
    NOT_RECORDED,
    AlertMessage,
    alert_test_message,
    render_text,
    rollback_countdown,
)
from healer.alerts.outbox import AlertRecord, Channel, DeliveryRecord, DeliveryState, Outbox, Sender
from healer.alerts.pipeline import AlertPlan, CycleContext, Route, plan_alerts, with_remembered
from healer.chatops import is_enabled
from healer.clock import Clock, SystemClock
from healer.config import Config, channel_module
from healer.errors import DeliveryError, StoreError, UsageError
from healer.logging import add_secrets, known_secrets, log_event, redact
from healer.model import Alert

log = logging.getLogger("healer.alerts")

# Cycles of alerts sent while the outbox could not be written, kept to be written later: the
# oldest are forgotten beyond this (they were sent; only their record is lost, and logged).
MAX_UNRECORDED = 1000


@dataclass(frozen=True, slots=True)
class _Unrecorded:
    """A plan sent straight to its channels while the outbox could not be written."""

    plan: AlertPlan
    at: datetime
    delivered: tuple[frozenset[str], ...]  # per entry: the channels that took it


def configured_channels(config: Config) -> list[Channel]:
    """The channel(s) of each `[alerts.<kind>]` table, the log channel first; secrets read now.

    A channel whose environment variable is unset is still built: it fails every delivery with
    "SLACK_WEBHOOK_URL is not set" (its alerts wait in the outbox) instead of stopping healer.
    """
    buttons = is_enabled(config.chatops)  # incident alerts carry chat-ops buttons
    out: list[Channel] = []
    for kind, section in config.alerts.channels.items():
        out.extend(channel_module(kind).channels(section, timeout=config.alerts.timeout, buttons=buttons))
    return out


async def send_test(config: Config, channel: str | None = None) -> dict[str, tuple[bool, str]]:
    """Send a test alert now through each configured channel (or the one named), not via the outbox.

    Returns channel name -> (delivered, reason). An unknown name raises UsageError naming the
    configured ones.
    """
    add_secrets(*known_secrets(config))
    channels = configured_channels(config)
    if channel is not None:
        chosen = [c for c in channels if channel in (c.kind, c.name)]
        if not chosen:
            names = ", ".join(dict.fromkeys(c.kind for c in channels))
            msg = f"alert test: unknown channel {channel!r}; configured: {names}"
            raise UsageError(msg)
        channels = chosen
    message = alert_test_message(config.alert_app, datetime.now(UTC))
    limit = config.alerts.timeout.total_seconds() + 2.0

    async def one(c: Channel) -> tuple[bool, str]:
        try:
            await asyncio.wait_for(c.send(message), timeout=limit)
        except DeliveryError as e:
            return False, redact(str(e))
        except TimeoutError:
            return False, f"{c.name}: no answer within {limit:g}s"
        except Exception as e:  # report it like any failure; the command must not crash
            return False, redact(f"{c.name}: {type(e).__name__}: {e}")
        return True, "delivered"

    results = await asyncio.gather(*(one(c) for c in channels))
    return {c.name: r for c, r in zip(channels, results, strict=True)}


class Alerts:
    """The pipeline's shell: plans each cycle's alerts into the outbox; its sender delivers them."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        channels: Sequence[Channel] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        add_secrets(*known_secrets(config))
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.channels = list(channels) if channels is not None else configured_channels(config)
        self.routes = tuple(Route(c.name, c.min_severity) for c in self.channels)
        self.repeat_every = config.alerts.repeat_every
        self.outbox = outbox or Outbox(config.shared_db)
        self.sender = Sender(
            self.outbox,
            self.channels,
            app=config.alert_app,
            source=config.alert_source,
            timeout=config.alerts.timeout,
            clock=self.clock,
        )
        self._unrecorded: deque[_Unrecorded] = deque()
        self._forgotten = 0  # unrecorded plans dropped because there were too many

    def _plan(self, intents: Sequence[Alert], context: CycleContext, now: datetime) -> AlertPlan:
        """Plan one cycle's alerts against what was said before, stored or only sent."""
        clean = [_scrubbed(i) for i in intents]
        memory = self.outbox.memory(now, self.repeat_every, context.source)
        if self._unrecorded:
            sent = [(u.at, r) for u in self._unrecorded if u.plan.source == context.source for r in u.plan.remember]
            memory = with_remembered(memory, sent, now=now, repeat_every=self.repeat_every)
        return plan_alerts(
            clean,
            context=context,
            memory=memory,
            routes=self.routes,
            repeat_every=self.repeat_every,
            now=now,
        )

    def _record(self, plan: AlertPlan, now: datetime) -> None:
        """Write what was sent unrecorded (oldest first), then `plan`; StoreError when the
        store still cannot be written."""
        while self._unrecorded:
            u = self._unrecorded[0]
            self.outbox.commit_plan(u.plan, u.at, delivered=u.delivered)
            self._unrecorded.popleft()
            if not self._unrecorded:
                log_event(log, "alerts.recorded_late", forgotten=self._forgotten)
                self._forgotten = 0
        self.outbox.commit_plan(plan, now)

    def submit_sync(self, intents: Sequence[Alert], context: CycleContext, now: datetime) -> AlertPlan:
        """Plan one cycle's alerts and store them in one transaction (commands with no event loop).

        A running `healer run` picks the rows up at its next poll (a few seconds).
        """
        plan = self._plan(intents, context, now)
        self.outbox.commit_plan(plan, now)
        self._log_dropped(plan)
        return plan

    def _log_dropped(self, plan: AlertPlan) -> None:
        for item, why in plan.dropped:
            log_event(
                log,
                "alerts.suppressed",
                level=logging.DEBUG,
                alert=item.event,
                incident_id=item.incident_id,
                why=why,
            )

    async def submit(self, intents: Sequence[Alert], context: CycleContext, now: datetime) -> AlertPlan:
        """Plan and store one cycle's alerts off the event loop, then wake the sender.

        When the outbox cannot be written, the messages go straight to their channels instead,
        marked NOT_RECORDED, and are kept to be written later (the module docstring).
        """
        plan = await asyncio.to_thread(self._plan, intents, context, now)
        try:
            await asyncio.to_thread(self._record, plan, now)
        except StoreError:
            await self._send_unrecorded(plan, now)
        else:
            self.sender.wake([ch for p in plan.entries for ch in p.channels])
        self._log_dropped(plan)
        return plan

    async def _send_unrecorded(self, plan: AlertPlan, now: datetime) -> None:
        """Send each planned message to its channels now, and keep the plan to write later."""
        delivered: list[frozenset[str]] = []
        for p in plan.entries:
            marked = replace(p.message, note=NOT_RECORDED)
            delivered.append(await self.sender.send_now(marked, p.channels) if p.channels else frozenset())
        if len(self._unrecorded) >= MAX_UNRECORDED:
            self._unrecorded.popleft()
            self._forgotten += 1
        self._unrecorded.append(_Unrecorded(plan, now, tuple(delivered)))

    async def run(self, stop: asyncio.Event) -> None:
        """The sender: deliver until `stop` is set."""
        await self.sender.run(stop)

    async def flush(self, within: timedelta = timedelta(seconds=5)) -> int:
        """Deliver what is pending, for at most `within`; returns what is still pending."""
        return await self.sender.flush(within)

    def history(self, since: datetime | None = None) -> list[AlertRecord]:
        return self.outbox.history(since)

    def pending_count(self) -> int:
        return self.outbox.pending_count()

    def close(self) -> None:
        self.outbox.close()


def _scrubbed(item: Alert) -> Alert:
    title, detail = redact(item.title), redact(item.detail)
    if (title, detail) == (item.title, item.detail):
        return item
    return replace(item, title=title, detail=detail)


__all__ = [
    "AlertMessage",
    "AlertPlan",
    "AlertRecord",
    "Alerts",
    "Channel",
    "CycleContext",
    "DeliveryRecord",
    "DeliveryState",
    "LogChannel",
    "Outbox",
    "Route",
    "Sender",
    "configured_channels",
    "plan_alerts",
    "render_text",
    "rollback_countdown",
    "send_test",
]
