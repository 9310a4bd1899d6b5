"""The PostgreSQL action: terminate the app's stuck backends (I/O, through healer/pg.py).

Only the app's own sessions are ever ended: `[postgres] application_name` is required (the
action refuses without it), `database` and `user` narrow it further, and superusers' sessions
and healer's own backend are excluded in the query itself. `terminate = "stuck"` ends only
sessions idle in a transaction for longer than `idle_in_transaction`; `"all"` every session
of the app, so that its pool reconnects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from healer.errors import ActionError
from healer.schema import Duration, PositiveDuration, StepBase, format_duration, read_secret

if TYPE_CHECKING:
    from healer.config import Config, PostgresConfig

# pg_terminate_backend(pid, timeout): wait this long for each backend to exit (PostgreSQL 14+).
TERMINATE_WAIT_MS = 1000

_STUCK_STATES = ("idle in transaction", "idle in transaction (aborted)")


class PostgresTerminateStep(StepBase):
    """Terminate the app's backends (never other applications', superusers' or healer's own).

    `terminate` and `idle_in_transaction` override the `[postgres]` settings.
    """

    action: Literal["postgres.terminate_backends"]
    timeout: PositiveDuration = timedelta(seconds=30)
    terminate: Literal["stuck", "all"] | None = None
    idle_in_transaction: Duration | None = None


@dataclass(frozen=True, slots=True)
class _Filter:
    """Which backends to end, resolved from the step and the config."""

    application_name: str
    database: str | None
    user: str | None
    mode: str  # stuck | all
    idle_in_transaction: timedelta

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause over pg_stat_activity `a` joined with pg_roles `r`, and its parameters."""
        parts = [
            "a.backend_type = 'client backend'",
            "a.pid <> pg_backend_pid()",
            "NOT r.rolsuper",
            "a.application_name = %(app)s",
        ]
        args: dict[str, Any] = {"app": self.application_name}
        if self.database is not None:
            parts.append("a.datname = %(db)s")
            args["db"] = self.database
        if self.user is not None:
            parts.append("a.usename = %(user)s")
            args["user"] = self.user
        if self.mode == "stuck":
            parts.append("a.state IN ('idle in transaction', 'idle in transaction (aborted)')")
            parts.append("a.state_change < now() - %(idle)s * interval '1 second'")
            args["idle"] = self.idle_in_transaction.total_seconds()
        return " AND ".join(parts), args

    def describe(self) -> str:
        """The filter in words that match the SQL."""
        parts = [f"application_name = {self.application_name!r}"]
        if self.database is not None:
            parts.append(f"database = {self.database!r}")
        if self.user is not None:
            parts.append(f"user = {self.user!r}")
        if self.mode == "stuck":
            parts.append(f"idle in transaction for over {format_duration(self.idle_in_transaction)}")
        parts.append("not a superuser, not healer's own session")
        return ", ".join(parts)


def problems(step: PostgresTerminateStep, config: Config) -> list[str]:
    """Why postgres.terminate_backends cannot run with this config (empty: it can)."""
    pc = config.postgres
    if pc is None:
        return [
            f"postgres.terminate_backends: expected a [postgres] section (dsn_env, application_name) in {config.path}"
        ]
    out = []
    if not pc.application_name:
        out.append(
            "postgres.terminate_backends: refusing to run without [postgres] application_name "
            "(whose backends it may end; other applications' are never touched)"
        )
    if read_secret(pc.dsn_env) is None:
        out.append(f"postgres.terminate_backends: environment variable {pc.dsn_env} ([postgres] dsn_env) is not set")
    return out


def _filter(step: PostgresTerminateStep, pc: PostgresConfig) -> _Filter:
    if not pc.application_name:
        msg = "postgres.terminate_backends: refusing to run without [postgres] application_name"
        raise ActionError(msg)
    return _Filter(
        application_name=pc.application_name,
        database=pc.database,
        user=pc.user,
        mode=step.terminate or pc.terminate,
        idle_in_transaction=step.idle_in_transaction
        if step.idle_in_transaction is not None
        else pc.idle_in_transaction,
    )


def _section(config: Config) -> PostgresConfig:
    if config.postgres is None:
        msg = f"postgres.terminate_backends: expected a [postgres] section in {config.path}"
        raise ActionError(msg)
    return config.postgres


def plan(step: PostgresTerminateStep, config: Config) -> str:
    """The SQL that would run, its parameters shown as literals, and the filter in words."""
    pc = _section(config)
    f = _filter(step, pc)
    where, args = f.where()
    for key, value in args.items():
        literal = "'" + str(value).replace("'", "''") + "'" if isinstance(value, str) else str(value)
        where = where.replace(f"%({key})s", literal)
    return (
        f"in the PostgreSQL of ${pc.dsn_env}: pg_terminate_backend(pid, {TERMINATE_WAIT_MS}) "
        f"for each backend in pg_stat_activity a JOIN pg_roles r WHERE {where} "
        f"(that is: {f.describe()})"
    )


async def terminate_backends(step: PostgresTerminateStep, config: Config, *, playbook: str = "") -> str:
    """End the app's backends selected by the filter; returns how many and which.

    1. Refuse without application_name; read the DSN from `dsn_env`.
    2. Connect as application "healer" (autocommit, statement_timeout).
    3. In one statement, select the backends and pg_terminate_backend() each.
    """
    from healer import pg  # the driver: here, not with the playbooks (healer/actions/registry.py)

    pc = _section(config)
    f = _filter(step, pc)
    try:
        server = pg.server(pc.dsn_env)
    except pg.DsnError as e:
        msg = f"postgres.terminate_backends: {e}"
        raise ActionError(msg) from None
    where, args = f.where()
    sql = (
        "SELECT a.pid, a.state, pg_terminate_backend(a.pid, %(wait)s) "
        "FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid "
        f"WHERE {where} ORDER BY a.pid"
    )
    args["wait"] = TERMINATE_WAIT_MS
    try:
        async with pg.connect(server, pc.timeout.total_seconds()) as conn:
            # each pg_terminate_backend() may wait TERMINATE_WAIT_MS: the step's timeout bounds them all
            budget = step.timeout.total_seconds()
            async with asyncio.timeout(budget):
                await conn.execute(f"SET statement_timeout = {int(budget * 1000)}")
                if conn.info.server_version < 140000:
                    # pg_terminate_backend(pid, timeout) arrived in PostgreSQL 14
                    sql = sql.replace("pg_terminate_backend(a.pid, %(wait)s)", "pg_terminate_backend(a.pid)")
                    del args["wait"]
                cur = await conn.execute(sql, args)
                rows = await cur.fetchall()
    except TimeoutError:
        msg = (
            f"PostgreSQL at {server.where} did not answer in time "
            f"({format_duration(pc.timeout)} to connect, {format_duration(step.timeout)} for the step)"
        )
        raise ActionError(msg) from None
    except pg.Error as e:
        msg = f"PostgreSQL at {server.where}: {server.reason(e)}"
        raise ActionError(msg) from None
    ended = [int(r[0]) for r in rows if r[2]]
    lingering = [int(r[0]) for r in rows if not r[2]]
    what = "stuck " if f.mode == "stuck" else ""
    head = f"terminated {len(ended)} {what}backend{'s' if len(ended) != 1 else ''} of {f.application_name!r}"
    if ended:
        head += f" (pids {', '.join(map(str, ended))})"
    if lingering:
        head += f"; {len(lingering)} did not exit within {TERMINATE_WAIT_MS} ms (pids {', '.join(map(str, lingering))})"
    return head
