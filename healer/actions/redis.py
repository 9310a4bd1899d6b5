"""The Redis actions: empty the cache database, delete keys by pattern (I/O, redis.asyncio).

Nothing here blocks Redis: a database is emptied with `FLUSHDB ASYNC`, keys are found with
SCAN (never KEYS) and each page of them removed with UNLINK in the same round trip as the
next SCAN step, so no round trip holds Redis for long.
FLUSHALL is never sent, and no key outside the configured database or patterns is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError

from healer.checks.redis import client_options
from healer.config import Config, RedisConfig, read_secret
from healer.errors import ActionError
from healer.logging import redact
from healer.playbook import RedisDeletePatternStep, RedisFlushStep

# SCAN's COUNT: the hash-table slots Redis looks at per step, so also about the most keys one
# UNLINK removes.
BATCH = 1000


def _section(config: Config, action: str) -> RedisConfig:
    if config.redis is None:
        msg = f"{action}: expected a [redis] section (url, cache_db or cache_patterns) in {config.path}"
        raise ActionError(msg)
    return config.redis


def _wildcard_only(patterns: Sequence[str]) -> list[str]:
    return [p for p in patterns if not p.strip("*?")]


def problems_flush(step: RedisFlushStep, config: Config) -> list[str]:
    """Why redis.flush_cache cannot run with this config (empty: it can)."""
    rc = config.redis
    if rc is None:
        return [f"redis.flush_cache: expected a [redis] section with cache_db or cache_patterns in {config.path}"]
    if rc.cache_db is None and not rc.cache_patterns:
        return ["redis.flush_cache: expected [redis] cache_db (a database only the cache uses) or cache_patterns"]
    return [
        f"redis.flush_cache: refusing [redis] cache_patterns entry {p!r}: it matches every key"
        for p in _wildcard_only(rc.cache_patterns)
    ]


def problems_delete(step: RedisDeletePatternStep, config: Config) -> list[str]:
    """Why redis.delete_pattern cannot run with this config (empty: it can)."""
    rc = config.redis
    if rc is None:
        return [f"redis.delete_pattern: expected a [redis] section in {config.path}"]
    patterns = _patterns(step, rc)
    if not patterns:
        return ["redis.delete_pattern: expected patterns in the step or [redis] rate_limit_patterns"]
    return [f"redis.delete_pattern: refusing pattern {p!r}: it matches every key" for p in _wildcard_only(patterns)]


def _patterns(step: RedisDeletePatternStep, rc: RedisConfig) -> tuple[str, ...]:
    return step.patterns if step.patterns is not None else rc.rate_limit_patterns


def _url_db(rc: RedisConfig) -> int:
    pool = redis.asyncio.ConnectionPool.from_url(rc.url)
    return int(pool.connection_kwargs.get("db") or 0)


def _where(rc: RedisConfig) -> str:
    return redact(rc.url)


def _keys(n: int) -> str:
    return f"{n:,} key" if n == 1 else f"{n:,} keys"


def _quoted(patterns: Sequence[str]) -> str:
    return ", ".join(repr(p) for p in patterns)


# ---- plans (what a dry run prints) -------------------------------------------------------------


def plan_flush(step: RedisFlushStep, config: Config) -> str:
    """What redis.flush_cache would clear."""
    rc = _section(config, "redis.flush_cache")
    if rc.cache_patterns:
        db = rc.cache_db if rc.cache_db is not None else _url_db(rc)
        return (
            f"SCAN + UNLINK keys matching {_quoted(rc.cache_patterns)} in db {db} of {_where(rc)} "
            f"(SCAN COUNT {BATCH}, one UNLINK per page)"
        )
    return f"FLUSHDB ASYNC on db {rc.cache_db} of {_where(rc)} (never FLUSHALL; other databases untouched)"


def plan_delete(step: RedisDeletePatternStep, config: Config) -> str:
    """What redis.delete_pattern would clear."""
    rc = _section(config, "redis.delete_pattern")
    db = step.db if step.db is not None else _url_db(rc)
    return (
        f"SCAN + UNLINK keys matching {_quoted(_patterns(step, rc))} in db {db} of {_where(rc)} "
        f"(SCAN COUNT {BATCH}, one UNLINK per page, never KEYS)"
    )


# ---- the actions -------------------------------------------------------------------------------


async def flush_cache(step: RedisFlushStep, config: Config) -> str:
    """Empty the cache: SCAN + UNLINK of `cache_patterns` when set (in `cache_db`, else the
    url's database), else `FLUSHDB ASYNC` on `cache_db`. Returns what was cleared."""
    rc = _section(config, "redis.flush_cache")
    bad = problems_flush(step, config)
    if bad:
        raise ActionError(bad[0])
    if rc.cache_patterns:
        db = rc.cache_db if rc.cache_db is not None else _url_db(rc)
        n = await _guarded(rc, db, lambda r: _unlink_matching(r, rc.cache_patterns))
        return f"deleted {_keys(n)} matching {_quoted(rc.cache_patterns)} from db {db}"
    assert rc.cache_db is not None  # problems_flush made sure

    async def flush(r: redis.asyncio.Redis) -> int:
        n = int(await r.dbsize())
        await r.flushdb(asynchronous=True)
        return n

    n = await _guarded(rc, rc.cache_db, flush)
    return f"flushed {_keys(n)} from db {rc.cache_db} (FLUSHDB ASYNC)"


async def delete_pattern(step: RedisDeletePatternStep, config: Config) -> str:
    """SCAN + UNLINK of the keys matching the step's patterns (default `rate_limit_patterns`)."""
    rc = _section(config, "redis.delete_pattern")
    bad = problems_delete(step, config)
    if bad:
        raise ActionError(bad[0])
    patterns = _patterns(step, rc)
    db = step.db if step.db is not None else _url_db(rc)
    n = await _guarded(rc, db, lambda r: _unlink_matching(r, patterns))
    return f"deleted {_keys(n)} matching {_quoted(patterns)} from db {db}"


async def _unlink_matching(r: redis.asyncio.Redis, patterns: Sequence[str]) -> int:
    """SCAN each pattern (COUNT 1000) and UNLINK what each page found in the same round trip as
    the next SCAN. Returns how many keys Redis removed.

    One page's keys per UNLINK keeps every round trip short for Redis (one SCAN step and at most
    about a thousand keys), so other clients never wait behind a long run of queued UNLINKs."""
    removed = 0
    for pattern in patterns:
        cursor: int = 0
        found: list[bytes] = []
        while True:
            async with r.pipeline(transaction=False) as pipe:
                if found:
                    pipe.unlink(*found)
                pipe.scan(cursor, match=pattern, count=BATCH)
                replies = await pipe.execute()
            if found:
                removed += int(replies[0])
            cursor, found = int(replies[-1][0]), list(replies[-1][1])
            if cursor == 0:
                break
        if found:
            removed += int(await r.unlink(*found))
    return removed


async def _guarded(rc: RedisConfig, db: int, work: Any) -> int:
    """Open a connection to database `db` (never the url's, unless it is the same), run
    `work(client)`, close, and turn Redis' errors into ActionError without the password."""
    secret = read_secret(rc.password_env)
    password = secret.reveal() if secret else None
    pool = redis.asyncio.ConnectionPool.from_url(rc.url, **client_options(password, rc.timeout.total_seconds()))
    # from_url lets the url's own /N win over a db= argument: select the database here instead
    pool.connection_kwargs["db"] = db
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        return int(await work(client))
    except (RedisError, OSError) as e:
        text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if password:
            text = text.replace(password, "***")
        msg = f"redis at {_where(rc)} db {db}: {redact(text)}"
        raise ActionError(msg) from None
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()
