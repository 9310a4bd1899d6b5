"""What a person does to a running watchdog, from the command line or from chat: pause, resume,
ack, repair, roll back (I/O: the store, the playbooks, git, the outbox).

The CLI and the chat listeners call these same functions, so a chat command takes the same
locks, passes the same checks, writes the same record and says the same thing in every
channel; only `Actor` differs: `person` and the login name from the CLI, `telegram:123456`
from chat.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from healer.chatops import Ack, ack_in_force
from healer.clock import SystemClock
from healer.config import Config, format_duration
from healer.logging import log_event
from healer.model import Alert, Event, Outcome, Severity, Who

if TYPE_CHECKING:
    from healer.aftermath import RepairResult, RollbackResult
    from healer.checks import ProbeContext
    from healer.rollback_plan import Plan
    from healer.store import Store


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked."""

    who: Who | str  # the action row's `who`: Who.PERSON from the CLI, "telegram:123456" from chat
    name: str  # announced, and kept with a pause or an ack: a login name, or "telegram:123456"

    @classmethod
    def chat(cls, user: str) -> Actor:
        return cls(user, user)


def when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def announce(config: Config, event: Event, title: str, detail: str, severity: Severity = Severity.WARNING) -> None:
    """Queue a chat announcement of a person's command in the outbox (see send)."""
    send(config, (Alert(event, severity, title, detail, bypass_dedup=True),))


def send(config: Config, alerts: Sequence[Alert], *, fleet: bool = False) -> None:
    """Queue alerts in the outbox; the running loop's sender delivers them. `fleet`: they are
    said for the whole fleet (a person's coordinated rollback), not for this host."""
    from healer.alerts.shell import Alerts, CycleContext

    outbox = Alerts(config)
    try:
        outbox.submit_sync(alerts, CycleContext.of(config, fleet=fleet), SystemClock().now())
    finally:
        outbox.close()


# ---- pause, resume, ack (blocking: call from a worker thread in the event loop) ----------------


def pause(config: Config, actor: Actor, span: timedelta, reason: str) -> datetime:
    """Pause repairs and rollbacks for `span`, recorded and announced; returns when it ends."""
    from healer.store import Store

    now = SystemClock().now()
    until = now + span
    with Store(config.state_db) as store:
        d = store.current_deploy()
        store.add_pause(until, reason, actor.name, now)
        store.start_action(
            kind="pause", name=format_duration(span), who=actor.who, reason=reason, now=now,
            deploy_id=None if d is None else d.id, outcome=Outcome.OK, detail=f"until {when(until)}",
        )  # fmt: skip
    announce(
        config,
        Event.PAUSE_STARTED,
        f"Paused for {format_duration(span)}",
        f"{reason} (by {actor.name}); checks go on, no repair or rollback until {when(until)}",
    )
    return until


def resume(config: Config, actor: Actor, reason: str = "healer resume") -> bool:
    """End a pause now, recorded and announced; False when there was none."""
    from healer.store import Store

    now = SystemClock().now()
    if not config.state_db.exists():
        return False
    with Store(config.state_db) as store:
        ended = store.end_pause(now)
        if ended:
            d = store.current_deploy()
            store.start_action(
                kind="resume", name="pause", who=actor.who, reason=reason, now=now,
                deploy_id=None if d is None else d.id, outcome=Outcome.OK,
            )  # fmt: skip
    if ended:
        announce(
            config,
            Event.PAUSE_ENDED,
            "Resumed",
            f"by {actor.name}: repairs and rollbacks are armed again",
            Severity.INFO,
        )
    return ended


def acked(config: Config, store: Store, incident_id: int, now: datetime) -> Ack | None:
    """The incident's ack while it is in force (chatops.ack_in_force), else None."""
    ack = store.ack(incident_id)
    inc = store.incident(incident_id)
    in_force = ack_in_force(
        ack,
        resolved=inc is None or inc.resolved_at is not None,
        worsened_at=store.worsened_at(incident_id),
        now=now,
        expires=config.chatops.ack_expires,
    )
    return ack if in_force else None


@dataclass(frozen=True, slots=True)
class AckResult:
    """What an ack did: `done` when this call acknowledged the incident; `reply` says it."""

    done: bool
    reply: str


def ack(config: Config, actor: Actor, note: str, incident_id: int | None = None) -> AckResult:
    """Acknowledge the open incident (or `incident_id`): its reminders stop until it resolves,
    worsens or the ack expires. Recorded and announced."""
    from healer.store import Store

    now = SystemClock().now()
    if not config.state_db.exists():
        return AckResult(False, "no incident is open")
    with Store(config.state_db) as store:
        d = store.current_deploy()
        target = incident_id if incident_id is not None else (None if d is None else d.open_incident)
        inc = None if target is None else store.incident(target)
        if inc is None or inc.resolved_at is not None:
            return AckResult(
                False, "no incident is open" if incident_id is None else f"incident #{incident_id} is resolved"
            )
        before = acked(config, store, inc.id, now)
        if before is not None:
            return AckResult(False, f"incident #{inc.id} is already acknowledged by {before.who} ({when(before.at)})")
        store.set_ack(Ack(inc.id, now, actor.name, note))
        store.start_action(
            kind="ack", name=f"incident #{inc.id}", who=actor.who, reason=note or "acknowledged", now=now,
            deploy_id=inc.deploy_id, incident_id=inc.id, outcome=Outcome.OK,
        )  # fmt: skip
    until = now + config.chatops.ack_expires
    announce(
        config,
        Event.INCIDENT_ACKED,
        f"Acknowledged: incident #{inc.id}",
        f"by {actor.name}" + (f": {note}" if note else "") + f"; reminders stop until it worsens or {when(until)}",
        Severity.INFO,
    )
    return AckResult(
        True, f"incident #{inc.id} acknowledged: reminders stop until it resolves, worsens or {when(until)}"
    )


