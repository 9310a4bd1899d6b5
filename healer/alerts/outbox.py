"""The alert outbox in healer's state (SQLite, or PostgreSQL with [state] dsn_env), and the
sender that empties it (I/O).

Every alert is written here before anything is sent; one delivery row per channel tracks
whether that channel has accepted it. The sender delivers each channel's rows in order, in
its own asyncio task, so a channel that is down or slow never holds up the watchdog loop or
the other channels. Rows survive restarts; a row a channel accepted is never sent to it again
(it is marked delivered right after the channel's answer).

Several senders may share one outbox (healers on several hosts, one PostgreSQL): a delivery row
is claimed before it is sent (`Outbox.claim`: one UPDATE ... WHERE it is unclaimed, atomic on
both databases), so each message goes to each channel once. A claim lapses after the sender's
longest send (`Sender.claim_for`): a sender killed mid-send leaves its row to another, later.

Tables (all ours, created on open by MIGRATIONS):

    alert_outbox      one row per message: created_at, headline event, severity, payload_json
    alert_deliveries  one row per (message, channel): state, attempts, next_try_at, last_error,
                      claimed_by and claimed_until while a sender is at it
    alert_items       one row per event planned or muted: the pipeline's memory for dedup

Each row names its `source` (pipeline.CycleContext.source): in a fleet every host plans its own
alerts against its own memory (its incident #1 is not another host's), and `healer history`
shows a host's own alerts and the fleet's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import secrets
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from healer.alerts.message import AlertMessage, delay_of
from healer.alerts.pipeline import AlertMemory, AlertPlan, IncidentMemory, Route
from healer.clock import Clock, SystemClock
from healer.config import StateDb, format_elapsed
from healer.db import Database, Fence, Migration, Row, Tx
from healer.errors import DeliveryError, FencedError, StoreError
from healer.logging import log_event
from healer.model import Alert, Event, Severity
from healer.redact import redact

log = logging.getLogger("healer.alerts")

DEFAULT_TIMEOUT = timedelta(seconds=10)
DEFAULT_RETRY_BASE = timedelta(seconds=30)  # first pause after a failed batch, doubled each time
DEFAULT_RETRY_MAX = timedelta(minutes=15)  # ... up to this
# No retry (Retry-After included) is planned further ahead than this; see Outbox.due.
SCHEDULE_HORIZON = timedelta(hours=1)
DEFAULT_TRIES = 3  # sends per batch (tenacity), for errors that are not permanent
DEFAULT_MAX_INLINE_WAIT = timedelta(seconds=10)  # a longer Retry-After reschedules the row instead
DEFAULT_FAILING_AFTER = 3  # failed batches in a row before "channel failing" goes out elsewhere
DEFAULT_POLL = timedelta(seconds=5)  # look for rows other processes added (healer pause, ...)
BATCH = 50
_SEND_SLACK = timedelta(seconds=2)  # beyond a channel's timeout before its send is given up
_MAX_QUICK_PAUSE = timedelta(seconds=5)  # the longest pause between tries without a Retry-After

# The outbox's schema, in order (healer/db.py: Migration); one applied is never edited.
MIGRATIONS = (
    Migration(
        1,
        "the tables of the release before schema_version",
        """
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    incident_id INTEGER,
    title TEXT NOT NULL,
    payload_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id INTEGER NOT NULL REFERENCES alert_outbox(id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at TEXT NOT NULL,
    delivered_at TEXT,
    last_error TEXT,
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX IF NOT EXISTS alert_deliveries_todo ON alert_deliveries (channel, state, alert_id);
CREATE TABLE IF NOT EXISTS alert_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER REFERENCES alert_outbox(id) ON DELETE SET NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    incident_id INTEGER,
    title TEXT NOT NULL,
    muted INTEGER NOT NULL DEFAULT 0,
    flap_group TEXT  -- an opening's or a flapping notice's group (pipeline.flap_group)
);
CREATE INDEX IF NOT EXISTS alert_items_at ON alert_items (at);
CREATE INDEX IF NOT EXISTS alert_items_incident ON alert_items (incident_id);
""",
    ),
    Migration(
        2,
        "claims: several senders share one outbox",
        """
