"""What to do after a judged cycle (pure): count, open or resolve the incident, repair,
roll back, or hold and wait for a person.

decide() returns intents and never carries them out; the loop does, and records the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from healer.config import Config
from healer.ladder import (
    PROBE_ERROR_LIMIT,
    Attribution,
    Cause,
    Spacing,
    attribute,
    deploy_grace,
    next_run_at,
    restart_failed,
)
from healer.model import (
    Alert,
    CheckResult,
    Deploy,
    Event,
    Hold,
    Intent,
    OpenIncident,
    Outcome,
    Repair,
    ResolveIncident,
    Rollback,
    Severity,
    Verdict,
)


@dataclass(frozen=True, slots=True)
class PlaybookPolicy:
    """How often a playbook may run: a cooldown (or a growing backoff) between runs and a cap
    per launch window; whether it restarts the app, and whether this config lets it run."""

    name: str
    cooldown: timedelta
    max_per_window: int
    backoff: tuple[timedelta, ...] = ()
    restarts_app: bool = False  # one of its steps is process.restart
    runnable: bool = True  # False: a section it needs is missing (e.g. no [process])

    @property
    def spacing(self) -> Spacing:
        return Spacing(self.cooldown, self.backoff)


@dataclass(frozen=True, slots=True)
class PastRepair:
    """A repair recorded for this deploy (including skipped and observe-mode ones). One whose
    outcome is still `started` is in progress: its verification goes on beside the loop."""

    name: str
    at: datetime
    outcome: Outcome
    note: str = ""  # "cap" for the record that announced the cap

    @property
    def is_running(self) -> bool:
        return self.outcome is Outcome.STARTED


@dataclass(frozen=True, slots=True)
class Pause:
    """A person is working on the app until `until`."""

    until: datetime
    reason: str
    who: str = "person"


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything decide() looks at, read from the store and the clock by the loop."""

    deploy: Deploy
    verdict: Verdict
    now: datetime
    pause: Pause | None = None
    observe: bool = False
    repairs: tuple[PastRepair, ...] = ()
    playbooks: Mapping[str, PlaybookPolicy] = field(default_factory=dict)
    has_rollback_target: bool = True
    previous_healthy: bool | None = None  # the release before this one was healthy when replaced
    head_moved: bool = True  # this release replaced one healer watched (HEAD moved): a deploy happened
    incident_since: datetime | None = None  # when the open incident opened
    deploy_begun_until: datetime | None = None  # `healer deploy begin` is in force until then
    deploy_ended_commit: str | None = None  # the commit `healer deploy end` named
    previous_cause: str | None = None  # the likely cause of this deploy's last failing cycle
    unprobed_streak: int = 0  # cycles in a row before this one healer could not probe


@dataclass(frozen=True, slots=True)
class Decision:
    """The new counters and what to do."""

    consecutive_failures: int
    consecutive_passes: int
    emergency_streak: int
    intents: tuple[Intent, ...]
    next_step: str  # for people: what healer will do next
    attribution: Attribution | None = None  # why a failing cycle failed (None: it passed)


@dataclass(frozen=True, slots=True)
class RepairChoice:
    """What the repair rung gives this cycle."""

    intents: list[Intent]
    skipped: list[str]  # "process-restart in backoff until 12:00:10 UTC (run 2 of 5)"
    restart_pending: bool  # a restart of the app is waiting out its backoff


