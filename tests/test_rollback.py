"""healer.rollback: real rollbacks of real git repos with real processes (the plan: test_rollback_plan)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import healer, make_repo_with_submodule, write_config

from healer import gitrepo, rollback, rollback_plan
from healer.aftermath import RollbackResult, follow_up
from healer.checks import ProbeContext, probe_context
from healer.clock import FakeClock
from healer.config import Config, parse_config
from healer.errors import GitError, LockedError
from healer.model import CheckResult, Outcome, Verdict, Who
from healer.store import Store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PY = sys.executable


# ---- helpers ---------------------------------------------------------------------------------


def git(repo: Path, *args: str, at: datetime | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    if at is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(at.timestamp())} +0000"
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return out.stdout.decode().strip()


def commit(repo: Path, content: str, at: datetime) -> str:
    (repo / "app.txt").write_text(content + "\n")
    git(repo, "add", "app.txt")
    git(repo, "commit", "-q", "-m", content, at=at)
    return git(repo, "rev-parse", "HEAD")


class Repo:
    """release 1 (stable-1), release 2 (stable-2), then a bad release at HEAD on main."""

    def __init__(self, path: Path) -> None:
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        self.path = path
        self.c1 = commit(path, "release 1", T0)
        git(path, "tag", "-a", "-m", "release 1", "stable-1", at=T0)
        self.c2 = commit(path, "release 2", T0 + timedelta(hours=1))
        git(path, "tag", "-a", "-m", "release 2", "stable-2", at=T0 + timedelta(hours=1))
        self.bad = commit(path, "bad release", T0 + timedelta(hours=2))

    @property
    def head(self) -> str:
        return gitrepo.head_commit(self.path)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "app")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "healer.db")
    yield s
    s.close()


def make_config(
    tmp_path: Path,
    repo: Path | None,
    *,
    after: list[list[str]] | None = None,
    checks: list[dict[str, Any]] | None = None,
    **rollback_options: str,
) -> Config:
    app: dict[str, Any] = {"name": "shop", "stable_tags": "stable-*", "tag_stable_after": "6h"}
    if repo is not None:
        app["repo"] = str(repo)
    data = {
        "state_dir": "state",
        "app": app,
        "checks": checks or [{"name": "ok", "type": "command", "argv": ["true"]}],
        "rollback": {"after": after or [], "command_timeout": "10s", "verify_grace": "0s",
                     **rollback_options},
    }  # fmt: skip
    return parse_config(data, tmp_path / "healer.toml")


def recorder(out: Path, label: str) -> list[str]:
    """An after command that appends `label`, its cwd and the target it was told to a file."""
    code = (
        "import os, sys; "
        "open(sys.argv[1], 'a').write(sys.argv[2] + ' ' + os.getcwd() + ' '"
        " + os.environ['HEALER_ROLLBACK_TO'] + '\\n')"
    )
    return [PY, "-c", code, str(out), label]


def journal_probe(db: Path, out: Path) -> list[str]:
    """An after command that reads the state database while it runs: the journal row must
    already be there, outcome started."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "r = c.execute(\"SELECT outcome, detail FROM actions WHERE kind='rollback'\").fetchall(); "
        "open(sys.argv[2], 'w').write(repr(r))"
    )
    return [PY, "-c", code, str(db), str(out)]


def sleeper(pidfile: Path) -> list[str]:
    """An after command that writes its PID and then hangs."""
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    return [PY, "-c", code, str(pidfile)]


