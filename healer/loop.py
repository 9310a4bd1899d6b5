"""The watchdog loop: read the clock once, probe, judge, decide, act, record (I/O).

One `healer run` per state dir (a flock on `<state_dir>/healer.lock`; the kernel drops it on
kill -9). Everything the loop knows lives in the store, so a restarted loop resumes the
same window, baseline and failure count. Nothing in the loop blocks: SQLite and git run in
a worker thread; a check that raises or hangs is a failed result, never a crash.

A store that cannot be written (a full disk) does not blind the loop: its BufferedStore keeps
the writes in memory and the loop judges and acts on them, alerts go straight to the channels,
and the loop says so once (an error line, a critical alert, /healthz 503, healer_store_ok 0)
and once more when the backlog has been written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from healer import gitrepo, repair, rollback
from healer import report as reports
from healer.aftermath import (
    FLEET_SAYS,
    ActionOutcome,
    Crashed,
    Followup,
    NotRun,
    Observed,
    RepairResult,
    ResumedRollback,
    RollbackResult,
    fleet_rollback_started,
    follow_up,
    rollback_started,
)
from healer.alerts.message import (
    watching_after_repair,
)
from healer.backlog import BufferedStore
from healer.chat import listen
from healer.checks import ProbeContext, probe_context, run_checks
from healer.clock import Clock, SystemClock, stepped
from healer.config import Config, format_duration, format_elapsed
from healer.decide import Decision, Situation, decide
from healer.drift import drift_alerts
from healer.errors import FencedError, HealerError, LockedError, StoreError, StoreUnreachable
from healer.fleet_judge import RollbackAsk, freshness, new_order
from healer.heartbeat import Heartbeat
from healer.judge import REFERENCE_CYCLES, baseline_of, judge, reference_of
from healer.ladder import Cause, settled
from healer.locks import PEEKED, FileLock
from healer.logging import log_event
from healer.model import (
    Alert,
    Deploy,
    DeployState,
    Event,
    Hold,
    OpenIncident,
    Outcome,
    Reference,
    Repair,
    ResolveIncident,
    Rollback,
    Severity,
    Verdict,
    Who,
)
from healer.notify import Liveness, action_budget, notify, overdue_after, stall_limit, watchdog_pinger
from healer.rollback_plan import Plan
from healer.schedule import next_due, phase_at
from healer.server import start_server
from healer.store import CycleUpdate, Store
from healer.views import release_label
from healer.watch import (
    EARLY_SPACING,
    Watcher,
    actions_running,
    early_cycle_at,
    first_done,
    settle_for,
    woken_why,
)

if TYPE_CHECKING:
    from healer.fleet import Leadership

log = logging.getLogger("healer")
T = TypeVar("T")

# `healer deploy begin` / `end` (meta keys): the deploy script says when it runs.
DEPLOY_BEGUN_KEY = "deploy_begun_until"  # ISO time: record, act on nothing until then (or `end`)
DEPLOY_ENDED_KEY = "deploy_ended_commit"  # the commit at HEAD when the script said it was done

# While waiting for the next cycle, look at HEAD this often: a new deploy starts a new
# window at once, not at the end of a 4-hour wait.
HEAD_POLL = timedelta(seconds=1)
# ... but tell the store "the loop is alive" only this often (status allows 30 s), not every poll
SEEN_EVERY = timedelta(seconds=10)

# What stops healer. SIGHUP (a closed terminal, or `kill -HUP` meant as a reload) stops it like
# SIGTERM: healer.toml is read once, at start, so a reload would be a restart anyway.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# On a stop signal, a repair or rollback in flight (a restart waiting for the app to stop, a
# rollback's `after` command) gets this long to finish: the shipped systemd unit, PM2 and
# supervisor files give healer 15 s before SIGKILL, and recording, "stopped watching" and the
# alerts take about 1.5 s more. Past it, the action is cancelled: a repair is recorded as
# interrupted and a rollback stays journaled; the next `healer run` takes both up.
STOP_ACTION_WAIT = timedelta(seconds=10)
# ... and a cycle that is only probing or recording, this long.
STOP_CYCLE_WAIT = timedelta(milliseconds=800)
# What a repair whose verification failed beside the loop leaves: the next cycle judges the app
# and takes the ladder's next rung (another remedy, a rollback, or a hold).
VERIFY_FAILED_NEXT = "the next cycle decides the next step"


def event(name: str, **fields: Any) -> None:
    """Log one event: a dotted name plus fields (`repair.started kind=redis-flush`)."""
    log_event(log, name, **fields)


# ---- the watchdog ------------------------------------------------------------------------------


class AlertSink:
    """Hands each cycle's alerts to the alert pipeline (dedup, grouping, routing, outbox)."""

    def __init__(self, alerts: Any, config: Config, observe: bool, store: Store | None = None) -> None:
        self.alerts = alerts
        self.config = config
        self.observe = observe
        self.store = store  # to read whether a person acknowledged the open incident

    async def __call__(
        self, items: list[Alert], deploy: Deploy | None, verdict: Verdict | None, next_step: str,
        incident: tuple[int, datetime] | None, now: datetime, cause: str | None = None, fleet: bool = False,
    ) -> None:  # fmt: skip
        """`fleet`: said for the whole fleet by its leader (a coordinated rollback), not for this host."""
        from healer.alerts.shell import CycleContext

        # the message footer says "phase ...": pass the label without its own "phase " word
        phase = None if deploy is None else phase_at(deploy.first_seen, now, self.config.schedule).label
        phase = None if phase is None else phase.removeprefix("phase ")
        context = CycleContext.of(
            self.config,
            fleet=fleet,
            commit=None if deploy is None else deploy.commit[:12],
            phase=phase,
            incident_id=None if incident is None else incident[0],
            incident_since=None if incident is None else incident[1],
            summary="" if verdict is None else verdict.summary(),
            next_step=next_step,
            cause=cause,
            observe=self.observe,
            acked=await self._acked(incident, now),
        )
        await self.alerts.submit(items, context, now)

    async def _acked(self, incident: tuple[int, datetime] | None, now: datetime) -> bool:
        from healer.operations import acked

        if incident is None or self.store is None:
            return False
        store = self.store
        try:
            return await asyncio.to_thread(lambda: acked(self.config, store, incident[0], now) is not None)
        except StoreError:
            return False  # unreadable: remind, rather than stay silent


@dataclass(frozen=True, slots=True)
class _Verifying:
    """A repair of the loop whose verification goes on beside the loop, as a task it owns."""

    intent: Repair
    task: asyncio.Task[RepairResult]
    handoff: repair.Handoff
    deploy: Deploy
    incident: int | None


