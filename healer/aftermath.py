"""What follows an executed repair or rollback (pure): the alerts people get, and the deploy
held for a person or armed again.

The executors (repair.py, rollback.py) carry an action out and return how it ended. follow_up()
turns that outcome into intents — one set of rules for the loop and for a person's `healer
repair` / `healer rollback` — and the loop or the CLI carries them out. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from healer.alerts.message import rollback_failure_title
from healer.config import Config
from healer.model import Alert, CheckResult, Deploy, Event, Hold, Outcome, Repair, Rollback, Severity, Who, short
from healer.rollback_plan import Plan, one_line

# Why a failed rollback of the loop leaves healer acting, when [process] can restart the app.
_THEN_RESTART = "one restart of it, then healer holds if it still fails"
_WAITING = "waiting for a person"


@dataclass(frozen=True, slots=True)
class RepairResult:
    """How a repair ended; `ok` means its target checks pass afterwards.

    `outcome` is what the action log holds: ok (fixed), failed (ran, or timed out, and the
    checks still fail), error (a step could not run). A dry run is `skipped`, `ok` says
    whether it could run, and `detail` says exactly what it would do.
    """

    name: str
    ok: bool
    detail: str
    action_id: int | None = None
    results: tuple[CheckResult, ...] = field(default=())
    outcome: Outcome = Outcome.OK
    duration: timedelta = timedelta(0)
    dry_run: bool = False


class Ending(enum.StrEnum):
    """Where a rollback stopped: what its outcome leaves to decide about the deploy."""

    PLANNED = "planned"  # a dry run: nothing locked, changed or recorded
    REFUSED = "refused"  # nothing done: the plan was refused, or the repository could not be read
    NOT_CHECKED_OUT = "not-checked-out"  # the checkout failed: HEAD did not move
    CHECKED_OUT = "checked-out"  # HEAD at the target; the after commands and the checks ran (`ok`: healthy)
    RECORDED = "recorded"  # a kill cut it short, and the next start could only record where HEAD was


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
    who: Who | str  # who asked for it (for a resumed rollback: who asked for the one interrupted)
    ending: Ending
    why: str = ""  # how it ended, without what moved where: the hold quotes it
    refused: str | None = None  # why it did not run at all
    action_id: int | None = None  # the journal row
    deploy_id: int | None = None  # the deploy window of the new HEAD
    results: tuple[CheckResult, ...] = ()  # the last verification
    plan: Plan | None = None
    commands_failed: bool = False  # an `after` command (or the restart) failed: never verified


@dataclass(frozen=True, slots=True)
class NotRun:
    """A repair or rollback of the loop that could not run: its executor raised a HealerError."""

    intent: Repair | Rollback
    error: str


@dataclass(frozen=True, slots=True)
class Observed:
    """A repair or rollback observe mode decided, recorded and did not carry out."""

    intent: Repair | Rollback


@dataclass(frozen=True, slots=True)
class Crashed:
    """A repair or rollback of the loop that failed in a way nobody foresaw (a bug)."""

    intent: Repair | Rollback
    error: str  # "TypeError: ...": the exception, for people


@dataclass(frozen=True, slots=True)
class ResumedRollback:
    """A rollback a stop or a kill cut short, finished or recorded by the next start."""

    result: RollbackResult


class JournalRow(Protocol):
    """The journal row of an interrupted action, as what follows it reads the row (store.ActionRow)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def who(self) -> str: ...
    @property
    def incident_id(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ResumedRepair:
    """A repair a stop or a kill cut short, looked at by the next start."""

    interrupted: JournalRow  # its journal row (outcome error, note interrupted)
    result: RepairResult | None  # the run again; None when it was not run again
    why: str  # for people: what was done about it, and why
    healthy: bool = False  # not run again because its target checks pass now: nothing to finish


ActionOutcome = RepairResult | RollbackResult | Observed | NotRun | Crashed | ResumedRollback | ResumedRepair


@dataclass(frozen=True, slots=True)
class Followup:
    """What an outcome leaves to do: the alerts to send, and the deploy to hold or arm again."""

    alerts: tuple[Alert, ...] = ()
    hold: Hold | None = None  # hold the deploy `deploy_id` names: healer waits for a person
    release: bool = False  # lift the hold on `deploy_id`: a person's repair fixed the app
    deploy_id: int | None = None  # the deploy held or released
    next_step: str | None = None  # what the alerts say healer does next (None: the cycle's)


def follow_up(
    outcome: ActionOutcome,
    *,
    config: Config,
    deploy: Deploy | None = None,
    incident: int | None = None,
    by: str | None = None,
) -> Followup:
    """The alerts and the hold that follow `outcome`. `by` names the person who ran it (None:
    the loop did, for `deploy` and `incident`).

    1. A person's repair or rollback is announced with their name, bypassing the dedup: it is
       news every time. A person's repair that fixed the app arms healer again for a held deploy.
    2. The loop's repair: succeeded or failed, named by its playbook, within the incident.
    3. The loop's rollback: a success resolves the incident. One that ended otherwise holds
       the deploy (see _hold_after) or, when [process] can restart the app, leaves it one
       restart first; the alert says which.
    4. What the next start took up is announced as interrupted: the loop's repair (run again, or
       why not; a person's was theirs to see end), any rollback, held by the same rule.
    5. Observe mode says what it would have done, within the incident (the pipeline drops repeats).
    6. An action that could not run says why; a rollback that could not run holds the deploy.
       One that crashed is told, not lost with the cycle's alerts.
    """
    match outcome:
        case RepairResult():
            return _after_repair(outcome, deploy=deploy, incident=incident, by=by)
        case RollbackResult():
            return _after_rollback(outcome, config=config, incident=incident, by=by)
        case ResumedRepair():
            return _after_resumed_repair(outcome)
        case ResumedRollback(result=r):
            return _after_resumed_rollback(r, config)
        case Observed(intent=Repair(kind=kind, reason=reason)):
            nothing = f"observe mode, nothing done ({reason})"
            return Followup((Alert(Event.REPAIR_STARTED, Severity.WARNING, f"{kind} (would run)", nothing, incident),))
        case Observed(intent=intent):
            nothing = f"observe mode, nothing done ({intent.reason})"
            alert = Alert(
                Event.ROLLBACK_STARTED, Severity.CRITICAL, "would roll back to the last stable tag", nothing, incident
            )
            return Followup((alert,))
        case NotRun(intent=Repair(kind=kind), error=error):
            return Followup((Alert(Event.REPAIR_FAILED, Severity.WARNING, f"{kind} could not run", error, incident),))
        case NotRun(error=error):
            msg = f"rollback could not run: {error}; {_WAITING}"
            alert = Alert(Event.ROLLBACK_FAILED, Severity.CRITICAL, "could not run", msg, incident)
            return Followup((alert,), Hold(msg), deploy_id=None if deploy is None else deploy.id)
        case Crashed(intent=intent, error=error):
            what, event = (
                (intent.kind, Event.REPAIR_FAILED)
                if isinstance(intent, Repair)
                else ("rollback", Event.ROLLBACK_FAILED)
            )
            return Followup((Alert(event, Severity.CRITICAL, f"{what} crashed", error, incident),))


# What a host taking part in the fleet's rollback leaves to the leader's one outcome (and to the
# one "the fleet to stable-1" of the host that ordered it)
FLEET_SAYS = frozenset({Event.ROLLBACK_STARTED, Event.ROLLBACK_SUCCEEDED, Event.ROLLBACK_FAILED})


def rollback_started(p: Plan, *, incident: int | None = None, by: str | None = None, fleet: bool = False) -> Alert:
    """The announcement of a rollback that goes ahead (its plan accepted, under the lock);
    `fleet`: of the fleet's rollback this host ordered, which every host on the release follows
    (said once, for the fleet: the hosts that follow it say nothing, the leader says the outcome)."""
    to = f"{p.to_ref} ({p.to_commit[:12]})"
    if fleet:
        return fleet_rollback_started(p.from_commit, p.to_commit, p.to_ref, p.reason, by=by)
    if by is not None:
        return Alert(
            Event.ROLLBACK_STARTED, Severity.CRITICAL, f"Rolling back to {to} (by {by})", p.reason, bypass_dedup=True
        )
    return Alert(Event.ROLLBACK_STARTED, Severity.CRITICAL, f"to {to}", p.reason, incident)


def fleet_rollback_started(
    from_commit: str, to_commit: str, to_ref: str, reason: str, *, by: str | None = None
) -> Alert:
    """The one announcement of the fleet's rollback as it is ordered."""
    who = "" if by is None else f" (by {by})"
    detail = (
        f"{reason}. Every host on {from_commit[:12]} follows to the same commit; the outcome is announced once "
        "each has reported."
    )
    title = f"the fleet to {to_ref} ({to_commit[:12]}){who}"
    return Alert(Event.ROLLBACK_STARTED, Severity.CRITICAL, title, detail, bypass_dedup=True)


def _after_repair(r: RepairResult, *, deploy: Deploy | None, incident: int | None, by: str | None) -> Followup:
    event = Event.REPAIR_SUCCEEDED if r.ok else Event.REPAIR_FAILED
    if by is None:
        return Followup((Alert(event, Severity.WARNING, r.name, r.detail, incident),))
    title = f"{'Repaired' if r.ok else 'Repair failed'}: {r.name} (by {by})"
    alert = Alert(event, Severity.WARNING, title, r.detail, bypass_dedup=True)
    release = r.ok and deploy is not None and deploy.held is not None
    return Followup((alert,), release=release, deploy_id=deploy.id if release and deploy else None)


def _after_resumed_repair(r: ResumedRepair) -> Followup:
    row = r.interrupted
    if row.who != Who.LOOP:
        return Followup()  # a person's repair, cut short in their own command: they saw it end
    title = f"{row.name}, interrupted when healer stopped"
    if r.result is not None:
        event = Event.REPAIR_SUCCEEDED if r.result.ok else Event.REPAIR_FAILED
        alert = Alert(event, Severity.WARNING, f"{title}, run again", r.why, row.incident_id)
    elif r.healthy:
        alert = Alert(Event.REPAIR_SUCCEEDED, Severity.INFO, title, r.why, row.incident_id)
    else:
        alert = Alert(Event.REPAIR_FAILED, Severity.WARNING, title, r.why, row.incident_id)
    return Followup((alert,), next_step="watching")


def _after_resumed_rollback(r: RollbackResult, config: Config) -> Followup:
    hold = _hold_after(r, config)
    if r.ok:
        alert = Alert(Event.ROLLBACK_SUCCEEDED, Severity.WARNING, "Interrupted rollback finished", r.detail)
    else:
        alert = Alert(Event.ROLLBACK_FAILED, Severity.CRITICAL, "Interrupted rollback", r.detail)
    next_step = "watching" if r.ok else _WAITING
    return Followup((alert,), hold, deploy_id=r.deploy_id if hold else None, next_step=next_step)


def _after_rollback(r: RollbackResult, *, config: Config, incident: int | None, by: str | None) -> Followup:
    if by is not None:
        if r.ok:
            said = (Event.ROLLBACK_SUCCEEDED, Severity.WARNING, f"Rolled back to {r.to_ref} (by {by})")
        else:
            said = (Event.ROLLBACK_FAILED, Severity.CRITICAL, f"Rollback to {r.to_ref} failed (by {by})")
        return Followup((Alert(*said, r.detail, bypass_dedup=True),))
    hold = _hold_after(r, config)
    deploy_id = r.deploy_id if hold else None
    if r.refused is not None:
        alert = Alert(Event.ROLLBACK_FAILED, Severity.CRITICAL, "refused", f"{r.refused}; {_WAITING}", incident)
        return Followup((alert,), hold, deploy_id=deploy_id)
    if r.ok:
        return Followup((
            Alert(Event.ROLLBACK_SUCCEEDED, Severity.WARNING, f"to {r.to_ref}", r.detail, incident),
            Alert(Event.INCIDENT_RESOLVED, Severity.INFO, "closed by the rollback", r.detail, incident),
        ))  # fmt: skip
    restart = r.plan is not None and r.plan.restart
    title = rollback_failure_title(r.to_ref, commands_failed=r.commands_failed, restart=restart)
    then = _WAITING if hold else _THEN_RESTART
    alert = Alert(Event.ROLLBACK_FAILED, Severity.CRITICAL, title, f"{r.detail}; {then}", incident)
    return Followup((alert,), hold, deploy_id=deploy_id)


def _hold_after(r: RollbackResult, config: Config) -> Hold | None:
    """Whether the loop's rollback that ended so holds its deploy, and why.

    1. Only the loop's: a person's rollback is theirs to follow up.
    2. Refused, or failed before HEAD moved: the deploy rolled back from is held, so that the
       loop does not try again every cycle.
    3. Checked out but still failing: the rolled-back release is held — an automatic rollback
       happens once per deploy — unless [process] can restart the app: decide() then gives it
       one restart and holds it if that does not cure it.
    4. A rollback the next start could only record (HEAD where a kill left it) holds nothing:
       the loop judges afresh what is checked out.
    """
    if r.who is not Who.LOOP or r.ok or r.deploy_id is None:
        return None
    match r.ending:
        case Ending.REFUSED:
            return Hold(f"automatic rollback refused: {r.refused}; {_WAITING}")
        case Ending.NOT_CHECKED_OUT:
            return Hold(one_line(f"automatic rollback failed: {r.detail}; {_WAITING}"))
        case Ending.CHECKED_OUT if config.process is None:
            return Hold(
                one_line(
                    f"rolled back to {r.to_ref} ({short(r.to_commit)}) but {r.why}; not rolling back again: "
                    f"{_WAITING} (healer rollback --to REF, healer repair, or a new deploy)"
                )
            )
    return None
