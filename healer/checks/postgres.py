"""The postgres check: connect + `SELECT 1` latency and connections in use (I/O, through healer/pg.py).

The DSN comes from the environment variable named by `dsn_env` (or `[postgres] dsn_env`) and is a
secret: healer/pg.py connects, and its messages name only the host, port and database, with any
text taken from psycopg scrubbed of the DSN and its password.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from healer import pg
from healer.checks import budget, failed, measured
from healer.config import PostgresCheck, format_duration
from healer.model import CheckResult

if TYPE_CHECKING:
    from healer.checks import ProbeContext

_CONNECTIONS_SQL = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"


async def probe(check: PostgresCheck, ctx: ProbeContext) -> CheckResult:
    """1. read the DSN; 2. connect and `SELECT 1` (the latency); 3. count connections."""
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
