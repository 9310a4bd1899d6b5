"""The watcher: the early-cycle decision on plain data and a fake clock, and the watcher itself
against real child processes, real lock files and a real supervisord."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import config_from
from services import Pm2, Supervisord

from healer import repair
from healer.clock import FakeClock, SystemClock
from healer.config import Config
from healer.rollback import rollback_lock
from healer.watch import (
    DEBOUNCE,
    EARLY_MEMORY,
    MANAGER_SETTLE,
    Wake,
    Watcher,
    actions_running,
    early_cycle_at,
    settle_for,
    woken_why,
)

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
S = timedelta(seconds=1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def wake(seconds: float, pid: int = 100) -> Wake:
    return Wake(at(seconds), f"app pid {pid} exited")


# ---- the decision ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pending", "runs", "now", "expected"),
    [
        pytest.param([], [], 5, None, id="nothing pending: no early cycle"),
        pytest.param([wake(0)], [], 0, 0.5, id="one exit: a cycle once the debounce is over"),
        pytest.param([wake(0, 1), wake(0.2, 2), wake(0.4, 3)], [], 0.4, 0.5, id="one crash of 3 processes: 1 cycle"),
        pytest.param([wake(100)], [at(95)], 100, 105, id="the second early cycle waits 10 s after the first"),
        pytest.param([wake(100)], [at(0), at(95)], 100, 125, id="the third, 30 s after the second"),
        pytest.param(
            [wake(1000)], [at(t) for t in (0, 10, 40, 160, 900)], 1000, 1500, id="a crash loop: every 10 minutes"
        ),
        pytest.param(
            [wake(4000)], [at(t) for t in (0, 10, 40, 160)], 4000, 4000.5, id="early cycles an hour ago are forgotten"
        ),
        pytest.param([wake(3000)], [at(0)], 3000, 3000.5, id="one early cycle long ago: at once again"),
    ],
)
def test_early_cycle_at(pending: list[Wake], runs: list[datetime], now: float, expected: float | None) -> None:
    """Debounced after the first wake, and spaced by the restart backoff after recent early cycles."""
    got = early_cycle_at(pending, runs, at(now), settle=DEBOUNCE)
    assert got == (None if expected is None else at(expected))


def test_a_crash_looping_app_costs_a_bounded_number_of_early_cycles() -> None:
    """An app that dies every second for an hour (fake clock, the loop's one-second look) gets at
    most 10 early cycles, each gap at least as long as the one before."""
    clock = FakeClock(T0)
    pending: list[Wake] = []
    runs: list[datetime] = []
    while clock.now() < T0 + EARLY_MEMORY:
        pending.append(Wake(clock.now(), "app pid 7 exited"))
        due = early_cycle_at(pending, runs, clock.now(), settle=DEBOUNCE)
        if due is not None and due <= clock.now():
            runs.append(clock.now())
            pending = []
        clock.advance(S)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert 5 <= len(runs) <= 10, runs
    assert gaps == sorted(gaps) and gaps[-1] >= timedelta(minutes=10)


def test_settle_is_short_for_healer_alone_and_longer_under_a_manager(tmp_path: Path) -> None:
    """Under supervisor, PM2 or systemd the manager gets MANAGER_SETTLE to restart the app itself."""
    assert settle_for(process_config(tmp_path, "x")) == DEBOUNCE
    sv = config_from(tmp_path, BASE + '[process]\nmanager = "supervisor"\nname = "shop"\n')
    assert settle_for(sv) == MANAGER_SETTLE


def test_woken_why_names_each_exit_once() -> None:
    """The record of an early cycle names the exits that woke it, a long list cut short."""
    assert woken_why([wake(0, 1), wake(0.1, 1), wake(0.2, 2)]) == "app pid 1 exited; app pid 2 exited"
    assert woken_why([wake(0, p) for p in range(5)]).endswith("(and 2 more)")


# ---- the watcher, against real processes ----------------------------------------------------------

BASE = """\
state_dir = "state"
[app]
name = "shop"
[[checks]]
name = "api"
type = "http"
url = "http://127.0.0.1:9/health"
"""


def process_config(tmp_path: Path, token: str) -> Config:
    start = json.dumps([sys.executable, "-c", "import time; time.sleep(60)", token])
    return config_from(tmp_path, BASE + f'[process]\nmanager = "command"\nstart = {start}\nmatch = "{token}"\n')


@pytest.fixture
def app() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A stand-in for the app: a sleeping child whose command line carries a unique token."""
    token = f"watched-app-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token])
    yield token, proc
    proc.kill()
    proc.wait(5)


@asynccontextmanager
async def watching(watcher: Watcher) -> AsyncIterator[Watcher]:
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        yield watcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(pred: object, what: str, timeout: float = 15) -> None:
    async def poll() -> None:
        while not pred():  # type: ignore[operator]
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g}s: {what}") from None


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "psutil poll"])
async def test_an_exit_of_the_app_is_a_wake_naming_its_pid(
    tmp_path: Path, app: tuple[str, subprocess.Popen[bytes]], use_pidfd: bool
) -> None:
    """The app's process found by `[process] match` is watched; killed, it wakes the loop."""
    token, proc = app
    watcher = Watcher(process_config(tmp_path, token), SystemClock(), acting=lambda: False, use_pidfd=use_pidfd)
    async with watching(watcher):
        await until(lambda: watcher.watched == [proc.pid], "the app watched")
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(watcher.changed.wait(), 15)
        assert [w.why for w in watcher.take()] == [f"app pid {proc.pid} exited"]
        assert not watcher.changed.is_set() and watcher.watched == []


