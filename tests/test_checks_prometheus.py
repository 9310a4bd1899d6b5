"""The prometheus check against a real Prometheus (Debian's package, our own process on a free
loopback port, scraping every second) that scrapes a loopback app's real /metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from services import HttpApp, MetricsApp, PrometheusServer, free_port, start_prometheus

from healer.config import parse_config
from healer.errors import ConfigError
from healer.judge import baseline_of, judge, reference_of
from healer.ladder import Role, role_of
from healer.model import CheckResult, Verdict

RunProbe = Callable[..., Awaitable[CheckResult]]
StartApp = Callable[..., HttpApp]

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
# releases the metrics app serves: their share of requests answered 500, and their latency
RATIOS = {"stable": 0.002, "healthy": 0.003, "bad": 0.12}
LATENCIES = {"stable": 0.02, "slow": 0.4}
WINDOW = "5s"
# bcrypt of "s3cr@t-pw" (Prometheus' web config takes only hashes)
PASSWORD_HASH = "$2b$04$nycQXsV7scffU8q0TCYw0OLMXA6ZOe2sQvaXdGXbzo7kmV4DJUwxG"  # five scrapes at scrape_interval 1s


def error_ratio(release: str) -> str:
    total = f'sum(rate(app_requests_total{{release="{release}"}}[{WINDOW}]))'
    return f'sum(rate(app_requests_total{{release="{release}",code="500"}}[{WINDOW}])) / {total}'


def p90(release: str) -> str:
    return f'histogram_quantile(0.9, sum by (le) (rate(app_request_seconds_bucket{{release="{release}"}}[{WINDOW}])))'


@pytest.fixture(scope="module")
def prom() -> Iterator[PrometheusServer]:
    """One app and one Prometheus scraping it for the module, once both series have a rate."""
    app = MetricsApp({**RATIOS, "slow": 0.0}, LATENCIES)
    server = start_prometheus([app.target])
    try:
        deadline = time.monotonic() + 30
        while not (server.query(error_ratio("bad")) and server.query(p90("slow"))):
            if time.monotonic() > deadline:
                pytest.fail("Prometheus had no rate of the app's requests within 30 s")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
        app.stop()


def check(url: str, query: str, **options: Any) -> dict[str, Any]:
    return {"type": "prometheus", "url": url, "query": query, "label": "error ratio", "min_increase": 0.01, **options}


def config_of(table: dict[str, Any]) -> Any:
    return parse_config({"checks": [{"name": "c", **table}]}, Path("healer.toml"))


async def cycles(run_probe: RunProbe, table: dict[str, Any], n: int) -> list[Verdict]:
    return [Verdict(T0 + timedelta(minutes=i), (await run_probe(table),)) for i in range(n)]


async def test_a_healthy_error_ratio_passes_with_its_value(run_probe: RunProbe, prom: PrometheusServer) -> None:
    """The query's value is kept as `value`; under max_value it passes."""
    r = await run_probe(check(prom.url, error_ratio("healthy"), max_value=0.05))
    assert r.ok, r.error
    assert r.values["value"] == pytest.approx(0.003, abs=1e-4)
    assert r.values["series"] == 1 and r.symptoms == ()


async def test_a_value_over_max_value_fails(run_probe: RunProbe, prom: PrometheusServer) -> None:
    """Over the absolute ceiling: `prometheus.value`, saying the value and the ceiling."""
    r = await run_probe(check(prom.url, error_ratio("bad"), max_value=0.05))
    assert not r.ok and r.symptoms == ("prometheus.value",)
    assert r.error == "error ratio 0.12 is over the max_value 0.05"


async def test_a_release_whose_error_ratio_jumps_fails_against_the_release_before(
    run_probe: RunProbe, prom: PrometheusServer
) -> None:
    """The release before's healthy cycles are pooled; a release at 60× its error ratio fails from
    its first cycle, with the explanation; one as healthy as it passes."""
    reference = reference_of(await cycles(run_probe, check(prom.url, error_ratio("stable")), 5), "stable-1")
    table = check(prom.url, error_ratio("bad"))
    bad = judge([await run_probe(table)], None, config_of(table).checks, T0, reference).results[0]
    assert not bad.ok and bad.symptoms == ("prometheus.value",)
    assert bad.error is not None
    assert re.fullmatch(r"error ratio 0\.12 vs 0\.002 in stable-1 \((59|60|61)×, median of 5 cycles\)", bad.error)
    table = check(prom.url, error_ratio("healthy"))
    good = judge([await run_probe(table)], None, config_of(table).checks, T0, reference).results[0]
    assert good.ok, good.error


