"""Real services for tests: a scriptable HTTP app, redis-server and PostgreSQL (I/O).

The fixtures in conftest.py wrap these; tests that need a second instance (a Redis that
dies mid-test, say) can start one here directly. Nothing here is ever skipped: a missing
binary fails with a message naming what to install.
"""

from __future__ import annotations

import glob
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOCALHOST = "127.0.0.1"
BEHAVIOURS = ("healthy", "slow", "error500", "hang", "close", "garbage", "flaky", "ratelimited")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---- HTTP app --------------------------------------------------------------------------------


class HttpApp:
    """A real HTTP server on 127.0.0.1 whose behaviour a test picks and may switch at runtime.

    Behaviours (for every path, unless `routes` maps a path to another one):
      healthy      200 with `body` (default `{"status":"ok"}`)
      slow         like healthy, after `delay` seconds
      error500     500
      hang         reads the request, never answers (until switched away or shut down)
      close        reads the request, closes the connection without answering
      garbage      answers bytes that are not HTTP, then closes
      flaky        a `fail_ratio` share of requests get 500, spread evenly by a counter
      ratelimited  429 with Retry-After: 1
    """

    def __init__(
        self,
        behaviour: str = "healthy",
        *,
        delay: float = 0.5,
        fail_ratio: float = 1 / 3,
        body: str | bytes | Mapping[str, object] = '{"status":"ok"}',
        routes: Mapping[str, str] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.delay = delay
        self.fail_ratio = fail_ratio
        self.body = body
        self.routes: dict[str, str] = dict(routes or {})
        self.requests: list[str] = []  # "GET /health", in arrival order
        self._counter = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server((LOCALHOST, 0), _handler_for(self))
        self.port: int = self._server.server_address[1]
        self.url = f"http://{LOCALHOST}:{self.port}"
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def __str__(self) -> str:
        return self.url

    @property
    def hits(self) -> int:
        return len(self.requests)

    def stop(self) -> None:
        """Release hanging requests, stop serving and close the socket."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _behaviour_for(self, path: str) -> str:
        return self.routes.get(path.split("?", 1)[0], self.behaviour)

    def _next_fails(self) -> bool:
        with self._lock:
            n = self._counter
            self._counter += 1
        # request n fails when it carries the running share of failures over a whole number
        return int((n + 1) * self.fail_ratio) > int(n * self.fail_ratio)

    def _body_bytes(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(dict(self.body)).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler never holds up shutdown or interpreter exit
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (timeout) makes the handler's write fail: expected here


def _handler_for(app: HttpApp) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without TCP_NODELAY, Nagle and delayed ACKs
        # add ~40 ms to every answer
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._serve()

        def _serve(self) -> None:
            app.requests.append(f"{self.command} {self.path}")
            behaviour = app._behaviour_for(self.path)
            if behaviour == "slow":
                app._stopping.wait(app.delay)
                self._answer(200, app._body_bytes())
            elif behaviour == "healthy":
                self._answer(200, app._body_bytes())
            elif behaviour == "error500":
                self._answer(500, b'{"status":"error"}')
            elif behaviour == "ratelimited":
                self._answer(429, b'{"error":"rate limited"}', {"Retry-After": "1"})
            elif behaviour == "flaky":
                if app._next_fails():
                    self._answer(500, b'{"status":"error"}')
                else:
                    self._answer(200, app._body_bytes())
            elif behaviour == "hang":
                while app._behaviour_for(self.path) == "hang" and not app._stopping.wait(0.05):
                    pass
                self.close_connection = True
            elif behaviour == "close":
                self.close_connection = True
            elif behaviour == "garbage":
                self.wfile.write(b"\x00\x17 this is not HTTP \xff\xfe\r\n\r\n")
                self.close_connection = True
            else:
                raise ValueError(f"unknown behaviour {behaviour!r}; expected one of {BEHAVIOURS}")

        def _answer(self, status: int, body: bytes, headers: Mapping[str, str] = {}) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


# ---- redis-server ----------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of our own on 127.0.0.1, in a temporary directory."""

    port: int
    dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def stop(self) -> None:
        _terminate(self.process)


def start_redis(
    directory: Path, *, port: int | None = None, args: Sequence[str] = ()
) -> RedisServer:
    """Start redis-server (no persistence) and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "redis.log", "wb")  # noqa: SIM115  # the server writes it until the session ends
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(directory), *args],
        stdout=log, stderr=subprocess.STDOUT, cwd=directory,
    )  # fmt: skip
    log.close()
    server = RedisServer(port, directory, process)
    deadline = time.monotonic() + 15
    log_path = directory / "redis.log"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}: {_tail(log_path)}")
        if _redis_ping(port):
            return server
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"redis-server did not answer PING on port {port} within 15 s: {_tail(log_path)}")


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            # with requirepass the server is up but answers NOAUTH
            return reply.startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


# ---- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of our own (trust auth) on 127.0.0.1, in a temporary directory."""

    port: int
    dir: Path
    bindir: Path
    as_postgres: bool  # we are root: the binaries run as the postgres user

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def stop(self) -> None:
        _run(self, "pg_ctl", "-D", str(self.data), "stop", "-m", "fast", "-w", "-t", "30")
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl live: `pg_config --bindir`, else /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    pytest.fail("PostgreSQL's initdb and pg_ctl not found (apt-get install postgresql)")


def start_postgres(*, port: int | None = None) -> PostgresServer:
    """initdb + pg_ctl start, as the postgres user when we are root (pg_ctl refuses root)."""
    bindir = postgres_bindir()
    as_postgres = os.geteuid() == 0
    port = port or free_port()
    # Not under pytest's tmp dir: that is private to root (0700) and the postgres user must
    # reach the data directory.
    directory = Path(tempfile.mkdtemp(prefix="healer-pg-"))
    if as_postgres:
        if shutil.which("runuser") is None:
            pytest.fail("runuser is missing: it runs PostgreSQL as the postgres user under root")
        shutil.chown(directory, "postgres", "postgres")
    server = PostgresServer(port, directory, bindir, as_postgres)
    init = _run(server, "initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync")  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"initdb failed ({init.returncode}): {init.stdout[-2000:]}")
    options = f"-p {port} -k {directory} -c listen_addresses={LOCALHOST} -c fsync=off"
    log = str(directory / "pg.log")
    start = _run(
        server,
        "pg_ctl",
        "-D",
        str(server.data),
        "-o",
        options,
        "-l",
        log,
        "-w",
        "-t",
        "60",
        "start",
    )
    if start.returncode != 0:
        why = _tail(directory / "pg.log")
        server.stop()
        pytest.fail(f"pg_ctl start failed ({start.returncode}): {start.stdout[-1000:]} {why}")
    return server


def _run(server: PostgresServer, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(server.bindir / tool), *args]
    if server.as_postgres:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.PIPE
    return subprocess.run(argv, cwd=server.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                          text=True, check=False, timeout=120)  # fmt: skip


# ---- helpers ---------------------------------------------------------------------------------


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _tail(path: Path, size: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"
