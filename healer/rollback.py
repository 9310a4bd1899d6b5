"""Carrying out a rollback to a stable git tag, and healer's own stable tags (I/O).

What to do is decided elsewhere, purely: the plan by rollback_plan.plan(), what follows the
outcome (alerts, a hold) by aftermath.follow_up(), when to tag by stable. This module reads the
work tree and the store, locks, journals, runs the commands and verifies.

A rollback is one at a time (a lock file), journaled before it touches anything, and verified by
re-running every check. The commit it leaves is remembered as bad when the loop suspects the
deploy, or when a person passes --mark-bad. The rolled-back commit starts its own launch window,
so an automatic rollback happens at most once per deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from healer import gitrepo, runner, stable
from healer.aftermath import Ending, RollbackResult
from healer.config import Config, format_duration, format_elapsed
from healer.errors import GitError, HealerError, LockedError, StoreError
from healer.files import open_private, private_dir
from healer.locks import PEEKED, FileLock
from healer.model import CheckResult, Outcome, TagInfo, Verdict, Who, short
from healer.rollback_plan import (
    VERIFY_TRIES,
    Plan,
    RepoState,
    describe,
    eligible,
    hidden,
    one_line,
    pick_target,
    plan,
    plan_from,
)

if TYPE_CHECKING:
    from healer.checks import ProbeContext
    from healer.clock import Clock
    from healer.store import ActionRow, Store

log = logging.getLogger(__name__)

LOCK_NAME = "rollback.lock"  # in the state dir; holds the PID of the process rolling back
_MIN_VERIFY_PAUSE = timedelta(seconds=1)

# Runs one `after` command (argv[2:]) as its child and leads its process group, so that how
# the command ended is known even when healer is gone (kill -9): it writes the exit status
# (negative: the signal) to the file argv[1], then ends the same way. A signal to the group
# reaches the command itself; the wrapper only waits for it.
_AFTER_WRAPPER = """\
import os, signal, subprocess, sys
status, argv = sys.argv[1], sys.argv[2:]
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda *_: None)
try:
    rc = subprocess.Popen(argv).wait()
except OSError as e:
    print(f"cannot run {argv[0]!r}: {e.strerror}", file=sys.stderr, flush=True)
    rc = 127
with open(status + ".tmp", "w") as f:
    f.write(f"{rc}\\n")
os.replace(status + ".tmp", status)
if rc < 0:
    try:
        signal.signal(-rc, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -rc)