def decide(s: Situation, config: Config) -> Decision:
    """Apply the escalation rules to one judged cycle.

    1. A passing cycle counts towards recovery; `recover_after` passes in a row resolve the
       incident. A single pass in between failures does not open a new incident later:
       the incident stays open until the app has recovered for real (no flapping alerts).
    2. A deploy in progress (`deploy_grace`, `healer deploy begin`): record, count nothing,
       open nothing, act on nothing.
    3. A failing cycle names its likely cause (ladder.attribute) and opens an incident when
       none is open, saying the cause; a dependency that comes to explain an open incident
       is said once.
    4. Held (waiting for a person) or paused: count and record, act on nothing.
    5. The cause's ladder (ladder.LADDER) says what may follow, cheapest first:
       a. the playbooks the rules name for the symptoms (only the dependency's own for a
          dependency cause, and at most one restart there), spaced by cooldown or backoff
          and capped per window; a skipped remedy is said, with until when;
       A playbook still being verified is not started again.
       b. a rollback, when the cause allows one: after `rollback_after` counted failures, or
          an emergency confirmed by `confirm_cycles` once no restart is left to try, or — when
          the deploy is the suspect — as soon as a restart already failed on this release
          (one still being verified counts as failed once its `repair_grace` is over: the
          rollback does not wait out `verify_within`; the loop ends that verification first).
          Once per deploy: a deploy that is itself an automatic rollback's result holds
          instead (after its own restart), and so does one with no stable tag.
       Failures count toward `rollback_after` only where the ladder says so, and not while a
       restart of a crashed healthy release waits out its backoff.
    """
    esc = config.escalation
    d, v = s.deploy, s.verdict
    if v.unprobed:
        seen = tuple(r for r in v.results if not r.probe_error)
        if all(r.ok for r in seen):
            return _unprobed(s)
        # judge what healer did see: an unprobed check neither accuses nor excuses
        v = replace(v, results=seen)
        s = replace(s, verdict=v)
    if v.ok:
        passes = d.consecutive_passes + 1
        intents: list[Intent] = []
        step = "watching"
        if d.open_incident is not None:
            if passes >= esc.recover_after:
                intents.append(ResolveIncident(d.open_incident))
                intents.append(
                    Alert(Event.INCIDENT_RESOLVED, Severity.INFO, "all checks pass", v.summary(), d.open_incident)
                )
            else:
                step = f"incident resolves after {esc.recover_after - passes} more passing cycle(s)"
        return Decision(0, passes, 0, tuple(intents), step)

    grace = deploy_grace(
        d, v, s.now, config, begun_until=s.deploy_begun_until, ended_commit=s.deploy_ended_commit,
        head_moved=s.head_moved,
    )  # fmt: skip
    if grace is not None:
        att = Attribution(Cause.DEPLOYING, grace)
        return Decision(d.consecutive_failures, 0, d.emergency_streak, (), f"{grace}; recording only", att)

    att = attribute(v, d, config, previous_healthy=s.previous_healthy)
    rungs = att.rungs
    intents = []
    if d.open_incident is None:
        intents.append(OpenIncident(cause=f"{v.summary()} (likely cause: {att.label})"))
        intents.append(
            Alert(Event.INCIDENT_OPENED, Severity.WARNING, _failing_names(v, att), f"{v.summary()}; {att.why}")
        )
    elif att.cause is Cause.DEPENDENCY and s.previous_cause != att.label:
        # the incident began as the app's; now a dependency explains it: say so, once
        intents.append(Alert(Event.INCIDENT_CAUSE, Severity.WARNING, _failing_names(v, att), att.why, d.open_incident))
    reasons = emergency_reasons(v, config) if rungs.rollback else []
    streak = d.emergency_streak + 1 if reasons else 0

    def done(step: str, failures: int) -> Decision:
        return Decision(failures, 0, streak, tuple(intents), step, att)

    if d.held:
        return done(f"held, waiting for a person: {d.held}", d.consecutive_failures + int(rungs.counts))
    if s.pause is not None:
        step = f"paused until {s.pause.until:%H:%M} UTC ({s.pause.reason}): acting on nothing"
        return done(step, d.consecutive_failures + int(rungs.counts))

    choice = choose_repairs(s, config, att)
    restarts = {n for n, p in s.playbooks.items() if p.restarts_app}
    # the deploy is the suspect, or this release is already a rollback's result: once a restart
    # failed here, another one only keeps the app down longer — the next rung is the rollback
    # (or, after a rollback, the hold)
    failed_restart = (att.cause is Cause.DEPLOY or d.via_rollback) and restart_failed(
        [(r.name, _outcome_so_far(r, s.now, esc.repair_grace)) for r in s.repairs], frozenset(restarts)
    )
    if failed_restart:
        choice = replace(
            choice, intents=[i for i in choice.intents if not (isinstance(i, Repair) and i.kind in restarts)]
        )
    restarting = any(isinstance(i, Repair) and i.kind in restarts for i in choice.intents)
    counted = rungs.counts and not (att.cause is Cause.APP_PROCESS and (choice.restart_pending or restarting))
    failures = d.consecutive_failures + int(counted)
    skipped = f" ({'; '.join(choice.skipped)})" if choice.skipped else ""
    if not rungs.rollback:
        intents += choice.intents
        names = ", ".join(att.dependencies) or "the dependency"
        what = "running its playbooks" if any(isinstance(i, Repair) for i in choice.intents) else "telling people"
        return done(f"no rollback or restart loop while {names} fails: {what}{skipped}", failures)

    repairing = any(isinstance(i, Repair) for i in choice.intents)
    emergency = streak >= esc.emergency.confirm_cycles and not repairing and not choice.restart_pending
    failed_restart = failed_restart and not repairing
    if failures >= esc.rollback_after or emergency or failed_restart:
        if failures >= esc.rollback_after:
            why = f"{failures} consecutive failing cycles: {v.summary()}"
        elif emergency:
            why = f"emergency: {'; '.join(reasons)} ({streak} cycles)"
        else:
            why = f"a restart did not cure it: {v.summary()}"
        why += f" (likely cause: {att.label})"
        if d.via_rollback:
            tried = any(r.name in restarts and r.outcome is not Outcome.SKIPPED for r in s.repairs)
            if repairing or (choice.restart_pending and not tried):
                intents += choice.intents
                return done(f"the rolled-back version fails: trying a restart before holding{skipped}", failures)
            msg = f"the rolled-back version is failing too ({why}); not rolling back again"
            title = f"{_names(v)} failing on the rolled-back version too"
            intents += [Hold(msg), Alert(Event.HEALER_HELD, Severity.CRITICAL, title, msg)]
            return done("waiting for a person (healer rollback / healer repair / a new deploy)", failures)
        if not s.has_rollback_target:
            msg = f"no stable tag to roll back to ({why})"
            title = f"{_names(v)} failing, and no stable tag to roll back to"
            intents += [Hold(msg), Alert(Event.HEALER_HELD, Severity.CRITICAL, title, msg)]
            return done("waiting for a person (healer rollback --to REF / a new deploy)", failures)
        if s.observe:
            # announce the would-be rollback once: on the first cycle that warranted it
            before = failures - 1 >= esc.rollback_after or d.emergency_streak >= esc.emergency.confirm_cycles
            if not before:
                intents.append(Rollback(why, observe=True, mark_bad=rungs.mark_bad))
            return done("observe mode: would roll back", failures)
        intents.append(Rollback(why, mark_bad=rungs.mark_bad))
        return done("rolling back", failures)

    intents += choice.intents
    left = esc.rollback_after - failures
    step = f"rollback in {left} more failing cycle{'s' if left != 1 else ''}"
    if not counted and rungs.counts:
        step = f"restart pending; {step} once restarts are exhausted"
    return done(step + skipped, failures)


