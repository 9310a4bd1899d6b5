"""Rolling back to a stable git tag: a pure plan(), its execution via gitrepo, and healer's own
stable tags (plan, describe and eligible are pure; the rest does I/O).

A rollback is one at a time (a lock file), journaled before it touches anything, and verified by
re-running every check. The commit it leaves is remembered as bad when the loop suspects the
deploy, or when a person passes --mark-bad. The rolled-back commit starts its own launch window,
so an automatic rollback happens at most once per deploy: when the rolled-back version is not
healthy either, the new deploy is held for a person.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fnmatch
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from healer import gitrepo, runner, stable
from healer.config import Config, format_duration, format_elapsed
from healer.errors import GitError, HealerError, LockedError, StoreError
from healer.files import open_private, private_dir
from healer.gitrepo import TagInfo, short
from healer.locks import FileLock
from healer.model import CheckResult, Outcome, Verdict, Who

if TYPE_CHECKING:
    from healer.checks import ProbeContext
    from healer.clock import Clock
    from healer.store import ActionRow, Store

log = logging.getLogger(__name__)

LOCK_NAME = "rollback.lock"  # in the state dir; holds the PID of the process rolling back
VERIFY_TRIES = 3  # checks re-run after a rollback until they pass, `verify_grace` apart
_MIN_VERIFY_PAUSE = timedelta(seconds=1)
_LINE_MAX = 200
_FILES_SHOWN = 5

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


class Refusal(enum.StrEnum):
    """Why a rollback will not run."""

    NO_REPO = "no-repo"  # [app] repo is not set: no work tree to roll back
    NO_TARGET = "no-target"  # no stable tag other than the deployed commit and known-bad ones
    SAME_COMMIT = "same-commit"  # the target is the commit already checked out
    KNOWN_BAD = "known-bad"  # the target is a known-bad commit (--force overrides an explicit --to)
    DIRTY = "dirty"  # tracked files have local changes (--force stashes them first)


@dataclass(frozen=True, slots=True)
class RepoState:
    """What plan() looks at, read from the work tree and the store."""

    repo: Path | None
    head: str
    branch: str | None = None  # the branch HEAD is on, None when detached
    changed: tuple[str, ...] = ()  # tracked files with local changes
    tags: tuple[TagInfo, ...] = ()  # the stable tags, newest first
    bad: Mapping[str, str] = field(default_factory=dict)  # known-bad commit -> why
    deployed: str | None = None  # the commit of the deploy the store is watching
    to: str | None = None  # the ref a person asked for
    to_commit: str | None = None  # ... and the commit it names
    subjects: Mapping[str, str] = field(default_factory=dict)  # commit -> first message line


@dataclass(frozen=True, slots=True)
class Plan:
    """A rollback worked out in advance: what it moves, what it runs, or why it will not."""

    who: Who
    reason: str
    repo: Path | None
    from_commit: str
    from_branch: str | None
    to_ref: str  # the tag, or the ref a person gave; "" when there is no target
    to_commit: str  # "" when there is no target
    commands: tuple[tuple[str, ...], ...]
    command_timeout: timedelta
    verify_grace: timedelta
    checks: tuple[str, ...]  # the checks that verify it: all of them
    mark_bad: bool  # the from-commit becomes known bad
    restart: bool = False  # no `after` commands: restart the app through [process] instead
    stash: tuple[str, ...] = ()  # files with local changes that --force stashes first
    refusal: Refusal | None = None
    refused: str = ""  # one line for people when refused
    warnings: tuple[str, ...] = ()
    from_subject: str = ""
    to_subject: str = ""

    @property
    def ok(self) -> bool:
        """Whether the rollback may go ahead."""
        return self.refusal is None


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """How a rollback ended; `ok` means the target is checked out and healthy (for a dry run:
    that it would go ahead)."""

    ok: bool
    from_commit: str
    to_ref: str
    to_commit: str
    detail: str
    changed: bool  # HEAD moved
    refused: str | None = None  # why it did not run at all
    action_id: int | None = None  # the journal row
    deploy_id: int | None = None  # the deploy window of the new HEAD
    held: bool = False  # the loop stopped acting and waits for a person
    results: tuple[CheckResult, ...] = ()  # the last verification
    plan: Plan | None = None
    commands_failed: bool = False  # an `after` command (or the restart) failed: never verified


# ---- the pure part ---------------------------------------------------------------------------


def eligible(tags: Sequence[TagInfo], *, head: str, deployed: str | None, bad: Mapping[str, str]) -> list[TagInfo]:
    """The stable tags a rollback may go to, newest first: never the commit checked out or
    deployed, never a known-bad one."""
    here = {head, deployed}
    return [t for t in tags if t.commit not in here and t.commit not in bad]


def hidden(tags: Sequence[TagInfo], *, head: str, deployed: str | None, bad: Mapping[str, str]) -> list[str]:
    """Why each stable tag that eligible() leaves out is not a target, one line each, newest
    first: the commit checked out, the deployed commit, or a known-bad one (which --force
    reaches through an explicit --to)."""
    lines = []
    for t in tags:
        if t.commit == head:
            lines.append(f"{t.name} is the commit checked out: not a target")
        elif t.commit == deployed:
            lines.append(f"{t.name} is the deployed commit: not a target")
        elif t.commit in bad:
            lines.append(
                f"{t.name} ({short(t.commit)}) is known bad: {bad[t.commit]}; not a target "
                f"(`healer rollback --to {t.name} --force` goes there anyway)"
            )
    return lines


def pick_target(state: RepoState) -> tuple[str, str] | None:
    """(ref, commit) to roll back to: the ref asked for, else the newest eligible stable tag."""
    if state.to is not None:
        return (state.to, state.to_commit) if state.to_commit else None
    for t in eligible(state.tags, head=state.head, deployed=state.deployed, bad=state.bad):
        return t.name, t.commit
    return None


def plan(
    state: RepoState, config: Config, *, who: Who, reason: str, force: bool = False, mark_bad: bool = False
) -> Plan:
    """Work out a rollback from `state`, or why it is refused.

    1. The target is the ref asked for, else the newest stable tag whose commit is neither
       checked out, nor deployed, nor known bad. None: refused.
    2. A target that is the commit already checked out is refused: there is nothing to undo.
    3. A known-bad target is refused; a person's --force overrides this for an explicit --to
       (an undo of a rollback goes back to the commit it left, which is marked bad).
    4. Local changes to tracked files are refused; --force stashes them first.
    5. The from-commit is marked bad only when asked (`mark_bad`): by the loop when the deploy
       is the suspect, by a person with --mark-bad. A person's rollback condemns nothing by
       default: they may be moving back for a reason that is not the release's fault.
    6. With no `[rollback] after` commands, the app is restarted through `[process]`, so that
       it runs the rolled-back code.
    """
    target = pick_target(state) if state.repo is not None else None
    to_ref, to_commit = target or (state.to or "", state.to_commit or "")
    base = Plan(
        who=who,
        reason=reason,
        repo=state.repo,
        from_commit=state.head,
        from_branch=state.branch,
        to_ref=to_ref,
        to_commit=to_commit,
        commands=tuple(tuple(argv) for argv in config.rollback.after),
        command_timeout=config.rollback.command_timeout,
        verify_grace=config.rollback.verify_grace,
        checks=tuple(c.name for c in config.checks),
        mark_bad=mark_bad,
        restart=not config.rollback.after and config.process is not None,
        from_subject=state.subjects.get(state.head, ""),
        to_subject=state.subjects.get(to_commit, "") if to_commit else "",
    )

    def refuse(why: Refusal, msg: str) -> Plan:
        return replace(base, refusal=why, refused=msg)

    if state.repo is None:
        return refuse(
            Refusal.NO_REPO,
            "no [app] repo in healer.toml: healer does not know which git work tree to roll back",
        )
    if target is None:
        return refuse(Refusal.NO_TARGET, _no_target(state, config.app.stable_tags))
    if to_commit == state.head:
        return refuse(
            Refusal.SAME_COMMIT,
            f"{to_ref} is {short(to_commit)}, the commit already checked out: nothing to roll back",
        )
    warnings: list[str] = []
    if to_commit in state.bad:
        msg = f"{to_ref} ({short(to_commit)}) is known bad: {state.bad[to_commit]}"
        if not (force and state.to is not None):
            return refuse(Refusal.KNOWN_BAD, f"{msg}; pass --force to check it out anyway")
        warnings.append(msg)
    if state.changed and not force:
        return refuse(
            Refusal.DIRTY,
            f"the work tree {state.repo} has local changes to {_files(state.changed)}; commit "
            "or stash them, or pass --force to have healer stash them (git stash pop brings them "
            "back)",
        )
    return replace(base, stash=state.changed if force else (), warnings=tuple(warnings))


def _no_target(state: RepoState, pattern: str) -> str:
    if not state.tags:
        return f"no stable tag to roll back to: no tag matches {pattern!r}"
    return (
        f"no stable tag to roll back to: the {len(state.tags)} tag(s) matching {pattern!r} mark "
        f"the deployed commit {short(state.head)} or known-bad ones"
    )


def _files(files: Sequence[str]) -> str:
    shown = ", ".join(files[:_FILES_SHOWN])
    more = f" and {len(files) - _FILES_SHOWN} more" if len(files) > _FILES_SHOWN else ""
    return f"{len(files)} tracked file(s) ({shown}{more})"


def describe(p: Plan) -> str:
    """The plan for people, one step a line: for the confirmation prompt and --dry-run."""
    by = "the loop" if p.who is Who.LOOP else "a person"
    lines = [f"Roll back {p.repo or '(no [app] repo)'} ({by}: {p.reason})"]
    branch = f", branch {p.from_branch}" if p.from_branch else ", detached"
    lines.append(f"  from  {short(p.from_commit)}  {_quote(p.from_subject)}(HEAD{branch})")
    if p.to_commit:
        lines.append(f"  to    {p.to_ref}  {short(p.to_commit)}  {_quote(p.to_subject)}".rstrip())
    lines += [f"  warning: {w}" for w in p.warnings]
    if not p.ok:
        lines.append(f"Refused: {p.refused}")
        return "\n".join(lines)
    steps: list[str] = []
    if p.stash:
        steps.append(f"stash the local changes to {_files(p.stash)} (git stash pop restores them)")
    steps.append(f"check out {short(p.to_commit)} (detached HEAD)")
    if p.mark_bad:
        steps.append(f"mark {short(p.from_commit)} bad: never a rollback target again")
    elif p.who is Who.PERSON:
        steps.append(f"leave {short(p.from_commit)} unmarked (--mark-bad: never a rollback target again)")
    once = " (an automatic rollback: never rolled back again)" if p.who is Who.LOOP else ""
    steps.append(f"start a new launch window for {short(p.to_commit)}{once}")
    if p.commands:
        within = format_duration(p.command_timeout)
        steps.append(f"run in {p.repo}, in order, each within {within}:")
    elif p.restart:
        steps.append("restart the app through [process] ([rollback] after is empty), as process-restart does")
    else:
        steps.append("run no commands ([rollback] after is empty, and there is no [process] to restart the app)")
    out = [f"  {i}. {s}" for i, s in enumerate(steps, 1)]
    out += [f"       $ {shlex.join(argv)}" for argv in p.commands]
    checks = ", ".join(p.checks)
    out.append(
        f"  {len(steps) + 1}. after {format_duration(p.verify_grace)}, re-run all {len(p.checks)} "
        f"check(s) ({checks}) up to {VERIFY_TRIES} times until they pass"
    )
    if p.who is Who.LOOP:
        out.append(f"  {len(steps) + 2}. if they still fail: one restart, then hold and wait for a person")
    undo = f"  undo: healer rollback --to {short(p.from_commit)} --reason ..."
    if p.mark_bad:
        undo += " --force"
    return "\n".join([*lines, *out, undo])


def _quote(subject: str) -> str:
    return f'"{subject}"  ' if subject else ""


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
    """`<state_dir>/rollback.lock`: one rollback at a time; LockedError names the holder's PID."""
    return FileLock(state_dir / LOCK_NAME, "rollback")


