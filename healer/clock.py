"""Clocks (pure): the real one and a fake one that moves only when told."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the time and sleeps; all of healer's timing goes through one of these."""

    def now(self) -> datetime: ...

    async def sleep(self, delay: timedelta) -> None: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, delay: timedelta) -> None:
        await asyncio.sleep(max(0.0, delay.total_seconds()))


class FakeClock:
    """A clock for tests: moves only on `sleep()` or `advance()`, never backwards."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            msg = f"FakeClock cannot go back ({delta})"
            raise ValueError(msg)
        self._now += delta

    async def sleep(self, delay: timedelta) -> None:
        self.advance(max(delay, timedelta(0)))
        await asyncio.sleep(0)
