"""The sample web app that `healer demo` deploys, breaks and rolls back (I/O; stdlib only).

    python -m healer.demo.sampleapp serve   --repo DIR --port N [--redis-url URL [--needs-redis]] [--rate-limit N]
    python -m healer.demo.sampleapp restart --repo DIR --port N [--redis-url URL [--needs-redis]] [--rate-limit N]
                                       [--log FILE]

`serve` reads `DIR/app.json` once, at start, the way a real app reads its code and settings:
`{"version": "1.0", "broken": false}`. `GET /health` answers 200 `{"status": "ok", ...}`, or
as the settings and options say (the first that applies wins):

- `"crash": true`: a release that crashes at start. `serve` prints
  `sampleapp 2.0: crashed at start: <error>` on stderr and exits 1 without listening.
- `"hang": true`: a wedged app. Its process stays alive and accepts connections, but a
  request to /health never gets an answer (the handler thread sleeps until the process ends).
- `"broken": true`: the demo's bad commit. /health answers 500.
- `"delay_ms": N`: a slow release. Every answer (the others' too) waits N milliseconds first.
- `--needs-redis` (with `--redis-url`): an app that cannot work without Redis. /health answers
  503 `{"status": "error", "error": "redis unreachable: ..."}` whenever a PING to Redis fails
  or takes longer than half a second.

`error` in app.json is the error those releases report. With `--redis-url` every request is
also counted in the key `ratelimit:<client ip>` (a one-minute window) and answered 429 past
`--rate-limit`; when Redis cannot be reached that count is skipped (fail open). The socket is
bound with SO_REUSEPORT, so a new version can start beside the old one before the old one stops.

`restart` is the app's own deploy step, the demo's `[rollback] after` command: start the new
process on the checked-out code, wait until it listens, then stop the old ones (SIGTERM, then
SIGKILL after five seconds). A deploy with no gap, so healer never sees a half-done restart.
A new process that exits before it listens (a release that crashes at start) leaves the old
ones serving: `restart` exits 1 and prints the new process's last words and whether anything
is still serving.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

MODULE = "healer.demo.sampleapp"
SETTINGS = "app.json"
READY_ENV = "SAMPLEAPP_READY_FILE"  # where `serve` writes its PID once it listens (for restart)
DEFAULT_RATE_LIMIT = 600  # requests per client per minute
RATE_WINDOW = 60  # seconds
REDIS_TIMEOUT = 0.5  # seconds; a slow Redis must not make /health slow
STOP_WAIT = 5.0  # seconds between SIGTERM and SIGKILL
READY_WAIT = 15.0  # seconds for the new process to listen
HANG_SLICE = 60.0  # seconds; a hanging handler sleeps in slices like this until the process ends
DEFAULT_ERROR = "KeyError: 'SESSION_SECRET' (read by the new session store)"


def serve_argv(repo: Path, port: int, *, redis_url: str | None = None, rate_limit: int | None = None,
               python: str | None = None, needs_redis: bool = False) -> list[str]:  # fmt: skip
    """The argv that starts the app: healer's `[process] start`, and what `restart` runs."""
    argv = [python or sys.executable, "-m", MODULE, "serve", "--repo", str(repo), "--port", str(port)]
    return argv + _options(redis_url, rate_limit, needs_redis)


def _options(redis_url: str | None, rate_limit: int | None, needs_redis: bool) -> list[str]:
    if needs_redis and not redis_url:
        raise ValueError("needs_redis: expected a redis_url too")
    argv = []
    if redis_url:
        argv += ["--redis-url", redis_url]
    if needs_redis:
        argv.append("--needs-redis")
    if rate_limit is not None:
        argv += ["--rate-limit", str(rate_limit)]
    return argv


def match_text(repo: Path) -> str:
    """What the app's command line contains: healer's `[process] match`. The `restart` command's
    own command line does not contain it."""
    return f"{MODULE} serve --repo {repo}"


def restart_argv(repo: Path, port: int, *, redis_url: str | None = None, rate_limit: int | None = None,
                 log: Path | None = None, python: str | None = None,
                 needs_redis: bool = False) -> list[str]:  # fmt: skip
    """The argv of `restart`: the demo's deploy step and its `[rollback] after` command."""
    argv = [python or sys.executable, "-m", MODULE, "restart", "--repo", str(repo), "--port", str(port)]
    argv += _options(redis_url, rate_limit, needs_redis)
    if log is not None:
        argv += ["--log", str(log)]
    return argv


# ---- settings ----------------------------------------------------------------------------------