sys.exit(rc if rc >= 0 else 128 - rc)
"""


# ---- reading the world -----------------------------------------------------------------------


def _read_state(config: Config, store: Store, to: str | None) -> RepoState:
    """HEAD, the work tree, the stable tags and the known-bad commits (blocking: run in a thread).
    An unknown `to` raises GitError before anything else happens."""
    repo = config.app.repo
    current = store.current_deploy()
    deployed = current.commit if current else None
    bad = store.bad_commits()
    if repo is None:
        return RepoState(repo=None, head=gitrepo.NO_REPO, bad=bad, deployed=deployed, to=to)
    to_commit = gitrepo.resolve(repo, to) if to is not None else None
    state = RepoState(
        repo=repo,
        head=gitrepo.head_commit(repo),
        branch=gitrepo.current_branch(repo),
        changed=tuple(gitrepo.changed_files(repo)),
        tags=tuple(gitrepo.stable_tags(repo, config.app.stable_tags)),
        bad=bad,
        deployed=deployed,
        to=to,
        to_commit=to_commit,
    )
    subjects = {state.head: gitrepo.subject(repo, state.head)}
    target = pick_target(state)
    if target is not None:
        _, commit = target
        subjects[commit] = gitrepo.subject(repo, commit)
    return replace(state, subjects=subjects)


def candidates(config: Config, store: Store) -> list[TagInfo]:
    """The stable tags a rollback may go to, newest first: never the commit checked out or
    deployed, never a known-bad one. Blocking: the loop calls it through `asyncio.to_thread`."""
    return listing(config, store)[0]


def listing(config: Config, store: Store) -> tuple[list[TagInfo], list[str]]:
    """For `healer rollback --list`: the candidates, and why each other stable tag is hidden
    (see hidden()). Blocking."""
    repo = config.app.repo
    if repo is None:
        return [], []
    current = store.current_deploy()
    tags = gitrepo.stable_tags(repo, config.app.stable_tags)
    head, deployed, bad = gitrepo.head_commit(repo), current.commit if current else None, store.bad_commits()
    return eligible(tags, head=head, deployed=deployed, bad=bad), hidden(tags, head=head, deployed=deployed, bad=bad)


def has_target(config: Config, store: Store) -> bool:
    """Whether a stable tag (not the deployed commit, not a known-bad one) exists. Blocking.

    When the repository cannot be read this says True: the rollback attempt then fails with
    git's own reason, recorded and held for a person, which says more than "no stable tag".
    """
    try:
        return bool(candidates(config, store))
    except GitError as e:
        log.warning("rollback.target_unknown error=%s", e)
        return config.app.repo is not None


# ---- the lock --------------------------------------------------------------------------------


def rollback_lock(state_dir: Path) -> FileLock:
    """`<state_dir>/rollback.lock`: one rollback at a time; LockedError names the holder's PID.
    The watcher peeks at it (healer/watch.py): that instant is waited out."""
    return FileLock(state_dir / LOCK_NAME, "rollback", patience=PEEKED)


# ---- carrying it out -------------------------------------------------------------------------


async def run_rollback(
    *,
    config: Config,
    ctx: ProbeContext,
    store: Store,
    clock: Clock,
    who: Who | str,
    reason: str,
    to: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    mark_bad: bool = False,
    on_start: Callable[[Plan], Awaitable[None]] | None = None,
) -> RollbackResult:
    """Roll back to `to` or the newest stable tag; one at a time, journaled, verified.

    1. Take the rollback lock, so the loop and a person never roll back at once (LockedError
       names the holder, and nothing has been said or done).
    2. Read HEAD, the work tree, the stable tags and the known-bad commits, and plan. A refused
       plan is recorded (outcome error). An unknown `to` raises GitError.
    3. `on_start(plan)` announces the rollback: only now, under the lock, so that the loser of
       a race for the lock, or a refused plan, never tells chat of a rollback that is not
       happening. Then journal the intent (outcome started) before touching anything.
    4. With --force, stash the local changes to tracked files.
    5. Check out the target, detached.
    6. Mark the from-commit bad (when asked: `mark_bad`) and start the new HEAD's launch window (via_rollback for the
       loop): done at once after the checkout, so that a kill later never leaves a moved HEAD
       that the loop would take for a fresh deploy and roll back again.
    7. Run the `[rollback] after` commands in order in the work tree, each within
       `command_timeout`; the first that fails stops the rollback. The journal follows them
       (which one runs, in which process group; how many are done). healer's stop signal
       is not passed on to them: the stop waits for them (loop.STOP_ACTION_WAIT).
    8. After `verify_grace`, re-run all checks, up to VERIFY_TRIES times, until they pass.
    9. Record the outcome. What follows it (the alerts, a hold for a person) is the caller's:
       aftermath.follow_up(result).

    A dry run does step 2 only: nothing is locked, changed or recorded, and the result's detail
    is describe(plan).
    """
    if dry_run:
        state = await asyncio.to_thread(_read_state, config, store, to)
        p = plan(state, config, who=who, reason=reason, force=force, mark_bad=mark_bad)
        return RollbackResult(
            ok=p.ok, from_commit=p.from_commit, to_ref=p.to_ref, to_commit=p.to_commit,
            detail=describe(p), changed=False, who=who, ending=Ending.PLANNED, refused=p.refused or None, plan=p,
        )  # fmt: skip
    with rollback_lock(config.state_dir):
        try:
            state = await asyncio.to_thread(_read_state, config, store, to)
        except GitError as e:
            if who is not Who.LOOP or to is not None:
                raise  # a person sees git's reason at once (exit 2)
            return await _refused(store, clock, who, reason, f"cannot read the repository: {e}")
        p = plan(state, config, who=who, reason=reason, force=force, mark_bad=mark_bad)
        if not p.ok:
            return await _refused(store, clock, who, reason, p.refused, p)
        if on_start is not None:
            await on_start(p)
        return await _execute(p, config=config, ctx=ctx, store=store, clock=clock)


async def _refused(
    store: Store, clock: Clock, who: Who | str, reason: str, why: str, p: Plan | None = None
) -> RollbackResult:
    """Record a rollback that did not run."""
    log.warning("rollback.refused who=%s reason=%s", who, why)
    current = await asyncio.to_thread(store.current_deploy)
    action_id = await asyncio.to_thread(
        lambda: store.start_action(
            kind="rollback", name=(p.to_ref if p else "") or "-", who=who, reason=reason,
            now=clock.now(), deploy_id=current.id if current else None,
            incident_id=current.open_incident if current else None, outcome=Outcome.ERROR,
            detail=f"refused: {why}",
        )
    )  # fmt: skip
    return RollbackResult(
        ok=False, from_commit=p.from_commit if p else "", to_ref=p.to_ref if p else "",
        to_commit=p.to_commit if p else "", detail=f"refused: {why}", changed=False, who=who,
        ending=Ending.REFUSED, why=why, refused=why, action_id=action_id,
        deploy_id=current.id if current else None, plan=p,
    )  # fmt: skip


def _journal(p: Plan, *, done: int = 0, running: tuple[int, int] | None = None) -> str:
    """The journal row's detail while the rollback runs: what it does, and how far the `after`
    commands got (`done` of them finished; `running` = (n, process group) of the one running),
    so that a resume never runs a command again beside what an interrupted run left running."""
    data: dict[str, object] = {
        "from": p.from_commit, "to": p.to_ref, "to_commit": p.to_commit,
        "from_branch": p.from_branch, "mark_bad": p.mark_bad, "commands": _digest(p.commands),
    }  # fmt: skip
    if done:
        data["done"] = done
    if running is not None:
        data["running"] = {"n": running[0], "pgid": running[1]}
    return json.dumps(data, sort_keys=True)


def _digest(commands: Sequence[Sequence[str]]) -> str:
    """A fingerprint of the `after` commands: a resume goes on where they left off only when
    healer.toml still has the same ones."""
    return hashlib.sha256(json.dumps([list(a) for a in commands]).encode()).hexdigest()[:16]


async def _write_journal(store: Store, action_id: int, detail: str) -> None:
    """Best effort: a journal that cannot be written only costs a resume its precision (it
    then runs the commands again from the first), never the rollback in progress."""
    try:
        await asyncio.to_thread(store.journal, action_id, detail)
    except StoreError as e:
        log.warning("rollback.journal_error action=%d error=%s", action_id, e)


async def _execute(p: Plan, *, config: Config, ctx: ProbeContext, store: Store, clock: Clock) -> RollbackResult:
    repo = p.repo
    assert repo is not None  # plan() refuses without a repo
    current = await asyncio.to_thread(store.current_deploy)
    action_id = await asyncio.to_thread(
        lambda: store.start_action(
            kind="rollback", name=p.to_ref, who=p.who, reason=p.reason, now=clock.now(),
            deploy_id=current.id if current else None,
            incident_id=current.open_incident if current else None, detail=_journal(p),
        )
    )  # fmt: skip
    log.info(
        "rollback.started who=%s from=%s to=%s commit=%s",
        p.who,
        short(p.from_commit),
        p.to_ref,
        short(p.to_commit),
    )
    head = f"{p.to_ref} ({short(p.to_commit)}) from {short(p.from_commit)}"
    try:
        notes: list[str] = []
        try:
            if p.stash:
                sha = await asyncio.to_thread(
                    gitrepo.stash, repo, f"healer: local changes before rollback to {p.to_ref}"
                )
                if sha:
                    notes.append(f"local changes stashed as {short(sha)} (git stash pop)")
            await asyncio.to_thread(gitrepo.checkout, repo, p.to_commit)
        except GitError as e:
            now_head = await asyncio.to_thread(_head_or_none, repo)
            moved = now_head is not None and now_head != p.from_commit
            why = f"{head}: {e}; HEAD {'moved' if moved else 'still at ' + short(p.from_commit)}"
            deploy_id = current.id if current else None
            detail = "; ".join([why, *notes])
            return await _finish_unmoved(p, store, clock, action_id, deploy_id, detail)
        return await _after_checkout(
            p, config=config, ctx=ctx, store=store, clock=clock, action_id=action_id,
            prefix="; ".join([head, *notes]),
        )  # fmt: skip
    except (HealerError, OSError) as e:
        await asyncio.to_thread(store.finish_action, action_id, Outcome.ERROR, clock.now(), one_line(f"{head}: {e}"))
        raise


def _head_or_none(repo: Path) -> str | None:
    try:
        return gitrepo.head_commit(repo)
    except GitError:
        return None


async def _finish_unmoved(
    p: Plan, store: Store, clock: Clock, action_id: int, deploy_id: int | None, detail: str
) -> RollbackResult:
    """The rollback failed before HEAD moved: record it."""
    detail = one_line(detail)
    await asyncio.to_thread(store.finish_action, action_id, Outcome.FAILED, clock.now(), detail)
    log.error("rollback.failed detail=%s", detail)
    return RollbackResult(
        ok=False, from_commit=p.from_commit, to_ref=p.to_ref, to_commit=p.to_commit, detail=detail,
        changed=False, who=p.who, ending=Ending.NOT_CHECKED_OUT, why=detail, action_id=action_id,
        deploy_id=deploy_id, plan=p,
    )  # fmt: skip


async def _after_checkout(
    p: Plan,
    *,
    config: Config,
    ctx: ProbeContext,
    store: Store,
    clock: Clock,
    action_id: int,
    prefix: str,
    first: int = 0,
) -> RollbackResult:
    """Steps 6 to 9: HEAD is at the target. The `after` commands start after the `first` ones
    (done by an interrupted run)."""
    repo = p.repo
    assert repo is not None
    now = clock.now()
    if p.mark_bad:
        by = "automatically" if p.who is Who.LOOP else "by a person"
        await asyncio.to_thread(
            store.mark_bad, p.from_commit, one_line(f"rolled back {by} to {p.to_ref}: {p.reason}"), now
        )
    deploy, _ = await asyncio.to_thread(lambda: store.ensure_deploy(p.to_commit, now, via_rollback=p.who is Who.LOOP))
    log_path = config.state_dir / f"rollback-{action_id}.log"
    ok, why = await _run_commands(p, repo, log_path, config, store=store, action_id=action_id, first=first)
    commands_failed = not ok
    results: tuple[CheckResult, ...] = ()
    if ok:
        ran = why if p.restart else ""  # say that healer restarted the app itself
        ok, results, why = await _verify(ctx, clock, p.verify_grace)
        why = f"{ran}; {why}" if ran else why
        await asyncio.to_thread(store.record_cycle, deploy.id, Verdict(at=clock.now(), results=results), p.who, None)
    detail = one_line(f"{prefix}: {why}")
    await asyncio.to_thread(store.finish_action, action_id, Outcome.OK if ok else Outcome.FAILED, clock.now(), detail)
    (log.info if ok else log.error)("rollback.%s detail=%s", "ok" if ok else "failed", detail)
    return RollbackResult(
        ok=ok, from_commit=p.from_commit, to_ref=p.to_ref, to_commit=p.to_commit, detail=detail,
        changed=True, who=p.who, ending=Ending.CHECKED_OUT, why=why, action_id=action_id,
        deploy_id=deploy.id, results=results, plan=p, commands_failed=commands_failed,
    )  # fmt: skip


async def _run_commands(
    p: Plan, repo: Path, log_path: Path, config: Config, *, store: Store, action_id: int, first: int = 0
) -> tuple[bool, str]:
    """Run the `after` commands in order in the work tree, from the one after `first`; the
    first failure stops them. Their output goes to `log_path` (a file, not a pipe: a restart
    that leaves a daemon holding its stdout must not keep healer waiting). The journal says
    which command runs, with its process group, and how many are done. With none, restart the
    app through [process] (the rolled-back code is not running until something starts it)."""
    if not p.commands:
        return await _restart_app(config) if p.restart else (True, "no after commands")
    env = {
        **os.environ,
        "HEALER_ROLLBACK_FROM": p.from_commit,
        "HEALER_ROLLBACK_TO": p.to_ref,
        "HEALER_ROLLBACK_TO_COMMIT": p.to_commit,
        "HEALER_WHO": str(p.who),
    }
    private_dir(log_path.parent)
    with open_private(log_path, "ab") as out:
        for i, argv in enumerate(p.commands, 1):
            if i <= first:
                continue
            shown = shlex.join(argv)
            out.write(f"$ {shown}\n".encode())
            out.flush()

            async def running(pgid: int, n: int = i) -> None:
                await _write_journal(store, action_id, _journal(p, done=n - 1, running=(n, pgid)))

            status = _status_path(config.state_dir, action_id, i)
            failure = await _run_command(argv, repo, p.command_timeout, env, out, status=status, on_start=running)
            status.unlink(missing_ok=True)
            if failure is not None:
                why, tail = failure
                msg = f"after command {i} `{shown}` {why}" + (f": {tail}" if tail else "")
                return False, f"{msg} (output in {log_path})"
            await _write_journal(store, action_id, _journal(p, done=i))
            log.info("rollback.command_ok n=%d argv=%s", i, shown)
    if first:
        return True, f"after commands {first + 1}-{len(p.commands)} of {len(p.commands)} ok"
    return True, f"{len(p.commands)} after command(s) ok"


def _status_path(state_dir: Path, action_id: int, n: int) -> Path:
    """Where the wrapper of rollback `action_id`'s after command `n` writes its exit status."""
    return state_dir / f"rollback-{action_id}.{n}.status"


