"""The Telegram channel: a bot sending HTML messages to one chat (I/O).

The only module that imports python-telegram-bot. The token sits in every Bot API URL
(`/bot<TOKEN>/sendMessage`) and in some of the library's error texts (InvalidToken), so every
error is scrubbed before it leaves this module. Several chat ids make several channels
(`telegram:<id>`), each with its own delivery state: one chat refusing does not resend to the
others.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from healer.alerts.message import AlertMessage, telegram_text
from healer.chatops import Button, alert_buttons, button_data, button_key
from healer.config import Secret, TelegramConfig, read_secret
from healer.errors import DeliveryError
from healer.model import Severity
from healer.redact import add_secrets, redact

DEFAULT_API_URL = "https://api.telegram.org"
NOT_CONFIGURED_RETRY = 900.0  # a missing secret will not appear by itself: look again in 15 minutes


@dataclass(frozen=True, slots=True)
class TelegramChannel:
    """Sends HTML messages to one chat. `missing` names an unset environment variable."""

    min_severity: Severity = Severity.INFO
    token: Secret | None = None
    chat_id: str | None = None
    api_url: str | None = None  # the Bot API's base URL, without /bot
    timeout: timedelta = timedelta(seconds=10)
    missing: str | None = None
    name: str = "telegram"
    kind: str = "telegram"
    buttons: bool = False  # chat-ops is on: incident alerts carry Ack, Pause 1h, Roll back now

    @property
    def base_url(self) -> str:
        base = (self.api_url or DEFAULT_API_URL).rstrip("/")
        return base if base.endswith("/bot") else base + "/bot"

    def payload(self, message: AlertMessage, *, delayed: timedelta | None = None) -> str:
        """The message text: HTML, escaped, at most 4096 characters, redacted (the last edge
        before Telegram, whichever way the message came)."""
        return redact(telegram_text(message, delayed=delayed))

    def markup(self, message: AlertMessage) -> InlineKeyboardMarkup | None:
        """The message's buttons (chatops.alert_buttons), signed with the bot token, or None."""
        wanted = alert_buttons(message.event, message.incident_id) if self.buttons and self.token else ()
        if not wanted or self.token is None:
            return None
        return keyboard(wanted, message.incident_id, datetime.now(UTC), button_key(self.token.reveal()))

    async def notify(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Send built text; raises DeliveryError with the token scrubbed out."""
        if self.missing or self.token is None or not self.chat_id:
            msg = f"{self.name}: {self.missing or 'not configured'}"
            raise DeliveryError(msg, retry_after=NOT_CONFIGURED_RETRY)
        add_secrets(self.token)  # it is in every request URL, which httpx logs
        t = self.timeout.total_seconds()
        request = HTTPXRequest(connect_timeout=t, read_timeout=t, write_timeout=t, pool_timeout=t)
        bot = Bot(
            self.token.reveal(),
            base_url=self.base_url,
            request=request,
            get_updates_request=request,
        )
        try:
            await bot.send_message(chat_id=self.chat_id, text=text, parse_mode=ParseMode.HTML, reply_markup=markup)
        except RetryAfter as e:
            after = _seconds(e)
            raise self._fail(f"rate limited (429), retry after {after:g}s", retry_after=after) from None
        except InvalidToken as e:
            raise self._fail(f"the bot token was rejected: {e.message}", permanent=True) from None
        except ChatMigrated as e:
            raise self._fail(
                f"chat {self.chat_id} moved to {e.new_chat_id}: update the chat id", permanent=True
            ) from None
        except Forbidden as e:
            raise self._fail(f"forbidden: {e.message}", permanent=True) from None
        except BadRequest as e:  # before NetworkError: BadRequest is one
            raise self._fail(f"bad request: {e.message}", permanent=True) from None
        except TimedOut:
            raise self._fail(f"no answer within {t:g}s") from None
        except NetworkError as e:
            raise self._fail(f"network error: {e.message}") from None
        except TelegramError as e:
            raise self._fail(f"{type(e).__name__}: {e.message}") from None
        finally:
            await request.shutdown()

    async def send(self, message: AlertMessage, *, delayed: timedelta | None = None) -> None:
        await self.notify(self.payload(message, delayed=delayed), self.markup(message))

    def _fail(self, what: str, *, permanent: bool = False, retry_after: float | None = None) -> DeliveryError:
        add_secrets(self.token)  # already taught by notify(); here too, so no caller can forget
        return DeliveryError(redact(f"{self.name}: {what}"), permanent=permanent, retry_after=retry_after)


def keyboard(buttons: tuple[Button, ...], incident: int | None, issued: datetime, key: bytes) -> InlineKeyboardMarkup:
    """Buttons as Telegram's inline keyboard, one row; each one's callback data signed with `key`."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=button_data(b, incident, issued, key)) for b in buttons]]
    )


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


def telegram_channels(cfg: TelegramConfig, *, timeout: timedelta, buttons: bool = False) -> list[TelegramChannel]:
    """One channel per chat id in `chat_id_env` (comma separated), secrets read now.

    One chat: the channel is "telegram"; several: "telegram:<id>" each. When the token or the
    chat id is missing, one "telegram" channel that reports what is missing on every attempt.
    """
    sev = Severity[cfg.min_severity.upper()]
    token = read_secret(cfg.token_env)
    chats_secret = read_secret(cfg.chat_id_env)
    chats = [c.strip() for c in (chats_secret.reveal() if chats_secret else "").split(",") if c.strip()]
    missing = [f"{cfg.token_env} is not set"] if token is None else []
    if not chats:
        missing.append(f"{cfg.chat_id_env} is not set")
    if missing:
        return [TelegramChannel(sev, token=token, api_url=cfg.api_url, timeout=timeout, missing="; ".join(missing))]
    if len(chats) == 1:
        return [
            TelegramChannel(sev, token=token, chat_id=chats[0], api_url=cfg.api_url, timeout=timeout, buttons=buttons)
        ]
    return [
        TelegramChannel(
            sev, token=token, chat_id=c, api_url=cfg.api_url, timeout=timeout, name=f"telegram:{c}", buttons=buttons
        )
        for c in dict.fromkeys(chats)
    ]
