"""Value types shared by the core and the shell (pure, frozen)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class Severity(enum.IntEnum):
    """How urgent an alert is; channels have a minimum."""

    INFO = 10  # for the record: started, stopped, phase changed
    WARNING = 20  # something is wrong and healer is on it
    CRITICAL = 30  # a person is needed, or a rollback happened


class Event(enum.StrEnum):
    """What healer announces in chat and records in the alert outbox and `healer history`.

    The values are the dotted names stored in the outbox's rows and payloads: renaming one
    would leave old rows unreadable. Every member has the words a reader sees first
    (`alerts/message.py: LABELS`).
    """

    INCIDENT_OPENED = "incident.opened"  # the first failing cycle opened an incident
    INCIDENT_CAUSE = "incident.cause"  # a dependency now explains an incident that began as the app's
    INCIDENT_REMINDER = "incident.reminder"  # the incident still lasts: said again every repeat_every
    INCIDENT_RESOLVED = "incident.resolved"  # recover_after passing cycles (or a rollback) closed it
    INCIDENT_FLAPPING = "incident.flapping"  # incidents open and close too often: openings muted
    REPAIR_STARTED = "repair.started"  # a playbook runs (or would run, in observe mode)
    REPAIR_SUCCEEDED = "repair.succeeded"  # a playbook ran and the checks it targets pass
    REPAIR_FAILED = "repair.failed"  # a playbook ran, could not run, or the checks still fail
    REPAIR_CAPPED = "repair.capped"  # a playbook reached its cap for the window: not run again
    ROLLBACK_STARTED = "rollback.started"  # rolling back to a stable tag (or would, in observe mode)
    ROLLBACK_SUCCEEDED = "rollback.succeeded"  # rolled back, and the target is healthy
    ROLLBACK_FAILED = "rollback.failed"  # refused, crashed, or the target is not healthy either
    HEALER_STARTED = "healer.started"  # `healer run` began watching
    HEALER_STOPPED = "healer.stopped"  # `healer run` stopped watching
    HEALER_HELD = "healer.held"  # healer stopped acting and waits for a person
    HEALER_BLIND = "healer.blind"  # healer itself cannot probe (out of files, ports...): it cannot tell
    PHASE_CHANGED = "phase.changed"  # the launch window entered its next phase (a new cadence)
    PAUSE_STARTED = "pause.started"  # a person paused repairs and rollbacks
    PAUSE_ENDED = "pause.ended"  # a person resumed, or the pause expired
    INCIDENT_ACKED = "incident.acked"  # a person acknowledged the incident: no reminders until it worsens
    CHATOPS_STOPPED = "chatops.stopped"  # chat commands stopped: another poller owns the bot, or its token is refused
    DEPLOY_BAD = "deploy.bad"  # a commit healer rolled back from is deployed again
    DEPLOY_TAGGED = "deploy.tagged"  # healer tagged the deploy stable: a rollback target
    # a check's latency crept up over the window, every cycle passing (healer/drift.py): told
    # once per deploy, nothing restarted or rolled back
    LATENCY_DRIFTING = "latency.drifting"
    REPORT_DAILY = "report.daily"  # a day of the launch window is over: its report
    REPORT_FINAL = "report.final"  # the launch window is over: its report
    META_LOOP_BEHIND = "meta.loop_behind"  # a cycle ran late: healer itself is slow or was stopped
    META_STORE_FAILED = "meta.store_failed"  # the state store cannot be written (a full disk)
    META_STORE_RECOVERED = "meta.store_recovered"  # ... and can be again
    META_CLOCK_STEP = "meta.clock_step"  # the wall clock jumped
    META_CHANNEL_FAILING = "meta.channel_failing"  # an alert channel keeps refusing: told through the others
    TEST = "test"  # `healer alert test`


class Who(enum.StrEnum):
    """Who caused an action."""

    LOOP = "loop"  # the watchdog loop decided it
    PERSON = "person"  # someone ran a command


class Outcome(enum.StrEnum):
    """How an action ended."""

    STARTED = "started"  # journaled, not finished (a kill here is found on restart)
    OK = "ok"  # done, and the checks it targets pass
    FAILED = "failed"  # done or attempted, the checks still fail
    SKIPPED = "skipped"  # not run: cooldown, cap, pause, observe mode
    ERROR = "error"  # could not run at all


class ActionNote(enum.StrEnum):
    """What sets an action row apart (its `note`); most rows have none."""

    CAP = "cap"  # the record that announced a playbook's cap for the window
    OBSERVE = "observe"  # observe mode: decided, not done
    # A stop (SIGTERM past its bound) or a kill cut it short (outcome error). Not a run for
    # spacing and caps: the next `healer run` looks at it once, and runs it again if needed.
    INTERRUPTED = "interrupted"
    LOOKED_AT = "interrupted, looked at"  # ... and the next start did (run again, or said why not)


class Metric(enum.StrEnum):
    """What a comparison with the release before compares (healer/judge.py has the rules)."""

    LATENCY = "latency"  # the answered requests' latencies: rank test, factor and floor
    ERRORS = "errors"  # the share of failed requests: Fisher's exact test, a minimum count and a margin
    MEMORY = "memory"  # the processes' RSS against the median of the release before's cycles: factor, floor
    VALUE = "value"  # a check's own number (a Prometheus query) against that median: factor, floor


class Conclusion(enum.StrEnum):
    """How one comparison with the release before came out. The values are stored in the
    cycles' results: renaming one would leave old rows unreadable."""

    PASS = "pass"  # enough data, and not worse than the release before by the rule's test, factor and floor
    FAIL = "fail"  # worse by all of them: the check fails with the rule's symptom
    # not enough data to say (too few samples of the release before): fails nothing, so it
    # never counts toward a restart or a rollback; recorded and shown
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One check compared with the release before on one metric, in one cycle."""

    metric: Metric
    conclusion: Conclusion
    against: str  # the release before, as verdicts name it ("stable-1")
    why: str  # the evidence ("median 31 ms vs 30 ms"), or what is missing ("4 reference samples, need 20")

    def describe(self, check: str) -> str:
        """For people: "api: latency inconclusive vs stable-1 (4 reference samples, need 20)"."""
        return f"{check}: {self.metric} {self.conclusion} vs {self.against} ({self.why})"

    def to_json(self) -> dict[str, str]:
        return {"metric": str(self.metric), "conclusion": str(self.conclusion), "against": self.against,
                "why": self.why}  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Comparison:
        return cls(Metric(str(d["metric"])), Conclusion(str(d["conclusion"])), str(d["against"]), str(d["why"]))


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check saw in one cycle."""

    name: str
    type: str
    ok: bool
    latency: timedelta | None = None
    values: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    symptoms: tuple[str, ...] = ()
    # the raw samples, for the statistical judge: each answered request's latency, and how
    # many requests failed (refused, timed out or answered wrongly); empty for one-shot checks
    samples_ms: tuple[float, ...] = ()
    sample_errors: int = 0
    # healer could not probe (its own file descriptors or memory ran out, its connection pool
    # was full): says nothing of the app, so it never counts toward a restart or a rollback
    probe_error: bool = False
    # how the check compared with the release before, per metric (none without a release before)
    compared: tuple[Comparison, ...] = ()

    @property
    def inconclusive(self) -> tuple[Comparison, ...]:
        """The comparisons with the release before that had too little data to say anything."""
        return tuple(c for c in self.compared if c.conclusion is Conclusion.INCONCLUSIVE)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "ok": self.ok,
            "latency_ms": None if self.latency is None else round(self.latency.total_seconds() * 1000, 3),
            "values": dict(self.values),
            "error": self.error,
            "symptoms": list(self.symptoms),
        }
        if self.samples_ms or self.sample_errors:
            d["samples_ms"] = list(self.samples_ms)
            d["sample_errors"] = self.sample_errors
        if self.probe_error:
            d["probe_error"] = True
        if self.compared:
            d["compared"] = [c.to_json() for c in self.compared]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CheckResult:
        lat = d.get("latency_ms")
        return cls(
            name=str(d["name"]),
            type=str(d["type"]),
            ok=bool(d["ok"]),
            latency=None if lat is None else timedelta(milliseconds=float(lat)),
            values={str(k): float(v) for k, v in dict(d.get("values") or {}).items()},
            error=d.get("error"),
            symptoms=tuple(d.get("symptoms") or ()),
            samples_ms=tuple(float(v) for v in d.get("samples_ms") or ()),
            sample_errors=int(d.get("sample_errors") or 0),
            probe_error=bool(d.get("probe_error", False)),
            compared=tuple(Comparison.from_json(c) for c in d.get("compared") or ()),  # older rows have none
        )


