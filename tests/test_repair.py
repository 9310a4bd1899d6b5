"""run_repair end to end: lock, journal, steps, verification, dry runs, with real Redis and HTTP apps."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from services import HttpApp, RedisServer

from healer.aftermath import RepairResult, ResumedRepair
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.config import Config, parse_config
from healer.decide import Pause
from healer.errors import ActionError, LockedError, UsageError
from healer.model import ActionNote, Deploy, Outcome, Who
from healer.repair import Handoff, playbook_lock, resume_interrupted, run_repair, why_not_again
from healer.store import ActionRow, Store


def make_config(tmp_path: Path, url: str, **sections: Any) -> Config:
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "checks": [{"name": "api", "type": "http", "url": url, "samples": 1, "timeout": "1s"}],
            **sections,
        },
        tmp_path / "healer.toml",
    )


def playbook(tmp_path: Path, name: str, body: str) -> Path:
    directory = tmp_path / "pb"
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(textwrap.dedent(body).lstrip())
    return directory


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "state" / "healer.db")
    yield s
    s.close()


@pytest.fixture
async def cache_db(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    r = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, db=10)
    yield r
    await r.flushdb()
    await r.aclose()


async def repair(name: str, config: Config, store: Store, clock: FakeClock | None = None, **kw: Any) -> RepairResult:
    async with probe_context(config) as ctx:
        return await run_repair(
            name, config=config, ctx=ctx, store=store, clock=clock or FakeClock(),
            who=kw.pop("who", Who.PERSON), reason=kw.pop("reason", "by hand"),
            deploy_id=kw.pop("deploy_id", None), **kw,
        )  # fmt: skip


async def test_redis_flush_is_journaled_run_and_verified(
    tmp_path: Path,
    redis_server: RedisServer,
    cache_db: redis.asyncio.Redis,
    http_app: Callable[..., HttpApp],
    store: Store,
) -> None:
    """A finished row says who, why, when, the outcome and what was done."""
    await cache_db.mset({f"page:{i}": "x" for i in range(1204)})
    app = http_app("healthy")
    config = make_config(tmp_path, f"{app.url}/health", redis={"url": redis_server.url, "cache_db": 10})
    clock = FakeClock()
    result = await repair("redis-flush", config, store, clock, who=Who.LOOP, reason="symptoms: redis.latency",
                          deploy_id=7, incident_id=3)  # fmt: skip
    assert result.ok and result.outcome is Outcome.OK
    assert result.detail == "flushed 1,204 keys from db 10 (FLUSHDB ASYNC); api healthy after 0s"
    assert [r.ok for r in result.results] == [True]
    (row,) = store.actions()
    assert (row.id, row.kind, row.name, row.who, row.reason, row.outcome, row.detail) == (
        result.action_id, "repair", "redis-flush", "loop", "symptoms: redis.latency", "ok", result.detail,
    )  # fmt: skip
    assert (row.deploy_id, row.incident_id) == (7, 3)
    assert row.at == clock.now() and row.finished_at is not None
    assert await cache_db.dbsize() == 0


async def test_a_dry_run_changes_nothing_and_journals_nothing(
    tmp_path: Path, redis_server: RedisServer, cache_db: redis.asyncio.Redis, store: Store
) -> None:
    """--dry-run: the keys are still there, no action row, and the detail says what would be cleared."""
    await cache_db.mset({"page:1": "x", "page:2": "y"})
    config = make_config(tmp_path, "http://127.0.0.1:9/", redis={"url": redis_server.url, "cache_db": 10})
    result = await repair("redis-flush", config, store, dry_run=True)
    assert result.dry_run and result.ok and result.outcome is Outcome.SKIPPED and result.action_id is None
    assert f"1. redis.flush_cache: FLUSHDB ASYNC on db 10 of {redis_server.url}" in result.detail
    assert await cache_db.dbsize() == 2
    assert store.actions() == []
    assert not (tmp_path / "state" / "repair-redis-flush.lock").exists()


async def test_a_dry_run_of_a_command_step_shows_the_argv(tmp_path: Path, store: Store) -> None:
    """The argv that would run is printed, and it does not run."""
    marker = tmp_path / "ran"
    pb = playbook(
        tmp_path, "touch", f'description = "touch"\n[[steps]]\naction = "command"\nargv = ["touch", "{marker}"]\n'
    )
    config = make_config(tmp_path, "http://127.0.0.1:9/", playbooks={"dir": str(pb)})
    result = await repair("touch", config, store, dry_run=True)
    assert f"1. command: run `touch {marker}` in {tmp_path} (no shell) [timeout 1m]" in result.detail
    assert not marker.exists()


async def test_checks_still_failing_after_verify_within_is_failed(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """The steps ran, the checks kept failing for verify_within: outcome failed, re-checked every second."""
    app = http_app("error500")
    pb = playbook(
        tmp_path, "noop", 'description = "x"\nverify_within = "5s"\n[[steps]]\naction = "command"\nargv = ["true"]\n'
    )
    config = make_config(tmp_path, f"{app.url}/health", playbooks={"dir": str(pb)})
    clock = FakeClock()
    start = clock.now()
    result = await repair("noop", config, store, clock)
    assert not result.ok and result.outcome is Outcome.FAILED
    assert result.detail.startswith("ran `true` (exit 0); still failing after 5s: api: ")
    assert clock.now() - start == timedelta(seconds=5)
    # one check a second; each sends its one sample, and two more as all answered 500 (sampling.py)
    assert app.hits % 3 == 0 and 5 <= app.hits // 3 <= 7, app.hits
    assert store.actions()[0].outcome == "failed"


async def test_verification_waits_for_the_app_to_come_back(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """An app still booting is re-checked until it passes, and the time it took is reported."""
    app = http_app("error500")

    class Booting(FakeClock):
        async def sleep(self, delay: timedelta) -> None:
            await super().sleep(delay)
            if self.now() - start >= timedelta(seconds=3):
                app.behaviour = "healthy"

    clock = Booting()
    start = clock.now()
    pb = playbook(tmp_path, "noop", 'description = "x"\n[[steps]]\naction = "command"\nargv = ["true"]\n')
    result = await repair("noop", make_config(tmp_path, f"{app.url}/", playbooks={"dir": str(pb)}), store, clock)
    assert result.ok and result.detail == "ran `true` (exit 0); api healthy after 3s"


async def test_a_handed_off_verification_says_so_and_a_supersede_ends_it_failed(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """With a Handoff (the loop's repairs), the first failed check after the steps says the
    verification goes on beside the loop, with the journal row still `started`; superseding it
    ends it at once, failed, the row saying by what — not after verify_within."""
    app = http_app("error500")
    pb = playbook(
        tmp_path, "noop", 'description = "x"\nverify_within = "1h"\n[[steps]]\naction = "command"\nargv = ["true"]\n'
    )
    config = make_config(tmp_path, f"{app.url}/health", playbooks={"dir": str(pb)})
    handoff = Handoff()
    task = asyncio.create_task(repair("noop", config, store, FakeClock(), who=Who.LOOP, handoff=handoff))
    await asyncio.wait_for(handoff.verifying.wait(), 10)
    assert [a.outcome for a in store.actions()] == ["started"]
    handoff.supersede("the rollback")
    result = await asyncio.wait_for(task, 10)
    assert result.outcome is Outcome.FAILED
    assert result.detail.startswith("ran `true` (exit 0); still failing after ")
    assert result.detail.endswith("; superseded by the rollback")
    (row,) = store.actions()
    assert (row.outcome, row.detail) == ("failed", result.detail)


async def test_a_verification_that_passes_at_once_is_never_handed_off(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    app = http_app("healthy")
    pb = playbook(tmp_path, "noop", 'description = "x"\n[[steps]]\naction = "command"\nargv = ["true"]\n')
    handoff = Handoff()
    config = make_config(tmp_path, f"{app.url}/", playbooks={"dir": str(pb)})
    result = await repair("noop", config, store, FakeClock(), handoff=handoff)
    assert result.ok and not handoff.verifying.is_set()


async def test_the_intent_is_journaled_before_the_first_step_runs(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """The step itself finds the row `started` in the state database."""
    script = tmp_path / "check_journal.py"
    script.write_text(
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(os.path.join(os.environ['HEALER_STATE_DIR'], 'healer.db'))\n"
        "rows = db.execute(\"SELECT outcome FROM actions WHERE name = 'probe-journal'\").fetchall()\n"
        "print(rows)\n"
        "sys.exit(0 if rows == [('started',)] else 3)\n"
    )
    argv = json.dumps([sys.executable, str(script)])
    pb = playbook(tmp_path, "probe-journal", f'description = "x"\n[[steps]]\naction = "command"\nargv = {argv}\n')
    app = http_app("healthy")
    result = await repair("probe-journal", make_config(tmp_path, f"{app.url}/", playbooks={"dir": str(pb)}), store)
    assert result.ok, result.detail
    assert store.actions()[0].outcome == "ok"


async def test_a_step_that_cannot_run_stops_the_playbook_with_error(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """Step 1 fails: step 2 never runs, nothing is verified, the row says error and why."""
    later = tmp_path / "later"
    pb = playbook(
        tmp_path,
        "two",
        f"""
        description = "two steps"
        [[steps]]
        action = "command"
        argv = ["false"]
        [[steps]]
        action = "command"
        argv = ["touch", "{later}"]
    """,
    )
    app = http_app("healthy")
    result = await repair("two", make_config(tmp_path, f"{app.url}/", playbooks={"dir": str(pb)}), store)
    assert result.outcome is Outcome.ERROR and not result.ok
    assert result.detail == "step 1 (command) could not run: `false` exited 1"
    assert not later.exists() and app.hits == 0
    assert store.actions()[0].outcome == "error"


async def test_a_step_past_its_timeout_is_stopped_and_failed(tmp_path: Path, store: Store) -> None:
    """A repair that times out is killed and recorded as failed."""
    pb = playbook(
        tmp_path,
        "slow",
        'description = "x"\n[[steps]]\naction = "command"\nargv = ["sleep", "30"]\ntimeout = "300ms"\n',
    )
    result = await repair("slow", make_config(tmp_path, "http://127.0.0.1:9/", playbooks={"dir": str(pb)}), store)
    assert result.outcome is Outcome.FAILED
    assert "step 1 (command)" in result.detail and "timed out after 300ms" in result.detail
    assert store.actions()[0].outcome == "failed"


async def test_a_user_playbook_overrides_a_shipped_kind(
    tmp_path: Path, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """`healer repair rate-limit-clear` runs the user's version when one is defined."""
    marker = tmp_path / "cleared"
    pb = playbook(
        tmp_path,
        "rl",
        f"""
        name = "rate-limit-clear"
        description = "our limiter lives in memcached"
        [[steps]]
        action = "command"
        argv = ["touch", "{marker}"]
    """,
    )
    app = http_app("healthy")
    result = await repair("rate-limit-clear", make_config(tmp_path, f"{app.url}/", playbooks={"dir": str(pb)}), store)
    assert result.ok and marker.exists()


async def test_an_unknown_kind_names_the_known_ones(tmp_path: Path, store: Store) -> None:
    """UsageError (exit 2) listing what exists; nothing journaled."""
    with pytest.raises(UsageError) as err:
        await repair("restart-everything", make_config(tmp_path, "http://127.0.0.1:9/"), store)
    assert str(err.value) == (
        "unknown repair kind 'restart-everything'; expected one of: "
        "connection-reset, process-restart, rate-limit-clear, redis-flush"
    )
    assert store.actions() == []


async def test_a_playbook_already_running_is_locked(tmp_path: Path, redis_server: RedisServer, store: Store) -> None:
    """A person and the loop never run the same playbook at once: LockedError names the holder."""
    config = make_config(tmp_path, "http://127.0.0.1:9/", redis={"url": redis_server.url, "cache_db": 10})
    held = rf"repair redis-flush is already running \(PID {os.getpid()}\)"
    with playbook_lock(config.state_dir, "redis-flush"), pytest.raises(LockedError, match=held):
        await repair("redis-flush", config, store)
    assert store.actions() == []


async def test_missing_config_for_a_step_refuses_before_journaling(tmp_path: Path, store: Store) -> None:
    """No [redis] section: ActionError saying what is missing; nothing journaled, nothing run."""
    with pytest.raises(ActionError, match=r"cannot run redis-flush: redis.flush_cache: expected a \[redis\] section"):
        await repair("redis-flush", make_config(tmp_path, "http://127.0.0.1:9/"), store)
    assert store.actions() == []


async def test_rate_limit_clear_end_to_end(
    tmp_path: Path, redis_server: RedisServer, http_app: Callable[..., HttpApp], store: Store
) -> None:
    """An app answering 429 while counters exist: clearing them is verified by its http check."""
    r = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, db=15)
    try:
        await r.mset({**{f"ratelimit:{i}": "999" for i in range(300)}, "user:1": "keep"})
        app = http_app("ratelimited")

        class Limiter(FakeClock):
            async def sleep(self, delay: timedelta) -> None:
                await super().sleep(delay)
                if not [k async for k in r.scan_iter(match="ratelimit:*")]:
                    app.behaviour = "healthy"

        config = make_config(tmp_path, f"{app.url}/", redis={"url": f"redis://127.0.0.1:{redis_server.port}/15"})
        result = await repair("rate-limit-clear", config, store, Limiter())
        assert result.ok, result.detail
        assert result.detail.startswith("deleted 300 keys matching 'ratelimit:*' from db 15; api healthy after 1s")
        assert await r.get("user:1") == b"keep"
    finally:
        await r.flushdb()
        await r.aclose()


