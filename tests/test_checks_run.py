"""run_checks and run_check: concurrency, timeouts and probes that raise never break a cycle."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from services import HttpApp, free_port

from healer.checks import PROBES, describe_error, probe_context, run_check, run_checks
from healer.config import CHECK_TYPES, Config, parse_config
from healer.redact import MASK, redact

StartApp = Callable[..., HttpApp]


def config(*checks: dict[str, Any]) -> Config:
    return parse_config({"checks": list(checks)}, Path("healer.toml"))


def test_every_check_type_has_a_probe() -> None:
    """The registry has exactly one probe per check type the config accepts."""
    assert set(PROBES) == set(CHECK_TYPES)


async def test_eight_hanging_checks_wait_together(http_app: StartApp) -> None:
    """Eight checks hanging against 1 s timeouts all wait on the app at once, not one after another."""
    app = http_app("hang")
    cfg = config(*({"name": f"h{i}", "type": "http", "url": app.url, "timeout": "1s"} for i in range(8)))
    async with probe_context(cfg) as ctx:
        results = await run_checks(ctx)
    assert app.max_in_flight >= 8, f"at most {app.max_in_flight} requests at once: checks did not run concurrently"
    assert [r.name for r in results] == [f"h{i}" for i in range(8)]
    assert all(not r.ok and r.symptoms == ("http.timeout",) for r in results)


async def test_results_come_in_config_order_whatever_finishes_first(http_app: StartApp) -> None:
    """A slow first check and a fast second one are returned in config order."""
    slow, fast = http_app("slow", delay=0.3), http_app("healthy")
    cfg = config(
        {"name": "slow", "type": "http", "url": slow.url, "samples": 1},
        {"name": "fast", "type": "http", "url": fast.url, "samples": 1},
        {"name": "cmd", "type": "command", "argv": [sys.executable, "-c", "pass"]},
    )
    async with probe_context(cfg) as ctx:
        results = await run_checks(ctx)
        only_fast = await run_checks(ctx, [cfg.checks[1]])
    assert [r.name for r in results] == ["slow", "fast", "cmd"]
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.name for r in only_fast] == ["fast"]


async def test_a_probe_that_overruns_its_timeout_is_cut_off() -> None:
    """A command that outlives a tiny timeout is a failed `command.timeout` result, on time."""
    cfg = config({"name": "sleepy", "type": "command", "argv": ["sleep", "30"], "timeout": "300ms"})
    async with probe_context(cfg) as ctx:
        r = await run_check(ctx, cfg.checks[0])
    assert not r.ok and r.symptoms == ("command.timeout",)


async def test_probes_that_raise_are_failed_results_not_crashes(tmp_path: Path) -> None:
    """Checks whose probes hit errors come back as failed results beside the healthy ones."""
    cfg = config(
        {"name": "redis", "type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"},
        {"name": "cmd", "type": "command", "argv": ["/nonexistent/healer-no-such-binary"]},
        {"name": "disk", "type": "system", "disk_path": str(tmp_path / "gone")},
        {"name": "ok", "type": "command", "argv": [sys.executable, "-c", "pass"]},
    )
    async with probe_context(cfg) as ctx:
        redis, cmd, disk, ok = await run_checks(ctx)
    assert redis.symptoms == ("redis.down",) and not redis.ok
    assert cmd.symptoms == ("command.error",) and cmd.error and "not found" in cmd.error
    assert disk.symptoms == ("system.error",) and disk.error and disk.error.startswith("FileNotFoundError")
    assert ok.ok


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param("GET http://bob:pw1@h:80/x", (), f"GET http://bob:{MASK}@h:80/x", id="url-userinfo"),
        pytest.param("redis://:pw2@127.0.0.1:6379/0", (), f"redis://:{MASK}@127.0.0.1:6379/0", id="no-user"),
        pytest.param("host=h password=pw3 user=u", (), f"host=h password={MASK} user=u", id="kv"),
        pytest.param("url?token=abc&x=1", (), f"url?token={MASK}&x=1", id="query-token"),
        pytest.param("failed for dsn-with-pw4 here", ("dsn-with-pw4",), f"failed for {MASK} here", id="known"),
    ],
)
def test_redact_hides_credentials(text: str, secrets: tuple[str, ...], expected: str) -> None:
    """URL credentials, password-like values and known secrets never survive redaction."""
    assert redact(text, *secrets) == expected


def test_describe_error_is_one_redacted_line() -> None:
    """An exception becomes its type and the first line of its message, without secrets."""
    exc = ValueError("cannot reach postgresql://u:pw5@db/x\nTraceback line")
    assert describe_error(exc) == f"ValueError: cannot reach postgresql://u:{MASK}@db/x"
    assert describe_error(RuntimeError()) == "RuntimeError"