@pytest.fixture
async def ctx_for() -> AsyncIterator[Callable[[Config], Any]]:
    """Open a ProbeContext for a config; all are closed after the test."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def open_ctx(config: Config) -> ProbeContext:
            return await stack.enter_async_context(probe_context(config))

        yield open_ctx


def alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie does not (a killed command's parent is gone, and an init that
    reaps slowly, or never, leaves it a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def deploy_bad(store: Store, repo: Repo, now: datetime = T0) -> int:
    """The store watches the bad commit, as the loop would."""
    d, _ = store.ensure_deploy(repo.bad, now)
    return d.id


def hold_after(result: RollbackResult, config: Config) -> tuple[int | None, str] | None:
    """What the loop holds after this rollback (aftermath.follow_up): (the deploy, why), or None."""
    then = follow_up(result, config=config)
    return None if then.hold is None else (then.deploy_id, then.hold.reason)


def rows(store: Store) -> list[tuple[str, str, str, str]]:
    return [(a.kind, a.name, a.who, a.outcome) for a in store.actions()]


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path`, .git included, by content hash."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ---- candidates --------------------------------------------------------------------------------


def test_candidates_are_newest_first_without_head_or_bad_commits(repo: Repo, store: Store, tmp_path: Path) -> None:
    """HEAD's own tag and known-bad commits are never offered."""
    config = make_config(tmp_path, repo.path)
    git(repo.path, "tag", "-a", "-m", "x", "stable-3", at=T0 + timedelta(hours=3))  # on HEAD
    assert [t.name for t in rollback.candidates(config, store)] == ["stable-2", "stable-1"]
    assert rollback.has_target(config, store)
    store.mark_bad(repo.c2, "rolled back from", T0)
    assert [t.name for t in rollback.candidates(config, store)] == ["stable-1"]
    store.mark_bad(repo.c1, "rolled back from", T0)
    assert rollback.candidates(config, store) == []
    assert not rollback.has_target(config, store)
    assert not rollback.has_target(make_config(tmp_path, None), store)


# ---- running it ------------------------------------------------------------------------------


async def test_loop_rollback_checks_out_the_newest_stable_tag_and_runs_the_after_commands(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """Journal first, checkout, commands in order in the repo, from-commit bad, new window."""
    out, seen = tmp_path / "out.txt", tmp_path / "journal.txt"
    after = [recorder(out, "first"), journal_probe(store.path, seen), recorder(out, "second")]
    config = make_config(tmp_path, repo.path, after=after)
    old = deploy_bad(store, repo)
    clock = FakeClock(T0 + timedelta(hours=3))

    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=clock, who=Who.LOOP, mark_bad=True,
        reason="5 consecutive failing cycles",
    )  # fmt: skip

    assert result.ok, result.detail
    assert result.changed and hold_after(result, config) is None
    assert (result.from_commit, result.to_ref, result.to_commit) == (repo.bad, "stable-2", repo.c2)
    assert repo.head == repo.c2
    assert out.read_text().splitlines() == [
        f"first {repo.path} stable-2",
        f"second {repo.path} stable-2",
    ]
    ((outcome, detail),) = eval(seen.read_text())
    assert outcome == "started"
    journal = json.loads(detail)
    pgid = journal.pop("running").pop("pgid")  # the second command's, journaled as it ran
    assert isinstance(pgid, int) and pgid > 1
    assert journal == {
        "from": repo.bad, "to": "stable-2", "to_commit": repo.c2, "from_branch": "main",
        "mark_bad": True, "commands": rollback._digest(after), "done": 1,
    }  # fmt: skip
    assert rows(store) == [("rollback", "stable-2", "loop", "ok")]
    action = store.actions()[0]
    assert action.deploy_id == old
    assert action.reason == "5 consecutive failing cycles"
    assert action.detail.startswith(f"stable-2 ({repo.c2[:7]}) from {repo.bad[:7]}: healthy")
    assert repo.bad in store.bad_commits()
    new = store.current_deploy()
    assert new is not None and new.id == result.deploy_id != old
    assert (new.commit, new.via_rollback, new.held) == (repo.c2, True, None)
    assert [c.ok for c in store.cycles(deploy_id=new.id)] == [True]  # the verification
    assert rollback.candidates(config, store) == [
        t for t in gitrepo.stable_tags(repo.path, "stable-*") if t.name == "stable-1"
    ]


async def test_a_persons_rollback_marks_the_commit_bad_when_asked_but_is_not_once_per_deploy(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """--mark-bad condemns the commit left; the loop may still roll back from a person's target."""
    config = make_config(tmp_path, repo.path)
    deploy_bad(store, repo)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.PERSON,
        reason="login broken", mark_bad=True,
    )  # fmt: skip
    assert result.ok
    assert rows(store) == [("rollback", "stable-2", "person", "ok")]
    assert "by a person" in store.bad_commits()[repo.bad]
    new = store.current_deploy()
    assert new is not None and not new.via_rollback


