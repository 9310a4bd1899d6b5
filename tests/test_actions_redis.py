"""The Redis actions against a real redis-server: only the configured database or patterns are cleared."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from helpers import healer, write_config
from services import RedisServer

from healer.actions import redis as redis_actions
from healer.actions.redis import RedisDeletePatternStep, RedisFlushStep
from healer.config import Config, parse_config
from healer.errors import ActionError

FLUSH = RedisFlushStep(action="redis.flush_cache")
RATE_LIMIT = RedisDeletePatternStep(action="redis.delete_pattern")


def make_config(tmp_path: Path, **redis_section: Any) -> Config:
    return parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}], "redis": redis_section},
        tmp_path / "healer.toml",
    )


@pytest.fixture
async def dbs(redis_server: RedisServer) -> AsyncIterator[Callable[[int], redis.asyncio.Redis]]:
    """Clients for numbered databases; every database a test touched is emptied afterwards."""
    opened: dict[int, redis.asyncio.Redis] = {}

    def client(db: int) -> redis.asyncio.Redis:
        if db not in opened:
            opened[db] = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, db=db)
        return opened[db]

    yield client
    for r in opened.values():
        await r.flushdb()
        await r.aclose()


async def fill(r: redis.asyncio.Redis, prefix: str, n: int) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for start in range(0, n, 10_000):
            pipe.mset({f"{prefix}{i}": "x" for i in range(start, min(n, start + 10_000))})
        await pipe.execute()


async def test_redis_flush_empties_only_the_cache_db(tmp_path: Path, redis_server: RedisServer, dbs: Any) -> None:
    """FLUSHDB ASYNC on cache_db: its keys go, the app's database keeps every key."""
    app, cache = dbs(0), dbs(11)
    await app.set("test-actions-redis:session:1", "keep")
    await fill(cache, "page:", 1204)
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/0", cache_db=11)
    detail = await redis_actions.flush_cache(FLUSH, config)
    assert detail == "flushed 1,204 keys from db 11 (FLUSHDB ASYNC)"
    assert await cache.dbsize() == 0
    assert await app.get("test-actions-redis:session:1") == b"keep"
    await app.delete("test-actions-redis:session:1")


async def test_redis_flush_with_patterns_deletes_only_matching_keys(
    tmp_path: Path, redis_server: RedisServer, dbs: Any
) -> None:
    """Where the cache shares a database, SCAN + UNLINK clears `cache:*` and the sessions survive."""
    db = dbs(12)
    await fill(db, "cache:", 5000)
    await fill(db, "session:", 100)
    await fill(db, "cachex", 10)  # looks alike, does not match `cache:*`
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/12", cache_patterns=["cache:*"])
    detail = await redis_actions.flush_cache(FLUSH, config)
    assert detail == "deleted 5,000 keys matching 'cache:*' from db 12"
    assert await db.dbsize() == 110
    assert len({k async for k in db.scan_iter(match="session:*")}) == 100  # SCAN may repeat a key


async def test_cache_patterns_apply_in_cache_db_when_both_are_set(
    tmp_path: Path, redis_server: RedisServer, dbs: Any
) -> None:
    """cache_db + cache_patterns: the patterns are cleared in cache_db, never in the url's db."""
    app, cache = dbs(13), dbs(14)
    await fill(app, "cache:", 10)
    await fill(cache, "cache:", 20)
    await fill(cache, "other:", 5)
    config = make_config(
        tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/13", cache_db=14, cache_patterns=["cache:*"]
    )
    assert await redis_actions.flush_cache(FLUSH, config) == "deleted 20 keys matching 'cache:*' from db 14"
    assert (await app.dbsize(), await cache.dbsize()) == (10, 5)


