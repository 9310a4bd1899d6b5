"""healer's own state, in one SQLite database (WAL) or, with [state] dsn_env, in PostgreSQL;
all of healer's core SQL lives here (I/O). healer/db.py runs the same SQL on both.

WAL with synchronous=NORMAL keeps every committed transaction through `kill -9`. A cycle is
recorded in one transaction (results, counters, incident), so a restart resumes exactly
where the last committed cycle left off: same window, same baseline, same failure count.
The alert outbox keeps its own tables in the same database (healer/alerts/outbox.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from healer.chatops import Ack
from healer.config import StateDb
from healer.db import Backend, Database, Fence, Migration, Row, Tx
from healer.decide import PastRepair, Pause
from healer.model import ActionNote, Baseline, CheckResult, Deploy, Outcome, Verdict, Who
from healer.redact import redact

# The store's schema, in order (healer/db.py: Migration). A new column or table is a new
# Migration at the end of this list; one applied is never edited.
MIGRATIONS = (
    Migration(
        1,
        "the tables of the release before schema_version",
        """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    baseline TEXT,                       -- JSON of Baseline, NULL until the first healthy cycle
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    consecutive_passes INTEGER NOT NULL DEFAULT 0,
    emergency_streak INTEGER NOT NULL DEFAULT 0,
    open_incident INTEGER,
    last_cycle_at TEXT,
    last_ok INTEGER,
    via_rollback INTEGER NOT NULL DEFAULT 0,
    held TEXT,
    stable_tag TEXT,
    phase_index INTEGER,
    healthy_at TEXT                      -- its first healthy loop cycle (attribution: was it ever healthy?)
);
CREATE TABLE IF NOT EXISTS cycles (
    id INTEGER PRIMARY KEY,
    deploy_id INTEGER NOT NULL REFERENCES deploys(id),
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    who TEXT NOT NULL,
    summary TEXT NOT NULL,
    results TEXT NOT NULL,               -- JSON list of CheckResult
    cause TEXT,                          -- a failing loop cycle's likely cause: deploy, dependency redis, ...
    next_step TEXT,                      -- what healer did or will do next, skipped remedies included
    woken TEXT                           -- why a cycle ran before it was due: "app pid 1234 exited"
);
-- (at, ok) covers counting a period's cycles and passes without reading the rows (report)
CREATE INDEX IF NOT EXISTS cycles_at_ok ON cycles(at, ok);
DROP INDEX IF EXISTS cycles_at;
CREATE INDEX IF NOT EXISTS cycles_deploy ON cycles(deploy_id, id);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    deploy_id INTEGER NOT NULL REFERENCES deploys(id),
    opened_at TEXT NOT NULL,
    resolved_at TEXT,
    cause TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    finished_at TEXT,
    deploy_id INTEGER,
    incident_id INTEGER,
    kind TEXT NOT NULL,                  -- repair | rollback | baseline.reset | pause | resume | tag | hold
    name TEXT NOT NULL,                  -- the playbook, the target, ...
    who TEXT NOT NULL,                   -- loop | person
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,               -- started | ok | failed | skipped | error
    detail TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS actions_at ON actions(at);
