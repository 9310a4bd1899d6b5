"""The Telegram channel: `[alerts.telegram]`, the HTML rendering, and the sender (I/O).

A bot sends HTML messages to one chat, through healer/telegram_api.py (the one module that imports
python-telegram-bot), imported only when it sends: healer.toml's validation imports this module
for `Section`, and a command that sends nothing must not pay for the library. Several chat ids
make several channels (`telegram:<id>`), each with its own delivery state: one chat refusing does
not resend to the others.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
from healer.chatops import Keyboard, alert_buttons, button_key, host_tag, keyboard
from healer.config import ChannelSection, Secret, read_secret
from healer.errors import DeliveryError
from healer.model import Severity
from healer.redact import add_secrets, redact
from healer.schema import EnvName

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

    def markup(self, message: AlertMessage) -> Keyboard:
        """The message's buttons (chatops.alert_buttons), signed with the bot token; () for none."""
        wanted = alert_buttons(message.event, message.incident_id) if self.buttons else ()
        if not wanted or self.token is None:
            return ()
        key = button_key(self.token.reveal())
        return keyboard(wanted, message.incident_id, datetime.now(UTC), key, host_tag(message.host))

    async def notify(self, text: str, buttons: Keyboard = ()) -> None:
        """Send built text; raises DeliveryError naming the channel, the token scrubbed out."""
        from healer.telegram_api import TelegramBot  # only when sending: see the module docstring

        if self.missing or self.token is None or not self.chat_id:
            msg = f"{self.name}: {self.missing or 'not configured'}"
            raise DeliveryError(msg, retry_after=NOT_CONFIGURED_RETRY)
        try:
            async with TelegramBot(self.token, self.base_url, self.timeout) as bot:
                await bot.send(self.chat_id, text, html=True, keyboard=buttons)
        except DeliveryError as e:
            raise self._fail(str(e), permanent=e.permanent, retry_after=e.retry_after) from None

    async def send(self, message: AlertMessage, *, delayed: timedelta | None = None) -> None:
        await self.notify(self.payload(message, delayed=delayed), self.markup(message))

    def _fail(self, what: str, *, permanent: bool = False, retry_after: float | None = None) -> DeliveryError:
        add_secrets(self.token)  # already taught by the bot; here too, so no caller can forget
        return DeliveryError(redact(f"{self.name}: {what}"), permanent=permanent, retry_after=retry_after)


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
