"""What people see: the read models behind `healer status`, `healer history`, `/status` and the
demo (I/O: reads the store, the outbox and the run lock; changes nothing).

They live below the CLI so that the server and the demo can show the same thing without
importing the command line (and the loop, which imports the server).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from healer.clock import SystemClock
from healer.config import Config, format_elapsed
from healer.locks import holder
from healer.notify import overdue_after
from healer.schedule import next_due, phase_at


def status_data(config: Config) -> dict[str, Any]:
    """What `healer status --json` and `/status` show."""
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
    if not config.db_path.exists():
        out["deploy"] = None
        out["loop"].update(alive=False, note="healer has not run here yet")
        return out
    with Store(config.db_path) as store:
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
            "cause": last.cause, "next_step": last.next_step,
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

    if not config.db_path.exists():
        return []
    now = SystemClock().now()
    start = now - since
    rows: list[dict[str, Any]] = []
    with Store(config.db_path) as store:
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
                    "deploy": c.deploy_id,
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

    outbox = Outbox(config.db_path)
    try:
        for rec in outbox.history(start):
            sent = ", ".join(f"{d.channel}: {d.state.value}" for d in rec.deliveries)
            rows.append({"at": rec.created_at.isoformat(), "type": "alert", "who": "", "what": rec.title,
                         "outcome": sent, "detail": ", ".join(i.event for i in rec.message.items),
                         "severity": rec.severity.name.lower(), "incident": rec.incident_id})  # fmt: skip
    finally:
        outbox.close()
    rows.sort(key=lambda r: r["at"])
    return rows
