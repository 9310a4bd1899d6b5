"""PostgreSQL for the postgres check and the postgres action: the only module that imports
psycopg (I/O). They import this module inside their functions, so reading the config loads no
driver (healer/checks/registry.py).

The DSN is a secret read from an environment variable. Messages name the server by host, port
and database only (`Server.where`), and psycopg's own text is scrubbed of the DSN and its
password before anyone sees it (`Server.reason`).

    server = pg.server("DATABASE_URL")           # DsnError: unset, or not a DSN
    async with pg.connect(server, seconds) as conn:   # TimeoutError, pg.Error
        ...

healer's own state on PostgreSQL ([state] dsn_env) goes through `StateConnection`, the psycopg
side of the connection seam in healer/db.py: a blocking connection, called from worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from healer.errors import HealerError
from healer.redact import redact
from healer.schema import read_secret

# What callers catch, without importing psycopg: any driver error, and a lost connection.
Error = psycopg.Error
OperationalError = psycopg.OperationalError
AsyncConnection = psycopg.AsyncConnection[TupleRow]  # what connect() yields, for type hints

# libpq counts its connect_timeout in whole seconds and ignores values under 2;
# asyncio.timeout bounds the connect closer than that.
_LIBPQ_MIN_CONNECT_TIMEOUT = 2
_REASON_MAX = 200


class DsnError(HealerError):
    """The environment variable that should hold the DSN is unset, or holds no DSN."""


# A failed connection carries no SQLSTATE: libpq and the server say why in words (English ones
# unless lc_messages says otherwise). What waiting cures, as the server says it...
_SERVER_PASSING = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "the database system is in recovery mode",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)
# ...and as libpq (or psycopg's own DNS lookup) says it: nothing listens, no route, no DNS answer yet
_CLIENT_PASSING = (
    "Connection refused",
    "timeout expired",
    "Connection timed out",
    "could not translate host name",
    "failed to resolve host",
    "No route to host",
    "Network is unreachable",
    "server closed the connection unexpectedly",
    "Connection reset by peer",
    "No such file or directory",  # a Unix socket not there: the server is not running
)
# The same on a connection that was open: class 08 (connection exception), the server shutting
# down or starting (57P01-57P03), too many connections (53300).
# https://www.postgresql.org/docs/current/errcodes-appendix.html
_PASSING_STATES = ("57P01", "57P02", "57P03", "53300")


def is_passing(e: BaseException) -> bool:
    """Is this a failure to reach PostgreSQL that passes by itself (down, restarting, unreachable,
    not in the DNS yet, starting up, full)?

    1. A socket error or a timeout is.
    2. A driver error with a SQLSTATE is when that state says so (_PASSING_STATES, class 08).
    3. A failed connection is when every refusal from the server in it is one of _SERVER_PASSING
       (libpq tries each address of a host: one refused, the next's "password authentication
       failed" is a person's), and, with none, when libpq's words are one of _CLIENT_PASSING.
    Anything else (authentication, a role or database that does not exist, pg_hba.conf, a bad
    sslmode, words we do not know) is not: a person must fix it, and waiting would hide it.
    """
    if isinstance(e, OSError | TimeoutError):
        return True
    if not isinstance(e, psycopg.Error):
        return False
    if e.sqlstate is not None:
        return e.sqlstate.startswith("08") or e.sqlstate in _PASSING_STATES
    if not isinstance(e, psycopg.OperationalError):
        return False
    text = str(e)
    refusals = [line for line in text.splitlines() if "FATAL:" in line]
    if refusals:
        return all(any(p in line for p in _SERVER_PASSING) for line in refusals)
    return any(p in text for p in _CLIENT_PASSING)


@dataclass(frozen=True, slots=True)
class Server:
    """A PostgreSQL server named by a DSN from the environment, and what messages may say of it."""

    env: str  # the variable's name
    where: str  # host:port/database, for messages
    dsn: str = field(repr=False)  # secret
    secrets: tuple[str, ...] = field(repr=False)  # the DSN and its password, masked in any text

    def reason(self, e: BaseException) -> str:
        """The gist of a driver error for one line: the last clause of its first line
        ("password authentication failed for user ..."), without the DSN or its password."""
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = lines[0] if lines else type(e).__name__
        gist = first.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()
        return redact(gist, *self.secrets)[:_REASON_MAX]


def server(env: str) -> Server:
    """The server whose DSN the environment variable `env` holds; DsnError when it holds none."""
    secret = read_secret(env)
    if secret is None:
        msg = f"environment variable {env} is not set"
        raise DsnError(msg)
    dsn = secret.reveal()
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        msg = f"environment variable {env} does not hold a valid PostgreSQL DSN"
        raise DsnError(msg) from None
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or 5432
    db = params.get("dbname") or params.get("user") or ""
    where = f"{host}:{port}/{db}" if db else f"{host}:{port}"
    return Server(env=env, where=where, dsn=dsn, secrets=(dsn, str(params.get("password") or "")))


@asynccontextmanager
async def connect(target: Server, seconds: float) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """A connection as application "healer", in autocommit, opened within `seconds`
    (TimeoutError past it; pg.Error when the server refuses), closed on the way out."""
    async with asyncio.timeout(seconds):
        conn = await psycopg.AsyncConnection.connect(
            target.dsn,
            connect_timeout=max(_LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(seconds)),
            autocommit=True,
            application_name="healer",
        )
    try:
        yield conn
    finally:
        await conn.close()


# ---- healer's own state ------------------------------------------------------------------------


class Row(tuple[Any, ...]):
    """A result row read by position, like a tuple, or by column name, like sqlite3.Row."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return super().__getitem__(self._names[key])
            except KeyError:
                raise IndexError(f"no column named {key}") from None
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._names)