async def _run_command(
    argv: Sequence[str], cwd: Path, timeout: timedelta, env: Mapping[str, str], out: BinaryIO, *,
    status: Path, on_start: Callable[[int], Awaitable[None]],
) -> tuple[str, str] | None:  # fmt: skip
    """Run one command through healer's runner, under the wrapper that writes its exit status
    to `status`; None when it exits 0, else (what went wrong, its last line of output).
    `on_start(pgid)` is awaited once it runs. On a timeout (or when the rollback is cancelled)
    its whole process group is killed. The tail of its output (the last 64 KiB, redacted) is
    written to `out` when it ends."""
    cannot = _cannot_run(argv[0], cwd, env)
    if cannot is not None:
        return cannot, ""
    wrapped = [sys.executable, "-I", "-c", _AFTER_WRAPPER, str(status), *argv]
    try:
        done = await runner.run(wrapped, timeout=timeout, cwd=cwd, env=env, on_start=on_start)
    except FileNotFoundError:
        return f"cannot run: {argv[0]!r} not found", ""
    except PermissionError:
        return f"cannot run: {argv[0]!r} is not executable", ""
    except OSError as e:
        return f"cannot run: {e.strerror}", ""
    if done.truncated:
        out.write(b"[earlier output not kept]\n")
    out.write(done.output.encode())
    out.flush()
    if done.timed_out:
        return f"timed out after {format_duration(timeout)} (killed)", done.last_line()
    if done.returncode < 0:
        return f"was killed by signal {-done.returncode}", done.last_line()
    return None if done.returncode == 0 else (f"exited {done.returncode}", done.last_line())