async def test_a_refused_broad_pattern_is_journaled_as_an_error_and_deletes_nothing(
    tmp_path: Path, redis_server: RedisServer, store: Store
) -> None:
    """rate-limit-clear with `[a-z]*` on an app's keyspace: an error row saying why, every key kept."""
    r = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, db=19)
    try:
        await r.mset({**{f"sessions:{i}": "s" for i in range(60)}, **{f"ratelimit:{i}": "9" for i in range(30)}})
        await r.rpush("queue:mail", "job-1")
        config = make_config(
            tmp_path, "http://127.0.0.1:9/",
            redis={"url": f"redis://127.0.0.1:{redis_server.port}/19", "rate_limit_patterns": ["[a-z]*"]},
        )  # fmt: skip
        result = await repair("rate-limit-clear", config, store)
        assert (result.ok, result.outcome) == (False, Outcome.ERROR)
        why = (
            "step 1 (redis.delete_pattern) could not run: redis.rate_limit_patterns: '[a-z]*' matches 91 of "
            "the 91 keys in db 19 (sessions:… 60, ratelimit:… 30, queue:… 1); refusing to delete most of the "
            "keyspace; set [redis] allow_broad_patterns = true to allow it"
        )
        assert result.detail == why
        [row] = store.actions()
        assert (row.outcome, row.detail) == (Outcome.ERROR, why)
        assert await r.dbsize() == 91
    finally:
        await r.flushdb()
        await r.aclose()


