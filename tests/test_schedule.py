"""The schedule over a simulated 72 h launch window, with a fake clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from healer.clock import FakeClock
from healer.config import ScheduleConfig, parse_duration
from healer.schedule import cycles_in, next_due, phase_at

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def test_72_hours_run_15m_then_30m_then_4h() -> None:
    """0–6 h every 15 min, 6–24 h every 30 min, 24–72 h every 4 h: 24 + 36 + 12 cycles."""
    cycles = cycles_in(T0, T0 + 72 * H - timedelta(seconds=1), ScheduleConfig())
    gaps = [b - a for a, b in itertools.pairwise(cycles)]
    assert cycles[0] == T0
    assert gaps[:24] == [15 * M] * 24
    assert gaps[24:60] == [30 * M] * 36
    assert gaps[60:] == [4 * H] * 11
    assert len(cycles) == 24 + 36 + 12


def test_after_the_window_the_last_cadence_goes_on() -> None:
    """Past 72 h healer keeps checking every 4 h and says the window is over."""
    p = phase_at(T0, T0 + 100 * H, ScheduleConfig())
    assert p.every == 4 * H and not p.in_window
    assert next_due(deploy_at=T0, last_cycle_at=T0 + 100 * H, failing=False, schedule=ScheduleConfig()) == T0 + 104 * H


@pytest.mark.parametrize(
    ("age", "index", "every"),
    [
        pytest.param(timedelta(0), 0, 15 * M, id="start"),
        pytest.param(6 * H - timedelta(seconds=1), 0, 15 * M, id="end-of-phase-1"),
        pytest.param(6 * H, 1, 30 * M, id="phase-2"),
        pytest.param(24 * H, 2, 4 * H, id="phase-3"),
        pytest.param(-H, 0, 15 * M, id="clock-before-deploy"),
    ],
)
def test_phase_at(age: timedelta, index: int, every: timedelta) -> None:
    """The phase is found from the deploy time, not from healer's start."""
    p = phase_at(T0, T0 + age, ScheduleConfig())
    assert (p.index, p.every) == (index, every)


def test_failing_cycles_run_at_incident_every() -> None:
    """While failing, the next cycle is `incident_every` away, even in the 4-hour phase."""
    due = next_due(deploy_at=T0, last_cycle_at=T0 + 30 * H, failing=True, schedule=ScheduleConfig())
    assert due == T0 + 30 * H + M


def test_repair_grace_delays_the_next_judgement() -> None:
    """After a repair, the app gets `repair_grace` before it is judged again."""
    last = T0 + H
    due = next_due(
        deploy_at=T0, last_cycle_at=last, failing=True, schedule=ScheduleConfig(),
        last_repair_at=last + timedelta(seconds=5), repair_grace=timedelta(seconds=90),
    )  # fmt: skip
    assert due == last + timedelta(seconds=95)


def test_a_whole_launch_runs_in_milliseconds_on_a_fake_clock() -> None:
    """Stepping a FakeClock through 72 h visits every due cycle, and time never goes back."""
    clock = FakeClock(T0)
    schedule = ScheduleConfig.model_validate(
        {"phases": [{"until": "6h", "every": "15m"}, {"until": "24h", "every": "30m"}, {"until": "72h", "every": "4h"}]}
    )
    last = None
    seen = []
    while clock.now() < T0 + 72 * H:
        due = next_due(deploy_at=T0, last_cycle_at=last, failing=False, schedule=schedule)
        clock.advance(max(due - clock.now(), timedelta(0)))
        seen.append(clock.now())
        last = clock.now()
    assert seen == sorted(seen)
    assert len(seen) == 73  # the 72 in the window, and the first one after it
    with pytest.raises(ValueError, match="back"):
        clock.advance(-M)


def test_compressed_durations_behave_like_hours() -> None:
    """The demo's second-scale phases follow the same rules as the real ones."""
    schedule = ScheduleConfig.model_validate(
        {"phases": [{"until": "6s", "every": "1s"}, {"until": "20s", "every": "2s"}]}
    )
    cycles = cycles_in(T0, T0 + parse_duration("19s"), schedule)
    assert [(c - T0).total_seconds() for c in cycles] == [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18]
