"""A rollback worked out in advance (pure): its target, its steps, or why it is refused; and
the plan told to people.

The shell reads the work tree and the store into a RepoState; plan() decides from it alone, and
rollback.py carries the plan out. Nothing here touches git, the store or the clock.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from healer.config import Config, format_duration
from healer.model import TagInfo, Who, short

VERIFY_TRIES = 3  # checks re-run after a rollback until they pass, `verify_grace` apart
_LINE_MAX = 400  # characters of a one-line detail
_FILES_SHOWN = 5


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

    who: Who | str  # Who.PERSON from the CLI, "telegram:123456" from chat
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
    state: RepoState, config: Config, *, who: Who | str, reason: str, force: bool = False, mark_bad: bool = False
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
    base = replace(
        plan_from(
            config, who=who, reason=reason, repo=state.repo, from_commit=state.head, from_branch=state.branch,
            to_ref=to_ref, to_commit=to_commit, mark_bad=mark_bad,
        ),
        from_subject=state.subjects.get(state.head, ""),
        to_subject=state.subjects.get(to_commit, "") if to_commit else "",
    )  # fmt: skip

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


def plan_from(
    config: Config, *, who: Who | str, reason: str, repo: Path | None, from_commit: str, from_branch: str | None,
    to_ref: str, to_commit: str, mark_bad: bool,
) -> Plan:  # fmt: skip
    """A plan from `from_commit` to `to_commit` whose steps are healer.toml's: the `after`
    commands and their timeout (none: a restart through [process], when there is one), the
    grace before verifying, and every check. plan() starts from it; a resume rebuilds with it
    the rollback its journal recorded."""
    return Plan(
        who=who, reason=reason, repo=repo, from_commit=from_commit, from_branch=from_branch,
        to_ref=to_ref, to_commit=to_commit,
        commands=tuple(tuple(argv) for argv in config.rollback.after),
        command_timeout=config.rollback.command_timeout, verify_grace=config.rollback.verify_grace,
        checks=tuple(c.name for c in config.checks), mark_bad=mark_bad,
        restart=not config.rollback.after and config.process is not None,
    )  # fmt: skip


def one_line(text: str) -> str:
    """`text` on one line, cut to _LINE_MAX characters: a rollback's detail and hold as stored."""
    one = " ".join(text.split())
    return one if len(one) <= _LINE_MAX else one[: _LINE_MAX - 1] + "…"


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
    elif p.who is not Who.LOOP:
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