async def test_rate_limit_clear_removes_exactly_the_matching_keys_in_batches(
    tmp_path: Path, redis_server: RedisServer, dbs: Any
) -> None:
    """200,000 counters go in pipelined batches; every other key is intact, and the count is reported."""
    db = dbs(9)
    await fill(db, "ratelimit:ip:", 200_000)
    await fill(db, "user:", 1000)
    await db.set("ratelimit", "not a counter: the pattern needs the colon")
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/9")
    detail = await redis_actions.delete_pattern(RATE_LIMIT, config)
    assert detail == "deleted 200,000 keys matching 'ratelimit:*' from db 9"
    assert await db.dbsize() == 1001
    assert await db.get("ratelimit") is not None


async def test_a_step_can_name_its_own_patterns_and_db(tmp_path: Path, redis_server: RedisServer, dbs: Any) -> None:
    """redis.delete_pattern's `patterns` and `db` override the config's."""
    url_db, other = dbs(7), dbs(8)
    await fill(url_db, "rl:", 3)
    await fill(other, "rl:", 4)
    await fill(other, "ratelimit:", 2)
    step = RedisDeletePatternStep(action="redis.delete_pattern", patterns=("rl:*",), db=8)
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/7")
    assert await redis_actions.delete_pattern(step, config) == "deleted 4 keys matching 'rl:*' from db 8"
    assert (await url_db.dbsize(), await other.dbsize()) == (3, 2)


async def test_nothing_to_delete_reports_zero(tmp_path: Path, redis_server: RedisServer, dbs: Any) -> None:
    """No matching keys is not an error."""
    dbs(6)
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/6")
    assert await redis_actions.delete_pattern(RATE_LIMIT, config) == "deleted 0 keys matching 'ratelimit:*' from db 6"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param(
            {}, "expected [redis] cache_db (a database only the cache uses) or cache_patterns", id="nothing-configured"
        ),
        pytest.param(
            {"cache_patterns": ["*"]}, "refusing [redis] cache_patterns entry '*': it matches every key", id="match-all"
        ),
    ],
)
def test_redis_flush_refuses_what_would_clear_everything(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    """Without a cache database or patterns, or with a pattern matching every key, nothing runs."""
    config = make_config(tmp_path, **section)
    assert any(message in p for p in redis_actions.problems_flush(FLUSH, config))


async def test_a_redis_that_is_down_is_an_action_error_without_the_password(tmp_path: Path) -> None:
    """Connection refused becomes ActionError; the password in the url is never shown."""
    from services import free_port

    config = make_config(tmp_path, url=f"redis://:s3cretpw@127.0.0.1:{free_port()}/0", cache_db=1)
    with pytest.raises(ActionError) as err:
        await redis_actions.flush_cache(FLUSH, config)
    assert "s3cretpw" not in str(err.value) and "db 1" in str(err.value)


async def test_the_password_comes_from_password_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer, dbs: Any
) -> None:
    """password_env names the variable holding the password; a wrong one fails, without showing it."""
    db = dbs(5)
    await fill(db, "ratelimit:", 3)
    admin = dbs(0)
    await admin.config_set("requirepass", "letmein-123")
    try:
        config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/5", password_env="TEST_REDIS_PW")
        monkeypatch.setenv("TEST_REDIS_PW", "wrong-password-1")
        with pytest.raises(ActionError) as err:
            await redis_actions.delete_pattern(RATE_LIMIT, config)
        assert "wrong-password-1" not in str(err.value)
        monkeypatch.setenv("TEST_REDIS_PW", "letmein-123")
        assert "deleted 3 keys" in await redis_actions.delete_pattern(RATE_LIMIT, config)
    finally:
        authed = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, password="letmein-123")
        await authed.config_set("requirepass", "")
        await authed.aclose()


# ---- the keyspace guard ------------------------------------------------------------------------


async def app_keyspace(r: redis.asyncio.Redis, scale: int = 1) -> int:
    """An app's own database: sessions, job queues, cached pages and rate-limit counters;
    returns how many keys it holds."""
    await fill(r, "sessions:", 400 * scale)
    await fill(r, "cache:page:", 300 * scale)
    await fill(r, "ratelimit:ip:", 200 * scale)
    for queue in ("queue:mail", "queue:billing", "queue:export"):
        await r.rpush(queue, "job-1", "job-2")
    return 903 * scale


