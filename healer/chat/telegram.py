"""Telegram chat-ops: long polling of the alerts' bot inside healer's event loop (I/O).

No webhook and no public endpoint: `getUpdates` with a long-poll timeout, in a task beside the
watchdog, so a Bot API that is down, slow or answering garbage never delays a cycle; failures
back off (doubling, up to MAX_BACKOFF). Only one poller per token may exist: when Telegram
answers 409 (another healer on this token), or refuses the token, healer says so once (log and
chat) and stops polling. The next update id is kept (chat/memory.py: in a fleet, where every
host reads it) before an update is handled, so a restart (even kill -9) or the next leader never
runs a command twice; a press that was lost can be pressed again. In a fleet, polling and each
update wait on the dispatcher's `leading()`: a healer that no longer leads (it was stopped past
its lease, say) stops without asking Telegram again, so the update it did not act on stays
unconfirmed and the new leader's poll gets it; nor does it send a poll that would cut off the
new leader's (409). The token is in every request URL: errors are redacted before they are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from healer import operations
from healer.chat import memory
from healer.chat.dispatch import Dispatcher, Reply, Step, listened_chats
from healer.chatops import button_key, keyboard
from healer.config import Config, Secret
from healer.errors import DeliveryError, HealerError
from healer.logging import log_event
from healer.model import Event, Severity
from healer.redact import redact
from healer.telegram_api import Other, Pressed, Said, TelegramBot

log = logging.getLogger("healer.chat.telegram")

POLL_TIMEOUT = timedelta(seconds=25)  # how long Telegram holds a getUpdates open
REQUEST_TIMEOUT = timedelta(seconds=10)  # a reply or an edit; a poll: POLL_TIMEOUT plus this
MIN_BACKOFF = timedelta(seconds=1)
MAX_BACKOFF = timedelta(minutes=2)


@dataclass
class TelegramListener:
    """Polls one bot and answers in the listened chats."""

    config: Config
    token: Secret
    chats: set[str]
    dispatcher: Dispatcher
    api_url: str
    poll_timeout: timedelta = POLL_TIMEOUT
    min_backoff: timedelta = MIN_BACKOFF
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def key(self) -> bytes:
        return button_key(self.token.reveal())

    async def run(self) -> bool:
        """Poll until cancelled, or until this healer no longer leads its fleet (True: the updates
        it took while leading are let finish), or until Telegram says polling cannot work:
        another poller on the token, or the token refused."""
        async with TelegramBot(self.token, self.api_url, REQUEST_TIMEOUT) as bot:
            try:
                stopped = await self._poll(bot)
                if stopped:  # fleet.while_leading cancels this wait once it sees this healer follow
                    await asyncio.gather(*self._tasks, return_exceptions=True)
                return stopped
            finally:
                for task in list(self._tasks):
                    task.cancel()

    async def _poll(self, bot: TelegramBot) -> bool:
        """Take the updates and start handling them while leading (True when it stops leading)."""
        offset = await asyncio.to_thread(memory.offset, self.config)
        backoff = self.min_backoff
        failing = False
        while True:
            if not self._leading():
                return True
            try:
                updates = await bot.updates(offset, self.poll_timeout)
            except DeliveryError as e:
                if not self._leading():  # the new leader's poll cut ours off (409): its turn
                    return True
                if e.permanent:
                    await self._give_up(str(e))
                    return False
                if not failing:  # said once per outage, not every retry
                    log_event(log, "chatops.poll_failed", level=logging.WARNING, error=str(e),
                              retry_in=f"{backoff.total_seconds():g}s")  # fmt: skip
                failing = True
                await asyncio.sleep(backoff.total_seconds())
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if failing:
                log_event(log, "chatops.poll_recovered")
            failing, backoff = False, self.min_backoff
            for u in updates:
                if not self._leading():  # left unconfirmed: the next leader's poll gets it
                    return True
                offset = u.update_id + 1
                await asyncio.to_thread(memory.keep_offset, self.config, offset)  # before acting: once
                if not isinstance(u, Other):
                    self._spawn(bot, u)

    def _leading(self) -> bool:
        """The fleet's gate (Dispatcher.leading), said in the log when it closes."""
        if self.dispatcher.leading():
            return True
        log_event(log, "chatops.not_leading", platform="telegram", then="the fleet's leader polls")
        return False

    async def _give_up(self, why: str) -> None:
        log_event(log, "chatops.stopped", level=logging.ERROR, platform="telegram", why=why)
        with contextlib.suppress(HealerError):
            await asyncio.to_thread(
                operations.announce, self.config, Event.CHATOPS_STOPPED, "Telegram commands off",
                f"{why}; alerts still go out, buttons and commands do nothing here", Severity.WARNING,
            )  # fmt: skip

    def _spawn(self, bot: TelegramBot, update: Said | Pressed) -> None:
        """Handle an update in its own task: a rollback takes minutes, polling goes on."""
        task = asyncio.create_task(self._handle(bot, update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, bot: TelegramBot, update: Said | Pressed) -> None:
        try:
            if isinstance(update, Pressed):
                await self._press(bot, update)
            elif update.text.startswith("/"):
                await self._command(bot, update)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one bad update must not end polling
            log_event(log, "chatops.update_failed", level=logging.WARNING, error=redact(f"{type(e).__name__}: {e}"))

    async def _command(self, bot: TelegramBot, said: Said) -> None:
        if str(said.chat) not in self.chats or said.user is None:
            log_event(log, "chatops.ignored", chat=str(said.chat))
            return
        reply: Reply = await self.dispatcher.command(f"telegram:{said.user}", said.text)
        buttons = keyboard(reply.buttons, None, reply.issued, self.key) if reply.issued is not None else ()
        await bot.send(said.chat, redact(reply.text), html=False, keyboard=buttons, reply_to=said.message_id)

    async def _press(self, bot: TelegramBot, pressed: Pressed) -> None:
        chat, message_id = pressed.chat, pressed.message_id
        if chat is None or message_id is None or str(chat) not in self.chats:
            await bot.answer(pressed.query_id, "this chat is not listened to")
            return
        user = f"telegram:{pressed.user}"
        step: Step = await self.dispatcher.press(user, pressed.data, self.key)
        await bot.answer(pressed.query_id, redact(step.answer))
        if step.buttons is not None:
            issued = step.issued
            buttons = keyboard(step.buttons, step.incident, issued, self.key, step.host) if issued is not None else ()
            await bot.edit(chat, message_id, keyboard=buttons)
        if step.run is None:
            return
        what = await step.run()
        await bot.edit(chat, message_id, html=f"{pressed.html}\n\n<b>{_escape(redact(what))}</b>")


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)


def telegram_listener(config: Config, dispatcher: Dispatcher) -> TelegramListener | None:
    """The listener for `[alerts.telegram]`, or None when it has no token or no chat to listen to."""
    from healer.alerts.telegram import Section
    from healer.alerts.telegram import channels as telegram_channels

    cfg = config.alerts.channels.get("telegram")
    if not isinstance(cfg, Section):
        return None
    channels = telegram_channels(cfg, timeout=config.alerts.timeout)
    token = channels[0].token
    alert_chats = [c.chat_id for c in channels if c.chat_id]
    chats = listened_chats(config, "telegram", alert_chats)
    if token is None or not chats:
        log_event(log, "chatops.off", level=logging.WARNING, platform="telegram", why="no token or no chat")
        return None
    return TelegramListener(config, token, chats, dispatcher, api_url=channels[0].base_url)
