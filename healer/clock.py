"""Clocks (pure): the real one and a fake one that moves only when told.

A clock has two readings. `now()` is the wall clock, in UTC: what healer records and what the
schedule's due times are. `monotonic()` only ever moves forward, at the rate time passes: what
healer waits on, so that an NTP step or a `date -s` neither stalls the loop nor rushes it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the time (wall and monotonic) and sleeps; all of healer's timing goes through one."""

    def now(self) -> datetime: ...

    def monotonic(self) -> timedelta: ...

    async def sleep(self, delay: timedelta) -> None: ...


class SystemClock:
    """Wall-clock time in UTC, and the system's monotonic clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> timedelta:
        return timedelta(seconds=time.monotonic())

    async def sleep(self, delay: timedelta) -> None:
        await asyncio.sleep(max(0.0, delay.total_seconds()))


# A wall clock that moved this much more (or less) than the monotonic one between two readings
# was stepped; below it is NTP slewing, a slow disk, a busy machine.
DEFAULT_STEP_LIMIT = timedelta(seconds=5)


def stepped(
    before: tuple[datetime, timedelta], after: tuple[datetime, timedelta], limit: timedelta = DEFAULT_STEP_LIMIT
) -> timedelta | None:
    """How far the wall clock was stepped between two (wall, monotonic) readings: positive
    forward, negative back; None when the two clocks agree within `limit`."""
    step = (after[0] - before[0]) - (after[1] - before[1])
    return step if abs(step) > limit else None


class FakeClock:
    """A clock for tests: time passes only on `sleep()` or `advance()`, and never goes back.

    `step()` moves the wall clock alone, either way, as an NTP step or an operator's `date -s`
    does; the monotonic reading does not move with it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._monotonic = timedelta(0)

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> timedelta:
        return self._monotonic

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            msg = f"FakeClock cannot go back ({delta}); step() moves the wall clock alone"
            raise ValueError(msg)
        self._now += delta
        self._monotonic += delta

    def step(self, delta: timedelta) -> None:
        """Set the wall clock `delta` later (or earlier, when negative); no time passes."""
        self._now += delta

    async def sleep(self, delay: timedelta) -> None:
        self.advance(max(delay, timedelta(0)))
        await asyncio.sleep(0)


async def sleep_unless(clock: Clock, delay: timedelta, event: asyncio.Event) -> bool:
    """Sleep `delay` on `clock`, or less when `event` is set meanwhile; True when it was."""
    sleeper = asyncio.ensure_future(clock.sleep(delay))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            task.cancel()
        await asyncio.gather(sleeper, waiter, return_exceptions=True)
    return event.is_set()
