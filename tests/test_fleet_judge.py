"""The fleet's judgement of a release (healer/fleet_judge.py, pure): most fresh hosts on the
release failing rolls it back; one sick host, a stale host or one on another release does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healer.clock import FakeClock
from healer.fleet_judge import (
    HostVerdict,
    RollbackAsk,
    RollbackOrder,
    RollbackOutcome,
    asks_to_order,
    freshness,
    judge_release,
    rollback_outcome,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FRESH = timedelta(seconds=45)
BAD, GOOD = "b" * 40, "a" * 40


def _judge(others: list[HostVerdict], *, healthy: bool = False, now: datetime = T0) -> tuple[bool, str]:
    j = judge_release(others, host="web-1", release=BAD, healthy=healthy, now=now, fresh=FRESH)
    return j.is_failing, j.describe()


def _host(name: str, healthy: bool | None, *, release: str = BAD, seen: datetime = T0) -> HostVerdict:
    return HostVerdict(name, release, healthy, seen)


@pytest.mark.parametrize(
    ("others", "healthy", "failing", "said"),
    [
        pytest.param([], False, True, "1 of 1 host on bbbbbbbbbbbb fail (web-1)", id="alone-it-is-the-release"),
        pytest.param(
            [_host("web-2", False)],
            False,
            True,
            "2 of 2 hosts on bbbbbbbbbbbb fail (web-1, web-2)",
            id="a-bad-deploy-on-both",
        ),
        pytest.param(
            [_host("web-2", True)],
            False,
            False,
            "1 of 2 hosts on bbbbbbbbbbbb fail (web-1)",
            id="the-leader-alone-sick",
        ),
        pytest.param(
            [_host("web-2", False), _host("web-3", True)],
            True,
            False,
            "1 of 3 hosts on bbbbbbbbbbbb fail (web-2)",
            id="one-follower-sick",
        ),
        pytest.param(
            [_host("web-2", False), _host("web-3", True)],
            False,
            True,
            "2 of 3 hosts on bbbbbbbbbbbb fail (web-1, web-2)",
            id="most-of-three",
        ),
        pytest.param(
            [_host("web-2", True, release=GOOD), _host("web-3", True, release=GOOD)],
            False,
            True,
            "1 of 1 host on bbbbbbbbbbbb fail (web-1)",
            id="hosts-on-another-release-say-nothing",
        ),
        pytest.param(
            [_host("web-2", None)],
            False,
            True,
            "1 of 1 host on bbbbbbbbbbbb fail (web-1)",
            id="a-host-without-a-verdict-says-nothing",
        ),
        pytest.param(
            [_host("web-1", True)],
            False,
            True,
            "1 of 1 host on bbbbbbbbbbbb fail (web-1)",
            id="this-cycle-beats-the-registrys-line",
        ),
    ],
)
def test_most_fresh_hosts_on_the_release_decide(
    others: list[HostVerdict], healthy: bool, failing: bool, said: str
) -> None:
    assert _judge(others, healthy=healthy) == (failing, said)


def test_a_host_that_stopped_writing_no_longer_counts_on_a_fake_clock() -> None:
    """A passing host keeps the release from being judged failing while it is fresh; once it has
    not written for longer than `fresh` (its healer died, or is cut off), it no longer counts."""
    clock = FakeClock(T0)
    web2 = _host("web-2", True, seen=clock.now())
    clock.advance(FRESH)
    assert _judge([web2], now=clock.now())[0] is False
    clock.advance(timedelta(seconds=1))
    assert _judge([web2], now=clock.now()) == (True, "1 of 1 host on bbbbbbbbbbbb fail (web-1)")


def test_a_host_counts_for_three_of_its_cycles_and_a_lease() -> None:
    assert freshness(timedelta(seconds=15), timedelta(seconds=10)) == timedelta(seconds=45)


def test_a_fleet_rollback_has_one_outcome_once_every_host_reported_or_the_deadline_passed() -> None:
    """The leader waits for every host live at the order (a host busy rolling back writes no
    verdict meanwhile), then says one outcome; past the deadline it names who did not follow."""
    clock = FakeClock(T0)
    order = RollbackOrder(7, BAD, GOOD, "stable-1", "release failing", clock.now(), clock.now() + timedelta(minutes=2))
    hosts = [_host("web-1", False), _host("web-2", False), _host("web-3", False)]
    gone = _host("web-4", True, seen=T0 - FRESH - timedelta(seconds=1))  # silent long before the order
    clock.advance(timedelta(seconds=30))

    def outcome(reports: dict[str, bool]) -> RollbackOutcome | None:
        return rollback_outcome(order, reports, [*hosts, gone], now=clock.now(), fresh=FRESH)

    assert outcome({"web-1": True, "web-2": True}) is None  # web-3 may still report
    assert outcome({"web-1": True, "web-2": True, "web-3": True}) == RollbackOutcome(
        True, "web-1, web-2, web-3 rolled back from bbbbbbbbbbbb to stable-1"
    )
    clock.advance(timedelta(minutes=2))
    assert outcome({"web-1": True, "web-2": False}) == RollbackOutcome(
        False, "web-1 rolled back from bbbbbbbbbbbb to stable-1; did not follow: web-2 (failed), web-3 (no report)"
    )


def test_the_leader_orders_the_rollback_a_canary_asked_for_once_and_never_for_one_sick_host() -> None:
    """A follower's ladder asks for a rollback of the release it runs: the leader, on another
    release, orders it when most fresh hosts on that release fail (a canary alone on it), not
    when one host of several on it fails, not twice, and not for a host that moved on."""
    hosts = [_host("web-1", True, release=GOOD), _host("web-2", False), _host("web-3", True, release=GOOD)]
    ask = RollbackAsk("web-2", BAD, GOOD, "stable-1", "api failing", T0)

    def asked(hosts: list[HostVerdict], ordered: frozenset[str] = frozenset()) -> list[str]:
        todo = asks_to_order([ask], hosts, leader="web-1", leader_release=GOOD, leader_healthy=True, ordered=ordered,
                             now=T0, fresh=FRESH)  # fmt: skip
        return [f"{a.host} -> {a.to_ref}: {j.describe()}" for a, j in todo]

    assert asked(hosts) == ["web-2 -> stable-1: 1 of 1 host on bbbbbbbbbbbb fail (web-2)"]
    assert asked(hosts, ordered=frozenset({BAD})) == []  # once
    two = [*hosts[:2], _host("web-3", True)]  # web-3 on the same release, healthy: one sick host of two
    assert asked(two) == []
    moved = [hosts[0], _host("web-2", True, release=GOOD), hosts[2]]  # web-2 rolled back meanwhile
    assert asked(moved) == []
    stale = [hosts[0], _host("web-2", False, seen=T0 - FRESH - timedelta(seconds=1)), hosts[2]]
    assert asked(stale) == []
    # the leader on the release counts with its own verdict: 2 of 3 fail, it passes
    mine = asks_to_order([ask], [_host("web-2", False), _host("web-3", False)], leader="web-1", leader_release=BAD,
                         leader_healthy=True, ordered=set(), now=T0, fresh=FRESH)  # fmt: skip
    assert [j.describe() for _, j in mine] == ["2 of 3 hosts on bbbbbbbbbbbb fail (web-2, web-3)"]