# ---- interrupted by a stop or a kill -------------------------------------------------------------


def flag_fix(tmp_path: Path) -> tuple[Config, Path, Path]:
    """A playbook `fix` that mends what the check `flag` looks at, and counts its runs."""
    flag, runs = tmp_path / "flag", tmp_path / "runs"
    pb = playbook(
        tmp_path,
        "fix",
        f"""
        description = "mend it"
        verify = ["flag"]
        verify_within = "1s"
        [[steps]]
        action = "command"
        argv = ["sh", "-c", "echo ran >> {runs}; touch {flag}"]
        """,
    )
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "checks": [{"name": "flag", "type": "command", "argv": ["test", "-f", str(flag)]}],
            "playbooks": {"dir": str(pb)},
        },
        tmp_path / "healer.toml",
    )
    return config, flag, runs


def interrupted_row(store: Store, deploy_id: int, who: Who = Who.LOOP) -> int:
    """A repair of `fix` that a stop cut short, as run_repair records it."""
    row = store.start_action(
        kind="repair", name="fix", who=who, reason="symptoms: flag", now=FakeClock().now(), deploy_id=deploy_id
    )
    store.finish_action(row, Outcome.ERROR, FakeClock().now(), "interrupted: healer stopped during the repair")
    store.set_note(row, ActionNote.INTERRUPTED)
    return row


