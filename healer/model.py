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


@dataclass(frozen=True, slots=True)
class Hold:
    """Stop acting and wait for a person."""

    reason: str


@dataclass(frozen=True, slots=True)
class Alert:
    """Tell people something."""

    event: str  # dotted: incident.opened, repair.failed, rollback.succeeded, ...
    severity: Severity
    title: str
    detail: str = ""
    incident_id: int | None = None
    bypass_dedup: bool = False  # meta alerts about healer itself


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do until `until`."""

    until: datetime


Intent = OpenIncident | ResolveIncident | Repair | Rollback | Hold | Alert | Wait