@asynccontextmanager
async def killed_while_acting(
    tmp_path: Path, app: tuple[str, subprocess.Popen[bytes]]
) -> AsyncIterator[tuple[Watcher, list[bool]]]:
    """A watcher whose acting() says True (until the test sets acting[0] False), once it has seen
    the app, killed, exit."""
    token, proc = app
    acting = [True]
    watcher = Watcher(process_config(tmp_path, token), SystemClock(), acting=lambda: acting[0])
    async with watching(watcher):
        await until(lambda: watcher.watched == [proc.pid], "the app watched")
        proc.send_signal(signal.SIGKILL)
        await until(lambda: watcher.watched == [], "the exit seen")
        yield watcher, acting


async def test_an_exit_while_a_repair_runs_wakes_nothing_and_the_new_pid_is_watched(
    tmp_path: Path, app: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """An exit while acting() says a repair or rollback runs is its doing: no wake; the process
    that replaced it is found and watched."""
    token, _ = app
    async with killed_while_acting(tmp_path, app) as (watcher, acting):
        successor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token])
        try:
            acting[0] = False
            await until(lambda: watcher.watched == [successor.pid], "the new PID watched")
            assert watcher.pending == [] and not watcher.changed.is_set()
        finally:
            successor.kill()
            successor.wait(5)


async def test_an_app_not_back_after_a_repair_is_one_wake(
    tmp_path: Path, app: tuple[str, subprocess.Popen[bytes]]
) -> None:
    """The app stopped during an action and nothing running once it is over: one wake saying so."""
    async with killed_while_acting(tmp_path, app) as (watcher, acting):
        acting[0] = False
        await asyncio.wait_for(watcher.changed.wait(), 15)
        assert [w.why for w in watcher.take()] == ["no process of the app is running"]


async def test_a_repair_or_rollback_lock_held_means_an_action_runs(tmp_path: Path) -> None:
    """A repair's or a rollback's lock held (here, by this process) counts as an action running."""
    state = tmp_path / "state"
    state.mkdir()
    assert not actions_running(state)
    with repair.playbook_lock(state, "process-restart"):
        assert actions_running(state)
    assert not actions_running(state)
    with rollback_lock(state):
        assert actions_running(state)
    assert not actions_running(state)


async def test_under_supervisor_the_pid_is_asked_of_supervisorctl(tmp_path: Path) -> None:
    """With no `match`, the PID comes from `supervisorctl pid NAME`; a crash of it wakes the loop."""
    sv = Supervisord("shop", [sys.executable, "-c", "import time; time.sleep(60)"])
    sv.start()
    try:
        config = config_from(tmp_path, BASE + sv.process_toml("shop"))
        pid = int(sv.ctl("pid", "shop").stdout.strip())
        watcher = Watcher(config, SystemClock(), acting=lambda: False)
        async with watching(watcher):
            await until(lambda: watcher.watched == [pid], "the supervised app watched")
            sv.ctl("signal", "KILL", "shop")
            await asyncio.wait_for(watcher.changed.wait(), 15)
            assert [w.why for w in watcher.take()] == [f"app pid {pid} exited"]
    finally:
        sv.stop()


async def test_under_pm2_the_pid_is_asked_of_pm2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no `match`, the PID comes from `pm2 pid NAME`; a crash of it wakes the loop."""
    pm2 = Pm2()
    try:
        pid = pm2.start("shop", [sys.executable, "-c", "import time; time.sleep(60)"])
        for key, value in pm2.env.items():
            monkeypatch.setenv(key, value)  # healer's `pm2` reaches this daemon, as under `healer run`
        watcher = Watcher(config_from(tmp_path, BASE + pm2.process_toml("shop")), SystemClock(), acting=lambda: False)
        async with watching(watcher):
            await until(lambda: watcher.watched == [pid], "the PM2 app watched", timeout=30)
            os.kill(pid, signal.SIGKILL)
            await asyncio.wait_for(watcher.changed.wait(), 15)
            assert [w.why for w in watcher.take()] == [f"app pid {pid} exited"]
    finally:
        pm2.kill()
