"""The postgres check: connect + `SELECT 1` latency and connections in use (I/O, through healer/pg.py).

The DSN comes from the environment variable named by `dsn_env` (or `[postgres] dsn_env`) and is a
secret: healer/pg.py connects, and its messages name only the host, port and database, with any
text taken from psycopg scrubbed of the DSN and its password.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, Literal

from healer.checks.base import budget, failed, measured
from healer.model import CheckResult
from healer.schema import (
    CheckBase,
    Duration,
    EnvName,
    Factor,
    Percent,
    PositiveDuration,
    RoleName,
    format_duration,
)

if TYPE_CHECKING:
    from healer.checks.base import ProbeContext
    from healer.config import Config

_CONNECTIONS_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"


class PostgresCheck(CheckBase):
    """Connect + query latency, connections in use vs max_connections."""

    type: Literal["postgres"]
    dsn_env: EnvName | None = None  # default: [postgres] dsn_env
    max_connections_percent: Percent = 80.0  # seeds alert at 80 %
    max_latency: PositiveDuration = timedelta(seconds=5)
    max_latency_factor: Factor = 5.0
    min_latency_increase: Duration = timedelta(milliseconds=100)

    default_role: ClassVar[RoleName] = "dependency"


def needs(check: PostgresCheck, config: Config) -> tuple[str, str] | None:
    """A dsn_env of its own, or the [postgres] section's."""
    if check.dsn_env or config.postgres:
        return None
    return "dsn_env", "expected dsn_env, or a [postgres] section"


async def probe(check: PostgresCheck, ctx: ProbeContext) -> CheckResult:
    """1. read the DSN; 2. connect and `SELECT 1` (the latency); 3. count connections."""
    # healer/pg.py imports the driver: imported where it is used, not with the config
    # (healer/checks/registry.py)
    from healer import pg

    env = check.dsn_env or (ctx.config.postgres.dsn_env if ctx.config.postgres else "DATABASE_URL")
    try:
        server = pg.server(env)
    except pg.DsnError as e:
        return failed(check, str(e), "postgres.error")
    where = server.where
    seconds = budget(check.timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    start = time.perf_counter()
    try:
        async with pg.connect(server, seconds) as conn:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    async with conn.cursor() as cur:
                        await cur.execute("SELECT 1")
                        await cur.fetchone()
                        latency = time.perf_counter() - start
                        await cur.execute(_CONNECTIONS_SQL)
                        row = await cur.fetchone()
                        connections = int(row[0]) if row else 0
                        await cur.execute("SHOW max_connections")
                        row = await cur.fetchone()
                        max_connections = int(row[0]) if row else 0
            except TimeoutError:
                return failed(
                    check,
                    f"PostgreSQL at {where} did not answer within {round(seconds * 1000)} ms",
                    "postgres.timeout",
                )
            except pg.OperationalError as e:
                return failed(
                    check, f"lost the connection to PostgreSQL at {where}: {server.reason(e)}", "postgres.down"
                )
            except pg.Error as e:
                return failed(check, f"PostgreSQL at {where}: {server.reason(e)}", "postgres.error")
    except TimeoutError:
        return failed(check, f"no answer from PostgreSQL at {where} within {round(seconds * 1000)} ms", "postgres.down")
    except pg.Error as e:
        return failed(check, f"cannot connect to PostgreSQL at {where}: {server.reason(e)}", "postgres.down")
    return _judge(check, latency, connections, max_connections)


def _judge(check: PostgresCheck, latency: float, connections: int, max_connections: int) -> CheckResult:
    values: dict[str, float] = {
        "latency_ms": round(latency * 1000, 3),
        "connections": connections,
        "max_connections": max_connections,
    }
    symptoms: list[str] = []
    errors: list[str] = []
    if latency > check.max_latency.total_seconds():
        symptoms.append("postgres.latency")
        ceiling = format_duration(check.max_latency)
        errors.append(f"connect + SELECT 1 took {latency * 1000:.0f} ms, over the {ceiling} ceiling")
    if max_connections > 0:
        percent = 100 * connections / max_connections
        values["connections_percent"] = round(percent, 2)
        if percent > check.max_connections_percent:
            symptoms.append("postgres.connections")
            errors.append(
                f"{connections} of {max_connections} connections in use ({percent:.0f}%),"
                f" over {check.max_connections_percent:g}%"
            )
    return measured(check, values, symptoms, errors, timedelta(seconds=latency))
