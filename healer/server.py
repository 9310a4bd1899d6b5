"""The optional HTTP endpoint: / (the page), /healthz, /status (JSON), /metrics (Prometheus) (I/O).

Off unless `[server] listen` is set. It runs in a daemon thread (stdlib ThreadingHTTPServer),
never on the loop's event loop: a slow scrape cannot delay a cycle, and a hung event loop is
still reported, as a 503 on /healthz. /, /status and /metrics open the state store per request
and close it at once (WAL: readers never block the loop's writes). Everything is read-only.

    server = start_server(config, liveness, leadership=leadership)   # None when off, or the port is taken
    ...
    await server.aclose()                      # at shutdown
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, cast

from healer import __version__
from healer.clock import SystemClock
from healer.logging import log_event, redact
from healer.metrics import CONTENT_TYPE, build_registry, render
from healer.page import render_page
from healer.views import launch_window_start, status_data, timeline_data

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from healer.clock import Clock
    from healer.config import Config
    from healer.fleet import Leadership
    from healer.notify import Liveness

log = logging.getLogger("healer.server")

DEFAULT_HOST = "127.0.0.1"
# A client that opens a connection and sends nothing is dropped after this long, so a stuck
# client holds a thread for seconds, not forever.
REQUEST_TIMEOUT = timedelta(seconds=10)
_POLL = 0.2  # seconds between checks for shutdown in serve_forever

StatusFn = Callable[[], dict[str, Any]]
# how often the page reloads itself: a cycle's news is on screen within seconds, and a
# forgotten browser tab costs one small read of the store this often
PAGE_REFRESH = timedelta(seconds=10)


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:8001`, `[::1]:8001`, `localhost:8001`, `:8001` (loopback) -> (host, port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f'[server] listen: expected HOST:PORT like "127.0.0.1:8001", got "{listen}"'
        raise ValueError(msg)
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request in flight never keeps the process alive at exit
    ops: OpsServer


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = f"healer/{__version__}"
    timeout = REQUEST_TIMEOUT.total_seconds()

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def _handle(self, *, body: bool) -> None:
        ops = cast(_Server, self.server).ops
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/":
                status, ctype, payload = ops.page()
            elif path == "/healthz":
                status, ctype, payload = ops.healthz()
            elif path == "/status":
                status, ctype, payload = ops.status()
            elif path == "/metrics":
                status, ctype, payload = ops.metrics()
            else:
                status, ctype = 404, "text/plain; charset=utf-8"
                payload = b"not found: try /, /healthz, /status or /metrics\n"
        except Exception as e:  # one bad request must not take the endpoint down
            log_event(log, "server.error", level=logging.ERROR, path=path, error=redact(f"{type(e).__name__}: {e}"))
            status, ctype = 500, "application/json"
            payload = json.dumps({"error": redact(f"{type(e).__name__}: {e}")}).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # the stdlib writes every request to stderr; ours go to the log, quietly
        log_event(log, "server.request", level=logging.DEBUG, line=redact(format % args))


class OpsServer:
    """/, /healthz, /status and /metrics on one address, served from a daemon thread."""

    def __init__(
        self,
        config: Config,
        liveness: Liveness,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        clock: Clock | None = None,
        status: StatusFn | None = None,
        registry: CollectorRegistry | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        self.liveness = liveness
        self._status = status
        self._clock: Clock = clock or SystemClock()
        self.registry = registry or build_registry(config, liveness, clock=clock, leadership=leadership)
        cls = _V6Server if ":" in host else _Server
        self._httpd = cls((host, port), _Handler)  # binds now: OSError when the port is taken
        self._httpd.ops = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": _POLL},
            name="healer-server", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (blocks up to a fraction of a second)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    async def aclose(self) -> None:
        """close() off the event loop."""
        await asyncio.to_thread(self.close)

    # ---- the endpoints (called from the server's threads) ----------------------------------

    def healthz(self) -> tuple[int, str, bytes]:
        """200 `ok` while the loop makes progress and can write its state store; else 503 saying
        which: a loop that works from memory is not healthy (it records nothing)."""
        text = "text/plain; charset=utf-8"
        if not self.liveness.is_alive():
            age = int(self.liveness.age().total_seconds())
            return 503, text, f"stalled: the loop made no progress for {age}s\n".encode()
        failed = self.liveness.store_error
        if failed is not None:
            error, since = failed
            line = f"store failing since {since:%Y-%m-%d %H:%M:%S} UTC: {error}; the loop goes on from memory"
            return 503, text, (redact(line) + "\n").encode()
        return 200, text, b"ok\n"

    def status(self) -> tuple[int, str, bytes]:
        """What `healer status --json` prints."""
        data = self._status() if self._status is not None else status_data(self.config)
        return 200, "application/json", (json.dumps(data, indent=2) + "\n").encode()

    def page(self) -> tuple[int, str, bytes]:
        """The picture of the launch window (healer/page.py), reloading itself."""
        now = self._clock.now()
        timeline = timeline_data(self.config, launch_window_start(self.config, now), now)
        html = render_page(timeline, f"{self.config.app.name}: the launch window", now=now, refresh=PAGE_REFRESH)
        return 200, "text/html; charset=utf-8", html.encode()

    def metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE, render(self.registry)


def start_server(
    config: Config, liveness: Liveness, *, clock: Clock | None = None, leadership: Leadership | None = None
) -> OpsServer | None:
    """Start the endpoint `[server] listen` asks for; None when it is off. `leadership` ([fleet]):
    this healer's standing, for /metrics' healer_fleet_leader and healer_fleet_epoch.

    A port that cannot be bound is logged (server.failed) and healer goes on without the
    endpoint: watching the app matters more than being scraped.
    """
    listen = config.server.listen
    if not listen:
        return None
    try:
        host, port = parse_listen(listen)
        server = OpsServer(config, liveness, host=host, port=port, clock=clock, leadership=leadership)
    except (OSError, ValueError) as e:
        log_event(log, "server.failed", level=logging.ERROR, listen=listen, error=str(e))
        return None
    server.start()
    if not is_loopback(host):
        log_event(
            log, "server.exposed", level=logging.WARNING, listen=listen,
            note="/ and /status show commits and incident causes; keep it behind a firewall or on loopback",
        )  # fmt: skip
    log_event(log, "server.started", url=server.url)
    return server
