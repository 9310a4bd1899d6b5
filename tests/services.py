"""Real services for tests: a scriptable HTTP app, redis-server, PostgreSQL, Prometheus scraping
an app's metrics, and private PM2 and supervisord instances (I/O).

The fixtures in conftest.py wrap these; tests that need a second instance (a Redis that
dies mid-test, say) can start one here directly. Nothing here is ever skipped: a missing
binary fails with a message naming what to install.
"""

from __future__ import annotations

import contextlib
import glob
import http.server
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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
        self.in_flight = 0  # requests being served right now
        self.max_in_flight = 0  # the most ever served at once: concurrent clients show here
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
            with app._lock:
                app.in_flight += 1
                app.max_in_flight = max(app.max_in_flight, app.in_flight)
            try:
                self._behave()
            finally:
                with app._lock:
                    app.in_flight -= 1

        def _behave(self) -> None:
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


def start_redis(directory: Path, *, port: int | None = None, args: Sequence[str] = ()) -> RedisServer:
    """Start redis-server (no persistence) and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "redis.log", "wb")  # noqa: SIM115  # the server writes it until the session ends
    # 32 databases, not 16: tests each take a database number of their own and empty it after
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(directory), "--databases", "32", *args],
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
        self.halt()
        shutil.rmtree(self.dir, ignore_errors=True)

    def halt(self) -> None:
        """Stop the server (fast: connections are cut), keeping its data for `start`."""
        _run(self, "pg_ctl", "-D", str(self.data), "stop", "-m", "fast", "-w", "-t", "30")

    def start(self) -> None:
        """Start the server on its port (again, after `halt`)."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses={LOCALHOST} -c fsync=off"
        out = _run(self, "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "pg.log"),
                   "-w", "-t", "60", "start")  # fmt: skip
        if out.returncode != 0:
            why = _tail(self.dir / "pg.log")
            pytest.fail(f"pg_ctl start failed ({out.returncode}): {out.stdout[-1000:]} {why}")

    def create_database(self) -> str:
        """A new, empty database on this server; returns its DSN (drop it with drop_database)."""
        import psycopg

        name = f"t_{os.getpid()}_{next(_DATABASES)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/{name}"

    def drop_database(self, dsn: str) -> None:
        """Drop a database create_database made, closing whatever is still connected to it."""
        import psycopg

        name = dsn.rsplit("/", 1)[1]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


_DATABASES = itertools.count(1)


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
    try:
        server.start()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return server


def _run(server: PostgresServer, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(server.bindir / tool), *args]
    if server.as_postgres:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.PIPE
    return subprocess.run(argv, cwd=server.dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                          text=True, check=False, timeout=120)  # fmt: skip


# ---- PgBouncer -------------------------------------------------------------------------------


