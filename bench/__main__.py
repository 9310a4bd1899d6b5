"""`python -m bench [NAME ...]` (or `bench/run`): run healer's benchmarks and write bench/results.json.

NAME is any of fanout, redis, rollback, footprint, growth, judgement, crash, store, fleet
(default: all, about 9 minutes on 2 cores).
A partial run updates its own figures in an existing results file and keeps the others.
Nothing here asserts a time: each figure is a ratio against a reference measured in the same run, or a size
(report_s, the one absolute time the issue asks for, is reported as measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import common, crash, fanout, fleet, footprint, growth, judgement, redis_clear, rollback, store

BENCHMARKS = {
    "fanout": fanout.run,
    "redis": redis_clear.run,
    "rollback": rollback.run,
    "footprint": footprint.run,
    "growth": growth.run,
    "judgement": judgement.run,
    "crash": crash.run,
    "store": store.run,
    "fleet": fleet.run,
}
FIGURES = (
    "fanout_ratio",
    "redis_clear_ratio",
    "redis_worst_ping_ms",
    "keys_del_worst_ping_ms",
    "rollback_ratio",
    "rss_mb",
    "idle_cpu_s",
    "status_growth_ratio",
    "report_s",
    "db_mb_per_million_results",
    "judgement_false_rollbacks_per_1000",
    "judgement_false_restarts_per_1000",
    "judgement_missed_slow_x2_per_1000",
    "judgement_missed_bad_deploy_per_1000",
    "crash_detect_ms",
    "crash_to_healthy_s",
    "crash_healthy_ratio_vs_supervisor",
    "crash_detect_ratio_vs_httpok",
    "store_pg_write_ratio",
    "store_pg_ms_per_cycle",
    "fleet_takeover_s",
    "fleet_takeover_ratio_vs_lease",
)
RESULTS = common.ROOT / "bench" / "results.json"


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return []


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS) + " (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: bench/results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (repos, databases, logs)")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; expected some of: {', '.join(BENCHMARKS)}")

    results: dict[str, Any] = {}
    if args.out.exists() and set(names) != set(BENCHMARKS):
        results = json.loads(args.out.read_text())
    work = Path(tempfile.mkdtemp(prefix="healer-bench-"))
    started = time.monotonic()
    load_before = _loadavg()
    details: dict[str, Any] = results.get("details", {})
    try:
        for name in names:
            t = time.monotonic()
            out = BENCHMARKS[name](work / name)
            for key, value in out.items():
                if key in FIGURES:
                    results[key] = value
                else:
                    details[key] = {**value, "bench_s": round(time.monotonic() - t, 1)}
    finally:
        if args.keep:
            common.log(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ordered = {key: results[key] for key in FIGURES if key in results}
    goals = {name: {"goal": d.get("goal"), "met": d.get("met")} for name, d in details.items()}
    document = {
        **ordered,
        "goals": goals,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench/run" + ("" if set(names) == set(BENCHMARKS) else " " + " ".join(names)),
        "ran": names,
        "duration_s": round(time.monotonic() - started, 1),
        "machine": {**common.machine(), "loadavg_before": load_before, "loadavg_after": _loadavg()},
        "details": details,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    common.log(f"wrote {args.out}")
    for key in FIGURES:
        if key in ordered:
            print(f"{key:28s} {ordered[key]}")
    for name, g in goals.items():
        print(f"{name:28s} goal {g['goal']}: {'met' if g['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