CREATE TABLE IF NOT EXISTS bad_commits (
    commit_sha TEXT PRIMARY KEY,
    marked_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pauses (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    until TEXT NOT NULL,
    reason TEXT NOT NULL,
    who TEXT NOT NULL,
    ended_at TEXT,
    announced_end INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS acks (            -- a person acknowledged an incident (the latest ack)
    incident_id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,                       -- person's name, or telegram:ID / slack:ID
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS chat_presses (    -- alert buttons that did their work: a second press says so
    data TEXT PRIMARY KEY,                   -- the button's callback data (names verb, incident, message)
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL                       -- what it did, as the message was edited to say
);
-- Per UTC hour and check: how many results, how many passed. record_cycle keeps it up to date in
-- the cycle's transaction, so a report over 30 days sums 720 rows per check instead of parsing the
-- JSON of every cycle (43,200 cycles at a 1-minute cadence); only the partial hours at the ends of
-- a period are counted from the cycles themselves. `first` orders the checks as they first
-- appeared: cycle id * _POSITIONS + the result's position in that cycle.
CREATE TABLE IF NOT EXISTS check_hours (
    hour TEXT NOT NULL,                  -- YYYY-MM-DDTHH (UTC) of the cycles
    name TEXT NOT NULL,                  -- the check
    passed INTEGER NOT NULL,
    total INTEGER NOT NULL,
    first INTEGER NOT NULL,
    PRIMARY KEY (hour, name)
) WITHOUT ROWID
""",
    ),
)

# Columns added before schema_version existed: (table, column), all TEXT and NULL by default.
_ADDED_COLUMNS = (("deploys", "healthy_at"), ("cycles", "cause"), ("cycles", "next_step"), ("cycles", "woken"))
_POSITIONS = 1_000_000

# Each cycle's results, one row per check: (id, at) of the cycle, the check's name, ok (1 or 0)
# and its position in the cycle. The one place where the two databases' JSON differs.
_RESULTS = {
    Backend.SQLITE: "(SELECT c.id, c.at, json_extract(j.value, '$.name') AS name, json_extract(j.value, '$.ok') AS ok,"
    " j.key AS pos FROM cycles c, json_each(c.results) j)",
    Backend.POSTGRES: "(SELECT c.id, c.at, j.value->>'name' AS name, CASE WHEN (j.value->>'ok')::boolean THEN 1"
    " ELSE 0 END AS ok, j.pos - 1 AS pos"
    " FROM cycles c, jsonb_array_elements(c.results::jsonb) WITH ORDINALITY AS j(value, pos))",
}


def _rollup_from_cycles(backend: Backend) -> str:
    """(hour, name, passed, total, first) from cycles: the back-fill, and a partly pruned hour."""
    return (
        f"SELECT substr(r.at, 1, 13), r.name, SUM(r.ok), COUNT(*), MIN(r.id * {_POSITIONS} + r.pos) "
        f"FROM {_RESULTS[backend]} r"
    )


def _adopt(tx: Tx) -> int:
    """The schema version of a SQLite file from before schema_version (0: a new file): the
    columns and the check_hours table of earlier releases are added, so it is at version 1.
    Never grows: every later change is a Migration."""
    if not tx.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deploys'"):
        return 0
    for table, column in _ADDED_COLUMNS:
        if column not in {r[1] for r in tx.query(f"PRAGMA table_info({table})")}:
            tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
    rollups = tx.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'check_hours'")
    tx.script(MIGRATIONS[0].sql)  # IF NOT EXISTS: only what is missing
    if not rollups:
        tx.execute(
            f"INSERT INTO check_hours(hour, name, passed, total, first) {_rollup_from_cycles(Backend.SQLITE)} "
            "GROUP BY 1, 2"
        )
    tx.execute("DELETE FROM meta WHERE key = 'schema_version'")  # schema_version is the table now
    return 1


# A deploy's row with why its commit is known bad (bad_commits is keyed by commit: one row at most).
_DEPLOYS = "SELECT d.*, b.reason AS bad FROM deploys d LEFT JOIN bad_commits b ON b.commit_sha = d.commit_sha"


def _scrub(text: str) -> str:
    """The last safety net: free text is redacted before it is written, whoever forgot to."""
    return redact(text)


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def _hour(t: datetime) -> datetime:
    """The start of the UTC hour `t` falls in."""
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One row of the action log."""

    id: int
    at: datetime
    finished_at: datetime | None
    deploy_id: int | None
    incident_id: int | None
    kind: str
    name: str
    who: str
    reason: str
    outcome: str
    detail: str
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": _ts(self.at),
            "finished_at": None if self.finished_at is None else _ts(self.finished_at),
            "deploy_id": self.deploy_id, "incident_id": self.incident_id, "kind": self.kind,
            "name": self.name, "who": self.who, "reason": self.reason, "outcome": self.outcome,
            "detail": self.detail,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: int
    deploy_id: int
    opened_at: datetime
    resolved_at: datetime | None
    cause: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "deploy_id": self.deploy_id, "opened_at": _ts(self.opened_at),
            "resolved_at": None if self.resolved_at is None else _ts(self.resolved_at),
            "cause": self.cause,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class CycleRow:
    id: int
    deploy_id: int
    at: datetime
    ok: bool
    who: str
    summary: str
    results: tuple[CheckResult, ...]
    cause: str | None = None  # a failing loop cycle's likely cause
    next_step: str | None = None
    woken: str | None = None  # why it ran before it was due (healer.watch)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "deploy_id": self.deploy_id, "at": _ts(self.at), "ok": self.ok,
            "who": self.who, "summary": self.summary, "cause": self.cause, "next_step": self.next_step,
            "woken": self.woken, "results": [r.to_json() for r in self.results],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class CycleUpdate:
    """The counters a decided cycle leaves behind."""

    consecutive_failures: int
    consecutive_passes: int
    emergency_streak: int
    baseline: Baseline | None  # set when this cycle became the baseline
    open_incident_cause: str | None  # open an incident with this cause
    resolve_incident: bool
    phase_index: int | None = None
    cause: str | None = None  # a failing cycle's likely cause (Attribution.label)
    next_step: str | None = None  # what healer does next, skipped remedies included
    settled: bool = True  # a healthy cycle counts as the release's own (ladder.settled)
    woken: str | None = None  # why the cycle ran before it was due (healer.watch)


class Store:
    """The state database. Methods are short, synchronous transactions; the loop calls
    them through `asyncio.to_thread` so the event loop never waits on the disk.

    `fence`, when set, guards every write transaction of this Store (healer/db.py: Fence): a
    write it refuses raises FencedError and writes nothing."""

    def __init__(self, where: StateDb | Path | str) -> None:
        self._db = Database(where)
        self.path = self._db.name  # for messages: the file, or postgresql host:port/database
        self._lock = self._db.lock
        self.fence: Fence | None = None
        self._results = _RESULTS[self._db.backend]
        try:
            self._db.migrate("store", MIGRATIONS, adopt=_adopt)
        except BaseException:
            self._db.close()
            raise

    @property
    def db(self) -> Database:
        """The connection seam, for a module that keeps its own tables beside the store's."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tx(self) -> contextlib.AbstractContextManager[Tx]:
        return self._db.write("cannot write the state", self.fence)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._db.query(sql, args)

    # ---- meta ---------------------------------------------------------------------------

    def set_meta(self, **values: str | None) -> None:
        with self._tx() as db:
            for k, v in values.items():
                if v is None:
                    db.execute("DELETE FROM meta WHERE key = ?", (k,))
                else:
                    db.execute(
                        "INSERT INTO meta(key, value) VALUES (?, ?)"
                        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (k, v),
                    )

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._query("SELECT key, value FROM meta")}

    # ---- deploys --------------------------------------------------------------------------

    def current_deploy(self) -> Deploy | None:
        rows = self._query(f"{_DEPLOYS} ORDER BY d.id DESC LIMIT 1")
        return _deploy(rows[0]) if rows else None

    def deploy(self, deploy_id: int) -> Deploy | None:
        rows = self._query(f"{_DEPLOYS} WHERE d.id = ?", (deploy_id,))
        return _deploy(rows[0]) if rows else None

    def deploys(self) -> list[Deploy]:
        return [_deploy(r) for r in self._query(f"{_DEPLOYS} ORDER BY d.id")]

    def ensure_deploy(self, commit: str, now: datetime, *, via_rollback: bool = False) -> tuple[Deploy, bool]:
        """The deploy of `commit` at HEAD: the current one, or a new window when HEAD moved.
        Returns (deploy, is_new). An incident of the previous deploy is closed with it."""
        current = self.current_deploy()  # the loop asks every second: no write lock when HEAD has not moved
        if current is not None and current.commit == commit and (current.via_rollback or not via_rollback):
            return current, False
        with self._tx() as db:
            row = db.execute("SELECT id, commit_sha, open_incident FROM deploys ORDER BY id DESC LIMIT 1").fetchone()
            if row is not None and row[1] == commit:
                new = False
                deploy_id = row[0]
                if via_rollback:  # the window was opened before the rollback finished (a resume)
                    db.execute("UPDATE deploys SET via_rollback = 1 WHERE id = ?", (deploy_id,))
            else:
                if row is not None and row[2] is not None:
                    db.execute(
                        "UPDATE incidents SET resolved_at = ?, cause = cause || ' (closed: a new commit was deployed)' "
                        "WHERE id = ? AND resolved_at IS NULL",
                        (_ts(now), row[2]),
                    )
                    db.execute("UPDATE deploys SET open_incident = NULL WHERE id = ?", (row[0],))
                deploy_id = db.insert(
                    "INSERT INTO deploys(commit_sha, first_seen, via_rollback) VALUES (?, ?, ?)",
                    (commit, _ts(now), int(via_rollback)),
                )
                new = True
        d = self.deploy(deploy_id)
        assert d is not None
        return d, new

    def set_held(self, deploy_id: int, reason: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE deploys SET held = ? WHERE id = ?", (reason and _scrub(reason), deploy_id))

    def set_stable_tag(self, deploy_id: int, tag: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE deploys SET stable_tag = ? WHERE id = ?", (tag, deploy_id))

    def reset_baseline(self, deploy_id: int, who: Who, now: datetime) -> None:
        with self._tx() as db:
            db.execute("UPDATE deploys SET baseline = NULL WHERE id = ?", (deploy_id,))
            db.execute(
                "INSERT INTO actions(at, finished_at, deploy_id, kind, name, who, reason, outcome) "
                "VALUES (?, ?, ?, 'baseline.reset', 'baseline', ?, 'healer baseline --reset', 'ok')",
                (_ts(now), _ts(now), deploy_id, str(who)),
            )

    def phase_index(self, deploy_id: int) -> int | None:
        rows = self._query("SELECT phase_index FROM deploys WHERE id = ?", (deploy_id,))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    # ---- cycles ---------------------------------------------------------------------------

    def record_cycle(self, deploy_id: int, verdict: Verdict, who: Who | str, update: CycleUpdate | None) -> int | None:
        """Record a cycle and, for the loop's cycles, its counters and incident, atomically.
        Returns the id of an incident opened by this cycle."""
        results = json.dumps([{**r.to_json(), "error": r.error and _scrub(r.error)} for r in verdict.results])
        opened: int | None = None
        at = _ts(verdict.at)
        with self._tx() as db:
            cause = None if update is None else update.cause
            step = None if update is None else update.next_step
            woken = None if update is None else update.woken
            base = _POSITIONS * db.insert(
                "INSERT INTO cycles(deploy_id, at, ok, who, summary, results, cause, next_step, woken) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (deploy_id, at, int(verdict.ok), str(who), verdict.summary(), results, cause, step, woken),
            )
            db.executemany(
                "INSERT INTO check_hours(hour, name, passed, total, first) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT(hour, name) DO UPDATE SET passed = check_hours.passed + excluded.passed,"
                " total = check_hours.total + 1, "
                "first = CASE WHEN excluded.first < check_hours.first THEN excluded.first ELSE check_hours.first END",
                [(at[:13], r.name, int(r.ok), base + i) for i, r in enumerate(verdict.results)],
            )
            if update is None:
                return None
            sets = {
                "consecutive_failures": update.consecutive_failures,
                "consecutive_passes": update.consecutive_passes,
                "emergency_streak": update.emergency_streak,
                "last_cycle_at": _ts(verdict.at),
                "last_ok": int(verdict.ok),
            }
            if update.baseline is not None:
                sets["baseline"] = _baseline_json(update.baseline)
            if verdict.ok and update.settled:
                db.execute("UPDATE deploys SET healthy_at = ? WHERE id = ? AND healthy_at IS NULL", (at, deploy_id))
            if update.phase_index is not None:
                sets["phase_index"] = update.phase_index
            if update.open_incident_cause is not None:
                opened = db.insert(
                    "INSERT INTO incidents(deploy_id, opened_at, cause) VALUES (?, ?, ?)",
                    (deploy_id, _ts(verdict.at), _scrub(update.open_incident_cause)),
                )
                sets["open_incident"] = opened
            if update.resolve_incident:
                db.execute(
                    "UPDATE incidents SET resolved_at = ? WHERE id = (SELECT open_incident FROM deploys WHERE id = ?)",
                    (_ts(verdict.at), deploy_id),
                )
                sets["open_incident"] = None
            cols = ", ".join(f"{k} = ?" for k in sets)
            db.execute(
                f"UPDATE deploys SET {cols} WHERE id = ?", (*sets.values(), deploy_id)
            )  # column names are ours, values are bound
        return opened

    def cycles(
        self, since: datetime | None = None, deploy_id: int | None = None, limit: int | None = None
    ) -> list[CycleRow]:
        sql, args = "SELECT * FROM cycles WHERE 1=1", list[Any]()
        if since is not None:
            sql += " AND at >= ?"
            args.append(_ts(since))
        if deploy_id is not None:
            sql += " AND deploy_id = ?"
            args.append(deploy_id)
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        rows = self._query(sql, args)
        return [_cycle(r) for r in reversed(rows)]

    # ---- incidents ------------------------------------------------------------------------

    def incidents(self, since: datetime | None = None) -> list[IncidentRow]:
        if since is None:
            rows = self._query("SELECT * FROM incidents ORDER BY id")
        else:
            rows = self._query(
                "SELECT * FROM incidents WHERE opened_at >= ? OR resolved_at IS NULL OR resolved_at >= ? ORDER BY id",
                (_ts(since), _ts(since)),
            )
        return [
            IncidentRow(
                r["id"], r["deploy_id"], datetime.fromisoformat(r["opened_at"]), _dt(r["resolved_at"]), r["cause"]
            )
            for r in rows
        ]

    def incident(self, incident_id: int) -> IncidentRow | None:
        rows = self._query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if not rows:
            return None
        r = rows[0]
        return IncidentRow(
            r["id"], r["deploy_id"], datetime.fromisoformat(r["opened_at"]), _dt(r["resolved_at"]), r["cause"]
        )

    # ---- actions --------------------------------------------------------------------------

    def start_action(
        self, *, kind: str, name: str, who: Who | str, reason: str, now: datetime,
        deploy_id: int | None, incident_id: int | None = None, outcome: Outcome = Outcome.STARTED,
        detail: str = "", note: str = "",
    ) -> int:  # fmt: skip
        """Journal an action before doing it (outcome `started`), or record a finished one."""
        finished = None if outcome is Outcome.STARTED else _ts(now)
        reason, detail = _scrub(reason), _scrub(detail)
        with self._tx() as db:
            return db.insert(
                "INSERT INTO actions(at, finished_at, deploy_id, incident_id, kind, name, who, reason, outcome, detail,"
                " note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_ts(now), finished, deploy_id, incident_id, kind, name, str(who), reason, str(outcome), detail, note),
            )

    def finish_action(self, action_id: int, outcome: Outcome, now: datetime, detail: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE actions SET outcome = ?, finished_at = ?, detail = ? WHERE id = ?",
                (str(outcome), _ts(now), _scrub(detail), action_id),
            )

    def actions(
        self, since: datetime | None = None, kind: str | None = None, deploy_id: int | None = None
    ) -> list[ActionRow]:
        sql, args = "SELECT * FROM actions WHERE 1=1", list[Any]()
        if since is not None:
            sql += " AND at >= ?"
            args.append(_ts(since))
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if deploy_id is not None:
            sql += " AND deploy_id = ?"
            args.append(deploy_id)
        return [_action(r) for r in self._query(sql + " ORDER BY id", args)]

    def recent_actions(self, limit: int) -> list[ActionRow]:
        """The last `limit` actions, oldest first (for status: constant time however long the history)."""
        rows = self._query("SELECT * FROM actions ORDER BY id DESC LIMIT ?", (limit,))
        return [_action(r) for r in reversed(rows)]

    def unfinished_actions(self) -> list[ActionRow]:
        return [_action(r) for r in self._query("SELECT * FROM actions WHERE outcome = 'started' ORDER BY id")]

    def journal(self, action_id: int, detail: str) -> None:
        """Rewrite a started action's journal (its detail) as it goes; a finished one is left alone."""
        with self._tx() as db:
            db.execute(
                "UPDATE actions SET detail = ? WHERE id = ? AND outcome = 'started'", (_scrub(detail), action_id)
            )

    def set_note(self, action_id: int, note: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE actions SET note = ? WHERE id = ?", (note, action_id))

    def interrupted_repairs(self) -> list[ActionRow]:
        """Repairs a stop or a kill cut short that the next start has not looked at yet: still
        `started` (a kill, or one running in another process right now) or noted interrupted."""
        rows = self._query(
            "SELECT * FROM actions WHERE kind = 'repair' AND (outcome = 'started' OR note = ?) ORDER BY id",
            (str(ActionNote.INTERRUPTED),),
        )
        return [_action(r) for r in rows]

    def past_repairs(self, deploy_id: int) -> tuple[PastRepair, ...]:
        """The loop's repairs of this deploy, for spacing, caps and the ladder. An interrupted one
        is not a run: the next start runs it again if needed, and that run counts."""
        rows = self.actions(kind="repair", deploy_id=deploy_id)
        cut_short = {ActionNote.INTERRUPTED, ActionNote.LOOKED_AT}
        return tuple(
            PastRepair(r.name, r.at, Outcome(r.outcome), r.note)
            for r in rows
            if r.who == Who.LOOP and r.note not in cut_short
        )

    # ---- bad commits ----------------------------------------------------------------------

    def mark_bad(self, commit: str, reason: str, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO bad_commits(commit_sha, marked_at, reason) VALUES (?, ?, ?) ON CONFLICT(commit_sha) "
                "DO UPDATE SET marked_at = excluded.marked_at, reason = excluded.reason",
                (commit, _ts(now), _scrub(reason)),
            )

    def bad_commits(self) -> dict[str, str]:
        return {r["commit_sha"]: r["reason"] for r in self._query("SELECT * FROM bad_commits")}

    # ---- pauses ---------------------------------------------------------------------------

    def add_pause(self, until: datetime, reason: str, who: str, now: datetime) -> None:
        with self._tx() as db:
            # a pause replaced by a new one did not end: never announce it as expired
            db.execute("UPDATE pauses SET ended_at = ?, announced_end = 1 WHERE ended_at IS NULL", (_ts(now),))
            db.execute(
                "INSERT INTO pauses(at, until, reason, who) VALUES (?, ?, ?, ?)",
                (_ts(now), _ts(until), reason, who),
            )

    def active_pause(self, now: datetime) -> Pause | None:
        rows = self._query(
            "SELECT * FROM pauses WHERE ended_at IS NULL AND until > ? ORDER BY id DESC LIMIT 1", (_ts(now),)
        )
        if not rows:
            return None
        return Pause(until=_dt(rows[0]["until"]) or now, reason=rows[0]["reason"], who=rows[0]["who"])

    def end_pause(self, now: datetime) -> bool:
        with self._tx() as db:
            # a person's resume is announced by the command itself
            cur = db.execute(
                "UPDATE pauses SET ended_at = ?, announced_end = 1 WHERE ended_at IS NULL AND until > ?",
                (_ts(now), _ts(now)),
            )
            return cur.rowcount > 0

    def expired_unannounced_pauses(self, now: datetime) -> list[tuple[int, str]]:
        rows = self._query(
            "SELECT id, reason FROM pauses WHERE announced_end = 0 AND (ended_at IS NOT NULL OR until <= ?)",
            (_ts(now),),
        )
        return [(r["id"], r["reason"]) for r in rows]

    def mark_pause_announced(self, pause_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE pauses SET announced_end = 1 WHERE id = ?", (pause_id,))

    # ---- chat-ops ---------------------------------------------------------------------------

    def set_ack(self, ack: Ack) -> None:
        """Keep `ack` as the incident's ack (a later one replaces an expired or re-armed one)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO acks(incident_id, at, who, note) VALUES (?, ?, ?, ?) ON CONFLICT(incident_id) "
                "DO UPDATE SET at = excluded.at, who = excluded.who, note = excluded.note",
                (ack.incident_id, _ts(ack.at), ack.who, _scrub(ack.note)),
            )

    def ack(self, incident_id: int) -> Ack | None:
        rows = self._query("SELECT * FROM acks WHERE incident_id = ?", (incident_id,))
        if not rows:
            return None
        r = rows[0]
        return Ack(incident_id, datetime.fromisoformat(r["at"]), r["who"], r["note"])

    def worsened_at(self, incident_id: int) -> list[datetime]:
        """When the incident got worse: the rollbacks and holds recorded against it."""
        rows = self._query(
            "SELECT at FROM actions WHERE incident_id = ? AND kind IN ('rollback', 'hold')", (incident_id,)
        )
        return [datetime.fromisoformat(r["at"]) for r in rows]

    def record_press(self, data: str, who: str, what: str, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO chat_presses(data, at, who, what) VALUES (?, ?, ?, ?) ON CONFLICT(data) DO NOTHING",
                (data, _ts(now), who, _scrub(what)),
            )

    def press(self, data: str) -> str | None:
        """What an earlier press of this very button did, or None."""
        rows = self._query("SELECT what FROM chat_presses WHERE data = ?", (data,))
        return str(rows[0]["what"]) if rows else None

    # ---- retention ------------------------------------------------------------------------

    def prune(self, older_than: datetime) -> int:
        """Delete cycles and finished actions older than `older_than`; keep deploys, incidents."""
        cutoff = _ts(older_than)
        with self._tx() as db:
            cycles = db.execute("DELETE FROM cycles WHERE at < ?", (cutoff,)).rowcount
            if cycles:
                # whole hours go; the hour the cutoff falls in is counted again from what is left of it
                hour = _hour(older_than)
                db.execute("DELETE FROM check_hours WHERE hour <= ?", (_ts(hour)[:13],))
                rollup = _rollup_from_cycles(self._db.backend)
                db.execute(
                    f"INSERT INTO check_hours(hour, name, passed, total, first) {rollup} "
                    "WHERE r.at >= ? AND r.at < ? GROUP BY 1, 2",
                    (cutoff, _ts(hour + timedelta(hours=1))),
                )
            n = cycles + db.execute("DELETE FROM actions WHERE at < ? AND outcome != 'started'", (cutoff,)).rowcount
        return n

    # ---- reports and metrics (operations) ----
    # Read-only queries for healer/report.py and healer/metrics.py. They count what retention
    # has kept: after `retention` (90 days) pruned rows no longer count.

    def previous_deploy(self, deploy_id: int) -> Deploy | None:
        """The deploy that `deploy_id` replaced (None: healer watched nothing before it)."""
        rows = self._query(f"{_DEPLOYS} WHERE d.id < ? ORDER BY d.id DESC LIMIT 1", (deploy_id,))
        return _deploy(rows[0]) if rows else None

    def reference_cycles(self, deploy_id: int, limit: int) -> tuple[Deploy, list[Verdict]] | None:
        """The release to judge `deploy_id` against and its first `limit` healthy loop cycles:
        the latest deploy before it that had healthy loop cycles and whose commit is not marked
        bad (None: there is none, e.g. the first deploy healer watches)."""
        rows = self._query(
            f"{_DEPLOYS} WHERE d.id < ? AND b.commit_sha IS NULL"
            " AND EXISTS (SELECT 1 FROM cycles c WHERE c.deploy_id = d.id AND c.who = 'loop' AND c.ok = 1)"
            " ORDER BY d.id DESC LIMIT 1",
            (deploy_id,),
        )
        if not rows:
            return None
        before = _deploy(rows[0])
        cycles = self._query(
            "SELECT * FROM cycles WHERE deploy_id = ? AND who = 'loop' AND ok = 1 ORDER BY id LIMIT ?",
            (before.id, int(limit)),
        )
        return before, [Verdict(c.at, c.results) for c in map(_cycle, cycles)]

    def last_cause(self, deploy_id: int) -> str | None:
        """The likely cause recorded with the deploy's latest failing loop cycle."""
        rows = self._query(
            "SELECT cause FROM cycles WHERE deploy_id = ? AND who = 'loop' AND ok = 0 ORDER BY id DESC LIMIT 1",
            (deploy_id,),
        )
        return rows[0][0] if rows else None

    def last_loop_cycle(self, deploy_id: int) -> CycleRow | None:
        """The loop's latest cycle of a deploy (not a rollback's verification run)."""
        rows = self._query(
            "SELECT * FROM cycles WHERE deploy_id = ? AND who = 'loop' ORDER BY id DESC LIMIT 1",
            (deploy_id,),
        )
        return _cycle(rows[0]) if rows else None

    def cycle_totals(self, start: datetime, end: datetime) -> tuple[int, int, datetime | None]:
        """Cycles recorded in [start, end]: (how many, how many passed, the first one's time)."""
        rows = self._query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(ok), 0) AS ok, MIN(at) AS first FROM cycles WHERE at >= ? AND at <= ?",
            (_ts(start), _ts(end)),
        )
        return int(rows[0]["n"]), int(rows[0]["ok"]), _dt(rows[0]["first"])

    def check_totals(self, start: datetime, end: datetime) -> list[tuple[str, int, int]]:
        """Per check, (name, passed, results) in [start, end], in the order the checks first
        appeared: the whole UTC hours inside the period from check_hours, the partial hours at its
        ends from the cycles' results."""
        first_hour = _hour(start)
        if first_hour < start:
            first_hour += timedelta(hours=1)
        end_hour = _hour(end)
        rows = self._query(
            "SELECT name, SUM(passed) AS passed, SUM(total) AS total FROM ("
            " SELECT name, passed, total, first FROM check_hours WHERE hour >= ? AND hour < ?"
            " UNION ALL"
            f" SELECT r.name, r.ok, 1, r.id * {_POSITIONS} + r.pos FROM {self._results} r"
            " WHERE r.at >= ? AND r.at <= ? AND (r.at < ? OR r.at >= ?)"
            ") t GROUP BY name ORDER BY MIN(first)",
            (_ts(first_hour)[:13], _ts(end_hour)[:13], _ts(start), _ts(end), _ts(first_hour), _ts(end_hour)),
        )
        return [(str(r["name"]), int(r["passed"]), int(r["total"])) for r in rows]

    def cycle_counts(self) -> dict[bool, int]:
        """Recorded cycles by result: {True: passing, False: failing}."""
        rows = self._query("SELECT ok, COUNT(*) AS n FROM cycles GROUP BY ok")
        out = {True: 0, False: 0}
        for r in rows:
            out[bool(r["ok"])] = int(r["n"])
        return out

    def finished_action_counts(self, kinds: Sequence[str]) -> dict[tuple[str, str, str], int]:
        """(kind, name, outcome) -> how many, for actions of `kinds` that have finished
        (an action still `started` is left out, so a count never goes down when it ends)."""
        if not kinds:
            return {}
        marks = ", ".join("?" for _ in kinds)
        rows = self._query(
            # only "?" placeholders are formatted in; the kinds are bound
            f"SELECT kind, name, outcome, COUNT(*) AS n FROM actions WHERE kind IN ({marks}) "
            "AND outcome != 'started' GROUP BY kind, name, outcome",
            tuple(kinds),
        )
        return {(r["kind"], r["name"], r["outcome"]): int(r["n"]) for r in rows}

    def alert_delivery_counts(self) -> dict[tuple[str, str], int]:
        """(channel, state) -> how many deliveries, from the alert outbox's `alert_deliveries`
        (healer/alerts/outbox.py; state pending | delivered | failed). Empty before the outbox
        has created its tables."""
        if not self._db.version("outbox"):
            return {}
        rows = self._query("SELECT channel, state, COUNT(*) AS n FROM alert_deliveries GROUP BY channel, state")
        return {(r["channel"], r["state"]): int(r["n"]) for r in rows}

    def watched_since(self) -> datetime | None:
        """When healer first saw a deploy here (deploys are never pruned)."""
        rows = self._query("SELECT MIN(first_seen) AS t FROM deploys")
        return _dt(rows[0]["t"]) if rows else None


def _baseline_json(b: Baseline) -> str:
    return json.dumps({"taken_at": _ts(b.taken_at), "metrics": {k: dict(v) for k, v in b.metrics.items()}})


def _baseline(s: str | None) -> Baseline | None:
    if not s:
        return None
    d = json.loads(s)
    return Baseline(taken_at=datetime.fromisoformat(d["taken_at"]), metrics=d["metrics"])


def _deploy(r: Row) -> Deploy:
    return Deploy(
        id=r["id"],
        commit=r["commit_sha"],
        first_seen=datetime.fromisoformat(r["first_seen"]),
        baseline=_baseline(r["baseline"]),
        consecutive_failures=r["consecutive_failures"],
        consecutive_passes=r["consecutive_passes"],
        open_incident=r["open_incident"],
        last_cycle_at=_dt(r["last_cycle_at"]),
        last_ok=None if r["last_ok"] is None else bool(r["last_ok"]),
        emergency_streak=r["emergency_streak"],
        via_rollback=bool(r["via_rollback"]),
        held=r["held"],
        stable_tag=r["stable_tag"],
        healthy_at=_dt(r["healthy_at"]),
        bad=r["bad"],
    )


def _cycle(r: Row) -> CycleRow:
    results = tuple(CheckResult.from_json(x) for x in json.loads(r["results"]))
    return CycleRow(
        r["id"], r["deploy_id"], datetime.fromisoformat(r["at"]), bool(r["ok"]), r["who"], r["summary"], results,
        r["cause"], r["next_step"], r["woken"],
    )  # fmt: skip


def _action(r: Row) -> ActionRow:
    return ActionRow(
        r["id"], datetime.fromisoformat(r["at"]), _dt(r["finished_at"]), r["deploy_id"], r["incident_id"],
        r["kind"], r["name"], r["who"], r["reason"], r["outcome"], r["detail"], r["note"],
    )  # fmt: skip
