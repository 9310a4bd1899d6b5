"""Chat-ops: healer listens to the chats its alerts go to (I/O).

    dispatch.py   commands and button presses -> checks against [chatops] -> operations
    telegram.py   long polling of the alerts' bot
    slack.py      Socket Mode

`listen(config)` runs beside the watchdog loop (loop.serve) until cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from healer.chat.dispatch import Dispatcher
from healer.config import Config


async def listen(config: Config) -> None:
    """Listen to every configured chat until cancelled; returns at once when [chatops] allows
    nobody anything. The SDKs are imported only then."""
    from healer.chatops import is_enabled

    if not is_enabled(config.chatops):
        return
    dispatcher = Dispatcher(config)
    runs: list[Awaitable[None]] = []
    if "telegram" in config.alerts.channels:
        from healer.chat.telegram import telegram_listener

        tg = telegram_listener(config, dispatcher)
        if tg is not None:
            runs.append(tg.run())
    if "slack" in config.alerts.channels:
        from healer.chat.slack import slack_listener

        sl = slack_listener(config, dispatcher)
        if sl is not None:
            runs.append(sl.run())
    await asyncio.gather(*runs)
