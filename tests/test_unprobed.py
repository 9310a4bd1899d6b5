"""When healer cannot probe (its own descriptors, memory or connection pool ran out), it knows
nothing of the app: no restart, no rollback, no incident — and after a few such cycles in a
row a person is told healer is blind (issue 15: probe errors are not the app's failures)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services import HttpApp, free_port

from healer.config import parse_config
from healer.decide import PlaybookPolicy, Situation, decide
from healer.ladder import PROBE_ERROR_LIMIT
from healer.model import Alert, CheckResult, Deploy, OpenIncident, Repair, Rollback, Verdict

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = parse_config(
    {
        "checks": [
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/"},
            {"name": "cache", "type": "redis", "url": "redis://127.0.0.1:9/0"},
        ],
        "process": {"manager": "command", "start": ["true"], "match": "app"},
    },
    Path("healer.toml"),
)
POLICIES = {"process-restart": PlaybookPolicy("process-restart", timedelta(0), 5, restarts_app=True)}

# Run in a child: hog every file descriptor the child may open, then probe a healthy app.
_OUT_OF_FILES = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    from pathlib import Path
    from healer.config import parse_config
    from healer.checks import probe_context, run_check

    async def main() -> None:
        url, address = sys.argv[1], sys.argv[2]
        config = parse_config(
            {"checks": [{"name": "api", "type": "http", "url": url},
                        {"name": "db", "type": "tcp", "address": address}]},
            Path("healer.toml"),
        )
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        async with probe_context(config) as ctx:
            before = [await run_check(ctx, c) for c in config.checks]
        async with probe_context(config) as ctx:  # no kept-alive connection to reuse
            hog = []
            try:
                while True:
                    hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            starved = [await run_check(ctx, c) for c in config.checks]
            for fd in hog:
                os.close(fd)
        print(json.dumps({"before": [r.to_json() for r in before], "starved": [r.to_json() for r in starved]}))

    asyncio.run(main())
    """
)


def test_out_of_file_descriptors_is_a_probe_error_not_the_app_down(http_app: Any) -> None:
    """A real healthy app, probed by a healer process that has run out of file descriptors:
    the http and tcp checks say healer could not probe, not that the app is down."""
    app: HttpApp = http_app("healthy")
    address = app.url.removeprefix("http://").split("/")[0]
    out = subprocess.run(
        [sys.executable, "-c", _OUT_OF_FILES, f"{app.url}/health", address],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [r["ok"] for r in got["before"]] == [True, True]
    api, db = (CheckResult.from_json(r) for r in got["starved"])
    for r in (api, db):
        assert not r.ok and r.probe_error, r
        assert r.symptoms == (f"{r.type}.probe_error",)
        assert r.error is not None and r.error.startswith("healer could not probe") and "open files" in r.error


def test_a_refused_connection_is_still_the_app_down(run_probe: Any) -> None:
    """Nothing listening is the app's failure, as before: only healer's own limits are probe errors."""
    import asyncio

    r = asyncio.run(run_probe({"type": "http", "url": f"http://127.0.0.1:{free_port()}/health"}))
    assert r.symptoms == ("http.down",) and not r.probe_error


def _results(api: str, cache_ok: bool = True) -> tuple[CheckResult, ...]:
    if api == "unprobed":
        error = "healer could not probe: OSError: [Errno 24] Too many open files"
        first = CheckResult("api", "http", False, error=error, symptoms=("http.probe_error",), probe_error=True)
    elif api == "down":
        first = CheckResult("api", "http", False, error="3 of 3 samples failed", symptoms=("http.down",))
    else:
        first = CheckResult("api", "http", True, values={"latency_ms": 5.0})
    cache = CheckResult("cache", "redis", cache_ok, error=None if cache_ok else "refused",
                        symptoms=() if cache_ok else ("redis.down",))  # fmt: skip
    return first, cache


def _run(cycles: list[tuple[str, bool]]) -> list[list[object]]:
    """Drive decide() cycle by cycle as the loop does (the streak, the counters)."""
    deploy = Deploy(id=1, commit="a" * 40, first_seen=T0, healthy_at=T0)
    streak, out, now = 0, [], T0
    for api, cache_ok in cycles:
        now += timedelta(minutes=1)
        s = Situation(deploy=deploy, verdict=Verdict(now, _results(api, cache_ok)), now=now, playbooks=POLICIES,
                      unprobed_streak=streak, head_moved=False)  # fmt: skip
        d = decide(s, CONFIG)
        unprobed = d.attribution is not None and d.attribution.cause == "healer could not probe"
        streak = streak + 1 if unprobed else 0
        opened = any(isinstance(i, OpenIncident) for i in d.intents)
        deploy = replace(
            deploy, consecutive_failures=d.consecutive_failures, consecutive_passes=d.consecutive_passes,
            open_incident=1 if opened else deploy.open_incident,
        )  # fmt: skip
        out.append(list(d.intents))
    return out


def test_cycles_healer_cannot_probe_count_nothing_and_act_on_nothing() -> None:
    """Ten cycles in a row unprobed: no incident, no restart, no rollback; one alert, at the
    PROBE_ERROR_LIMIT-th, saying healer can't tell whether the app is healthy."""
    intents = _run([("unprobed", True)] * 10)
    flat = [i for cycle in intents for i in cycle]
    assert not [i for i in flat if isinstance(i, OpenIncident | Repair | Rollback)]
    alerts = [i for i in flat if isinstance(i, Alert)]
    assert [a.event for a in alerts] == ["healer.blind"]
    assert intents[PROBE_ERROR_LIMIT - 1] == alerts
    assert "can't tell whether the app is healthy" in alerts[0].title
    assert "Too many open files" in alerts[0].detail


def test_an_unprobed_check_neither_accuses_nor_excuses() -> None:
    """The app check unprobed while Redis is down: the cause is Redis (no restart of the app, no
    rollback); the app check down while Redis is unprobed: the app is restarted."""
    (first,) = _run([("unprobed", False)])
    assert not [i for i in first if isinstance(i, Repair | Rollback)]
    assert any(isinstance(i, OpenIncident) and "dependency cache" in i.cause for i in first)
    process = {"manager": "command", "start": ["true"], "match": "app"}
    cache_unprobed = parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}], "process": process},
        Path("healer.toml"),
    )
    deploy = Deploy(id=1, commit="a" * 40, first_seen=T0, healthy_at=T0)
    down = CheckResult("api", "http", False, error="3 of 3 samples failed", symptoms=("http.down",))
    blind = CheckResult("db", "tcp", False, symptoms=("tcp.probe_error",), probe_error=True)
    d = decide(Situation(deploy=deploy, verdict=Verdict(T0, (down, blind)), now=T0, playbooks=POLICIES,
                         head_moved=False), cache_unprobed)  # fmt: skip
    assert [i.kind for i in d.intents if isinstance(i, Repair)] == ["process-restart"]
