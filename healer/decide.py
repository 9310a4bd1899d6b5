"""What to do after a judged cycle (pure): count, open or resolve the incident, repair,
roll back, or hold and wait for a person.

decide() returns intents and never carries them out; the loop does, and records the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from healer.config import Config, HttpCheck, SystemCheck
from healer.model import (
    Alert,
    Deploy,
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
    """How often a playbook may run: a cooldown between runs and a cap per launch window."""

    name: str
    cooldown: timedelta
    max_per_window: int


@dataclass(frozen=True, slots=True)
class PastRepair:
    """A repair recorded for this deploy (including skipped and observe-mode ones)."""

    name: str
    at: datetime
    outcome: Outcome
    note: str = ""  # "cap" for the record that announced the cap


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


@dataclass(frozen=True, slots=True)
class Decision:
    """The new counters and what to do."""

    consecutive_failures: int
    consecutive_passes: int
    emergency_streak: int
    intents: tuple[Intent, ...]
    next_step: str  # for people: what healer will do next


def decide(s: Situation, config: Config) -> Decision:
    """Apply the escalation rules to one judged cycle.

    1. A passing cycle counts towards recovery; `recover_after` passes in a row resolve the
       incident. A single pass in between failures does not open a new incident later:
       the incident stays open until the app has recovered for real (no flapping alerts).
    2. A failing cycle opens an incident when none is open.
    3. Held (waiting for a person) or paused: count and record, act on nothing.
    4. `rollback_after` failures in a row, or an emergency seen in `confirm_cycles` cycles
       in a row, escalate to a rollback — once per deploy: a deploy that is itself the
       result of an automatic rollback holds instead, and so does one with no stable tag.
    5. Otherwise repair: the playbooks that the dispatch rules name for the symptoms,
       unless cooling down or capped for the window.
    """
    esc = config.escalation
    d, v = s.deploy, s.verdict
    if v.ok:
        passes = d.consecutive_passes + 1
        intents: list[Intent] = []
        step = "watching"
        if d.open_incident is not None:
            if passes >= esc.recover_after:
                intents.append(ResolveIncident(d.open_incident))
                intents.append(
                    Alert("incident.resolved", Severity.INFO, "all checks pass", v.summary(), d.open_incident)
                )
            else:
                step = f"incident resolves after {esc.recover_after - passes} more passing cycle(s)"
        return Decision(0, passes, 0, tuple(intents), step)

    failures = d.consecutive_failures + 1
    intents = []
    if d.open_incident is None:
        intents.append(OpenIncident(cause=v.summary()))
        intents.append(Alert("incident.opened", Severity.WARNING, _failing_names(v), v.summary()))
    reasons = emergency_reasons(v, config)
    streak = d.emergency_streak + 1 if reasons else 0

    def done(step: str) -> Decision:
        return Decision(failures, 0, streak, tuple(intents), step)

    if d.held:
        return done(f"held, waiting for a person: {d.held}")
    if s.pause is not None:
        return done(f"paused until {s.pause.until:%H:%M} UTC ({s.pause.reason}): acting on nothing")

    emergency = streak >= esc.emergency.confirm_cycles
    if failures >= esc.rollback_after or emergency:
        why = (
            f"emergency: {'; '.join(reasons)} ({streak} cycles)"
            if emergency and failures < esc.rollback_after
            else f"{failures} consecutive failing cycles: {v.summary()}"
        )
        if d.via_rollback:
            msg = f"the rolled-back version is failing too ({why}); not rolling back again"
            intents += [Hold(msg), Alert("healer.held", Severity.CRITICAL, "not acting", msg)]
            return done("waiting for a person (healer rollback / healer repair / a new deploy)")
        if not s.has_rollback_target:
            msg = f"no stable tag to roll back to ({why})"
            intents += [Hold(msg), Alert("healer.held", Severity.CRITICAL, "not acting", msg)]
            return done("waiting for a person (healer rollback --to REF / a new deploy)")
        if s.observe:
            # announce the would-be rollback once: on the first cycle that warranted it
            before = failures - 1 >= esc.rollback_after or d.emergency_streak >= esc.emergency.confirm_cycles
            if not before:
                intents.append(Rollback(why, observe=True))
            return done("observe mode: would roll back")
        intents.append(Rollback(why))
        return done("rolling back")

    left = esc.rollback_after - failures
    step = f"rollback in {left} more failing cycle{'s' if left != 1 else ''}"
    intents += choose_repairs(s, config)
    return done(step)


def choose_repairs(s: Situation, config: Config) -> list[Intent]:
    """The playbooks the dispatch rules name for the verdict's symptoms, in rule order.

    A playbook cooling down is left alone; one that reached its cap for the window is
    announced once (`repair.capped`) and then left alone.
    """
    symptoms = set(s.verdict.symptoms)
    wanted: dict[str, str] = {}
    for rule in config.playbooks.rules:
        hit = [sym for sym in rule.when if sym in symptoms]
        if hit and rule.run not in wanted:
            wanted[rule.run] = ", ".join(hit)
    out: list[Intent] = []
    for name, why in wanted.items():
        policy = s.playbooks.get(name)
        if policy is None:
            continue
        runs = [r for r in s.repairs if r.name == name and r.note != "cap"]
        counted = [r for r in runs if r.outcome is not Outcome.SKIPPED or s.observe]
        last = max((r.at for r in counted), default=None)
        if last is not None and s.now - last < policy.cooldown:
            continue
        if len(counted) >= policy.max_per_window:
            if not any(r.name == name and r.note == "cap" for r in s.repairs):
                msg = f"{name} ran {len(counted)} times this window (cap {policy.max_per_window}); not again"
                out.append(Alert("repair.capped", Severity.WARNING, name, msg))
            continue
        out.append(Repair(name, f"symptoms: {why}", observe=s.observe))
        if sum(isinstance(i, Repair) for i in out) >= config.playbooks.max_per_cycle:
            break
    return out


def emergency_reasons(v: Verdict, config: Config) -> list[str]:
    """The seeds' emergency triggers seen in this cycle (each needs confirming by more cycles)."""
    em = config.escalation.emergency
    by_type = {c.name: c for c in config.checks}
    http = [r for r in v.results if isinstance(by_type.get(r.name), HttpCheck)]
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
    if em.memory_critical_percent is not None:
        for r in v.results:
            mem = r.values.get("memory_percent")
            if isinstance(by_type.get(r.name), SystemCheck) and mem is not None and mem > em.memory_critical_percent:
                out.append(f"memory {mem:.0f}% critical")
    return out


def _failing_names(v: Verdict) -> str:
    return ", ".join(r.name for r in v.failing) + " failing"