async def test_too_few_cycles_of_the_release_before_decide_nothing(run_probe: RunProbe, prom: PrometheusServer) -> None:
    """With fewer than five values of the release before, the comparison is inconclusive."""
    reference = reference_of(await cycles(run_probe, check(prom.url, error_ratio("stable")), 4), "stable-1")
    table = check(prom.url, error_ratio("bad"))
    r = judge([await run_probe(table)], None, config_of(table).checks, T0, reference).results[0]
    assert r.ok, r.error


async def test_a_value_that_drifts_from_the_deploys_baseline_fails(run_probe: RunProbe, prom: PrometheusServer) -> None:
    """Against its own first healthy cycle: over max_factor × and min_increase more."""
    baseline = baseline_of((await cycles(run_probe, check(prom.url, error_ratio("stable")), 1))[0])
    table = check(prom.url, error_ratio("bad"))
    r = judge([await run_probe(table)], baseline, config_of(table).checks, T0).results[0]
    assert not r.ok and r.symptoms == ("prometheus.value",)
    assert r.error is not None and re.fullmatch(r"error ratio 0\.12 vs 0\.002 at baseline \((59|60|61)×\)", r.error)


async def test_p90_latency_of_real_requests(run_probe: RunProbe, prom: PrometheusServer) -> None:
    """histogram_quantile over the app's histogram: a release 20× slower than the one before
    fails, in seconds, with a floor in seconds."""
    seconds = {"label": "p90 latency", "min_increase": 0.05}
    reference = reference_of(await cycles(run_probe, check(prom.url, p90("stable"), **seconds), 5), "stable-1")
    table = check(prom.url, p90("slow"), **seconds)
    r = judge([await run_probe(table)], None, config_of(table).checks, T0, reference).results[0]
    assert 0.25 < r.values["value"] <= 0.5  # the 0.4 s requests fall in the (0.25, 0.5] bucket
    assert not r.ok and r.error is not None
    assert re.fullmatch(r"p90 latency 0\.475 vs 0\.0235 in stable-1 \(20×, median of 5 cycles\)", r.error)


@pytest.mark.parametrize(
    ("query", "symptom", "error"),
    [
        pytest.param(
            "sum(rate(app_requests_total[5s]",
            "prometheus.error",
            "Prometheus at {url} refused the query (HTTP 400, bad_data: ",
            id="syntax-error",
        ),
        pytest.param(
            'app_requests_total{release="none"}',
            "prometheus.empty",
            "the query returned no series (no such metric yet? `or vector(0)` gives 0): app_requests_total{",
            id="no-series",
        ),
        pytest.param(
            "vector(0) / vector(0)",
            "prometheus.empty",
            "the query's error ratio is NaN (0/0: no requests?): vector(0) / vector(0)",
            id="nan",
        ),
        pytest.param(
            "app_requests_total[5s]",
            "prometheus.error",
            "the query gives a matrix, not one number (an instant vector or a scalar)",
            id="range-vector",
        ),
    ],
)
async def test_a_query_that_gives_no_number_fails_with_its_symptom(
    run_probe: RunProbe, prom: PrometheusServer, query: str, symptom: str, error: str
) -> None:
    """A Prometheus error, no series and NaN each fail the check with one line and their symptom."""
    r = await run_probe(check(prom.url, query))
    assert not r.ok and not r.probe_error
    assert r.symptoms == (symptom,)
    assert r.error is not None and "\n" not in r.error
    assert r.error.startswith(error.replace("{url}", prom.url))
    assert "value" not in r.values


async def test_a_scalar_is_a_value(run_probe: RunProbe, prom: PrometheusServer) -> None:
    """A scalar query (no series at all) gives its number."""
    r = await run_probe(check(prom.url, "scalar(vector(0.25))", max_value=1))
    assert r.ok, r.error
    assert r.values["value"] == 0.25


