"""The HTTP endpoint on a real loopback port: /healthz, /status, /metrics, and shutting down."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import config_from
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from healer.alerts.message import AlertMessage
from healer.alerts.outbox import Outbox
from healer.cli import status_data
from healer.clock import SystemClock
from healer.config import Config
from healer.model import Alert, CheckResult, Event, Outcome, Severity, Verdict, Who
from healer.notify import Liveness
from healer.server import OpsServer, parse_listen, start_server
from healer.store import CycleUpdate, Store

CONFIG = """
    state_dir = "state"
    [app]
    name = "shop-api"
    [[checks]]
    name = "api"
    type = "http"
    url = "http://127.0.0.1:1/health"
    [[checks]]
    name = "worker"
    type = "command"
    argv = ["true"]
    [server]
    listen = "{listen}"
"""


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


def _config(tmp_path: Path, listen: str = "127.0.0.1:0") -> Config:
    return config_from(tmp_path, CONFIG.format(listen=listen))


def _result(name: str, ok: bool, ms: float | None) -> CheckResult:
    kind = "http" if name == "api" else "command"
    return CheckResult(
        name, kind, ok, None if ms is None else timedelta(milliseconds=ms),
        symptoms=() if ok else (f"{kind}.status",),
    )  # fmt: skip


def _fill(config: Config, now: datetime) -> None:
    """Two hours into a deploy: a healthy cycle, then a failing one with an incident; repairs,
    a rollback, one repair still running; alerts delivered, refused and pending."""
    store = Store(config.db_path)
    try:
        d, _ = store.ensure_deploy("a" * 40, now - timedelta(hours=2))
        store.record_cycle(
            d.id, Verdict(now - timedelta(minutes=16), (_result("api", True, 10), _result("worker", True, 3))),
            Who.LOOP, CycleUpdate(0, 1, 0, None, None, False, 0),
        )  # fmt: skip
        store.record_cycle(
            d.id, Verdict(now - timedelta(minutes=1), (_result("api", True, 12.5), _result("worker", False, None))),
            Who.LOOP, CycleUpdate(1, 0, 0, None, "worker: command.status", False, 0),
        )  # fmt: skip
        # a rollback's verification run is not the loop's last cycle
        store.record_cycle(d.id, Verdict(now, (_result("api", False, 99),)), Who.PERSON, None)
        t = now - timedelta(minutes=30)
        for kind, name, outcome in [
            ("repair", "process-restart", Outcome.OK),
            ("repair", "redis-flush", Outcome.FAILED),
            ("repair", "redis-flush", Outcome.OK),
            ("repair", "redis-flush", Outcome.OK),
            ("rollback", "stable-1", Outcome.OK),
            ("rollback", "stable-0", Outcome.FAILED),
            ("pause", "1h", Outcome.OK),  # not a repair or rollback
        ]:
            aid = store.start_action(kind=kind, name=name, who=Who.LOOP, reason="test", now=t, deploy_id=d.id)
            store.finish_action(aid, outcome, t + timedelta(seconds=20))
        store.start_action(
            kind="repair", name="process-restart", who=Who.LOOP, reason="running", now=now, deploy_id=d.id
        )
        store.set_meta(loop_seen=now.isoformat())
    finally:
        store.close()
    outbox = Outbox(config.db_path)
    try:
        msg = AlertMessage((Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api failing"),), "shop-api", now)
        first = outbox.enqueue(msg, ["log", "slack"])
        outbox.enqueue(msg, ["log", "slack"])
        outbox.mark_delivered(first, "log", now)
        outbox.mark_failed(first, "slack", "404 no_service", retry_at=None, permanent=True)
    finally:
        outbox.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5) as c:
        yield c


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[OpsServer, Config, FakeMonotonic]]:
    """A started endpoint on a free loopback port over a filled store."""
    config = _config(tmp_path)
    _fill(config, SystemClock().now())
    mono = FakeMonotonic()
    server = start_server(config, Liveness(timedelta(seconds=60), monotonic=mono))
    assert server is not None
    yield server, config, mono
    server.close()


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """family name -> {sorted labels: value}, counters under their name without _total."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            out.setdefault(fam.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_healthz_is_ok_while_the_loop_beats_and_503_once_it_goes_stale(
    running: tuple[OpsServer, Config, FakeMonotonic], http: httpx.Client
) -> None:
    """200 `ok` within the stall limit of the last beat; 503 saying how long, after it."""
    server, _, mono = running
    r = http.get(server.url + "/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    mono.t += 61
    r = http.get(server.url + "/healthz")
    assert r.status_code == 503
    assert r.text == "stalled: the loop made no progress for 61s\n"
    server.liveness.beat()
    assert http.get(server.url + "/healthz").status_code == 200


def test_a_store_that_cannot_be_written_is_503_and_store_ok_0_until_it_can(
    running: tuple[OpsServer, Config, FakeMonotonic], http: httpx.Client
) -> None:
    """The loop beats but says its store fails: /healthz 503 naming the error, healer_store_ok 0."""
    server, _, _ = running
    server.liveness.store_failed("/srv/state/healer.db: database or disk is full")
    r = http.get(server.url + "/healthz")
    assert r.status_code == 503
    assert r.text.startswith("store failing since ")
    assert "database or disk is full; the loop goes on from memory" in r.text
    assert _families(http.get(server.url + "/metrics").text)["healer_store_ok"][()] == 0
    assert _families(http.get(server.url + "/metrics").text)["healer_loop_alive"][()] == 1
    server.liveness.store_ok()
    assert http.get(server.url + "/healthz").text == "ok\n"
    assert _families(http.get(server.url + "/metrics").text)["healer_store_ok"][()] == 1


def test_head_and_unknown_paths(running: tuple[OpsServer, Config, FakeMonotonic], http: httpx.Client) -> None:
    """HEAD answers without a body; an unknown path is a 404 naming the real ones."""
    server, _, _ = running
    r = http.head(server.url + "/healthz")
    assert (r.status_code, r.content) == (200, b"")
    r = http.get(server.url + "/nope")
    assert r.status_code == 404
    assert "/metrics" in r.text


def test_status_serves_what_healer_status_json_prints(
    running: tuple[OpsServer, Config, FakeMonotonic], http: httpx.Client
) -> None:
    """/status is status_data(config), the JSON of `healer status --json`, but for the clock."""
    server, config, _ = running
    r = http.get(server.url + "/status")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    served, expected = r.json(), status_data(config)

    def timeless(d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d, now=None)
        if d.get("deploy"):
            d["deploy"] = dict(d["deploy"], age=None)  # whole seconds since the deploy
        return d

    assert timeless(served) == timeless(expected)
    assert served["consecutive_failures"] == 1
    assert served["open_incident"]["cause"] == "worker: command.status"


def test_metrics_parse_and_hold_the_store_figures(
    running: tuple[OpsServer, Config, FakeMonotonic], http: httpx.Client
) -> None:
    """/metrics parses with prometheus-client's own parser; every family has the store's values."""
    server, _, _ = running
    r = http.get(server.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST  # what generate_latest writes
    assert r.headers["content-type"].startswith("text/plain; version=")
    fams = _families(r.text)

    def one(name: str) -> float:
        return fams[name][()]

    assert one("healer_up") == 1
    assert one("healer_loop_alive") == 1
    assert one("healer_store_ok") == 1
    assert abs(one("healer_loop_last_seen_timestamp_seconds") - server.liveness.last_seen().timestamp()) < 1e-3
    # the loop's last cycle (the person's verification run after it does not count)
    assert fams["healer_check_ok"] == {(("check", "api"),): 1, (("check", "worker"),): 0}
    assert fams["healer_check_latency_seconds"] == {(("check", "api"),): 0.0125}  # worker: no latency
    assert one("healer_last_cycle_ok") == 0
    assert one("healer_consecutive_failures") == 1
    assert one("healer_rollback_after") == 5
    assert one("healer_incident_open") == 1
    assert one("healer_phase_index") == 0  # 2h into the default 6h/24h/72h phases
    assert one("healer_phases") == 3
    assert one("healer_in_launch_window") == 1
    assert one("healer_paused") == 0
    assert one("healer_held") == 0
    assert fams["healer_deploy_info"] == {(("commit", "a" * 12),): 1}
    assert fams["healer_cycles"] == {(("result", "failed"),): 2, (("result", "ok"),): 1}
    # finished repairs and rollbacks only: the repair still running is not counted yet
    assert fams["healer_repairs"] == {
        (("outcome", "ok"), ("playbook", "process-restart")): 1,
        (("outcome", "failed"), ("playbook", "redis-flush")): 1,
        (("outcome", "ok"), ("playbook", "redis-flush")): 2,
    }
    assert fams["healer_rollbacks"] == {(("outcome", "failed"),): 1, (("outcome", "ok"),): 1}
    assert fams["healer_alerts"] == {
        (("channel", "log"), ("outcome", "delivered")): 1,
        (("channel", "log"), ("outcome", "failed")): 0,
        (("channel", "slack"), ("outcome", "delivered")): 0,
        (("channel", "slack"), ("outcome", "failed")): 1,
    }
    assert fams["healer_alert_outbox_depth"] == {(("channel", "log"),): 1, (("channel", "slack"),): 1}


def test_metrics_before_healer_has_run_say_so(tmp_path: Path, http: httpx.Client) -> None:
    """No state database yet: healer_up 1, healer_store_ok 0, and no file is created."""
    config = _config(tmp_path)
    server = start_server(config, Liveness())
    assert server is not None
    try:
        fams = _families(http.get(server.url + "/metrics").text)
    finally:
        server.close()
    assert fams["healer_up"][()] == 1
    assert fams["healer_store_ok"][()] == 0
    assert "healer_consecutive_failures" not in fams
    assert not config.db_path.exists()


def test_the_server_shuts_down_cleanly_and_frees_its_port(tmp_path: Path, http: httpx.Client) -> None:
    """close() stops the thread and releases the port: a new server can bind it at once."""
    config = _config(tmp_path)
    server = start_server(config, Liveness())
    assert server is not None
    host, port = server.address
    assert http.get(server.url + "/healthz").status_code == 200
    server.close()
    with pytest.raises(httpx.ConnectError):
        http.get(server.url + "/healthz")
    again = OpsServer(config, Liveness(), host=host, port=port)
    again.close()


async def test_aclose_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """aclose() runs the blocking shutdown in a worker thread."""
    server = start_server(_config(tmp_path), Liveness())
    assert server is not None
    await server.aclose()


def test_server_is_off_without_listen(tmp_path: Path) -> None:
    """No [server] listen: no endpoint."""
    config = config_from(tmp_path, '[[checks]]\nname = "a"\ntype = "command"\nargv = ["true"]\n')
    assert start_server(config, Liveness()) is None


def test_a_taken_port_is_logged_and_healer_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another process on the port: start_server logs server.failed and returns None."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level("ERROR", logger="healer.server"):
            assert start_server(_config(tmp_path, f"127.0.0.1:{port}"), Liveness()) is None
    assert any(r.getMessage() == "server.failed" for r in caplog.records)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        pytest.param("127.0.0.1:8001", ("127.0.0.1", 8001), id="ipv4"),
        pytest.param("[::1]:8001", ("::1", 8001), id="ipv6"),
        pytest.param("localhost:9000", ("localhost", 9000), id="name"),
        pytest.param(":8001", ("127.0.0.1", 8001), id="no-host-means-loopback"),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, with brackets for IPv6; no host is loopback."""
    assert parse_listen(listen) == expected


def test_ipv6_loopback_serves(tmp_path: Path, http: httpx.Client) -> None:
    """[::1]:0 binds an IPv6 socket."""
    server = OpsServer(_config(tmp_path), Liveness(), host="::1", port=0)
    server.start()
    try:
        assert http.get(server.url + "/healthz").text == "ok\n"
    finally:
        server.close()


def test_without_a_fleet_no_sample_has_a_host_label(
    running: tuple[OpsServer, Config, FakeMonotonic], http: httpx.Client
) -> None:
    """Without [fleet], /metrics is one host's: no sample has a host label, and no fleet gauge shows."""
    server, _, _ = running
    families = list(text_string_to_metric_families(http.get(server.url + "/metrics").text))
    assert {"healer_up", "healer_cycles", "healer_check_ok"} <= {f.name for f in families}
    assert [s for f in families for s in f.samples if "host" in s.labels] == []
    assert not [f.name for f in families if f.name.startswith("healer_fleet_")]
