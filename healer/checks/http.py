"""The http check: request a URL `samples` times within the check's timeout, and up to three
times as many when those are borderline: partly failed, or near the bars against the release
before (I/O).

The check passes when a strict majority of samples pass (status, body_contains, json_field);
its latency is the median of the samples that got an answer. The result keeps each answered
sample's latency and the count of failed samples, for the statistical judge. Samples run one after the other,
which is gentler on the app; each gets a fair share of what is left of the check's budget, so
a sample that hangs never pushes the check past its timeout.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from healer.checks.base import budget, describe_error, local_failure, unprobed
from healer.model import CheckResult
from healer.redact import redact
from healer.schema import CheckBase, Duration, Factor, Percent, PositiveDuration, format_duration

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

    from healer.checks.base import ProbeContext
    from healer.sampling import FirstSamples

# A health body is small; read no more than this of it.
_BODY_MAX = 1 << 20
_SHOW_MAX = 60
_MISSING = object()


class HttpCheck(CheckBase):
    """GET a URL `samples` times; passes when most samples pass; latency is their median."""

    type: Literal["http"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: int | list[int] = 200
    body_contains: str | None = None
    json_field: str | None = None  # dotted path into a JSON body, e.g. "status" or "db.ok"
    json_value: str | int | float | bool | None = None
    samples: Annotated[int, Field(ge=1, le=25)] = 3
    max_latency_factor: Factor = 3.0
    min_latency_increase: Duration = timedelta(milliseconds=100)
    # vs the release before (its pooled samples): a rank test (p < 0.02) must agree as well,
    # so the factor only says what is worth a rollback, not what is beyond noise
    max_latency_factor_vs_previous: Factor = 1.5
    # ... and at least this much slower than the release before: lower than min_latency_increase,
    # as the pooled reference (20 cycles' samples) and the rank test already stand against noise
    min_latency_increase_vs_previous: Duration = timedelta(milliseconds=20)
    # the share of failed requests vs the release before's, by Fisher's exact test (p < 0.02):
    # only with at least this many failed in the cycle (a handful is noise, kayenta #426) ...
    min_errors_vs_previous: Annotated[int, Field(ge=1)] = 3
    # ... and a share at least this many percentage points over that release's
    min_error_rate_increase_vs_previous: Percent = 20.0
    max_latency: PositiveDuration = timedelta(seconds=10)  # absolute ceiling (seed 002: 10 s)

    uses_http: ClassVar[bool] = True

    def expected_statuses(self) -> tuple[int, ...]:
        return tuple(self.expect_status) if isinstance(self.expect_status, list) else (self.expect_status,)


@dataclass(frozen=True, slots=True)
class _Sample:
    """One request: `kind` is "ok" or the failure (down, timeout, status, body, error), or
    "probe" when healer could not send it at all."""

    kind: str
    status: int = 0  # 0 when nothing that parses as HTTP came back
    latency: float | None = None  # seconds, when an answer arrived
    detail: str = ""


async def probe(check: HttpCheck, ctx: ProbeContext) -> CheckResult:
    """1. Take `samples` samples; 2. when they are borderline (partly failed, or their latency
    near the bars against the release before: healer/sampling.py decides), take as many more as
    it says, within the same budget; 3. judge them all against the check's absolute expectations."""
    # here, not at the top: sampling reads the config's types, and the config imports this module
    from healer.sampling import extra_samples

    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget(check.timeout)
    client = ctx.client_for(check.name)
    samples = await _take(client, check, check.samples, deadline)
    ref = ctx.reference
    pooled = ref.samples_ms.get(check.name, ()) if ref else ()
    left = timedelta(seconds=max(0.0, deadline - loop.time()))
    more = extra_samples(check, check.samples, first_samples(samples), pooled, left)
    samples += await _take(client, check, more, deadline)
    return _judge(check, samples)


def first_samples(taken: Sequence[_Sample]) -> FirstSamples:
    """What the requests that left healer showed, for healer/sampling.py (the bench reads it too)."""
    from healer.sampling import FirstSamples  # here, not at the top: as in probe()

    sent = [s for s in taken if s.kind != "probe"]
    return FirstSamples(len(sent), sum(s.kind != "ok" for s in sent), _latencies_ms(sent))


async def _take(client: httpx.AsyncClient, check: HttpCheck, n: int, deadline: float) -> list[_Sample]:
    """`n` requests one after the other, each given its fair share of the time left to `deadline`."""
    loop = asyncio.get_running_loop()
    taken: list[_Sample] = []
    for i in range(n):
        taken.append(await _sample(client, check, (deadline - loop.time()) / (n - i)))
    return taken


def _latencies_ms(samples: Sequence[_Sample]) -> tuple[float, ...]:
    """Each answered request's latency, as the judge sees it (`CheckResult.samples_ms`)."""
    return tuple(round(s.latency * 1000, 3) for s in samples if s.kind != "probe" and s.latency is not None)


async def _sample(client: httpx.AsyncClient, check: HttpCheck, timeout: float) -> _Sample:
    """One request; healer's own failure to send it (out of descriptors, memory, local ports)
    is a "probe" sample, which says nothing about the app."""
    try:
        return await _request(client, check, timeout)
    except Exception as e:
        local = local_failure(e)
        if local is None:
            raise
        return _Sample("probe", detail=describe_error(local))


