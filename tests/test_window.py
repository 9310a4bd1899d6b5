"""A whole 72-hour launch window, cycle by cycle, on a fake clock against a real app and a real
git repository: every cadence change of the shipped schedule happens when it should."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from helpers import config_from, make_repo

from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.loop import Watchdog
from healer.model import Alert

H = timedelta(hours=1)
M = timedelta(minutes=1)


async def test_the_shipped_schedule_runs_a_whole_window_with_every_cadence_change(
    tmp_path: Path, http_app: Callable[..., object]
) -> None:
    """0–6 h every 15 min, 6–24 h every 30 min, 24–72 h every 4 h, then every 4 h on; while
    failing every minute; each phase change announced once; 72 h of cycles in simulated time."""
    app = http_app("healthy")
    repo = make_repo(tmp_path / "app")
    config = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        tag_stable_after = "100d"
        [escalation]
        rollback_after = 100
        [[checks]]
        name = "api"
        type = "http"
        url = "{app}/health"
        timeout = "2s"
        samples = 1
        max_latency_factor = 1000.0
    """,
    )
    clock = FakeClock()
    seen: list[Alert] = []

    async def sink(items: list[Alert], *_: object) -> None:
        seen.extend(items)

    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock, alert_sink=sink)  # type: ignore[arg-type]
            deploy = await dog.current_deploy()
            start = deploy.first_seen
            failing_between = (28 * H, 28 * H + 5 * M)  # five minutes of 500s on day two, from a cycle on
            while clock.now() - start < 80 * H:
                deploy = await dog.current_deploy()
                due = await dog.due_at(deploy)
                if due > clock.now():
                    clock.advance(due - clock.now())
                age = clock.now() - start
                app.behaviour = "error500" if failing_between[0] <= age < failing_between[1] else "healthy"  # type: ignore[attr-defined]
                await dog.step()
        ages = [c.at - start for c in store.cycles() if c.who == "loop"]
    finally:
        store.close()

    def gaps(lo: timedelta, hi: timedelta) -> set[timedelta]:
        inside = [a for a in ages if lo <= a < hi]
        return {b - a for a, b in itertools.pairwise(inside)}

    assert ages[0] == timedelta(0)
    assert gaps(timedelta(0), 6 * H) == {15 * M}
    assert gaps(6 * H, 24 * H) == {30 * M}
    assert gaps(24 * H, 28 * H + M) == {4 * H}
    outage = [a for a in ages if failing_between[0] <= a <= failing_between[1] + 2 * M]
    assert {b - a for a, b in itertools.pairwise(outage)} == {M}  # failing: every minute
    assert gaps(40 * H, 80 * H) == {4 * H}  # after the window the last cadence goes on
    assert len([a for a in ages if a < 6 * H]) == 24 and len([a for a in ages if 6 * H <= a < 24 * H]) == 36
    phases = [a.title for a in seen if a.event == "phase.changed"]
    assert len(phases) == 3 and phases[-1].startswith("after the launch window")
    assert [a.event for a in seen].count("incident.opened") == 1
    assert [a.event for a in seen].count("incident.resolved") == 1
