"""A slow drift of latency over the launch window: alerted once per deploy, never acted on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import config_from, make_repo
from services import HttpApp

from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.config import DriftConfig, parse_config
from healer.drift import drift_alerts, drifted
from healer.errors import ConfigError
from healer.loop import Watchdog
from healer.model import Baseline, CheckResult, Event, Repair, Rollback, Severity, Verdict

T0 = datetime(2026, 12, 1, tzinfo=UTC)
CONFIG = DriftConfig(factor=1.5, min_increase=timedelta(milliseconds=50), min_cycles=10)
BASELINE = Baseline(T0, {"api": {"latency_ms": 60.0, "status": 200.0}, "web": {"count": 1.0}})


def story(latencies: Sequence[float | None], ok: Sequence[bool] | None = None) -> list[Verdict]:
    """The deploy's cycles, 15 minutes apart on a fake clock from the baseline's: api's latency
    each cycle (None: it measured none)."""
    clock = FakeClock(T0)
    cycles = []
    for i, ms in enumerate(latencies):
        values = {} if ms is None else {"latency_ms": ms}
        passed = True if ok is None else ok[i]
        cycles.append(Verdict(clock.now(), (CheckResult("api", "http", passed, None, values),)))
        clock.advance(timedelta(minutes=15))
    return cycles


def first_alert_at(cycles: list[Verdict], config: DriftConfig = CONFIG) -> list[int]:
    """The cycles (0-based) at which the loop, calling drift_alerts after each, would alert."""
    return [i for i in range(len(cycles)) if drift_alerts(cycles[: i + 1], BASELINE, config)]


CREEPING = [60.0 + 10 * i for i in range(30)]  # 10 ms more every cycle: each one passes on its own


def test_a_creeping_latency_alerts_once_with_its_explanation() -> None:
    """The EWMA crosses 1.5 x 60 ms and 50 ms more once (at the 10th cycle, min_cycles): one
    warning, at that cycle only, saying it."""
    cycles = story(CREEPING)
    assert first_alert_at(cycles) == [9]
    (alert,) = drift_alerts(cycles[:10], BASELINE, CONFIG)
    assert alert.event is Event.LATENCY_DRIFTING and alert.severity is Severity.WARNING
    assert alert.title == "api: latency drifting up"
    assert alert.detail.startswith("api: latency drifting up: EWMA 115 ms vs 60 ms baseline over 10 cycles; ")
    assert "rolls back nothing" in alert.detail


@pytest.mark.parametrize(
    ("latencies", "config"),
    [
        pytest.param([60.0, 62.0, 58.0, 61.0, 59.0] * 6, CONFIG, id="steady"),
        pytest.param([60.0] * 5 + [400.0] + [60.0] * 24, CONFIG, id="one-slow-cycle"),
        pytest.param([200.0] * 9, CONFIG, id="before-min-cycles"),
        pytest.param([60.0 + i for i in range(30)], CONFIG, id="under-the-floor"),
        pytest.param(CREEPING, DriftConfig(factor=0), id="off"),
    ],
)
def test_no_alert_for_noise_a_spike_too_few_cycles_or_a_small_rise(latencies: list[float], config: DriftConfig) -> None:
    """A steady app, one slow cycle, a drift before min_cycles, a rise under the floor, factor 0."""
    assert first_alert_at(story(latencies), config) == []


def test_min_cycles_holds_the_alert_back_until_enough_cycles() -> None:
    """A latency doubled from the start drifts at once, but is said only at the min_cycles-th."""
    assert first_alert_at(story([200.0] * 12)) == [9]


def test_failing_and_unmeasured_cycles_are_not_part_of_the_drift() -> None:
    """Failing results (the ladder's business) and cycles without a latency are left out."""
    latencies: list[float | None] = [None if i % 3 == 2 else v for i, v in enumerate(CREEPING)]
    ok = [i % 5 != 4 for i in range(30)]
    cycles = story(latencies, ok)
    assert first_alert_at(cycles) == [16]
    # of cycles 0..16, five measured nothing (2, 5, 8, 11, 14) and two more failed (4, 9)
    (d,) = drifted(cycles[:17], BASELINE, CONFIG)
    assert d.cycles == 10


def test_cycles_before_the_baseline_do_not_count() -> None:
    """After `healer baseline --reset`, the EWMA starts again from the new baseline's cycles."""
    cycles = story(CREEPING)
    later = Baseline(cycles[9].at, {"api": {"latency_ms": 150.0}})
    assert drifted(cycles[:10], BASELINE, CONFIG) != ()
    assert drifted(cycles[:10], later, CONFIG) == ()
    assert drift_alerts(cycles, None, CONFIG) == ()


def test_the_drift_settings_are_read_from_escalation_drift() -> None:
    """`[escalation.drift]` sets factor, min_increase and min_cycles; a bad value is one line."""
    table = {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}]}
    cfg = parse_config({**table, "escalation": {"drift": {"factor": 2, "min_increase": "30ms", "min_cycles": 4}}},
                       Path("healer.toml"))  # fmt: skip
    assert cfg.escalation.drift == DriftConfig(factor=2.0, min_increase=timedelta(milliseconds=30), min_cycles=4)
    assert parse_config(table, Path("healer.toml")).escalation.drift == DriftConfig()
    with pytest.raises(ConfigError) as bad:
        parse_config({**table, "escalation": {"drift": {"factor": -1}}}, Path("healer.toml"))
    assert str(bad.value) == "healer.toml: escalation.drift.factor: expected a number at least 0.0, got -1"


async def test_a_slowly_drifting_app_gets_one_drift_alert_and_no_action(
    tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """A real loopback app a little slower every cycle (each cycle passing on its own) is told
    once as drifting, and nothing is repaired or rolled back."""
    app = http_app("slow", delay=0.02)
    repo = make_repo(tmp_path / "app")
    cfg = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [escalation.drift]
        factor = 1.5
        min_increase = "20ms"
        min_cycles = 5
        [[checks]]
        name = "api"
        type = "http"
        url = "{app.url}/health"
        timeout = "5s"
        # every cycle passes on its own, even when a busy machine (parallel tests) delays a
        # request: the drift is what is told
        min_latency_increase = "2s"
        """,
    )
    clock = FakeClock()
    store = BufferedStore(cfg.db_path)
    reports: list[Any] = []
    try:
        async with probe_context(cfg) as ctx:
            dog = Watchdog(cfg, store, ctx, clock=clock)
            for i in range(16):
                app.delay = 0.02 + 0.006 * i  # 20 ms to 110 ms
                reports.append(await dog.step())
                clock.advance(timedelta(minutes=15))
    finally:
        store.close()
    assert all(r.verdict.ok for r in reports), [r.verdict.summary() for r in reports]
    drift = [a for r in reports for a in r.alerts if a.event is Event.LATENCY_DRIFTING]
    assert len(drift) == 1 and drift[0].detail.startswith("api: latency drifting up: EWMA "), drift
    assert not [i for r in reports for i in r.decision.intents if isinstance(i, Repair | Rollback)]
    assert not [a for r in reports for a in r.actions]
