"""Chat-ops: healer listens to the chats its alerts go to (I/O).

    dispatch.py   commands and button presses -> checks against [chatops] -> operations
    telegram.py   long polling of the alerts' bot
    slack.py      Socket Mode

`listen(config)` runs beside the watchdog loop (loop.serve) until cancelled; in a fleet,
`listen(config, leading=lambda: leadership.is_leader)` under fleet.while_leading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from healer.chat.dispatch import Dispatcher, always
from healer.config import Config

GATE_LOOK = timedelta(milliseconds=250)  # how often a listener stopped at the gate looks again


async def listen(config: Config, leading: Callable[[], bool] = always) -> None:
    """Listen to every configured chat until cancelled; returns at once when [chatops] allows
    nobody anything. The SDKs are imported only then. `leading` gates every update (the
    listeners act on one only while it says yes: Dispatcher.leading)."""
    from healer.chatops import is_enabled

    if not is_enabled(config.chatops):
        return
    dispatcher = Dispatcher(config, leading=leading)
    runs: list[Awaitable[None]] = []
    if "telegram" in config.alerts.channels:
        from healer.chat.telegram import telegram_listener

        tg = telegram_listener(config, dispatcher)
        if tg is not None:
            runs.append(_gated(tg.run, leading))
    if "slack" in config.alerts.channels:
        from healer.chat.slack import slack_listener

        sl = slack_listener(config, dispatcher)
        if sl is not None:
            runs.append(_gated(sl.run, leading))
    await asyncio.gather(*runs)


async def _gated(run: Callable[[], Awaitable[bool]], leading: Callable[[], bool]) -> None:
    """Run a listener; one that stopped at the gate (True: this healer stopped leading) starts
    again if it leads again before fleet.while_leading cancels it (a renewal that came late)."""
    while await run():
        while not leading():
            await asyncio.sleep(GATE_LOOK.total_seconds())
