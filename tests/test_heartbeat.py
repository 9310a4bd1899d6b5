"""The dead man's switch against a real loopback HTTP server: pings arrive, failures never
raise, and the URL never reaches the logs."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from services import HttpApp, free_port

from healer.config import Config, Secret, parse_config
from healer.heartbeat import Heartbeat
from healer.logging import QUIET_LOGGERS, setup_logging


def _config(tmp_path: Path, **heartbeat: str) -> Config:
    return parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:1/"}], "heartbeat": heartbeat},
        tmp_path / "healer.toml",
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """healer's own logging setup writing to a buffer, every logger at DEBUG (httpx included,
    which logs request URLs); the root logger is put back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_levels = {n: logging.getLogger(n).level for n in QUIET_LOGGERS}
    stream = io.StringIO()
    setup_logging("debug", stream=stream)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def _secret_path() -> str:
    return f"/ping/{uuid.uuid4()}"


async def test_a_completed_cycle_pings_the_url(
    http_app: Callable[..., HttpApp], client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL from [heartbeat] url_env receives a GET; ping() says it got through."""
    app = http_app("healthy")
    path = _secret_path()
    monkeypatch.setenv("HB_URL", app.url + path)
    hb = Heartbeat.from_config(_config(tmp_path, url_env="HB_URL", timeout="2s"), client)
    assert hb is not None
    assert await hb.ping(ok=True) is True
    assert await hb.ping(ok=False) is True  # a failing app is chat's news; healer is alive
    assert app.requests == [f"GET {path}", f"GET {path}"]


async def test_fail_suffix_is_healthchecks_style_when_asked_for(
    http_app: Callable[..., HttpApp], client: httpx.AsyncClient
) -> None:
    """With fail_suffix a failing cycle pings URL/fail."""
    app = http_app("healthy")
    path = _secret_path()
    hb = Heartbeat(Secret(app.url + path), client, fail_suffix=True)
    await hb.ping(ok=False)
    await hb.ping(ok=True)
    assert app.requests == [f"GET {path}/fail", f"GET {path}"]


async def test_ping_soon_returns_at_once_and_aclose_waits_for_it(
    http_app: Callable[..., HttpApp], client: httpx.AsyncClient
) -> None:
    """ping_soon() does not wait for the request; aclose() does."""
    app = http_app("slow", delay=0.3)
    hb = Heartbeat(Secret(app.url + _secret_path()), client)
    hb.ping_soon()
    hb.ping_soon()  # the first is in flight: skipped, not piled up
    assert app.hits == 0
    await hb.aclose()
    assert app.hits == 1


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("dead", id="nothing-listening"),
        pytest.param("error500", id="http-500"),
        pytest.param("hang", id="no-answer-within-timeout"),
    ],
)
async def test_a_failing_heartbeat_never_raises_and_never_logs_the_url(
    kind: str,
    http_app: Callable[..., HttpApp],
    client: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_stream: io.StringIO,
) -> None:
    """Refused, 500 or hung: ping() returns False within its timeout, logs heartbeat.failed,
    and no log line (httpx's at DEBUG included) shows the URL or its secret path."""
    path = _secret_path()
    base = f"http://127.0.0.1:{free_port()}" if kind == "dead" else http_app(kind).url
    monkeypatch.setenv("HB_URL", base + path)
    hb = Heartbeat.from_config(_config(tmp_path, url_env="HB_URL", timeout="500ms"), client)
    assert hb is not None
    assert await hb.ping() is False
    logged = log_stream.getvalue()
    assert "heartbeat.failed" in logged
    assert path not in logged
    assert path.rsplit("/", 1)[1] not in logged


async def test_a_successful_ping_logs_no_url_either(
    http_app: Callable[..., HttpApp],
    client: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_stream: io.StringIO,
) -> None:
    """httpx logs every request URL at INFO; the redactor masks the heartbeat's."""
    app = http_app("healthy")
    path = _secret_path()
    monkeypatch.setenv("HB_URL", app.url + path)
    hb = Heartbeat.from_config(_config(tmp_path, url_env="HB_URL"), client)
    assert hb is not None
    assert await hb.ping() is True
    logged = log_stream.getvalue()
    assert "HTTP Request" in logged  # httpx did log the request ...
    assert path.rsplit("/", 1)[1] not in logged  # ... without the secret


@pytest.mark.parametrize(
    ("env", "expect_log"),
    [
        pytest.param(None, False, id="no-url-env-key"),
        pytest.param("", True, id="variable-empty"),
    ],
)
async def test_no_heartbeat_without_a_url(
    env: str | None,
    expect_log: bool,
    client: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No url_env: no heartbeat, silently; url_env naming an empty variable: none, said once."""
    if env is None:
        config = _config(tmp_path)
    else:
        monkeypatch.setenv("HB_URL", env)
        config = _config(tmp_path, url_env="HB_URL")
    with caplog.at_level("WARNING", logger="healer.heartbeat"):
        assert Heartbeat.from_config(config, client) is None
    assert any(r.getMessage() == "heartbeat.disabled" for r in caplog.records) is expect_log


async def test_timeout_comes_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: httpx.AsyncClient
) -> None:
    """[heartbeat] timeout bounds each ping."""
    monkeypatch.setenv("HB_URL", "http://127.0.0.1:1/x")
    hb = Heartbeat.from_config(_config(tmp_path, url_env="HB_URL", timeout="3s"), client)
    assert hb is not None
    assert hb.timeout == timedelta(seconds=3)
