"""The picture of the launch window: the pure renderer, its read model over a real store, `/` on a
real loopback server, `healer report --html`, and the page as a real headless Chromium draws it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from browser import by_class, by_id, decode_png, distinct_colours, dump_dom, elements, red_pixels, screenshot
from helpers import commit, config_from, git, healer

from healer.clock import SystemClock
from healer.config import Config
from healer.model import Baseline, CheckResult, Outcome, Verdict, Who
from healer.notify import Liveness
from healer.page import (
    ActionMark,
    CyclePoint,
    DeploySpan,
    IncidentBand,
    Timeline,
    Watched,
    render_page,
    state_of,
)
from healer.server import start_server
from healer.store import CycleUpdate, Store
from healer.views import launch_window_start, timeline_data

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
HOSTILE = '"><img src=x onerror=alert(1)><script>alert("pwned")</script>'
# what the page may contain: anything else came from outside text
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "main", "div", "span", "i",
    "code", "strong", "section", "svg", "text", "rect", "g", "line", "polyline", "path", "circle", "table", "tr",
    "th", "td",
}  # fmt: skip


def _timeline(
    *, summary: str = "failing: api: http.status", cause: str = "deploy", subject: str = "release 2.0"
) -> Timeline:
    """A bad release: healthy on 1.0, failing on 2.0 with an incident and a failed restart,
    rolled back to stable-1, healthy again."""
    cycles = [CyclePoint(T0 + i * 10 * S, True, "loop", "healthy (1 check)", None, {"api": 20.0}) for i in range(6)]
    cycles += [CyclePoint(T0 + 60 * S + i * 5 * S, False, "loop", summary, cause, {"api": 900.0}) for i in range(8)]
    cycles += [CyclePoint(T0 + 110 * S + i * 10 * S, True, "loop", "healthy (1 check)", None, {"api": 21.0})
               for i in range(6)]  # fmt: skip
    watched = Watched(
        commit="a" * 40, subject=subject, first_seen=T0 + 105 * S, phase="phase 1/3 (0–6h, every 15m)",
        in_window=True, via_rollback=True, held=None, paused=None, stable_tag=None, last_ok=True,
        open_incident=None, likely_cause=None, next_step=None,
    )  # fmt: skip
    return Timeline(
        app="shop", start=T0, end=T0 + 170 * S, watched=watched,
        deploys=(
            DeploySpan(1, "a" * 40, T0 - 3600 * S, False, {"api": 20.0}),
            DeploySpan(2, "b" * 40, T0 + 55 * S, False, {}),
            DeploySpan(3, "a" * 40, T0 + 105 * S, True, {"api": 20.0}),
        ),
        cycles=tuple(cycles),
        incidents=(IncidentBand(1, T0 + 60 * S, T0 + 105 * S, cause),),
        actions=(
            ActionMark(T0 + 70 * S, "repair", "process-restart", "loop", "failed", f"likely cause: {cause}"),
            ActionMark(T0 + 100 * S, "rollback", "stable-1", "loop", "ok", f"likely cause: {cause}"),
            ActionMark(T0 + 140 * S, "pause", "1h", "person", "ok", "migrating"),
        ),
    )  # fmt: skip


def _page(t: Timeline, refresh: timedelta | None = None) -> str:
    return render_page(t, "shop: the launch window", now=t.end, refresh=refresh)


def test_the_page_shows_the_phase_the_incident_band_and_the_markers() -> None:
    """What a person looks for: the deploy and its phase, the incident as a band over where the
    cycles were red, the repair, the rollback and the deploys as markers, the last actions."""
    els = elements(_page(_timeline()))
    assert by_id(els, "phase").text == "phase 1/3 (0–6h, every 15m)"
    assert by_id(els, "commit").text == "aaaaaaaaaaaa"
    assert by_id(els, "state").text == "healthy"
    band = by_id(els, "incident-1")
    assert "incident-band" in band.classes and "deploy" in band.attrs["aria-label"]
    rect = next(e for e in band.children if e.tag == "rect")
    failed = by_class(els, "cycle", "failed")
    assert len(failed) == 1 and "8 failing cycles" in failed[0].text
    assert float(rect.attrs["x"]) == pytest.approx(float(failed[0].attrs["x"]), abs=0.2)
    assert [m.attrs["aria-label"].split(" by ")[0] for m in by_class(els, "marker", "rollback")] == [
        "rollback stable-1"
    ]
    assert len(by_class(els, "marker", "repair")) == 1 and len(by_class(els, "marker", "pause")) == 1
    # the deploy before the period is not drawn; the bad one and the rollback's are
    assert [m.attrs["aria-label"].split(" seen")[0] for m in by_class(els, "marker", "deploy")] == [
        "deploy bbbbbbbbbbbb", "deploy aaaaaaaaaaaa",
    ]  # fmt: skip
    assert len(by_class(els, "latency")) == 1 and len(by_class(els, "baseline")) == 2
    actions = by_id(els, "last-actions").text
    assert actions.index("pause") < actions.index("rollback") < actions.index("process-restart")


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("summary", id="check-output"),
        pytest.param("cause", id="likely-cause"),
        pytest.param("subject", id="commit-subject"),
    ],
)
def test_outside_text_never_becomes_markup(where: str) -> None:
    """Check output, a likely cause and a commit subject with markup in them show as text: no
    element, attribute or script comes from them."""
    page = _page(_timeline(**{where: HOSTILE}))
    els = elements(page)
    assert {e.tag for e in els} <= ALLOWED_TAGS, {e.tag for e in els} - ALLOWED_TAGS
    assert not [a for e in els for a in e.attrs if a.startswith("on") or a in ("src", "href")]
    assert "<script" not in page and "<img" not in page
    assert any(HOSTILE in e.text or HOSTILE in e.attrs.get("aria-label", "") for e in els)


def test_the_page_needs_nothing_from_outside() -> None:
    """One self-contained file: no script, no link, no src or href, no url() in the CSS."""
    page = _page(_timeline())
    els = elements(page)
    assert not [e for e in els if e.tag in ("script", "link", "img", "iframe", "object")]
    assert not [a for e in els for a in e.attrs if a in ("src", "href", "xlink:href")]
    assert "url(" not in page and "http://" not in page and "https://" not in page


def test_the_served_page_reloads_itself_and_the_written_one_does_not() -> None:
    """`/` refreshes itself; a file written by `healer report --html` is a record and does not."""
    metas = [e.attrs for e in elements(_page(_timeline(), refresh=timedelta(seconds=10))) if e.tag == "meta"]
    assert {"http-equiv": "refresh", "content": "10"} in metas
    assert not [e for e in elements(_page(_timeline())) if e.attrs.get("http-equiv") == "refresh"]


def test_a_month_of_one_minute_cycles_stays_a_small_page() -> None:
    """43,200 cycles are drawn as runs and one point per pixel of latency: the page stays small."""
    start = T0
    cycles = tuple(
        CyclePoint(start + timedelta(minutes=i), not 20_000 <= i < 20_030, "loop", "x", None, {"api": 20.0 + i % 7})
        for i in range(43_200)
    )
    t = Timeline("shop", start, start + timedelta(days=30), None, (), cycles, (), ())
    page = _page(t)
    assert len(page) < 150_000
    els = elements(page)
    assert len(by_class(els, "cycle", "failed")) == 1 and len(by_class(els, "cycle", "ok")) == 2


def test_an_empty_period_says_so() -> None:
    """No deploy and no cycle: the page says so instead of drawing nothing."""
    els = elements(_page(Timeline("shop", T0, T0 + 3600 * S, None, (), (), (), ())))
    assert by_id(els, "no-cycles").text == "healer recorded no cycle in this period"
    assert by_id(els, "phase").text == "no deploy seen yet"
    assert by_id(els, "open-incident").text.endswith("none")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({}, ("healthy", "healthy"), id="healthy"),
        pytest.param({"last_ok": None}, ("waiting", "no cycle yet"), id="no-cycle"),
        pytest.param(
            {"open_incident": IncidentBand(4, T0, None, "deploy")}, ("incident", "incident #4 open"), id="incident"
        ),
        pytest.param(
            {"paused": "until 13:00 UTC: x", "open_incident": IncidentBand(4, T0, None, "d")},
            ("paused", "paused"),
            id="paused-first",
        ),
        pytest.param({"held": "rollback failed", "paused": "x"}, ("held", "held: waiting for a person"), id="held"),
    ],
)
def test_the_state_badge_says_why_nothing_acts_first(change: dict[str, object], expected: tuple[str, str]) -> None:
    """Held, then paused, then an open incident, then the last verdict."""
    from dataclasses import replace

    w = _timeline().watched
    assert w is not None
    assert state_of(replace(w, **change)) == expected  # type: ignore[arg-type]


# ---- over a real store -------------------------------------------------------------------------


@dataclass(frozen=True)
class Filled:
    config: Config
    now: datetime
    bad: str
    good: str


def _result(ok: bool, ms: float) -> CheckResult:
    return CheckResult("api", "http", ok, timedelta(milliseconds=ms), symptoms=() if ok else ("http.status",))


def fill(tmp_path: Path, now: datetime) -> Filled:
    """Twenty minutes recorded through the Store API: 1.0 healthy; 2.0 deployed, failing, an
    incident, a failed restart, a rollback to stable-1; 1.0 again, healthy, then Redis failing
    with an incident still open. The good commit's subject is hostile."""
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    good = commit(repo, HOSTILE)
    bad = commit(repo, "release 2.0")
    config = config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:1/health"
        """,
    )
    base = now - timedelta(minutes=20)
    store = Store(config.db_path)
    try:
        d1, _ = store.ensure_deploy(good, base)
        for i in range(16):
            at = base + i * 30 * S
            bl = Baseline(at, {"api": {"latency_ms": 20.0}}) if i == 0 else None
            store.record_cycle(d1.id, Verdict(at, (_result(True, 20 + i % 3),)), Who.LOOP,
                               CycleUpdate(0, i + 1, 0, bl, None, False, 0))  # fmt: skip
        d2, _ = store.ensure_deploy(bad, base + 8 * 60 * S)
        for i in range(10):
            at = base + 9 * 60 * S + i * 20 * S
            store.record_cycle(
                d2.id, Verdict(at, (_result(False, 800),)), Who.LOOP,
                CycleUpdate(i + 1, 0, 0, None, "api: http.status (likely cause: deploy)" if i == 0 else None, False, 0,
                            cause="deploy", next_step="rollback in a few cycles"),
            )  # fmt: skip
        t = base + 9 * 60 * S + 30 * S
        aid = store.start_action(kind="repair", name="process-restart", who=Who.LOOP, reason="likely cause: deploy",
                                 now=t, deploy_id=d2.id)  # fmt: skip
        store.finish_action(aid, Outcome.FAILED, t + 5 * S)
        t = base + 12 * 60 * S + 20 * S
        aid = store.start_action(kind="rollback", name="stable-1", who=Who.LOOP, reason="likely cause: deploy",
                                 now=t, deploy_id=d2.id)  # fmt: skip
        store.finish_action(aid, Outcome.OK, t + 10 * S)
        d3, _ = store.ensure_deploy(good, t + 10 * S, via_rollback=True)
        for i in range(10):
            at = t + 15 * S + i * 30 * S
            store.record_cycle(d3.id, Verdict(at, (_result(True, 21),)), Who.LOOP,
                               CycleUpdate(0, i + 1, 0, Baseline(at, {"api": {"latency_ms": 21.0}}) if i == 0 else None,
                                           None, False, 0))  # fmt: skip
        for i in range(2):
            at = now - 40 * S + i * 20 * S
            store.record_cycle(
                d3.id, Verdict(at, (_result(False, 30),)), Who.LOOP,
                CycleUpdate(i + 1, 0, 0, None, "cache: redis.down" if i == 0 else None, False, 0,
                            cause="dependency cache", next_step="no restart: Redis is down, not the app"),
            )  # fmt: skip
    finally:
        store.close()
    return Filled(config, now, bad, good)


def test_timeline_data_reads_the_window_from_the_store(tmp_path: Path) -> None:
    """The read model holds the deploys with their baselines, every cycle with its latency, the
    incidents, the actions and the deploy watched now with its open incident and likely cause;
    the launch window `/` shows starts at the release the rollback undid."""
    f = fill(tmp_path, SystemClock().now())
    assert launch_window_start(f.config, f.now) == f.now - timedelta(minutes=12)  # 2.0 was seen then
    t = timeline_data(f.config, f.now - timedelta(minutes=20), f.now)
    assert [(d.commit, d.via_rollback, dict(d.baseline_ms)) for d in t.deploys] == [
        (f.good, False, {"api": 20.0}), (f.bad, False, {}), (f.good, True, {"api": 21.0}),
    ]  # fmt: skip
    assert len(t.cycles) == 38 and sum(not c.ok for c in t.cycles) == 12
    assert t.cycles[20].latency_ms == {"api": 800.0} and t.cycles[20].cause == "deploy"
    assert [(i.resolved_at is None, i.cause) for i in t.incidents] == [
        (False, "api: http.status (likely cause: deploy) (closed: a new commit was deployed)"),
        (True, "cache: redis.down"),
    ]
    assert [(a.kind, a.name, a.outcome) for a in t.actions] == [
        ("repair", "process-restart", "failed"), ("rollback", "stable-1", "ok"),
    ]  # fmt: skip
    w = t.watched
    assert w is not None and w.commit == f.good and w.via_rollback and w.subject == HOSTILE
    assert w.phase.startswith("phase 1/3") and w.in_window
    assert w.open_incident is not None and w.open_incident.cause == "cache: redis.down"
    assert (w.likely_cause, w.next_step) == ("dependency cache", "no restart: Redis is down, not the app")
    # a later period sees only what falls in it
    late = timeline_data(f.config, f.now - timedelta(minutes=2), f.now)
    assert [d.commit for d in late.deploys] == [f.good] and len(late.cycles) < 10 and not late.actions


def test_nothing_recorded_yet_is_an_empty_timeline(tmp_path: Path) -> None:
    """No state database: an empty picture, and no file created."""
    config = config_from(
        tmp_path,
        'state_dir = "state"\n[app]\nname = "shop"\n[[checks]]\nname = "api"\ntype = "http"\nurl = "http://127.0.0.1:1/"\n',
    )
    now = SystemClock().now()
    assert launch_window_start(config, now) == now
    t = timeline_data(config, now - timedelta(hours=1), now)
    assert (t.watched, t.cycles, t.deploys) == (None, (), ())
    assert not config.db_path.exists()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Filled]]:
    f = fill(tmp_path, SystemClock().now())
    config = f.config.model_copy(update={"server": f.config.server.model_copy(update={"listen": "127.0.0.1:0"})})
    server = start_server(config, Liveness(timedelta(seconds=60)))
    assert server is not None
    yield server.url, f
    server.close()


def test_the_server_serves_the_page_at_root(served: tuple[str, Filled]) -> None:
    """GET / is the page, as HTML, reloading itself; HEAD answers without a body."""
    url, f = served
    with httpx.Client(trust_env=False, timeout=10) as http:
        r = http.get(url + "/")
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["cache-control"] == "no-store"
        els = elements(r.text)
        assert by_id(els, "commit").text == f.good[:12]
        assert by_id(els, "incident-1") and by_id(els, "incident-2")
        assert any(e.attrs.get("http-equiv") == "refresh" for e in els)
        assert [e.text for e in els if e.tag == "h1"] == ["shop: the launch window"]
        assert http.head(url + "/").content == b""
        assert "/, /healthz" in http.get(url + "/nope").text


def test_report_html_writes_the_page_and_still_prints_the_report(tmp_path: Path) -> None:
    """`healer report --html FILE` writes the picture of the period and prints the report as
    before (stdout: the JSON with --json); a file that cannot be written is one line, exit 2."""
    f = fill(tmp_path, SystemClock().now())
    out_file = tmp_path / "window.html"
    cfg = str(tmp_path / "healer.toml")
    r = healer("--config", cfg, "report", "--since", "1h", "--json", "--html", str(out_file))
    assert r.returncode == 0, r.stderr
    assert r.stdout.lstrip().startswith("{") and '"rollbacks"' in r.stdout
    assert r.stderr == f"healer: wrote the picture of shop: the last 1h to {out_file}\n"
    els = elements(out_file.read_text())
    assert by_id(els, "incident-1") and by_class(els, "marker", "rollback")
    assert by_id(els, "commit").text == f.good[:12]
    r = healer("--config", cfg, "report", "--html", str(tmp_path / "no" / "such" / "dir.html"))
    assert r.returncode == 2
    assert re.fullmatch(r"healer: --html: cannot write \S+dir\.html: No such file or directory\n", r.stderr)
    assert "--html FILE" in healer("--config", cfg, "report", "--help").stdout


# ---- in a real browser -------------------------------------------------------------------------


def test_chromium_draws_the_phase_a_red_band_and_the_rollback_marker(tmp_path: Path) -> None:
    """Headless Chromium renders the written page: its DOM has the phase, the incident bands and
    the rollback marker, and the screenshot is a real picture with red in it."""
    f = fill(tmp_path, SystemClock().now())
    t = timeline_data(f.config, launch_window_start(f.config, f.now), f.now)
    page = tmp_path / "page.html"
    page.write_text(render_page(t, "shop: the launch window", now=f.now))
    dom = elements(dump_dom(page.as_uri(), tmp_path))
    assert by_id(dom, "phase").text.startswith("phase 1/3")
    assert len(by_class(dom, "incident-band")) == 2
    assert [m.attrs["aria-label"].split(" by ")[0] for m in by_class(dom, "marker", "rollback")] == [
        "rollback stable-1"
    ]
    assert HOSTILE in by_id(dom, "deploy").text and not [e for e in dom if e.tag in ("img", "script")]
    png = screenshot(page.as_uri(), tmp_path / "page.png")
    width, height, rows = decode_png(png)
    assert (width, height) == (1200, 900)
    assert distinct_colours(rows) > 20
    assert red_pixels(rows) > 500
