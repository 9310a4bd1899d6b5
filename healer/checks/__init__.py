"""The checks: one probe per check type, run concurrently, each bounded by its timeout (I/O).

A probe is `async def probe(check, ctx) -> CheckResult`. It reports absolute failures and
measured `values` only; judging against the baseline happens in `healer.judge`.
`run_check` turns a probe that hangs or raises into a failed result, so one bad check
never crashes a cycle or delays the others: a cycle takes as long as its slowest check.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import httpx

from healer.config import CHECK_TYPES, CheckConfig, Config, format_duration
from healer.model import CheckResult
from healer.redact import redact

# How long a probe that was cancelled at its timeout may take to unwind (close sockets,
# kill a child) before run_check stops waiting for it and reports the timeout anyway.
_CANCEL_GRACE = 0.5

# http checks per HTTP client (connection pool); see probe_context.
POOL_SHARD = 32

_ERROR_MAX = 300


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What probes share within one cycle or run: the config and the HTTP clients."""

    config: Config
    http: httpx.AsyncClient  # for the heartbeat, and for http checks not in `http_by_check`
    http_by_check: Mapping[str, httpx.AsyncClient] = field(default_factory=dict)

    def client_for(self, check_name: str) -> httpx.AsyncClient:
        """The client whose connection pool serves this http check."""
        return self.http_by_check.get(check_name, self.http)


@asynccontextmanager
async def probe_context(config: Config) -> AsyncIterator[ProbeContext]:
    """Open the HTTP clients (no proxies or netrc from the environment) and close them after.

    The http checks share one client per POOL_SHARD of them, so every check has a connection of
    its own when all are slow at once. One pool for hundreds of checks would not do: httpx's
    default of 100 connections makes the 101st slow check wait past its timeout, and httpcore
    scans every queued request against every connection each time one ends, which costs seconds
    of CPU per cycle at a few hundred connections.
    """
    names = [c.name for c in config.checks if c.type == "http"]
    shards = max(1, math.ceil(len(names) / POOL_SHARD))
    # one TLS context for all of them: building one reads the CA bundle (~10 ms)
    tls = httpx.create_ssl_context(trust_env=False)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            # Redirects are not followed: a health endpoint that redirects answers with its own
            # status, which the check's expect_status judges.
            await stack.enter_async_context(httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=tls))
            for _ in range(shards)
        ]
        by_check = {name: clients[i // POOL_SHARD] for i, name in enumerate(names)}
        yield ProbeContext(config=config, http=clients[0], http_by_check=by_check)


def budget(timeout: timedelta) -> float:
    """Seconds a probe may spend on its own I/O: a little under the check's timeout, so the
    probe reports what it saw (a specific symptom) before run_check's hard bound cuts it off."""
    t = timeout.total_seconds()
    return t - min(0.25, t * 0.2)


def describe_error(exc: BaseException, *secrets: str) -> str:
    """One line for an exception: its type and the first line of its message, redacted."""
    msg = str(exc).strip().splitlines()
    first = msg[0].strip() if msg else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    line = redact(line, *secrets)
    return line if len(line) <= _ERROR_MAX else line[: _ERROR_MAX - 1] + "…"


def failed(check: Any, error: str, *symptoms: str, **values: float) -> CheckResult:
    """A failed result for `check` with an error line and symptoms (default `<type>.error`)."""
    return CheckResult(
        name=check.name,
        type=check.type,
        ok=False,
        values=values,
        error=error,
        symptoms=symptoms or (f"{check.type}.error",),
    )


def measured(
    check: Any, values: dict[str, float], symptoms: list[str], errors: list[str], latency: timedelta | None = None
) -> CheckResult:
    """The result of a probe that measured `values`: ok when no ceiling added a symptom."""
    return CheckResult(
        name=check.name,
        type=check.type,
        ok=not symptoms,
        latency=latency,
        values=values,
        error="; ".join(errors) or None,
        symptoms=tuple(symptoms),
    )


Probe = Callable[[Any, ProbeContext], Coroutine[Any, Any, CheckResult]]


def _lazy(module: str) -> Probe:
    """The probe of `healer.checks.<module>`, imported at its first run: the drivers behind them
    (psycopg, redis, psutil) take ~0.15 s to import and memory, which a config without such a
    check, or a command that runs no check, should not pay."""

    async def probe(check: Any, ctx: ProbeContext) -> CheckResult:
        found: Probe = importlib.import_module(f"healer.checks.{module}").probe
        return await found(check, ctx)

    probe.__qualname__ = probe.__name__ = f"{module}.probe"
    return probe


PROBES: dict[str, Probe] = {kind: _lazy(kind) for kind in CHECK_TYPES}

# Probes abandoned after their timeout that did not unwind within _CANCEL_GRACE; held so they
# are not garbage-collected mid-flight, dropped when they finally end.
_abandoned: set[asyncio.Task[CheckResult]] = set()


async def run_check(ctx: ProbeContext, check: CheckConfig) -> CheckResult:
    """Run one check within its timeout; a hang is `<type>.timeout`, an exception `<type>.error`."""
    probe = PROBES.get(check.type)
    if probe is None:
        return failed(check, f"no probe for check type {check.type!r}")
    task = asyncio.create_task(probe(check, ctx), name=f"check:{check.name}")
    try:
        done, _ = await asyncio.wait({task}, timeout=check.timeout.total_seconds())
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        await _abandon(task)
        return failed(check, f"timed out after {format_duration(check.timeout)}", f"{check.type}.timeout")
    if task.cancelled():  # the probe was cancelled from inside: a failed check all the same
        return failed(check, "the probe was cancelled")
    exc = task.exception()
    if exc is not None:
        if isinstance(exc, TimeoutError):
            return failed(check, f"timed out after {format_duration(check.timeout)}", f"{check.type}.timeout")
        return failed(check, describe_error(exc))
    return _redacted(task.result())


def _redacted(result: CheckResult) -> CheckResult:
    """The result with its error redacted: what a probe quotes from outside (an answer, a driver's
    message) may hold a secret, and every result is printed, stored and sent."""
    if result.error is None:
        return result
    error = redact(result.error)
    return result if error == result.error else replace(result, error=error)


async def _abandon(task: asyncio.Task[CheckResult]) -> None:
    """Cancel a probe past its timeout; wait a moment for it to clean up, never longer."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=_CANCEL_GRACE)
    if done:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it
        return
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[CheckResult]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


async def run_checks(ctx: ProbeContext, checks: Sequence[CheckConfig] | None = None) -> tuple[CheckResult, ...]:
    """Run `checks` (default: all configured) concurrently; the results are in config order."""
    todo = ctx.config.checks if checks is None else tuple(checks)
    return tuple(await asyncio.gather(*(run_check(ctx, c) for c in todo)))


__all__ = [
    "PROBES",
    "ProbeContext",
    "budget",
    "describe_error",
    "failed",
    "probe_context",
    "run_check",
    "run_checks",
]