async def _restart_app(config: Config) -> tuple[bool, str]:
    """The process-restart playbook's action, as a step of the rollback: (ok, what happened)."""
    from healer.actions import process  # psutil and the managers: only when a rollback restarts
    from healer.actions.process import ProcessRestartStep

    step = ProcessRestartStep(action="process.restart")
    try:
        async with asyncio.timeout(step.timeout.total_seconds()):
            line = await process.restart(step, config)
    except TimeoutError:
        return False, f"the restart through [process] timed out after {format_duration(step.timeout)}"
    except HealerError as e:
        return False, f"the restart through [process] failed: {e}"
    log.info("rollback.restarted detail=%s", line)
    return True, f"restarted the app: {line}"


def _cannot_run(exe: str, cwd: Path, env: Mapping[str, str]) -> str | None:
    """Why `exe` cannot be started from `cwd`, as the runner would say it (None: it can). Asked
    before the wrapper starts it, which would otherwise only report exit 127."""
    if "/" in exe:
        path = cwd / exe
        if not path.exists():
            return f"cannot run: {exe!r} not found"
        if path.is_dir() or not os.access(path, os.X_OK):
            return f"cannot run: {exe!r} is not executable"
        return None
    if shutil.which(exe, path=env.get("PATH", os.defpath)) is None:
        return f"cannot run: {exe!r} not found"
    return None


