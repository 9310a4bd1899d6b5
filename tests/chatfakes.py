"""Loopback Slack and Telegram servers that speak the wire formats, for the real SDKs (I/O).

One ThreadingHTTPServer on 127.0.0.1 serves:

    POST /services/T.../B.../...     a Slack incoming webhook: `ok` (200)
    POST /api/chat.postMessage       the Slack Web API: {"ok": true, "channel": ..., "ts": ...}
    POST /api/chat.update, chat.postEphemeral
    POST /api/apps.connections.open  (app token) the URL of a loopback Socket Mode WebSocket
                                     server, which sends envelopes (`slash`, `click`), records
                                     the acks it reads (`socket_acks`) and sends the envelopes
                                     nobody acked again on `redeliver()`
    POST /bot<TOKEN>/getMe           the Telegram Bot API: {"ok": true, "result": {...}}
    POST /bot<TOKEN>/sendMessage     (with reply_markup: the message keeps its buttons)
    POST /bot<TOKEN>/getUpdates      long polling: the updates a test injected (`say`, `press`)
                                     from `offset` on, waiting up to `timeout` for one
    POST /bot<TOKEN>/answerCallbackQuery, editMessageText, editMessageReplyMarkup

Every request is recorded (service, path, parsed body, monotonic time, the status answered).
Each service has a switchable mode: "ok", "500", "429" (Retry-After / retry_after), "4xx"
(permanent), "slow" (answers after `delay` seconds), "hang" (answers nothing until the mode
changes, then as the new mode says), "reset" (closes without answering), "garbage" (200 with a
body that is not JSON), "shape" (200, `ok`, and a result of the wrong shape), "conflict"
(getUpdates only: 409, as when a second poller uses the token); a mode can last `times`
requests, then "ok" again, and can be limited to one `method` (the others are served "ok").
With `echo=True` an error answer quotes the request's path, as some proxies do (the webhook's
secret path, `/bot<TOKEN>/...`). `stop()` and `start()` make the port refuse connections and
come back on the same port.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from healer.config import Config, parse_config

SLACK = "slack"  # the incoming webhook
SLACK_API = "slack_api"  # the Web API
TELEGRAM = "telegram"

DEFAULT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
DEFAULT_WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXsecretXXXX"
DEFAULT_SLACK_TOKEN = "xoxb-1234-5678-secretbottoken"
DEFAULT_APP_TOKEN = "xapp-1-A111-222-secretapptoken"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


@dataclass
class Recorded:
    """One request the fake received."""

    service: str
    method: str  # the Bot API / Web API method, or "webhook"
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival
    status: int = 0  # what it answered (0: nothing)
    accepted: bool = False  # answered a success the client could read


@dataclass
class Mode:
    name: str = "ok"
    retry_after: int = 1
    status: int = 0  # for "4xx"
    delay: float = 0.0  # for "slow"
    times: int | None = None  # then back to "ok"
    echo: bool = False  # error answers quote the request path
    method: str | None = None  # only this method (getUpdates, sendMessage, ...); the others "ok"


@dataclass
class ChatFake:
    """The fake servers; `url` is the base for the Telegram api_url and the Slack Web API."""

    token: str = DEFAULT_TOKEN
    webhook_path: str = DEFAULT_WEBHOOK_PATH
    slack_token: str = DEFAULT_SLACK_TOKEN
    app_token: str = DEFAULT_APP_TOKEN
    # Slack messages as they stand now, by ts: channel, text, blocks (after chat.update)
    slack_posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)  # what the client answered envelopes
    _sockets: list[socket.socket] = field(default_factory=list)
    _ws_server: socket.socket | None = None
    _envelope: int = 0
    _frames: dict[str, bytes] = field(default_factory=dict)  # every envelope sent, by id
    requests: list[Recorded] = field(default_factory=list)
    modes: dict[str, Mode] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _message_id: int = 0
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _update_id: int = 100
    _arrived: threading.Condition = field(default_factory=threading.Condition)
    # Telegram messages as they stand now, by message id: text and buttons (after edits)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)

    # -- control --

    def start(self) -> ChatFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                fake._handle(self)

            do_GET = do_POST

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port: clients get "connection refused" until `start()`."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        if self._ws_server is not None:
            with contextlib.suppress(OSError):
                self._ws_server.close()
            self._ws_server = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set_mode(self, service: str, name: str, **options: Any) -> None:
        with self._lock:
            self.modes[service] = Mode(name, **options)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + self.webhook_path

    # -- what arrived --

    def accepted(self, service: str, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.service == service and r.accepted and (method is None or r.method == method)
            ]

    def slack_messages(self) -> list[dict[str, Any]]:
        return [r.body for r in self.accepted(SLACK)]

    def slack_api_messages(self) -> list[dict[str, Any]]:
        return [r.body for r in self.accepted(SLACK_API, "chat.postMessage")]

    def telegram_messages(self) -> list[dict[str, Any]]:
        return [r.body for r in self.accepted(TELEGRAM, "sendMessage")]

    def calls(self, method: str) -> list[dict[str, Any]]:
        """The bodies of the Telegram calls of `method` that were accepted, in order."""
        return [r.body for r in self.accepted(TELEGRAM, method)]

    def buttons(self, message_id: int) -> list[tuple[str, str]]:
        """(label, callback data) of the message's buttons as they stand now."""
        with self._lock:
            markup = self.messages[message_id].get("reply_markup") or {}
        return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]

    def say(self, user: int, chat: int, text: str) -> None:
        """A person writes `text` in `chat` (a command): served by the next getUpdates."""
        self._inject({"message": {
            "message_id": self._next_message_id(), "date": int(time.time()), "text": text,
            "chat": {"id": chat, "type": "group" if chat < 0 else "private"},
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
            "entities": [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}],
        }})  # fmt: skip

    def press(self, user: int, message_id: int, label: str) -> str:
        """A person presses the button labelled `label` on a message; returns the query id."""
        with self._lock:
            message = dict(self.messages[message_id])
        data = dict(self.buttons(message_id))[label]
        return self.press_data(user, message_id, data, message)

    def press_data(self, user: int, message_id: int, data: str, message: dict[str, Any] | None = None) -> str:
        """A press with any callback data (an old or forged button)."""
        with self._lock:
            message = message or dict(self.messages[message_id])
            self._update_id += 1
            qid = f"q{self._update_id}"
        self._inject({"callback_query": {
            "id": qid, "data": data, "chat_instance": "1",
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
            "message": {
                "message_id": message_id, "date": int(time.time()), "text": message["text"],
                "chat": {"id": message["chat_id"], "type": "private"},
            },
        }})  # fmt: skip
        return qid

    def _inject(self, update: dict[str, Any]) -> None:
        with self._arrived:
            self._update_id += 1
            self._updates.append({"update_id": self._update_id, **update})
            self._arrived.notify_all()

    def _next_message_id(self) -> int:
        with self._lock:
            self._message_id += 1
            return self._message_id

    def _get_updates(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(body.get("offset") or 0)
        wait = float(body.get("timeout") or 0)
        deadline = time.monotonic() + wait
        with self._arrived:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]  # confirmed ones go
            while not self._updates and time.monotonic() < deadline and self._server is not None:
                self._arrived.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            return list(self._updates)

    # -- Slack Socket Mode --

    def socket_connected(self) -> bool:
        with self._lock:
            return bool(self._sockets)

    def slash(self, user: str, channel: str, text: str) -> str:
        """A person types `/healer <text>` in `channel`; returns the envelope id."""
        return self._send_envelope("slash_commands", {
            "command": "/healer", "text": text, "user_id": user, "user_name": user.lower(),
            "channel_id": channel, "channel_name": channel.lower(), "trigger_id": "1.2.3",
            "response_url": f"{self.url}/commands/response",
        })  # fmt: skip

    def slack_buttons(self, ts: str) -> list[tuple[str, str]]:
        """(label, value) of the buttons of a Slack message as it stands now."""
        return [(e["text"]["text"], e["value"]) for _, e in self._slack_button_elements(ts)]

    def _slack_button_elements(self, ts: str) -> list[tuple[str, dict[str, Any]]]:
        """(block_id, element) of every button of a Slack message as it stands now."""
        with self._lock:
            blocks = self.slack_posts[ts].get("blocks") or []
        return [
            (b.get("block_id", ""), e)
            for b in blocks
            if b.get("type") == "actions"
            for e in b.get("elements", [])
            if e.get("type") == "button"
        ]

    def click(self, user: str, ts: str, label: str) -> str:
        """A person clicks the button labelled `label` on a Slack message; returns the envelope id.

        The envelope's action is the button exactly as healer posted it (action_id, block_id,
        value), as Slack sends it."""
        block_id, element = next((b, e) for b, e in self._slack_button_elements(ts) if e["text"]["text"] == label)
        return self.click_action(user, ts, {**element, "block_id": block_id})

    def click_action(self, user: str, ts: str, element: dict[str, Any]) -> str:
        """A block_actions envelope for a press of `element` (a button, maybe an old or forged one)."""
        with self._lock:
            post = dict(self.slack_posts[ts])
        action = {
            "type": "button", "action_id": element["action_id"], "block_id": element.get("block_id", ""),
            "value": element["value"], "text": element.get("text"), "action_ts": f"{time.time():.6f}",
        }  # fmt: skip
        return self._send_envelope("interactive", {
            "type": "block_actions", "user": {"id": user, "username": user.lower()},
            "channel": {"id": post["channel"], "name": str(post["channel"]).lower()},
            "container": {"type": "message", "message_ts": ts, "channel_id": post["channel"]},
            "message": {"ts": ts, "text": post.get("text"), "blocks": post.get("blocks")},
            "actions": [action], "trigger_id": "1.2.3",
        })  # fmt: skip

    def acked(self, envelope_id: str) -> bool:
        with self._lock:
            return any(a.get("envelope_id") == envelope_id for a in self.socket_acks)

    def slack_calls(self, method: str) -> list[dict[str, Any]]:
        return [r.body for r in self.accepted(SLACK_API, method)]

    def _send_envelope(self, kind: str, payload: dict[str, Any]) -> str:
        with self._lock:
            self._envelope += 1
            eid = f"env-{self._envelope}"
            sockets = list(self._sockets)
        frame = _ws_frame(0x1, _json({"envelope_id": eid, "type": kind, "payload": payload,
                                      "accepts_response_payload": kind == "slash_commands"}))  # fmt: skip
        with self._lock:
            self._frames[eid] = frame
        self._send_frame(frame, sockets)
        return eid

    def redeliver(self) -> list[str]:
        """Send every envelope no client acknowledged again, as Slack does (to whichever
        connection is open now); their ids."""
        with self._lock:
            acked = {a.get("envelope_id") for a in self.socket_acks}
            due = {eid: f for eid, f in self._frames.items() if eid not in acked}
            sockets = list(self._sockets)
        for frame in due.values():
            self._send_frame(frame, sockets)
        return list(due)

    @staticmethod
    def _send_frame(frame: bytes, sockets: list[socket.socket]) -> None:
        assert sockets, "no Socket Mode client is connected"
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.sendall(frame)

    def _ws_url(self) -> str:
        if self._ws_server is None:
            srv = socket.create_server(("127.0.0.1", 0))
            self._ws_server = srv
            threading.Thread(target=self._ws_accept, args=(srv,), daemon=True).start()
        return f"ws://127.0.0.1:{self._ws_server.getsockname()[1]}/link?ticket=t"

    def _ws_accept(self, srv: socket.socket) -> None:
        while True:
            try:
                sock, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=self._ws_serve, args=(sock,), daemon=True).start()

    def _ws_serve(self, sock: socket.socket) -> None:
        """RFC 6455, as much as a Socket Mode client needs: the handshake, then text frames
        (the acks), pings answered with pongs, and a close. A closed connection is forgotten
        (a killed client's socket is not one that is connected)."""
        try:
            self._ws_talk(sock)
        except (OSError, ConnectionError):
            pass
        finally:
            with self._lock:
                if sock in self._sockets:
                    self._sockets.remove(sock)
            sock.close()

    def _ws_talk(self, sock: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = sock.recv(4096)
            if not chunk:
                return
            request += chunk
        key = next(
            line.split(":", 1)[1].strip()
            for line in request.decode().split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        sock.sendall(
            f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        with self._lock:
            self._sockets.append(sock)
        sock.sendall(_ws_frame(0x1, _json({"type": "hello", "num_connections": 1})))
        while True:
            opcode, data = _ws_read(sock)
            if opcode == 0x8:
                return
            if opcode == 0x9:
                sock.sendall(_ws_frame(0xA, data))
            elif opcode == 0x1:
                with self._lock:
                    self.socket_acks.append(json.loads(data))

    def all_text(self) -> str:
        """Everything clients sent, paths, headers and bodies: for "no secret leaked" checks."""
        with self._lock:
            return "\n".join(json.dumps(r.body) for r in self.requests)

    # -- serving --

    def _mode(self, service: str, method: str) -> Mode:
        with self._lock:
            m = self.modes.get(service, Mode())
            if m.method is not None and m.method != method:
                return Mode()
            if m.times is not None:
                m.times -= 1
                if m.times <= 0:
                    self.modes[service] = Mode()
            return m

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = _parse_body(raw, h.headers.get("Content-Type") or "")
        path = h.path.split("?", 1)[0]
        if path.startswith("/bot"):
            service, method = TELEGRAM, path.rsplit("/", 1)[-1]
        elif path.startswith("/api/"):
            service, method = SLACK_API, path[len("/api/") :]
        else:
            service, method = SLACK, "webhook"
        rec = Recorded(service, method, path, dict(h.headers.items()), body, time.monotonic())
        with self._lock:
            self.requests.append(rec)
        mode = self._mode(service, method)
        while mode.name == "hang" and self._server is not None:  # until the test changes the mode
            time.sleep(0.05)
            with self._lock:
                changed = self.modes.get(service) is not mode
            if changed:
                mode = self._mode(service, method)
        if mode.name == "reset":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode.name == "slow":
            time.sleep(mode.delay)
        if mode.name == "garbage":
            status, headers, payload = 200, {"Content-Type": "application/json"}, b"<html>not json"
        elif mode.name == "shape":
            status, headers, payload = (
                200,
                {"Content-Type": "application/json"},
                _json({"ok": True, "result": {"unexpected": ["a", "shape"]}}),
            )
        elif mode.name == "conflict" and method == "getUpdates":
            desc = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
            status, headers, payload = 409, {}, _json({"ok": False, "error_code": 409, "description": desc})
        elif service == TELEGRAM:
            status, headers, payload = self._telegram(path, method, body, mode)
        elif service == SLACK_API:
            status, headers, payload = self._slack_api(h, method, body, mode)
        else:
            status, headers, payload = self._slack_webhook(path, mode)
        # recorded before answering: the client may look at the fake as soon as it has the answer
        with self._lock:
            rec.status = status
            rec.accepted = 200 <= status < 300 and mode.name not in ("slow", "shape") and _ok_body(service, payload)
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
            h.wfile.flush()
        except OSError:  # the client gave up (a timeout): nothing was accepted
            with self._lock:
                rec.accepted = False

    def _slack_webhook(self, path: str, mode: Mode) -> tuple[int, dict[str, str], bytes]:
        text = {"Content-Type": "text/plain"}
        if path != self.webhook_path:
            return 404, text, b"no_service"
        if mode.name == "500":
            return 500, text, b"internal_error" + (f" for POST {path}".encode() if mode.echo else b"")
        if mode.name == "429":
            return 429, {**text, "Retry-After": str(mode.retry_after)}, b"rate_limited"
        if mode.name == "4xx":
            return mode.status or 404, text, b"no_service"
        return 200, text, b"ok"

    def _slack_api(
        self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any], mode: Mode
    ) -> tuple[int, dict[str, str], bytes]:
        js = {"Content-Type": "application/json; charset=utf-8"}
        if method == "apps.connections.open":
            if h.headers.get("Authorization") != f"Bearer {self.app_token}":
                return 200, js, _json({"ok": False, "error": "invalid_auth"})
            return 200, js, _json({"ok": True, "url": self._ws_url()})
        if h.headers.get("Authorization") != f"Bearer {self.slack_token}":
            return 200, js, _json({"ok": False, "error": "invalid_auth"})
        if mode.name == "500":
            return 500, {"Content-Type": "text/plain"}, b"Internal Server Error"
        if mode.name == "429":
            return (
                429,
                {**js, "Retry-After": str(mode.retry_after)},
                _json({"ok": False, "error": "ratelimited"}),
            )
        if mode.name == "4xx":
            return 200, js, _json({"ok": False, "error": "channel_not_found"})
        with self._lock:
            if method == "chat.update":
                ts = str(body.get("ts"))
                if ts not in self.slack_posts:
                    return 200, js, _json({"ok": False, "error": "message_not_found"})
                self.slack_posts[ts].update(text=body.get("text"), blocks=body.get("blocks"))
            else:
                self._message_id += 1
                ts = f"1700000000.{self._message_id:06d}"
                if method == "chat.postMessage":
                    self.slack_posts[ts] = {k: body.get(k) for k in ("channel", "text", "blocks")}
        return (
            200,
            js,
            _json(
                {
                    "ok": True,
                    "channel": body.get("channel"),
                    "ts": ts,
                    "message": {"text": body.get("text")},
                }
            ),
        )

    def _telegram(self, path: str, method: str, body: dict[str, Any], mode: Mode) -> tuple[int, dict[str, str], bytes]:
        js = {"Content-Type": "application/json"}
        if not path.startswith(f"/bot{self.token}/"):
            return 401, js, _json({"ok": False, "error_code": 401, "description": "Unauthorized"})
        if mode.name == "500":
            what = "Internal Server Error" + (f" for POST {path}" if mode.echo else "")
            return 500, js, _json({"ok": False, "error_code": 500, "description": what})
        if mode.name == "429":
            return 429, js, _json({
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {mode.retry_after}",
                "parameters": {"retry_after": mode.retry_after},
            })  # fmt: skip
        if mode.name == "4xx":
            status = mode.status or 400
            return (
                status,
                js,
                _json(
                    {
                        "ok": False,
                        "error_code": status,
                        "description": "Bad Request: chat not found",
                    }
                ),
            )
        bot_id = int(self.token.split(":", 1)[0])
        if method == "getMe":
            return (
                200,
                js,
                _json(
                    {
                        "ok": True,
                        "result": {
                            "id": bot_id,
                            "is_bot": True,
                            "first_name": "healer",
                            "username": "healer_bot",
                        },
                    }
                ),
            )
        if method in ("sendMessage", "editMessageText", "editMessageReplyMarkup"):
            chat = body.get("chat_id")
            chat_id = int(str(chat)) if str(chat).lstrip("-").isdigit() else 1
            with self._lock:
                if method == "sendMessage":
                    self._message_id += 1
                    mid = self._message_id
                    self.messages[mid] = {"chat_id": chat_id, "text": body.get("text")}
                else:
                    mid = int(body.get("message_id") or 0)
                    if mid not in self.messages:
                        return 400, js, _json({"ok": False, "error_code": 400,
                                               "description": "Bad Request: message to edit not found"})  # fmt: skip
                    if method == "editMessageText":
                        self.messages[mid]["text"] = body.get("text")
                self.messages[mid]["reply_markup"] = body.get("reply_markup")
                text = self.messages[mid]["text"]
            result = {
                "message_id": mid,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": bot_id, "is_bot": True, "first_name": "healer"},
                "text": text,
            }
            return 200, js, _json({"ok": True, "result": result})
        if method == "getUpdates":
            return 200, js, _json({"ok": True, "result": self._get_updates(body)})
        if method == "answerCallbackQuery":
            return 200, js, _json({"ok": True, "result": True})
        return 404, js, _json({"ok": False, "error_code": 404, "description": "Not Found"})


def _ws_frame(opcode: int, data: bytes) -> bytes:
    """A server's frame: final, unmasked."""
    n = len(data)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + data


def _ws_read(sock: socket.socket) -> tuple[int, bytes]:
    """One client frame (masked, as RFC 6455 requires of clients)."""

    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exactly(8))[0]
    mask = exactly(4) if b1 & 0x80 else b"\0\0\0\0"
    data = bytes(c ^ mask[i % 4] for i, c in enumerate(exactly(n)))
    return b0 & 0x0F, data


def _json(d: Any) -> bytes:
    return json.dumps(d).encode()


def _ok_body(service: str, payload: bytes) -> bool:
    if service == SLACK:
        return payload == b"ok"
    try:
        return bool(json.loads(payload).get("ok"))
    except ValueError:
        return False


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """JSON or form-encoded (python-telegram-bot sends forms; slack-sdk sends JSON)."""
    if not raw:
        return {}
    text = raw.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            data = json.loads(text)
        except ValueError:
            return {"_raw": text}
        return data if isinstance(data, dict) else {"_raw": data}
    if "x-www-form-urlencoded" in content_type:
        out: dict[str, Any] = {}
        for k, v in parse_qs(text, keep_blank_values=True).items():
            value: Any = v[0] if len(v) == 1 else v
            if isinstance(value, str) and value[:1] in "[{":
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            out[k] = value
        return out
    return {"_raw": text}


def healer_config(
    tmp_path: Path,
    *,
    slack: dict[str, Any] | None = None,
    telegram: dict[str, Any] | None = None,
    log: dict[str, Any] | None = None,
    repeat_every: str = "30m",
    timeout: str = "2s",
) -> Config:
    """A validated healer.toml for alert tests: one dummy check, state in tmp_path."""
    alerts: dict[str, Any] = {"repeat_every": repeat_every, "timeout": timeout}
    if slack is not None:
        alerts["slack"] = slack
    if telegram is not None:
        alerts["telegram"] = telegram
    if log is not None:
        alerts["log"] = log
    data = {
        "state_dir": str(tmp_path / ".healer"),
        "app": {"name": "shop-api"},
        "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/health"}],
        "alerts": alerts,
    }
    return parse_config(data, tmp_path / "healer.toml")