ALTER TABLE alert_deliveries ADD COLUMN claimed_by TEXT;    -- the sender sending it now
ALTER TABLE alert_deliveries ADD COLUMN claimed_until TEXT  -- ... until then at most
""",
    ),
    Migration(
        3,
        "sources: whose alerts, in an outbox several healers share",
        """
ALTER TABLE alert_outbox ADD COLUMN source TEXT NOT NULL DEFAULT '';  -- pipeline.CycleContext.source
ALTER TABLE alert_items ADD COLUMN source TEXT NOT NULL DEFAULT ''
""",
    ),
)


def _adopt(tx: Tx) -> int:
    """The version of an outbox from before schema_version (0: none yet): version 1, once an
    outbox from before flapping was grouped has the column (its old rows are of no group) and
    the tables it lacks. Never grows: every later change is a Migration."""
    if not tx.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alert_items'"):
        return 0
    if "flap_group" not in {r[1] for r in tx.query("PRAGMA table_info(alert_items)")}:
        tx.execute("ALTER TABLE alert_items ADD COLUMN flap_group TEXT")
    tx.script(MIGRATIONS[0].sql)  # IF NOT EXISTS: only what is missing
    return 1


class DeliveryState(enum.StrEnum):
    """Where one message stands with one channel."""

    PENDING = "pending"  # not accepted yet; tried again at next_try_at
    DELIVERED = "delivered"  # the channel accepted it; never sent there again
    FAILED = "failed"  # the channel refused it for good (a 4xx); not tried again


def _ts(dt: datetime) -> str:
    # one fixed format, so that text order is time order
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _redacted(message: AlertMessage) -> dict[str, Any]:
    """The message as stored, its free text redacted: the last safety net before a chat sees it,
    whoever built the message and whatever it quotes."""
    d = message.to_json()
    for item in d["items"]:
        item["title"], item["detail"] = redact(item["title"]), redact(item["detail"])
    for key in ("cause", "next_step"):
        if isinstance(d.get(key), str):
            d[key] = redact(d[key])
    return d


def retry_delay(attempts: int, base: timedelta = DEFAULT_RETRY_BASE, cap: timedelta = DEFAULT_RETRY_MAX) -> timedelta:
    """The pause before batch number `attempts + 1` of a channel: base, 2*base, 4*base ... cap."""
    return min(base * (1 << min(30, max(0, attempts - 1))), cap)


# ---- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """A message waiting for one channel."""

    alert_id: int
    channel: str
    message: AlertMessage
    attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One channel's side of a stored alert."""

    channel: str
    state: DeliveryState
    attempts: int
    next_try_at: datetime
    delivered_at: datetime | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "state": self.state.value,
            "attempts": self.attempts,
            "next_try_at": self.next_try_at.isoformat(),
            "delivered_at": None if self.delivered_at is None else self.delivered_at.isoformat(),
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A stored alert with its deliveries, for `healer history`."""

    id: int
    created_at: datetime
    event: Event
    severity: Severity
    title: str
    incident_id: int | None
    message: AlertMessage
    deliveries: tuple[DeliveryRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "event": self.event,
            "severity": self.severity.name.lower(),
            "title": self.title,
            "incident_id": self.incident_id,
            "events": [i.event for i in self.message.items],
            "deliveries": [d.to_json() for d in self.deliveries],
        }


# ---- the outbox ------------------------------------------------------------------------------


def default_owner() -> str:
    """A sender's name in the claims it writes: this host and process, and a random part, so two
    outboxes are two owners even in one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Outbox:
    """The alert tables in healer's state database; every method is one short transaction.

    Safe to call from a worker thread (`asyncio.to_thread`): one connection, one lock.
    `owner` names this outbox in its claims; `fence`, when set, guards its writes (healer/db.py).
    """

    def __init__(self, db_path: StateDb | Path | str, *, owner: str | None = None) -> None:
        self._db = Database(db_path)
        self.path = self._db.name
        self.owner = owner or default_owner()
        self.fence: Fence | None = None
        try:
            self._db.migrate("outbox", MIGRATIONS, adopt=_adopt)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _write(self) -> contextlib.AbstractContextManager[Tx]:
        return self._db.write("cannot write the alert outbox", self.fence)

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        return self._db.query(sql, args, "cannot read the alert outbox")

    # -- writing --

    def enqueue(self, message: AlertMessage, channels: Sequence[str], source: str = "") -> int:
        """Store a message for `channels`, due at once; returns its id. Not remembered for dedup."""
        with self._write() as db:
            return self._insert(db, message, channels, source=source)

    def commit_plan(self, plan: AlertPlan, now: datetime, *, delivered: Sequence[Collection[str]] = ()) -> list[int]:
        """Store a cycle's plan in one transaction: its messages, and its items for dedup.

        `delivered[i]` names the channels that already took `plan.entries[i]` (it was sent
        while the outbox could not be written): their rows are stored as delivered, the
        others' as pending, for the sender.
        """
        ids: list[int] = []
        with self._write() as db:
            by_item: dict[Alert, int] = {}
            for n, p in enumerate(plan.entries):
                if not p.channels:
                    continue
                aid = self._insert(
                    db, p.message, p.channels, delivered=delivered[n] if n < len(delivered) else (), source=plan.source
                )
                ids.append(aid)
                for it in p.message.items:
                    by_item.setdefault(it, aid)
            for r in plan.remember:
                db.execute(
                    "INSERT INTO alert_items"
                    " (alert_id, at, event, severity, incident_id, title, muted, flap_group, source)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        None if r.muted else by_item.get(r.item),
                        _ts(now),
                        r.item.event,
                        r.item.severity.name.lower(),
                        r.item.incident_id,
                        redact(r.item.title),
                        int(r.muted),
                        r.group,  # built from the redacted title (Alerts._plan scrubs it first)
                        plan.source,
                    ),
                )
        return ids

    @staticmethod
    def _insert(
        db: Tx, message: AlertMessage, channels: Sequence[str], *, delivered: Collection[str] = (), source: str = ""
    ) -> int:
        aid = db.insert(
            "INSERT INTO alert_outbox"
            " (created_at, event, severity, incident_id, title, payload_json, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                _ts(message.created_at),
                message.event,
                message.severity.name.lower(),
                message.incident_id,
                redact(message.title),
                json.dumps(_redacted(message), ensure_ascii=False),
                source,
            ),
        )
        for ch in dict.fromkeys(channels):
            if ch in delivered:
                db.execute(
                    "INSERT INTO alert_deliveries (alert_id, channel, state, attempts, next_try_at, delivered_at)"
                    " VALUES (?, ?, ?, 1, ?, ?)",
                    (aid, ch, DeliveryState.DELIVERED.value, _ts(message.created_at), _ts(message.created_at)),
                )
                continue
            db.execute(
                "INSERT INTO alert_deliveries (alert_id, channel, state, attempts, next_try_at) VALUES (?, ?, ?, 0, ?)",
                (aid, ch, DeliveryState.PENDING.value, _ts(message.created_at)),
            )
        return aid

    def claim(self, alert_id: int, channel: str, now: datetime, lease: timedelta) -> bool:
        """Take the message for `channel` until `now + lease`, before sending it: False when it
        is not pending any more, or another sender's claim on it has not lapsed. One UPDATE with
        its condition: of two senders, one changes the row and the other finds it taken (on
        PostgreSQL too, where the second waits for the first's row lock and reads the row again)."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE alert_deliveries SET claimed_by = ?, claimed_until = ?"
                " WHERE alert_id = ? AND channel = ? AND state = ?"
                " AND (claimed_by IS NULL OR claimed_by = ? OR claimed_until < ?)",
                (self.owner, _ts(now + lease), alert_id, channel, DeliveryState.PENDING.value, self.owner, _ts(now)),
            )
            return cur.rowcount == 1

    def mark_delivered(self, alert_id: int, channel: str, now: datetime) -> bool:
        """Record that `channel` accepted the message; False when it was not pending any more."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE alert_deliveries SET state = ?, delivered_at = ?,"
                " attempts = attempts + 1, last_error = NULL, claimed_by = NULL, claimed_until = NULL"
                " WHERE alert_id = ? AND channel = ? AND state = ?",
                (
                    DeliveryState.DELIVERED.value,
                    _ts(now),
                    alert_id,
                    channel,
                    DeliveryState.PENDING.value,
                ),
            )
            return cur.rowcount == 1

    def mark_failed(
        self,
        alert_id: int,
        channel: str,
        error: str,
        *,
        retry_at: datetime | None,
        permanent: bool = False,
    ) -> None:
        """Record a failed batch: try again at `retry_at`, or never when `permanent`."""
        state = DeliveryState.FAILED if permanent else DeliveryState.PENDING
        with self._write() as db:
            db.execute(
                "UPDATE alert_deliveries SET state = ?, attempts = attempts + 1, last_error = ?,"
                " next_try_at = COALESCE(?, next_try_at), claimed_by = NULL, claimed_until = NULL"
                " WHERE alert_id = ? AND channel = ? AND state = ?",
                (
                    state.value,
                    redact(error)[:1000],
                    None if retry_at is None else _ts(retry_at),
                    alert_id,
                    channel,
                    DeliveryState.PENDING.value,
                ),
            )

    def prune(self, before: datetime) -> int:
        """Forget alerts older than `before` that nothing waits for; returns how many."""
        with self._write() as db:
            cut = _ts(before)
            cur = db.execute(
                "DELETE FROM alert_outbox WHERE created_at < ? AND id NOT IN"
                " (SELECT alert_id FROM alert_deliveries WHERE state = ?)",
                (cut, DeliveryState.PENDING.value),
            )
            db.execute("DELETE FROM alert_items WHERE at < ? AND alert_id IS NULL", (cut,))
            return cur.rowcount

    # -- reading --

    def due(self, channel: str, now: datetime, *, ignore_schedule: bool = False, limit: int = BATCH) -> list[Due]:
        """The channel's pending messages in order, as long as the oldest one is due.

        Order matters more than speed: while the oldest waits for a retry, newer ones wait too,
        so a channel that comes back receives the story in the order it happened.
        """
        rows = self._read(
            "SELECT d.alert_id, d.attempts, d.next_try_at, a.payload_json FROM alert_deliveries d"
            " JOIN alert_outbox a ON a.id = d.alert_id WHERE d.channel = ? AND d.state = ?"
            " ORDER BY d.alert_id LIMIT ?",
            (channel, DeliveryState.PENDING.value, limit),
        )
        if not rows:
            return []
        at = _dt(rows[0][2])
        # a retry is never planned further ahead than SCHEDULE_HORIZON: one that far away was
        # planned before the wall clock was stepped back, and waiting for it would sit on alerts
        if not ignore_schedule and at is not None and now < at <= now + SCHEDULE_HORIZON:
            return []
        return [Due(r[0], channel, AlertMessage.from_json(json.loads(r[3])), r[1]) for r in rows]

    def next_try_at(self, channel: str) -> datetime | None:
        """When the channel's oldest pending message is due, if it has one."""
        rows = self._read(
            "SELECT next_try_at FROM alert_deliveries WHERE channel = ? AND state = ? ORDER BY alert_id LIMIT 1",
            (channel, DeliveryState.PENDING.value),
        )
        return _dt(rows[0][0]) if rows else None

    def pending_count(self, channel: str | None = None) -> int:
        """Deliveries not accepted yet (all channels, or one)."""
        if channel is None:
            rows = self._read(
                "SELECT COUNT(*) FROM alert_deliveries WHERE state = ?",
                (DeliveryState.PENDING.value,),
            )
        else:
            rows = self._read(
                "SELECT COUNT(*) FROM alert_deliveries WHERE state = ? AND channel = ?",
                (DeliveryState.PENDING.value, channel),
            )
        return int(rows[0][0])

    def delivery_counts(self, source: str) -> dict[tuple[str, str], int]:
        """(channel, state) -> how many deliveries of `source`'s alerts (for /metrics in a fleet:
        each host counts its own)."""
        rows = self._read(
            "SELECT d.channel, d.state, COUNT(*) FROM alert_deliveries d JOIN alert_outbox a ON a.id = d.alert_id"
            " WHERE a.source = ? GROUP BY d.channel, d.state",
            (source,),
        )
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    def history(self, since: datetime | None = None, sources: Collection[str] | None = None) -> list[AlertRecord]:
        """Stored alerts created at or after `since` (of `sources` only, when given), oldest
        first, with each channel's delivery."""
        cut = _ts(since) if since else ""
        only, args = "", [cut]
        if sources is not None:
            only = f" AND a.source IN ({', '.join('?' * len(sources))})" if sources else " AND 1 = 0"
            args += list(sources)
        rows = self._read(
            "SELECT a.id, a.created_at, a.event, a.severity, a.title, a.incident_id, a.payload_json"
            f" FROM alert_outbox a WHERE a.created_at >= ?{only} ORDER BY a.id",
            args,
        )
        dels = self._read(
            "SELECT d.alert_id, d.channel, d.state, d.attempts, d.next_try_at, d.delivered_at,"
            " d.last_error FROM alert_deliveries d JOIN alert_outbox a ON a.id = d.alert_id"
            f" WHERE a.created_at >= ?{only}"
            " ORDER BY d.alert_id, d.channel",
            args,
        )
        per: dict[int, list[DeliveryRecord]] = {}
        for aid, ch, state, attempts, nxt, delivered, err in dels:
            per.setdefault(aid, []).append(
                DeliveryRecord(
                    ch,
                    DeliveryState(state),
                    attempts,
                    _dt(nxt),
                    _dt(delivered) if delivered else None,
                    err,
                )
            )
        return [
            AlertRecord(
                id=r[0],
                created_at=_dt(r[1]),
                event=Event(r[2]),
                severity=Severity[r[3].upper()],
                title=r[4],
                incident_id=r[5],
                message=AlertMessage.from_json(json.loads(r[6])),
                deliveries=tuple(per.get(r[0], ())),
            )
            for r in rows
        ]

    def memory(self, now: datetime, repeat_every: timedelta, source: str = "") -> AlertMemory:
        """What the pipeline needs from the past of `source`'s alerts: every incident's story,
        and recent messages."""
        incidents: dict[int, IncidentMemory] = {}
        for inc, event, sev, muted, at in self._read(
            "SELECT incident_id, event, severity, muted, at FROM alert_items"
            " WHERE incident_id IS NOT NULL AND source = ? ORDER BY id",
            (source,),
        ):
            m = incidents.get(inc, IncidentMemory())
            severity = Severity[sev.upper()]
            opened = m.opened or (event == Event.INCIDENT_OPENED and not muted)
            is_muted = m.muted or (event == Event.INCIDENT_OPENED and bool(muted))
            resolved = m.resolved or event == Event.INCIDENT_RESOLVED
            top = m.severity if event == Event.INCIDENT_RESOLVED else max(m.severity, severity)
            incidents[inc] = IncidentMemory(opened, is_muted, resolved, _dt(at), top)
        cut = _ts(now - repeat_every)
        recent = {
            (ev, inc, title): _dt(at)
            for ev, inc, title, at in self._read(
                "SELECT event, incident_id, title, MAX(at) FROM alert_items"
                " WHERE at > ? AND muted = 0 AND source = ?"
                " GROUP BY event, incident_id, title",
                (cut, source),
            )
        }
        openings = tuple(
            (_dt(at), group or "")
            for at, group in self._read(
                "SELECT at, flap_group FROM alert_items WHERE at > ? AND event = ? AND source = ? ORDER BY id",
                (cut, Event.INCIDENT_OPENED, source),
            )
        )
        flapping = {
            group or "": _dt(at)
            for group, at in self._read(
                "SELECT flap_group, MAX(at) FROM alert_items WHERE event = ? AND source = ? GROUP BY flap_group",
                (Event.INCIDENT_FLAPPING, source),
            )
        }
        return AlertMemory(incidents=incidents, recent=recent, openings=openings, flapping=flapping)


