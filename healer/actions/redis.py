"""The Redis actions: empty the cache database, delete keys by pattern (I/O, redis.asyncio).

Nothing here blocks Redis: a database is emptied with `FLUSHDB ASYNC`, keys are found with
SCAN (never KEYS) and each page of them removed with UNLINK in the same round trip as the
next SCAN step, so no round trip holds Redis for long.
FLUSHALL is never sent, and no key outside the configured database or patterns is touched.

Settings that would destroy the app's data are refused unless healer.toml opts in: before any
delete by pattern (and in a dry run) a sample of the database's keys shows how many each
pattern takes, and a pattern that takes most of the keyspace is refused
(`allow_broad_patterns`); FLUSHDB on the url's own database is refused (`allow_flush_app_db`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from healer.checks.redis import client_options
from healer.errors import ActionError
from healer.logging import redact
from healer.schema import PositiveDuration, StepBase, read_secret

if TYPE_CHECKING:
    import redis.asyncio

    from healer.config import Config, RedisConfig

# SCAN's COUNT: the hash-table slots Redis looks at per step, so also about the most keys one
# UNLINK removes.
BATCH = 1000

# The keyspace guard. Why these numbers:
# - SAMPLE: the first keys SCAN returns come in hash-table order, so no name is likelier than
#   another; 1,000 of them put a share within a few percent (a binomial's error at n=1000 is
#   under 2 points) in one or a few round trips, whatever the size of the database.
# - _SAMPLE_STEPS bounds those round trips: a table left sparse by mass deletes can return few
#   keys per SCAN step.
# - BROAD_SHARE: "most of the keyspace" is more than half of the sampled keys. A rate-limit or
#   cache pattern is meant to pick one kind of key out of the app's sessions, queues and data;
#   one that takes most of them (`*`, `*:*`, `[a-z]*`) is a mistake.
# - MIN_SAMPLE: below 10 keys a share says little (3 counters of 4 keys are 75%), and there
#   is little to lose.
# A pattern that names its namespace in plain text (`ratelimit:*`, `cache:*`: text without
# wildcards up to a ':') is aimed, not broad, and is never refused for its share: a flood of
# counters, or the very cache growth that made Redis run out of memory, can rightly make it
# most of the keys, which is exactly when the repair is needed.
SAMPLE = 1000
_SAMPLE_STEPS = 20
BROAD_SHARE = 0.5
MIN_SAMPLE = 10
_EXAMPLES = 3
_AIMED = re.compile(r"[^*?\[\\]+:")
_OPT_IN = "set [redis] allow_broad_patterns = true to allow it"

_T = TypeVar("_T")


def _not_everything(p: str) -> str:
    """A pattern that is nothing but wildcards would clear the whole database."""
    if not p.strip("*?"):
        raise PydanticCustomError(
            "pattern", 'expected a key pattern with a fixed part like "ratelimit:*", got {got} (it matches every key)',
            {"got": f'"{p}"'},
        )  # fmt: skip
    return p


KeyPattern = Annotated[str, Field(min_length=1), AfterValidator(_not_everything)]


class RedisFlushStep(StepBase):
    """`FLUSHDB ASYNC` on `[redis] cache_db`, or SCAN + UNLINK of `[redis] cache_patterns`."""

    action: Literal["redis.flush_cache"]
    timeout: PositiveDuration = timedelta(seconds=60)


class RedisDeletePatternStep(StepBase):
    """SCAN + UNLINK of the keys matching `patterns` (default `[redis] rate_limit_patterns`)
    in database `db` (default the one in `[redis] url`)."""

    action: Literal["redis.delete_pattern"]
    timeout: PositiveDuration = timedelta(seconds=60)
    patterns: Annotated[tuple[KeyPattern, ...], Field(min_length=1)] | None = None
    db: Annotated[int, Field(ge=0, le=15)] | None = None


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
    out = [] if rc.allow_broad_patterns else [
        f"redis.flush_cache: refusing [redis] cache_patterns entry {p!r}: it matches every key; {_OPT_IN}"
        for p in _wildcard_only(rc.cache_patterns)
    ]  # fmt: skip
    if not rc.cache_patterns and rc.cache_db == _url_db(rc) and not rc.allow_flush_app_db:
        out.append(
            f"redis.cache_db: {rc.cache_db} is the database of [redis] url ({_where(rc)}), where the app keeps "
            "its own data, and FLUSHDB would empty it; refusing; set [redis] allow_flush_app_db = true to allow it"
        )
    return out


def problems_delete(step: RedisDeletePatternStep, config: Config) -> list[str]:
    """Why redis.delete_pattern cannot run with this config (empty: it can)."""
    rc = config.redis
    if rc is None:
        return [f"redis.delete_pattern: expected a [redis] section in {config.path}"]
    patterns = _patterns(step, rc)
    if not patterns:
        return ["redis.delete_pattern: expected patterns in the step or [redis] rate_limit_patterns"]
    if rc.allow_broad_patterns:
        return []
    return [
        f"redis.delete_pattern: refusing pattern {p!r}: it matches every key; {_OPT_IN}"
        for p in _wildcard_only(patterns)
    ]


def _patterns(step: RedisDeletePatternStep, rc: RedisConfig) -> tuple[str, ...]:
    return step.patterns if step.patterns is not None else rc.rate_limit_patterns


def _patterns_key(step: RedisDeletePatternStep) -> str:
    """The setting the patterns come from, for messages."""
    return "redis.delete_pattern patterns" if step.patterns is not None else "redis.rate_limit_patterns"


def _url_db(rc: RedisConfig) -> int:
    import redis.asyncio  # here, not with the playbooks (healer/actions/registry.py)

    pool = redis.asyncio.ConnectionPool.from_url(rc.url)
    return int(pool.connection_kwargs.get("db") or 0)


def _where(rc: RedisConfig) -> str:
    return redact(rc.url)


def _keys(n: int) -> str:
    return f"{n:,} key" if n == 1 else f"{n:,} keys"


def _quoted(patterns: Sequence[str]) -> str:
    return ", ".join(repr(p) for p in patterns)


# ---- the keyspace guard (pure, but for _sample) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """Keys sampled from database `db`, which held `total` keys (DBSIZE)."""

    db: int
    total: int
    keys: frozenset[bytes]

    @property
    def is_complete(self) -> bool:
        """Whether the sample is every key of the database."""
        return len(self.keys) >= self.total


def glob_regex(pattern: str) -> re.Pattern[bytes]:
    """Redis' glob as a regex over key bytes: `*`, `?`, `[abc]`, `[^a]`, `[a-z]` and `\\`
    escapes, as `stringmatchlen` in Redis' src/util.c reads them."""
    p = pattern.encode()
    out = bytearray()
    i = 0
    while i < len(p):
        c = p[i : i + 1]
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i + 1 < len(p):
            i += 1
            out += re.escape(p[i : i + 1])
        elif c == b"[":
            i += 1
            negate = p[i : i + 1] == b"^"
            if negate:
                i += 1
            items = bytearray()
            while i < len(p) and p[i : i + 1] != b"]":
                if p[i : i + 1] == b"\\" and i + 1 < len(p):
                    i += 1
                    items += re.escape(p[i : i + 1])
                elif p[i + 1 : i + 2] == b"-" and i + 2 < len(p):
                    lo, hi = sorted((p[i], p[i + 2]))  # Redis accepts a range written backwards
                    items += re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi]))
                    i += 2
                else:
                    items += re.escape(p[i : i + 1])
                i += 1
            if items:
                out += b"[" + (b"^" if negate else b"") + items + b"]"
            else:  # `[]` matches nothing, `[^]` any one byte
                out += b"." if negate else b"(?!)"
        else:
            out += re.escape(c)
        i += 1
    return re.compile(bytes(out), re.DOTALL)


