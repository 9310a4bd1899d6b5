"""Slack chat-ops over Socket Mode: the `/healer` slash command and the alerts' buttons, with no
public endpoint (I/O).

slack-sdk's built-in Socket Mode client (healer/slack_api.py: threads; its asyncio clients need
aiohttp, which we do not install) gets a WebSocket URL from `apps.connections.open` with the
app-level token, and reconnects by itself. Every envelope is acknowledged at once from the
client's thread, well within Slack's 3 seconds, before any work; the work runs on healer's event
loop. Replies and edits go through the bot token's Web API client (chat.postMessage,
chat.postEphemeral, chat.update) in a worker thread. A Web API that is down or slow only delays
the reply. In a fleet, the ack waits on the dispatcher's `leading()`: a healer that no longer
leads leaves the envelope unacknowledged (Slack delivers it again, to the leader's connection)
and closes its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from healer.alerts.slack import DEFAULT_API_URL, Section, actions_block
from healer.chat.dispatch import Dispatcher, Step, listened_chats
from healer.chatops import button_key
from healer.config import Config, Secret, read_secret
from healer.errors import DeliveryError
from healer.logging import log_event
from healer.redact import redact
from healer.slack_api import SlackWeb, SocketMode

log = logging.getLogger("healer.chat.slack")

REQUEST_TIMEOUT = 10  # seconds, for a reply or an update
MIN_BACKOFF = timedelta(seconds=1)
MAX_BACKOFF = timedelta(minutes=2)
_ACTIONS_BLOCK = "healer-actions"


@dataclass
class SlackListener:
    """One Socket Mode connection; answers in the listened channels."""

    config: Config
    app_token: Secret
    bot_token: Secret
    channels: set[str]  # ids and names ("C0123", "#ops", "ops")
    dispatcher: Dispatcher
    api_url: str

    @property
    def key(self) -> bytes:
        return button_key(self.bot_token.reveal())

    def _web(self) -> SlackWeb:
        return SlackWeb(self.bot_token, self.api_url, REQUEST_TIMEOUT)

    async def run(self) -> bool:
        """Connect (retrying with back-off) and serve until cancelled, or until this healer no
        longer leads its fleet (True)."""
        loop = asyncio.get_running_loop()
        not_leading = asyncio.Event()

        def on_request(kind: str, payload: dict[str, Any]) -> None:
            # in the client's thread, the envelope acknowledged: hand the work to the event loop
            asyncio.run_coroutine_threadsafe(self._handle(kind, payload), loop)

        def on_refused() -> None:
            loop.call_soon_threadsafe(not_leading.set)

        client = SocketMode(self.app_token, self._web(), on_request, log, self.dispatcher.leading, on_refused)
        backoff = MIN_BACKOFF
        try:
            while self.dispatcher.leading():
                try:
                    await asyncio.to_thread(client.connect)
                    break
                except DeliveryError as e:
                    log_event(log, "chatops.connect_failed", level=logging.WARNING, platform="slack",
                              error=str(e), retry_in=f"{backoff.total_seconds():g}s")  # fmt: skip
                    await asyncio.sleep(backoff.total_seconds())
                    backoff = min(backoff * 2, MAX_BACKOFF)
            else:
                return True
            log_event(log, "chatops.listening", platform="slack")
            await not_leading.wait()  # the client's threads do the rest until we are cancelled
            log_event(log, "chatops.not_leading", platform="slack", then="the fleet's leader gets the envelope")
            return True
        finally:
            # close() joins the client's threads: never on the event loop, and never waited for
            threading.Thread(target=client.close, daemon=True).start()

    async def _handle(self, kind: str, payload: dict[str, Any]) -> None:
        try:
            if kind == "slash_commands":
                await self._command(payload)
            elif kind == "interactive" and payload.get("type") == "block_actions":
                await self._press(payload)
        except Exception as e:  # one bad envelope must not end the listener
            log_event(log, "chatops.update_failed", level=logging.WARNING, error=redact(f"{type(e).__name__}: {e}"))

    def _listened(self, channel_id: str, name: str) -> bool:
        return bool({channel_id, name, f"#{name}"} & self.channels)

    async def _command(self, payload: dict[str, Any]) -> None:
        channel = str(payload.get("channel_id", ""))
        if not self._listened(channel, str(payload.get("channel_name", ""))):
            log_event(log, "chatops.ignored", chat=channel)
            return
        reply = await self.dispatcher.command(f"slack:{payload.get('user_id', '')}", str(payload.get("text", "")))
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": redact(reply.text)}}]
        if reply.buttons and reply.issued is not None:
            blocks.append(actions_block(reply.buttons, None, reply.issued, self.key))
        await asyncio.to_thread(self._web().post, channel, redact(reply.text), blocks)

    async def _press(self, payload: dict[str, Any]) -> None:
        channel = payload.get("channel") or {}
        channel_id, message = str(channel.get("id", "")), payload.get("message") or {}
        user = f"slack:{(payload.get('user') or {}).get('id', '')}"
        if not self._listened(channel_id, str(channel.get("name", ""))) or not payload.get("actions"):
            return
        value = str(payload["actions"][0].get("value", ""))
        step: Step = await self.dispatcher.press(user, value, self.key)
        web = self._web()
        ts = str(message.get("ts", ""))
        text = str(message.get("text") or "")
        blocks = [b for b in message.get("blocks") or [] if b.get("block_id") != _ACTIONS_BLOCK]
        await asyncio.to_thread(web.tell, channel_id, user.removeprefix("slack:"), step.answer)
        if step.buttons is not None:
            now_blocks = list(blocks)
            if step.buttons and step.issued is not None:
                now_blocks.append(actions_block(step.buttons, step.incident, step.issued, self.key, step.host))
            await asyncio.to_thread(web.update, channel_id, ts, text, now_blocks)
        if step.run is None:
            return
        what = redact(await step.run())
        done = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": f"*{what}*"}]}]
        await asyncio.to_thread(web.update, channel_id, ts, f"{text}\n{what}", done)


def slack_listener(config: Config, dispatcher: Dispatcher) -> SlackListener | None:
    """The listener for `[alerts.slack] app_token_env`, or None without Socket Mode or its tokens."""
    cfg = config.alerts.channels.get("slack")
    if not isinstance(cfg, Section) or cfg.app_token_env is None or cfg.token_env is None:
        return None
    app_token, bot_token = read_secret(cfg.app_token_env), read_secret(cfg.token_env)
    if app_token is None or bot_token is None:
        missing = cfg.app_token_env if app_token is None else cfg.token_env
        log_event(log, "chatops.off", level=logging.WARNING, platform="slack", why=f"{missing} is not set")
        return None
    channels = listened_chats(config, "slack", [cfg.channel] if cfg.channel else [])
    return SlackListener(config, app_token, bot_token, channels, dispatcher, api_url=cfg.api_url or DEFAULT_API_URL)
