"""The store's cycle write cost on PostgreSQL against SQLite ([state] dsn_env, issue 18).

The same `Store.record_cycle` the loop calls once per cycle (the cycle row, its per-hour check rollups,
the deploy's counters; a failing cycle opens an incident now and then), on a fresh SQLite file (WAL,
synchronous=NORMAL: the default and the reference) and on a fresh database of a PostgreSQL of our own on
loopback (its default settings: every commit flushed to disk), alternating, in one process.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import log, median, postgres_server

CYCLES = 300  # per run
RUNS = 3
CHECKS = 5  # results per cycle, as a small app's healer.toml has
# Not a race with SQLite: a cycle is written once per cadence, 1 m at the fastest by default (incident_every).
GOAL_SHARE_OF_CADENCE = 0.01
FASTEST_CADENCE_S = 60.0
DSN_ENV = "HEALER_BENCH_STATE_DSN"
T0 = datetime(2026, 11, 30, tzinfo=UTC)


def _cycles(where: Any) -> float:
    """Seconds per cycle written: CYCLES cycles, each of CHECKS results, one incident every 50."""
    from healer.model import CheckResult, Verdict, Who
    from healer.store import CycleUpdate, Store

    with Store(where) as store:
        deploy, _ = store.ensure_deploy("a" * 40, T0)
        t = time.perf_counter()
        for n in range(CYCLES):
            ok = n % 50 != 0
            at = T0 + timedelta(minutes=n)
            results = tuple(
                CheckResult(f"check-{i}", "http", ok or i, None, {"status": 200.0, "latency_ms": 12.5 + i})
                for i in range(CHECKS)
            )
            update = CycleUpdate(
                consecutive_failures=0 if ok else 1, consecutive_passes=1 if ok else 0, emergency_streak=0,
                baseline=None, open_incident_cause=None if ok else "check-0 failing",
                resolve_incident=ok and n % 50 == 1, cause=None if ok else "unknown", next_step="watching",
            )  # fmt: skip
            store.record_cycle(deploy.id, Verdict(at, results), Who.LOOP, update)
        return (time.perf_counter() - t) / CYCLES


def run(work: Path) -> dict[str, Any]:
    import psycopg

    from healer.config import StateDb

    log(f"store: {RUNS} x {CYCLES} cycles of {CHECKS} results on SQLite and on PostgreSQL")
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[float]] = {"sqlite": [], "postgres": [], "postgres_async_commit": []}
    with postgres_server() as admin:
        for i in range(RUNS):
            rows["sqlite"].append(_cycles(StateDb(work / f"run{i}" / "healer.db")))
            for series, commit in (("postgres", "on"), ("postgres_async_commit", "off")):
                name = f"{series}{i}"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {name}")
                    conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = {commit}")
                os.environ[DSN_ENV] = admin.rsplit("/", 1)[0] + f"/{name}"
                rows[series].append(_cycles(StateDb(work / "unused.db", DSN_ENV)))
            log("store run {}: {}".format(i + 1, ", ".join(f"{k} {v[-1] * 1000:.2f} ms" for k, v in rows.items())))
    sqlite_s, pg_s = median(rows["sqlite"]), median(rows["postgres"])
    ratio = pg_s / sqlite_s
    share = pg_s / FASTEST_CADENCE_S
    return {
        "store_pg_write_ratio": round(ratio, 2),
        "store_pg_ms_per_cycle": round(pg_s * 1000, 2),
        "store": {
            "goal": f"a cycle written on PostgreSQL in under {GOAL_SHARE_OF_CADENCE:.0%} of the fastest default cadence"
            f" ({FASTEST_CADENCE_S:g} s)",
            "met": share < GOAL_SHARE_OF_CADENCE,
            "runs": RUNS,
            "cycles_per_run": CYCLES,
            "results_per_cycle": CHECKS,
            "sqlite_ms_per_cycle": [round(x * 1000, 3) for x in rows["sqlite"]],
            "postgres_ms_per_cycle": [round(x * 1000, 3) for x in rows["postgres"]],
            "postgres_async_commit_ms_per_cycle": [round(x * 1000, 3) for x in rows["postgres_async_commit"]],
            "postgres_async_commit_ratio": round(median(rows["postgres_async_commit"]) / sqlite_s, 2),
            "note": (
                "Store.record_cycle in process, as the loop calls it: one transaction with the cycle row, its "
                "check_hours rollups (one upsert per check) and the deploy's counters; every 50th cycle fails and "
                "opens an incident, the next resolves it. SQLite: a fresh file, WAL with synchronous=NORMAL (the "
                "default; the reference). PostgreSQL: a fresh database on a cluster of our own on loopback with its "
                "default settings (fsync on, synchronous_commit on: each commit waits for its WAL flush, which "
                "SQLite's NORMAL does not), plus the transaction-level advisory lock every write takes; "
                "postgres_async_commit_*: the same with synchronous_commit = off, to show what of the cost is the "
                f"flush. Ratio of the medians over {RUNS} alternating runs."
            ),
        },
    }
