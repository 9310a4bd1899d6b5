"""The sample app's releases (healthy, broken, crashing, wedged, needing Redis) as real child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import RedisServer, free_port, pid_alive, start_redis, wait_for_port

from healer.demo import sampleapp


def release(repo: Path, **settings: object) -> Path:
    """Write app.json as a commit of that release would."""
    repo.mkdir(parents=True, exist_ok=True)
    (repo / sampleapp.SETTINGS).write_text(json.dumps({"version": "2.0", **settings}))
    return repo


@pytest.fixture
def serve() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """A factory: `serve(repo, port, **options)` starts `sampleapp serve`; all are ended after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(repo: Path, port: int, **options: Any) -> subprocess.Popen[str]:
        argv = sampleapp.serve_argv(repo, port, **options)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


@pytest.fixture
def cleanup_app() -> Iterator[list[Path]]:
    """Repos whose `sampleapp serve` processes (started detached by `restart`) are killed after the test."""
    repos: list[Path] = []
    yield repos
    for repo in repos:
        for pid in sampleapp.running(sampleapp.match_text(repo)):
            os.kill(pid, signal.SIGKILL)


def health(port: int, timeout: float = 2.0) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=timeout)


@pytest.mark.parametrize(
    ("settings", "status", "body_status"),
    [
        pytest.param({}, 200, "ok", id="healthy"),
        pytest.param({"broken": True}, 500, "error", id="broken"),
    ],
)
def test_serve_answers_health_as_the_release_says(
    tmp_path: Path,
    serve: Callable[..., subprocess.Popen[str]],
    settings: dict[str, object],
    status: int,
    body_status: str,
) -> None:
    """A healthy release answers 200 and a broken one 500, as before."""
    port = free_port()
    serve(release(tmp_path / "app", **settings), port)
    assert wait_for_port(port)
    r = health(port)
    assert r.status_code == status
    assert r.json()["status"] == body_status and r.json()["version"] == "2.0"


def test_a_release_that_crashes_at_start_exits_1_without_listening(
    tmp_path: Path, serve: Callable[..., subprocess.Popen[str]]
) -> None:
    """With "crash": true `serve` prints one line naming the error and exits 1 at once."""
    port = free_port()
    p = serve(release(tmp_path / "app", crash=True, error="ImportError: no module named 'sessions'"), port)
    _, err = p.communicate(timeout=15)
    assert p.returncode == 1
    assert err.strip() == "sampleapp 2.0: crashed at start: ImportError: no module named 'sessions'"
    assert not wait_for_port(port, timeout=0.3)


def test_restart_to_a_crashing_release_keeps_the_old_process_serving(
    tmp_path: Path, serve: Callable[..., subprocess.Popen[str]], cleanup_app: list[Path]
) -> None:
    """`restart` onto a release that crashes exits 1 with the crash line, and the old one keeps serving."""
    port = free_port()
    repo = release(tmp_path / "app")
    cleanup_app.append(repo)
    old = serve(repo, port)
    assert wait_for_port(port)
    release(repo, crash=True)
    log = tmp_path / "restart.log"
    out = subprocess.run(sampleapp.restart_argv(repo, port, log=log), capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "crashed at start" in out.stderr and "the old ones keep serving" in out.stderr, out.stderr
    assert old.poll() is None
    assert health(port).status_code == 200
    assert "crashed at start" in log.read_text()


def test_restart_to_a_crashing_release_with_nothing_running_says_so(tmp_path: Path) -> None:
    """`restart` with no old process and a crashing release exits 1 saying nothing is serving."""
    repo = release(tmp_path / "app", crash=True)
    out = subprocess.run(sampleapp.restart_argv(repo, free_port()), capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "sampleapp 2.0: crashed at start" in out.stderr and "nothing is serving" in out.stderr, out.stderr


def test_a_wedged_release_never_answers_health_but_lives(
    tmp_path: Path, serve: Callable[..., subprocess.Popen[str]]
) -> None:
    """With "hang": true /health times out while the process lives, answers / and stops on SIGTERM."""
    port = free_port()
    p = serve(release(tmp_path / "app", hang=True), port)
    assert wait_for_port(port)
    with pytest.raises(httpx.ReadTimeout):
        health(port, timeout=1.0)
    assert p.poll() is None and pid_alive(p.pid)
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    p.terminate()
    assert p.wait(timeout=5) == 0


def test_needs_redis_answers_503_while_redis_is_down(
    tmp_path: Path, serve: Callable[..., subprocess.Popen[str]]
) -> None:
    """--needs-redis makes /health 503 "redis unreachable" while Redis is stopped, 200 again once it is back."""
    redis: RedisServer = start_redis(tmp_path / "redis")
    try:
        port = free_port()
        serve(release(tmp_path / "app"), port, redis_url=redis.url, needs_redis=True)
        assert wait_for_port(port)
        assert health(port).status_code == 200
        redis.stop()
        r = health(port)
        assert r.status_code == 503
        assert r.json()["status"] == "error" and r.json()["error"].startswith("redis unreachable: "), r.json()
        redis = start_redis(tmp_path / "redis", port=redis.port)
        assert health(port).status_code == 200
    finally:
        redis.stop()


def test_needs_redis_answers_within_a_second_when_redis_does_not_answer(
    tmp_path: Path, serve: Callable[..., subprocess.Popen[str]]
) -> None:
    """A Redis that accepts but never answers (SIGSTOPped) gives 503 after the short PING timeout, not a hang."""
    redis = start_redis(tmp_path / "redis")
    try:
        port = free_port()
        serve(release(tmp_path / "app"), port, redis_url=redis.url, needs_redis=True)
        assert wait_for_port(port)
        os.kill(redis.process.pid, signal.SIGSTOP)
        # the rate-limit count and the PING each wait REDIS_TIMEOUT at most: a health check
        # with a timeout a little over that gets its answer
        r = health(port, timeout=4 * sampleapp.REDIS_TIMEOUT + 1)
        assert r.status_code == 503 and "redis unreachable" in r.json()["error"]
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
        redis.stop()


def test_without_needs_redis_the_app_serves_with_redis_down(
    tmp_path: Path, serve: Callable[..., subprocess.Popen[str]]
) -> None:
    """Without --needs-redis a dead Redis changes nothing: the rate limit fails open."""
    port = free_port()
    serve(release(tmp_path / "app"), port, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert wait_for_port(port)
    assert health(port).status_code == 200


def test_needs_redis_requires_a_redis_url(tmp_path: Path) -> None:
    """--needs-redis alone is a usage error (exit 2), and serve_argv refuses it."""
    argv = [sys.executable, "-m", sampleapp.MODULE, "serve", "--repo", str(tmp_path), "--port", "1", "--needs-redis"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--redis-url" in out.stderr
    with pytest.raises(ValueError, match="redis_url"):
        sampleapp.serve_argv(tmp_path, 1, needs_redis=True)


def test_restart_passes_needs_redis_on_to_the_new_process(
    tmp_path: Path, redis_server: RedisServer, cleanup_app: list[Path]
) -> None:
    """restart_argv(..., needs_redis=True) starts a `serve --needs-redis` that checks Redis."""
    port = free_port()
    repo = release(tmp_path / "app")
    cleanup_app.append(repo)
    argv = sampleapp.restart_argv(repo, port, redis_url=redis_server.url, needs_redis=True)
    assert "--needs-redis" in argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    (pid,) = sampleapp.running(sampleapp.match_text(repo))
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"--needs-redis" in cmdline and redis_server.url.encode() in cmdline
    assert health(port).status_code == 200
