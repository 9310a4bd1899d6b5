"""The http check against real HTTP servers on loopback: every way an app can answer or not."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from services import HttpApp, free_port

from healer.model import CheckResult, Reference

RunProbe = Callable[..., Awaitable[CheckResult]]
StartApp = Callable[..., HttpApp]


def http(url: str, **options: Any) -> dict[str, Any]:
    return {"type": "http", "url": url, **options}


async def test_healthy_app_passes_with_values(run_probe: RunProbe, http_app: StartApp) -> None:
    """A healthy app passes and reports median latency, status and sample counts."""
    app = http_app("healthy")
    r = await run_probe(http(f"{app.url}/health"))
    assert r.ok, r.error
    assert r.symptoms == () and r.error is None
    assert r.values["status"] == 200
    assert r.values["samples"] == 3 and r.values["samples_ok"] == 3
    assert r.values["latency_ms"] > 0
    assert r.latency is not None
    assert app.requests == ["GET /health"] * 3


@pytest.mark.parametrize(
    ("behaviour", "symptoms", "status"),
    [
        pytest.param("error500", ("http.status", "http.5xx"), 500, id="500"),
        pytest.param("ratelimited", ("http.status", "http.rate_limited"), 429, id="429"),
        pytest.param("close", ("http.down",), 0, id="closed-without-answer"),
        pytest.param("garbage", ("http.error",), 0, id="not-http"),
    ],
)
async def test_failing_app_is_a_failed_check_with_its_symptom(
    run_probe: RunProbe, http_app: StartApp, behaviour: str, symptoms: tuple[str, ...], status: int
) -> None:
    """Each way of answering badly fails the check with the symptom that names it."""
    app = http_app(behaviour)
    r = await run_probe(http(f"{app.url}/health", timeout="2s"))
    assert not r.ok
    assert r.symptoms == symptoms
    assert r.values["status"] == status
    assert r.values["samples_ok"] == 0
    # every one failed (those answered with HTTP were sampled more: the same answer nine times)
    assert r.error and re.search(r"\b(\d) of \1 samples failed", r.error), r.error


async def test_refused_connection_is_down(run_probe: RunProbe) -> None:
    """Nothing listening on the port is `http.down`, with no latency measured."""
    r = await run_probe(http(f"http://127.0.0.1:{free_port()}/health"))
    assert not r.ok
    assert r.symptoms == ("http.down",)
    assert r.values["status"] == 0 and "latency_ms" not in r.values
    assert r.error and "cannot connect" in r.error


async def test_hanging_app_times_out_within_the_check_timeout(run_probe: RunProbe, http_app: StartApp) -> None:
    """An app that never answers fails with `http.timeout` within the check's timeout."""
    app = http_app("hang")
    r = await run_probe(http(f"{app.url}/health", timeout="1s", samples=3))
    assert not r.ok
    assert r.symptoms == ("http.timeout",)
    # the samples shared the budget, so the probe reported itself rather than being cut off
    assert r.error and "3 of 3 samples failed" in r.error


async def test_slow_answers_over_the_ceiling_fail_with_latency(run_probe: RunProbe, http_app: StartApp) -> None:
    """Good answers whose median latency is over max_latency fail the check with `http.latency`."""
    app = http_app("slow", delay=0.25)
    r = await run_probe(http(f"{app.url}/", samples=1, max_latency="100ms"))
    assert not r.ok
    assert r.symptoms == ("http.latency",)
    assert r.values["latency_ms"] >= 250
    assert r.values["samples_ok"] == 1
    assert r.error and "over the 100ms ceiling" in r.error


async def test_slow_answers_under_the_ceiling_pass(run_probe: RunProbe, http_app: StartApp) -> None:
    """A slow app within max_latency passes: judging against the baseline is judge.py's job."""
    app = http_app("slow", delay=0.1)
    r = await run_probe(http(f"{app.url}/", samples=1, max_latency="2s"))
    assert r.ok, r.error
    assert r.values["latency_ms"] >= 100


async def test_one_failed_request_in_three_is_sampled_more_and_passes(run_probe: RunProbe, http_app: StartApp) -> None:
    """A flaky app failing one request in three is borderline on three samples: six more are
    taken, and the check passes on the nine (most passed)."""
    app = http_app("flaky", fail_ratio=1 / 3)
    r = await run_probe(http(app.url))
    assert r.ok, r.error
    assert app.hits == 9 and r.values["samples"] == 9
    assert r.values["samples_ok"] == 6 and r.values["status"] == 200


