"""Helpers the benchmarks share: timing, the machine description, loopback servers, healer in a subprocess (I/O).

Nothing here asserts a time: every figure is a ratio against a reference measured in the same run, or a size.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {LOCALHOST}:{port} after {timeout} s")


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python, OS: what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    tools = {}
    for tool, arg in (("git", "--version"), ("redis-server", "--version")):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            tools[tool] = subprocess.run([tool, arg], capture_output=True, text=True, check=False).stdout.strip()
    import sqlite3

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "os": os_name,
        "sqlite": sqlite3.sqlite_version,
        **tools,
    }


# ---- healer in a subprocess ------------------------------------------------------------------


def healer_argv(config: Path, *args: str) -> list[str]:
    """`healer --config CONFIG ARGS` as the installed console script runs it (python -m healer)."""
    return [PYTHON, "-m", "healer", "--config", str(config), *args]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALER_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_healer(
    config: Path, *args: str, ok_codes: Sequence[int] = (0,)
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run one healer command to its end; (wall seconds, the finished process)."""
    t = time.perf_counter()
    out = subprocess.run(
        healer_argv(config, *args),
        capture_output=True,
        text=True,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - t
    if out.returncode not in ok_codes:
        raise RuntimeError(f"healer {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]} {out.stdout[-500:]}")
    return wall, out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# ---- a loopback HTTP app in its own process --------------------------------------------------

# Paths: /fast answers 200 at once, /slow after SLOW seconds, /hang never (until the client goes).
# One asyncio server handles any number of concurrent keep-alive connections (backlog 4096).
_APP = r"""
import asyncio, sys

SLOW = float(sys.argv[2])

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/hang"):
                await reader.read()  # until the client gives up and closes
                break
            if path.startswith(b"/slow"):
                await asyncio.sleep(SLOW)
            body = b'{"status":"ok"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


@contextlib.contextmanager
def http_app(slow: float = 1.0, marker: str = "healer-bench-app") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An HTTP app on a free loopback port in a subprocess (its command line ends with `marker`);
    yields (base URL, process)."""
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-c", _APP, str(port), str(slow), marker], stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://{LOCALHOST}:{port}", proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# ---- redis-server ----------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[int]:
    """A redis-server of our own on a free loopback port (no persistence); yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "redis.log", "wb") as logf:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(directory), "--enable-debug-command", "local"],
            stdout=logf, stderr=subprocess.STDOUT, cwd=directory,
        )  # fmt: skip
    try:
        wait_for_port(port)
        yield port
    finally:
        stop(proc)


# ---- PostgreSQL ------------------------------------------------------------------------------


def _postgres_bindir() -> Path:
    """Where initdb and pg_ctl live: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_config")
    candidates = [subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip()] if found else []
    candidates += sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists():
            return Path(c)
    raise RuntimeError("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster of our own (trust auth, default settings: fsync on) on a free loopback
    port, run as the postgres user when we are root (pg_ctl refuses root); yields its DSN."""
    import tempfile

    bindir = _postgres_bindir()
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="healer-bench-pg-"))  # not 0700 root's: postgres must reach it
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(directory, "postgres", "postgres")

    def tool(name: str, *args: str) -> None:
        argv = [str(bindir / name), *args]
        argv = ["runuser", "-u", "postgres", "--", *argv] if as_root else argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        out = subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True, check=False, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{name} failed ({out.returncode}): {(out.stdout + out.stderr)[-1500:]}")

    data = str(directory / "data")
    try:
        tool("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {directory} -c listen_addresses={LOCALHOST}"
        tool("pg_ctl", "-D", data, "-o", options, "-l", str(directory / "pg.log"), "-w", "-t", "60", "start")
        try:
            yield f"postgresql://postgres@{LOCALHOST}:{port}/postgres"
        finally:
            tool("pg_ctl", "-D", data, "stop", "-m", "fast", "-w", "-t", "30")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