async def _until_handed_off(task: asyncio.Task[RepairResult], handoff: repair.Handoff) -> None:
    """Wait until the repair ends or hands its verification over to run beside the loop. A
    cancelled wait (a stop past its bound) cancels the repair too: it is recorded interrupted."""
    waiter = asyncio.ensure_future(handoff.verifying.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        waiter.cancel()


@dataclass
class CycleReport:
    """What one cycle did (for tests and the CLI)."""

    deploy: Deploy
    verdict: Verdict
    decision: Decision
    alerts: list[Alert] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    woken: str | None = None  # why the cycle ran before it was due (the watcher saw the app exit)
    verifying: list[str] = field(default_factory=list)  # repairs it left verified beside the loop


class Watchdog:
    """The loop over one app. `step()` runs one cycle; `run()` runs until `stop` is set."""

    def __init__(
        self,
        config: Config,
        store: BufferedStore,
        ctx: ProbeContext,
        *,
        clock: Clock | None = None,
        observe: bool = False,
        alert_sink: AlertSink | None = None,
        liveness: Liveness | None = None,
        heartbeat: Heartbeat | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.config = config
        self.leadership = leadership  # [fleet]: this host's standing; told of every cycle
        self.store = store
        self.ctx = ctx
        self.clock = clock or SystemClock()
        self.observe = observe or config.escalation.mode == "observe"
        self._alert_sink = alert_sink
        self._last_repair_at: datetime | None = None
        self._incident: tuple[int, datetime] | None = None
        self._cause: str | None = None  # the likely cause of the latest failing cycle, for alerts
        self._acting: str | None = None  # the repair or rollback the cycle carries out
        self._verifying: dict[str, _Verifying] = {}  # by playbook: repairs verified beside the loop
        self._stop: asyncio.Event | None = None  # run()'s: once set, no new action starts
        self._policies = repair.policies(config)  # validates the playbook files once, at start
        self.liveness = liveness or Liveness(stall_limit(config))
        self.heartbeat = heartbeat
        self._read_error: str | None = None  # the store could not even be read (last iteration)
        self._store_down: timedelta | None = None  # since when the store fails (monotonic; announced)
        # (deploy id, wall, monotonic) of the last cycle this process ran: its next one is counted
        # on the monotonic clock, whatever the wall clock does meanwhile
        self._last_cycle: tuple[int, datetime, timedelta] | None = None
        # (deploy id, its reference): the release before's pooled samples, read once per deploy
        self._reference_of: tuple[int, Reference | None] | None = None
        # (deploy id, its loop cycles so far, oldest first): what drift_alerts reads, from the
        # store once per deploy and then from memory
        self._cycles_of: tuple[int, list[Verdict]] | None = None
        # cycles in a row healer could not probe (in memory: a restart of healer only delays
        # the "can't tell" alert by a few cycles)
        self._unprobed_streak = 0
        # between cycles, the app's processes: an exit runs a cycle early (healer.watch)
        self.watcher = Watcher(config, self.clock, acting=self._is_acting)
        self._early_runs: list[datetime] = []  # when early cycles ran, for early_cycle_at's bound
        self._left_to_fleet: int | None = None  # [fleet]: the deploy whose rollback was not made here

    def _is_acting(self) -> bool:
        """A repair or rollback runs (this loop's, or a person's through healer): an exit of the
        app now is its doing, not a crash."""
        return self.acting is not None or actions_running(self.config.state_dir)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    @property
    def acting(self) -> str | None:
        """The repair or rollback in flight, for serve()'s stop bound: the cycle's own, or a
        repair still being verified beside the loop."""
        if self._acting is None and self._verifying:
            return "verifying " + ", ".join(self._verifying)
        return self._acting

    @acting.setter
    def acting(self, what: str | None) -> None:
        self._acting = what

    # -- deploy ------------------------------------------------------------------------------

    async def current_deploy(self) -> Deploy:
        """The deploy at HEAD; a new commit starts a new window (and is announced)."""
        commit = await asyncio.to_thread(gitrepo.head_commit, self.config.app.repo)
        now = self.clock.now()
        deploy, is_new = await self._db(self.store.ensure_deploy, commit, now)
        if is_new:
            event("deploy.new", commit=commit[:12], deploy=deploy.id)
            alerts = []
            if self._incident is not None:
                # the store closed the open incident with its deploy: say so to whoever was told it
                # opened (a failure of the new release opens an incident of its own)
                msg = "the release that failed was replaced; the new one is judged afresh"
                title = f"closed: {commit[:12]} was deployed"
                alerts.append(Alert(Event.INCIDENT_RESOLVED, Severity.INFO, title, msg, self._incident[0]))
                self._incident = None
            if deploy.state is DeployState.BAD:
                msg = f"commit {commit[:12]} was rolled back from before ({deploy.bad}); it is deployed again"
                alerts.append(Alert(Event.DEPLOY_BAD, Severity.CRITICAL, commit[:12], msg))
            await self._alert(alerts, deploy, None, "watching the new deploy")
        return deploy

    async def _reference(self, deploy: Deploy) -> Reference | None:
        """The release before this deploy, to judge it against (read once per deploy; a store
        that cannot be read gives none this cycle and is asked again the next)."""
        if self._reference_of is not None and self._reference_of[0] == deploy.id:
            return self._reference_of[1]
        try:
            found = await self._db(self.store.reference_cycles, deploy.id, REFERENCE_CYCLES)
        except StoreError:
            return None
        reference = None
        if found is not None:
            before, verdicts = found
            label = await asyncio.to_thread(release_label, self.config, before.commit, before.stable_tag)
            reference = reference_of(verdicts, label)
        self._reference_of = (deploy.id, reference)
        return reference

    async def _drift(self, deploy: Deploy, verdict: Verdict) -> tuple[Alert, ...]:
        """The alerts for a latency that first drifted at this cycle (healer.drift), over the
        deploy's loop cycles: read from the store once per deploy (a store that cannot be read
        gives none this cycle and is asked again the next), then kept in memory."""
        if self._cycles_of is None or self._cycles_of[0] != deploy.id:
            try:
                rows = await self._db(self.store.cycles, deploy_id=deploy.id)
            except StoreError:
                return ()
            self._cycles_of = (deploy.id, [Verdict(c.at, c.results) for c in rows if c.who == Who.LOOP])
        cycles = self._cycles_of[1]
        cycles.append(verdict)
        alerts = drift_alerts(cycles, deploy.baseline, self.config.escalation.drift)
        for a in alerts:
            event("latency.drifting", detail=a.detail)
        return alerts

    # -- one cycle ---------------------------------------------------------------------------

    async def step(self, woken: str | None = None) -> CycleReport:
        """Run one cycle now: probe, judge, decide, act, record (`woken`: why it runs early)."""
        await self._announce_verified()
        deploy = await self.current_deploy()
        now, mono = self.clock.now(), self.clock.monotonic()
        reference = await self._reference(deploy)
        # the probes see the reference too: an http check borderline against it samples more
        results = await run_checks(replace(self.ctx, reference=reference))
        verdict = judge(results, deploy.baseline, self.config.checks, now, reference=reference)
        situation = await self._situation(deploy, verdict, now)
        decision = await self._fleet_rollback(decide(situation, self.config), deploy, verdict)
        unprobed = decision.attribution is not None and decision.attribution.cause is Cause.UNPROBED
        self._unprobed_streak = self._unprobed_streak + 1 if unprobed else 0
        self._cause = None if decision.attribution is None else decision.attribution.label
        phase = phase_at(deploy.first_seen, now, self.config.schedule)
        is_settled = settled(
            deploy, now, self.config, head_moved=situation.head_moved, ended_commit=situation.deploy_ended_commit
        )
        update = CycleUpdate(
            consecutive_failures=decision.consecutive_failures,
            consecutive_passes=decision.consecutive_passes,
            emergency_streak=decision.emergency_streak,
            baseline=baseline_of(verdict) if deploy.baseline is None else None,
            open_incident_cause=next((i.cause for i in decision.intents if isinstance(i, OpenIncident)), None),
            resolve_incident=any(isinstance(i, ResolveIncident) for i in decision.intents),
            phase_index=phase.index,
            cause=self._cause,
            next_step=decision.next_step,
            settled=is_settled,
            woken=woken,
        )
        drifting = await self._drift(deploy, verdict)
        previous_phase = await self._db(self.store.phase_index, deploy.id)
        opened = await self._db(self.store.record_cycle, deploy.id, verdict, Who.LOOP, update)
        self._last_cycle = (deploy.id, verdict.at, mono)
        incident = opened if opened is not None else (None if update.resolve_incident else deploy.open_incident)
        event(
            "cycle.finished",
            ok=verdict.ok,
            failures=decision.consecutive_failures,
            summary=verdict.summary(),
            cause=self._cause,
            next=decision.next_step,
        )
        if update.baseline is not None:
            event("baseline.taken", deploy=deploy.id, commit=deploy.commit[:12])
        report = CycleReport(deploy=deploy, verdict=verdict, decision=decision, woken=woken)
        alerts: list[Alert] = []
        if previous_phase is not None and previous_phase != phase.index:
            alerts.append(Alert(Event.PHASE_CHANGED, Severity.INFO, phase.label, f"now in {phase.label}"))
        alerts += drifting
        acting = [i for i in decision.intents if isinstance(i, Repair | Rollback) and not i.observe]
        superseded = False
        if acting:
            # A commit deployed while the checks ran is not the one they judged: act on nothing,
            # the next cycle starts its window (never roll back, or mark bad, an unjudged fix).
            head = await asyncio.to_thread(gitrepo.head_commit, self.config.app.repo)
            superseded = head != deploy.commit
            if superseded:
                event("cycle.superseded", judged=deploy.commit[:12], head=head[:12])
        for intent in decision.intents:
            if isinstance(intent, Alert):
                alerts.append(_with_incident(intent, incident))
            elif isinstance(intent, Repair | Rollback) and superseded and not intent.observe:
                report.actions.append(f"skipped {type(intent).__name__.lower()}: a new commit was deployed")
            elif isinstance(intent, Repair):
                alerts += await self._guarded(self._repair(intent, deploy, incident, report), intent, incident)
            elif isinstance(intent, Rollback):
                alerts += await self._guarded(self._rollback(intent, deploy, incident, report), intent, incident)
            elif isinstance(intent, Hold):
                await self._supersede_verifying("the hold", "waiting for a person")
                await self._db(self.store.set_held, deploy.id, intent.reason)
                await self._db(
                    self.store.start_action, kind="hold", name="loop", who=Who.LOOP, reason=intent.reason,
                    now=now, deploy_id=deploy.id, incident_id=incident, outcome=Outcome.OK,
                )  # fmt: skip
                event("healer.held", reason=intent.reason)
        fleet_said = await self._settle_fleet_rollbacks(deploy, now) + await self._answer_asks(deploy, verdict, now)
        report.alerts = alerts + fleet_said
        next_step = decision.next_step
        if any(a.event == Event.REPAIR_SUCCEEDED for a in alerts):
            next_step = watching_after_repair(self.config.escalation.recover_after)
        elif report.verifying:
            next_step = f"checking that {', '.join(report.verifying)} worked, while cycles go on"
        if not superseded and any(isinstance(i, Rollback) and not i.observe for i in decision.intents):
            # the rollback started a new deploy window: speak of it, not of the one rolled back from
            after: Deploy | None = await self._db(self.store.current_deploy)
            deploy = after or deploy
            next_step = "watching the rolled-back version" if deploy.held is None else f"held: {deploy.held}"
            incident = None
        if incident is None:
            self._incident = None
        elif self._incident is None or self._incident[0] != incident:
            row = await self._db(self.store.incident, incident)
            self._incident = None if row is None else (row.id, row.opened_at)
        await self._alert(alerts, deploy, verdict, next_step, always=True)
        if fleet_said:
            await self._alert(fleet_said, deploy, None, "watching", fleet=True)
        if verdict.ok:
            with contextlib.suppress(HealerError):
                tag = await rollback.maybe_tag_stable(config=self.config, store=self.store, clock=self.clock)
                if tag:
                    event("deploy.tagged_stable", tag=tag)
                    await self._alert(
                        [Alert(Event.DEPLOY_TAGGED, Severity.INFO, tag, f"{deploy.commit[:12]} tagged {tag}")],
                        deploy, verdict, decision.next_step,
                    )  # fmt: skip
        return report

    async def _fleet_rollback(self, decision: Decision, deploy: Deploy, verdict: Verdict) -> Decision:
        """[fleet]: a rollback is the fleet's, decided by its leader over every host's verdict.

        1. Without [fleet] the decision stands.
        2. The leader ordered a rollback away from this release that this host has not followed
           yet: follow it, to the same commit, whatever this host's own verdict.
        3. Without a rollback to make, the decision stands.
        4. The leader rolls back when most fresh hosts on the release fail (fleet_judge).
        5. Otherwise the rollback is not made: a follower leaves it to the leader; for the leader
           one sick host is that host's trouble (its own healer restarts its app), and a registry
           it cannot read decides nothing. Said in the log, and recorded once per deploy.
        """
        leadership = self.leadership
        if leadership is None:
            return decision
        rollbacks = [i for i in decision.intents if isinstance(i, Rollback)]
        with contextlib.suppress(StoreError):  # unreadable: the next cycle looks again
            order = await leadership.order_for(deploy.commit)
            if order is not None:  # the fleet rolls this release back: every host follows
                event("fleet.rollback_following", order=order.id, to=order.to_ref)
                follow = Rollback(f"the fleet rolls back ({order.reason})", observe=self.observe, to=order.target,
                                  order=order.id)  # fmt: skip
                intents = (*(i for i in decision.intents if i not in rollbacks), follow)
                return replace(decision, intents=intents, next_step="following the fleet's rollback")
        rollbacks = [i for i in rollbacks if not i.observe]
        if not rollbacks:
            return decision
        if not leadership.is_leader:
            why = await self._ask_leader(rollbacks[0], deploy, verdict)
        else:
            from healer import pg

            every = phase_at(deploy.first_seen, verdict.at, self.config.schedule).every
            try:
                judged = await leadership.judge_release(deploy.commit, verdict.ok, freshness(leadership.lease, every))
            except (pg.Error, OSError, TimeoutError) as e:
                why = f"the fleet's hosts cannot be read ({leadership.server.reason(e)})"
            else:
                if judged.is_failing:
                    event("fleet.release_failing", release=deploy.commit[:12], hosts=judged.describe())
                    return decision
                why = f"{judged.describe()}: not the release's fault, no fleet rollback"
        event("fleet.rollback_not_made", release=deploy.commit[:12], reason=why)
        if self._left_to_fleet != deploy.id:
            self._left_to_fleet = deploy.id
            await self._db(
                self.store.start_action, kind="rollback", name="fleet", who=Who.LOOP, reason=why,
                now=verdict.at, deploy_id=deploy.id, outcome=Outcome.SKIPPED,
            )  # fmt: skip
        intents = tuple(i for i in decision.intents if i not in rollbacks)
        return replace(decision, intents=intents, next_step=why)

    async def _ask_leader(self, intent: Rollback, deploy: Deploy, verdict: Verdict) -> str:
        """[fleet], a follower whose ladder reached a rollback: ask the leader to judge this
        release over the fleet (it may run another: this host a canary), with the target this
        host's rollback would go to (its plan, made and not carried out). What this host does
        instead, for people."""
        assert self.leadership is not None
        try:
            planned = await rollback.run_rollback(
                config=self.config, ctx=self.ctx, store=self.store, clock=self.clock, who=Who.LOOP,
                reason=intent.reason, mark_bad=intent.mark_bad, dry_run=True,
            )  # fmt: skip
        except HealerError as e:
            return f"the fleet's leader decides rollbacks; this host's rollback cannot be planned: {e}"
        p = planned.plan
        if p is None or not p.ok:
            return f"the fleet's leader decides rollbacks; this host's rollback would be refused: {planned.refused}"
        ask = RollbackAsk(self.config.fleet_host, deploy.commit, p.to_commit, p.to_ref, intent.reason, verdict.at)
        try:
            await self.leadership.ask_rollback(ask)
        except StoreError as e:
            return f"the fleet's leader decides rollbacks; it cannot be asked: {e}"
        return f"asked the fleet's leader to roll back to {p.to_ref} (it judges {deploy.commit[:12]} over every host)"

    async def _answer_asks(self, deploy: Deploy, verdict: Verdict, now: datetime) -> list[Alert]:
        """[fleet], the leader: order the rollbacks the followers asked for, of releases most of
        whose fresh hosts fail (fleet_judge.asks_to_order); each said once, for the fleet."""
        leadership = self.leadership
        if leadership is None or not leadership.is_leader:
            return []
        from healer import pg

        every = phase_at(deploy.first_seen, now, self.config.schedule).every
        try:
            todo = await leadership.asked(deploy.commit, verdict.ok, freshness(leadership.lease, every))
        except (pg.Error, OSError, TimeoutError, StoreError) as e:  # the next cycle looks again
            event("fleet.unreachable", error=str(e))
            return []
        said = []
        for ask, judged in todo:
            reason = f"{judged.describe()}: {ask.reason}"
            wanted = new_order(ask.release, ask.target, ask.to_ref, reason, now=now, every=every,
                               budget=action_budget(self.config))  # fmt: skip
            try:
                order = await leadership.order_rollback(wanted)
            except StoreError as e:  # FencedError too: it no longer leads
                event("fleet.rollback_not_made", release=ask.release[:12], reason=str(e))
                continue
            event("fleet.rollback_ordered", order=order, release=ask.release[:12], to=ask.to_ref, asked_by=ask.host)
            said.append(fleet_rollback_started(ask.release, ask.target, ask.to_ref, reason))
        return said

    async def _situation(self, deploy: Deploy, verdict: Verdict, now: datetime) -> Situation:
        """What decide() needs besides the verdict, read from the store and the repository."""
        meta = await self._db(self.store.meta)
        begun = meta.get(DEPLOY_BEGUN_KEY)
        incident = None if deploy.open_incident is None else await self._db(self.store.incident, deploy.open_incident)
        previous = await self._db(self.store.previous_deploy, deploy.id)
        failing = not verdict.ok
        return Situation(
            deploy=deploy,
            verdict=verdict,
            now=now,
            pause=await self._db(self.store.active_pause, now),
            observe=self.observe,
            repairs=await self._db(self.store.past_repairs, deploy.id),
            playbooks=self._policies,
            has_rollback_target=(verdict.ok or await asyncio.to_thread(rollback.has_target, self.config, self.store)),
            previous_healthy=None if previous is None else previous.last_ok,
            head_moved=previous is not None,
            incident_since=None if incident is None else incident.opened_at,
            deploy_begun_until=datetime.fromisoformat(begun) if begun else None,
            deploy_ended_commit=meta.get(DEPLOY_ENDED_KEY),
            previous_cause=await self._db(self.store.last_cause, deploy.id) if failing else None,
            unprobed_streak=self._unprobed_streak,
        )

    async def _guarded(
        self, action: Awaitable[list[Alert]], intent: Repair | Rollback, incident: int | None
    ) -> list[Alert]:
        """An action that fails in a way nobody foresaw is told, not lost with the cycle's alerts.
        While it runs, `acting` names it: a stop signal then lets it finish (STOP_ACTION_WAIT)."""
        what = intent.kind if isinstance(intent, Repair) else "rollback"
        before, self.acting = self._acting, what  # nested (a verification announced in a rollback): restored
        try:
            return await action
        except Exception as e:
            log_event(log, "action.crashed", level=logging.ERROR, action=what, error=f"{type(e).__name__}: {e}")
            return await self._follow_up(Crashed(intent, f"{type(e).__name__}: {e}"), None, incident)
        finally:
            self.acting = before

    def _stopping(self, report: CycleReport, what: str) -> bool:
        """A stop was asked for: start no action now (the next start decides again)."""
        if self._stop is None or not self._stop.is_set():
            return False
        event("action.not_started", action=what, why="healer is stopping")
        report.actions.append(f"{what}: not started, healer is stopping")
        return True

    async def _repair(self, intent: Repair, deploy: Deploy, incident: int | None, report: CycleReport) -> list[Alert]:
        now = self.clock.now()
        if intent.observe:
            await self._db(
                self.store.start_action, kind="repair", name=intent.kind, who=Who.LOOP,
                reason=f"observe mode: {intent.reason}", now=now, deploy_id=deploy.id,
                incident_id=incident, outcome=Outcome.SKIPPED, note="observe",
            )  # fmt: skip
            report.actions.append(f"would repair {intent.kind}")
            event("repair.would_run", kind=intent.kind, reason=intent.reason)
            return await self._follow_up(Observed(intent), deploy, incident)
        if self._stopping(report, f"repair {intent.kind}"):
            return []
        event("repair.started", kind=intent.kind, reason=intent.reason)
        handoff = repair.Handoff()
        running = repair.run_repair(
            intent.kind, config=self.config, ctx=self.ctx, store=self.store, clock=self.clock,
            who=Who.LOOP, reason=intent.reason, deploy_id=deploy.id, incident_id=incident, handoff=handoff,
        )  # fmt: skip
        task = asyncio.create_task(running)
        # `repair_grace` counts from the repair's start: the next cycle judges the app then
        self._last_repair_at = now
        with self.liveness.busy(action_budget(self.config)):
            await _until_handed_off(task, handoff)
        if not task.done():
            # the steps are done and the app is not healthy yet: cycles go on while the repair is
            # verified (decide sees it `started`, and does not start it again)
            self._verifying[intent.kind] = _Verifying(intent, task, handoff, deploy, incident)
            report.actions.append(f"repair {intent.kind}: verifying")
            report.verifying.append(intent.kind)
            event("repair.verifying", kind=intent.kind)
            return []
        return await self._repaired(intent, task, deploy, incident, report)

    async def _repaired(
        self, intent: Repair, task: asyncio.Task[RepairResult], deploy: Deploy, incident: int | None,
        report: CycleReport | None = None,
    ) -> list[Alert]:  # fmt: skip
        """Record and announce how the loop's repair ended (its task is done)."""
        now = self.clock.now()
        try:
            result = task.result()
        except HealerError as e:
            await self._db(
                self.store.start_action, kind="repair", name=intent.kind, who=Who.LOOP, reason=intent.reason,
                now=now, deploy_id=deploy.id, incident_id=incident, outcome=Outcome.ERROR, detail=str(e),
            )  # fmt: skip
            event("repair.error", kind=intent.kind, error=str(e))
            if report is not None:
                report.actions.append(f"repair {intent.kind}: error")
            return await self._follow_up(NotRun(intent, str(e)), deploy, incident)
        if report is not None:
            report.actions.append(f"repair {intent.kind}: {'ok' if result.ok else 'failed'}")
        event("repair.finished", kind=intent.kind, ok=result.ok, detail=result.detail)
        return await self._follow_up(result, deploy, incident)

    async def _announce_verified(self, then: str = VERIFY_FAILED_NEXT) -> None:
        """Record and announce the repairs whose verification ended beside the loop; `then` is
        what follows one that failed."""
        for kind, v in list(self._verifying.items()):
            if not v.task.done():
                continue
            del self._verifying[kind]
            alerts = await self._guarded(self._repaired(v.intent, v.task, v.deploy, v.incident), v.intent, v.incident)
            ok = any(a.event == Event.REPAIR_SUCCEEDED for a in alerts)
            next_step = watching_after_repair(self.config.escalation.recover_after) if ok else then
            await self._alert(alerts, v.deploy, None, next_step)

    async def _supersede_verifying(self, by: str, then: str) -> None:
        """Before a rollback (or a hold) acts, end the verifications going on beside the loop:
        each is recorded failed, superseded by it, and announced before it (`then`: what follows)."""
        if not self._verifying:
            return
        for v in self._verifying.values():
            v.handoff.supersede(by)
            event("repair.superseded", kind=v.intent.kind, by=by)
        await asyncio.wait([v.task for v in self._verifying.values()])
        await self._announce_verified(then)

    async def _end_verifying(self) -> None:
        """At a stop: let the verifications beside the loop end (serve() bounds the wait and then
        cancels the loop, and with it each verification: recorded interrupted, for the next start)."""
        if self._verifying:
            await asyncio.gather(*(v.task for v in self._verifying.values()), return_exceptions=True)
            await self._announce_verified()

    async def _rollback(
        self, intent: Rollback, deploy: Deploy, incident: int | None, report: CycleReport
    ) -> list[Alert]:
        now = self.clock.now()
        if intent.observe:
            await self._db(
                self.store.start_action, kind="rollback", name="(would)", who=Who.LOOP,
                reason=f"observe mode: {intent.reason}", now=now, deploy_id=deploy.id,
                incident_id=incident, outcome=Outcome.SKIPPED, note="observe",
            )  # fmt: skip
            report.actions.append("would roll back")
            event("rollback.would_run", reason=intent.reason)
            await self._report_to_fleet(intent.order, False, "observe mode: would roll back")
            return await self._follow_up(Observed(intent), deploy, incident)
        if self._stopping(report, "rollback"):
            return []
        await self._supersede_verifying("the rollback", "rolling back")

        order = intent.order  # [fleet]: the fleet rollback this one is part of

        async def started(p: Plan) -> None:
            nonlocal order
            if self.leadership is not None and order is None:
                # the leader's decision, for every host on the release: recorded under its
                # lease before anything is touched (FencedError: it no longer leads)
                every = phase_at(deploy.first_seen, now, self.config.schedule).every
                wanted = new_order(p.from_commit, p.to_commit, p.to_ref, intent.reason, now=now, every=every,
                                   budget=action_budget(self.config))  # fmt: skip
                order = await self.leadership.order_rollback(wanted)
                event("fleet.rollback_ordered", order=order, to=p.to_ref)
            # said under the rollback lock, once the plan is accepted: never for a lost race; in a
            # fleet once, by the host that ordered it, for the fleet (a follower's is the leader's)
            event("rollback.started", reason=intent.reason, to=p.to_ref)
            if self.leadership is None:
                await self._alert([rollback_started(p, incident=incident)], deploy, None, "rolling back")
            elif intent.order is None:
                await self._alert([rollback_started(p, fleet=True)], deploy, None, "rolling back", fleet=True)

        try:
            with self.liveness.busy(action_budget(self.config)):
                result = await rollback.run_rollback(
                    config=self.config, ctx=self.ctx, store=self.store, clock=self.clock,
                    who=Who.LOOP, reason=intent.reason, to=intent.to, mark_bad=intent.mark_bad, on_start=started,
                )  # fmt: skip
        except FencedError as e:
            event("fleet.rollback_not_made", reason=str(e))
            report.actions.append("rollback: not made, this healer no longer leads")
            return []
        except LockedError as e:
            # a person's rollback is running: theirs is announced and decides; the next cycle
            # judges what it leaves, so nothing is said, held or recorded here
            event("rollback.skipped", reason=str(e))
            report.actions.append("rollback: skipped, another rollback is running")
            return []
        except HealerError as e:
            event("rollback.error", error=str(e))
            report.actions.append("rollback: error")
            await self._report_to_fleet(order, False, str(e))
            return await self._follow_up(NotRun(intent, str(e)), deploy, incident)
        await self._report_to_fleet(order, result.ok and not result.refused, result.refused or result.detail)
        if result.refused:
            report.actions.append("rollback: refused")
            event("rollback.refused", why=result.refused)
        else:
            report.actions.append(f"rollback to {result.to_ref}: {'ok' if result.ok else 'failed'}")
            event("rollback.finished", ok=result.ok, to=result.to_ref, detail=result.detail)
        alerts = await self._follow_up(result, deploy, incident)
        if order is None:
            return alerts
        # part of the fleet's rollback: its one outcome, naming every host, is the leader's to say
        return [a for a in alerts if a.event not in FLEET_SAYS]

    async def _report_to_fleet(self, order: int | None, ok: bool, detail: str) -> None:
        """[fleet]: this host's word on the fleet rollback it took part in (lost with a store
        that cannot be written: the leader then counts the host as not having followed)."""
        if self.leadership is None or order is None:
            return
        try:
            await self.leadership.report_rollback(order, ok, detail, self.clock.now())
        except StoreError as e:
            event("fleet.report_lost", order=order, error=str(e))

    async def _report_resumed(self, r: RollbackResult) -> bool:
        """[fleet]: a rollback a kill cut short and this start finished may have been this host's
        part of the fleet's: its report, which the killed process never made. Whether it was."""
        if self.leadership is None or not r.from_commit or not r.to_commit:
            return False
        try:
            order = await self.leadership.order_for(r.from_commit)
        except StoreError:  # unreadable: the leader counts no report, and says so
            return False
        if order is None or order.target != r.to_commit:
            return False
        await self._report_to_fleet(order.id, r.ok, r.detail)
        return True

    async def _settle_fleet_rollbacks(self, deploy: Deploy, now: datetime) -> list[Alert]:
        """[fleet], the leader: the one outcome of each fleet rollback now complete, naming the
        hosts that did not follow."""
        leadership = self.leadership
        if leadership is None or not leadership.is_leader:
            return []
        from healer import pg

        every = phase_at(deploy.first_seen, now, self.config.schedule).every
        try:
            outcomes = await leadership.settle_rollbacks(now, freshness(leadership.lease, every))
        except (pg.Error, OSError, TimeoutError, StoreError) as e:  # the next cycle tries again
            event("fleet.unreachable", error=str(e))
            return []
        alerts = []
        for o in outcomes:
            event("fleet.rollback_finished", ok=o.ok, outcome=o.text)
            kind, severity = (
                (Event.ROLLBACK_SUCCEEDED, Severity.INFO) if o.ok else (Event.ROLLBACK_FAILED, Severity.CRITICAL)
            )
            alerts.append(Alert(kind, severity, "the fleet's rollback", o.text, bypass_dedup=True))
        return alerts

    async def _follow_up(self, outcome: ActionOutcome, deploy: Deploy | None, incident: int | None) -> list[Alert]:
        """What follows an action of the loop: the hold carried out, the alerts for the cycle."""
        return list((await self._carry_out(outcome, deploy, incident)).alerts)

    async def _carry_out(self, outcome: ActionOutcome, deploy: Deploy | None, incident: int | None) -> Followup:
        """Carry out what follows an action of the loop (aftermath.follow_up): hold the deploy it
        names for a person. The alerts are the caller's to send."""
        then = follow_up(outcome, config=self.config, deploy=deploy, incident=incident)
        if then.hold is not None and then.deploy_id is not None:
            await self._db(self.store.set_held, then.deploy_id, then.hold.reason)
        return then

    async def _alert(
        self, alerts: list[Alert], deploy: Deploy | None, verdict: Verdict | None, next_step: str,
        *, always: bool = False, fleet: bool = False,
    ) -> None:  # fmt: skip
        """Hand alerts to the pipeline; `always` also lets it send due reminders; `fleet`: they
        are the fleet's (AlertSink)."""
        if self._alert_sink is None:
            for a in alerts:
                event("alert", alert=a.event, severity=a.severity.name.lower(), title=a.title, detail=a.detail)
            return
        if not alerts and not always:
            return
        try:
            cause = None if verdict is None or verdict.ok else self._cause
            incident = None if fleet else self._incident
            await self._alert_sink(alerts, deploy, verdict, next_step, incident, self.clock.now(), cause, fleet)
        except Exception as e:
            event("alert.error", error=f"{type(e).__name__}: {e}")

    # -- the loop ------------------------------------------------------------------------------

    async def _announce_expired_pauses(self, deploy: Deploy, now: datetime) -> None:
        """A pause that ran out by itself is announced once: healer is armed again."""
        for pause_id, reason in await self._db(self.store.expired_unannounced_pauses, now):
            event("pause.expired", reason=reason)
            msg = f"the pause ({reason}) expired: repairs and rollbacks are armed again"
            await self._alert([Alert(Event.PAUSE_ENDED, Severity.INFO, "pause expired", msg)], deploy, None, "watching")
            await self._db(self.store.mark_pause_announced, pause_id)

    async def _summaries(self, deploy: Deploy, now: datetime) -> None:
        """Daily chat summaries during the launch window, and a final one when it ends."""
        sent_for, _, sent_at = (await self._db(self.store.meta)).get("summary_sent", "").partition(" ")
        last = datetime.fromisoformat(sent_at) if sent_for == str(deploy.id) and sent_at else None
        window = self.config.schedule.window
        for label in reports.due_summaries(deploy.first_seen, window, last, now):
            start, end = reports.summary_period(label, deploy.first_seen, window)
            rep = await self._db(
                reports.load_report,
                self.store,
                start=start,
                now=min(end, now),
                sla_target=self.config.report.sla_target,
            )
            final = label == reports.FINAL
            name = self.config.app.name
            title = f"{name}: launch window over" if final else f"{name}: day {label[4:]} of the launch window"
            kind = Event.REPORT_FINAL if final else Event.REPORT_DAILY
            text = reports.render_text(rep, title)
            await self._alert([Alert(kind, Severity.INFO, title, text, bypass_dedup=True)], deploy, None, "watching")
            await self._db(self.store.set_meta, summary_sent=f"{deploy.id} {now.isoformat()}")

    async def due_at(self, deploy: Deploy) -> datetime:
        return next_due(
            deploy_at=deploy.first_seen,
            last_cycle_at=deploy.last_cycle_at,
            failing=deploy.last_ok is False,
            schedule=self.config.schedule,
            last_repair_at=self._last_repair_at,
            repair_grace=self.config.escalation.repair_grace,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until `stop` is set, the watcher beside (healer.watch): an exit of the app
        between cycles runs one early."""
        watching = asyncio.create_task(self.watcher.run(stop))
        try:
            await self._cycles(stop)
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _cycles(self, stop: asyncio.Event) -> None:
        """Cycle until `stop` is set. Each wait is cut short by `stop`, a new HEAD or a wake
        from the watcher. First, take up what a stop or a kill cut short: a rollback, then the
        repairs."""
        self._stop = stop
        self.acting = "the interrupted rollback"
        try:
            with self.liveness.busy(action_budget(self.config)):
                resumed = await rollback.resume_unfinished(
                    config=self.config, ctx=self.ctx, store=self.store, clock=self.clock
                )
        except Exception as e:
            resumed = []
            log_event(log, "rollback.resume_error", level=logging.ERROR, error=f"{type(e).__name__}: {e}")
        finally:
            self.acting = None
        for r in resumed:
            event("rollback.resumed", ok=r.ok, detail=r.detail)
            fleets = await self._report_resumed(r)
            after = await self._carry_out(ResumedRollback(r), None, None)
            said = [a for a in after.alerts if not (fleets and a.event in FLEET_SAYS)]  # the leader's to say
            await self._alert(said, None, None, after.next_step or "watching")
        if not stop.is_set():
            await self._resume_repairs()
        # Waits, "every 10 s" and "every hour" are counted on the monotonic clock: a wall clock
        # set back an hour must not stop the cycles for an hour, nor one set forward rush them.
        pruned_at: timedelta | None = None
        started = False  # lateness at start is downtime, not a stall
        seen: tuple[timedelta, datetime] | None = None  # (when, next due) last written for `healer status`
        reading: tuple[datetime, timedelta] | None = None  # the last iteration's (wall, monotonic)
        while not stop.is_set():
            try:
                await self._announce_verified()
                await self._db(self.store.retry)
                await self._watch_store()
                deploy = await self.current_deploy()
                self._read_error = None
                due = await self.due_at(deploy)
                now, mono = self.clock.now(), self.clock.monotonic()
                step = None if reading is None else stepped(reading, (now, mono))
                reading = (now, mono)
                if step is not None:
                    await self._announce_clock_step(step, deploy, now)
                left = self._time_left(deploy, due, now, mono)
                if seen is None or seen[1] != due or mono - seen[0] >= SEEN_EVERY:
                    then = now + max(left, timedelta(0))  # in today's wall-clock time, for `healer status`
                    await self._db(self.store.set_meta, loop_seen=now.isoformat(), next_due=then.isoformat())
                    seen = (mono, due)
                self.liveness.beat()
                await self._announce_expired_pauses(deploy, now)
                early = early_cycle_at(self.watcher.pending, self._early_runs, now, settle=settle_for(self.config))
                ordered = self.leadership is not None and self.leadership.ordered.is_set()
                if left > timedelta(0) and not ordered and (early is None or early > now):
                    # only a new wake can bring an early cycle nearer: pending ones set `early`
                    wakes = [] if self.watcher.pending else [self.watcher.changed]
                    if self.leadership is not None:  # the fleet's rollback waits for this host
                        wakes.append(self.leadership.ordered)
                    delay = min(left, HEAD_POLL) if early is None else min(left, HEAD_POLL, early - now)
                    await self._wait(stop, delay, *wakes)
                    continue
                late = -left
                if started and late > overdue_after(due - (deploy.last_cycle_at or due)):
                    # the cycle is later than twice its cadence: a stall healer must own up to
                    msg = f"the cycle due at {now - late:%H:%M:%S} UTC ran {format_elapsed(late)} late"
                    event("meta.loop_behind", late_s=int(late.total_seconds()))
                    await self._alert(
                        [Alert(Event.META_LOOP_BEHIND, Severity.WARNING, "a cycle ran late", msg, bypass_dedup=True)],
                        deploy, None, "catching up",
                    )  # fmt: skip
                started = True
                woken = self._woken(now, early=left > timedelta(0))
                if ordered and self.leadership is not None:
                    self.leadership.ordered.clear()
                    woken = woken or "the fleet's rollback waits for this host"
                cycle = await self.step(woken)
                if cycle.actions:
                    self.watcher.refresh()  # a restart or rollback left new PIDs to watch
                self.liveness.beat()
                if self.heartbeat is not None:
                    self.heartbeat.ping_soon(cycle.verdict.ok)
                if self.leadership is not None:
                    await self.leadership.report_cycle(cycle.deploy.commit, cycle.verdict.at, cycle.verdict.ok)
                phase = phase_at(cycle.deploy.first_seen, now, self.config.schedule)
                failures = f"{cycle.decision.consecutive_failures}/{self.config.escalation.rollback_after}"
                notify(f"STATUS={phase.label}; {cycle.verdict.summary()}; failures {failures}")
                await self._summaries(cycle.deploy, self.clock.now())
                if pruned_at is None or mono - pruned_at > timedelta(hours=1):
                    n = await self._db(self.store.prune, now - self.config.retention)
                    if isinstance(self._alert_sink, AlertSink):  # and the alerts nothing waits for
                        with contextlib.suppress(StoreError):  # a full disk: the next prune does it
                            n += await self._db(self._alert_sink.alerts.outbox.prune, now - self.config.retention)
                    pruned_at = mono
                    if n:
                        event("store.pruned", rows=n)
            except StoreError as e:
                self._read_error = str(e)  # not even memory helps: said once by _watch_store
                event("store.error", error=str(e))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
            except HealerError as e:
                event("loop.error", error=str(e))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
            except Exception as e:
                log_event(log, "loop.crashed_cycle", level=logging.ERROR, error=f"{type(e).__name__}: {e}")
                log.debug("loop.crashed_cycle", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 5)
        await self._end_verifying()

    def _time_left(self, deploy: Deploy, due: datetime, now: datetime, mono: timedelta) -> timedelta:
        """How long until the cycle due at `due` (wall clock), measured so that a stepped wall
        clock neither stalls the loop nor rushes it.

        1. After a cycle this process ran: the interval next_due asked for (`due` minus that
           cycle's time), counted on the monotonic clock from that cycle.
        2. Otherwise (the first cycle after a start, a new deploy): the wall clock, with a
           last cycle (or a deploy) "in the future" — the clock was set back since — taken as
           now, so the wait is at most one interval.
        """
        last = deploy.last_cycle_at
        mine = self._last_cycle
        if mine is not None and last is not None and (mine[0], mine[1]) == (deploy.id, last):
            return mine[2] + (due - last) - mono
        if last is None:  # next_due: "no cycle yet: now"; a deploy seen "later" than now is now too
            return min(due - now, timedelta(0))
        return due - max(now, last)

    async def _announce_clock_step(self, step: timedelta, deploy: Deploy, now: datetime) -> None:
        """Say once that the wall clock was stepped, which way and by how much."""
        way = "forward" if step > timedelta(0) else "back"
        size = format_elapsed(abs(step))
        log_event(log, "clock.stepped", level=logging.WARNING, way=way, by_s=round(abs(step).total_seconds(), 1),
                  now=now.isoformat())  # fmt: skip
        msg = (
            f"The system's wall clock jumped {way} by {size} (it now reads {now:%Y-%m-%d %H:%M:%S} UTC). "
            "healer keeps its cadence on the monotonic clock; what it records from now on carries the new "
            "wall-clock times."
        )
        title = f"the wall clock jumped {way} {size}"
        await self._alert([Alert(Event.META_CLOCK_STEP, Severity.WARNING, title, msg, bypass_dedup=True)], deploy, None,
                          "watching")  # fmt: skip

    def _woken(self, now: datetime, *, early: bool) -> str | None:
        """Hand the watcher's wakes to the cycle about to run; for one run before it was due,
        say why and count it toward early_cycle_at's bound."""
        wakes = self.watcher.take()
        if not early or not wakes:
            return None
        # the bound counts at most as many runs as EARLY_SPACING has steps: keep no more
        self._early_runs = [*self._early_runs[-len(EARLY_SPACING.backoff) :], now]
        why = woken_why(wakes)
        event("cycle.woken", why=why)
        return why

    async def _wait(self, stop: asyncio.Event, delay: timedelta, *wakes: asyncio.Event) -> None:
        """Sleep `delay` on the clock (the event loop's monotonic clock, for the real one), or
        until `stop` (or one of `wakes`) is set."""
        await first_done(self.clock.sleep(delay), stop.wait(), *(w.wait() for w in wakes))

    async def _watch_store(self) -> None:
        """Say once when the store stops taking writes, and once when it has taken the backlog.

        While it fails, /healthz answers 503 and healer_store_ok is 0 (through `liveness`);
        the loop goes on from the BufferedStore's memory and alerts go straight to the channels.
        """
        error = self.store.write_error or self._read_error
        now = self.clock.monotonic()
        if error is not None:
            self.liveness.store_failed(error)
            if self._store_down is not None:
                return
            self._store_down = now
            log_event(
                log, "store.unwritable", level=logging.ERROR, error=error,
                then="judging and acting from memory, alerts sent directly, written once the store works",
            )  # fmt: skip
            msg = (
                f"{error}. healer goes on judging and acting from memory and sends alerts straight to the "
                "channels; what happens is written once the store can be written again (free some space)."
            )
            alert = Alert(Event.META_STORE_FAILED, Severity.CRITICAL, "the state store cannot be written", msg,
                          bypass_dedup=True)  # fmt: skip
            await self._alert([alert], None, None, "working from memory")
            return
        if self._store_down is None:
            return
        self.liveness.store_ok()
        written, dropped = await self._db(self.store.take_counts)
        down = format_elapsed(now - self._store_down)
        self._store_down = None
        log_event(log, "store.recovered", level=logging.WARNING, down=down, written=written, forgotten=dropped)
        lost = f"; {dropped} routine cycles were forgotten (too many to keep)" if dropped else ""
        msg = f"After {down}, {written} writes kept in memory were written{lost}."
        alert = Alert(
            Event.META_STORE_RECOVERED, Severity.WARNING, "the state store works again", msg, bypass_dedup=True
        )
        await self._alert([alert], None, None, "watching")

    async def _resume_repairs(self) -> None:
        """Run again, once, the loop's repairs a stop or a kill cut short (repair.resume_interrupted),
        and say what became of each."""
        self.acting = "an interrupted repair"
        try:
            with self.liveness.busy(action_budget(self.config)):
                again = await repair.resume_interrupted(
                    config=self.config, ctx=self.ctx, store=self.store, clock=self.clock, observe=self.observe
                )
        except Exception as e:
            log_event(log, "repair.resume_error", level=logging.ERROR, error=f"{type(e).__name__}: {e}")
            return
        finally:
            self.acting = None
        for r in again:
            row = r.interrupted
            event("repair.resumed", kind=row.name, interrupted=row.id, what=r.why)
            if r.result is not None:  # run again: only ever the loop's (repair.why_not_again)
                self._last_repair_at = self.clock.now()
            after = follow_up(r, config=self.config)
            if after.alerts:
                deploy = await self._db(self.store.current_deploy)
                await self._alert(list(after.alerts), deploy, None, after.next_step or "watching")


async def _join_fleet(config: Config, clock: Clock | None) -> Leadership | None:
    """With [fleet], this healer's leadership, its session open. FleetError behind a transaction
    pooler and StoreError when PostgreSQL refuses us (exit 2, nothing started); StoreUnreachable
    when it cannot be reached for now (serve waits for it)."""
    if config.fleet is None:
        return None
    from healer import pg
    from healer.fleet import Leadership

    leadership = Leadership.from_config(config, clock=clock)
    try:
        await leadership.start()
    except BaseException as e:
        await leadership.close()  # what start() opened before it failed
        if not isinstance(e, pg.Error | OSError | TimeoutError):
            raise
        msg = f"postgresql {leadership.server.where}: cannot join the fleet: {leadership.server.reason(e)}"
        raise (StoreUnreachable if pg.is_passing(e) else StoreError)(msg) from None
    return leadership


# `healer run` waits this long between tries to reach its PostgreSQL at start, doubling from the
# first to the last, until it answers or healer is stopped.
START_RETRY_FIRST = timedelta(seconds=1)
START_RETRY_LAST = timedelta(seconds=30)


class _StartWait:
    """What a `healer run` waiting for its PostgreSQL says: one warning line a try, and to systemd
    READY=1 at the first (healer is up, and answers SIGTERM; TimeoutStartSec would otherwise kill
    it), a STATUS line, and watchdog pings while the tries go on (each try is a beat)."""

    def __init__(self, config: Config, stop: asyncio.Event, liveness: Liveness) -> None:
        self.config = config
        self.stop = stop
        self.liveness = liveness
        self.pinger: asyncio.Task[None] | None = None  # started at the first wait

    def failed(self, error: StoreUnreachable, retry_in: timedelta) -> None:
        self.liveness.beat()
        log_event(log, "healer.waiting", level=logging.WARNING, waiting_for=str(self.config.state_db),
                  error=str(error), retry_in_s=int(retry_in.total_seconds()))  # fmt: skip
        if self.pinger is None:
            notify("READY=1")
            self.pinger = asyncio.create_task(watchdog_pinger(self.stop, self.liveness.is_alive))
        notify(f"STATUS=waiting for PostgreSQL: {error}")


async def _open_state(config: Config, clock: Clock, wait: _StartWait) -> tuple[Leadership | None, BufferedStore] | None:
    """Join the fleet ([fleet]) and open the store; None when `wait.stop` is set first.

    PostgreSQL that cannot be reached for now (StoreUnreachable: down, restarting, starting up,
    no DNS answer yet) is waited for, START_RETRY_FIRST doubling to START_RETRY_LAST between
    tries: a database rebooting with the host must not leave healer dead, and exit 2 is never
    restarted. What a person must fix (authentication, a missing database, a pooler) raises.
    A stop signal ends the wait at once, a try in flight included.
    """
    delay, tries = START_RETRY_FIRST, 1
    while True:
        wait.liveness.beat()
        try:
            opened = await _unless_stopped(wait.stop, _open_once(config, clock))
        except StoreUnreachable as e:
            wait.failed(e, delay)
        else:
            if opened is not None and tries > 1:
                event("healer.waited", waited_for=str(config.state_db), tries=tries)
            return opened
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wait.stop.wait(), delay.total_seconds())
        if wait.stop.is_set():
            return None
        delay, tries = min(2 * delay, START_RETRY_LAST), tries + 1


async def _open_once(config: Config, clock: Clock) -> tuple[Leadership | None, BufferedStore]:
    """One try of _open_state: both or neither (a leadership joined is closed when the store fails)."""
    leadership = await _join_fleet(config, clock)
    try:
        store = await asyncio.to_thread(BufferedStore, config.state_db)
    except BaseException:
        if leadership is not None:
            await leadership.close()
        raise
    return leadership, store


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None once `stop` is set first: `work` is cancelled then (a connect
    in a worker thread runs on to its timeout, and is dropped when healer exits)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None


def _with_incident(a: Alert, incident: int | None) -> Alert:
    if a.incident_id is not None or incident is None:
        return a
    return Alert(a.event, a.severity, a.title, a.detail, incident, a.bypass_dedup)


# ---- `healer run` -----------------------------------------------------------------------------


async def serve(config: Config, *, observe: bool = False, clock: Clock | None = None) -> None:
    """`healer run`: lock the state dir, open the store, loop until SIGTERM/SIGINT.

    1. Take the run lock (a second `healer run` on this state dir exits 2 naming our PID).
    2. Join the fleet ([fleet]) and open the store, waiting for a PostgreSQL that cannot be
       reached yet (_open_state; a stop signal meanwhile ends healer cleanly). Open the shared
       HTTP client; announce the start.
    3. Loop until SIGTERM, SIGINT or SIGHUP. Then start no new action; let one in flight finish
       within STOP_ACTION_WAIT (a cycle without one, STOP_CYCLE_WAIT), then cancel it.
    4. Announce the stop, release everything.
    """
    repair.known_playbooks(config)  # a bad playbook file is a config error: exit 2, nothing started
    gitrepo.head_commit(config.app.repo)  # so is an [app] repo that is not a git work tree
    # `healer status` peeks at the lock (locks.holder) for an instant: wait that out
    lock = FileLock(config.lock_path, "healer run", patience=PEEKED)
    lock.acquire()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[str] = []  # the signal that stopped healer, for the log and the alert

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    clock = clock or SystemClock()
    liveness = Liveness(stall_limit(config))
    waiting = _StartWait(config, stop, liveness)
    store: BufferedStore | None = None
    server = None
    try:
        opened = await _open_state(config, clock, waiting)
        if opened is None:  # stopped while waiting for PostgreSQL
            event("healer.stopped", app=config.app.name, pid=os.getpid(), signal=received[0] if received else None)
            return
        leadership, store = opened
        store.set_meta(pid=str(os.getpid()), started_at=clock.now().isoformat())
        server = start_server(config, liveness, clock=clock, leadership=leadership)
        from healer.alerts.shell import Alerts

        alerts = Alerts(config, clock=clock)
        async with probe_context(config) as ctx:
            heartbeat = Heartbeat.from_config(config, ctx.http)
            is_observe = observe or config.escalation.mode == "observe"
            sink = AlertSink(alerts, config, is_observe, store)
            dog = Watchdog(
                config,
                store,
                ctx,
                clock=clock,
                observe=observe,
                alert_sink=sink,
                liveness=liveness,
                heartbeat=heartbeat,
                leadership=leadership,
            )
            mode = "observe" if dog.observe else "act"
            event("healer.started", app=config.app.name, pid=os.getpid(), mode=mode, checks=len(config.checks))
            await dog._alert(
                [Alert(Event.HEALER_STARTED, Severity.INFO, f"{mode} mode",
                       f"started (PID {os.getpid()}, {mode} mode)")],
                store.current_deploy(), None, "watching",
            )  # fmt: skip
            if waiting.pinger is None:  # else said when the wait began
                notify("READY=1")
            pinger = waiting.pinger or asyncio.create_task(watchdog_pinger(stop, liveness.is_alive))
            sender = asyncio.create_task(alerts.run(stop))
            # chat-ops: beside the loop, never in its way; in a fleet, on the leader only
            if leadership is None:
                chat = asyncio.create_task(listen(config))
            else:
                from healer.fleet import while_leading

                gate = leadership  # each update is acted on only while it leads (chat/dispatch.py)
                chat = asyncio.create_task(
                    while_leading(leadership, lambda: listen(config, leading=lambda: gate.is_leader), stop)
                )
            runner = asyncio.create_task(dog.run(stop))
            # [fleet]: take over, renew or follow beside the loop; on stop, a leader hands the lease back
            fleet = None if leadership is None else asyncio.create_task(leadership.run(stop))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            notify("STOPPING=1")
            crashed: BaseException | None = None
            if runner.done() and not runner.cancelled():
                crashed = runner.exception()  # the loop ended without being asked to: a bug
            if not runner.done():
                # a repair or rollback in flight may finish (a restart left half done, a deploy step
                # killed half way, are worse than a slower stop); a cycle only probing or recording
                # gets a moment. Then it is cancelled (step 3).
                acting = dog.acting
                wait = STOP_ACTION_WAIT if acting else STOP_CYCLE_WAIT
                if acting:
                    event("healer.stopping", signal=received[0] if received else None, waiting_for=acting,
                          up_to_s=int(wait.total_seconds()))  # fmt: skip
                    notify(f"STATUS=stopping: letting {acting} finish (up to {format_duration(wait)})")
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(runner), wait.total_seconds())
                if not runner.done() and dog.acting:
                    log_event(log, "healer.interrupted", level=logging.WARNING, action=dog.acting,
                              then="the next start takes it up")  # fmt: skip
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            stopper.cancel()
            chat.cancel()
            if fleet is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(fleet, 1.0)
            if crashed is not None:
                log_event(log, "loop.died", level=logging.CRITICAL, error=f"{type(crashed).__name__}: {crashed}")
                await dog._alert(
                    [Alert(Event.HEALER_HELD, Severity.CRITICAL, "healer's loop died",
                           f"{type(crashed).__name__}: {crashed}", bypass_dedup=True)],
                    None, None, "restart healer",
                )  # fmt: skip
            by = received[0] if received else None
            event("healer.stopped", app=config.app.name, pid=os.getpid(), signal=by)
            detail = f"PID {os.getpid()}" + (f", on {by}" if by else "")
            await dog._alert(
                [Alert(Event.HEALER_STOPPED, Severity.INFO, "healer stopped", detail)],
                None, None, "not watching",
            )  # fmt: skip
            # Deliver what is pending for a moment: SIGTERM must end healer within two seconds,
            # and what is not delivered stays in the outbox for the next start. A send stuck in
            # a worker thread is left behind (the CLI exits without joining it).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, 0.4)
            with contextlib.suppress(Exception):
                left = await asyncio.wait_for(alerts.flush(timedelta(milliseconds=400)), 0.5)
                if left:
                    event("alerts.pending_at_stop", pending=left)
            alerts.close()
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
            if heartbeat is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(heartbeat.aclose(), 0.2)
            if crashed is not None:
                raise crashed
    finally:
        if waiting.pinger is not None:
            waiting.pinger.cancel()
        if server is not None:
            await server.aclose()
        if store is not None:
            with contextlib.suppress(StoreError):
                store.set_meta(pid=None)
            store.close()
        lock.release()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