def _rows(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    """psycopg's row factory for Row: a class per set of column names, carrying them."""
    return _row_class(tuple(c.name for c in cursor.description or ()))


@functools.lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_names": {n: i for i, n in enumerate(names)}, "__slots__": ()})


class StateConnection:
    """One blocking psycopg connection to healer's state database, in autocommit, reopened when
    the server dropped it (a restart, a failover): the next call connects again or fails.

    Every write transaction first takes the transaction-level advisory lock `write_lock`, as
    SQLite's BEGIN IMMEDIATE does; lock waits give up after `lock_timeout_ms`, any statement after
    `statement_timeout_ms`, and the server ends a transaction left idle `idle_in_transaction_ms`
    (its process stopped in it) so that it holds no lock for long. With `schema`, tables are made
    and found in that schema first (a fleet host's own), then in public (the fleet's shared ones).
    Messages name the server by host:port/database only.
    """

    backend = "postgres"

    def __init__(self, target: Server, *, write_lock: tuple[int, int], lock_timeout_ms: int,
                 statement_timeout_ms: int, idle_in_transaction_ms: int, connect_timeout: float,
                 schema: str | None = None) -> None:  # fmt: skip
        self.target = target
        self.name = f"postgresql {target.where}"
        self._write_lock = write_lock
        self._settings = {
            "lock_timeout": lock_timeout_ms,
            "statement_timeout": statement_timeout_ms,
            "idle_in_transaction_session_timeout": idle_in_transaction_ms,
        }
        self._connect_timeout = connect_timeout
        self._schema = schema
        self._conn: psycopg.Connection[Row] | None = None
        self._connection()

    def _connection(self) -> psycopg.Connection[Row]:
        if self._conn is not None and not self._conn.broken and not self._conn.closed:
            return self._conn
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        conn = psycopg.connect(
            self.target.dsn,
            connect_timeout=max(_LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(self._connect_timeout)),
            autocommit=True,
            application_name="healer",
            row_factory=_rows,
        )
        for key, ms in self._settings.items():  # set_config(): a bound value, unlike SET
            conn.execute("SELECT set_config(%s, %s, false)", (key, f"{ms}ms"))
        if self._schema is not None:  # this host's tables first; the shared ones from public
            name = psycopg.sql.Identifier(self._schema)
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            path = psycopg.sql.SQL("{}, public").format(name).as_string(conn)
            conn.execute("SELECT set_config('search_path', %s, false)", (path,))
        self._conn = conn
        return conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Row]:
        return self._connection().execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._connection().cursor() as cur:
            cur.executemany(sql, rows)

    def begin(self) -> None:
        # one round trip: two statements are allowed in one query without parameters (our ints)
        key, sub = (int(k) for k in self._write_lock)
        conn = self._connection()
        try:
            conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({key}, {sub})".encode())
        except psycopg.Error:
            # the lock wait timed out (or the server went): leave no aborted transaction open,
            # or every later statement on this connection fails
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise

    def end(self, commit: bool) -> None:
        conn = self._connection()
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")

    def reason(self, e: BaseException) -> str:
        return self.target.reason(e)

    def is_error(self, e: BaseException) -> bool:
        return isinstance(e, psycopg.Error)

    def is_passing(self, e: BaseException) -> bool:
        return is_passing(e)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
