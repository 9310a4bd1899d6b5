"""The store's per-hour check totals give the same report as reading every cycle: across hour
boundaries, after pruning, and for a database recorded before the totals existed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from healer.model import CheckResult, Verdict, Who
from healer.report import build_report, load_report, to_json
from healer.store import Store

T0 = datetime(2026, 3, 1, 21, 7, tzinfo=UTC)
EVERY = timedelta(minutes=17)
N = 400  # about 4.7 days of cycles


def _verdict(i: int) -> Verdict:
    at = T0 + i * EVERY
    results = [CheckResult("web", "http", i % 7 != 0, timedelta(milliseconds=10))]
    if i >= 40:  # a check added to the config later: listed before "disk", reported after it
        results.append(CheckResult("late", "command", i % 11 != 0))
    results.append(CheckResult("disk", "system", i % 5 != 0))
    return Verdict(at, tuple(results))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "healer.db")
    d, _ = s.ensure_deploy("c" * 40, T0)
    for i in range(N):
        s.record_cycle(d.id, _verdict(i), Who.LOOP, None)
    yield s
    s.close()


def _by_hand(store: Store, start: datetime, now: datetime) -> dict[str, object]:
    rep = build_report(
        store.cycles(), store.incidents(), store.actions(), start=start, now=now, watched_since=store.watched_since()
    )
    return to_json(rep)


PERIODS = [
    pytest.param(T0 - timedelta(days=9), T0 + N * EVERY, id="everything"),
    pytest.param(T0 + timedelta(hours=30), T0 + timedelta(days=3, hours=5), id="partial-hours-at-both-ends"),
    pytest.param(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, 7, tzinfo=UTC), id="on-the-hour"),
    pytest.param(T0 + timedelta(hours=40, minutes=3), T0 + timedelta(hours=40, minutes=50), id="within-one-hour"),
    pytest.param(T0 + 50 * EVERY, T0 + 50 * EVERY, id="one-instant-on-a-cycle"),
]


@pytest.mark.parametrize(("start", "now"), PERIODS)
def test_load_report_equals_the_report_over_every_cycle(store: Store, start: datetime, now: datetime) -> None:
    """Uptime per check, cycle counts and order match a report built from all cycle rows."""
    assert to_json(load_report(store, start=start, now=now)) == _by_hand(store, start, now)


def test_totals_follow_a_prune_into_the_middle_of_an_hour(store: Store) -> None:
    """After pruning up to the middle of an hour, the remaining part of that hour still counts exactly."""
    store.prune(datetime(2026, 3, 3, 13, 30, tzinfo=UTC))
    start, now = datetime(2026, 3, 1, tzinfo=UTC), T0 + N * EVERY
    assert to_json(load_report(store, start=start, now=now)) == _by_hand(store, start, now)


def test_a_database_from_before_the_totals_is_filled_when_opened(store: Store, tmp_path: Path) -> None:
    """Dropping the per-hour totals (an older database) and reopening rebuilds them from the cycles."""
    start, now = T0 - timedelta(days=1), T0 + N * EVERY
    expected = to_json(load_report(store, start=start, now=now))
    store.close()
    with sqlite3.connect(tmp_path / "healer.db") as db:  # it came before schema_version, too
        db.execute("DROP TABLE check_hours")
        db.execute("DROP TABLE schema_version")
    reopened = Store(tmp_path / "healer.db")
    try:
        assert to_json(load_report(reopened, start=start, now=now)) == expected
        assert [c["name"] for c in expected["checks"]] == ["web", "disk", "late"]
    finally:
        reopened.close()