async def resume(config: Config, store: Store, observe: bool = False) -> list[ResumedRepair]:
    async with probe_context(config) as ctx:
        return await resume_interrupted(config=config, ctx=ctx, store=store, clock=FakeClock(), observe=observe)


async def test_a_cancelled_repair_is_recorded_interrupted_and_is_not_a_run(tmp_path: Path, store: Store) -> None:
    """Cancelled mid-step (healer's stop past its bound): error, note interrupted, and not among
    the past repairs that space and cap the next ones."""
    running = tmp_path / "running"
    argv = json.dumps(["sh", "-c", f"touch {running}; sleep 30"])
    pb = playbook(tmp_path, "slow", f'description = "x"\n[[steps]]\naction = "command"\nargv = {argv}\n')
    config = make_config(tmp_path, "http://127.0.0.1:9/", playbooks={"dir": str(pb)})
    d, _ = store.ensure_deploy("a" * 40, FakeClock().now())
    task = asyncio.create_task(repair("slow", config, store, who=Who.LOOP, deploy_id=d.id))
    while not running.exists():
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = store.actions()
    assert (row.outcome, row.note) == ("error", ActionNote.INTERRUPTED)
    assert row.detail == "interrupted: healer stopped during the repair"
    assert store.past_repairs(d.id) == ()