async def _end_left_behind(pgid: int, timeout: timedelta) -> str:
    """Let process group `pgid`, which an interrupted run left running, end within `timeout`
    (runner.outlast kills it past that). Returns what happened ("" when nothing was left)."""
    ended = await runner.outlast(pgid, timeout)
    if ended is None:
        return ""
    if ended.killed:
        return (
            f"killed process group {pgid}, which the interrupted run left running, after waiting "
            f"{format_duration(timeout)} for it"
        )
    return f"waited {format_elapsed(ended.waited)} for process group {pgid}, which the interrupted run left running"


async def _verify(ctx: ProbeContext, clock: Clock, grace: timedelta) -> tuple[bool, tuple[CheckResult, ...], str]:
    """Re-run every check after `grace`, up to VERIFY_TRIES times, until all pass."""
    from healer.checks import run_checks  # the shell's probes; plan() and describe() stay pure

    results: tuple[CheckResult, ...] = ()
    pause = max(grace, _MIN_VERIFY_PAUSE)
    for attempt in range(1, VERIFY_TRIES + 1):
        await clock.sleep(grace if attempt == 1 else pause)
        results = await run_checks(ctx)
        if all(r.ok for r in results):
            return True, results, f"healthy ({len(results)} check{'' if len(results) == 1 else 's'}, try {attempt})"
    verdict = Verdict(at=clock.now(), results=results)
    return False, results, f"still unhealthy after {VERIFY_TRIES} tries: {verdict.summary()}"