async def test_prometheus_down_is_a_probe_error(run_probe: RunProbe) -> None:
    """Prometheus unreachable says nothing about the app: healer could not probe."""
    port = free_port()
    r = await run_probe(check(f"http://127.0.0.1:{port}", error_ratio("bad")))
    assert not r.ok and r.probe_error
    assert r.symptoms == ("prometheus.probe_error",)
    assert r.error is not None
    assert r.error.startswith(f"healer could not probe: cannot reach Prometheus at http://127.0.0.1:{port} (")


async def test_prometheus_hanging_is_a_probe_error_within_the_timeout(run_probe: RunProbe, http_app: StartApp) -> None:
    """A Prometheus that never answers is given up on within the check's timeout."""
    app = http_app("hang")
    r = await run_probe(check(app.url, error_ratio("bad"), timeout="1s"))
    assert r.probe_error and r.symptoms == ("prometheus.probe_error",)
    assert r.error == f"healer could not probe: Prometheus at {app.url} did not answer within 800 ms"


async def test_something_else_than_prometheus_is_an_error(run_probe: RunProbe, http_app: StartApp) -> None:
    """A URL that answers, but not with Prometheus' API (the app's own URL, say)."""
    app = http_app("error500")
    r = await run_probe(check(app.url, error_ratio("bad")))
    assert r.symptoms == ("prometheus.error",)
    assert r.error == f"Prometheus at {app.url} answered HTTP 500, not its API's JSON"


@pytest.mark.parametrize("running", [True, False], ids=["query-error", "down"])
async def test_a_password_in_the_url_never_shows(run_probe: RunProbe, prom: PrometheusServer, running: bool) -> None:
    """Basic auth in the URL is sent, never shown: the server is named without its user."""
    host = f"127.0.0.1:{prom.port if running else free_port()}"
    r = await run_probe(check(f"http://healer:s3cr%40t-pw@{host}/", "sum(rate("))
    assert not r.ok and r.error is not None
    assert f"Prometheus at http://{host}/" in r.error
    assert "s3cr" not in r.error and "healer:" not in r.error


async def test_basic_auth_in_the_url_is_sent(run_probe: RunProbe) -> None:
    """A Prometheus behind basic auth answers the URL's user; a wrong password is its refusal,
    and neither password shows."""
    server = start_prometheus([], users={"healer": PASSWORD_HASH})
    try:
        host = f"127.0.0.1:{server.port}"
        r = await run_probe(check(f"http://healer:s3cr%40t-pw@{host}", "vector(0.5)"))
        assert r.ok, r.error
        assert r.values["value"] == 0.5
        r = await run_probe(check(f"http://healer:wr0ng-pw@{host}", "vector(0.5)"))
        assert r.symptoms == ("prometheus.error",)
        assert r.error == f"Prometheus at http://{host} answered HTTP 401, not its API's JSON"
    finally:
        server.stop()


def test_min_increase_is_required_and_the_previous_floor_defaults_to_it() -> None:
    """The floor is in the query's unit, which no default knows: one line when it is missing."""
    with pytest.raises(ConfigError) as e:
        config_of({"type": "prometheus", "url": "http://127.0.0.1:9090", "query": "up"})
    assert str(e.value) == "healer.toml: checks[0].min_increase: missing required key"
    c = config_of(check("http://127.0.0.1:9090", "up", min_increase=0.02)).checks[0]
    assert c.min_increase_vs_previous == 0.02
    c = config_of(check("http://127.0.0.1:9090", "up", min_increase_vs_previous=0.001)).checks[0]
    assert (c.min_increase, c.min_increase_vs_previous) == (0.01, 0.001)


def test_a_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        config_of(check("127.0.0.1:9090", "up"))
    assert 'checks[0].url: expected the Prometheus server\'s URL like "http://127.0.0.1:9090"' in str(e.value)


def test_the_check_is_the_apps_by_default() -> None:
    """Its value measures what the app's users get: a bad value implicates the app."""
    assert role_of(config_of(check("http://127.0.0.1:9090", "up")).checks[0]) is Role.APP