async def test_the_next_start_runs_an_interrupted_repair_again_once(tmp_path: Path, store: Store) -> None:
    """Its checks still fail: it is run again, as a new repair of the loop, and only once."""
    config, flag, runs = flag_fix(tmp_path)
    d, _ = store.ensure_deploy("a" * 40, FakeClock().now())
    cut = interrupted_row(store, d.id)
    (done,) = await resume(config, store)
    assert done.result is not None and done.result.ok, done.why
    assert runs.read_text() == "ran\n" and flag.exists()
    first, again = store.actions()
    assert (first.id, first.note) == (cut, ActionNote.LOOKED_AT)
    assert (again.who, again.outcome) == ("loop", "ok")
    assert again.reason == f"run again: repair #{cut} was interrupted (symptoms: flag)"
    assert [r.outcome for r in store.past_repairs(d.id)] == [Outcome.OK]
    assert await resume(config, store) == []
    assert runs.read_text() == "ran\n"


async def test_a_repair_killed_mid_run_is_closed_interrupted_and_run_again(tmp_path: Path, store: Store) -> None:
    """Still `started` and its lock free (healer was killed -9): closed as interrupted, run again."""
    config, _, runs = flag_fix(tmp_path)
    d, _ = store.ensure_deploy("a" * 40, FakeClock().now())
    killed = store.start_action(
        kind="repair", name="fix", who=Who.LOOP, reason="r", now=FakeClock().now(), deploy_id=d.id
    )
    (done,) = await resume(config, store)
    assert done.interrupted.id == killed and done.result is not None and done.result.ok
    first = store.actions()[0]
    assert (first.outcome, first.note) == ("error", ActionNote.LOOKED_AT)
    assert first.detail.startswith("interrupted: ")
    assert runs.read_text() == "ran\n"


async def test_a_repair_running_in_another_process_is_left_alone(tmp_path: Path, store: Store) -> None:
    """`started` with its playbook lock held: it is alive (a person's `healer repair`), not interrupted."""
    config, _, runs = flag_fix(tmp_path)
    d, _ = store.ensure_deploy("a" * 40, FakeClock().now())
    store.start_action(kind="repair", name="fix", who=Who.PERSON, reason="r", now=FakeClock().now(), deploy_id=d.id)
    with playbook_lock(config.state_dir, "fix"):
        assert await resume(config, store) == []
    assert [a.outcome for a in store.actions()] == ["started"] and not runs.exists()


async def test_an_interrupted_repair_whose_checks_pass_now_is_not_run_again(tmp_path: Path, store: Store) -> None:
    """It got far enough: its target checks pass at the start, so nothing is run."""
    config, flag, runs = flag_fix(tmp_path)
    flag.touch()
    d, _ = store.ensure_deploy("a" * 40, FakeClock().now())
    interrupted_row(store, d.id)
    (done,) = await resume(config, store)
    assert done.result is None and done.healthy and done.why == "not run again: flag pass now"
    assert not runs.exists() and len(store.actions()) == 1


NOW = FakeClock().now()
DEPLOY = Deploy(id=1, commit="a" * 40, first_seen=NOW)


def row_for(who: Who = Who.LOOP, deploy_id: int = 1) -> ActionRow:
    return ActionRow(7, NOW, NOW, deploy_id, None, "repair", "process-restart", str(who), "r", "error", "", "")


@pytest.mark.parametrize(
    ("row", "current", "pause", "observe", "expected"),
    [
        pytest.param(row_for(), DEPLOY, None, False, None, id="run-again"),
        pytest.param(row_for(Who.PERSON), DEPLOY, None, False, "a person's repair: not run again by healer",
                     id="a-persons"),
        pytest.param(row_for(deploy_id=2), DEPLOY, None, False,
                     "the deploy changed since: the new one is judged afresh", id="new-deploy"),
        pytest.param(row_for(), None, None, False, "the deploy changed since: the new one is judged afresh",
                     id="no-deploy"),
        pytest.param(row_for(), replace(DEPLOY, held="rolled back"), None, False, "healer is held: rolled back",
                     id="held"),
        pytest.param(row_for(), DEPLOY, Pause(NOW, "migrating"), False, "paused (migrating)", id="paused"),
        pytest.param(row_for(), DEPLOY, None, True, "observe mode", id="observe"),
    ],
)  # fmt: skip
def test_why_not_again_runs_only_the_loops_repair_of_the_deploy_still_watched(
    row: ActionRow, current: Deploy | None, pause: Pause | None, observe: bool, expected: str | None
) -> None:
    """A person's repair, a new deploy, a hold, a pause and observe mode each keep it from running again."""
    assert why_not_again(row, current, pause, observe) == expected