# ---- after a kill ----------------------------------------------------------------------------


async def resume_unfinished(*, config: Config, ctx: ProbeContext, store: Store, clock: Clock) -> list[RollbackResult]:
    """Finish or report the rollbacks a kill interrupted (journal rows still `started`).

    Under the rollback lock: when another process holds it, its rollback is alive, not
    interrupted, and nothing is done here. For the newest interrupted rollback:
    - HEAD at the target: the checkout happened. The remaining steps run: the from-commit is
      marked bad, the new window started, the after commands run from the first one the
      journal does not show finished (they are meant to be repeatable: install, migrate,
      restart; a command an interrupted run left running is waited for first, see _take_up),
      the checks verify, the outcome is recorded ("interrupted after checkout; resumed ...").
    - HEAD still at the from-commit: recorded as failed, "interrupted before checkout"; not
      retried here (the loop decides again from fresh cycles; a person can re-run it).
    - HEAD elsewhere: someone moved it since; recorded as an error and left alone.
    Older interrupted rows are closed as superseded. Nothing is ever left half-done silently.
    """
    rows = [r for r in await asyncio.to_thread(store.unfinished_actions) if r.kind == "rollback"]
    if not rows:
        return []
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(rollback_lock(config.state_dir))
        except LockedError as e:
            log.info("rollback.resume_skipped reason=%s", e)
            return []
        for row in rows[:-1]:
            await asyncio.to_thread(
                store.finish_action, row.id, Outcome.FAILED, clock.now(),
                "interrupted; superseded by a later rollback",
            )  # fmt: skip
        return [await _resume_one(rows[-1], config=config, ctx=ctx, store=store, clock=clock)]
    return []  # not reached: mypy cannot see that ExitStack does not swallow exceptions