GLOB_KEYS = [
    "ratelimit:1", "ratelimit", "rl:x:login", "a*b", "a?b", "axb", "abc", "Abc", "zbc", "[x]",
    "x-y", "line\nbreak", "caf\u00e9:1", "",
]  # fmt: skip


@pytest.mark.parametrize(
    "pattern",
    ["ratelimit:*", "*:*", "[a-z]*", "[^a]*", "a\\*b", "a?b", "?bc", "[A-Z]bc", "[z-a]bc", "\\[x\\]",
     "*[-]*", "line?break", "caf\u00e9:*", "[]x", "*"],
)  # fmt: skip
async def test_the_guard_matches_keys_exactly_as_redis_does(redis_server: RedisServer, dbs: Any, pattern: str) -> None:
    """Our reading of a glob agrees with SCAN MATCH on the same keys, classes, ranges and escapes included."""
    db = dbs(20)
    await db.mset({k: "x" for k in GLOB_KEYS if k})
    by_redis = {k async for k in db.scan_iter(match=pattern, count=1000)}
    assert set(redis_actions.matching([k.encode() for k in GLOB_KEYS if k], [pattern])) == by_redis


@pytest.mark.parametrize("pattern", ["*:*", "[a-z]*", "*e*"])
async def test_a_pattern_taking_most_of_the_keyspace_is_refused_unless_opted_in(
    tmp_path: Path, redis_server: RedisServer, dbs: Any, pattern: str
) -> None:
    """Sessions and queues beside the counters: nothing is deleted, the error says how much and why."""
    db = dbs(16)
    total = await app_keyspace(db)
    url = f"redis://127.0.0.1:{redis_server.port}/16"
    with pytest.raises(ActionError) as err:
        await redis_actions.delete_pattern(RATE_LIMIT, make_config(tmp_path, url=url, rate_limit_patterns=[pattern]))
    assert str(err.value) == (
        f"redis.rate_limit_patterns: {pattern!r} matches 903 of the 903 keys in db 16 "
        "(sessions:… 400, cache:… 300, ratelimit:… 200, …); refusing to delete most of the keyspace; "
        "set [redis] allow_broad_patterns = true to allow it"
    )
    assert await db.dbsize() == total
    opted = make_config(tmp_path, url=url, rate_limit_patterns=[pattern], allow_broad_patterns=True)
    assert await redis_actions.delete_pattern(RATE_LIMIT, opted) == f"deleted 903 keys matching {pattern!r} from db 16"


async def test_a_pattern_matching_every_key_is_refused_even_in_an_empty_database(tmp_path: Path) -> None:
    """`*` in the config is refused before Redis is asked, and the message names the opt-in."""
    config = make_config(tmp_path, rate_limit_patterns=["*"])
    assert redis_actions.problems_delete(RATE_LIMIT, config) == [
        "redis.delete_pattern: refusing pattern '*': it matches every key; "
        "set [redis] allow_broad_patterns = true to allow it"
    ]


async def test_a_patterns_own_namespace_is_cleared_however_much_of_the_keyspace_it_is(
    tmp_path: Path, redis_server: RedisServer, dbs: Any
) -> None:
    """A flood of counters under `ratelimit:*` (98% of the keys) is cleared; the sessions stay."""
    db = dbs(17)
    await fill(db, "ratelimit:ip:", 5000)
    await fill(db, "sessions:", 100)
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/17")
    assert (
        await redis_actions.delete_pattern(RATE_LIMIT, config) == "deleted 5,000 keys matching 'ratelimit:*' from db 17"
    )
    assert await db.dbsize() == 100


async def test_a_steps_own_broad_patterns_are_refused_naming_the_step(
    tmp_path: Path, redis_server: RedisServer, dbs: Any
) -> None:
    """Patterns given in a playbook step are sampled too, and the message says where they came from."""
    db = dbs(21)
    total = await app_keyspace(db)
    step = RedisDeletePatternStep(action="redis.delete_pattern", patterns=("ratelimit:*", "*:[0-9]*"))
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/21")
    with pytest.raises(
        ActionError, match=r"^redis.delete_pattern patterns: '\*:\[0-9\]\*' matches 900 of the 903 keys"
    ):
        await redis_actions.delete_pattern(step, config)
    assert await db.dbsize() == total


