"""python-telegram-bot behind one door: the only module that imports it, used by the alerts'
sender and by chat-ops' long polling alike; its errors become DeliveryError and its updates
healer's own values (I/O).

Imported only when healer talks to Telegram: healer.toml's validation imports
alerts/telegram.py for its `Section`, and a command that sends nothing must not pay for the
library. The token sits in every Bot API URL (`/bot<TOKEN>/sendMessage`) and in some of the
library's error texts (InvalidToken), so every error is redacted before it leaves this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from healer.chatops import Keyboard
from healer.config import Secret
from healer.errors import DeliveryError
from healer.redact import add_secrets, redact

# what getUpdates' 409 means: https://core.telegram.org/bots/api#getupdates
ANOTHER_POLLER = "another healer (or bot client) is polling this bot token: only one poller per token can exist"
TOKEN_REFUSED = "the bot token was refused"


@dataclass(frozen=True, slots=True)
class Said:
    """Someone wrote in a chat."""

    update_id: int
    chat: int
    user: int | None  # None: a channel post, nobody in particular
    text: str
    message_id: int


@dataclass(frozen=True, slots=True)
class Pressed:
    """Someone pressed one of the bot's inline buttons."""

    update_id: int
    query_id: str
    user: int
    data: str  # the button's callback data
    chat: int | None  # the message's chat; None when Telegram no longer sends the message
    message_id: int | None
    html: str  # the message's text as HTML, to edit it with a line added


@dataclass(frozen=True, slots=True)
class Other:
    """An update healer does not handle; its id still moves the offset on."""

    update_id: int


TelegramUpdate = Said | Pressed | Other


class TelegramBot:
    """One bot; each request gives up after `timeout` (a long poll after its own wait plus that).

    Use as `async with TelegramBot(...) as bot:`, which closes its connections on the way out.
    """

    def __init__(self, token: Secret, base_url: str, timeout: timedelta) -> None:
        add_secrets(token)  # it is in every request URL, which httpx logs
        self._timeout = timeout.total_seconds()
        t = self._timeout
        self._request = HTTPXRequest(connect_timeout=t, read_timeout=t, write_timeout=t, pool_timeout=t)
        self._polling = HTTPXRequest(connect_timeout=t, read_timeout=t, write_timeout=t, pool_timeout=t)
        self._bot = Bot(token.reveal(), base_url=base_url, request=self._request, get_updates_request=self._polling)

    async def __aenter__(self) -> TelegramBot:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._request.shutdown()
        await self._polling.shutdown()

    async def send(
        self, chat: str | int, text: str, *, html: bool, keyboard: Keyboard = (), reply_to: int | None = None
    ) -> None:
        """Send a message (HTML, or plain text), with buttons, maybe as a reply."""
        await self._call(
            self._bot.send_message(
                chat_id=chat, text=text, parse_mode=ParseMode.HTML if html else None,
                reply_markup=_markup(keyboard), reply_to_message_id=reply_to,
            ),
            chat,
        )  # fmt: skip

    async def updates(self, offset: int | None, wait: timedelta) -> list[TelegramUpdate]:
        """Long polling: the updates from `offset` on, waiting up to `wait` for one. The error is
        permanent when polling cannot work (another poller, a refused token)."""
        try:
            got = await self._bot.get_updates(
                offset=offset, timeout=int(wait.total_seconds()), allowed_updates=["message", "callback_query"]
            )
            return [_read(u) for u in got]
        except Conflict:
            raise DeliveryError(ANOTHER_POLLER, permanent=True) from None
        except InvalidToken:
            raise DeliveryError(TOKEN_REFUSED, permanent=True) from None
        except TelegramError as e:
            raise self._error(e, None) from None
        except Exception as e:  # the library reading an answer of the wrong shape
            raise _garbled(e) from None

    async def answer(self, query_id: str, text: str) -> None:
        """Answer a button press (the toast the presser sees)."""
        await self._call(self._bot.answer_callback_query(query_id, text=text[:200]), None)

    async def edit(self, chat: int, message_id: int, *, html: str | None = None, keyboard: Keyboard = ()) -> None:
        """Replace a message's buttons (none: they go), and its text when `html` is given."""
        markup = _markup(keyboard)
        if html is None:
            await self._call(
                self._bot.edit_message_reply_markup(chat_id=chat, message_id=message_id, reply_markup=markup), chat
            )
        else:
            await self._call(
                self._bot.edit_message_text(
                    text=html, chat_id=chat, message_id=message_id, parse_mode=ParseMode.HTML, reply_markup=markup
                ),
                chat,
            )

    async def _call(self, request: Awaitable[object], chat: str | int | None) -> None:
        """Await a Bot API call; whatever goes wrong comes out as a DeliveryError."""
        try:
            await request
        except TelegramError as e:
            raise self._error(e, chat) from None
        except Exception as e:  # the library reading an answer of the wrong shape
            raise _garbled(e) from None

    def _error(self, e: TelegramError, chat: str | int | None) -> DeliveryError:
        """The library's error as ours: permanent unless trying again can help; redacted."""
        t = self._timeout
        if isinstance(e, RetryAfter):
            after = _seconds(e)
            return _fail(f"rate limited (429), retry after {after:g}s", retry_after=after)
        if isinstance(e, InvalidToken):
            return _fail(f"the bot token was rejected: {e.message}", permanent=True)
        if isinstance(e, ChatMigrated):
            return _fail(f"chat {chat} moved to {e.new_chat_id}: update the chat id", permanent=True)
        if isinstance(e, Forbidden):
            return _fail(f"forbidden: {e.message}", permanent=True)
        if isinstance(e, BadRequest):  # before NetworkError: BadRequest is one
            return _fail(f"bad request: {e.message}", permanent=True)
        if isinstance(e, TimedOut):
            return _fail(f"no answer within {t:g}s")
        if isinstance(e, NetworkError):
            return _fail(f"network error: {e.message}")
        return _fail(f"{type(e).__name__}: {e.message}")


def _garbled(e: Exception) -> DeliveryError:
    return _fail(f"a garbled answer: {type(e).__name__}: {e}")


def _fail(what: str, *, permanent: bool = False, retry_after: float | None = None) -> DeliveryError:
    return DeliveryError(redact(what), permanent=permanent, retry_after=retry_after)


def _markup(keyboard: Keyboard) -> InlineKeyboardMarkup | None:
    """One row of inline buttons; None when there are none (edited away)."""
    if not keyboard:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in keyboard]])


def _read(update: Update) -> TelegramUpdate:
    """The library's update as one of ours: a press, a message with text, or something else.
    The library checks no types: an id that is not a number raises here, a garbled answer."""
    uid = int(update.update_id)
    query = update.callback_query
    if query is not None:
        message = query.message if isinstance(query.message, Message) else None
        return Pressed(
            uid, query.id, query.from_user.id, query.data or "",
            None if message is None else message.chat.id, None if message is None else message.message_id,
            "" if message is None else message.text_html,
        )  # fmt: skip
    m = update.message
    if m is not None and m.text:
        return Said(uid, m.chat.id, None if m.from_user is None else m.from_user.id, m.text, m.message_id)
    return Other(uid)


def _seconds(e: RetryAfter) -> float:
    """RetryAfter.retry_after: an int (and a deprecation warning), or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value: object = e.retry_after
    if isinstance(value, timedelta):
        return max(0.0, value.total_seconds())
    if isinstance(value, int | float):
        return max(0.0, float(value))
    return 1.0