async def _resume_one(
    row: ActionRow, *, config: Config, ctx: ProbeContext, store: Store, clock: Clock
) -> RollbackResult:
    try:
        j = json.loads(row.detail)
        from_commit, to_ref, to_commit = str(j["from"]), str(j["to"]), str(j["to_commit"])
        from_branch = j.get("from_branch")
        mark_bad = bool(j.get("mark_bad", True))
    except (ValueError, KeyError, TypeError):
        why = "interrupted; the journal entry is unreadable"
        return await _close(row, store, clock, Outcome.ERROR, why)
    # whatever happens next, what the interrupted run left running ends first
    first, found = await _take_up(row.id, j, config)
    head_line = "; ".join([f"{to_ref} ({short(to_commit)}) from {short(from_commit)}", *found])
    repo = config.app.repo
    if repo is None:
        why = f"{head_line}: interrupted; [app] repo is no longer set"
        return await _close(row, store, clock, Outcome.ERROR, why)
    try:
        head = await asyncio.to_thread(gitrepo.head_commit, repo)
    except GitError as e:
        return await _close(row, store, clock, Outcome.ERROR, f"{head_line}: interrupted; {e}")
    if head == from_commit:
        return await _close(
            row, store, clock, Outcome.FAILED,
            f"{head_line}: interrupted before checkout; HEAD still at {short(from_commit)}, "
            "nothing changed; not retried automatically",
            from_commit=from_commit, to_ref=to_ref, to_commit=to_commit,
        )  # fmt: skip
    if head != to_commit:
        return await _close(
            row, store, clock, Outcome.ERROR,
            f"{head_line}: interrupted; HEAD is now {short(head)}, neither; left alone",
            from_commit=from_commit, to_ref=to_ref, to_commit=to_commit, changed=True,
        )  # fmt: skip
    p = plan_from(
        config, who=_who(row), reason=row.reason, repo=repo, from_commit=from_commit, from_branch=from_branch,
        to_ref=to_ref, to_commit=to_commit, mark_bad=mark_bad,
    )  # fmt: skip
    log.warning("rollback.resuming action=%d to=%s first=%d", row.id, to_ref, first)
    again = f"after commands from {first + 1} on" if first else "after commands re-run"
    return await _after_checkout(
        p, config=config, ctx=ctx, store=store, clock=clock, action_id=row.id,
        prefix=f"{head_line}: interrupted after checkout; resumed, {again}", first=first,
    )  # fmt: skip