# ---- channels and the sender -----------------------------------------------------------------


class Channel(Protocol):
    """Sends one message somewhere; raises DeliveryError (permanent or not) when it cannot.

    `name` keys the channel's delivery rows (unique); `kind` is "slack", "telegram" or "log".
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def min_severity(self) -> Severity: ...

    async def send(self, message: AlertMessage, *, delayed: timedelta | None = None) -> None: ...


class _Result(enum.Enum):
    """How one delivery ended."""

    DELIVERED = "delivered"  # the channel accepted it
    FAILED = "failed"  # refused for good; the next message may go
    RETRY = "retry"  # try later; the channel's later messages wait


def _retryable_now(max_inline: timedelta) -> retry_if_exception:
    def check(e: BaseException) -> bool:
        if not isinstance(e, DeliveryError) or e.permanent:
            return False
        return e.retry_after is None or e.retry_after <= max_inline.total_seconds()

    return retry_if_exception(check)


def _wait(rs: RetryCallState) -> float:
    """Between tries of one batch: the server's Retry-After, else 0.5s, 1s, 2s ... 5s."""
    exc = rs.outcome.exception() if rs.outcome else None
    if isinstance(exc, DeliveryError) and exc.retry_after is not None:
        return max(0.0, exc.retry_after)
    return min(0.5 * (1 << min(30, max(0, rs.attempt_number - 1))), _MAX_QUICK_PAUSE.total_seconds())


