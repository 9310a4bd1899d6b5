"""What people see: the read models behind `healer status`, `healer history`, `/status` and the
demo, and the page's timeline (`/`, `healer report --html`) (I/O: reads the store, the outbox
and the run lock; changes nothing).

They live below the CLI so that the server and the demo can show the same thing without
importing the command line (and the loop, which imports the server).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from healer.clock import SystemClock
from healer.config import Config, format_elapsed
from healer.judge import latency_ms
from healer.locks import holder
from healer.model import CheckResult, Deploy, Verdict
from healer.notify import overdue_after
from healer.page import ActionMark, CyclePoint, DeploySpan, IncidentBand, Timeline, Watched
from healer.schedule import next_due, phase_at

if TYPE_CHECKING:
    from healer.store import Store


def status_data(config: Config) -> dict[str, Any]:
    """What `healer status --json` and `/status` show."""
    from healer.operations import acked
    from healer.store import Store

    now = SystemClock().now()
    out: dict[str, Any] = {"app": config.app.name, "now": now.isoformat(), "state_dir": str(config.state_dir)}
    pid = holder(config.lock_path)
    out["loop"] = {
        "running": pid is not None,
        "pid": pid if pid and pid > 0 else None,
        "alive": False,
        "last_seen": None,
    }
    if not config.state_db.exists():
        out["deploy"] = None
        out["loop"].update(alive=False, note="healer has not run here yet")
        return out
    with Store(config.state_db) as store:
        d = store.current_deploy()
        meta = store.meta()
        pause = store.active_pause(now)
        out["pause"] = None if pause is None else {"until": pause.until.isoformat(), "reason": pause.reason}
        if d is None:
            out["deploy"] = None
            return out
        phase = phase_at(d.first_seen, now, config.schedule)
        due = next_due(
            deploy_at=d.first_seen, last_cycle_at=d.last_cycle_at, failing=d.last_ok is False,
            schedule=config.schedule,
        )  # fmt: skip
        bad = store.bad_commits()
        out["deploy"] = {
            "id": d.id, "commit": d.commit, "first_seen": d.first_seen.isoformat(),
            "age": format_elapsed(timedelta(seconds=max(0, int((now - d.first_seen).total_seconds())))),
            "phase": phase.label, "phase_index": phase.index, "in_window": phase.in_window,
            "via_rollback": d.via_rollback, "held": d.held, "known_bad": bad.get(d.commit),
            "stable_tag": d.stable_tag,
        }  # fmt: skip
        out["next_check"] = due.isoformat()
        last = store.last_loop_cycle(d.id)
        out["last_cycle"] = None if last is None else {
            "at": last.at.isoformat(), "ok": last.ok, "summary": last.summary,
            "cause": last.cause, "next_step": last.next_step, "compared": compared_json(last.results),
        }  # fmt: skip
        out["deploy_begun_until"] = meta.get("deploy_begun_until")
        out["consecutive_failures"] = d.consecutive_failures
        out["rollback_after"] = config.escalation.rollback_after
        out["baseline"] = None if d.baseline is None else {
            "taken_at": d.baseline.taken_at.isoformat(),
            "metrics": {k: dict(v) for k, v in d.baseline.metrics.items()},
        }  # fmt: skip
        inc = None if d.open_incident is None else store.incident(d.open_incident)
        out["open_incident"] = None if inc is None else inc.to_json()
        ack = None if inc is None else acked(config, store, inc.id, now)
        out["ack"] = None if ack is None else {"at": ack.at.isoformat(), "who": ack.who, "note": ack.note}
        out["last_actions"] = [a.to_json() for a in store.recent_actions(5)]
        # alive: the lock is held and the loop touched the store within twice its cadence
        seen = meta.get("loop_seen")
        alive = pid is not None and seen is not None
        if alive and seen:
            every = config.schedule.incident_every if d.last_ok is False else phase.every
            late = now - datetime.fromisoformat(seen) > overdue_after(every)
            alive = not late
        out["loop"].update(alive=alive, last_seen=seen)
        if alive and meta.get("next_due"):
            # the running loop's own: it counts the wait on the monotonic clock, so after the
            # wall clock was stepped it knows better than next_due() on the stored times
            out["next_check"] = meta["next_due"]
        out["mode"] = config.escalation.mode
    return out


def history_rows(config: Config, since: timedelta) -> list[dict[str, Any]]:
    """Checks, incidents, repairs, rollbacks and alerts since `since` ago, oldest first."""
    from healer.store import Store

    if not config.state_db.exists():
        return []
    now = SystemClock().now()
    start = now - since
    rows: list[dict[str, Any]] = []
    with Store(config.state_db) as store:
        for c in store.cycles(since=start):
            rows.append(
                {
                    "at": c.at.isoformat(),
                    "type": "check",
                    "who": c.who,
                    "ok": c.ok,
                    "what": c.summary,
                    "cause": c.cause,
                    "next": c.next_step,
                    "woken": c.woken,
                    "deploy": c.deploy_id,
                    # what each failing check saw, the verdict's own words ("api: median 300 ms
                    # vs 1.1 ms in stable-1 (…)"): a summary names the symptom, not the evidence;
                    # and what could not be judged against the release before, for want of data
                    "detail": "; ".join(
                        [f"{r.name}: {r.error}" for r in c.results if not r.ok and r.error]
                        + list(Verdict(c.at, c.results).inconclusive)
                    ),
                    "compared": compared_json(c.results),
                }
            )
        for i in store.incidents(since=start):
            rows.append({"at": i.opened_at.isoformat(), "type": "incident.opened", "what": i.cause, "incident": i.id})
            if i.resolved_at is not None:
                rows.append(
                    {
                        "at": i.resolved_at.isoformat(),
                        "type": "incident.resolved",
                        "what": f"incident #{i.id}",
                        "incident": i.id,
                    }
                )
        for a in store.actions(since=start):
            rows.append({"at": a.at.isoformat(), "type": a.kind, "who": a.who, "what": a.name, "why": a.reason,
                         "outcome": a.outcome, "detail": a.detail})  # fmt: skip
    from healer.alerts.outbox import Outbox
    from healer.alerts.pipeline import FLEET

    outbox = Outbox(config.shared_db)
    # in a fleet's shared outbox: this host's alerts and the fleet's (its coordinated rollbacks)
    sources = None if config.fleet is None else (config.alert_source, FLEET)
    try:
        for rec in outbox.history(start, sources):
            sent = ", ".join(f"{d.channel}: {d.state.value}" for d in rec.deliveries)
            rows.append({"at": rec.created_at.isoformat(), "type": "alert", "who": "", "what": rec.title,
                         "outcome": sent, "detail": ", ".join(i.event for i in rec.message.items),
                         "severity": rec.severity.name.lower(), "incident": rec.incident_id})  # fmt: skip
    finally:
        outbox.close()
    rows.sort(key=lambda r: r["at"])
    return rows


def compared_json(results: Iterable[CheckResult]) -> list[dict[str, str]]:
    """Each check's comparisons with the release before (pass, fail, inconclusive), as
    `healer status --json`, `/status` and `healer history --json` show them."""
    return [{"check": r.name, **c.to_json()} for r in results for c in r.compared]


def launch_window_start(config: Config, now: datetime) -> datetime:
    """Where `/`'s timeline starts: the first deploy of the launch being watched. A deploy made
    by a rollback belongs to the launch it undid, so the picture still shows the bad release,
    its incident and the rollback. Never more than one window back; `now` with nothing seen."""
    from healer.store import Store

    if not config.state_db.exists():
        return now
    with Store(config.state_db) as store:
        deploys = store.deploys()
    if not deploys:
        return now
    i = len(deploys) - 1
    while i > 0 and deploys[i].via_rollback:
        i -= 1
    return max(deploys[i].first_seen, now - config.schedule.window)


def timeline_data(config: Config, since: datetime, until: datetime) -> Timeline:
    """What the page (`/`, `healer report --html`) shows for [since, until]: the deploys, every
    cycle with its verdict, likely cause and latency, the incidents and the actions, and the
    deploy watched now with its phase (read from the store; nothing is changed)."""
    from healer.store import Store

    empty = Timeline(config.app.name, since, until, None, (), (), (), ())
    if not config.state_db.exists():
        return empty
    with Store(config.state_db) as store:
        deploys = store.deploys()
        cycles = [c for c in store.cycles(since=since) if c.at <= until]
        incidents = [i for i in store.incidents(since=since) if i.opened_at <= until]
        actions = [a for a in store.actions(since=since) if a.at <= until]
        watched = _watched(config, store, until)
    # the deploys whose time overlaps the period: the one in force at its start and those after
    shown = [d for i, d in enumerate(deploys) if d.first_seen <= until and (
        i + 1 == len(deploys) or deploys[i + 1].first_seen >= since)]  # fmt: skip
    return Timeline(
        app=config.app.name, start=since, end=until, watched=watched,
        deploys=tuple(DeploySpan(d.id, d.commit, d.first_seen, d.via_rollback, _baseline_ms(d)) for d in shown),
        cycles=tuple(CyclePoint(c.at, c.ok, c.who, c.summary, c.cause, _latency_ms(c.results)) for c in cycles),
        incidents=tuple(IncidentBand(i.id, i.opened_at, i.resolved_at, i.cause) for i in incidents),
        actions=tuple(ActionMark(a.at, a.kind, a.name, a.who, a.outcome, a.reason) for a in actions),
        max_gap=2 * max(max(p.every for p in config.schedule.phases), config.schedule.incident_every),
    )  # fmt: skip


def _watched(config: Config, store: Store, now: datetime) -> Watched | None:
    """The deploy healer watches at `now`, its phase, pause, hold and open incident."""
    d = store.current_deploy()
    if d is None:
        return None
    pause = store.active_pause(now)
    inc = None if d.open_incident is None else store.incident(d.open_incident)
    last = store.last_loop_cycle(d.id)
    phase = phase_at(d.first_seen, now, config.schedule)
    return Watched(
        commit=d.commit, subject=_subject(config, d.commit), first_seen=d.first_seen,
        phase=phase.label, in_window=phase.in_window, via_rollback=d.via_rollback,
        held=d.held, paused=None if pause is None else f"until {pause.until:%Y-%m-%d %H:%M} UTC: {pause.reason}",
        stable_tag=d.stable_tag, last_ok=d.last_ok,
        open_incident=None if inc is None else IncidentBand(inc.id, inc.opened_at, inc.resolved_at, inc.cause),
        likely_cause=store.last_cause(d.id) if inc is not None else None,
        next_step=None if last is None else last.next_step,
    )  # fmt: skip


def _subject(config: Config, commit: str) -> str | None:
    """The commit's subject line, when the app's repository can tell."""
    from healer import gitrepo
    from healer.errors import GitError

    if config.app.repo is None or not commit:
        return None
    try:
        return gitrepo.subject(config.app.repo, commit)
    except GitError:
        return None


def _baseline_ms(d: Deploy) -> dict[str, float]:
    """Per check, the latency the deploy's baseline took (as the judge compares it)."""
    if d.baseline is None:
        return {}
    return {name: v["latency_ms"] for name, v in d.baseline.metrics.items() if "latency_ms" in v}