async def _take_up(action_id: int, j: dict[str, Any], config: Config) -> tuple[int, list[str]]:
    """How many `after` commands an interrupted rollback finished, once what it left running has
    ended; and what was found, for the detail.

    1. The command journaled as running (with its process group) may still run: healer was
       killed, not the command. Wait for the group up to `command_timeout`, then kill it.
    2. Its wrapper's status file says how it ended: exit 0 counts it done; anything else, or no
       status (killed with its wrapper), has it run again.
    3. A journal from other `after` commands than healer.toml's now (or from an older healer)
       counts nothing done: the resume runs them all, from the first.
    """
    found: list[str] = []
    done = int(j.get("done", 0))
    running = j.get("running")
    if isinstance(running, dict):
        n, pgid = int(running.get("n", 0)), int(running.get("pgid", 0))
        left = await _end_left_behind(pgid, config.rollback.command_timeout)
        found += [left] if left else []
        status = _status_path(config.state_dir, action_id, n)
        try:
            code: int | None = int(status.read_text().strip())
        except (OSError, ValueError):
            code = None
        status.unlink(missing_ok=True)
        if code == 0:
            done = n
            found.append(f"after command {n} finished on its own (exit 0): not run again")
        else:
            how = "did not finish" if code is None else f"ended with {code}"
            found.append(f"after command {n} {how}: run again")
    if j.get("commands") != _digest(config.rollback.after):
        return 0, found
    return done, found


async def _close(
    row: ActionRow, store: Store, clock: Clock, outcome: Outcome, detail: str, *,
    from_commit: str = "", to_ref: str = "", to_commit: str = "", changed: bool = False,
) -> RollbackResult:  # fmt: skip
    await asyncio.to_thread(store.finish_action, row.id, outcome, clock.now(), one_line(detail))
    log.warning("rollback.interrupted action=%d detail=%s", row.id, detail)
    return RollbackResult(
        ok=False, from_commit=from_commit, to_ref=to_ref, to_commit=to_commit,
        detail=one_line(detail), changed=changed, who=_who(row), ending=Ending.RECORDED, action_id=row.id,
    )  # fmt: skip


def _who(row: ActionRow) -> Who:
    """Who asked for the interrupted rollback (a person, when the journal does not say)."""
    return Who(row.who) if row.who in {w.value for w in Who} else Who.PERSON


# ---- healer's own stable tags ----------------------------------------------------------------


async def maybe_tag_stable(*, config: Config, store: Store, clock: Clock) -> str | None:
    """Tag HEAD stable once the deploy has earned it (the rules: stable.may_qualify, then
    stable.has_earned over its cycles); returns the tag.

    1. Read the deploy and the known-bad commits; read its cycles only when it may qualify.
    2. HEAD moved since: nothing (the loop starts a new window first).
    3. A commit that already carries a tag matching the pattern is not tagged again: that tag
       is remembered instead.
    4. Create the annotated tag (stable.new_tag), remember it, and record it as the loop's action.
    Git errors propagate as GitError.
    """
    repo = config.app.repo
    now = clock.now()
    d = await asyncio.to_thread(store.current_deploy)
    if repo is None or d is None:
        return None
    if not stable.may_qualify(d, now=now, config=config):
        return None
    cycles = [stable.Cycle(at=c.at, ok=c.ok) for c in await asyncio.to_thread(lambda: store.cycles(deploy_id=d.id))]
    if not stable.has_earned(d, cycles, now=now, config=config):
        return None
    if await asyncio.to_thread(gitrepo.head_commit, repo) != d.commit:
        return None  # HEAD moved; the loop starts a new window first
    existing = await asyncio.to_thread(gitrepo.tags_at, repo, d.commit, config.app.stable_tags)
    if existing:
        await asyncio.to_thread(store.set_stable_tag, d.id, existing[0])
        return None
    tag = stable.new_tag(d, cycles, now=now, config=config)
    if tag is None:
        log.warning("rollback.tag_skipped pattern=%s reason=no tag name matches it", config.app.stable_tags)
        return None
    await asyncio.to_thread(lambda: gitrepo.create_tag(repo, tag.name, d.commit, tag.message, date=now))
    await asyncio.to_thread(store.set_stable_tag, d.id, tag.name)
    await asyncio.to_thread(
        lambda: store.start_action(
            kind="tag", name=tag.name, who=Who.LOOP, now=now, deploy_id=d.id, outcome=Outcome.OK,
            reason=tag.reason, detail=one_line(tag.message),
        )
    )  # fmt: skip
    log.info("rollback.tagged tag=%s commit=%s", tag.name, short(d.commit))
    return tag.name