def is_aimed(pattern: str) -> bool:
    """Whether `pattern` names its namespace in plain text (`ratelimit:*`): see BROAD_SHARE."""
    return _AIMED.match(pattern) is not None


def matching(keys: Collection[bytes], patterns: Sequence[str]) -> list[bytes]:
    """The keys any of `patterns` matches."""
    regexes = [glob_regex(p) for p in patterns]
    return [k for k in keys if any(r.fullmatch(k) for r in regexes)]


def _namespace(key: bytes) -> str:
    # what a message shows of a key: its namespace, never the whole name, which may hold a
    # session id or an email address (messages are journaled and sent to chat)
    head, sep, _ = key.partition(b":")
    shown = head[:12] + sep if sep else head[:8]
    return shown.decode("utf-8", "replace") + ("…" if shown != key else "")


def share(sample: Sample, patterns: Sequence[str]) -> str:
    """How many sampled keys `patterns` match, with the namespaces they fall in:
    `'*:*' matches 998 of 1,000 sampled keys, about 49,900 of the 50,000 in db 3 (sessions:… 410, ...)`."""
    hit = matching(sample.keys, patterns)
    what = f"{_quoted(patterns)} match{'es' if len(patterns) == 1 else ''}"
    n = len(sample.keys)
    count = f"{len(hit):,}" if hit else "none"
    if sample.is_complete:
        text = f"{what} {count} of the {_keys(sample.total)} in db {sample.db}"
    else:
        guess = round(len(hit) / n * sample.total)
        text = f"{what} {count} of {n:,} sampled keys, about {guess:,} of the {sample.total:,} in db {sample.db}"
    if hit:
        spaces = Counter(_namespace(k) for k in hit)
        shown = ", ".join(f"{name} {c:,}" for name, c in spaces.most_common(_EXAMPLES))
        text += f" ({shown}{', …' if len(spaces) > _EXAMPLES else ''})"
    return text


