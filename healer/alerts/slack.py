"""The Slack channel: `[alerts.slack]`, the Block Kit rendering, and the sender (I/O).

Posts through an incoming webhook, or a bot token posting to a channel, through
healer/slack_api.py (the one module that imports slack_sdk), imported only when it sends:
healer.toml's validation imports this module for `Section`, and a command that sends nothing
must not pay for the SDK. The sync client runs in a worker thread.

The webhook URL and the token are secrets: every error text is redacted (healer/redact.py), which
masks them, their parts (the webhook's path) and anything shaped like a token.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import model_validator
from pydantic_core import PydanticCustomError

from healer.alerts.message import (
    TRUNCATED,
    AlertMessage,
    clip,
    context_lines,
    fit_escaped,
    footer,
    heading,
    item_line,
    render_text,
)
from healer.chatops import Button, Verb, alert_buttons, button_data, button_key, host_tag
from healer.config import ChannelSection, Secret, read_secret
from healer.errors import DeliveryError
from healer.model import Severity
from healer.redact import REDACTOR, add_secrets, redact
from healer.schema import EnvName

# Block Kit limits: https://api.slack.com/reference/block-kit/blocks
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_TEXT_MAX = 4000  # the fallback; Slack itself cuts at 40,000
DEFAULT_API_URL = "https://slack.com/api/"
NOT_CONFIGURED_RETRY = 900.0  # a missing secret will not appear by itself: look again in 15 minutes


class Section(ChannelSection):
    """`[alerts.slack]`: a webhook (`webhook_url_env`), or a bot token and the channel to post to."""

    webhook_url_env: EnvName | None = None
    token_env: EnvName | None = None  # a bot token, posting to `channel`
    channel: str | None = None
    api_url: str | None = None  # Web API base URL; default the public one
    # Socket Mode (chat-ops: buttons, /healer): an app-level token with connections:write,
    # beside token_env + channel (the bot token posts the alerts that carry the buttons)
    app_token_env: EnvName | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Section:
        if not (self.webhook_url_env or self.token_env):
            raise PydanticCustomError(
                "channel", "webhook_url_env: expected webhook_url_env or token_env (+ channel)", {}
            )
        if self.token_env and not self.channel and not self.webhook_url_env:
            raise PydanticCustomError("channel", "channel: expected the channel to post to with token_env", {})
        if self.app_token_env and not (self.token_env and self.channel):
            raise PydanticCustomError(
                "channel",
                "app_token_env: expected token_env and channel beside it (Socket Mode posts with the bot)",
                {},
            )
        return self


# ---- rendering (pure) ------------------------------------------------------------------------


def slack_escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn treats as control characters.

    https://api.slack.com/reference/surfaces/formatting#escaping — and only those three.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_clip(raw: str, limit: int) -> str:
    """Escape `raw` and keep the result within `limit` characters, never cutting an entity."""
    out = slack_escape(raw)
    if len(out) <= limit:
        return out
    cut = fit_escaped(raw, limit - len(TRUNCATED), slack_escape, len)
    return slack_escape(cut) + TRUNCATED


def slack_payload(msg: AlertMessage, *, delayed: timedelta | None = None) -> dict[str, Any]:
    """Block Kit blocks (header, what happened, other events, context) + a `text` fallback."""
    head = clip(heading(msg, delayed), SLACK_HEADER_MAX)
    main = f"*{slack_escape(clip(msg.title, 500))}*"
    if msg.note:
        main = f"_{slack_escape(msg.note)}_\n{main}"
    if msg.detail.strip():
        room = SLACK_SECTION_MAX - len(main) - 1
        main += "\n" + _slack_clip(msg.detail.strip(), room)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": main}},
    ]
    if msg.others:
        listed = "\n".join(item_line(i) for i in msg.others)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _slack_clip(listed, SLACK_SECTION_MAX)}})
    context = [*context_lines(msg), footer(msg)]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_clip(c, 2000)} for c in context]})
    return {"text": clip(render_text(msg, delayed=delayed), SLACK_TEXT_MAX), "blocks": blocks}


# ---- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlackChannel:
    """Posts Block Kit messages to Slack. `missing` names an unset environment variable."""

    min_severity: Severity = Severity.INFO
    webhook_url: Secret | None = None
    token: Secret | None = None
    channel: str | None = None  # for a bot token: the channel to post to
    api_url: str | None = None  # Web API base URL
    timeout: timedelta = timedelta(seconds=10)
    missing: str | None = None
    name: str = "slack"
    kind: str = "slack"
    buttons: bool = False  # Socket Mode chat-ops: incident alerts carry Ack, Pause 1h, Roll back now

    def payload(self, message: AlertMessage, *, delayed: timedelta | None = None) -> dict[str, Any]:
        """The JSON body: blocks and a plain-text fallback, redacted (the last edge before Slack,
        whichever way the message came: the outbox, or sent directly while the store is down)."""
        body: dict[str, Any] = REDACTOR.value(slack_payload(message, delayed=delayed))
        wanted = alert_buttons(message.event, message.incident_id) if self.buttons else ()
        if wanted and self.token is not None and self.webhook_url is None:
            key = button_key(self.token.reveal())
            body["blocks"] = [
                *body["blocks"],
                actions_block(wanted, message.incident_id, datetime.now(UTC), key, host_tag(message.host)),
            ]
        return body

    async def notify(self, payload: dict[str, Any]) -> None:
        """Send a built payload; raises DeliveryError."""
        if self.missing:
            msg = f"{self.name}: {self.missing}"
            raise DeliveryError(msg, retry_after=NOT_CONFIGURED_RETRY)
        # the libraries log URLs and headers: make sure the log filter knows these values
        add_secrets(self.webhook_url, self.token)
        await asyncio.to_thread(self._post, payload)

    async def send(self, message: AlertMessage, *, delayed: timedelta | None = None) -> None:
        await self.notify(self.payload(message, delayed=delayed))

    # -- in the worker thread --

    def _fail(self, what: str, *, permanent: bool = False, retry_after: float | None = None) -> DeliveryError:
        # the redactor knows the webhook URL and the token (notify taught it), and their parts: a
        # proxy or Slack echoing the webhook's path in an error body is masked too
        text = redact(f"{self.name}: {what}")
        return DeliveryError(text, permanent=permanent, retry_after=retry_after)

    def _post(self, payload: dict[str, Any]) -> None:
        from healer import slack_api  # only when sending: see the module docstring

        timeout = max(1, math.ceil(self.timeout.total_seconds()))
        try:
            if self.webhook_url is not None:
                slack_api.post_webhook(self.webhook_url, payload["text"], payload["blocks"], timeout)
            else:
                assert self.token is not None
                web = slack_api.SlackWeb(self.token, self.api_url or DEFAULT_API_URL, timeout)
                web.post(self.channel or "", payload["text"], payload["blocks"])
        except DeliveryError as e:
            raise self._fail(str(e), permanent=e.permanent, retry_after=e.retry_after) from None


def actions_block(
    buttons: tuple[Button, ...], incident: int | None, issued: datetime, key: bytes, host: str = ""
) -> dict[str, Any]:
    """Buttons as a Block Kit actions block; each value is its signed data (chatops.button_data)
    naming the fleet host whose alert it is (chatops.host_tag)."""
    elements = []
    for b in buttons:
        e: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": b.label},
            "action_id": f"healer-{b.verb}{b.stage}",
            "value": button_data(b, incident, issued, key, host),
        }
        if b.verb is Verb.ROLLBACK and b.label != "Cancel":
            e["style"] = "danger"
        elements.append(e)
    return {"type": "actions", "block_id": "healer-actions", "elements": elements}


def channels(section: Section, *, timeout: timedelta, buttons: bool = False) -> list[SlackChannel]:
    """The Slack channel for `[alerts.slack]`, secrets read from the environment now.

    A webhook is used when `webhook_url_env` is configured, else the bot token and `channel`;
    with `buttons` (chat-ops on) and Socket Mode (`app_token_env`), incident alerts carry buttons.
    """
    sev = section.severity
    if section.webhook_url_env:
        url = read_secret(section.webhook_url_env)
        missing = None if url else f"{section.webhook_url_env} is not set"
        return [SlackChannel(sev, webhook_url=url, timeout=timeout, missing=missing)]
    token = read_secret(section.token_env)
    missing = None if token else f"{section.token_env} is not set"
    return [
        SlackChannel(
            sev,
            token=token,
            channel=section.channel,
            api_url=section.api_url,
            timeout=timeout,
            missing=missing,
            buttons=buttons and section.app_token_env is not None,
        )
    ]