@dataclass
class PgBouncer:
    """A pgbouncer of our own in front of a PostgresServer, in a temporary directory."""

    port: int
    dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/postgres"

    def stop(self) -> None:
        _terminate(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_pgbouncer(postgres: PostgresServer, pool_mode: str) -> PgBouncer:
    """pgbouncer with `pool_mode` (session, transaction, statement) on a free port, trust auth,
    as the postgres user under root (pgbouncer refuses to run as root)."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if binary is None:
        pytest.fail("pgbouncer is not installed (apt-get install pgbouncer)")
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="healer-pgb-"))
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\npostgres = host={LOCALHOST} port={postgres.port} dbname=postgres user=postgres\n"
        f"[pgbouncer]\nlisten_addr = {LOCALHOST}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\npool_mode = {pool_mode}\n"
    )
    argv = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        argv = ["runuser", "-u", "postgres", "--", *argv]
    log = open(directory / "pgbouncer.log", "wb")  # noqa: SIM115  # the child writes it until it stops
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    log.close()
    bouncer = PgBouncer(port, directory, process)
    if not wait_for_port(port, 15):
        why = _tail(directory / "pgbouncer.log")
        bouncer.stop()
        pytest.fail(f"pgbouncer did not listen on port {port} within 15 s: {why}")
    return bouncer


# ---- Prometheus ------------------------------------------------------------------------------


@dataclass
class PrometheusServer:
    """A prometheus of our own on 127.0.0.1 (tmp config and storage), scraping every second."""

    port: int
    dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def query(self, promql: str) -> list[Any]:
        """The result of an instant query (for waiting until the scrapes have come in)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urlencode({'query': promql})}", timeout=5) as r:
            return list(json.load(r)["data"]["result"])

    def stop(self) -> None:
        _terminate(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_prometheus(
    targets: Sequence[str], *, port: int | None = None, users: Mapping[str, str] | None = None
) -> PrometheusServer:
    """Start prometheus scraping `targets` (HOST:PORT serving /metrics) every second; wait until
    it is ready. Never the system's service (Debian's package starts one on install). `users`
    (name -> bcrypt hash) turns on basic auth for its API."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus)")
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="healer-prom-"))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "app", "static_configs": [{"targets": list(targets)}]}],
    }
    (directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    web = []
    if users:
        (directory / "web.yml").write_text(json.dumps({"basic_auth_users": dict(users)}))
        web = [f"--web.config.file={directory / 'web.yml'}"]
    log = open(directory / "prometheus.log", "wb")  # noqa: SIM115  # the server writes it until it stops
    process = subprocess.Popen(
        [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address={LOCALHOST}:{port}", "--log.level=warn", *web],
        stdout=log, stderr=subprocess.STDOUT, cwd=directory,
    )  # fmt: skip
    log.close()
    server = PrometheusServer(port, directory, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            why = _tail(directory / "prometheus.log")
            server.stop()
            pytest.fail(f"prometheus exited with {process.returncode}: {why}")
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return server
        except urllib.error.HTTPError as e:
            if e.code == 401:  # it answers, and asks who we are
                return server
        except OSError:
            time.sleep(0.1)
    why = _tail(directory / "prometheus.log")
    server.stop()
    pytest.fail(f"prometheus was not ready on port {port} within 30 s: {why}")


class MetricsApp:
    """An app serving real requests, as its /metrics on 127.0.0.1 tell (prometheus-client):
    `app_requests_total{release, code}` grows by 1000 requests every 50 ms per release, a
    `error_ratios[release]` share of them answered 500; and a latency histogram
    `app_request_seconds{release}` observing `latencies[release]` seconds for each request."""

    def __init__(self, error_ratios: Mapping[str, float], latencies: Mapping[str, float] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        self.error_ratios = dict(error_ratios)
        self.latencies = dict(latencies or {})
        self.registry = CollectorRegistry()
        self._requests = Counter("app_requests", "requests served", ["release", "code"], registry=self.registry)
        self._seconds = Histogram("app_request_seconds", "request latency", ["release"], registry=self.registry)
        self.port = free_port()
        self._server, self._thread = start_http_server(self.port, LOCALHOST, registry=self.registry)
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._serve, daemon=True)
        self._ticker.start()

    @property
    def target(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.wait(0.05):
            for release, ratio in self.error_ratios.items():
                errors = round(1000 * ratio)
                self._requests.labels(release, "500").inc(errors)
                self._requests.labels(release, "200").inc(1000 - errors)
                for _ in range(10 if release in self.latencies else 0):
                    self._seconds.labels(release).observe(self.latencies[release])

    def stop(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()


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


# ---- process managers: PM2 and supervisord ---------------------------------------------------
#
# healer restarts the app through `pm2` / `supervisorctl`; these start a real, private instance
# of each. Their sockets live in a short directory under /tmp, not pytest's tmp_path: a unix
# socket path has 108 bytes at most and test names are long.


def venv_bin() -> Path:
    """The bin directory of the running interpreter's venv: supervisord and supervisorctl."""
    return Path(sys.executable).parent


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ with the venv's bin first on PATH (plus `extra`): for healer child processes,
    so the `supervisorctl` or `python` they run is the venv's."""
    path = os.environ.get("PATH", os.defpath)
    return {**os.environ, "PATH": f"{venv_bin()}{os.pathsep}{path}", **(extra or {})}


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Pm2:
    """A PM2 daemon of our own: PM2_HOME is a private tmp dir, so `pm2 kill` ends only ours.

    The daemon starts with the first `pm2` command and keeps the environment of that command.
    A healer child process needs `env=pm2.env` (PM2_HOME, PATH) so the `pm2` it runs reaches
    this daemon, and `[process]` as `pm2.process_toml(name)` (`manager = "pm2"`, `name`).
    """

    def __init__(self, home: Path | None = None) -> None:
        binary = shutil.which("pm2")
        if binary is None:
            pytest.fail("pm2 is not installed (npm install -g pm2, or run scripts/test)")
        self.binary = binary
        self.home = home or Path(tempfile.mkdtemp(prefix="healer-pm2-"))
        self.env = tool_env({"PM2_HOME": str(self.home)})
        self._used = False

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`pm2 ARGS` against this daemon; fails the test on a non-zero exit when `check`."""
        self._used = True
        proc = subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            pytest.fail(f"pm2 {' '.join(args)} exited with {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
        return proc

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        autorestart: bool = False,
    ) -> int:
        """Start `argv` as the PM2 app `name` (exec'd as is: `interpreter: "none"`); its PID.

        `autorestart` is off by default: in tests healer, not PM2, is the one that restarts.
        The app's stdout and stderr go to `log_path(name)`.
        """
        log = str(self.log_path(name))
        app = {
            "name": name, "script": argv[0], "args": list(argv[1:]), "interpreter": "none",
            "cwd": str(cwd or self.home), "autorestart": autorestart, "env": dict(env or {}),
            "out_file": log, "error_file": log, "merge_logs": True, "time": False,
        }  # fmt: skip
        ecosystem = self.home / f"{name}.ecosystem.json"
        ecosystem.write_text(json.dumps({"apps": [app]}))
        self.run("start", str(ecosystem))
        pid = self.pid(name)
        if pid is None:
            pytest.fail(f"pm2 app {name} is not online after `pm2 start`: {self.status(name)}; {self.log(name)}")
        return pid

    def jlist(self) -> list[dict[str, Any]]:
        """`pm2 jlist`: one dict per app."""
        apps = json.loads(self.run("jlist").stdout)
        assert isinstance(apps, list), apps
        return apps

    def _app(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.jlist() if a.get("name") == name), None)

    def status(self, name: str) -> str | None:
        """PM2's status of the app ("online", "stopped", "errored", ...); None if PM2 has none."""
        app = self._app(name)
        return None if app is None else str(app["pm2_env"]["status"])

    def pid(self, name: str) -> int | None:
        """The app's PID from `pm2 jlist`; None when it is not running."""
        app = self._app(name)
        if app is None or app["pm2_env"]["status"] != "online" or not app.get("pid"):
            return None
        return int(app["pid"])

    def restart(self, name: str) -> int | None:
        """`pm2 restart NAME`, as healer runs it; the new PID."""
        self.run("restart", name)
        return self.pid(name)

    def process_section(self, name: str) -> dict[str, str]:
        """healer's `[process]` table for the app."""
        return {"manager": "pm2", "name": name}

    def process_toml(self, name: str) -> str:
        """healer's `[process]` section for the app, as healer.toml text."""
        return f'[process]\nmanager = "pm2"\nname = {json.dumps(name)}\n'

    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def log(self, name: str) -> str:
        """The last of the app's output (stdout and stderr), for failure messages."""
        return _tail(self.log_path(name))

    def daemon_pid(self) -> int | None:
        """The PM2 daemon's PID, from PM2_HOME/pm2.pid; None when it never started."""
        try:
            return int((self.home / "pm2.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """`pm2 kill`: stop every app and the daemon; then remove PM2_HOME. Safe to call twice."""
        if self._used and self.home.exists():
            daemon = self.daemon_pid()
            self.run("kill", check=False)
            if daemon is not None and not wait_until(lambda: not pid_alive(daemon), 10):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(daemon, signal.SIGKILL)
        shutil.rmtree(self.home, ignore_errors=True)


class Supervisord:
    """A supervisord of our own running one program, its config, socket and logs in a tmp dir.

    The program runs `argv` in `cwd` with `autorestart=false`, `startsecs=1` and
    `startretries=0` unless `options` says otherwise (any `[program:x]` keys): in tests healer,
    not supervisor, is the one that restarts. A healer child process needs `[process]` as
    `supervisord.process_toml()` (`manager = "supervisor"`, `name`, `control` =
    `control_argv`, which names this config) and `env=supervisord.env` (the venv's bin on PATH).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.supervisord = venv_bin() / "supervisord"
        self.supervisorctl = venv_bin() / "supervisorctl"
        if not self.supervisord.exists():
            pytest.fail(f"{self.supervisord} is missing (pip install supervisor, or run scripts/test)")
        self.dir = Path(tempfile.mkdtemp(prefix="healer-sv-"))
        self.conf = self.dir / "supervisord.conf"
        self.control_argv = [str(self.supervisorctl), "-c", str(self.conf)]
        self.env = tool_env(env)
        self.process: subprocess.Popen[bytes] | None = None
        program = {
            "command": shlex.join(argv), "directory": str(cwd or self.dir), "autostart": "true",
            "autorestart": "false", "startsecs": "1", "startretries": "0", "stopwaitsecs": "5",
            "stopasgroup": "true", "killasgroup": "true", "redirect_stderr": "true",
            "stdout_logfile": str(self.log_path), **(options or {}),
        }  # fmt: skip
        for key, value in program.items():
            # supervisor's config parser ends a value at an inline comment, with no way to quote it
            if re.search(r"\s[;#]", value):
                pytest.fail(f"supervisor would cut [program:{name}] {key} at ' ;' or ' #': {value!r}")
        # supervisor expands %(name)s in its values: a literal % is written %%
        lines = [
            "[unix_http_server]", f"file={self.dir / 'supervisor.sock'}", "chmod=0700", "",
            "[supervisord]", f"logfile={self.dir / 'supervisord.log'}", f"pidfile={self.dir / 'supervisord.pid'}",
            f"childlogdir={self.dir}", "user=root" if os.geteuid() == 0 else "", "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
            "[supervisorctl]", f"serverurl=unix://{self.dir / 'supervisor.sock'}", "",
            f"[program:{name}]", *(f"{k}={v.replace('%', '%%')}" for k, v in program.items()), "",
        ]  # fmt: skip
        self.conf.write_text("\n".join(lines))

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def start(self, timeout: float = 20) -> None:
        """Run supervisord in the foreground (our child); wait until the program has started or
        failed to (out of STARTING and BACKOFF)."""
        out = open(self.dir / "supervisord.out", "wb")  # noqa: SIM115  # the child writes it
        self.process = subprocess.Popen(
            [str(self.supervisord), "--nodaemon", "-c", str(self.conf)], env=self.env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out.close()

        def settled() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"supervisord exited with {self.process.returncode}: {self.daemon_log()}")
            return self.state() not in (None, "STARTING", "BACKOFF")

        if not wait_until(settled, timeout, 0.2):
            pytest.fail(f"supervisord's {self.name} did not leave STARTING in {timeout:g}s: {self.daemon_log()}")

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`supervisorctl -c CONF ARGS`, as healer runs it."""
        return subprocess.run(
            [*self.control_argv, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip

    def state(self, name: str | None = None) -> str | None:
        """The program's state (RUNNING, STOPPED, EXITED, FATAL, ...); None while supervisord
        does not answer."""
        out = self.ctl("status", name or self.name).stdout.split()
        # `NAME  STATE  pid 12, uptime ...`; supervisorctl exits 3 when the program is not running
        return out[1] if len(out) >= 2 and out[0] == (name or self.name) else None

    def pid(self, name: str | None = None) -> int | None:
        """`supervisorctl pid NAME`; None when the program is not running."""
        out = self.ctl("pid", name or self.name).stdout.strip()
        return int(out) if out.isdigit() and int(out) > 0 else None

    def restart(self, name: str | None = None) -> int | None:
        """`supervisorctl restart NAME`, as healer runs it; the new PID."""
        proc = self.ctl("restart", name or self.name)
        if proc.returncode != 0:
            pytest.fail(f"supervisorctl restart exited with {proc.returncode}: {proc.stdout}{proc.stderr}")
        return self.pid(name)

    def process_section(self, name: str | None = None) -> dict[str, object]:
        """healer's `[process]` table for the program."""
        return {"manager": "supervisor", "name": name or self.name, "control": list(self.control_argv)}

    def process_toml(self, name: str | None = None) -> str:
        """healer's `[process]` section for the program, as healer.toml text."""
        return (
            f'[process]\nmanager = "supervisor"\nname = {json.dumps(name or self.name)}\n'
            f"control = {json.dumps(self.control_argv)}\n"
        )

    def log(self) -> str:
        """The last of the program's output, for failure messages."""
        return _tail(self.log_path)

    def daemon_log(self) -> str:
        return _tail(self.dir / "supervisord.log")

    def stop(self) -> None:
        """SIGTERM supervisord (it stops the program first), SIGKILL after 15 s; then remove
        its directory. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_supervisord(
    name: str,
    argv: Sequence[str],
    cwd: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, str] | None = None,
) -> Supervisord:
    """A running `Supervisord` whose program has started (or failed to)."""
    server = Supervisord(name, argv, cwd, env=env, options=options)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