async def test_two_failed_requests_in_three_fail_over_all_samples(run_probe: RunProbe, http_app: StartApp) -> None:
    """A flaky app failing two requests in three is sampled more and still fails, on the nine,
    with `http.status` and `http.5xx`."""
    app = http_app("flaky", fail_ratio=2 / 3)
    r = await run_probe(http(app.url))
    assert not r.ok
    assert r.symptoms == ("http.status", "http.5xx")
    assert r.values["samples"] == 9 and r.values["samples_ok"] == 3 and r.values["status"] == 500
    assert r.error is not None and r.error.startswith("6 of 9 samples failed")


async def test_an_app_failing_one_request_in_ten_is_sampled_more_and_passes(
    run_probe: RunProbe, http_app: StartApp
) -> None:
    """A real app answering 500 to one request in ten (its 10th, 20th, ...): the cycle whose first
    request is a 500 is borderline, takes six more requests, and passes on the share over all
    nine (1 failed); the cycles before it took three and passed."""
    app = http_app("flaky", fail_ratio=0.1)
    for _ in range(3):  # requests 1-9 all pass: nothing borderline, three each
        hits = app.hits
        r = await run_probe(http(app.url))
        assert r.ok and app.hits - hits == 3 and r.values["samples"] == 3
    r = await run_probe(http(app.url))  # request 10 is the 500
    assert r.ok, r.error
    assert app.hits == 18 and r.values["samples"] == 9 and r.values["samples_ok"] == 8 and r.sample_errors == 1


@pytest.mark.parametrize("errors_before", [None, 0, 6], ids=["no-release-before", "clean-before", "noisy-before"])
async def test_an_app_answering_500_to_every_request_fails_in_one_cycle(
    run_probe: RunProbe, http_app: StartApp, errors_before: int | None
) -> None:
    """Every request 500 fails the check in its first cycle, whatever the release before did:
    three 500s could be a healthy app's random errors falling together, so six more requests
    tell, and all nine fail."""
    app = http_app("error500")
    reference = None
    if errors_before is not None:
        reference = Reference(
            "stable-1", {"c": tuple(30.0 + i % 5 for i in range(60))}, {"c": 60}, {"c": errors_before}
        )
    r = await run_probe(http(app.url), reference=reference)
    assert not r.ok and r.symptoms == ("http.status", "http.5xx")
    assert app.hits == 9 and r.values["samples"] == 9 and r.values["samples_ok"] == 0


async def test_raw_samples_are_kept_and_survive_json(run_probe: RunProbe, http_app: StartApp) -> None:
    """Each answered sample's latency and the failed count are kept, through to_json and back."""
    app = http_app("flaky", fail_ratio=2 / 3)
    r = await run_probe(http(app.url))
    assert len(r.samples_ms) == 9 and all(ms > 0 for ms in r.samples_ms)  # partly failed: sampled more
    assert r.sample_errors == 6
    assert CheckResult.from_json(r.to_json()) == r


async def test_refused_samples_have_no_latency_but_count_as_failed(run_probe: RunProbe) -> None:
    """A refused request has no latency to keep, and counts as a failed sample."""
    r = await run_probe(http(f"http://127.0.0.1:{free_port()}/health"))
    assert r.samples_ms == () and r.sample_errors == 3


@pytest.mark.parametrize(
    ("options", "ok"),
    [
        pytest.param({"body_contains": '"ok"'}, True, id="body-contains"),
        pytest.param({"body_contains": "healthy"}, False, id="body-lacks"),
        pytest.param({"json_field": "status", "json_value": "ok"}, True, id="json-equal"),
        pytest.param({"json_field": "status", "json_value": "down"}, False, id="json-differs"),
        pytest.param({"json_field": "db.ok", "json_value": True}, True, id="json-nested-bool"),
        pytest.param({"json_field": "db.ok", "json_value": 1}, False, id="json-true-is-not-1"),
        pytest.param({"json_field": "db.pool.0", "json_value": 5}, True, id="json-list-index"),
        pytest.param({"json_field": "db.pool.0", "json_value": "5"}, True, id="json-string-spelling"),
        pytest.param({"json_field": "db.missing"}, False, id="json-missing-field"),
        pytest.param({"json_field": "status"}, True, id="json-field-present"),
    ],
)
async def test_body_expectations(run_probe: RunProbe, http_app: StartApp, options: dict[str, Any], ok: bool) -> None:
    """body_contains and json_field (a dotted path, equal to json_value if given) judge the body."""
    app = http_app("healthy", body={"status": "ok", "db": {"ok": True, "pool": [5, 10]}})
    r = await run_probe(http(app.url, **options))
    assert r.ok is ok, r.error
    assert r.symptoms == (() if ok else ("http.body",))


