"""The fleet's judgement of a release over every host's last verdict (pure).

Every host's healer probes its own app and records its last cycle's verdict in the host registry
(fleet_hosts). The leader judges the release over all of them: a bad deploy fails on most hosts
and is rolled back once, by the fleet; one sick host is that host's own trouble (its healer
restarts its app), never a reason to roll the fleet back.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """A host's last word in the registry: its release, its last cycle's verdict (None: none
    yet) and when its healer last wrote (by the database's clock)."""

    host: str
    release: str | None
    healthy: bool | None
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class ReleaseJudgement:
    """How the fresh hosts running a release fare."""

    release: str
    failing: tuple[str, ...]  # hosts, by name
    passing: tuple[str, ...]

    @property
    def is_failing(self) -> bool:
        """Most of the fresh hosts on the release fail (strictly more than half): one sick host
        of two, or of three, is not the release's fault."""
        return 2 * len(self.failing) > len(self.failing) + len(self.passing)

    def describe(self) -> str:
        """For people: "2 of 3 hosts on 1a2b3c4d5e6f fail (web-1, web-3)"."""
        n = len(self.failing) + len(self.passing)
        named = f" ({', '.join(self.failing)})" if self.failing else ""
        return f"{len(self.failing)} of {n} host{'s' if n != 1 else ''} on {self.release[:12]} fail{named}"


def judge_release(
    hosts: Sequence[HostVerdict], *, host: str, release: str, healthy: bool | None, now: datetime, fresh: timedelta
) -> ReleaseJudgement:
    """Judge `release` over the fleet, as the leader `host` sees it this cycle (`healthy`; None:
    the leader does not run the release, and does not count).

    1. The judging host counts with this very cycle's verdict, whatever the registry still says.
    2. Another host counts when it runs the same release, has a verdict, and wrote within `fresh`
       of `now` (a host whose healer is gone, or cut off, says nothing of the release).
    3. The release fails when most counted hosts fail (ReleaseJudgement.is_failing).
    """
    others = [
        h
        for h in hosts
        if h.host != host and h.release == release and h.healthy is not None and now - h.seen_at <= fresh
    ]
    verdicts = ([] if healthy is None else [(host, healthy)]) + [(h.host, bool(h.healthy)) for h in others]
    failing = tuple(sorted(name for name, ok in verdicts if not ok))
    passing = tuple(sorted(name for name, ok in verdicts if ok))
    return ReleaseJudgement(release, failing, passing)


def freshness(lease: timedelta, every: timedelta) -> timedelta:
    """How recently a host must have written to count: three of its cycles (hosts share the
    schedule) and a lease on top, for a slow database or a busy host. A healer silent for longer
    is gone or cut off, and says nothing of the release."""
    return 3 * every + lease


@dataclass(frozen=True, slots=True)
class RollbackOrder:
    """A rollback the leader decided for the fleet: every host on `from_release` goes to
    `target` (the commit of `to_ref`) and reports; the leader announces one outcome."""

    id: int
    from_release: str
    target: str
    to_ref: str
    reason: str
    started_at: datetime  # by the leader's clock
    deadline: datetime  # hosts that have not reported by then did not follow


def new_order(
    from_release: str, target: str, to_ref: str, reason: str, *, now: datetime, every: timedelta, budget: timedelta
) -> RollbackOrder:
    """The order of a rollback for the fleet, decided `now` (by the leader, or by a person on one
    host) and not yet recorded (id 0): hosts cycling `every` and bounded by `budget` per rollback
    have until three of their cycles and two rollbacks later to report (they follow at once when
    their healer sees the order: Leadership.ordered)."""
    return RollbackOrder(0, from_release, target, to_ref, reason, now, now + 3 * every + 2 * budget)


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    ok: bool  # every host followed
    text: str  # "web-1, web-2 rolled back from 1a2b3c4d5e6f to stable-1" (+ "; did not follow: ...")


def rollback_outcome(
    order: RollbackOrder, reports: dict[str, bool], hosts: Sequence[HostVerdict], *, now: datetime, fresh: timedelta
) -> RollbackOutcome | None:
    """The fleet rollback's one outcome, once every host that was live when it was ordered has
    reported, or the deadline passed (None: still waiting). A host busy rolling back writes no
    verdict meanwhile, so liveness is judged at the order, not now. A host that reported a
    failure, or never reported, did not follow."""
    expected = [
        h.host
        for h in hosts
        if h.seen_at >= order.started_at - fresh and (h.host in reports or h.release == order.from_release)
    ]
    missing = sorted(h for h in expected if h not in reports)
    if missing and now < order.deadline:
        return None
    followed = sorted(h for h, ok in reports.items() if ok)
    lagging = [f"{h} (failed)" for h in sorted(h for h, ok in reports.items() if not ok)]
    lagging += [f"{h} (no report)" for h in missing]
    text = f"{', '.join(followed) or 'no host'} rolled back from {order.from_release[:12]} to {order.to_ref}"
    if lagging:
        text += f"; did not follow: {', '.join(lagging)}"
    return RollbackOutcome(not lagging, text)


# ---- a follower's ladder asks the leader for the fleet's rollback ------------------------------


@dataclass(frozen=True, slots=True)
class RollbackAsk:
    """A follower whose own ladder reached a rollback of the release it runs: the leader judges
    that release over the fleet (it may run another one: a canary) and orders the rollback when
    most hosts on it fail, to the target the follower's rollback would go to."""

    host: str
    release: str
    target: str
    to_ref: str
    reason: str
    at: datetime


def asks_to_order(
    asks: Sequence[RollbackAsk],
    hosts: Sequence[HostVerdict],
    *,
    leader: str,
    leader_release: str,
    leader_healthy: bool,
    ordered: Collection[str],
    now: datetime,
    fresh: timedelta,
) -> list[tuple[RollbackAsk, ReleaseJudgement]]:
    """The releases the leader orders rolled back now, each with the newest ask for it:

    1. An ask counts while its host still runs the release it asked about and is fresh.
    2. A release is rolled back once: not when an order away from it exists (`ordered`).
    3. It is rolled back when most fresh hosts on it fail (judge_release), the leader counting
       when it runs it: one sick host of several is that host's trouble, a canary alone on a
       release that fails is the release's.
    """
    current = {h.host: h for h in hosts}
    live: dict[str, RollbackAsk] = {}
    for a in sorted(asks, key=lambda a: a.at):
        h = current.get(a.host)
        if a.release in ordered or h is None or h.release != a.release or now - h.seen_at > fresh:
            continue
        live[a.release] = a
    out = []
    for release, ask in sorted(live.items()):
        healthy = leader_healthy if release == leader_release else None
        judged = judge_release(hosts, host=leader, release=release, healthy=healthy, now=now, fresh=fresh)
        if judged.is_failing:
            out.append((ask, judged))
    return out
