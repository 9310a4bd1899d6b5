"""Report figures equal figures computed by hand from a history recorded through the Store API;
the chat summaries fall due on the right days."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from healer.model import CheckResult, Outcome, Verdict, Who
from healer.report import (
    FINAL,
    IncidentSpan,
    Sla,
    downtime,
    due_summaries,
    format_percent,
    load_report,
    render,
    render_text,
    summary_period,
    to_json,
)
from healer.store import CycleUpdate, Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # the deploy
NOW = T0 + timedelta(hours=25)
M = timedelta(minutes=1)
H = timedelta(hours=1)

# The history, by hand:
#   97 passing cycles every 15 minutes, T0 .. T0+24h (i = 0..96)
#   failing cycles (api down, redis fine) at 10h03 and 10h04: incident #1 opens at 10h03 and
#   is resolved by the passing cycle at 10h15 -> 12 minutes
#   a failing cycle at 24h50: incident #2, still open at NOW (25h) -> 10 minutes so far
#   repairs: process-restart ok at 0h30, redis-flush failed at 10h03m30, process-restart ok
#   at 10h04m30; a rollback ok at 24h55
FAILING = (T0 + 10 * H + 3 * M, T0 + 10 * H + 4 * M, T0 + 24 * H + 50 * M)
RESOLVED_BY = T0 + 10 * H + 15 * M


def _verdict(at: datetime, api_ok: bool) -> Verdict:
    return Verdict(
        at,
        (
            CheckResult("api", "http", api_ok, timedelta(milliseconds=20), symptoms=() if api_ok else ("http.status",)),
            CheckResult("redis", "redis", True, timedelta(milliseconds=1)),
        ),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "healer.db")
    d, _ = s.ensure_deploy("b" * 40, T0)
    passing = [T0 + i * timedelta(minutes=15) for i in range(97)]
    fails = 0
    for at, ok in sorted([(t, True) for t in passing] + [(t, False) for t in FAILING]):
        fails = 0 if ok else fails + 1
        update = CycleUpdate(
            consecutive_failures=fails,
            consecutive_passes=1 if ok else 0,
            emergency_streak=0,
            baseline=None,
            open_incident_cause="api: http.status" if fails == 1 else None,
            resolve_incident=at == RESOLVED_BY,
        )
        s.record_cycle(d.id, _verdict(at, ok), Who.LOOP, update)
    for at, kind, name, outcome in [
        (T0 + 30 * M, "repair", "process-restart", Outcome.OK),
        (T0 + 10 * H + 3 * M + timedelta(seconds=30), "repair", "redis-flush", Outcome.FAILED),
        (T0 + 10 * H + 4 * M + timedelta(seconds=30), "repair", "process-restart", Outcome.OK),
        (T0 + 24 * H + 55 * M, "rollback", "stable-20260101", Outcome.OK),
        (T0 + 24 * H + 56 * M, "pause", "1h", Outcome.OK),  # not reported
    ]:
        aid = s.start_action(kind=kind, name=name, who=Who.LOOP, reason="test", now=at, deploy_id=d.id)
        s.finish_action(aid, outcome, at + timedelta(seconds=20))
    yield s
    s.close()


def test_report_over_the_whole_history_matches_the_hand_figures(store: Store) -> None:
    """7 days back covers everything: 100 cycles, api 97/100, 22 minutes down in 25 hours."""
    r = load_report(store, start=NOW - timedelta(days=7), now=NOW)
    assert (r.cycles, r.cycles_ok) == (100, 97)
    assert [(c.name, c.passed, c.total) for c in r.checks] == [("api", 97, 100), ("redis", 100, 100)]
    assert r.checks[0].percent == pytest.approx(97.0)
    assert r.checks[1].percent == 100.0

    assert [(i.id, i.duration, i.is_open) for i in r.incidents] == [(1, 12 * M, False), (2, 10 * M, True)]
    assert r.mttr == 12 * M  # the open incident does not count

    assert r.observed_from == T0  # the deploy, later than 7 days ago
    assert r.sla.observed == 25 * H
    assert r.sla.downtime == 22 * M
    assert r.sla.availability == pytest.approx(100 * (1 - 1320 / 90000))  # 98.5333...
    assert r.sla.target == 99.9
    assert not r.sla.is_met

    assert [(a.name, a.outcome) for a in r.repairs] == [
        ("process-restart", "ok"), ("redis-flush", "failed"), ("process-restart", "ok"),
    ]  # fmt: skip
    assert [(a.name, a.outcome) for a in r.rollbacks] == [("stable-20260101", "ok")]


def test_report_over_the_last_24h_leaves_out_what_came_before(store: Store) -> None:
    """From T0+1h: 96 cycles (api 93/96), the early repair left out, 22 minutes down in 24 hours."""
    r = load_report(store, start=NOW - timedelta(hours=24), now=NOW)
    assert (r.cycles, r.cycles_ok) == (96, 93)
    assert [(c.name, c.passed, c.total) for c in r.checks] == [("api", 93, 96), ("redis", 96, 96)]
    assert [a.outcome for a in r.repairs] == ["failed", "ok"]
    assert r.sla.observed == 24 * H
    assert r.sla.downtime == 22 * M
    assert r.sla.availability == pytest.approx(100 * (1 - 1320 / 86400))  # 98.4722...


@pytest.mark.parametrize(
    ("target", "met"),
    [
        pytest.param(99.9, False, id="99.9-missed"),
        pytest.param(98.6, False, id="98.6-missed"),  # allows 1.4 % of 25h = 21m; 22m down
        pytest.param(98.5, True, id="98.5-met"),  # allows 22m 30s
        pytest.param(95.0, True, id="95-met"),
    ],
)
def test_sla_met_or_missed_against_the_target(store: Store, target: float, met: bool) -> None:
    """22 minutes down in 25 hours meets a target that allows at least that much."""
    r = load_report(store, start=NOW - timedelta(days=7), now=NOW, sla_target=target)
    assert r.sla.is_met is met
    assert abs(r.sla.allowed_downtime - 25 * H * ((100 - target) / 100)) < timedelta(milliseconds=1)


def test_availability_exactly_at_the_target_meets_it() -> None:
    """100 s down in 100,000 s is 99.9 %: met, whatever float rounding says."""
    sla = Sla(99.9, 100 * (1 - 100 / 100_000), timedelta(seconds=100), timedelta(seconds=100_000))
    assert sla.is_met
    assert not Sla(99.9, 99.899, timedelta(seconds=101), timedelta(seconds=100_000)).is_met


def test_no_data_is_no_sla() -> None:
    """An empty store: no availability, and the SLA is not met (no data is not a pass)."""
    from healer.report import build_report

    r = build_report([], [], [], start=NOW - timedelta(days=1), now=NOW)
    assert r.sla.availability is None
    assert not r.sla.is_met
    assert r.mttr is None
    assert "no data" in render_text(r, "shop-api")


def _span(opened: datetime, resolved: datetime | None) -> IncidentSpan:
    return IncidentSpan(0, opened, resolved, "x", timedelta(0))


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        pytest.param([(2 * H, 3 * H)], H, id="inside"),
        pytest.param([(-H, H)], H, id="clipped-at-start"),
        pytest.param([(9 * H, None)], H, id="open-runs-to-the-end"),
        pytest.param([(H, 3 * H), (2 * H, 4 * H)], 3 * H, id="overlapping-counted-once"),
        pytest.param([(H, 2 * H), (5 * H, 6 * H)], 2 * H, id="two-apart"),
        pytest.param([(-3 * H, -2 * H), (11 * H, 12 * H)], timedelta(0), id="outside"),
    ],
)
def test_downtime_is_the_union_of_incidents_within_the_period(
    spans: list[tuple[timedelta, timedelta | None]], expected: timedelta
) -> None:
    """Downtime over [T0, T0+10h]: overlapping incidents count once, edges are clipped."""
    incidents = [_span(T0 + a, None if b is None else T0 + b) for a, b in spans]
    assert downtime(incidents, T0, T0 + 10 * H) == expected


def test_renderings_show_the_figures(store: Store) -> None:
    """The terminal view, the chat text and the JSON carry the same numbers."""
    r = load_report(store, start=NOW - timedelta(days=7), now=NOW)
    text = render_text(r, "shop-api: the last 7d")
    assert "SLA 99.9%: MISSED, availability 98.533%" in text
    assert "22m down in 1d 1h" in text
    assert "api 97.00% (97/100)" in text
    assert "redis 100.00% (100/100)" in text
    assert "Incidents: 2 (1 open), mean time to repair 12m" in text
    assert "lasted 12m: api: http.status" in text
    assert "open for 10m: api: http.status" in text
    assert "Repairs: 3 (failed 1, ok 2)" in text
    assert "Rollbacks: 1 (ok 1)" in text

    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(render(r, "shop-api"))
    shown = console.export_text()
    assert "MISSED" in shown
    assert "97.00%" in shown
    assert "stable-20260101" in shown

    data = to_json(r)
    assert data["cycles"] == {"total": 100, "ok": 97}
    assert data["sla"]["downtime_seconds"] == 1320
    assert data["sla"]["observed_seconds"] == 90000
    assert data["sla"]["met"] is False
    assert data["mttr_seconds"] == 720
    assert data["repairs"]["by_outcome"] == {"failed": 1, "ok": 2}
    assert data["rollbacks"]["total"] == 1
    assert [i["open"] for i in data["incidents"]] == [False, True]


def test_percent_is_cut_never_rounded_up() -> None:
    """99.8999 does not show as 99.900 %, and 99.9 does not show as 99.899 %."""
    assert format_percent(99.8999) == "99.899%"
    assert format_percent(99.9) == "99.900%"
    assert format_percent(None) == "n/a"


F = T0
W = 72 * H


@pytest.mark.parametrize(
    ("now", "last_sent", "window", "expected"),
    [
        pytest.param(F + 10 * M, None, W, [], id="first-day"),
        pytest.param(F + 24 * H, None, W, ["day-1"], id="day-1-due"),
        pytest.param(F + 25 * H, F + 24 * H, W, [], id="day-1-sent"),
        pytest.param(F + 50 * H, F + 24 * H, W, ["day-2"], id="day-2-due"),
        pytest.param(F + 50 * H, None, W, ["day-2"], id="missed-days-collapse"),
        pytest.param(F + 71 * H + 59 * M, F + 48 * H, W, [], id="just-before-the-end"),
        pytest.param(F + 72 * H, F + 48 * H, W, [FINAL], id="final-at-the-end"),
        pytest.param(F + 80 * H, None, W, [FINAL], id="final-late-covers-the-days"),
        pytest.param(F + 80 * H, F + 72 * H + M, W, [], id="final-sent"),
        pytest.param(F + 48 * H, F + 24 * H, 48 * H, [FINAL], id="last-day-is-the-final"),
        pytest.param(F + 24 * H, None, 36 * H, ["day-1"], id="short-window-day"),
        pytest.param(F + 10 * M, None, 5 * M, [FINAL], id="demo-window"),
    ],
)
def test_due_summaries(now: datetime, last_sent: datetime | None, window: timedelta, expected: list[str]) -> None:
    """Daily during the window, a final one when it ends, each once."""
    assert due_summaries(F, window, last_sent, now) == expected


def test_summary_period() -> None:
    """Day N covers the N-th 24 hours; the final summary covers the window."""
    assert summary_period("day-2", F, W) == (F + 24 * H, F + 48 * H)
    assert summary_period(FINAL, F, W) == (F, F + W)