# ---- carrying it out -------------------------------------------------------------------------


async def run_rollback(
    *,
    config: Config,
    ctx: ProbeContext,
    store: Store,
    clock: Clock,
    who: Who,
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
       plan is recorded (outcome error); for the loop it also holds the deploy, so healer waits
       for a person instead of trying again every cycle. An unknown `to` raises GitError.
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
    9. Record the outcome; when the loop's rollback left the app unhealthy, hold the new
       deploy: healer stops acting until a person does.

    A dry run does step 2 only: nothing is locked, changed or recorded, and the result's detail
    is describe(plan).
    """
    if dry_run:
        state = await asyncio.to_thread(_read_state, config, store, to)
        p = plan(state, config, who=who, reason=reason, force=force, mark_bad=mark_bad)
        return RollbackResult(
            ok=p.ok, from_commit=p.from_commit, to_ref=p.to_ref, to_commit=p.to_commit,
            detail=describe(p), changed=False, refused=p.refused or None, plan=p,
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
    store: Store, clock: Clock, who: Who, reason: str, why: str, p: Plan | None = None
) -> RollbackResult:
    """Record a rollback that did not run; the loop's deploy is held for a person."""
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
    held = False
    if who is Who.LOOP and current is not None:
        await asyncio.to_thread(store.set_held, current.id, f"automatic rollback refused: {why}; waiting for a person")
        held = True
    return RollbackResult(
        ok=False, from_commit=p.from_commit if p else "", to_ref=p.to_ref if p else "",
        to_commit=p.to_commit if p else "", detail=f"refused: {why}", changed=False, refused=why,
        action_id=action_id, deploy_id=current.id if current else None, held=held, plan=p,
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
        await asyncio.to_thread(store.finish_action, action_id, Outcome.ERROR, clock.now(), _line(f"{head}: {e}"))
        raise


def _head_or_none(repo: Path) -> str | None:
    try:
        return gitrepo.head_commit(repo)
    except GitError:
        return None


async def _finish_unmoved(
    p: Plan, store: Store, clock: Clock, action_id: int, deploy_id: int | None, detail: str
) -> RollbackResult:
    """The rollback failed before HEAD moved: record it; the loop holds the deploy."""
    detail = _line(detail)
    await asyncio.to_thread(store.finish_action, action_id, Outcome.FAILED, clock.now(), detail)
    held = False
    if p.who is Who.LOOP and deploy_id is not None:
        hold = _line(f"automatic rollback failed: {detail}; waiting for a person")
        await asyncio.to_thread(store.set_held, deploy_id, hold)
        held = True
    log.error("rollback.failed detail=%s", detail)
    return RollbackResult(
        ok=False, from_commit=p.from_commit, to_ref=p.to_ref, to_commit=p.to_commit,
        detail=detail, changed=False, action_id=action_id, deploy_id=deploy_id, held=held, plan=p,
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
            store.mark_bad, p.from_commit, _line(f"rolled back {by} to {p.to_ref}: {p.reason}"), now
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
    detail = _line(f"{prefix}: {why}")
    await asyncio.to_thread(store.finish_action, action_id, Outcome.OK if ok else Outcome.FAILED, clock.now(), detail)
    held = False
    # the loop's rolled-back release that still fails gets the ladder again (a restart, where
    # [process] says how) before healer holds: decide() holds it if that does not cure it
    if not ok and p.who is Who.LOOP and config.process is None:
        hold = (
            f"rolled back to {p.to_ref} ({short(p.to_commit)}) but {why}; not rolling back again: "
            "waiting for a person (healer rollback --to REF, healer repair, or a new deploy)"
        )
        await asyncio.to_thread(store.set_held, deploy.id, _line(hold))
        held = True
    (log.info if ok else log.error)("rollback.%s detail=%s", "ok" if ok else "failed", detail)
    return RollbackResult(
        ok=ok, from_commit=p.from_commit, to_ref=p.to_ref, to_commit=p.to_commit, detail=detail,
        changed=True, action_id=action_id, deploy_id=deploy.id, held=held, results=results, plan=p,
        commands_failed=commands_failed,
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
    from healer.playbook import ProcessRestartStep

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


def _line(text: str) -> str:
    one = " ".join(text.split())
    return one if len(one) <= 2 * _LINE_MAX else one[: 2 * _LINE_MAX - 1] + "…"


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
    who = Who(row.who) if row.who in {w.value for w in Who} else Who.PERSON
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
    p = Plan(
        who=who, reason=row.reason, repo=repo, from_commit=from_commit, from_branch=from_branch,
        to_ref=to_ref, to_commit=to_commit,
        commands=tuple(tuple(a) for a in config.rollback.after),
        command_timeout=config.rollback.command_timeout, verify_grace=config.rollback.verify_grace,
        checks=tuple(c.name for c in config.checks), mark_bad=mark_bad,
        restart=not config.rollback.after and config.process is not None,
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
    await asyncio.to_thread(store.finish_action, row.id, outcome, clock.now(), _line(detail))
    log.warning("rollback.interrupted action=%d detail=%s", row.id, detail)
    return RollbackResult(
        ok=False, from_commit=from_commit, to_ref=to_ref, to_commit=to_commit,
        detail=_line(detail), changed=changed, action_id=row.id,
    )  # fmt: skip


# ---- healer's own stable tags ----------------------------------------------------------------


def stable_tag_name(pattern: str, commit: str, when: datetime) -> str | None:
    """The name of healer's tag for `commit`: the glob's part before its first `*`, then
    `healer-<UTC yyyymmdd-HHMMSS>-<short sha>`, then the rest ("stable-*" ->
    "stable-healer-20260101-060000-abc1234"). None when the glob has no `*` or the name would
    not match it."""
    head, star, rest = pattern.partition("*")
    if not star:
        return None
    core = f"healer-{when.astimezone(UTC):%Y%m%d-%H%M%S}-{short(commit)}"
    name = head + core + rest.replace("*", "")
    return name if fnmatch.fnmatchcase(name, pattern) else None


async def maybe_tag_stable(*, config: Config, store: Store, clock: Clock) -> str | None:
    """Tag HEAD stable once the deploy has been healthy for `tag_stable_after`; returns the tag.

    The deploy qualifies when it is the commit at HEAD, is not known bad, not held, has no
    stable tag yet, and has been healthy by the judge's standard (stable.is_stable: watched for
    `tag_stable_after`, no open incident, the last `recover_after` cycles passing; a blip that
    resolved does not count against it). A commit that already carries a tag matching the
    pattern is not tagged again (that tag is remembered instead). Git errors propagate as
    GitError.
    """
    repo = config.app.repo
    pattern = config.app.stable_tags
    if repo is None or "*" not in pattern:
        return None
    now = clock.now()
    d = await asyncio.to_thread(store.current_deploy)
    if d is None or d.stable_tag or d.held or d.open_incident is not None:
        return None
    after = config.app.tag_stable_after
    if now - d.first_seen < after:
        return None
    if d.commit in await asyncio.to_thread(store.bad_commits):
        return None
    cycles = await asyncio.to_thread(lambda: store.cycles(deploy_id=d.id))
    window = [stable.Cycle(at=c.at, ok=c.ok) for c in cycles]
    recover_after = config.escalation.recover_after
    if not stable.is_stable(
        window, first_seen=d.first_seen, has_open_incident=d.open_incident is not None, now=now,
        after=after, recover_after=recover_after,
    ):  # fmt: skip
        return None
    if await asyncio.to_thread(gitrepo.head_commit, repo) != d.commit:
        return None  # HEAD moved; the loop starts a new window first
    existing = await asyncio.to_thread(gitrepo.tags_at, repo, d.commit, pattern)
    if existing:
        await asyncio.to_thread(store.set_stable_tag, d.id, existing[0])
        return None
    name = stable_tag_name(pattern, d.commit, now)
    if name is None:
        log.warning("rollback.tag_skipped pattern=%s reason=no tag name matches it", pattern)
        return None
    failing = sum(not c.ok for c in cycles)
    message = (
        f"healer: {config.app.name} at {short(d.commit)} has been healthy for "
        f"{format_elapsed(now - d.first_seen)} since it was deployed at "
        f"{d.first_seen:%Y-%m-%d %H:%M} UTC ({_cycles(len(cycles))}, {failing or 'none'} failing, "
        f"no incident open, the last {recover_after} passing; tag_stable_after = "
        f"{format_duration(after)}). A rollback target for healer."
    )
    await asyncio.to_thread(lambda: gitrepo.create_tag(repo, name, d.commit, message, date=now))
    await asyncio.to_thread(store.set_stable_tag, d.id, name)
    await asyncio.to_thread(
        lambda: store.start_action(
            kind="tag", name=name, who=Who.LOOP, now=now, deploy_id=d.id, outcome=Outcome.OK,
            reason=f"healthy for {format_duration(after)}", detail=_line(message),
        )
    )  # fmt: skip
    log.info("rollback.tagged tag=%s commit=%s", name, short(d.commit))
    return name


def _cycles(n: int) -> str:
    return f"{n} cycle" if n == 1 else f"{n} cycles"
