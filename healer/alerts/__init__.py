"""Alerts: the channels from healer.toml, the pipeline's shell, and `healer alert test` (I/O).

The loop's view of it:

    alerts = Alerts(config, clock=clock)                    # opens the outbox in config.db_path
    task = tg.create_task(alerts.run(stop))                  # the sender, beside the loop
    ...each cycle:
    await alerts.submit(cycle_alert_intents, CycleContext(...), now)
    ...at shutdown (after submitting healer.stopped):
    left = await alerts.flush(timedelta(seconds=5)); alerts.close()

`healer history` reads `alerts.history(since)` (or `Outbox(config.db_path).history(since)`).
Importing this package does not import slack_sdk or telegram; `configured_channels` does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from healer.alerts.console import LogChannel
from healer.alerts.message import (
    EVENTS,
    META_EVENTS,
    AlertItem,
    AlertMessage,
    alert_test_message,
    render_text,
    rollback_countdown,
    slack_payload,
    telegram_text,
)
from healer.alerts.outbox import AlertRecord, Channel, DeliveryRecord, DeliveryState, Outbox, Sender
from healer.alerts.pipeline import AlertPlan, CycleContext, Route, plan_alerts
from healer.clock import Clock, SystemClock
from healer.config import Config
from healer.errors import DeliveryError, UsageError
from healer.logging import add_secrets, known_secrets, log_event, redact
from healer.model import Alert

log = logging.getLogger("healer.alerts")

CHANNEL_KINDS = ("log", "slack", "telegram")


def configured_channels(config: Config) -> list[Channel]:
    """The log channel, plus Slack and Telegram when healer.toml has them; secrets read now.

    A channel whose environment variable is unset is still built: it fails every delivery with
    "SLACK_WEBHOOK_URL is not set" (its alerts wait in the outbox) instead of stopping healer.
    """
    # imported here, and only for a configured channel: the chat SDKs take ~0.1 s to import
    # (and memory), which every `healer rollback` or `healer pause` would pay for nothing
    a = config.alerts
    out: list[Channel] = [LogChannel(config.severity(a.log.min_severity))]
    if a.slack is not None:
        from healer.alerts.slack import slack_channel

        out.append(slack_channel(a.slack, timeout=a.timeout))
    if a.telegram is not None:
        from healer.alerts.telegram import telegram_channels

        out.extend(telegram_channels(a.telegram, timeout=a.timeout))
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
    message = alert_test_message(config.app.name, datetime.now(UTC))
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
        self.outbox = outbox or Outbox(config.db_path)
        self.sender = Sender(
            self.outbox,
            self.channels,
            app=config.app.name,
            timeout=config.alerts.timeout,
            clock=self.clock,
        )

    def submit_sync(self, intents: Sequence[Alert | AlertItem], context: CycleContext, now: datetime) -> AlertPlan:
        """Plan one cycle's alerts and store them in one transaction (commands with no event loop).

        A running `healer run` picks the rows up at its next poll (a few seconds).
        """
        clean = [_scrubbed(i) for i in intents]
        memory = self.outbox.memory(now, self.repeat_every)
        plan = plan_alerts(
            clean,
            context=context,
            memory=memory,
            routes=self.routes,
            repeat_every=self.repeat_every,
            now=now,
        )
        self.outbox.commit_plan(plan, now)
        for item, why in plan.dropped:
            log_event(
                log,
                "alerts.suppressed",
                level=logging.DEBUG,
                alert=item.event,
                incident_id=item.incident_id,
                why=why,
            )
        return plan

    async def submit(self, intents: Sequence[Alert | AlertItem], context: CycleContext, now: datetime) -> AlertPlan:
        """Plan and store one cycle's alerts off the event loop, then wake the sender."""
        plan = await asyncio.to_thread(self.submit_sync, intents, context, now)
        self.sender.wake([ch for p in plan.entries for ch in p.channels])
        return plan

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


def _scrubbed(i: Alert | AlertItem) -> AlertItem:
    item = i if isinstance(i, AlertItem) else AlertItem.from_intent(i)
    title, detail = redact(item.title), redact(item.detail)
    if (title, detail) == (item.title, item.detail):
        return item
    return AlertItem(item.event, item.severity, title, detail, item.incident_id, item.bypass_dedup)


__all__ = [
    "CHANNEL_KINDS",
    "EVENTS",
    "META_EVENTS",
    "AlertItem",
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
    "slack_payload",
    "telegram_text",
]
