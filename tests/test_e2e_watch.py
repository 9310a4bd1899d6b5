"""End-to-end: between hourly cycles, a crash or a deploy is noticed at once (healer.watch).

Each story is test_e2e_ladder's (the sample app in a real repo, a real `healer run`), but with
every cadence an hour (`phases` and `incident_every`): after the first cycle, none is due for
an hour, so whatever healer does within the tests' minute it does because it was woken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import healer
from test_e2e_ladder import Story, wait_until

pytestmark = pytest.mark.e2e

# Well under the hour the cadence would take, and long enough for a loaded CI machine.
SOON = 60


def loop_cycles(s: Story) -> list[dict[str, object]]:
    return [r for r in s.rows("check") if r["who"] == "loop"]


@pytest.fixture
def hourly(tmp_path: Path) -> Iterator[Callable[..., Story]]:
    """A story whose cycles are an hour apart, healthy or failing."""
    made: list[Story] = []

    def make(manager: str = "command") -> Story:
        s = Story(tmp_path, manager)
        made.append(s)
        s.start_app()
        wait_until(lambda: s.serving() == "1.0", 20, "the sample app serving")
        config = s.write_config()
        config.write_text(config.read_text().replace('every = "1s"', 'every = "1h"'))
        s.run_healer()
        return s

    yield make
    for s in made:
        s.stop()


def test_a_crash_10s_into_an_hourly_cadence_is_restarted_within_seconds(hourly: Callable[..., Story]) -> None:
    """manager = "command", cycles an hour apart: the app killed (SIGKILL) 10 s in is restarted
    and serving again well before the next cycle, by one early cycle whose record says why;
    healer's own restart, which ends the old PID too, wakes no second cycle."""
    s = hourly()
    time.sleep(10)
    before = len(loop_cycles(s))
    s.stop_app()
    wait_until(lambda: s.serving() == "1.0" and s.repairs("ok"), SOON, "the app restarted and serving")
    repair = s.repairs("ok")[0]
    assert repair["what"] == "process-restart" and repair["who"] == "loop"
    assert "likely cause: app process" in repair["why"]
    woken = [r for r in loop_cycles(s)[before:] if r.get("woken")]
    assert len(woken) == 1 and "exited" in str(woken[0]["woken"]), loop_cycles(s)[before:]
    time.sleep(5)  # the restart's own exit of the old PID, and the new PID, settle
    assert len(s.repairs()) == 1, s.repairs()
    assert len(loop_cycles(s)) == before + 1, loop_cycles(s)[before:]


def test_a_deploy_between_hourly_cycles_is_watched_at_once(hourly: Callable[..., Story]) -> None:
    """HEAD moves (a deploy) an hour before the next cycle is due: the new commit's window opens
    with a cycle at once."""
    s = hourly()
    new = s.release("1.1")
    wait_until(lambda: s.current().commit == new and s.current().last_cycle_at is not None, SOON, "a cycle of 1.1")
    assert s.rows("repair") == []


def test_a_persons_restart_through_healer_wakes_no_cycle(hourly: Callable[..., Story]) -> None:
    """`healer repair process-restart` stops the app's PID and starts a new one: the exit is the
    repair's own doing, so the loop runs no cycle and no repair of its own; a crash of the new
    PID afterwards is still noticed at once (it is watched)."""
    s = hourly()
    before = len(loop_cycles(s))
    old = set(s.app_pids())
    out = healer("--config", str(s.config), "repair", "process-restart", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert s.serving() == "1.0" and not old & set(s.app_pids())
    time.sleep(5)
    assert len(loop_cycles(s)) == before, loop_cycles(s)[before:]
    assert [r["who"] for r in s.repairs()] == ["person"], s.repairs()
    s.stop_app()
    wait_until(lambda: s.serving() == "1.0" and len(s.repairs("ok")) == 2, SOON, "the crash restarted")
    assert s.repairs("ok")[-1]["who"] == "loop"
