"""The Telegram channel: `[alerts.telegram]`, the HTML rendering, and the sender (I/O).

A bot sends HTML messages to one chat. The only module that imports python-telegram-bot, and
only when it sends: healer.toml's validation imports this module for `Section`, and a command
that sends nothing must not pay for the library. The token sits in every Bot API URL
(`/bot<TOKEN>/sendMessage`) and in some of the library's error texts (InvalidToken), so every
error is scrubbed before it leaves this module. Several chat ids make several channels
(`telegram:<id>`), each with its own delivery state: one chat refusing does not resend to the
others.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from healer.alerts.message import (
    TRUNCATED,
    AlertMessage,
    context_lines,
    fit_escaped,
    footer,
    heading,
    item_tail,
    label,
)
from healer.chatops import Button, alert_buttons, button_data, button_key
from healer.config import ChannelSection, Secret, read_secret
from healer.errors import DeliveryError
from healer.model import Severity
from healer.redact import add_secrets, redact
from healer.schema import EnvName

if TYPE_CHECKING:
    from telegram import InlineKeyboardMarkup
    from telegram.error import RetryAfter

# Telegram's limit for one message, after entity parsing; the same number as
# telegram.constants.MessageLimit.MAX_TEXT_LENGTH (not imported: see the module docstring).
TELEGRAM_MAX_TEXT = 4096
DEFAULT_API_URL = "https://api.telegram.org"
NOT_CONFIGURED_RETRY = 900.0  # a missing secret will not appear by itself: look again in 15 minutes


class Section(ChannelSection):
    """`[alerts.telegram]`: the bot's token and the chat id(s), each from the environment."""

    token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    chat_id_env: EnvName = "TELEGRAM_CHAT_ID"  # one id, or several separated by commas
    api_url: str | None = None


# ---- rendering (pure) ------------------------------------------------------------------------


def telegram_length(text: str) -> int:
    """Telegram counts UTF-16 code units; an emoji is two."""
    return len(text.encode("utf-16-le")) // 2


def _tg_escape(text: str) -> str:
    # Telegram's HTML mode knows &lt; &gt; &amp; &quot; and numeric entities:
    # https://core.telegram.org/bots/api#html-style
    return html.escape(text, quote=True)


@dataclass(frozen=True, slots=True)
class _Line:
    pre: str  # markup before the text (already HTML)
    text: str  # raw text, escaped when rendered
    post: str = ""  # markup after the text, closing what `pre` opened

    def html(self) -> str:
        return self.pre + _tg_escape(self.text) + self.post


def telegram_text(msg: AlertMessage, *, delayed: timedelta | None = None) -> str:
    """HTML for parse_mode=HTML: every piece of text escaped, tags balanced, at most 4096 long.

    The heading and the context lines are always kept; the body (what happened, the cycle's
    other events) is cut to fit, never inside an entity or a tag, with a marker at the cut.
    """
    head = [_Line("<b>", heading(msg, delayed), "</b>")]
    if msg.note:
        head.append(_Line("<i>", msg.note, "</i>"))
    body = [_Line("<b>", msg.title, "</b>")]
    if msg.detail.strip():
        body.append(_Line("", msg.detail.strip()))
    for i in msg.others:
        body.append(_Line(f"• <b>{_tg_escape(label(i.event))}:</b> ", i.title + item_tail(i)))
    tail_lines = [_Line("<i>", x, "</i>") for x in context_lines(msg)]
    tail_lines.append(_Line("<code>", footer(msg), "</code>"))

    fixed = "\n".join(x.html() for x in head + tail_lines)
    full = "\n".join(x.html() for x in head + body + tail_lines)
    if telegram_length(full) <= TELEGRAM_MAX_TEXT:
        return full
    marker = _tg_escape(TRUNCATED)
    budget = TELEGRAM_MAX_TEXT - telegram_length(fixed) - 2 - telegram_length(marker)  # 2 newlines
    kept: list[str] = []
    for line in body:
        cost = telegram_length(line.html()) + (1 if kept else 0)
        if cost <= budget:
            kept.append(line.html())
            budget -= cost
            continue
        room = budget - (1 if kept else 0) - telegram_length(line.pre + line.post)
        if room > 0:
            part = fit_escaped(line.text, room, _tg_escape, telegram_length)
            if part:
                kept.append(line.pre + _tg_escape(part) + line.post)
        break
    text_body = "\n".join(kept) + marker
    return "\n".join([*(x.html() for x in head), text_body, *(x.html() for x in tail_lines)])


# ---- sending ---------------------------------------------------------------------------------


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
        wanted = alert_buttons(message.event, message.incident_id) if self.buttons else ()
        if not wanted or self.token is None:
            return None
        return keyboard(wanted, message.incident_id, datetime.now(UTC), button_key(self.token.reveal()))

    async def notify(self, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
        """Send built text; raises DeliveryError with the token scrubbed out."""
        # only when sending: see the module docstring
        from telegram import Bot
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
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup  # only when sending

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


def channels(section: Section, *, timeout: timedelta, buttons: bool = False) -> list[TelegramChannel]:
    """One channel per chat id in `chat_id_env` (comma separated), secrets read now; with
    `buttons` (chat-ops on) incident alerts carry buttons.

    One chat: the channel is "telegram"; several: "telegram:<id>" each. When the token or the
    chat id is missing, one "telegram" channel that reports what is missing on every attempt.
    """
    sev = section.severity
    token = read_secret(section.token_env)
    chats_secret = read_secret(section.chat_id_env)
    chats = [c.strip() for c in (chats_secret.reveal() if chats_secret else "").split(",") if c.strip()]
    missing = [f"{section.token_env} is not set"] if token is None else []
    if not chats:
        missing.append(f"{section.chat_id_env} is not set")
    if missing:
        return [TelegramChannel(sev, token=token, api_url=section.api_url, timeout=timeout, missing="; ".join(missing))]
    if len(chats) == 1:
        return [
            TelegramChannel(
                sev, token=token, chat_id=chats[0], api_url=section.api_url, timeout=timeout, buttons=buttons
            )
        ]
    return [
        TelegramChannel(
            sev,
            token=token,
            chat_id=c,
            api_url=section.api_url,
            timeout=timeout,
            name=f"telegram:{c}",
            buttons=buttons,
        )
        for c in dict.fromkeys(chats)
    ]
