"""PostgreSQL for the postgres check and the postgres action: the only module that imports
psycopg (I/O). They import this module inside their functions, so reading the config loads no
driver (healer/checks/registry.py).

The DSN is a secret read from an environment variable. Messages name the server by host, port
and database only (`Server.where`), and psycopg's own text is scrubbed of the DSN and its
password before anyone sees it (`Server.reason`).

    server = pg.server("DATABASE_URL")           # DsnError: unset, or not a DSN
    async with pg.connect(server, seconds) as conn:   # TimeoutError, pg.Error
        ...
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import psycopg
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