def refusal(sample: Sample, patterns: Sequence[str], key: str, *, allowed: bool) -> str | None:
    """Why deleting `patterns` (from the setting `key`) is refused, or None: the patterns that
    are not aimed together match more than BROAD_SHARE of a sample of at least MIN_SAMPLE keys,
    and healer.toml did not opt in."""
    broad = [p for p in patterns if not is_aimed(p)]
    if allowed or not broad or len(sample.keys) < MIN_SAMPLE:
        return None
    if len(matching(sample.keys, broad)) <= BROAD_SHARE * len(sample.keys):
        return None
    return f"{key}: {share(sample, broad)}; refusing to delete most of the keyspace; {_OPT_IN}"


async def _sample(r: redis.asyncio.Redis, db: int) -> Sample:
    """DBSIZE, then SCAN from the start until SAMPLE keys (or the end, or _SAMPLE_STEPS steps)."""
    total = int(await r.dbsize())
    keys: set[bytes] = set()
    cursor = 0
    for _ in range(_SAMPLE_STEPS):
        cursor, page = await r.scan(cursor, count=BATCH)
        keys.update(k if isinstance(k, bytes) else k.encode() for k in page)
        if cursor == 0 or len(keys) >= SAMPLE:
            break
    if cursor == 0:  # SCAN saw every key: the count is exact
        total = len(keys)
    return Sample(db=db, total=total, keys=frozenset(list(keys)[:SAMPLE]))