class Sender:
    """Delivers the outbox, one asyncio task per channel, until told to stop.

    sender = Sender(outbox, channels, app="shop-api", timeout=config.alerts.timeout)
    task = asyncio.create_task(sender.run(stop))   # beside the loop
    sender.wake()                                  # after enqueuing
    left = await sender.flush(timedelta(seconds=5))  # at shutdown
    """

    def __init__(
        self,
        outbox: Outbox,
        channels: Sequence[Channel],
        *,
        app: str = "app",
        source: str = "",
        timeout: timedelta = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        tries: int = DEFAULT_TRIES,
        retry_base: timedelta = DEFAULT_RETRY_BASE,
        retry_max: timedelta = DEFAULT_RETRY_MAX,
        max_inline_wait: timedelta = DEFAULT_MAX_INLINE_WAIT,
        failing_after: int = DEFAULT_FAILING_AFTER,
        poll: timedelta = DEFAULT_POLL,
    ) -> None:
        self.outbox = outbox
        self.channels = {c.name: c for c in channels}
        self.routes = tuple(Route(c.name, c.min_severity) for c in channels)
        self.app = app
        self.source = source  # whose alerts its own are (pipeline.CycleContext.source)
        self.timeout = timeout
        self.clock: Clock = clock or SystemClock()
        self.tries = tries
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_inline_wait = max_inline_wait
        self.failing_after = failing_after
        self.poll = poll
        # a claim outlasts this sender's longest send: every try timing out, every pause between
        self.claim_for = (
            tries * (timeout + _SEND_SLACK) + (tries - 1) * max(max_inline_wait, _MAX_QUICK_PAUSE) + _SEND_SLACK
        )
        self._wakes = {name: asyncio.Event() for name in self.channels}
        # one pass per channel at a time: flush() during run() must not send a row twice
        self._busy = {name: asyncio.Lock() for name in self.channels}
        self._failures = dict.fromkeys(self.channels, 0)
        self._outage = dict.fromkeys(self.channels, False)  # "channel failing" went out for this outage
        # Delivered, but the outbox could not be told: never sent again by this process, marked
        # delivered as soon as the store can be written. (alert_id, channel) -> when delivered
        self._unmarked: dict[tuple[int, str], datetime] = {}
        self._store_failing = False  # the store error was logged (once per outage)

    def wake(self, channels: Sequence[str] | None = None) -> None:
        """New rows are in the outbox: look now rather than at the next poll."""
        for name in channels if channels is not None else self._wakes:
            ev = self._wakes.get(name)
            if ev is not None:
                ev.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; a send in flight is finished (within the timeout) first."""

        async def stopper() -> None:
            await stop.wait()
            self.wake()

        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(stopper())
            workers = [tg.create_task(self._worker(c, stop)) for c in self.channels.values()]
            await asyncio.gather(*workers)
            watcher.cancel()

    async def flush(self, within: timedelta) -> int:
        """Try every pending message once now, retry schedule or not, for at most `within`.

        Returns how many deliveries are still pending (kept for the next start).
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self._pass(c, ignore_schedule=True) for c in self.channels.values())),
                timeout=within.total_seconds(),
            )
        return await asyncio.to_thread(self.outbox.pending_count)

    async def deliver_due(self) -> None:
        """One pass over every channel: what is due now (for tests and one-shot commands).

        Every channel has its pass even when another's fails; the first error is raised after.
        """
        results = await asyncio.gather(*(self._pass(c) for c in self.channels.values()), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def send_now(self, message: AlertMessage, channels: Sequence[str]) -> frozenset[str]:
        """Send `message` to `channels` at once, bypassing the outbox (it cannot be written);
        returns the channels that took it. One try each, all at once: one that fails gets the
        message from the outbox once the store works again."""

        async def one(name: str) -> str | None:
            ch = self.channels.get(name)
            if ch is None:
                return None
            try:
                await self._send_once(ch, message, None)
            except DeliveryError as e:
                log_event(log, "alerts.delivery_failed", level=logging.WARNING, channel=name, recorded=False,
                          permanent=e.permanent, error=redact(str(e)))  # fmt: skip
                return None
            log_event(log, "alerts.delivered", channel=name, event=message.event, recorded=False)
            return name

        names = await asyncio.gather(*(one(n) for n in dict.fromkeys(channels)))
        return frozenset(n for n in names if n is not None)

    async def _worker(self, ch: Channel, stop: asyncio.Event) -> None:
        wake = self._wakes[ch.name]
        while not stop.is_set():
            wake.clear()
            try:
                await self._pass(ch, stop=stop)
                nxt = await asyncio.to_thread(self.outbox.next_try_at, ch.name)
                if self._store_failing and not self._unmarked:
                    self._store_failing = False
                    log_event(log, "alerts.store_recovered", channel=ch.name)
            except StoreError as e:
                if not self._store_failing:  # once per outage: the loop reports the store's state
                    self._store_failing = True
                    log_event(log, "alerts.store_failed", level=logging.ERROR, channel=ch.name, error=str(e))
                nxt = None
            except Exception as e:  # a bug must not end delivery, nor the loop beside it
                log_event(
                    log,
                    "alerts.sender_error",
                    level=logging.ERROR,
                    exc_info=True,
                    channel=ch.name,
                    error=repr(e),
                )
                nxt = None
            delay = self.poll
            if nxt is not None:
                delay = min(delay, max(timedelta(0), nxt - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(0.01, delay.total_seconds()))

    async def _pass(self, ch: Channel, *, stop: asyncio.Event | None = None, ignore_schedule: bool = False) -> None:
        async with self._busy[ch.name]:
            for (alert_id, name), at in list(self._unmarked.items()):
                if name == ch.name:  # raises StoreError while the store still cannot be written
                    await asyncio.to_thread(self.outbox.mark_delivered, alert_id, name, at)
                    del self._unmarked[(alert_id, name)]
            rows = await asyncio.to_thread(self.outbox.due, ch.name, self.clock.now(), ignore_schedule=ignore_schedule)
            for row in rows:
                if stop is not None and stop.is_set():
                    return
                if not await self._claim(ch, row):
                    return  # another sender has it (and the channel's later rows wait behind it)
                if await self._deliver(ch, row) is _Result.RETRY:
                    return

    async def _claim(self, ch: Channel, row: Due) -> bool:
        """Claim the row before sending it. An outbox that cannot be written (a full disk) does
        not hold the alert back: it is sent unclaimed, as a duplicate across hosts beats a lost
        alert (Alertmanager's choice), and `_unmarked` keeps this process from sending it twice."""
        try:
            return await asyncio.to_thread(self.outbox.claim, row.alert_id, ch.name, self.clock.now(), self.claim_for)
        except FencedError:
            raise
        except StoreError:
            return True

    async def _deliver(self, ch: Channel, row: Due) -> _Result:
        """Deliver one message to one channel.

        1. Send, with quick retries for what is not permanent (tenacity).
        2. Record the outcome at once: delivered, failed for good, or retry at a later time.
        3. When the channel keeps failing, say so once through the other channels.
        """
        started = self.clock.now()
        delayed = delay_of(row.message, started)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.tries),
                wait=_wait,
                retry=_retryable_now(self.max_inline_wait),
                reraise=True,
            ):
                with attempt:
                    await self._send_once(ch, row.message, delayed)
        except DeliveryError as e:
            error = redact(str(e))
            now = self.clock.now()
            if e.permanent:
                await asyncio.to_thread(
                    self.outbox.mark_failed,
                    row.alert_id,
                    ch.name,
                    error,
                    retry_at=None,
                    permanent=True,
                )
                result = _Result.FAILED
            else:
                pause = retry_delay(row.attempts + 1, self.retry_base, self.retry_max)
                if e.retry_after is not None:
                    pause = min(max(pause, timedelta(seconds=e.retry_after)), SCHEDULE_HORIZON)
                await asyncio.to_thread(self.outbox.mark_failed, row.alert_id, ch.name, error, retry_at=now + pause)
                result = _Result.RETRY
            log_event(
                log,
                "alerts.delivery_failed",
                level=logging.WARNING,
                channel=ch.name,
                alert_id=row.alert_id,
                permanent=e.permanent,
                attempts=row.attempts + 1,
                error=error,
            )
            await self._channel_failed(ch, error, permanent=e.permanent)
            return result
        now = self.clock.now()
        try:
            await asyncio.to_thread(self.outbox.mark_delivered, row.alert_id, ch.name, now)
        except StoreError:
            self._unmarked[(row.alert_id, ch.name)] = now  # sent once: not again (see _pass)
            raise
        log_event(
            log,
            "alerts.delivered",
            channel=ch.name,
            alert_id=row.alert_id,
            event=row.message.event,
            delayed=None if delayed is None else format_elapsed(delayed),
        )
        self._channel_ok(ch)
        return _Result.DELIVERED

    async def _send_once(self, ch: Channel, message: AlertMessage, delayed: timedelta | None) -> None:
        # the channel's own client has the same timeout; this one is the safety net around it
        limit = (self.timeout + _SEND_SLACK).total_seconds()
        try:
            await asyncio.wait_for(ch.send(message, delayed=delayed), timeout=limit)
        except DeliveryError:
            raise
        except TimeoutError:
            msg = f"{ch.name}: no answer within {format_elapsed(self.timeout)}"
            raise DeliveryError(msg) from None
        except Exception as e:  # a bug or an unexpected library error: push back, never crash the sender
            msg = f"{ch.name}: unexpected error: {type(e).__name__}: {redact(str(e))}"
            raise DeliveryError(msg) from None

    def _channel_ok(self, ch: Channel) -> None:
        self._failures[ch.name] = 0
        if self._outage[ch.name]:
            self._outage[ch.name] = False
            log_event(log, "alerts.channel_recovered", channel=ch.name)

    async def _channel_failed(self, ch: Channel, error: str, *, permanent: bool) -> None:
        self._failures[ch.name] += 1
        n = self._failures[ch.name]
        if self._outage[ch.name] or (n < self.failing_after and not permanent):
            return
        self._outage[ch.name] = True
        item = Alert(
            Event.META_CHANNEL_FAILING,
            Severity.WARNING,
            f"{ch.kind} alerts are not getting through",
            f"{ch.name}: {n} attempt{'s' if n != 1 else ''} failed, last: {error}. "
            + (
                "It refuses the messages; check its configuration."
                if permanent
                else f"healer keeps its alerts and delivers them when {ch.kind} answers again."
            ),
            bypass_dedup=True,
        )
        # about alerting itself: every other channel hears it, whatever its minimum severity
        targets = tuple(name for name in self.channels if name != ch.name)
        if not targets:
            return
        message = AlertMessage(items=(item,), app=self.app, created_at=self.clock.now())
        await asyncio.to_thread(self.outbox.enqueue, message, targets, self.source)
        log_event(
            log,
            "alerts.channel_failing",
            level=logging.ERROR,
            channel=ch.name,
            error=error,
            told=list(targets),
        )
        self.wake(targets)