def _outcome_so_far(r: PastRepair, now: datetime, grace: timedelta) -> Outcome:
    """A repair's outcome as this failing cycle sees it: one still being verified whose
    `repair_grace` is over has not cured what this cycle still finds failing."""
    return Outcome.FAILED if r.is_running and now >= r.at + grace else r.outcome


def _unprobed(s: Situation) -> Decision:
    """A cycle where healer could not probe (and nothing it did probe failed): it knows nothing
    of the app, so it counts nothing, opens nothing and acts on nothing — and after
    PROBE_ERROR_LIMIT such cycles in a row says once that it is blind."""
    d, v = s.deploy, s.verdict
    names = ", ".join(r.name for r in v.unprobed)
    first = next((r.error for r in v.unprobed if r.error), "")
    att = Attribution(Cause.UNPROBED, f"{names}: {first}" if first else names)
    streak = s.unprobed_streak + 1
    intents: list[Intent] = []
    if streak == PROBE_ERROR_LIMIT:
        body = (
            f"{streak} cycles in a row healer could not probe {names} ({first}); it is acting on nothing "
            "until it can. Look at healer's own host: open files (ulimit -n), memory."
        )
        intents.append(Alert(Event.HEALER_BLIND, Severity.WARNING, "can't tell whether the app is healthy", body))
    step = f"recording only until healer can probe {names} again"
    return Decision(d.consecutive_failures, d.consecutive_passes, d.emergency_streak, tuple(intents), step, att)


