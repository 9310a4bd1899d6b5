"""Attribution and the remedy ladder: why a cycle fails, and which remedies can cure it (pure).

An experienced on-call engineer first asks what broke, then reaches for the cheapest thing that
can fix it: restart what a restart cures, roll back only what the deploy broke, and do nothing
but tell a person when neither can help. `attribute()` names the likely cause of a failing
cycle; `LADDER` says, per cause, which rungs healer may climb; `deploy_grace()` keeps healer's
hands off a deploy that is still stopping, migrating and starting the app; `next_run_at()`
spaces successive runs of a playbook (a flat cooldown, or a growing backoff).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from healer.config import CheckConfig, Config, format_duration
from healer.model import Deploy, Outcome, Verdict


class Cause(enum.StrEnum):
    """The likely cause of a failing cycle: it decides the remedy."""

    DEPLOY = "deploy"  # the failure began with this commit while the release before it was healthy
    DEPENDENCY = "dependency"  # a check the app depends on (redis, postgres, role = "dependency") fails too
    APP_PROCESS = "app process"  # the app died or wedged on a release that had been healthy
    UNKNOWN = "unknown"  # none of the above: restarts, then a rollback after `rollback_after`
    DEPLOYING = "deploy in progress"  # the new release does not answer yet: healer keeps its hands off
    UNPROBED = "healer could not probe"  # healer's own failure (descriptors, memory): nothing is known


class Role(enum.StrEnum):
    """What a check watches."""

    APP = "app"  # the app itself: http, process, command checks
    # something the app needs: a server it talks to, or the host (a full disk is not cured by
    # rolling the deploy back); each check type's model says which is its default
    DEPENDENCY = "dependency"


# Symptoms of an app process that died or wedged: nothing answers, or its process is gone,
# bloated or spinning. On a release that was healthy, a restart is the cure.
PROCESS_SYMPTOMS = frozenset({"http.down", "http.timeout", "process.down", "process.memory", "process.cpu"})


@dataclass(frozen=True, slots=True)
class Rungs:
    """What healer may do for one cause, cheapest first."""

    repairs: bool  # the playbooks the rules name for the (relevant) symptoms
    max_restarts: int | None  # restarts of the app per incident; None: the playbook's own cap
    rollback: bool  # a rollback is on the ladder
    counts: bool  # failing cycles count toward `rollback_after`
    mark_bad: bool  # a rollback remembers the release as bad


LADDER: dict[Cause, Rungs] = {
    # the deploy broke it: restart where a restart can cure it, then roll back (at once when a
    # restart already failed on this release) and remember the release as bad
    Cause.DEPLOY: Rungs(repairs=True, max_restarts=None, rollback=True, counts=True, mark_bad=True),
    # a healthy release crashed or wedged: restarts with a growing backoff; the rollback is the
    # last rung once restarts are exhausted (the release is not condemned for it)
    Cause.APP_PROCESS: Rungs(repairs=True, max_restarts=None, rollback=True, counts=True, mark_bad=False),
    # as before this ladder existed: restarts, then a rollback after `rollback_after`
    Cause.UNKNOWN: Rungs(repairs=True, max_restarts=None, rollback=True, counts=True, mark_bad=False),
    # neither a restart nor a rollback cures Redis being down: the dependency's own playbooks,
    # at most one restart, and a person told which dependency it is
    Cause.DEPENDENCY: Rungs(repairs=True, max_restarts=1, rollback=False, counts=False, mark_bad=False),
    # the deploy script is still at work: record, act on nothing
    Cause.DEPLOYING: Rungs(repairs=False, max_restarts=0, rollback=False, counts=False, mark_bad=False),
    # healer could not probe: it knows nothing of the app, so it counts and does nothing (after
    # PROBE_ERROR_LIMIT such cycles in a row a person is told healer is blind)
    Cause.UNPROBED: Rungs(repairs=False, max_restarts=0, rollback=False, counts=False, mark_bad=False),
}

# Cycles in a row healer may be unable to probe before it tells a person (Argo Rollouts'
# consecutiveErrorLimit default, 4).
PROBE_ERROR_LIMIT = 4


@dataclass(frozen=True, slots=True)
class Attribution:
    """The likely cause of a failing cycle, and why healer thinks so."""

    cause: Cause
    why: str
    dependencies: tuple[str, ...] = ()  # the failing dependency checks, for Cause.DEPENDENCY

    @property
    def label(self) -> str:
        """For people and the record: "deploy", "dependency redis", "app process", ..."""
        if self.cause is Cause.DEPENDENCY:
            return f"dependency {', '.join(self.dependencies)}"
        return str(self.cause)

    @property
    def rungs(self) -> Rungs:
        return LADDER[self.cause]


def role_of(check: CheckConfig) -> Role:
    """The check's `role`, or its type's default (`default_role` in the type's model)."""
    return Role(check.role or check.default_role)


def roles(config: Config) -> dict[str, Role]:
    return {c.name: role_of(c) for c in config.checks}


def answered(verdict: Verdict, config: Config) -> bool:
    """Did the app answer at all in this cycle? Any HTTP status is an answer (a 500 too: a
    broken release is judged at once); another app check answers by passing. Only a check that
    asks the app itself (`probes_app`) can say so: a Prometheus query passing may still be
    reading the release before's requests."""
    role = roles(config)
    direct = {c.name for c in config.checks if c.probes_app}
    for r in verdict.results:
        if role.get(r.name, Role.APP) is not Role.APP or r.name not in direct:
            continue
        if r.type == "http":
            if r.values.get("status", 0) > 0:
                return True
        elif r.ok:
            return True
    return False


def settled(deploy: Deploy, now: datetime, config: Config, *, head_moved: bool, ended_commit: str | None) -> bool:
    """Is what answers now surely the new release? Not within `deploy_grace` of HEAD moving:
    the old process may still be serving the checks while the deploy has yet to restart it, and
    a healthy cycle then says nothing of the new code — it must not make a release that fails
    from its first real request look "once healthy" (the baseline is still taken from the first
    healthy cycle: judging against the release before is issue 15's reference).
    A rollback's result, the first release healer watches and one `healer deploy end` named
    are settled at once."""
    return (
        deploy.via_rollback
        or not head_moved
        or ended_commit == deploy.commit
        or now - deploy.first_seen >= config.escalation.deploy_grace
    )


def deploy_grace(
    deploy: Deploy,
    verdict: Verdict,
    now: datetime,
    config: Config,
    *,
    begun_until: datetime | None = None,
    ended_commit: str | None = None,
    head_moved: bool = True,
) -> str | None:
    """Why healer must keep its hands off this failing cycle, or None.

    1. `healer deploy begin` is in force (until `healer deploy end` or its expiry): the deploy
       script runs; whatever the app does, healer records and acts on nothing.
    2. A release healer rolled back to is not a deploy in progress: the rollback verified it.
    3. `healer deploy end` named this commit: the deploy is over, judge it at once.
    4. The first release healer ever watched (`head_moved` false) is not one either: healer is
       started once the deploy is done, so an app down then is down, and restarted at once.
    5. Within `deploy_grace` of HEAD moving, while the app does not answer at all, the deploy
       may still be stopping, migrating and starting it — even if the old process answered a
       moment after HEAD moved. An answer (any HTTP status) ends the grace for that cycle: a
       broken release is judged at once.
    """
    if begun_until is not None and now < begun_until:
        return f"the deploy script is running (healer deploy begin, until {begun_until:%H:%M:%S} UTC)"
    if deploy.via_rollback or ended_commit == deploy.commit or not head_moved:
        return None
    grace = config.escalation.deploy_grace
    age = now - deploy.first_seen
    if age < grace and not answered(verdict, config):
        left = format_duration(timedelta(seconds=max(1, round((grace - age).total_seconds()))))
        return f"the new release does not answer yet: a deploy may be starting it (acting on nothing for {left} more)"
    return None


def attribute(
    verdict: Verdict,
    deploy: Deploy,
    config: Config,
    *,
    previous_healthy: bool | None,
) -> Attribution:
    """The likely cause of a failing cycle.

    1. `dependency NAME`: a dependency check fails in this cycle, and either the app's own
       checks pass, or it is a service the app talks to and so explains the app's failures
       (an app whose Redis is down answers 500). No restart or rollback cures it. The host's
       `system` check explains nothing by default: a crash on a busy host is still a crash.
    2. `deploy`: this release has never had a healthy cycle, while the release before it was
       healthy when it was replaced: the failure began with the new commit.
    3. `app process`: the release was healthy, and now its process is gone or wedged (nothing
       answers, the process is down, bloated or spinning).
    4. `unknown`: anything else (a release that answered 500 after hours of health, or the
       first deploy healer ever saw failing from its first cycle).
    """
    role = roles(config)
    by_name = {c.name: c for c in config.checks}
    deps = tuple(r.name for r in verdict.failing if role.get(r.name) is Role.DEPENDENCY)
    app_failing = [r for r in verdict.failing if role.get(r.name) is not Role.DEPENDENCY]
    if deps and not app_failing:
        return Attribution(Cause.DEPENDENCY, f"{', '.join(deps)} failing; the app's own checks pass", deps)
    # a service the app talks to (Redis down, PostgreSQL refusing) explains the app's failures;
    # the host's gauges (disk 86 %, load) do not, unless healer.toml says so with `role`: an
    # app that crashed on a busy host still needs its restart
    services = tuple(
        n for n in deps if not (by_name[n].type == "system" and by_name[n].role is None)
    ) if deps else ()  # fmt: skip
    if services:
        names = ", ".join(r.name for r in app_failing)
        return Attribution(
            Cause.DEPENDENCY, f"{', '.join(services)} failing in the same cycle; it explains {names} failing", services
        )
    if deploy.healthy_at is None:
        if previous_healthy:
            return Attribution(
                Cause.DEPLOY, f"{deploy.commit[:12]} has not had a healthy cycle; the release before it was healthy"
            )
        why = "no release before it known" if previous_healthy is None else "the release before it failed too"
        return Attribution(Cause.UNKNOWN, f"{deploy.commit[:12]} has not had a healthy cycle, but {why}")
    symptoms = {sym for r in app_failing for sym in r.symptoms}
    if symptoms and symptoms <= PROCESS_SYMPTOMS:
        return Attribution(
            Cause.APP_PROCESS, f"the release was healthy; now {', '.join(sorted(symptoms))}: its process died or wedged"
        )
    return Attribution(Cause.UNKNOWN, "the release was healthy; the failure matches no known cause")


# ---- spacing runs: cooldown or backoff ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spacing:
    """How far apart runs of a playbook must be."""

    cooldown: timedelta  # flat: at least this long after the last run
    backoff: tuple[timedelta, ...] = ()  # growing: the nth run waits backoff[n] (the last repeats)


def next_run_at(spacing: Spacing, runs: Sequence[datetime]) -> datetime | None:
    """When the next run may start, given the times of earlier runs (None: no earlier run).

    With a backoff, the first run is due at once (backoff[0] after nothing), the second
    backoff[1] after the first, and so on, the last step repeating — as systemd's and
    supervisor's restart delays grow. Without one, `cooldown` after the last run.
    """
    if not runs:
        return None
    last = max(runs)
    if spacing.backoff:
        step = spacing.backoff[min(len(runs), len(spacing.backoff) - 1)]
        return last + step
    return last + spacing.cooldown


def restart_failed(repairs: Sequence[tuple[str, Outcome]], restart_names: frozenset[str]) -> bool:
    """Did a restart of the app already fail (run, and the checks still failed) on this release?"""
    return any(name in restart_names and outcome in (Outcome.FAILED, Outcome.ERROR) for name, outcome in repairs)
