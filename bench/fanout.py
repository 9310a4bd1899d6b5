"""1. Probe fan-out: one cycle (`run_checks`) over 500 HTTP checks on loopback, against the slowest check alone.

485 checks answer at once, 10 after 1 s, 5 hang until their 2 s timeout. The reference is the slowest
check (a hanging one) run alone through the same `run_checks`, in the same process, same run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.common import http_app, log

N_CHECKS = 500
N_SLOW = 10
N_HANG = 5
SLOW_S = 1.0
HANG_TIMEOUT = "2s"
GOAL = 1.15


def _checks(base: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for i in range(N_CHECKS):
        if i < N_HANG:
            path, timeout = "/hang", HANG_TIMEOUT
        elif i < N_HANG + N_SLOW:
            path, timeout = "/slow", "5s"
        else:
            path, timeout = "/fast", "5s"
        # samples = 1: one request per check, so "answering after 1 s" is the check's own time
        checks.append(
            {"name": f"c{i:03d}", "type": "http", "url": f"{base}{path}?{i}", "timeout": timeout, "samples": 1}
        )
    return checks


async def _measure(base: str) -> dict[str, Any]:
    from healer.checks import probe_context, run_checks
    from healer.config import parse_config

    config = parse_config({"checks": _checks(base)}, Path("healer.toml"))
    hang, slow = config.checks[0], config.checks[N_HANG]
    async with probe_context(config) as ctx:
        await run_checks(ctx, config.checks[N_HANG + N_SLOW : N_HANG + N_SLOW + 20])  # warm up the client
        alone: dict[str, float] = {}
        for name, check in (("hang", hang), ("slow", slow)):
            t = time.perf_counter()
            await run_checks(ctx, [check])
            alone[name] = time.perf_counter() - t
        t = time.perf_counter()
        results = await run_checks(ctx)
        cycle = time.perf_counter() - t
    # the harder case: every check slow at once (an app that slows down everywhere)
    all_slow = parse_config(
        {"checks": [{**c, "url": c["url"].replace("/fast", "/slow").replace("/hang", "/slow"), "timeout": "5s"}
                    for c in _checks(base)]},
        Path("healer.toml"),
    )  # fmt: skip
    async with probe_context(all_slow) as ctx:
        await run_checks(ctx, all_slow.checks[:20])
        t = time.perf_counter()
        await run_checks(ctx, [all_slow.checks[0]])
        one_slow = time.perf_counter() - t
        t = time.perf_counter()
        slow_results = await run_checks(ctx)
        slow_cycle = time.perf_counter() - t
    by_kind = {
        "hang_failed_timeout": sum(1 for r in results[:N_HANG] if not r.ok and "http.timeout" in r.symptoms),
        "slow_ok": sum(1 for r in results[N_HANG : N_HANG + N_SLOW] if r.ok),
        "fast_ok": sum(1 for r in results[N_HANG + N_SLOW :] if r.ok),
    }
    return {
        "cycle_s": cycle, "alone": alone, "results": by_kind,
        "all_slow": {"cycle_s": slow_cycle, "alone_s": one_slow, "ok": sum(1 for r in slow_results if r.ok)},
    }  # fmt: skip


def run(work: Path) -> dict[str, Any]:
    log("fanout: 500 http checks on loopback")
    with http_app(slow=SLOW_S) as (base, _):
        m = asyncio.run(_measure(base))
    slowest = max(m["alone"].values())
    ratio = m["cycle_s"] / slowest
    r = m["results"]
    expected = {"hang_failed_timeout": N_HANG, "slow_ok": N_SLOW, "fast_ok": N_CHECKS - N_HANG - N_SLOW}
    return {
        "fanout_ratio": round(ratio, 3),
        "fanout": {
            "goal": f"<= {GOAL}",
            "met": ratio <= GOAL,
            "cycle_s": round(m["cycle_s"], 3),
            "slowest_check_alone_s": round(slowest, 3),
            "hanging_check_alone_s": round(m["alone"]["hang"], 3),
            "slow_check_alone_s": round(m["alone"]["slow"], 3),
            "results_as_expected": r == expected,
            "results": r,
            "samples": 1,
            "all_slow_ratio": round(m["all_slow"]["cycle_s"] / m["all_slow"]["alone_s"], 3),
            "all_slow_cycle_s": round(m["all_slow"]["cycle_s"], 3),
            "all_slow_ok": m["all_slow"]["ok"],
            "note": (
                f"{N_CHECKS} http checks (samples = 1 each) against one asyncio app in a subprocess on loopback: "
                f"{N_CHECKS - N_HANG - N_SLOW} answer at once, {N_SLOW} after {SLOW_S:g} s, {N_HANG} never "
                f"(timeout {HANG_TIMEOUT}, so the probe gives up at its budget, 1.75 s). One cycle of run_checks "
                "over all of them, divided by the slowest check run alone through run_checks in the same process "
                "and the same run. Measured once (one cycle). all_slow_*: the same 500 checks all answering after "
                "1 s, one cycle / one such check alone. Before healer gave each 32 http checks a client of their "
                "own (healer/checks probe_context), the 101st to 500th slow checks queued for one of httpx's 100 "
                "pooled connections and 400 of them failed at their timeout (6.3 s cycle)."
            ),
        },
    }
