"""Fleet leadership, decided (pure): who may act for an app, from the lease row and the lock.

Several healers share one PostgreSQL; for each app exactly one of them acts. Two things tell
who, both kept in that database (healer/fleet_store.py reads and writes them):

- the lease row `fleet_lease(app)`: the holder, an epoch raised on every takeover, and when the
  lease expires by the database's clock. The leader renews it every `lease / 3`;
- the session-level advisory lock `advisory_key(app)`, which the leader holds on its own
  unpooled session: PostgreSQL drops it the moment that session ends (kill -9, a crash, a cut
  connection), so a follower that can take it knows at once that the leader is gone.

The lock alone cannot fence: a leader that was SIGSTOPped (or hangs) keeps its TCP session and
so its lock, for as long as the kernel keeps answering for it. The lease is what fences: a
follower takes over once the lease has expired even while the lock is still held, and every
write of the leader's is made only while the row still carries the leader's epoch and has not
expired (fleet_store.fenced), so a leader that wakes after its lease acts on nothing. The lock
only makes a takeover after a death quick; the new leader takes the lock as soon as the old
session lets it go. `step()` holds these rules.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

# The leader renews, and a follower looks again, this often: a third of the lease, so that two
# renewals may be lost (a slow database, a busy host) before the lease runs out.
RENEW_SHARE = 3
# A leader counts on its lease for this share of it only, measured on its own monotonic clock
# from before it asked for the renewal: the database counts from later, and clocks differ in rate.
TRUST_SHARE = 0.9


class Step(enum.Enum):
    """What a contender does with the lease row after reading it."""

    TAKE_OVER = "take over"  # become the holder with a new epoch (the row is missing, or its holder is gone)
    RENEW = "renew"  # the lease is ours, at our epoch: push its expiry on
    FOLLOW = "follow"  # somebody else holds a live lease: stay a follower (and let go of the lock)


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The lease row as read, with the database's clock at the read."""

    holder: str  # the holding process, `host:pid`
    host: str  # the holder's [fleet] host
    epoch: int  # raised on every takeover; a write carries the epoch it was decided under
    since: datetime  # when this epoch began
    expires_at: datetime  # by the database's clock
    locked: bool  # the holder also held the advisory lock when it last renewed

    def expired(self, db_now: datetime) -> bool:
        return db_now >= self.expires_at


def step(row: LeaseRow | None, *, me: str, my_epoch: int | None, has_lock: bool, db_now: datetime) -> Step:
    """What a contender `me` (last leading at `my_epoch`, holding the advisory lock or not) does.

    1. No row yet: the one holding the lock writes it; the others follow.
    2. The row is ours, at our epoch: renew it, even past its expiry (nobody took over, so
       nothing was written under another epoch meanwhile).
    3. The row is another's (or ours from an epoch we lost):
       a. its lease expired: take over, lock or no lock (the holder is dead, stopped or cut
          off; a stopped one's session may still hold the lock);
       b. we got the lock and the holder had it when it last renewed: its session ended (killed,
          crashed, disconnected), take over now rather than wait out the lease;
       c. otherwise follow.
    """
    if row is None:
        return Step.TAKE_OVER if has_lock else Step.FOLLOW
    if row.holder == me and row.epoch == my_epoch:
        return Step.RENEW
    if row.expired(db_now):
        return Step.TAKE_OVER
    if has_lock and row.locked:
        return Step.TAKE_OVER
    return Step.FOLLOW


def trusted_until(asked_at: timedelta, lease: timedelta) -> timedelta:
    """Until when (monotonic) a leader whose renewal, asked for at `asked_at`, succeeded may act
    without asking again (TRUST_SHARE of the lease)."""
    return asked_at + lease * TRUST_SHARE


def renew_every(lease: timedelta) -> timedelta:
    """How often the leader renews and a follower looks again."""
    return lease / RENEW_SHARE


def advisory_key(app: str) -> int:
    """The one-key (bigint) advisory lock of an app's leadership: the first 8 bytes of a SHA-256,
    signed. The store's write lock uses the two-key space, which never meets this one."""
    digest = hashlib.sha256(f"healer.fleet:{app}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_ids(key: int) -> tuple[int, int]:
    """How pg_locks shows a one-key advisory lock: (classid, objid), the key's high and low 32
    bits as unsigned oids, with objsubid 1 (PostgreSQL's docs, "pg_locks", advisory locks)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def holder_name(host: str, pid: int) -> str:
    """A contender's identity in the lease row: its host and process, so a restarted healer on
    the same host is a new contender and does not inherit a lease it never renewed."""
    return f"{host}:{pid}"
