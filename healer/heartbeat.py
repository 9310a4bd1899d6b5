"""The dead man's switch: a GET to a URL after every completed cycle (I/O).

The URL (healthchecks.io, Uptime Kuma push, Better Stack, Cronitor ...) comes from the
environment variable named by `[heartbeat] url_env` and is a Secret: it is taught to the
redactor, and no event healer logs about it contains it, nor any part of it.

The ping says "healer is alive and completing cycles", not "the app is healthy": the app's
health goes to chat. So a failing cycle pings the same URL (see `fail_suffix`).

    hb = Heartbeat.from_config(config, client)      # None when [heartbeat] is not set up
    hb.ping_soon(verdict.ok)                         # after each cycle; returns at once
    await hb.aclose()                                # at shutdown
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx

from healer import __version__
from healer.config import Secret, read_secret
from healer.logging import log_event
from healer.redact import add_secrets, redact

if TYPE_CHECKING:
    from healer.config import Config

log = logging.getLogger("healer.heartbeat")

DEFAULT_TIMEOUT = timedelta(seconds=5)
_USER_AGENT = f"healer/{__version__} (heartbeat)"
_BODY_MAX = 200  # characters of an error answer quoted in the log


class Heartbeat:
    """Pings one URL; failures are logged (redacted) and reported as False, never raised.

    `fail_suffix`: append `/fail` on a failing cycle, healthchecks.io's convention for "the job
    ran and failed". Off by default: it would page a second time about the app, and other
    services answer 404 to it (which looks like a dead healer).
    """

    def __init__(
        self,
        url: Secret,
        client: httpx.AsyncClient,
        *,
        timeout: timedelta = DEFAULT_TIMEOUT,
        fail_suffix: bool = False,
    ) -> None:
        self._url = url
        self._client = client
        self.timeout = timeout
        self.fail_suffix = fail_suffix
        add_secrets(url)  # its path and query too: for every text this process writes, httpx's logs included
        self._task: asyncio.Task[bool] | None = None
        self._failing = False

    @classmethod
    def from_config(cls, config: Config, client: httpx.AsyncClient) -> Heartbeat | None:
        """The heartbeat healer.toml asks for, or None when `url_env` is unset or its variable
        is empty (logged once, so a missing secret is visible in the journal)."""
        name = config.heartbeat.url_env
        if not name:
            return None
        url = read_secret(name)
        if url is None:
            log_event(log, "heartbeat.disabled", level=logging.WARNING,
                      reason=f"{name} is not set; no heartbeat is sent")  # fmt: skip
            return None
        return cls(url, client, timeout=config.heartbeat.timeout)

    def _target(self, ok: bool) -> str:
        url = self._url.reveal()
        if self.fail_suffix and not ok:
            return url.rstrip("/") + "/fail"
        return url

    async def ping(self, ok: bool = True) -> bool:
        """GET the URL once within the timeout; True when it answered 2xx."""
        try:
            response = await self._client.get(
                self._target(ok),
                timeout=self.timeout.total_seconds(),
                headers={"User-Agent": _USER_AGENT},
                follow_redirects=True,
            )
        except Exception as e:  # a heartbeat must never disturb the loop
            return self._failed(f"{type(e).__name__}: {redact(str(e)) or 'no detail'}")
        if not response.is_success:
            # the service's error body may echo the URL (its uuid is the secret): redacted whole, then cut
            body = " ".join(redact(response.text).split())[:_BODY_MAX]
            return self._failed(f"HTTP {response.status_code}" + (f": {body}" if body else ""))
        if self._failing:
            self._failing = False
            log_event(log, "heartbeat.recovered")
        return True

    def _failed(self, error: str) -> bool:
        # every failure is logged: each one is a missed ping the service will count
        self._failing = True
        log_event(log, "heartbeat.failed", level=logging.WARNING, error=error)
        return False

    def ping_soon(self, ok: bool = True) -> None:
        """Ping in the background and return at once; skipped while the last ping is in flight
        (a slow service must not pile up requests)."""
        if self._task is not None and not self._task.done():
            log_event(log, "heartbeat.skipped", level=logging.DEBUG, reason="ping in flight")
            return
        self._task = asyncio.create_task(self.ping(ok), name="healer-heartbeat")

    async def aclose(self) -> None:
        """Wait for a ping in flight (it is bounded by the timeout)."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=self.timeout.total_seconds() + 1)
            if not self._task.done():
                self._task.cancel()
        self._task = None
