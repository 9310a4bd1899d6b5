"""Running a playbook: find it, lock it, journal it, run its steps, verify it (I/O).

The playbooks are the shipped ones (`healer.playbooks`, inside the wheel), extended or
overridden by name by the files in `[playbooks] dir`. `run_repair` is what the loop and
`healer repair KIND` call; `known_playbooks` and `describe` are what the CLI lists and asks
a person to confirm.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from healer import actions
from healer.actions.command import StepTimedOut
from healer.aftermath import RepairResult, ResumedRepair
from healer.checks import describe_error, run_checks
from healer.clock import sleep_unless
from healer.config import format_duration, format_elapsed
from healer.decide import PlaybookPolicy
from healer.errors import ActionError, ConfigError, LockedError, StoreError, UsageError
from healer.locks import PEEKED, FileLock
from healer.logging import log_event
from healer.model import ActionNote, CheckResult, Outcome, Who
from healer.playbook import (
    Playbook,
    check_references,
    merge,
    parse_playbook_text,
    summary,
    targets,
)

if TYPE_CHECKING:
    from healer.checks import ProbeContext
    from healer.clock import Clock
    from healer.config import Config
    from healer.decide import Pause
    from healer.model import Deploy
    from healer.store import ActionRow, Store

log = logging.getLogger("healer.repair")

SHIPPED_PACKAGE = "healer.playbooks"
# How often the target checks are re-run while waiting for them to pass.
VERIFY_EVERY = timedelta(seconds=1)


# ---- finding playbooks -------------------------------------------------------------------------


def shipped_playbooks() -> list[Playbook]:
    """The playbooks that ship with healer, read from the installed package."""
    root = importlib.resources.files(SHIPPED_PACKAGE)
    out = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            source = f"{SHIPPED_PACKAGE}/{entry.name}"
            out.append(parse_playbook_text(entry.read_text("utf-8"), source, shipped=True))
    return out


def user_playbooks(directory: Path, config_path: Path) -> list[Playbook]:
    """The `*.toml` files of `[playbooks] dir`, in name order; a bad file is a ConfigError."""
    if not directory.is_dir():
        msg = f"playbooks.dir: expected a directory of playbook files, got {str(directory)!r} (not found)"
        raise ConfigError(config_path, [msg])
    out = []
    for path in sorted(directory.glob("*.toml")):
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(path, ["expected a UTF-8 text file"]) from None
        except OSError as e:
            raise ConfigError(path, [f"cannot read: {e.strerror}"]) from None
        out.append(parse_playbook_text(text, path))
    return out


def known_playbooks(config: Config) -> dict[str, Playbook]:
    """Every playbook by name: the shipped ones, extended or overridden by the user's.

    Raises ConfigError for a bad file (naming it, the key and what was expected), for a
    `verify` entry that is neither a check type nor a configured check, and for a dispatch
    rule that names no known playbook.
    """
    user = user_playbooks(config.playbooks.dir, config.path) if config.playbooks.dir else []
    playbooks = merge(shipped_playbooks(), user)
    check_references(playbooks, config)
    return playbooks


def policies(config: Config) -> dict[str, PlaybookPolicy]:
    """The spacing and cap of every known playbook, whether it restarts the app, and whether
    this config lets it run at all: a restart needs [process] (without one, healer has no way
    to restart the app and the ladder goes on to what it can do). Other problems, such as an
    unset secret, are reported when the playbook is chosen, so that people hear of them."""
    out = {}
    for name, p in known_playbooks(config).items():
        restarts = any(s.action == "process.restart" for s in p.steps)
        out[name] = PlaybookPolicy(
            name, p.cooldown, p.max_per_window, backoff=p.backoff, restarts_app=restarts,
            runnable=not (restarts and config.process is None),
        )  # fmt: skip
    return out


def problems(playbook: Playbook, config: Config) -> list[str]:
    """Why `playbook` cannot run with this config (missing sections, unset secrets)."""
    return [line for step in playbook.steps for line in actions.problems(step, config)]


def describe(playbook: Playbook, config: Config) -> str:
    """What running `playbook` would do, step by step with resolved parameters; for dry runs
    and the confirmation prompt. Several lines."""
    lines = [f"{playbook.name}: {playbook.description}"]
    for i, step in enumerate(playbook.steps, 1):
        bad = actions.problems(step, config)
        try:
            text = actions.plan(step, config) + "".join(f"; CANNOT RUN: {b}" for b in bad)
        except ActionError as e:
            text = f"CANNOT RUN: {'; '.join(bad) or e}"
        lines.append(f"  {i}. {step.action}: {text} [timeout {format_duration(step.timeout)}]")
    checks = targets(playbook, config.checks)
    names = ", ".join(f"{c.name} ({c.type})" for c in checks)
    within = format_duration(playbook.verify_within)
    lines.append(f"  then: re-run {names} until they pass, for up to {within}")
    lines.append(f"  limits: {summary(playbook)}")
    return "\n".join(lines)


def _lookup(name: str, config: Config) -> Playbook:
    playbooks = known_playbooks(config)
    if name not in playbooks:
        msg = f"unknown repair kind {name!r}; expected one of: {', '.join(playbooks)}"
        raise UsageError(msg)
    return playbooks[name]


# ---- the lock ----------------------------------------------------------------------------------


def playbook_lock(state_dir: Path, name: str) -> FileLock:
    """`<state_dir>/repair-<name>.lock`, so a person and the loop never run the same playbook at
    once; LockedError names the holder. The watcher peeks at it (healer/watch.py): that instant
    is waited out."""
    return FileLock(state_dir / f"repair-{name}.lock", f"repair {name}", patience=PEEKED)


# ---- running -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Handoff:
    """Between the loop and a repair it runs as a task: the repair says when its verification
    goes on beside the loop (its steps are done and the first check of its targets failed);
    the loop may end that verification early, when something else takes over (a rollback)."""

    verifying: asyncio.Event = field(default_factory=asyncio.Event)
    superseded: asyncio.Event = field(default_factory=asyncio.Event)
    by: str = ""  # what took over, for the detail: "the rollback"

    def supersede(self, by: str) -> None:
        """End the verification at its next pause: the repair is failed, `by` takes over."""
        self.by = by
        self.superseded.set()


async def run_repair(
    name: str,
    *,
    config: Config,
    ctx: ProbeContext,
    store: Store,
    clock: Clock,
    who: Who | str,
    reason: str,
    deploy_id: int | None,
    incident_id: int | None = None,
    dry_run: bool = False,
    handoff: Handoff | None = None,
) -> RepairResult:
    """Run playbook `name`, journaled before it starts, verified by its target checks.

    Raises (and journals nothing) when it cannot start: UsageError for an unknown name,
    ConfigError for a bad playbook file, ActionError when the config lacks what a step
    needs, LockedError when the playbook is already running. Once journaled, every ending
    is a RepairResult and the action row is finished:

    1. take the playbook's lock; journal the intent (outcome `started`);
    2. run the steps in order, each bounded by its timeout (a timeout kills the step and
       is `failed`; a step that cannot run is `error`, and later steps are not run);
    3. re-run the target checks every second until they pass or `verify_within` elapses
       (with a `handoff`: say so once the first check failed, and stop, failed, when the loop
       supersedes the verification);
    4. finish the action row: ok / failed / error with a one-line detail.

    A dry run changes nothing and journals nothing: its detail says what would be done.
    """
    playbook = _lookup(name, config)
    if dry_run:
        bad = problems(playbook, config)
        return RepairResult(name, not bad, describe(playbook, config), outcome=Outcome.SKIPPED, dry_run=True)
    bad = problems(playbook, config)
    if bad:
        raise ActionError(f"cannot run {name}: {'; '.join(bad)}")
    with playbook_lock(config.state_dir, name):
        started = clock.now()
        action_id = await asyncio.to_thread(
            store.start_action, kind="repair", name=name, who=who, reason=reason, now=started,
            deploy_id=deploy_id, incident_id=incident_id,
        )  # fmt: skip
        log_event(log, "repair.started", kind=name, who=str(who), reason=reason, action_id=action_id)
        try:
            outcome, detail, results = await _steps_and_verify(playbook, config, ctx, clock, handoff)
        except asyncio.CancelledError:
            # healer is stopping past its bound (or a person pressed Ctrl-C): written at once,
            # from the event loop, since nothing will await a worker thread any more
            store.finish_action(action_id, Outcome.ERROR, clock.now(), "interrupted: healer stopped during the repair")
            # a store that cannot be written loses the note (the next start then leaves this
            # repair alone): the cancellation must go on all the same
            with suppress(StoreError):
                store.set_note(action_id, ActionNote.INTERRUPTED)
            raise
        except Exception as e:  # a bug: close the journal row, keep the traceback
            store.finish_action(action_id, Outcome.ERROR, clock.now(), f"bug: {describe_error(e)}")
            raise
        ended = clock.now()
        await asyncio.to_thread(store.finish_action, action_id, outcome, ended, detail)
    duration = ended - started
    log_event(
        log, "repair.finished", kind=name, outcome=str(outcome), detail=detail,
        duration_s=round(duration.total_seconds(), 3), action_id=action_id,
    )  # fmt: skip
    return RepairResult(name, outcome is Outcome.OK, detail, action_id, results, outcome=outcome, duration=duration)


async def _steps_and_verify(
    playbook: Playbook, config: Config, ctx: ProbeContext, clock: Clock, handoff: Handoff | None
) -> tuple[Outcome, str, tuple[CheckResult, ...]]:
    """Steps 2 and 3 of run_repair: (outcome, detail, the last check results)."""
    done: list[str] = []
    for i, step in enumerate(playbook.steps, 1):
        where = f"step {i} ({step.action})"
        try:
            async with asyncio.timeout(step.timeout.total_seconds()):
                line = await actions.run(step, config, playbook=playbook.name)
        except TimeoutError:
            why = f"{where} timed out after {format_duration(step.timeout)} and was stopped"
            return Outcome.FAILED, _join(done, why), ()
        except StepTimedOut as e:
            return Outcome.FAILED, _join(done, f"{where}: {e}"), ()
        except ActionError as e:
            return Outcome.ERROR, _join(done, f"{where} could not run: {e}"), ()
        log_event(log, "repair.step", kind=playbook.name, step=i, action=step.action, detail=line)
        done.append(line)

    checks = targets(playbook, config.checks)
    names = ", ".join(c.name for c in checks)
    # on the monotonic clock: a wall clock stepped back an hour must not verify for an hour
    began = clock.monotonic()
    deadline = began + playbook.verify_within
    while True:
        results = await run_checks(ctx, checks)
        now = clock.monotonic()
        if all(r.ok for r in results):
            return Outcome.OK, _join(done, f"{names} healthy after {format_elapsed(now - began)}"), results
        if now >= deadline:
            why = f"still failing after {format_duration(playbook.verify_within)}: {_failing(results)}"
            return Outcome.FAILED, _join(done, why), results
        if handoff is None:
            await clock.sleep(min(VERIFY_EVERY, deadline - now))
            continue
        handoff.verifying.set()
        if await sleep_unless(clock, min(VERIFY_EVERY, deadline - now), handoff.superseded):
            took = format_elapsed(clock.monotonic() - began)
            why = f"still failing after {took}: {_failing(results)}; superseded by {handoff.by}"
            return Outcome.FAILED, _join(done, why), results


def _failing(results: tuple[CheckResult, ...]) -> str:
    return "; ".join(f"{r.name}: {r.error or ', '.join(r.symptoms) or 'failed'}" for r in results if not r.ok)


def _join(done: list[str], last: str) -> str:
    return "; ".join([*done, last])


# ---- after a stop or a kill --------------------------------------------------------------------


def why_not_again(row: ActionRow, current: Deploy | None, pause: Pause | None, observe: bool) -> str | None:
    """Why an interrupted repair is not run again at the start (None: it may be).

    1. Only the loop's repairs: a person's is theirs to run again.
    2. Only on the deploy it was for: a new deploy (or a rollback) is judged afresh.
    3. Not while healer is held for a person, paused, or in observe mode.
    The caller then runs the playbook's target checks: when they pass, there is nothing to finish.
    """
    if row.who != Who.LOOP:
        return "a person's repair: not run again by healer"
    if current is None or row.deploy_id != current.id:
        return "the deploy changed since: the new one is judged afresh"
    if current.held:
        return f"healer is held: {current.held}"
    if pause is not None:
        return f"paused ({pause.reason})"
    if observe:
        return "observe mode"
    return None


async def resume_interrupted(
    *, config: Config, ctx: ProbeContext, store: Store, clock: Clock, observe: bool
) -> list[ResumedRepair]:
    """At the start of `healer run`: finish what a stop or a kill left of the loop's repairs.

    1. A repair still journaled `started` whose playbook lock is free was cut short by a kill
       (-9, OOM): it is closed as error, note interrupted. One whose lock is held is running
       in another process right now (a person's `healer repair`) and is left alone.
    2. For each playbook, its newest interrupted repair is looked at once (older ones are
       superseded) and noted so: not run again when `why_not_again` says so, nor when its
       target checks pass now; else it is run again at once, journaled as a new repair of the
       loop ("run again: repair #N was interrupted"), spaced and capped as any run.
    Returns what was done about each, for the loop to announce.
    """
    now = clock.now()
    for row in await asyncio.to_thread(store.interrupted_repairs):
        if row.outcome != Outcome.STARTED:
            continue
        try:
            with playbook_lock(config.state_dir, row.name):
                detail = "interrupted: healer ended (killed?) before the repair finished"
                await asyncio.to_thread(store.finish_action, row.id, Outcome.ERROR, now, detail)
                await asyncio.to_thread(store.set_note, row.id, ActionNote.INTERRUPTED)
        except LockedError:
            continue  # running in another process
    pending = [r for r in await asyncio.to_thread(store.interrupted_repairs) if r.outcome != Outcome.STARTED]
    newest = {r.name: r for r in pending}
    for row in pending:
        if newest[row.name] is not row:
            await asyncio.to_thread(store.set_note, row.id, ActionNote.LOOKED_AT)
    current = await asyncio.to_thread(store.current_deploy)
    pause = await asyncio.to_thread(store.active_pause, now)
    out: list[ResumedRepair] = []
    for row in newest.values():
        await asyncio.to_thread(store.set_note, row.id, ActionNote.LOOKED_AT)  # once, even if killed again
        out.append(await _resume_one(row, current, pause, observe, config=config, ctx=ctx, store=store, clock=clock))
    return out


async def _resume_one(
    row: ActionRow, current: Deploy | None, pause: Pause | None, observe: bool, *,
    config: Config, ctx: ProbeContext, store: Store, clock: Clock,
) -> ResumedRepair:  # fmt: skip
    why = why_not_again(row, current, pause, observe)
    if why is not None:
        return ResumedRepair(row, None, f"not run again: {why}")
    assert current is not None  # why_not_again says so without a deploy
    playbooks = known_playbooks(config)
    if row.name not in playbooks:
        return ResumedRepair(row, None, "not run again: the playbook is no longer known")
    checks = targets(playbooks[row.name], config.checks)
    results = await run_checks(ctx, checks)
    if all(r.ok for r in results):
        names = ", ".join(r.name for r in results)
        return ResumedRepair(row, None, f"not run again: {names} pass now", healthy=True)
    log_event(log, "repair.resuming", kind=row.name, interrupted=row.id)
    try:
        result = await run_repair(
            row.name, config=config, ctx=ctx, store=store, clock=clock, who=Who.LOOP,
            reason=f"run again: repair #{row.id} was interrupted ({row.reason})", deploy_id=current.id,
            incident_id=current.open_incident,
        )  # fmt: skip
    except (ActionError, ConfigError, LockedError, UsageError) as e:
        return ResumedRepair(row, None, f"could not run it again: {e}")
    return ResumedRepair(row, result, f"run again: {'fixed' if result.ok else 'not fixed'}: {result.detail}")