async def test_non_json_body_fails_a_json_field_check(run_probe: RunProbe, http_app: StartApp) -> None:
    """A body that is not JSON fails a json_field check with `http.body`."""
    app = http_app("healthy", body="<html>ok</html>")
    r = await run_probe(http(app.url, json_field="status", json_value="ok"))
    assert r.symptoms == ("http.body",)
    assert r.error and "not JSON" in r.error


async def test_expect_status_accepts_a_list(run_probe: RunProbe, http_app: StartApp) -> None:
    """expect_status may list several good statuses."""
    app = http_app("ratelimited")
    r = await run_probe(http(app.url, expect_status=[200, 429]))
    assert r.ok, r.error


@pytest.mark.parametrize("method", ["HEAD", "POST"])
async def test_other_methods(run_probe: RunProbe, http_app: StartApp, method: str) -> None:
    """HEAD and POST probes are sent with that method."""
    app = http_app("healthy")
    r = await run_probe(http(f"{app.url}/h", method=method, samples=1))
    assert r.ok, r.error
    assert app.requests == [f"{method} /h"]


async def test_behaviour_switched_at_runtime_is_seen(run_probe: RunProbe, http_app: StartApp) -> None:
    """The same app, healthy then failing then healthy again, is judged each time afresh."""
    app = http_app("healthy")
    assert (await run_probe(http(app.url))).ok
    app.behaviour = "error500"
    assert (await run_probe(http(app.url))).symptoms == ("http.status", "http.5xx")
    app.behaviour = "healthy"
    assert (await run_probe(http(app.url))).ok


async def test_environment_proxies_are_ignored(run_probe: RunProbe, http_app: StartApp) -> None:
    """A proxy in the environment does not divert probes of the app."""
    app = http_app("healthy")
    dead = f"http://127.0.0.1:{free_port()}"
    os.environ.update(HTTP_PROXY=dead, http_proxy=dead, ALL_PROXY=dead, NO_PROXY="")
    r = await run_probe(http(app.url, samples=1))
    assert r.ok, r.error


async def test_url_credentials_never_appear_in_the_error(run_probe: RunProbe) -> None:
    """A URL with user:password that fails does not leak the password into the error."""
    r = await run_probe(http(f"http://admin:s3cr3t-pw@127.0.0.1:{free_port()}/health?token=abc123"))
    assert not r.ok
    assert r.error and "s3cr3t-pw" not in r.error and "abc123" not in r.error


def _reference(median_ms: float) -> Reference:
    """The release before: 60 pooled samples within 2.5 % of `median_ms` (check "c")."""
    samples = tuple(median_ms * (0.975 + (i * 7) % 11 / 200) for i in range(60))
    return Reference("stable-1", {"c": samples}, {"c": 60}, {"c": 0})


async def test_samples_as_fast_as_the_release_before_take_no_more(run_probe: RunProbe, http_app: StartApp) -> None:
    """Clearly no slower than the release before: the three samples decide."""
    app = http_app("slow", delay=0.05)
    r = await run_probe(http(f"{app.url}/health"), reference=_reference(200))
    assert r.ok and r.values["samples"] == 3 and app.hits == 3


async def test_borderline_samples_take_twice_as_many_more(run_probe: RunProbe, http_app: StartApp) -> None:
    """1.5x the release before's median, the factor's own bar: borderline, so six more requests
    (nine in all), all kept for the judge."""
    app = http_app("slow", delay=0.3)
    r = await run_probe(http(f"{app.url}/health", timeout="10s"), reference=_reference(200))
    assert r.ok, r.error
    assert app.hits == 9 and r.values["samples"] == 9 and len(r.samples_ms) == 9


async def test_borderline_samples_take_only_what_fits_in_the_timeout(run_probe: RunProbe, http_app: StartApp) -> None:
    """With 2 s (1.75 s of budget) and 300 ms answers, three samples leave room for one more
    at 1.5x the slowest: one is taken, and the check still ends within its timeout."""
    app = http_app("slow", delay=0.3)
    r = await run_probe(http(f"{app.url}/health", timeout="2s"), reference=_reference(200))
    assert "http.timeout" not in r.symptoms, r.error
    assert app.hits == 4 and r.values["samples"] == 4
