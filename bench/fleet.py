"""Fleet takeover: how soon a follower leads once the leader is gone ([fleet], issue 18).

Three contenders share one PostgreSQL of our own: real processes, each running healer.fleet.Leadership
as `healer run` does in fleet mode, with a LEASE-second lease. The leader is killed (SIGKILL) KILLS
times; a takeover lasts from the kill to a lease row held by another contender at a higher epoch
(polled every 10 ms). A killed leader's session ends with it and PostgreSQL drops its advisory lock,
so a follower may take over at its next look, without waiting out the lease.

The reference, measured in the same run: the leader stopped (SIGSTOP), STOPS times. Its session
stays open and keeps the lock, so only the lease's expiry lets a follower in: the time any
lease-only leadership takes for every death. Figures: fleet_takeover_s (the median after a kill)
and fleet_takeover_ratio_vs_lease (that over the median after a stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import PYTHON, child_env, log, median, postgres_server, stop

APP = "bench-shop"
LEASE = 6.0  # seconds: a follower looks every LEASE / 3
KILLS = 5
STOPS = 2
CONTENDERS = 3
TAKEOVER_WITHIN = 4 * LEASE
DSN_ENV = "HEALER_STATE_DSN"
GOAL = "after a kill -9, a follower leads in under half the lease (the lease bounds only a leader that hangs)"

CONTENDER = """
import asyncio, signal, sys
from datetime import timedelta
from healer import pg
from healer.fleet import Leadership

async def main() -> None:
    leadership = Leadership(pg.server("HEALER_STATE_DSN"), app=sys.argv[1], host=sys.argv[2],
                            lease=timedelta(seconds=float(sys.argv[3])))
    await leadership.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await leadership.run(stop)
    await leadership.close()

asyncio.run(main())
"""


def _holder(dsn: str) -> tuple[str, int] | None:
    """(holder, epoch) of the lease row, or None before anyone led."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT holder, epoch FROM fleet_lease WHERE app = %s", (APP,)).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def _until_new_leader(dsn: str, old: tuple[str, int]) -> float | None:
    """time.monotonic() when another contender holds the lease at a higher epoch; None past the bound."""
    deadline = time.monotonic() + TAKEOVER_WITHIN
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the table may not exist yet; the server may be busy
            now = _holder(dsn)
            if now is not None and now[0] != old[0] and now[1] > old[1]:
                return time.monotonic()
        time.sleep(0.01)
    return None


@contextlib.contextmanager
def _fleet(dsn: str, work: Path) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """CONTENDERS contender processes, by PID; the caller replaces the ones it ends."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for _ in range(CONTENDERS):
            _start(dsn, work, procs)
        yield procs
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGCONT)
            stop(p)


def _start(dsn: str, work: Path, procs: dict[int, subprocess.Popen[bytes]]) -> None:
    n = len(list(work.glob("contender-*.log")))
    with open(work / f"contender-{n}.log", "wb") as out:
        p = subprocess.Popen(
            [PYTHON, "-c", CONTENDER, APP, f"host{n}", str(LEASE)],
            env={**child_env(), DSN_ENV: dsn}, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    procs[p.pid] = p


def _leader(dsn: str, procs: dict[int, subprocess.Popen[bytes]]) -> tuple[tuple[str, int], int]:
    """The lease row and the PID of the contender that holds it (waiting for one to lead)."""
    deadline = time.monotonic() + TAKEOVER_WITHIN
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            row = _holder(dsn)
            if row is not None:
                pid = int(row[0].rsplit(":", 1)[1])
                if pid in procs:
                    return row, pid
        time.sleep(0.05)
    raise RuntimeError(f"no contender led within {TAKEOVER_WITHIN:.0f}s")


def _takeovers(dsn: str, work: Path, sig: signal.Signals, times: int) -> list[float | None]:
    """Seconds from `sig` to the leader to a new leader, `times` times (None: none within the bound)."""
    took: list[float | None] = []
    work.mkdir(parents=True, exist_ok=True)
    with _fleet(dsn, work) as procs:
        for _ in range(times):
            row, pid = _leader(dsn, procs)
            time.sleep(LEASE / 3)  # settled: every follower has looked at the lease at least once
            sent = time.monotonic()
            os.kill(pid, sig)
            new = _until_new_leader(dsn, row)
            took.append(None if new is None else new - sent)
            gone = procs.pop(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            gone.wait(10)
            _start(dsn, work, procs)
    return took


def run(work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    with postgres_server() as dsn:
        log(f"fleet: {KILLS} kills of the leader among {CONTENDERS} contenders, lease {LEASE:.0f}s")
        killed = _takeovers(dsn, work / "kill", signal.SIGKILL, KILLS)
        log(f"fleet: {STOPS} stops of the leader (the lease-expiry reference)")
        stopped = _takeovers(dsn, work / "stop", signal.SIGSTOP, STOPS)
    missed = sum(t is None for t in killed + stopped)
    kill_s = median([t for t in killed if t is not None] or [TAKEOVER_WITHIN])
    stop_s = median([t for t in stopped if t is not None] or [TAKEOVER_WITHIN])
    met = missed == 0 and kill_s < LEASE / 2
    return {
        "fleet_takeover_s": round(kill_s, 2),
        "fleet_takeover_ratio_vs_lease": round(kill_s / stop_s, 3),
        "fleet": {
            "goal": GOAL,
            "met": met,
            "lease_s": LEASE,
            "contenders": CONTENDERS,
            "after_kill_s": [None if t is None else round(t, 2) for t in killed],
            "after_stop_s": [None if t is None else round(t, 2) for t in stopped],
            "no_takeover_within_bound": missed,
            "why": None
            if met
            else (
                f"median takeover after a kill {kill_s:.2f}s against a lease of {LEASE:.0f}s"
                + (f"; {missed} takeover(s) took longer than {TAKEOVER_WITHIN:.0f}s" if missed else "")
            ),
        },
    }
