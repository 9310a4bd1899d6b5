"""The checks: one probe per check type, run concurrently, each bounded by its timeout (I/O).

The check types are listed in healer/checks/registry.py, one module each; what a probe
returns is built with healer/checks/base.py. `run_check` turns a probe that hangs or raises
into a failed result, so one bad check never crashes a cycle or delays the others: a cycle
takes as long as its slowest check. httpx is imported when the clients are opened, not with
this package: healer.config imports the registry, hence this package, and a core module that
reads the config must not load a driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from healer.checks.base import (
    Probe,
    ProbeContext,
    budget,
    describe_error,
    failed,
    local_failure,
    measured,
    unprobed,
)
from healer.checks.registry import CHECKS
from healer.model import CheckResult
from healer.redact import redact
from healer.schema import format_duration

if TYPE_CHECKING:
    from healer.config import CheckConfig, Config

# How long a probe that was cancelled at its timeout may take to unwind (close sockets,
# kill a child) before run_check stops waiting for it and reports the timeout anyway.
_CANCEL_GRACE = 0.5

# http checks per HTTP client (connection pool); see probe_context.
POOL_SHARD = 32


@asynccontextmanager
async def probe_context(config: Config) -> AsyncIterator[ProbeContext]:
    """Open the HTTP clients (no proxies or netrc from the environment) and close them after.

    The http checks (`uses_http`) share one client per POOL_SHARD of them, so every check has a connection of
    its own when all are slow at once. One pool for hundreds of checks would not do: httpx's
    default of 100 connections makes the 101st slow check wait past its timeout, and httpcore
    scans every queued request against every connection each time one ends, which costs seconds
    of CPU per cycle at a few hundred connections.
    """
    import httpx

    names = [c.name for c in config.checks if c.uses_http]
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


PROBES: dict[str, Probe] = {kind: c.probe for kind, c in CHECKS.items()}

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
        local = local_failure(exc)
        if local is not None:
            return unprobed(check, describe_error(local))
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
    "local_failure",
    "measured",
    "probe_context",
    "run_check",
    "run_checks",
    "unprobed",
]
