"""The CLI as a user runs it: real `healer` processes, no terminal, against real loopback apps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import healer, write_config
from services import HttpApp


def http_config(tmp_path: Path, url: str, *, timeout: str = "2s", count: int = 1) -> Path:
    checks = "".join(
        f"""
        [[checks]]
        name = "api{i}"
        type = "http"
        url = "{url}/health"
        timeout = "{timeout}"
        """
        for i in range(count)
    )
    return write_config(tmp_path, f'state_dir = "state"\n[app]\nname = "shop"\n{checks}')


@pytest.mark.parametrize(
    ("behaviour", "code", "words"),
    [
        pytest.param("healthy", 0, ["ok"], id="healthy"),
        pytest.param("error500", 1, ["FAIL", "http.status"], id="500"),
        pytest.param("down", 1, ["FAIL", "http.down"], id="down"),
        pytest.param("hang", 1, ["FAIL", "http.timeout"], id="hanging"),
        pytest.param("garbage", 1, ["FAIL"], id="garbage"),
        pytest.param("close", 1, ["FAIL"], id="closes-connection"),
    ],
)
def test_check_exit_code_and_table(
    tmp_path: Path, http_app: Callable[..., object], behaviour: str, code: int, words: list[str]
) -> None:
    """`healer check`: 0 healthy, 1 broken, down or hanging, with a readable table."""
    if behaviour == "down":
        app = http_app("healthy")
        url = str(app)
        app.stop()  # type: ignore[attr-defined]
    else:
        url = str(http_app(behaviour))
    path = http_config(tmp_path, url, timeout="1s")
    proc = healer("--config", str(path), "check")
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "api0" in proc.stdout
    for w in words:
        assert w in proc.stdout
    assert not (tmp_path / "state").exists()  # check changes nothing


def test_eight_hanging_checks_wait_together_not_one_after_another(
    tmp_path: Path, http_app: Callable[..., HttpApp]
) -> None:
    """Checks run concurrently: eight hanging checks are all waiting on the app at once.

    Run one after another, the app would never see more than one check's requests in flight.
    """
    app = http_app("hang")
    path = http_config(tmp_path, str(app), timeout="1s", count=8)
    proc = healer("--config", str(path), "check", "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [r["ok"] for r in data["results"]] == [False] * 8
    assert app.max_in_flight >= 8, app.max_in_flight


def test_check_json_is_parseable_and_complete(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """`healer check --json` gives every check's name, result, latency and symptoms."""
    path = http_config(tmp_path, str(http_app("healthy")))
    proc = healer("--config", str(path), "check", "--json")
    data = json.loads(proc.stdout)
    assert data["ok"] is True
    r = data["results"][0]
    assert r["name"] == "api0" and r["ok"] is True and r["latency_ms"] >= 0 and r["symptoms"] == []


def test_status_and_history_before_any_run(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """Before healer ever ran, status says so and history is empty; both exit 0."""
    path = http_config(tmp_path, str(http_app("healthy")))
    st = healer("--config", str(path), "status", "--json")
    assert st.returncode == 0
    assert json.loads(st.stdout)["loop"]["running"] is False
    hi = healer("--config", str(path), "history", "--json")
    assert hi.returncode == 0 and json.loads(hi.stdout) == []
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["history", "--since", "yesterday"], id="bad-since"),
        pytest.param(["check", "--jsn"], id="unknown-flag"),
        pytest.param(["frobnicate"], id="unknown-command"),
    ],
)
def test_bad_flags_exit_2(tmp_path: Path, http_app: Callable[..., object], args: list[str]) -> None:
    """A bad flag or command exits 2 with a short message and no traceback."""
    path = http_config(tmp_path, str(http_app("healthy")))
    proc = healer("--config", str(path), *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_baseline_without_state_is_a_clear_error(tmp_path: Path, http_app: Callable[..., object]) -> None:
    """`healer baseline` before any run explains that the loop takes it."""
    path = http_config(tmp_path, str(http_app("healthy")))
    proc = healer("--config", str(path), "baseline")
    assert proc.returncode == 2 and "first healthy cycle" in proc.stderr


def test_baseline_shows_the_release_befores_prometheus_values_and_the_deploys_own(tmp_path: Path) -> None:
    """For a Prometheus check, `healer baseline` (and --json) shows how many healthy cycles of
    the release before gave a value, their median, and the current deploy's own baseline value,
    beside the http check's pooled latency samples."""
    from datetime import UTC, datetime, timedelta

    from healer.judge import baseline_of
    from healer.model import CheckResult, Verdict, Who
    from healer.store import CycleUpdate, Store

    path = write_config(tmp_path, """
        state_dir = "state"
        [app]
        name = "shop"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:9/health"
        [[checks]]
        name = "errors"
        type = "prometheus"
        url = "http://127.0.0.1:9090"
        query = "q"
        label = "error ratio"
        min_increase = 0.01
        """)  # fmt: skip
    t0 = datetime(2026, 11, 30, 12, tzinfo=UTC)

    def cycle(at: datetime, ratio: float) -> Verdict:
        api = CheckResult(
            "api", "http", True, timedelta(milliseconds=5), {"latency_ms": 5.0}, samples_ms=(4.0, 5.0, 6.0)
        )
        return Verdict(at, (api, CheckResult("errors", "prometheus", True, values={"value": ratio, "series": 1.0})))

    with Store(tmp_path / "state" / "healer.db") as store:
        before, _ = store.ensure_deploy("a" * 40, t0)
        for i, ratio in enumerate([0.002, 0.003, 0.002, 0.004, 0.002]):
            v = cycle(t0 + timedelta(minutes=i), ratio)
            store.record_cycle(
                before.id, v, Who.LOOP, CycleUpdate(0, i + 1, 0, baseline_of(v) if i == 0 else None, None, False)
            )
        now, _ = store.ensure_deploy("b" * 40, t0 + timedelta(hours=1))
        v = cycle(t0 + timedelta(hours=1), 0.005)
        store.record_cycle(now.id, v, Who.LOOP, CycleUpdate(0, 1, 0, baseline_of(v), None, False))
    shown = healer("--config", str(path), "baseline")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"release before: {'a' * 12}, 5 healthy cycles pooled" in shown.stdout
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in shown.stdout.splitlines() if "│" in line]
    assert ["errors", "error ratio", "5", "0.002", "0.005"] in cells, shown.stdout
    assert ["errors", "value=0.005, series=1"] in cells, shown.stdout  # the deploy's own baseline
    assert ["api", "15", "5 ms", "6 ms", "0 of 15"] in cells, shown.stdout
    ref = json.loads(healer("--config", str(path), "baseline", "--json").stdout)["reference"]
    assert ref["values"]["errors"] == {"label": "error ratio", "cycles": 5, "median": 0.002, "baseline": 0.005}
    assert ref["checks"]["api"]["samples"] == 15 and ref["checks"]["api"]["median_ms"] == 5.0


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["run", "--observ"], id="misspelt-flag"),
        pytest.param(["repair"], id="missing-argument"),
        pytest.param(["pause"], id="missing-option"),
        pytest.param(["nonsense"], id="unknown-command"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, http_app: Callable[..., object], args: list[str]) -> None:
    """A usage error is one line on stderr naming the command, exit 2, like a config error."""
    path = http_config(tmp_path, str(http_app("healthy")))
    proc = healer("--config", str(path), *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("healer") and "--help" in proc.stderr
