"""Telegram chat-ops: long polling of the alerts' bot inside healer's event loop (I/O).

No webhook and no public endpoint: `getUpdates` with a long-poll timeout, in a task beside the
watchdog, so a Bot API that is down, slow or answering garbage never delays a cycle; failures
back off (doubling, up to MAX_BACKOFF). Only one poller per token may exist: when Telegram
answers 409 (another healer on this token), or refuses the token, healer says so once (log and
chat) and stops polling. The next update id is kept in the store before an update is handled,
so a restart (even kill -9) never runs a command twice; a press that was lost can be pressed
again. The token is in every request URL: errors are redacted before they are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from telegram import Bot, CallbackQuery, Message, Update
from telegram.constants import ParseMode
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from healer import operations
from healer.alerts.telegram import keyboard
from healer.chat.dispatch import Dispatcher, Reply, Step, listened_chats
from healer.chatops import button_key
from healer.config import Config, Secret
from healer.errors import HealerError
from healer.logging import log_event
from healer.model import Event, Severity
from healer.redact import add_secrets, redact

log = logging.getLogger("healer.chat.telegram")

POLL_TIMEOUT = timedelta(seconds=25)  # how long Telegram holds a getUpdates open
MIN_BACKOFF = timedelta(seconds=1)
MAX_BACKOFF = timedelta(minutes=2)
OFFSET_KEY = "telegram_offset"  # meta: the next update id to ask for


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

    async def run(self) -> None:
        """Poll until cancelled (or until Telegram says another poller owns the token)."""
        add_secrets(self.token)
        t = self.poll_timeout.total_seconds()
        request = HTTPXRequest(connect_timeout=10, read_timeout=10, write_timeout=10, pool_timeout=10)
        polling = HTTPXRequest(connect_timeout=10, read_timeout=10, write_timeout=10, pool_timeout=10)
        bot = Bot(self.token.reveal(), base_url=self.api_url, request=request, get_updates_request=polling)
        offset = await asyncio.to_thread(self._offset)
        backoff = self.min_backoff
        failing = False
        try:
            while True:
                try:
                    updates = await bot.get_updates(
                        offset=offset, timeout=int(t), allowed_updates=["message", "callback_query"]
                    )
                except (Conflict, InvalidToken) as e:
                    await self._give_up(e)
                    return
                except (TelegramError, HealerError, OSError, ValueError) as e:
                    if not failing:  # said once per outage, not every retry
                        log_event(log, "chatops.poll_failed", level=logging.WARNING, error=redact(str(e)),
                                  retry_in=f"{backoff.total_seconds():g}s")  # fmt: skip
                    failing = True
                    await asyncio.sleep(backoff.total_seconds())
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                if failing:
                    log_event(log, "chatops.poll_recovered")
                failing, backoff = False, self.min_backoff
                for u in updates:
                    offset = u.update_id + 1
                    await asyncio.to_thread(self._keep_offset, offset)  # before acting: at most once
                    self._spawn(bot, u)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await request.shutdown()
                await polling.shutdown()

    def _offset(self) -> int | None:
        from healer.store import Store

        with Store(self.config.state_db) as store:
            value = store.meta().get(OFFSET_KEY)
        return int(value) if value else None

    def _keep_offset(self, offset: int) -> None:
        from healer.store import Store

        with Store(self.config.state_db) as store:
            store.set_meta(**{OFFSET_KEY: str(offset)})

    async def _give_up(self, e: TelegramError) -> None:
        why = (
            "another healer (or bot client) is polling this bot token: only one poller per token can exist"
            if isinstance(e, Conflict)
            else "the bot token was refused"
        )
        log_event(log, "chatops.stopped", level=logging.ERROR, platform="telegram", why=why, error=redact(str(e)))
        with contextlib.suppress(HealerError):
            await asyncio.to_thread(
                operations.announce, self.config, Event.CHATOPS_STOPPED, "Telegram commands off",
                f"{why}; alerts still go out, buttons and commands do nothing here", Severity.WARNING,
            )  # fmt: skip

    def _spawn(self, bot: Bot, update: Update) -> None:
        """Handle an update in its own task: a rollback takes minutes, polling goes on."""
        task = asyncio.create_task(self._handle(bot, update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, bot: Bot, update: Update) -> None:
        try:
            if update.callback_query is not None:
                await self._press(bot, update.callback_query)
            elif update.message is not None and (update.message.text or "").startswith("/"):
                await self._command(bot, update.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one bad update must not end polling
            log_event(log, "chatops.update_failed", level=logging.WARNING, error=redact(f"{type(e).__name__}: {e}"))

    async def _command(self, bot: Bot, message: Message) -> None:
        chat = str(message.chat.id)
        if chat not in self.chats or message.from_user is None:
            log_event(log, "chatops.ignored", chat=chat)
            return
        user = f"telegram:{message.from_user.id}"
        reply: Reply = await self.dispatcher.command(user, message.text or "")
        markup = None
        if reply.buttons and reply.issued is not None:
            markup = keyboard(reply.buttons, None, reply.issued, self.key)
        await bot.send_message(
            chat_id=message.chat.id, text=redact(reply.text), reply_markup=markup,
            reply_to_message_id=message.message_id,
        )  # fmt: skip

    async def _press(self, bot: Bot, query: CallbackQuery) -> None:
        message = query.message
        if not isinstance(message, Message) or str(message.chat.id) not in self.chats:
            await bot.answer_callback_query(query.id, text="this chat is not listened to")
            return
        user = f"telegram:{query.from_user.id}"
        step: Step = await self.dispatcher.press(user, query.data or "", self.key)
        await bot.answer_callback_query(query.id, text=redact(step.answer)[:200])
        if step.buttons is not None:
            markup = None
            if step.buttons and step.issued is not None:
                markup = keyboard(step.buttons, step.incident, step.issued, self.key)
            await bot.edit_message_reply_markup(chat_id=message.chat.id, message_id=message.message_id,
                                                reply_markup=markup)  # fmt: skip
        if step.run is None:
            return
        what = await step.run()
        await bot.edit_message_text(
            text=f"{message.text_html}\n\n<b>{_escape(redact(what))}</b>", chat_id=message.chat.id,
            message_id=message.message_id, parse_mode=ParseMode.HTML, reply_markup=None,
        )  # fmt: skip


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
