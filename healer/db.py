"""The connection seam under healer's state: one SQLite file or one PostgreSQL database, the
same SQL for both (I/O). The store (healer/store.py) and the alert outbox (healer/alerts/outbox.py)
write their SQL once, in SQLite's words; this module runs it on either.

    db = Database(StateDb(path))                       # or StateDb(path, dsn_env="HEALER_STATE_DSN")
    db.migrate("store", MIGRATIONS)                    # brings the component's tables up to date
    with db.write("recording a cycle") as tx:          # one transaction; StoreError on failure
        new_id = tx.insert("INSERT INTO t(a) VALUES (?)", (1,))
        tx.execute("UPDATE t SET a = ? WHERE id = ?", (2, new_id))
    rows = db.query("SELECT * FROM t WHERE a = ?", (2,))    # rows read by name or by position

What it evens out:

1. Placeholders: `?` everywhere (psycopg's `%s` is written for PostgreSQL, a literal `%` escaped).
2. Rows: `row["name"]` and `row[0]` on both (sqlite3.Row; a tuple with names for psycopg).
3. New ids: `Tx.insert` appends `RETURNING id` (SQLite has it since 3.35), never `lastrowid`.
4. Errors: any driver error becomes one StoreError line naming the database and what was being
   done; a PostgreSQL error is scrubbed of the DSN and its password (healer/pg.py).
5. Writes are serialised as SQLite's BEGIN IMMEDIATE does: on PostgreSQL every write transaction
   first takes the transaction-level advisory lock WRITE_LOCK, so a read-then-write inside one
   (ensure_deploy, a fence's epoch check) sees nothing change under it, across processes too.
6. Schema: each component keeps an ordered list of `Migration`s and its version in the
   `schema_version` table; the DDL is written for SQLite and `ddl()` words it for PostgreSQL
   (`id INTEGER PRIMARY KEY` -> an identity column, INTEGER -> BIGINT). Timestamps stay TEXT
   (ISO 8601, UTC) on both, so text order is time order and every query stays the same.
7. Fences: `db.write(what, fence=...)` runs `fence.check(tx)` first in the transaction; a fence
   that no longer holds raises FencedError and nothing of the transaction is written.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from healer.config import StateDb
from healer.errors import ConfigError, StoreError, StoreUnreachable
from healer.files import FILE_MODE, make_private, private_dir
from healer.logging import log_event

log = logging.getLogger("healer.db")

# The (classid, objid) of the advisory lock every PostgreSQL write transaction takes first: the
# two-key space, so it never meets a one-key lock (pg_try_advisory_lock(bigint), leadership's).
WRITE_LOCK = (0x6865616C, 0x73746174)  # "heal", "stat"
# How long a write waits for another's lock (SQLite's busy_timeout), and for any one statement.
LOCK_TIMEOUT_MS = 5000
STATEMENT_TIMEOUT_MS = 30000
# A transaction left open by a process stopped inside it (SIGSTOP, a frozen VM) is ended by the
# server after this: its write lock and a fence's FOR SHARE on the lease row would otherwise keep
# every other writer, and a follower's takeover, waiting: a takeover comes at most this long after
# the lease ran out. (healer's write transactions never wait on anything but the database.)
IDLE_IN_TRANSACTION_MS = 3000  # under LOCK_TIMEOUT_MS: a writer waiting behind a stopped one gets through
CONNECT_TIMEOUT_S = 5.0


class Backend(enum.StrEnum):
    """Where healer's state lives."""

    SQLITE = "sqlite"  # one file under state_dir (the default): one host
    POSTGRES = "postgres"  # the database named by [state] dsn_env: shared by a fleet