async def test_to_a_commit_sha_and_the_undo_back_to_where_it_came_from(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """--to takes a commit; undoing a --mark-bad rollback goes forward again, needs --force for
    the bad commit, and condemns nothing."""
    config = make_config(tmp_path, repo.path)
    ctx = await ctx_for(config)
    deploy_bad(store, repo)
    run = rollback.run_rollback
    first = await run(config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.PERSON,
                      reason="r", to=repo.c1[:10], mark_bad=True)  # fmt: skip
    assert first.ok and repo.head == repo.c1 and first.to_ref == repo.c1[:10]

    refused = await run(config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.PERSON,
                        reason="undo", to=repo.bad[:7])  # fmt: skip
    assert not refused.ok and not refused.changed
    assert refused.refused is not None
    assert "known bad" in refused.refused and "--force" in refused.refused
    assert repo.head == repo.c1

    undo = await run(config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.PERSON,
                     reason="undo", to=repo.bad[:7], force=True)  # fmt: skip
    assert undo.ok and repo.head == repo.bad
    assert repo.c1 not in store.bad_commits()  # moving forward condemns nothing
    assert rows(store) == [
        ("rollback", repo.c1[:10], "person", "ok"),
        ("rollback", repo.bad[:7], "person", "error"),
        ("rollback", repo.bad[:7], "person", "ok"),
    ]


async def test_an_unknown_ref_is_a_git_error_and_records_nothing(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """A typo in --to is a one-line error before anything happens."""
    config = make_config(tmp_path, repo.path)
    with pytest.raises(GitError, match="unknown ref 'stabel-2'"):
        await rollback.run_rollback(
            config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0),
            who=Who.PERSON, reason="r", to="stabel-2",
        )  # fmt: skip
    assert store.actions() == [] and repo.head == repo.bad


async def test_a_dirty_work_tree_is_refused_unless_forced(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """Nothing changes and the reason names the files; --force stashes them and goes ahead."""
    out = tmp_path / "out.txt"
    config = make_config(tmp_path, repo.path, after=[recorder(out, "ran")])
    ctx = await ctx_for(config)
    old = deploy_bad(store, repo)
    (repo.path / "app.txt").write_text("hotfix\n")

    result = await rollback.run_rollback(
        config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.LOOP, mark_bad=True, reason="r"
    )
    assert not result.ok and not result.changed
    assert result.refused is not None
    assert "local changes to 1 tracked file(s) (app.txt)" in result.refused
    assert "--force" in result.refused
    assert repo.head == repo.bad and (repo.path / "app.txt").read_text() == "hotfix\n"
    assert not out.exists() and store.bad_commits() == {}
    assert rows(store) == [("rollback", "stable-2", "loop", "error")]
    hold = hold_after(result, config)
    assert hold is not None and hold[0] == old and "refused" in hold[1]  # no retry storm

    forced = await rollback.run_rollback(
        config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.PERSON, reason="r",
        force=True,
    )  # fmt: skip
    assert forced.ok, forced.detail
    assert repo.head == repo.c2 and (repo.path / "app.txt").read_text() == "release 2\n"
    assert "stashed" in forced.detail
    assert "hotfix" in git(repo.path, "stash", "show", "-p")


async def test_a_rollback_brings_the_submodules_back_and_leaves_the_tree_clean(
    store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """From a release that moved a submodule to the stable tag: the submodule is at the tag's
    commit of it, `git status` is empty, and the next rollback finds nothing dirty."""
    app = make_repo_with_submodule(tmp_path)
    config = make_config(tmp_path, app.path)
    store.ensure_deploy(app.bad, T0)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.PERSON, reason="r"
    )
    assert result.ok, result.detail
    assert (gitrepo.head_commit(app.path), git(app.lib, "rev-parse", "HEAD")) == (app.stable, app.lib_old)
    assert git(app.path, "status", "--porcelain") == ""
    assert gitrepo.changed_files(app.path) == []  # what a rollback's plan refuses as local changes


async def test_a_rollback_that_leaves_the_tree_unclean_fails_saying_what(
    store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """A submodule left behind fails the rollback (held for a person), naming it; no after command runs."""
    app = make_repo_with_submodule(tmp_path)
    git(app.path, "config", "submodule.lib.update", "none")
    out = tmp_path / "out.txt"
    config = make_config(tmp_path, app.path, after=[recorder(out, "ran")])
    deploy, _ = store.ensure_deploy(app.bad, T0)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.LOOP, reason="r",
        mark_bad=True,
    )  # fmt: skip
    assert not result.ok
    assert "but the work tree is not clean: lib (submodule not at its recorded commit); HEAD moved" in result.detail
    assert rows(store) == [("rollback", "stable-1", "loop", "failed")]
    assert not out.exists()
    hold = hold_after(result, config)
    assert hold is not None and hold[0] == deploy.id


async def test_a_refused_checkout_shows_gits_reason(repo: Repo, store: Store, tmp_path: Path, ctx_for: Any) -> None:
    """An untracked file in the way: the rollback fails with git's reason and the file, not "Aborting"."""
    git(repo.path, "rm", "-q", "--cached", "app.txt")
    git(repo.path, "commit", "-q", "-m", "untrack app.txt", at=T0 + timedelta(hours=3))
    (repo.path / "app.txt").write_text("the server's own\n")
    config = make_config(tmp_path, repo.path)
    store.ensure_deploy(repo.head, T0)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.PERSON, reason="r"
    )
    assert not result.ok and not result.changed
    assert (
        f"cannot check out {repo.c2[:7]}: The following untracked working tree files would be "
        f"overwritten by checkout: app.txt; HEAD still at {repo.head[:7]}"
    ) in result.detail
    assert "Aborting" not in result.detail


async def test_a_failing_after_command_stops_and_fails_the_rollback(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """Later commands do not run; HEAD stays at the target, the window is the rollback's and
    the loop holds it for a person."""
    out = tmp_path / "out.txt"
    fail = [PY, "-c", "import sys; print('migration 42 failed'); sys.exit(3)"]
    after = [recorder(out, "one"), fail, recorder(out, "three")]
    config = make_config(tmp_path, repo.path, after=after)
    deploy_bad(store, repo)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.LOOP, mark_bad=True,
        reason="r",
    )  # fmt: skip
    assert not result.ok and result.changed and result.commands_failed
    assert out.read_text().splitlines() == [f"one {repo.path} stable-2"]
    assert "after command 2" in result.detail and "exited 3: migration 42 failed" in result.detail
    assert rows(store) == [("rollback", "stable-2", "loop", "failed")]
    assert "\n" not in store.actions()[0].detail
    new = store.current_deploy()
    assert new is not None and new.commit == repo.c2 and new.via_rollback
    hold = hold_after(result, config)
    assert hold is not None and hold[0] == new.id
    assert repo.bad in store.bad_commits()
    log = tmp_path / "state" / f"rollback-{result.action_id}.log"
    assert "migration 42 failed" in log.read_text()


async def test_an_after_command_past_its_timeout_is_killed(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """The command's whole process group is killed at `command_timeout`."""
    pidfile = tmp_path / "child.pid"
    hang = sleeper(pidfile)
    config = make_config(tmp_path, repo.path, after=[hang], command_timeout="500ms")
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.PERSON,
        reason="r",
    )  # fmt: skip
    assert not result.ok and "timed out after 500ms (killed)" in result.detail
    pid, deadline = int(pidfile.read_text()), time.monotonic() + 2
    while alive(pid):  # the group was killed; its members end a moment after the one reaped
        assert time.monotonic() < deadline, f"pid {pid} outlived the timeout"
        time.sleep(0.02)


async def test_a_missing_after_command_fails_with_its_name(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """A typo in [rollback] after is named, not a traceback."""
    config = make_config(tmp_path, repo.path, after=[["no-such-command-xyz", "restart"]])
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.PERSON,
        reason="r",
    )  # fmt: skip
    assert not result.ok and "'no-such-command-xyz' not found" in result.detail


async def test_dry_run_changes_nothing_byte_for_byte(repo: Repo, store: Store, tmp_path: Path, ctx_for: Any) -> None:
    """No lock, no journal row, no deploy, no file in the repo touched; the detail is the plan."""
    out = tmp_path / "out.txt"
    config = make_config(tmp_path, repo.path, after=[recorder(out, "x")])
    deploy_bad(store, repo)
    before = snapshot(repo.path)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.PERSON,
        reason="r", dry_run=True,
    )  # fmt: skip
    assert result.ok and not result.changed
    assert (result.from_commit, result.to_ref, result.to_commit) == (repo.bad, "stable-2", repo.c2)
    assert f"to    stable-2  {repo.c2[:7]}" in result.detail
    assert f"$ {PY} -c" in result.detail
    assert snapshot(repo.path) == before
    assert store.actions() == [] and len(store.deploys()) == 1 and not out.exists()
    assert not (tmp_path / "state" / rollback.LOCK_NAME).exists()