@dataclass(frozen=True, slots=True)
class Baseline:
    """The first fully healthy cycle of a deploy: per check, its measured values."""

    taken_at: datetime
    metrics: Mapping[str, Mapping[str, float]]  # check name -> {"latency_ms": ..., "rss_mb": ...}

    def value(self, check: str, key: str) -> float | None:
        return self.metrics.get(check, {}).get(key)


@dataclass(frozen=True, slots=True)
class Reference:
    """The release before this deploy: per check, the pooled raw samples of its healthy cycles."""

    label: str  # how verdicts name it: its stable tag, else its short commit
    samples_ms: Mapping[str, tuple[float, ...]]  # check name -> every answered request's latency
    requests: Mapping[str, int]  # check name -> requests sent
    errors: Mapping[str, int]  # check name -> requests that failed
    values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # check name -> each cycle's `value`
    rss_mb: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # check name -> each cycle's RSS


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judged cycle: the results, with the baseline's symptoms added."""

    at: datetime
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failing(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def unprobed(self) -> tuple[CheckResult, ...]:
        """The checks healer could not probe this cycle (its own failure, not the app's)."""
        return tuple(r for r in self.results if r.probe_error)

    @property
    def inconclusive(self) -> tuple[str, ...]:
        """What this cycle could not judge against the release before, said for people."""
        return tuple(c.describe(r.name) for r in self.results for c in r.inconclusive)

    @property
    def symptoms(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for r in self.results:
            for s in r.symptoms:
                seen[s] = None
        return tuple(seen)

    def summary(self) -> str:
        if self.ok:
            return f"healthy ({len(self.results)} check{'' if len(self.results) == 1 else 's'})"
        parts = [f"{r.name}: {', '.join(r.symptoms) or 'failed'}" for r in self.failing]
        return "failing: " + "; ".join(parts)


class DeployState(enum.StrEnum):
    """Where a deploy stands, derived from what is stored about it (`Deploy.state`).

    A deploy starts NEW, becomes HEALTHY at its first settled healthy cycle and STABLE when
    healer tags it. HELD and BAD can come at any point and win over those (BAD over HELD): they
    say what healer will not do with it. How it came (a person's deploy or a rollback's result,
    `via_rollback`) is not a state: a rollback's result goes through the same ones.
    """

    NEW = "new"  # no settled healthy cycle yet: a failure now points at the deploy itself
    HEALTHY = "healthy"  # it has had one (healthy_at): it worked, so a failure is the app's or a dependency's
    STABLE = "stable"  # healer tagged it stable (stable_tag): a rollback target; never tagged again
    HELD = "held"  # healer stopped acting on it and waits for a person (held says why); not tagged
    BAD = "bad"  # healer rolled back from this commit (bad says why): never a rollback target, never tagged


@dataclass(frozen=True, slots=True)
class Deploy:
    """One deployed commit and its launch window, as stored."""

    id: int
    commit: str
    first_seen: datetime
    baseline: Baseline | None = None
    consecutive_failures: int = 0
    consecutive_passes: int = 0
    open_incident: int | None = None
    last_cycle_at: datetime | None = None
    last_ok: bool | None = None
    emergency_streak: int = 0  # cycles in a row with an emergency trigger
    via_rollback: bool = False  # this deploy is the result of an automatic rollback
    held: str | None = None  # healer stopped acting and waits for a person: why
    stable_tag: str | None = None  # the stable tag healer put on this commit, once
    healthy_at: datetime | None = None  # its first healthy cycle (None: never healthy yet)
    bad: str | None = None  # why healer rolled back from this commit (None: not known bad)

    @property
    def state(self) -> DeployState:
        if self.bad is not None:
            return DeployState.BAD
        if self.held is not None:
            return DeployState.HELD
        if self.stable_tag is not None:
            return DeployState.STABLE
        return DeployState.NEW if self.healthy_at is None else DeployState.HEALTHY


SHORT_SHA = 7  # characters of a SHA shown to people


def short(sha: str) -> str:
    """The abbreviated SHA people see."""
    return sha[:SHORT_SHA]


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A tag and the commit it marks; `date` is the tagger date of an annotated tag, else the
    commit date (UTC)."""

    name: str
    commit: str
    date: datetime

    @property
    def short(self) -> str:
        return short(self.commit)


# ---- intents: what decide() asks the loop to do -------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenIncident:
    """Open an incident for this deploy."""

    cause: str


@dataclass(frozen=True, slots=True)
class ResolveIncident:
    """The incident is over."""

    incident_id: int


@dataclass(frozen=True, slots=True)
class Repair:
    """Run a playbook."""

    kind: str
    reason: str
    observe: bool = False  # only record and announce "would repair"


@dataclass(frozen=True, slots=True)
class Rollback:
    """Roll back to the last stable tag."""

    reason: str
    observe: bool = False
    mark_bad: bool = True  # remember the release as bad: only when the deploy is the suspect
    to: str | None = None  # the commit to go to (a fleet's rollback); None: the newest stable tag
    order: int | None = None  # [fleet]: the fleet rollback this host follows (fleet_rollbacks.id)


@dataclass(frozen=True, slots=True)
class Hold:
    """Stop acting and wait for a person."""

    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Tell people something: an intent of decide(), and one event of a cycle's alert message
    as the pipeline plans it and the outbox stores it (`to_json`)."""

    event: Event
    severity: Severity
    title: str
    detail: str = ""
    incident_id: int | None = None
    bypass_dedup: bool = False  # meta alerts about healer itself

    def to_json(self) -> dict[str, Any]:
        return {
            "event": str(self.event),
            "severity": self.severity.name.lower(),
            "title": self.title,
            "detail": self.detail,
            "incident_id": self.incident_id,
            "bypass_dedup": self.bypass_dedup,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Alert:
        inc = d.get("incident_id")
        return cls(
            event=Event(str(d["event"])),
            severity=Severity[str(d["severity"]).upper()],
            title=str(d["title"]),
            detail=str(d.get("detail") or ""),
            incident_id=None if inc is None else int(inc),
            bypass_dedup=bool(d.get("bypass_dedup", False)),
        )


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until `until`."""

    until: datetime


Intent = OpenIncident | ResolveIncident | Repair | Rollback | Hold | Alert | Wait
