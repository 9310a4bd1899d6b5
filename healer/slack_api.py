"""slack-sdk behind one door: the only module that imports it, used by the alerts' sender
(incoming webhook, Web API) and by chat-ops (Socket Mode, replies, updates) alike; its errors
become DeliveryError (I/O, blocking: call it from a worker thread).

Imported only when healer talks to Slack: healer.toml's validation imports alerts/slack.py for
its `Section`, and a command that sends nothing must not pay for the SDK. Only the sync clients:
the async ones need aiohttp, which slack-sdk does not install. Their retry handlers are switched
off: the outbox retries with tenacity and honours Retry-After itself, without blocking a thread.
A webhook answers 429 without raising, so its status code is read, not caught. The webhook URL
and the tokens are secrets: every error text is redacted (healer/redact.py).
"""

from __future__ import annotations

import logging
import socket
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.webhook import WebhookClient

from healer.config import Secret
from healer.errors import DeliveryError
from healer.redact import add_secrets, redact

DEFAULT_RETRY_AFTER = 30.0  # seconds, when a 429 does not say
# Web API errors that say "try again" rather than "this will never work"
_TRANSIENT_API_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def post_webhook(url: Secret, text: str, blocks: list[dict[str, Any]], timeout: int) -> None:
    """Post to an incoming webhook; raises DeliveryError (a 4xx is permanent, a 429 says when)."""
    add_secrets(url)  # the client logs the URL
    with _translated(timeout):
        resp = WebhookClient(url.reveal(), timeout=timeout, retry_handlers=[]).send(text=text, blocks=blocks)
    body = redact((resp.body or "").strip())[:200]  # redacted whole: a cut secret would not match
    status = resp.status_code
    if 200 <= status < 300:
        return
    if status == 429:
        after = _retry_after(resp.headers)
        raise _fail(f"rate limited (429), retry after {after:g}s", retry_after=after)
    if 400 <= status < 500:
        # the webhook is gone, revoked or the payload refused: sending it again will not help
        raise _fail(f"refused with {status} {body}", permanent=True)
    raise _fail(f"server error {status} {body}")


class SlackWeb:
    """The Web API with a bot token; every call raises DeliveryError on failure."""

    def __init__(self, token: Secret, api_url: str, timeout: int) -> None:
        add_secrets(token)  # the client logs its headers
        self._timeout = timeout
        base = api_url if api_url.endswith("/") else api_url + "/"
        self.client = WebClient(token=token.reveal(), base_url=base, timeout=timeout, retry_handlers=[])

    def post(self, channel: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """chat.postMessage."""
        with self._api():
            self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """chat.update: the message `ts` now says `text` with `blocks`."""
        with self._api():
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    def tell(self, channel: str, user: str, text: str) -> None:
        """chat.postEphemeral: `text` seen by `user` alone."""
        with self._api():
            self.client.chat_postEphemeral(channel=channel, user=user, text=text)

    @contextmanager
    def _api(self) -> Iterator[None]:
        """A Web API error as ours: a 429 says when, a transient error is retried, the rest not."""
        with _translated(self._timeout):
            try:
                yield
            except SlackApiError as e:
                resp = e.response
                status = int(getattr(resp, "status_code", 0) or 0)
                data = getattr(resp, "data", None)
                code = str(data.get("error", "")) if isinstance(data, dict) else ""
                headers = getattr(resp, "headers", None) or {}
                if status == 429 or code == "ratelimited":
                    after = _retry_after(headers)
                    raise _fail(f"rate limited (429), retry after {after:g}s", retry_after=after) from None
                if status >= 500 or code in _TRANSIENT_API_ERRORS:
                    raise _fail(f"server error {status} {code}".rstrip()) from None
                raise _fail(f"refused: {code or status}", permanent=True) from None


OnRequest = Callable[[str, dict[str, Any]], None]  # an envelope's type and payload


class SocketMode:
    """A Socket Mode connection (the app-level token; no public URL): slack-sdk's built-in
    client, whose threads read the WebSocket and reconnect by themselves.

    Every envelope is acknowledged at once, in the client's thread, before `on_request(type,
    payload)` sees it: Slack wants the ack within 3 seconds, whatever the work takes. Only while
    `gate()` says yes: otherwise the envelope is left unacknowledged (Slack delivers it again,
    to another connection) and `on_refused()` is told.
    """

    def __init__(
        self, app_token: Secret, web: SlackWeb, on_request: OnRequest, logger: logging.Logger,
        gate: Callable[[], bool], on_refused: Callable[[], None],
    ) -> None:  # fmt: skip
        add_secrets(app_token)
        self._client = SocketModeClient(app_token=app_token.reveal(), web_client=web.client, logger=logger)

        def listener(c: BaseSocketModeClient, req: SocketModeRequest) -> None:
            if not gate():
                on_refused()
                return
            c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            on_request(req.type, req.payload)

        self._client.socket_mode_request_listeners.append(listener)

    def connect(self) -> None:
        """Open the connection (apps.connections.open, then the WebSocket); raises DeliveryError."""
        try:
            self._client.connect()
        except (SlackApiError, SlackClientError, OSError, ValueError) as e:
            raise _fail(f"cannot connect: {type(e).__name__}: {e}") from None

    def close(self) -> None:
        """Close the connection; joins the client's threads (blocking)."""
        self._client.close()


@contextmanager
def _translated(timeout: int) -> Iterator[None]:
    """What goes wrong on the way (refused, timed out, a garbled answer) as a DeliveryError."""
    try:
        yield
    except DeliveryError:
        raise
    except SlackRequestError as e:
        raise _fail(f"cannot send: {e}", permanent=True) from None
    except TimeoutError:
        raise _fail(f"no answer within {timeout}s") from None
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, str) else f"{type(e.reason).__name__}: {e.reason}"
        if isinstance(e.reason, TimeoutError | socket.timeout):
            raise _fail(f"no answer within {timeout}s") from None
        raise _fail(f"cannot connect: {reason}") from None
    except (OSError, ValueError) as e:  # connection reset, a garbled answer
        raise _fail(f"cannot send: {type(e).__name__}: {e}") from None


def _fail(what: str, *, permanent: bool = False, retry_after: float | None = None) -> DeliveryError:
    return DeliveryError(redact(what), permanent=permanent, retry_after=retry_after)


def _retry_after(headers: Any) -> float:
    """Seconds from a Retry-After header (either spelling); a default when absent or unreadable."""
    raw: Any = None
    if hasattr(headers, "get"):
        raw = headers.get("Retry-After") or headers.get("retry-after")
    if isinstance(raw, list | tuple):
        raw = raw[0] if raw else None
    try:
        return max(0.0, float(raw)) if raw is not None else DEFAULT_RETRY_AFTER
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