async def test_a_second_rollback_at_the_same_time_is_refused_naming_the_pid(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """Another process holding the lock: LockedError with its PID; nothing changes."""
    config = make_config(tmp_path, repo.path)
    ctx = await ctx_for(config)
    lock = tmp_path / "state" / rollback.LOCK_NAME
    holder = subprocess.Popen(
        [PY, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, str(os.getpid()).encode())
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        named = f"rollback is already running \\(PID {holder.pid}\\)"
        with pytest.raises(LockedError, match=named):
            await rollback.run_rollback(
                config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.PERSON, reason="r"
            )
        assert repo.head == repo.bad and store.actions() == []
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # the kernel released the lock with the process
    result = await rollback.run_rollback(
        config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=Who.PERSON, reason="r"
    )
    assert result.ok


async def test_two_rollbacks_started_together_one_runs_one_is_refused(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """The loop and a person at once: exactly one rollback happens."""
    config = make_config(tmp_path, repo.path, after=[[PY, "-c", "import time; time.sleep(0.2)"]])
    ctx = await ctx_for(config)
    deploy_bad(store, repo)

    async def go(who: Who) -> RollbackResult:
        return await rollback.run_rollback(
            config=config, ctx=ctx, store=store, clock=FakeClock(T0), who=who, reason="r"
        )

    results = await asyncio.gather(go(Who.LOOP), go(Who.PERSON), return_exceptions=True)
    assert sum(isinstance(r, LockedError) for r in results) == 1
    assert sum(isinstance(r, RollbackResult) and r.ok for r in results) == 1
    assert [a.outcome for a in store.actions()] == ["ok"]
    assert repo.head == repo.c2


def test_a_persons_second_rollback_that_loses_the_lock_race_announces_nothing(repo: Repo, tmp_path: Path) -> None:
    """`healer rollback --yes` while another rollback holds the lock: exit 2 naming the holder,
    nothing queued for chat, nothing recorded, HEAD unmoved."""
    from healer.alerts.outbox import Outbox

    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo.path}"
        [[checks]]
        name = "ok"
        type = "command"
        argv = ["true"]
        """,
    )
    state = tmp_path / "state"
    with rollback.rollback_lock(state):
        out = healer("--config", str(config), "rollback", "--yes", "--reason", "the second person")
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"rollback is already running (PID {os.getpid()})" in out.stderr
    outbox = Outbox(state / "healer.db")
    try:
        assert outbox.history() == []
    finally:
        outbox.close()
    s = Store(state / "healer.db")
    try:
        assert s.actions() == []
    finally:
        s.close()
    assert repo.head == repo.bad


def test_a_persons_rollback_marks_the_commit_bad_only_with_mark_bad(repo: Repo, tmp_path: Path) -> None:
    """`--dry-run` says whether the commit left is marked bad; `--yes` without `--mark-bad` leaves
    it a possible target, `--mark-bad` condemns it."""
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo.path}"
        [[checks]]
        name = "ok"
        type = "command"
        argv = ["true"]
        [rollback]
        verify_grace = "0s"
        """,
    )
    bad = repo.bad[:7]
    plain = healer("--config", str(config), "rollback", "--dry-run")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert f"leave {bad} unmarked (--mark-bad: never a rollback target again)" in plain.stdout
    marked = healer("--config", str(config), "rollback", "--dry-run", "--mark-bad")
    assert f"mark {bad} bad: never a rollback target again" in marked.stdout
    assert "unmarked" not in marked.stdout

    done = healer("--config", str(config), "rollback", "--yes", "--reason", "looking into it")
    assert done.returncode == 0, done.stdout + done.stderr
    s = Store(tmp_path / "state" / "healer.db")
    try:
        assert s.bad_commits() == {}
    finally:
        s.close()
    again = healer("--config", str(config), "rollback", "--yes", "--mark-bad", "--reason", "broken too")
    assert again.returncode == 0, again.stdout + again.stderr
    s = Store(tmp_path / "state" / "healer.db")
    try:
        assert list(s.bad_commits()) == [repo.c2]
    finally:
        s.close()


def test_rollback_list_has_a_header_and_says_what_it_hides(repo: Repo, tmp_path: Path) -> None:
    """`healer rollback --list`: a header, the targets, then each hidden tag and why."""
    git(repo.path, "tag", "-a", "-m", "x", "stable-3", at=T0 + timedelta(hours=3))  # on HEAD
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo.path}"
        [[checks]]
        name = "ok"
        type = "command"
        argv = ["true"]
        """,
    )
    out = healer("--config", str(config), "rollback", "--list")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == [
        "stable tags matching 'stable-*' a rollback may go to, newest first:",
        "tag\tcommit\ttagged (UTC)",
        f"stable-2\t{repo.c2[:12]}\t2026-01-01 13:00",
        f"stable-1\t{repo.c1[:12]}\t2026-01-01 12:00",
        "hidden: stable-3 is the commit checked out: not a target",
    ]


# ---- verification --------------------------------------------------------------------------------


async def test_verification_against_a_healthy_app_is_ok(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any, http_app: Any
) -> None:
    """The checks are re-run against the real app after the rollback."""
    app = http_app("healthy")
    checks = [{"name": "api", "type": "http", "url": f"{app.url}/health", "samples": 1}]
    config = make_config(tmp_path, repo.path, checks=checks)
    deploy_bad(store, repo)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.LOOP, mark_bad=True,
        reason="r",
    )  # fmt: skip
    assert result.ok, result.detail
    assert [r.ok for r in result.results] == [True]
    assert app.hits >= 1


async def test_an_automatic_rollback_to_a_broken_version_holds_for_a_person(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """Checks still failing after the rollback: failed, the new deploy held, never again."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    checks = [{"name": "api", "type": "http", "url": f"http://127.0.0.1:{port}/health",
               "samples": 1, "timeout": "1s"}]  # fmt: skip
    config = make_config(tmp_path, repo.path, checks=checks, verify_grace="1s")
    deploy_bad(store, repo)
    clock = FakeClock(T0)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=clock, who=Who.LOOP, mark_bad=True, reason="r"
    )
    assert not result.ok and result.changed
    assert f"still unhealthy after {rollback_plan.VERIFY_TRIES} tries" in result.detail
    assert clock.now() - T0 >= timedelta(seconds=rollback_plan.VERIFY_TRIES)  # waited between tries
    assert rows(store) == [("rollback", "stable-2", "loop", "failed")]
    new = store.current_deploy()
    assert new is not None and new.via_rollback
    hold = hold_after(result, config)
    assert hold is not None and hold[0] == new.id and "not rolling back again" in hold[1]
    assert [c.ok for c in store.cycles(deploy_id=new.id)] == [False]

    # a person's rollback to a broken version reports it and holds nothing: the person is there
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=clock, who=Who.PERSON,
        reason="r",
    )  # fmt: skip
    assert not result.ok and hold_after(result, config) is None and repo.head == repo.c1
    latest = store.current_deploy()
    assert latest is not None and latest.held is None