def _looked(rc: RedisConfig, db: int, patterns: Sequence[str], key: str) -> str:
    """What a dry run says of the keyspace now: each pattern's share, and a refusal if any.
    Run from synchronous code, in a thread of its own with its own event loop, so it works
    whether or not the caller's thread runs one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            sample = pool.submit(asyncio.run, _guarded(rc, db, lambda r: _sample(r, db))).result()
        except ActionError as e:
            return f"; keyspace not sampled: {e}"
    text = "".join(f"; {share(sample, [p])}" for p in patterns)
    why = refusal(sample, patterns, key, allowed=rc.allow_broad_patterns)
    return text + (f"; REFUSED: {why}" if why else "")


# ---- plans (what a dry run prints) -------------------------------------------------------------


def plan_flush(step: RedisFlushStep, config: Config) -> str:
    """What redis.flush_cache would clear; with cache_patterns, what they match now."""
    rc = _section(config, "redis.flush_cache")
    if rc.cache_patterns:
        db = rc.cache_db if rc.cache_db is not None else _url_db(rc)
        return (
            f"SCAN + UNLINK keys matching {_quoted(rc.cache_patterns)} in db {db} of {_where(rc)} "
            f"(SCAN COUNT {BATCH}, one UNLINK per page)"
        ) + _looked(rc, db, rc.cache_patterns, "redis.cache_patterns")
    return f"FLUSHDB ASYNC on db {rc.cache_db} of {_where(rc)} (never FLUSHALL; other databases untouched)"


def plan_delete(step: RedisDeletePatternStep, config: Config) -> str:
    """What redis.delete_pattern would clear, and what its patterns match now."""
    rc = _section(config, "redis.delete_pattern")
    db = step.db if step.db is not None else _url_db(rc)
    patterns = _patterns(step, rc)
    return (
        f"SCAN + UNLINK keys matching {_quoted(patterns)} in db {db} of {_where(rc)} "
        f"(SCAN COUNT {BATCH}, one UNLINK per page, never KEYS)"
    ) + _looked(rc, db, patterns, _patterns_key(step))


# ---- the actions -------------------------------------------------------------------------------


async def flush_cache(step: RedisFlushStep, config: Config, *, playbook: str = "") -> str:
    """Empty the cache: SCAN + UNLINK of `cache_patterns` when set (in `cache_db`, else the
    url's database; refused when they take most of the keyspace), else `FLUSHDB ASYNC` on
    `cache_db` (refused when it is the url's database). Returns what was cleared."""
    rc = _section(config, "redis.flush_cache")
    bad = problems_flush(step, config)
    if bad:
        raise ActionError(bad[0])
    if rc.cache_patterns:
        db = rc.cache_db if rc.cache_db is not None else _url_db(rc)
        n = await _guarded(rc, db, lambda r: _unlink_checked(r, db, rc.cache_patterns, "redis.cache_patterns", rc))
        return f"deleted {_keys(n)} matching {_quoted(rc.cache_patterns)} from db {db}"
    assert rc.cache_db is not None  # problems_flush made sure

    async def flush(r: redis.asyncio.Redis) -> int:
        n = int(await r.dbsize())
        await r.flushdb(asynchronous=True)
        return n

    n = await _guarded(rc, rc.cache_db, flush)
    return f"flushed {_keys(n)} from db {rc.cache_db} (FLUSHDB ASYNC)"


async def delete_pattern(step: RedisDeletePatternStep, config: Config, *, playbook: str = "") -> str:
    """SCAN + UNLINK of the keys matching the step's patterns (default `rate_limit_patterns`);
    refused when they take most of the keyspace."""
    rc = _section(config, "redis.delete_pattern")
    bad = problems_delete(step, config)
    if bad:
        raise ActionError(bad[0])
    patterns = _patterns(step, rc)
    db = step.db if step.db is not None else _url_db(rc)
    n = await _guarded(rc, db, lambda r: _unlink_checked(r, db, patterns, _patterns_key(step), rc))
    return f"deleted {_keys(n)} matching {_quoted(patterns)} from db {db}"


async def _unlink_checked(r: redis.asyncio.Redis, db: int, patterns: Sequence[str], key: str, rc: RedisConfig) -> int:
    """1. sample the keyspace; 2. refuse (ActionError, nothing deleted) patterns that take most
    of it; 3. delete."""
    why = refusal(await _sample(r, db), patterns, key, allowed=rc.allow_broad_patterns)
    if why:
        raise ActionError(why)
    return await _unlink_matching(r, patterns)


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


async def _guarded(rc: RedisConfig, db: int, work: Callable[[redis.asyncio.Redis], Awaitable[_T]]) -> _T:
    """Open a connection to database `db` (never the url's, unless it is the same), run
    `work(client)`, close, and turn Redis' errors into ActionError without the password."""
    import redis.asyncio  # here, not with the playbooks (healer/actions/registry.py)
    from redis.exceptions import RedisError

    secret = read_secret(rc.password_env)
    password = secret.reveal() if secret else None
    pool = redis.asyncio.ConnectionPool.from_url(rc.url, **client_options(password, rc.timeout.total_seconds()))
    # from_url lets the url's own /N win over a db= argument: select the database here instead
    pool.connection_kwargs["db"] = db
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        return await work(client)
    except (RedisError, OSError) as e:
        text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if password:
            text = text.replace(password, "***")
        msg = f"redis at {_where(rc)} db {db}: {redact(text)}"
        raise ActionError(msg) from None
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()