def read_settings(repo: Path) -> dict[str, Any]:
    """`app.json` of the checked-out code; a missing or bad file is a broken release."""
    try:
        data = json.loads((repo / SETTINGS).read_text("utf-8"))
    except (OSError, ValueError) as e:
        return {"version": "?", "broken": True, "error": f"cannot read {SETTINGS}: {e}"}
    if not isinstance(data, dict):
        return {"version": "?", "broken": True, "error": f"{SETTINGS} is not a JSON object"}
    return data


# ---- a very small Redis client (RESP over a socket) ---------------------------------------------


class RedisError(Exception):
    pass


def redis_call(url: str, *commands: tuple[str, ...]) -> list[Any]:
    """Run `commands` on one short connection; returns their replies. Raises OSError/RedisError."""
    parts = urlsplit(url)
    db = (parts.path or "/0").lstrip("/") or "0"
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=REDIS_TIMEOUT) as sock:
        todo = ([("SELECT", db)] if db != "0" else []) + list(commands)
        out = b"".join(_encode(c) for c in todo)
        sock.sendall(out)
        with sock.makefile("rb") as reader:
            replies = [_reply(reader) for _ in todo]
    return replies[len(todo) - len(commands) :]


def _encode(cmd: tuple[str, ...]) -> bytes:
    out = [f"*{len(cmd)}\r\n".encode()]
    for a in cmd:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _reply(r: Any) -> Any:
    line = r.readline()
    if not line:
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = r.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [_reply(r) for _ in range(int(rest))]
    raise RedisError(f"unexpected reply {line!r}")


# ---- serve ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # a new version listens beside the old one during a restart
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _handler(
    settings: dict[str, Any], redis_url: str | None, limit: int, needs_redis: bool = False
) -> type[BaseHTTPRequestHandler]:
    version = str(settings.get("version", "?"))
    broken = bool(settings.get("broken", False))
    hang = bool(settings.get("hang", False))
    error = str(settings.get("error") or DEFAULT_ERROR)
    delay = max(0.0, float(settings.get("delay_ms") or 0)) / 1000

    class Handler(BaseHTTPRequestHandler):
        server_version = f"sampleapp/{version}"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line a second from healer's checks would bury the app's own messages

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _rate_limited(self) -> bool:
            if not redis_url:
                return False
            key = f"ratelimit:{self.client_address[0]}"
            try:
                _, count = redis_call(redis_url, ("SET", key, "0", "EX", str(RATE_WINDOW), "NX"), ("INCR", key))
            except (OSError, RedisError):
                return False  # fail open: no Redis is no reason to refuse everyone
            return int(count) > limit

        def _redis_down(self) -> str | None:
            """Why Redis cannot be used (None: it answered PING in time)."""
            assert redis_url is not None
            try:
                reply = redis_call(redis_url, ("PING",))
            except (OSError, RedisError) as e:
                return f"redis unreachable: {e or type(e).__name__}"
            return None if reply == ["PONG"] else f"redis unreachable: PING answered {reply!r}"

        def do_GET(self) -> None:
            if delay:
                time.sleep(delay)  # a slow release: its own thread, so others wait their own turn
            if self._rate_limited():
                self._send(HTTPStatus.TOO_MANY_REQUESTS, {"status": "rate_limited", "version": version})
                return
            if self.path.split("?")[0] == "/health":
                down = self._redis_down() if needs_redis and not (hang or broken) else None
                if hang:
                    # wedged: the process lives and the connection stays open, with no answer;
                    # daemon threads end with the process
                    while True:
                        time.sleep(HANG_SLICE)
                elif broken:
                    self._send(
                        HTTPStatus.INTERNAL_SERVER_ERROR, {"status": "error", "version": version, "error": error}
                    )
                elif down is not None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "error", "version": version, "error": down})
                else:
                    self._send(HTTPStatus.OK, {"status": "ok", "version": version, "pid": os.getpid()})
                return
            if self.path == "/":
                self._send(HTTPStatus.OK, {"app": "healer sample app", "version": version, "health": "/health"})
                return
            self._send(HTTPStatus.NOT_FOUND, {"status": "not found"})

    return Handler