async def test_a_refused_automatic_rollback_with_no_target_holds_the_deploy(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """No stable tag: recorded, held, the repo untouched."""
    config = make_config(tmp_path, repo.path)
    store.mark_bad(repo.c1, "x", T0)
    store.mark_bad(repo.c2, "x", T0)
    old = deploy_bad(store, repo)
    result = await rollback.run_rollback(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0), who=Who.LOOP, mark_bad=True,
        reason="r",
    )  # fmt: skip
    assert not result.ok and result.refused is not None
    assert result.refused.startswith("no stable tag to roll back to")
    assert rows(store) == [("rollback", "-", "loop", "error")]
    assert hold_after(result, config) == (old, f"automatic rollback refused: {result.refused}; waiting for a person")
    assert repo.head == repo.bad


# ---- after a kill ----------------------------------------------------------------------------


def journal_started(store: Store, repo: Repo, who: Who, deploy_id: int) -> int:
    detail = json.dumps({"from": repo.bad, "to": "stable-2", "to_commit": repo.c2,
                         "from_branch": "main", "mark_bad": True})  # fmt: skip
    return store.start_action(
        kind="rollback", name="stable-2", who=who, reason="r", now=T0, deploy_id=deploy_id,
        detail=detail,
    )  # fmt: skip


