"""The clocks: the fake one moves its wall clock alone on step(), and a step is told from drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healer.clock import FakeClock, SystemClock, stepped

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
H = timedelta(hours=1)
MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("wall", "monotonic", "expected"),
    [
        pytest.param(S, S, None, id="in-step"),
        pytest.param(60 * S, 59 * S, None, id="a-second-of-drift-is-not-a-step"),
        pytest.param(6 * S, 0 * S, 6 * S, id="forward-6s"),
        pytest.param(-H + S, S, -H, id="back-1h"),
        pytest.param(H + 10 * S, 10 * S, H, id="forward-1h"),
        pytest.param(30 * S, 35 * S + MS, -5 * S - MS, id="just-over-back"),
    ],
)
def test_a_step_is_the_wall_clock_moving_more_than_the_monotonic_one(
    wall: timedelta, monotonic: timedelta, expected: timedelta | None
) -> None:
    """Between two readings, a wall clock that moved over 5 s more or less than time passed was stepped."""
    assert stepped((T0, 100 * S), (T0 + wall, 100 * S + monotonic)) == expected


def test_the_fake_clock_steps_its_wall_clock_alone() -> None:
    """advance() moves both readings; step() only the wall clock, either way; nothing goes back otherwise."""
    clock = FakeClock(T0)
    clock.advance(10 * S)
    assert (clock.now(), clock.monotonic()) == (T0 + 10 * S, 10 * S)
    clock.step(-H)
    assert (clock.now(), clock.monotonic()) == (T0 + 10 * S - H, 10 * S)
    clock.step(2 * H)
    assert (clock.now(), clock.monotonic()) == (T0 + 10 * S + H, 10 * S)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-S)


def test_the_system_clock_reads_both() -> None:
    """The real clock's monotonic reading never goes back and its wall clock is UTC."""
    clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert clock.now().tzinfo is UTC