async def test_flushing_the_urls_own_database_is_refused_unless_opted_in(
    tmp_path: Path, redis_server: RedisServer, dbs: Any
) -> None:
    """cache_db equal to the url's database would FLUSHDB the app's data: refused, every key kept."""
    db = dbs(2)
    total = await app_keyspace(db)
    url = f"redis://127.0.0.1:{redis_server.port}/2"
    expected = (
        f"redis.cache_db: 2 is the database of [redis] url ({url}), where the app keeps its own data, and "
        "FLUSHDB would empty it; refusing; set [redis] allow_flush_app_db = true to allow it"
    )
    with pytest.raises(ActionError) as err:
        await redis_actions.flush_cache(FLUSH, make_config(tmp_path, url=url, cache_db=2))
    assert str(err.value) == expected
    assert await db.dbsize() == total
    no_db = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}", cache_db=0)
    assert any(
        "redis.cache_db: 0 is the database of [redis] url" in p for p in redis_actions.problems_flush(FLUSH, no_db)
    )
    opted = make_config(tmp_path, url=url, cache_db=2, allow_flush_app_db=True)
    assert await redis_actions.flush_cache(FLUSH, opted) == "flushed 903 keys from db 2 (FLUSHDB ASYNC)"


async def test_broad_cache_patterns_are_refused_too(tmp_path: Path, redis_server: RedisServer, dbs: Any) -> None:
    """redis-flush's cache_patterns get the same guard as the rate-limit patterns."""
    db = dbs(22)
    total = await app_keyspace(db)
    config = make_config(tmp_path, url=f"redis://127.0.0.1:{redis_server.port}/22", cache_patterns=["*e*"])
    with pytest.raises(ActionError, match=r"^redis.cache_patterns: '\*e\*' matches 903 of the 903 keys in db 22"):
        await redis_actions.flush_cache(FLUSH, config)
    assert await db.dbsize() == total


def test_a_dry_run_shows_what_each_pattern_matches_now_and_the_refusal(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """`healer repair rate-limit-clear --dry-run` prints each pattern's share of a sample, a few
    namespaces, and why it would refuse; nothing is deleted."""
    import redis as sync_redis

    db = sync_redis.Redis(host="127.0.0.1", port=redis_server.port, db=18)
    try:
        for prefix, n in (("sessions:", 3000), ("cache:page:", 2000), ("ratelimit:ip:", 1000)):
            db.mset({f"{prefix}{i}": "x" for i in range(n)})
        write_config(
            tmp_path,
            f"""
            state_dir = "state"
            [[checks]]
            name = "api"
            type = "http"
            url = "http://127.0.0.1:9/"
            [redis]
            url = "redis://127.0.0.1:{redis_server.port}/18"
            rate_limit_patterns = ["ratelimit:*", "*:*"]
            """,
        )
        out = healer("--config", str(tmp_path / "healer.toml"), "repair", "rate-limit-clear", "--dry-run")
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert re.search(r"'ratelimit:\*' matches \d{2,3} of 1,000 sampled keys, about [\d,]+ of the 6,000 in db 18 "
                         r"\(ratelimit:… \d+\)", text), text  # fmt: skip
        assert "; '*:*' matches 1,000 of 1,000 sampled keys, about 6,000 of the 6,000 in db 18 (sessions:… " in text
        assert re.search(
            r"; REFUSED: redis.rate_limit_patterns: '\*:\*' matches 1,000 of 1,000 sampled keys, about 6,000 of the "
            r"6,000 in db 18 \((sessions|cache|ratelimit):… [\d,]+, .*\); refusing to delete most of the keyspace; "
            r"set \[redis\] allow_broad_patterns = true to allow it",
            text,
        ), text
        assert text.rstrip().endswith("dry run: nothing was changed")
        assert db.dbsize() == 6000
    finally:
        db.flushdb()
        db.close()