# ---- repair, rollback (async: they probe) --------------------------------------------------------


async def repair(config: Config, actor: Actor, kind: str, reason: str) -> RepairResult:
    """Run playbook `kind` now, under its lock, verified, recorded and announced. A success
    while healer holds the deploy arms healer again: a person fixed it (aftermath.follow_up)."""
    from healer import repair as rp
    from healer.aftermath import follow_up
    from healer.checks import probe_context
    from healer.store import Store

    with Store(config.state_db) as store:
        d = store.current_deploy()
        async with probe_context(config) as pctx:
            result = await rp.run_repair(
                kind, config=config, ctx=pctx, store=store, clock=SystemClock(), who=actor.who,
                reason=f"{reason} (by {actor.name})", deploy_id=None if d is None else d.id,
                incident_id=None if d is None else d.open_incident,
            )  # fmt: skip
        then = follow_up(result, config=config, deploy=d, by=actor.name)
        if then.release and then.deploy_id is not None:
            store.set_held(then.deploy_id, None)
    send(config, then.alerts)
    return result


async def rollback(
    config: Config, store: Store, ctx: ProbeContext, actor: Actor, reason: str, to: str | None,
    *, force: bool = False, mark_bad: bool = False,
) -> RollbackResult:  # fmt: skip
    """Roll back now (the plan was shown and confirmed by the caller): announced once it holds
    the rollback lock with an accepted plan, then its outcome.

    In a fleet ([fleet]) a person's rollback is the fleet's: before anything is touched it is
    recorded as the fleet's order (no lease needed: a person outranks the leader), every host on
    the release follows it at once, and the leader announces the one outcome. When the order
    cannot be recorded, nothing is rolled back (a lone host rolled back is a mixed fleet)."""
    import asyncio

    from healer import rollback as rb
    from healer.aftermath import FLEET_SAYS, follow_up, rollback_started

    fleet = config.fleet is not None
    order: int | None = None

    async def started(p: Plan) -> None:
        # under the rollback lock, the plan accepted: a lost race or a refusal announces nothing
        nonlocal order
        if fleet:
            order = await asyncio.to_thread(_order_fleet_rollback, config, store, p, f"{reason} (by {actor.name})")
        await asyncio.to_thread(send, config, (rollback_started(p, by=actor.name, fleet=fleet),), fleet=fleet)

    result = await rb.run_rollback(
        config=config, ctx=ctx, store=store, clock=SystemClock(), who=actor.who, reason=reason, to=to,
        force=force, mark_bad=mark_bad, on_start=started,
    )  # fmt: skip
    alerts = follow_up(result, config=config, by=actor.name).alerts
    if order is not None:
        # this host's part of the fleet's rollback: the leader's one outcome names every host
        await asyncio.to_thread(_report_fleet_rollback, config, order, result)
        alerts = tuple(a for a in alerts if a.event not in FLEET_SAYS)
    send(config, alerts)
    return result


def _order_fleet_rollback(config: Config, store: Store, p: Plan, reason: str) -> int:
    """Record a person's rollback as the fleet's order; its id (StoreError: nothing recorded)."""
    from healer import fleet_store
    from healer.db import Database
    from healer.fleet_judge import new_order
    from healer.notify import action_budget
    from healer.schedule import phase_at

    now = SystemClock().now()
    d = store.current_deploy()
    every = phase_at(now if d is None else d.first_seen, now, config.schedule).every
    wanted = new_order(p.from_commit, p.to_commit, p.to_ref, reason, now=now, every=every, budget=action_budget(config))
    fleet_store.migrate(config.shared_db)
    db = Database(config.shared_db)
    try:
        return fleet_store.order_rollback(db, None, wanted, app=config.fleet_app)
    finally:
        db.close()


def _report_fleet_rollback(config: Config, order: int, result: RollbackResult) -> None:
    """This host's word on the fleet's rollback it ordered (lost with a store that cannot be
    written: the leader then counts the host as not having followed, and says so)."""
    from healer import fleet_store
    from healer.db import Database
    from healer.errors import StoreError

    ok = result.ok and not result.refused
    try:
        db = Database(config.shared_db)
        try:
            fleet_store.report_rollback(db, order, config.fleet_host, ok, result.refused or result.detail,
                                        SystemClock().now())  # fmt: skip
        finally:
            db.close()
    except StoreError as e:
        log_event(logging.getLogger("healer"), "fleet.report_lost", level=logging.WARNING, order=order, error=str(e))