async def test_resume_before_checkout_records_a_failure_and_does_not_retry(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """HEAD still at the from-commit: failed, "interrupted before checkout", nothing moves."""
    out = tmp_path / "out.txt"
    config = make_config(tmp_path, repo.path, after=[recorder(out, "x")])
    journal_started(store, repo, Who.LOOP, deploy_bad(store, repo))
    results = await rollback.resume_unfinished(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0)
    )
    assert [r.ok for r in results] == [False]
    assert rows(store) == [("rollback", "stable-2", "loop", "failed")]
    assert "interrupted before checkout" in store.actions()[0].detail
    assert repo.head == repo.bad and not out.exists() and store.unfinished_actions() == []


async def test_resume_after_checkout_finishes_the_rollback(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """HEAD already at the target: the after commands run again, the window starts, verified."""
    out = tmp_path / "out.txt"
    config = make_config(tmp_path, repo.path, after=[recorder(out, "again")])
    journal_started(store, repo, Who.LOOP, deploy_bad(store, repo))
    git(repo.path, "checkout", "-q", "--detach", repo.c2)
    results = await rollback.resume_unfinished(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0)
    )
    assert [r.ok for r in results] == [True]
    assert out.read_text().splitlines() == [f"again {repo.path} stable-2"]
    assert rows(store) == [("rollback", "stable-2", "loop", "ok")]
    assert "interrupted after checkout; resumed" in store.actions()[0].detail
    new = store.current_deploy()
    assert new is not None and new.commit == repo.c2 and new.via_rollback
    assert repo.bad in store.bad_commits()