class Row(Protocol):
    """A result row: by column name or by position, and unpacked like a tuple."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """What a statement leaves: its rows and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Connection(Protocol):
    """One driver connection in autocommit, used under Database's lock (sqlite3 here, psycopg in
    healer/pg.py). `sql` is already in the driver's words (placeholders)."""

    backend: str  # a Backend's value
    name: str  # for messages: the file, or postgresql host:port/database

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def begin(self) -> None:
        """Start a write transaction that excludes every other writer (module docstring, 5)."""

    def end(self, commit: bool) -> None:
        """COMMIT or ROLLBACK; after a failed COMMIT, leave no transaction open."""

    def reason(self, e: BaseException) -> str:
        """The driver error as one line, without secrets."""

    def is_error(self, e: BaseException) -> bool: ...

    def is_passing(self, e: BaseException) -> bool:
        """Is `e` a failure to reach the database that passes by itself (StoreUnreachable)?"""

    def close(self) -> None: ...


class Fence(Protocol):
    """A condition a transaction's writes must meet. `check` runs first in the write transaction
    (writes are serialised, so what it reads holds until the commit) and raises errors.FencedError when
    the condition no longer holds; then nothing of the transaction is written."""

    def check(self, tx: Tx) -> None: ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a component's schema, applied once, in order, in one transaction with the
    version bump. `sql` is SQLite's DDL (statements separated by `;`), worded for PostgreSQL by
    `ddl()`; `postgres` replaces it there when the two differ beyond that."""

    version: int
    what: str
    sql: str
    postgres: str | None = None


def ddl(sql: str, backend: Backend) -> str:
    """SQLite's DDL in `backend`'s words: for PostgreSQL, `id INTEGER PRIMARY KEY [AUTOINCREMENT]`
    becomes a BIGINT identity column, every other INTEGER a BIGINT (SQLite's are 64-bit), and
    WITHOUT ROWID goes."""
    if backend is Backend.SQLITE:
        return sql
    sql = re.sub(
        r"\bid INTEGER PRIMARY KEY( AUTOINCREMENT)?", "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", sql
    )
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    return re.sub(r"\)\s*WITHOUT ROWID", ")", sql)


def _statements(script: str) -> list[str]:
    """A script's statements: comments dropped, split at `;` (our DDL quotes no `;` and no `--`)."""
    text = re.sub(r"--[^\n]*", "", script)
    return [s.strip() for s in text.split(";") if s.strip()]


class Tx:
    """The statements of one transaction (or, outside one, autocommit reads), in SQLite's words."""

    def __init__(self, conn: Connection, words: Callable[[str], str]) -> None:
        self._conn = conn
        self._words = words
        self.backend = Backend(conn.backend)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(self._words(sql), args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._conn.executemany(self._words(sql), rows)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(self.execute(sql, args).fetchall())

    def insert(self, sql: str, args: Sequence[Any] = ()) -> int:
        """An INSERT into a table with an `id` column; returns the new row's id."""
        [row] = self.execute(f"{sql} RETURNING id", args).fetchall()  # all: SQLite finishes the statement
        return int(row[0])

    def script(self, sql: str) -> None:
        """Run DDL written for SQLite, worded for this backend (see ddl)."""
        for statement in _statements(ddl(sql, self.backend)):
            self.execute(statement)


_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    component TEXT PRIMARY KEY,          -- store, outbox, fleet ...
    version INTEGER NOT NULL,            -- the last Migration applied
    migrated_at TEXT NOT NULL
)
"""


class Database:
    """One connection to healer's state, shared by the threads of one component (the loop calls
    through asyncio.to_thread) under one lock; reopened after PostgreSQL dropped it."""

    def __init__(self, where: StateDb | Path | str) -> None:
        self.location = where if isinstance(where, StateDb) else StateDb(Path(where))
        self.lock = threading.RLock()
        self._conn = self._open()
        self.name = self._conn.name
        self.backend = Backend(self._conn.backend)
        words = _postgres_words if self.backend is Backend.POSTGRES else _same
        self._tx = Tx(self._conn, words)

    def _open(self) -> Connection:
        if self.location.dsn_env is None:
            try:
                return _SqliteConnection(self.location.path)
            except sqlite3.Error as e:
                raise StoreError(f"{self.location.path}: cannot open the state database: {e}") from None
            except OSError as e:
                raise StoreError(
                    f"{self.location.path.parent}: cannot create the state directory: {e.strerror}"
                ) from None
        from healer import pg

        try:
            server = pg.server(self.location.dsn_env)
        except pg.DsnError as e:
            raise ConfigError(self.location.config, [f"state.dsn_env: {e}"]) from None
        try:
            return pg.StateConnection(
                server, write_lock=WRITE_LOCK, lock_timeout_ms=LOCK_TIMEOUT_MS,
                statement_timeout_ms=STATEMENT_TIMEOUT_MS, idle_in_transaction_ms=IDLE_IN_TRANSACTION_MS,
                connect_timeout=CONNECT_TIMEOUT_S, schema=self.location.schema,
            )  # fmt: skip
        except pg.Error as e:
            msg = f"postgresql {server.where}: cannot open the state database: {server.reason(e)}"
            raise (StoreUnreachable if pg.is_passing(e) else StoreError)(msg) from None

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def write(self, what: str, fence: Fence | None = None) -> Iterator[Tx]:
        """One write transaction, excluding every other writer, under the lock: committed when
        the block ends, rolled back when it raises. A driver error becomes StoreError naming
        `what`; a fence that no longer holds raises FencedError before anything is written."""
        with self.lock:
            try:
                self._conn.begin()
                try:
                    if fence is not None:
                        fence.check(self._tx)
                    yield self._tx
                except BaseException:
                    self._conn.end(commit=False)
                    raise
                self._conn.end(commit=True)
            except Exception as e:
                if not self._conn.is_error(e):
                    raise
                raise self._failed(what, e) from None

    def _failed(self, what: str, e: BaseException) -> StoreError:
        """A driver error as one StoreError line; StoreUnreachable when it passes by itself."""
        cls = StoreUnreachable if self._conn.is_passing(e) else StoreError
        return cls(f"{self.name}: {what}: {self._conn.reason(e)}")

    def query(self, sql: str, args: Sequence[Any] = (), what: str = "cannot read") -> list[Row]:
        """Rows of one read, outside any write transaction."""
        with self.lock:
            try:
                return self._tx.query(sql, args)
            except Exception as e:
                if not self._conn.is_error(e):
                    raise
                raise self._failed(what, e) from None

    def version(self, component: str) -> int:
        """The last migration applied to `component` (0: none yet); once any component migrated."""
        rows = self.query("SELECT version FROM schema_version WHERE component = ?", (component,))
        return int(rows[0][0]) if rows else 0

    def migrate(
        self, component: str, migrations: Sequence[Migration], *, adopt: Callable[[Tx], int] | None = None
    ) -> None:
        """Apply `component`'s migrations it has not had yet, in order, in one transaction.

        1. Create schema_version if it is missing.
        2. A component with no version row yet: `adopt` (SQLite only) says which version a
           database from before schema_version is at (0: none of its tables exist); on
           PostgreSQL, a fleet host's schema takes the component's tables from public, where
           they were before [fleet] (_take_from_public).
        3. Apply each later migration and record the version reached; a second process waits
           for the first one's transaction and then finds nothing left to do. A version beyond
           the last migration (a newer healer's) is refused, never written back.
        """
        expected = list(range(1, len(migrations) + 1))
        if [m.version for m in migrations] != expected:
            raise ValueError(f"{component}: migrations must be numbered 1..{len(migrations)} in order")
        with self.write(f"cannot migrate the {component} tables") as tx:
            tx.script(_SCHEMA_VERSION)
            rows = tx.query("SELECT version FROM schema_version WHERE component = ?", (component,))
            if rows:
                current = int(rows[0][0])
            elif self.backend is Backend.SQLITE:
                current = adopt(tx) if adopt is not None else 0
            else:
                current = self._take_from_public(tx, component, migrations)
            if current > len(migrations):  # a newer healer migrated it (another host, upgraded first)
                msg = (
                    f"{self.name}: the {component} tables are at schema version {current}, this healer knows "
                    f"{len(migrations)}: upgrade healer"
                )
                raise StoreError(msg)
            for m in migrations[current:]:
                tx.script(m.postgres if m.postgres is not None and self.backend is Backend.POSTGRES else m.sql)
            if rows and current == len(migrations):
                return
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            tx.execute(
                "INSERT INTO schema_version(component, version, migrated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version, migrated_at = excluded.migrated_at",
                (component, len(migrations), now),
            )

    def _take_from_public(self, tx: Tx, component: str, migrations: Sequence[Migration]) -> int:
        """The version `component` is at in this fleet host's own schema, which has none yet: the
        component's tables in `public` (a healer run with [state] dsn_env before [fleet] was added
        keeps them there) move into the schema, with their version row, in the migration's
        transaction; 0 when public has none (or there is no host schema).

        Writes are serialised across hosts (WRITE_LOCK), so of hosts starting at once the first
        takes public's tables and the others, once it committed, find none and start empty.
        ALTER TABLE ... SET SCHEMA keeps the rows, their ids, indexes and identity sequences."""
        schema = self.location.schema
        if schema is None or not _exists(tx, "public.schema_version"):
            return 0
        rows = tx.query("SELECT version FROM public.schema_version WHERE component = ?", (component,))
        if not rows:
            return 0
        quoted = '"' + schema.replace('"', '""') + '"'
        moved = [t for t in _created_tables(migrations) if _exists(tx, f"public.{t}")]
        for table in moved:
            tx.execute(f"ALTER TABLE public.{table} SET SCHEMA {quoted}")
        tx.execute("DELETE FROM public.schema_version WHERE component = ?", (component,))
        log_event(log, "state.moved", component=component, to_schema=schema, tables=len(moved), version=rows[0][0])
        return int(rows[0][0])


def _exists(tx: Tx, table: str) -> bool:
    """Is there a PostgreSQL table by this (schema-qualified) name?"""
    return bool(tx.query("SELECT to_regclass(?) IS NOT NULL", (table,))[0][0])


def _created_tables(migrations: Sequence[Migration]) -> list[str]:
    """The tables a component's migrations create, in order."""
    return [t for m in migrations for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", m.postgres or m.sql)]


def _same(sql: str) -> str:
    return sql


@functools.lru_cache(maxsize=1024)
def _postgres_words(sql: str) -> str:
    """`?` placeholders as psycopg's `%s`, a literal `%` doubled (the SQL is ours: no `?` is quoted)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _SqliteConnection:
    """healer's state file: WAL, and durable through kill -9 (WAL with synchronous=NORMAL keeps
    every committed transaction); shared by the store and the alert outbox, each with its own
    connection.

    The file is made 0600 before SQLite opens it: SQLite creates -wal and -shm with the
    database file's own mode, so those come out private too; ones left by an older healer
    are tightened here. ":memory:" (a read-only command's throwaway store) has no file.

    An existing file is chmod-ed by name, never opened and closed: SQLite's locks are POSIX
    record locks, which a process loses on *every* descriptor of the file when it closes
    *any* of them — an open+close here while the store's own connection is open would drop
    its locks, and another process closing the database would then delete the live WAL."""

    backend = Backend.SQLITE.value

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        if str(path) != ":memory:":
            private_dir(path.parent)
            if path.exists():
                path.chmod(FILE_MODE)
            else:
                make_private(path)  # nothing in this process has it open yet
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").chmod(FILE_MODE)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={LOCK_TIMEOUT_MS}")
        self._db.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def end(self, commit: bool) -> None:
        try:
            self._db.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            # a COMMIT that failed (a full disk) may leave the transaction open, and then every
            # later BEGIN fails too, long after the disk has room again
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")

    def reason(self, e: BaseException) -> str:
        return str(e)

    def is_error(self, e: BaseException) -> bool:
        return isinstance(e, sqlite3.Error)

    def is_passing(self, e: BaseException) -> bool:
        return False  # a file: a full disk or a lock is not a server coming back

    def close(self) -> None:
        self._db.close()