def _latency_ms(results: Iterable[CheckResult]) -> dict[str, float]:
    """Per check, the latency it measured (as judge.baseline_of takes it)."""
    measured = {r.name: latency_ms(r) for r in results}
    return {name: ms for name, ms in measured.items() if ms is not None}


def release_label(config: Config, commit: str, stable_tag: str | None = None) -> str:
    """How verdicts and `healer baseline` name a release: its stable tag when healer tagged it,
    else the newest tag matching `stable_tags` that marks its commit ("stable-1"), else its
    short commit (also when git cannot read the repository)."""
    from healer import gitrepo
    from healer.errors import HealerError

    if stable_tag:
        return stable_tag
    tags: list[str] = []
    if config.app.repo is not None:
        try:
            tags = gitrepo.tags_at(config.app.repo, commit, config.app.stable_tags)
        except HealerError:
            tags = []
    return tags[0] if tags else commit[:12]


def reference_data(config: Config, store: Store, deploy: Deploy) -> dict[str, Any] | None:
    """The release a deploy is judged against (issue 15): per check, how many samples of its
    healthy cycles are pooled and what they say (median, p90 latency; requests and failures;
    median RSS), and which comparisons it has too little data for (inconclusive until it has); for
    a check that measures one number (a Prometheus query), that release's values (one per healthy
    cycle, their median) beside the deploy's own baseline value."""
    from healer.judge import REFERENCE_CYCLES, reference_of, shortfalls
    from healer.stats import median, percentile

    found = store.reference_cycles(deploy.id, REFERENCE_CYCLES)
    if found is None:
        return None
    before, verdicts = found
    ref = reference_of(verdicts, release_label(config, before.commit, before.stable_tag))
    checks: dict[str, dict[str, Any]] = {}
    for name, samples in ref.samples_ms.items():
        checks[name] = {
            "samples": len(samples),
            "median_ms": round(median(samples), 3) if samples else None,
            "p90_ms": round(percentile(samples, 90), 3) if samples else None,
            "requests": ref.requests.get(name, 0),
            "failed": ref.errors.get(name, 0),
        }
    memory = {name: {"cycles": len(mb), "median_mb": round(median(mb), 3)} for name, mb in ref.rss_mb.items()}
    labels = {c.name: getattr(c, "label", "value") for c in config.checks}
    values = {
        name: {
            "label": labels.get(name, "value"), "cycles": len(vs), "median": median(vs),
            "baseline": None if deploy.baseline is None else deploy.baseline.value(name, "value"),
        }
        for name, vs in ref.values.items()
    }  # fmt: skip
    return {
        "release": ref.label, "commit": before.commit, "cycles": len(verdicts), "checks": checks,
        "memory": memory, "values": values, "inconclusive": list(shortfalls(config.checks, ref)),
    }  # fmt: skip