async def test_resume_leaves_a_live_rollback_alone(repo: Repo, store: Store, tmp_path: Path, ctx_for: Any) -> None:
    """While another process holds the lock its `started` row is in progress, not orphaned."""
    config = make_config(tmp_path, repo.path)
    journal_started(store, repo, Who.PERSON, deploy_bad(store, repo))
    with rollback.rollback_lock(config.state_dir):
        results = await rollback.resume_unfinished(
            config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0)
        )
    assert results == [] and [a.outcome for a in store.actions()] == ["started"]


async def test_killed_between_checkout_and_the_after_commands_then_resumed(
    repo: Repo, store: Store, tmp_path: Path, ctx_for: Any
) -> None:
    """A real process is killed -9 while its after command runs; the next start finishes it."""
    marker = tmp_path / "running.pid"
    stuck = sleeper(marker)
    config_path = tmp_path / "healer.toml"
    deploy_bad(store, repo)
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from healer import rollback
        from healer.checks import probe_context
        from healer.clock import SystemClock
        from healer.config import parse_config
        from healer.model import Who
        from healer.store import Store

        async def main():
            config = parse_config({{
                "state_dir": "state",
                "app": {{"repo": {str(repo.path)!r}}},
                "checks": [{{"name": "ok", "type": "command", "argv": ["true"]}}],
                "rollback": {{"after": [{stuck!r}]}},
            }}, Path({str(config_path)!r}))
            store = Store(Path({str(store.path)!r}))
            async with probe_context(config) as ctx:
                await rollback.run_rollback(config=config, ctx=ctx, store=store,
                                            clock=SystemClock(), who=Who.LOOP, mark_bad=True, reason="failing")

        asyncio.run(main())
    """)
    child = subprocess.Popen([PY, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() or not marker.read_text():
            assert child.poll() is None, "the rollback process ended early"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    os.kill(int(marker.read_text()), signal.SIGKILL)  # its own session outlived healer
    assert repo.head == repo.c2
    assert [a.outcome for a in store.actions()] == ["started"]

    out = tmp_path / "out.txt"
    config = make_config(tmp_path, repo.path, after=[recorder(out, "resumed")])
    results = await rollback.resume_unfinished(
        config=config, ctx=await ctx_for(config), store=store, clock=FakeClock(T0)
    )
    assert [r.ok for r in results] == [True]
    assert out.read_text().splitlines() == [f"resumed {repo.path} stable-2"]
    assert rows(store) == [("rollback", "stable-2", "loop", "ok")]
    new = store.current_deploy()
    assert new is not None and new.commit == repo.c2 and new.via_rollback
    assert store.unfinished_actions() == []


# ---- healer's own stable tags ------------------------------------------------------------------


def healthy_cycle(store: Store, deploy_id: int, at: datetime, ok: bool = True) -> None:
    result = CheckResult(name="ok", type="command", ok=ok)
    store.record_cycle(deploy_id, Verdict(at=at, results=(result,)), Who.LOOP, None)


async def test_maybe_tag_stable_tags_after_tag_stable_after_and_never_twice(
    repo: Repo, store: Store, tmp_path: Path
) -> None:
    """Healthy for 6h of watching: an annotated tag that says why; not before, not again."""
    config = make_config(tmp_path, repo.path)
    clock = FakeClock(T0)
    d, _ = store.ensure_deploy(repo.bad, clock.now())
    healthy_cycle(store, d.id, clock.now())
    assert await rollback.maybe_tag_stable(config=config, store=store, clock=clock) is None

    clock.advance(timedelta(hours=5, minutes=59))
    healthy_cycle(store, d.id, clock.now())
    assert await rollback.maybe_tag_stable(config=config, store=store, clock=clock) is None

    clock.advance(timedelta(minutes=1))
    healthy_cycle(store, d.id, clock.now())
    name = await rollback.maybe_tag_stable(config=config, store=store, clock=clock)
    assert name == f"stable-healer-20260101-180000-{repo.bad[:7]}"
    assert git(repo.path, "rev-parse", f"{name}^{{commit}}") == repo.bad
    assert git(repo.path, "cat-file", "-t", name) == "tag"
    message = git(repo.path, "tag", "-l", "--format=%(contents)", name)
    assert "healthy for 6h" in message and "none failing" in message
    assert gitrepo.stable_tags(repo.path, "stable-*")[0].name == name
    current = store.current_deploy()
    assert current is not None and current.stable_tag == name
    assert rows(store) == [("tag", name, "loop", "ok")]

    clock.advance(timedelta(hours=1))
    healthy_cycle(store, d.id, clock.now())
    assert await rollback.maybe_tag_stable(config=config, store=store, clock=clock) is None
    assert len(store.actions()) == 1


async def test_maybe_tag_stable_tags_a_deploy_whose_blip_resolved(repo: Repo, store: Store, tmp_path: Path) -> None:
    """A failing cycle while the deploy restarted the app, then passing ones: tagged all the same."""
    config = make_config(tmp_path, repo.path)
    clock = FakeClock(T0)
    d, _ = store.ensure_deploy(repo.bad, clock.now())
    healthy_cycle(store, d.id, T0, ok=False)
    for hours in (1, 6):
        healthy_cycle(store, d.id, T0 + timedelta(hours=hours))
    clock.advance(timedelta(hours=6))
    name = await rollback.maybe_tag_stable(config=config, store=store, clock=clock)
    assert name == f"stable-healer-20260101-180000-{repo.bad[:7]}"
    message = git(repo.path, "tag", "-l", "--format=%(contents)", name)
    assert "3 cycles, 1 failing, no incident open, the last 2 passing" in message


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param("failing-cycle", id="failing-now"),
        pytest.param("bad", id="known-bad"),
        pytest.param("held", id="held"),
        pytest.param("no-cycles", id="never-watched"),
        pytest.param("glob-without-star", id="glob-without-star"),
        pytest.param("already-tagged", id="already-tagged-by-people"),
    ],
)
async def test_maybe_tag_stable_leaves_alone_a_deploy_that_does_not_qualify(
    repo: Repo, store: Store, tmp_path: Path, spoil: str
) -> None:
    """No tag for a deploy failing now, known bad, held, unwatched, or tagged."""
    config = make_config(tmp_path, repo.path)
    clock = FakeClock(T0)
    d, _ = store.ensure_deploy(repo.bad, clock.now())
    clock.advance(timedelta(hours=7))
    if spoil != "no-cycles":
        healthy_cycle(store, d.id, T0 + timedelta(hours=1))
        healthy_cycle(store, d.id, clock.now(), ok=spoil != "failing-cycle")
    if spoil == "bad":
        store.mark_bad(repo.bad, "x", T0)
    if spoil == "held":
        store.set_held(d.id, "waiting for a person")
    if spoil == "glob-without-star":
        data = config.model_dump(exclude={"path"})
        config = parse_config(
            {"state_dir": "state", "app": {"repo": str(repo.path), "stable_tags": "stable"},
             "checks": data["checks"]},
            tmp_path / "healer.toml",
        )  # fmt: skip
    if spoil == "already-tagged":
        git(repo.path, "tag", "stable-3")
    tags_before = git(repo.path, "tag", "-l")
    assert await rollback.maybe_tag_stable(config=config, store=store, clock=clock) is None
    assert git(repo.path, "tag", "-l") == tags_before
    assert [a for a in store.actions() if a.kind == "tag"] == []
    if spoil == "already-tagged":
        current = store.current_deploy()
        assert current is not None and current.stable_tag == "stable-3"


def test_the_state_database_is_the_one_the_after_command_reads(store: Store) -> None:
    """Sanity: the journal probe reads the same file the store writes."""
    store.start_action(kind="rollback", name="x", who=Who.LOOP, reason="r", now=T0, deploy_id=None)
    with sqlite3.connect(store.path) as c:
        assert c.execute("SELECT outcome FROM actions").fetchall() == [(str(Outcome.STARTED),)]