def choose_repairs(s: Situation, config: Config, att: Attribution | None = None) -> RepairChoice:
    """The playbooks the dispatch rules name for the verdict's symptoms, in rule order.

    For a dependency cause only the dependency checks' symptoms count, and the app is
    restarted at most `max_restarts` times per incident. A playbook waiting out its cooldown or
    backoff is left alone and said to be ("... until 12:00:10 UTC"); one that reached its cap
    for the window is announced once (`repair.capped`) and then left alone; so is one still
    being verified; one this config cannot run (no [process] for a restart) is not chosen.
    """
    att = att or Attribution(Cause.UNKNOWN, "")
    rungs = att.rungs
    if not rungs.repairs:
        return RepairChoice([], [], False)
    results = s.verdict.results
    if att.cause is Cause.DEPENDENCY:
        results = tuple(r for r in results if r.name in att.dependencies)
    symptoms = {sym for r in results for sym in r.symptoms}
    wanted: dict[str, str] = {}
    for rule in config.playbooks.rules:
        hit = [sym for sym in rule.when if sym in symptoms]
        if hit and rule.run not in wanted:
            wanted[rule.run] = ", ".join(hit)
    out: list[Intent] = []
    skipped: list[str] = []
    pending = False
    partial = _partial_errors(results)
    for name, why in wanted.items():
        policy = s.playbooks.get(name)
        if policy is None or not policy.runnable:
            continue
        if policy.restarts_app and partial and set(why.split(", ")) <= _PARTLY and s.deploy.last_ok is not False:
            # some requests failed (5xx, or no answer in time), others were answered correctly:
            # the app is neither crashed nor wedged, and the probe already sampled more before
            # failing it (healer/sampling.py); restart when the next cycle agrees. A process
            # gone, a wedge or every request failing is acted on at once.
            skipped.append(f"{name} waits for a second failing cycle (only some requests failed)")
            continue
        runs = [r for r in s.repairs if r.name == name and r.note != "cap"]
        running = next((r for r in runs if r.is_running), None)
        if running is not None:
            skipped.append(f"{name} started at {running.at:%H:%M:%S} UTC, still being verified")
            pending = pending or policy.restarts_app
            continue
        counted = [r for r in runs if r.outcome is not Outcome.SKIPPED or s.observe]
        if policy.restarts_app and rungs.max_restarts is not None:
            since = s.incident_since or s.now
            if sum(1 for r in counted if r.at >= since) >= rungs.max_restarts:
                skipped.append(f"{name} already ran for this incident (at most {rungs.max_restarts})")
                continue
        if len(counted) >= policy.max_per_window:
            if not any(r.name == name and r.note == "cap" for r in s.repairs):
                msg = f"{name} ran {len(counted)} times this window (cap {policy.max_per_window}); not again"
                out.append(Alert(Event.REPAIR_CAPPED, Severity.WARNING, name, msg))
            skipped.append(f"{name} capped: {len(counted)} of {policy.max_per_window} this window")
            continue
        due = next_run_at(policy.spacing, [r.at for r in counted])
        if due is not None and s.now < due:
            kind = "backoff" if policy.backoff else "cooldown"
            skipped.append(
                f"{name} in {kind} until {due:%H:%M:%S} UTC (run {len(counted) + 1} of {policy.max_per_window})"
            )
            pending = pending or policy.restarts_app
            continue
        out.append(Repair(name, f"symptoms: {why}; likely cause: {att.label}", observe=s.observe))
        if sum(isinstance(i, Repair) for i in out) >= config.playbooks.max_per_cycle:
            break
    return RepairChoice(out, skipped, pending)


# The http symptoms a partly failing cycle can show that a restart would otherwise answer at once.
_PARTLY = frozenset({"http.5xx", "http.timeout", "http.down"})


def _partial_errors(results: Sequence[CheckResult]) -> bool:
    """Did an http check fail on its requests while some of them still passed?"""
    return any(_PARTLY & set(r.symptoms) and r.values.get("samples_ok", 0) > 0 for r in results if not r.ok)


def emergency_reasons(v: Verdict, config: Config) -> list[str]:
    """The seeds' emergency triggers seen in this cycle (each needs confirming by more cycles)."""
    em = config.escalation.emergency
    type_of = {c.name: c.type for c in config.checks}
    http = [r for r in v.results if type_of.get(r.name) == "http"]
    out: list[str] = []
    # "every endpoint" needs several: with one endpoint, a crash that a restart fixes would
    # otherwise roll back after two cycles; the ordinary `rollback_after` count covers it.
    if em.all_endpoints_down and len(http) >= 2 and all(not r.ok for r in http):
        out.append(f"all {len(http)} endpoints failing")
    if em.max_avg_latency is not None and http:
        lat = [r.values["latency_ms"] for r in http if "latency_ms" in r.values]
        limit = em.max_avg_latency / timedelta(milliseconds=1)
        if lat and sum(lat) / len(lat) > limit:
            out.append(f"average latency {sum(lat) / len(lat):.0f}ms over {limit:.0f}ms")
    if em.regression_factor:
        # strong evidence of a slow release: the judge's rank test said slower, the median is
        # regression_factor × the release before's, and every request was slower than its slowest
        for r in http:
            ratio = r.values.get("vs_previous_ratio")
            if ratio is not None and ratio >= em.regression_factor and r.values.get("vs_previous_all_slower"):
                out.append(
                    f"{r.name} {ratio:.1f}× slower than the release before, every request slower than its slowest"
                )
    if em.memory_critical_percent is not None:
        for r in v.results:
            mem = r.values.get("memory_percent")
            if type_of.get(r.name) == "system" and mem is not None and mem > em.memory_critical_percent:
                out.append(f"memory {mem:.0f}% critical")
    return out


def _names(v: Verdict) -> str:
    """ "api, web": the checks failing, for titles that say what failed"""
    return ", ".join(r.name for r in v.failing)


def _failing_names(v: Verdict, att: Attribution) -> str:
    """ "api failing — likely cause: redis" """
    return f"{_names(v)} failing — likely cause: {att.label}"
