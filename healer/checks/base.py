"""What every check module builds on: the probe context and the results it returns (pure at import).

A probe is `async def probe(check, ctx) -> CheckResult`. It reports absolute failures and
measured `values` only; judging against the baseline happens in `healer.judge`. This module
imports no driver and not healer.config (which imports every check module through
healer/checks/registry.py), so a check module can import it freely.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from healer.model import CheckResult, Reference
from healer.redact import redact

if TYPE_CHECKING:
    import httpx

    from healer.config import Config

_ERROR_MAX = 300


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What probes share within one cycle or run: the config, the HTTP clients and the release
    before the deploy being judged."""

    config: Config
    http: httpx.AsyncClient  # for the heartbeat, and for http checks not in `http_by_check`
    http_by_check: Mapping[str, httpx.AsyncClient] = field(default_factory=dict)
    # the release before this deploy (the loop's, set each cycle): an http check whose first
    # samples are borderline against it takes more (healer/sampling.py)
    reference: Reference | None = None

    def client_for(self, check_name: str) -> httpx.AsyncClient:
        """The client whose connection pool serves this http check."""
        return self.http_by_check.get(check_name, self.http)


Probe = Callable[[Any, ProbeContext], Coroutine[Any, Any, CheckResult]]


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


# errno values that say healer itself ran out of something (descriptors, memory, buffers, local
# ports): the probe never reached the app, so its failure says nothing about the app
_LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EADDRNOTAVAIL})


def local_failure(exc: BaseException) -> OSError | None:
    """The OSError in `exc`'s chain (a driver wraps it: httpx.ConnectError, redis'
    ConnectionError) that says healer could not probe at all, or None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _LOCAL_ERRNOS:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def unprobed(check: Any, why: str) -> CheckResult:
    """A result for a check healer could not probe: `<type>.probe_error`, never the app's fault."""
    return CheckResult(
        name=check.name,
        type=check.type,
        ok=False,
        error=f"healer could not probe: {why}",
        symptoms=(f"{check.type}.probe_error",),
        probe_error=True,
    )


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
