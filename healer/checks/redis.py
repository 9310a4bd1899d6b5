"""The redis check: PING latency, used memory and connected clients (I/O, redis.asyncio).

The client makes no retries of its own: a health probe must see the first failure, and the
check's timeout bounds it anyway. Error messages are built here and never show the password.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from healer.checks.base import budget, describe_error, failed, measured
from healer.model import CheckResult
from healer.redact import redact
from healer.schema import (
    CheckBase,
    Duration,
    Factor,
    Percent,
    PositiveDuration,
    RoleName,
    Size,
    format_duration,
    format_size,
    read_secret,
)

if TYPE_CHECKING:
    from healer.checks.base import ProbeContext
    from healer.config import Config

_MB = 2**20


class RedisCheck(CheckBase):
    """PING latency, used memory, connected clients."""

    type: Literal["redis"]
    url: str | None = None  # default: [redis] url
    max_latency: PositiveDuration = timedelta(seconds=1)
    max_latency_factor: Factor = 5.0
    min_latency_increase: Duration = timedelta(milliseconds=50)
    max_memory: Size | None = None
    max_memory_percent: Percent = 90.0  # of maxmemory, when Redis has one
    max_clients: Annotated[int, Field(ge=1)] | None = None

    default_role: ClassVar[RoleName] = "dependency"


def needs(check: RedisCheck, config: Config) -> tuple[str, str] | None:
    """A url of its own, or the [redis] section's."""
    if check.url or config.redis:
        return None
    return "url", "expected url, or a [redis] section"


def client_options(password: str | None, seconds: float) -> dict[str, Any]:
    """How healer talks to Redis, for the check and the playbooks alike: named, bounded by
    `seconds`, and no silent retries (redis-py 8 retries ten times with backoff by default,
    which would hide the first failure)."""
    # the driver is imported where it is used, not with the config (healer/checks/registry.py)
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "client_name": "healer",
        "socket_timeout": seconds,
        "socket_connect_timeout": seconds,
        "retry": Retry(NoBackoff(), 0),
    }
    if password:
        options["password"] = password
    return options


async def probe(check: RedisCheck, ctx: ProbeContext) -> CheckResult:
    """1. connect (a first PING); 2. time a PING; 3. read INFO; 4. compare with the ceilings."""
    import redis.asyncio
    from redis.exceptions import AuthenticationError, RedisError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    section = ctx.config.redis
    url = check.url or (section.url if section else "redis://127.0.0.1:6379/0")
    secret = read_secret(section.password_env if section else None)
    password = secret.reveal() if secret else None
    secrets = (password or "",)
    where = redact(url)
    seconds = budget(check.timeout)
    client = redis.asyncio.Redis.from_url(url, **client_options(password, seconds))
    try:
        try:
            await client.ping()
        except (AuthenticationError, ResponseError) as e:
            return failed(
                check,
                f"redis at {where} refused healer: {describe_error(e, *secrets)}",
                "redis.error",
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            return failed(
                check,
                f"cannot connect to redis at {where}: {describe_error(e, *secrets)}",
                "redis.down",
            )
        try:
            start = time.perf_counter()
            await client.ping()
            latency = time.perf_counter() - start
            info = await client.info()
        except RedisTimeoutError:
            return failed(
                check,
                f"redis at {where} did not answer within {round(seconds * 1000)} ms",
                "redis.timeout",
            )
        except (RedisConnectionError, OSError) as e:
            return failed(
                check,
                f"lost the connection to redis at {where}: {describe_error(e, *secrets)}",
                "redis.down",
            )
        except RedisError as e:
            return failed(check, f"redis at {where}: {describe_error(e, *secrets)}", "redis.error")
    finally:
        await client.aclose()
    return _judge(check, latency, info)


def _judge(check: RedisCheck, latency: float, info: dict[str, Any]) -> CheckResult:
    used = int(info.get("used_memory", 0))
    maxmemory = int(info.get("maxmemory", 0))
    clients = int(info.get("connected_clients", 0))
    values: dict[str, float] = {
        "latency_ms": round(latency * 1000, 3),
        "used_memory_mb": round(used / _MB, 3),
        "clients": clients,
    }
    if maxmemory > 0:
        values["memory_percent"] = round(100 * used / maxmemory, 2)
    symptoms: list[str] = []
    errors: list[str] = []
    if latency > check.max_latency.total_seconds():
        symptoms.append("redis.latency")
        ceiling = format_duration(check.max_latency)
        errors.append(f"PING took {latency * 1000:.0f} ms, over the {ceiling} ceiling")
    over_bytes = check.max_memory is not None and used > check.max_memory
    over_percent = maxmemory > 0 and 100 * used / maxmemory > check.max_memory_percent
    if over_bytes or over_percent:
        symptoms.append("redis.memory")
        limit = (
            format_size(check.max_memory)
            if over_bytes and check.max_memory is not None
            else f"{check.max_memory_percent:g}% of maxmemory"
        )
        errors.append(f"used memory {format_size(used)} is over {limit}")
    if check.max_clients is not None and clients > check.max_clients:
        symptoms.append("redis.clients")
        errors.append(f"{clients} clients connected, over {check.max_clients}")
    return measured(check, values, symptoms, errors, timedelta(seconds=latency))