async def _request(client: httpx.AsyncClient, check: HttpCheck, timeout: float) -> _Sample:
    import httpx  # here, not at the top: loading the config must not load the driver (registry.py)

    if timeout <= 0.001:
        return _Sample("timeout", detail="no time left for this sample")
    start = time.perf_counter()
    try:
        # httpx timeouts bound each read, not the whole exchange: a server trickling bytes
        # would never trip them, so the exchange as a whole is bounded too.
        async with asyncio.timeout(timeout):
            async with client.stream(check.method, check.url, headers=check.headers, timeout=timeout) as resp:
                body = await _read(resp)
    except httpx.PoolTimeout:
        # every connection of healer's own pool was busy: the request never left healer
        return _Sample("probe", detail="no free connection in healer's pool")
    except (TimeoutError, httpx.TimeoutException):
        return _Sample("timeout", detail=f"no answer within {round(timeout * 1000)} ms")
    except httpx.ConnectError as e:
        if local_failure(e) is not None:
            raise
        return _Sample("down", detail=f"cannot connect ({_reason(e)})")
    except httpx.RemoteProtocolError as e:
        if "without sending" in str(e) or "disconnected" in str(e).lower():
            return _Sample("down", detail="connection closed without an answer")
        return _Sample("error", detail=f"not an HTTP answer ({_reason(e)})")
    except (httpx.ReadError, httpx.WriteError) as e:
        return _Sample("down", detail=f"connection lost ({_reason(e)})")
    except Exception as e:  # a garbage answer is a failed sample, whatever the client raises
        if local_failure(e) is not None:
            raise
        return _Sample("error", detail=describe_error(e))
    latency = time.perf_counter() - start
    return _judge_response(check, resp.status_code, body, resp.encoding, latency)


async def _read(resp: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _BODY_MAX:
            break
    return b"".join(chunks)[:_BODY_MAX]


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text and text[0] else type(e).__name__


def _judge_response(check: HttpCheck, status: int, body: bytes, encoding: str | None, latency: float) -> _Sample:
    expected = check.expected_statuses()
    if status not in expected:
        want = " or ".join(map(str, expected))
        return _Sample("status", status, latency, f"HTTP {status} (expected {want})")
    if check.body_contains is None and check.json_field is None:
        return _Sample("ok", status, latency)
    try:
        text = body.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    if check.body_contains is not None and check.body_contains not in text:
        return _Sample("body", status, latency, f"body does not contain {_show(check.body_contains)}")
    if check.json_field is not None:
        problem = _json_problem(text, check.json_field, check.json_value)
        if problem:
            return _Sample("body", status, latency, problem)
    return _Sample("ok", status, latency)


def _json_problem(text: str, field: str, expected: str | int | float | bool | None) -> str | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return "body is not JSON"
    actual = _lookup(doc, field)
    if actual is _MISSING:
        return f"no field {field!r} in the JSON body"
    if expected is None:
        return f"{field} is null" if actual is None else None
    if not _matches(actual, expected):
        return f"{field} is {_show(actual)}, expected {_show(expected)}"
    return None


def _lookup(doc: object, path: str) -> object:
    """A dotted path into JSON: "db.ok", or "items.0.id" through a list."""
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return _MISSING
    return cur


def _matches(actual: object, expected: str | int | float | bool) -> bool:
    if isinstance(expected, str) and not isinstance(actual, str):
        # json_value = "true" or "3" in TOML still matches the JSON true or 3
        return json.dumps(actual) == expected
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 1] + "…"


def _judge(check: HttpCheck, taken: list[_Sample]) -> CheckResult:
    samples = [s for s in taken if s.kind != "probe"]  # judged on the requests that left healer
    if not samples:
        return unprobed(check, taken[0].detail)
    n = len(samples)
    passed = [s for s in samples if s.kind == "ok"]
    failures = [s for s in samples if s.kind != "ok"]
    latencies = [s.latency for s in samples if s.latency is not None]
    statuses = Counter(s.status for s in samples if s.status)
    values: dict[str, float] = {
        "samples": n,
        "samples_ok": len(passed),
        "status": statuses.most_common(1)[0][0] if statuses else 0,
    }
    median = statistics.median(latencies) if latencies else None
    if median is not None:
        values["latency_ms"] = round(median * 1000, 3)

    symptoms: list[str] = []
    errors: list[str] = []
    if len(passed) * 2 <= n:
        kinds = Counter(s.kind for s in failures)
        top = [k for k, c in kinds.items() if c * 2 > n]
        if not top:  # no single failure is a majority: name the most common ones
            most = max(kinds.values())
            top = [k for k, c in kinds.items() if c == most]
        symptoms += [f"http.{k}" for k in top]
        if sum(1 for s in samples if s.status == 429) * 2 > n:
            symptoms.append("http.rate_limited")
        if sum(1 for s in samples if s.kind == "status" and s.status >= 500) * 2 > n:
            symptoms.append("http.5xx")  # the app answers, but fails: a restart may cure it
        detail = next(s.detail for s in failures if s.kind == top[0])
        errors.append(f"{len(failures)} of {n} samples failed: {detail}")
    ceiling = check.max_latency.total_seconds()
    if median is not None and median > ceiling:
        symptoms.append("http.latency")
        ceiling_text = format_duration(check.max_latency)
        errors.append(f"median latency {round(median * 1000)} ms is over the {ceiling_text} ceiling")
    return CheckResult(
        name=check.name,
        type=check.type,
        ok=not symptoms,
        latency=None if median is None else timedelta(seconds=median),
        values=values,
        error=redact("; ".join(errors)) or None,  # details quote the app's and proxies' answers
        symptoms=tuple(symptoms),
        samples_ms=_latencies_ms(samples),
        sample_errors=len(failures),
    )