def serve(repo: Path, port: int, redis_url: str | None, limit: int, needs_redis: bool = False) -> int:
    """Listen on 127.0.0.1:`port` until SIGTERM or SIGINT; exit 1 at once if the release crashes."""
    settings = read_settings(repo)
    version = settings.get("version", "?")
    if settings.get("crash"):
        print(f"sampleapp {version}: crashed at start: {settings.get('error') or DEFAULT_ERROR}", file=sys.stderr)
        return 1
    server = _Server(("127.0.0.1", port), _handler(settings, redis_url, limit, needs_redis))
    if settings.get("hang"):
        state = "WEDGED: /health never answers"
    elif settings.get("broken"):
        state = "BROKEN: /health answers 500"
    elif settings.get("delay_ms"):
        state = f"SLOW: every answer waits {settings['delay_ms']} ms"
    else:
        state = "healthy" + (", needs Redis" if needs_redis else "")
    print(f"sampleapp {version} pid {os.getpid()} on http://127.0.0.1:{port} ({state})", flush=True)
    ready = os.environ.get(READY_ENV)
    if ready:
        tmp = Path(f"{ready}.tmp")
        tmp.write_text(str(os.getpid()))
        tmp.replace(ready)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


# ---- restart -------------------------------------------------------------------------------------


def running(match: str, exclude: set[int] | None = None) -> list[int]:
    """PIDs of live processes whose command line contains `match` (Linux /proc)."""
    skip = {os.getpid(), *(exclude or set())}
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if status != "Z" and match in cmd:
            out.append(int(entry.name))
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z"


def restart(
    repo: Path, port: int, redis_url: str | None, limit: int | None, log: Path | None, needs_redis: bool = False
) -> int:
    """Start the app on the checked-out code, wait until it listens, then stop the old ones.

    1. Find the running processes of the app (by command line).
    2. Start `serve` detached (a new session, output to `log`, else to an unnamed temporary
       file), told to write its PID once it listens; wait for that, or for it to die: then exit
       1 with its last line, and the old ones, if any, keep serving.
    3. SIGTERM the old processes; SIGKILL those still alive after five seconds.
    """
    match = match_text(repo)
    old = running(match)
    ready = Path(tempfile.gettempdir()) / f"sampleapp-ready-{os.getpid()}-{time.monotonic_ns()}"
    argv = serve_argv(repo, port, redis_url=redis_url, rate_limit=limit, needs_redis=needs_redis)
    # the new process's output, to show why it died; the app prints one line at start and no more
    out = open(log, "ab") if log else tempfile.TemporaryFile()  # noqa: SIM115 -- handed to the child
    start = out.seek(0, os.SEEK_END)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env={**os.environ, READY_ENV: str(ready)},
        )  # fmt: skip
        deadline = time.monotonic() + READY_WAIT
        while not ready.exists():
            if proc.poll() is not None:
                serving = "the old ones keep serving" if old else "nothing is serving"
                last = _last_line(log, start) if log else _last_line_of(out, start)
                print(f"restart: the new process exited with {proc.returncode}"
                      + (f" ({last})" if last else "") + f"; {serving}"
                      + (f" (see {log})" if log else ""), file=sys.stderr)  # fmt: skip
                return 1
            if time.monotonic() > deadline:
                proc.kill()
                print(f"restart: the new process did not listen within {READY_WAIT:g}s", file=sys.stderr)
                return 1
            time.sleep(0.02)
    finally:
        out.close()
        ready.unlink(missing_ok=True)
    for pid in old:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + STOP_WAIT
    left = [p for p in old if _alive(p)]
    while left and time.monotonic() < end:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    settings = read_settings(repo)
    stopped = f"stopped pid {', '.join(map(str, old))}" if old else "nothing was running"
    print(f"restart: started {settings.get('version', '?')} as pid {proc.pid}; {stopped}", flush=True)
    return 0


def _last_line(log: Path, start: int) -> str:
    with open(log, "rb") as f:
        return _last_line_of(f, start)


def _last_line_of(f: IO[bytes], start: int) -> str:
    f.seek(start)
    lines = f.read()[-2000:].decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("serve", "restart"))
    parser.add_argument("--repo", type=Path, required=True, help="the app's git work tree (holds app.json)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default=None)
    needs = "/health answers 503 while Redis does not answer PING (requires --redis-url)"
    parser.add_argument("--needs-redis", action="store_true", help=needs)
    limit = f"requests per client per minute (default {DEFAULT_RATE_LIMIT})"
    parser.add_argument("--rate-limit", type=int, default=None, help=limit)
    parser.add_argument("--log", type=Path, default=None, help="restart: where the new process writes its output")
    a = parser.parse_args(argv)
    if a.needs_redis and not a.redis_url:
        parser.error("--needs-redis: expected --redis-url URL too")
    if a.command == "serve":
        return serve(a.repo, a.port, a.redis_url, a.rate_limit or DEFAULT_RATE_LIMIT, a.needs_redis)
    return restart(a.repo, a.port, a.redis_url, a.rate_limit, a.log, a.needs_redis)


if __name__ == "__main__":
    sys.exit(main())
