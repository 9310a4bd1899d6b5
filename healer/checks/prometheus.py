"""The prometheus check: one PromQL instant query against the app's Prometheus (I/O, httpx).

Probes see what a probe gets; the app's own metrics say what its users get — the error ratio or
the p99 latency of real requests — as Argo Rollouts' and Kayenta's analyses judge a release.
The check asks `GET {url}/api/v1/query?query=...` once per cycle, within its timeout, and keeps
the query's value as `value`. It fails on its own when the value is over `max_value`; healer's
judge (healer/judge.py) adds what the keys below ask for: the value drifting from the deploy's
baseline, and from the release before's pooled values. Prometheus answering with an error
(`prometheus.error`), or with no value at all (`prometheus.empty`: no series, or NaN) fails it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, model_validator

from healer.checks.base import budget, describe_error, failed, local_failure, measured, unprobed
from healer.model import CheckResult
from healer.redact import redact
from healer.schema import CheckBase, Factor

if TYPE_CHECKING:
    from healer.checks.base import ProbeContext

_SHOW_MAX = 200
_NonNegative = Annotated[float, Field(ge=0)]


class PrometheusCheck(CheckBase):
    """The value of a PromQL query (one number: an error ratio, a p99 latency in seconds) is
    not over `max_value`, nor drifted from the deploy's baseline or the release before.

    Its role is the app's (the default): the value measures what the app's users get, so a
    release whose error ratio jumps is the release's fault and may be rolled back. Prometheus
    itself unreachable or too slow to answer is not the app failing, and not a dependency of
    the app either (a dependency's failure would excuse the app's own failing checks): it is
    healer unable to see, a probe error (`prometheus.probe_error`) that neither accuses nor
    excuses the app and, several cycles in a row, alerts a person.
    """

    type: Literal["prometheus"]
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]  # the Prometheus server, not the app
    query: Annotated[str, Field(min_length=1)]
    label: Annotated[str, Field(min_length=1, max_length=40)] = "value"  # what the value is, in explanations
    max_value: float | None = None  # absolute ceiling, in the query's unit
    # vs the deploy's own baseline (its first healthy cycle): over max_factor × it AND
    # min_increase more. The floor is in the query's unit (a ratio, seconds, bytes), which no
    # default can know: it is required.
    max_factor: Factor = 3.0
    min_increase: _NonNegative
    # vs the release before (the median of its healthy cycles' values): over this factor AND
    # min_increase_vs_previous more (default: min_increase)
    max_factor_vs_previous: Factor = 1.5
    min_increase_vs_previous: _NonNegative

    uses_http: ClassVar[bool] = True
    probes_app: ClassVar[bool] = False  # its query's window still holds the release before's requests
    hints: ClassVar[Mapping[str, str]] = {"url": 'expected the Prometheus server\'s URL like "http://127.0.0.1:9090"'}

    @model_validator(mode="before")
    @classmethod
    def _floor_vs_previous(cls, data: Any) -> Any:
        """min_increase_vs_previous defaults to min_increase (a required key has no static
        default). A min_increase missing or bad is its own error: the copy stays quiet."""
        if not isinstance(data, dict) or "min_increase_vs_previous" in data:
            return data
        try:
            floor = float(data["min_increase"])
        except (KeyError, TypeError, ValueError):
            floor = 0.0
        return {**data, "min_increase_vs_previous": floor if floor >= 0 else 0.0}


async def probe(check: PrometheusCheck, ctx: ProbeContext) -> CheckResult:
    """1. GET /api/v1/query within the budget (Prometheus is told the same bound); 2. Prometheus
    not answering is a probe error; 3. its answer judged: an error, no value, or the value."""
    import httpx  # here, not at the top: loading the config must not load the driver (registry.py)

    seconds = budget(check.timeout)
    where = _where(check.url)
    secrets = _url_secrets(check.url)
    endpoint = check.url.rstrip("/") + "/api/v1/query"
    params = {"query": check.query, "timeout": f"{max(1, int(seconds * 1000))}ms"}
    try:
        # httpx's timeouts bound each read, not the whole exchange: bound that as well
        async with asyncio.timeout(seconds):
            resp = await ctx.client_for(check.name).get(endpoint, params=params, timeout=seconds)
    except (TimeoutError, httpx.TimeoutException):
        return unprobed(check, f"Prometheus at {where} did not answer within {round(seconds * 1000)} ms")
    except httpx.HTTPError as e:
        local = local_failure(e)
        why = describe_error(local or e, *secrets)
        return unprobed(check, why if local else f"cannot reach Prometheus at {where} ({why})")
    return _judge(check, where, resp.status_code, resp.content, secrets)


def _where(url: str) -> str:
    """The server's URL for messages: no user, password, query or fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _url_secrets(url: str) -> tuple[str, ...]:
    """The URL's password as written and decoded: a driver's message may quote either."""
    password = urlsplit(url).password
    return (password, unquote(password)) if password else ()


def _judge(check: PrometheusCheck, where: str, status: int, body: bytes, secrets: tuple[str, ...]) -> CheckResult:
    """Prometheus' answer (https://prometheus.io/docs/prometheus/latest/querying/api/): the
    envelope's status, then an instant vector's or a scalar's value."""
    try:
        doc: object = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not _is_envelope(doc):
        return _error(check, f"Prometheus at {where} answered HTTP {status}, not its API's JSON", secrets)
    if doc["status"] == "error":
        why = f"{doc['errorType']}: {doc.get('error', '')}".strip(": ")
        return _error(check, f"Prometheus at {where} refused the query (HTTP {status}, {why})", secrets)
    data = doc.get("data")
    kind, result = (data.get("resultType"), data.get("result")) if isinstance(data, dict) else (None, None)
    try:
        numbers = _numbers(kind, result)
    except (TypeError, ValueError, IndexError, KeyError):
        return _error(check, f"Prometheus at {where} answered a {kind or 'result'} healer cannot read", secrets)
    if numbers is None:
        return _error(check, f"the query gives a {kind}, not one number (an instant vector or a scalar)", secrets)
    return _judge_value(check, numbers)


def _is_envelope(doc: dict[str, Any]) -> bool:
    """Prometheus' own answer, not any JSON with a status (an app's health body)."""
    return (doc.get("status") == "success" and "data" in doc) or (doc.get("status") == "error" and "errorType" in doc)


def _numbers(kind: object, result: object) -> list[float] | None:
    """The values of an instant vector's series or of a scalar; None for another result type."""
    if kind == "scalar" and isinstance(result, list):
        return [float(result[1])]
    if kind == "vector" and isinstance(result, list):
        return [float(series["value"][1]) for series in result]
    return None


def _judge_value(check: PrometheusCheck, numbers: list[float]) -> CheckResult:
    """No series or NaN (0/0: no requests to divide by) is no value; with several series the
    largest is judged (the worst route, say)."""
    if not numbers:
        return failed(
            check,
            f"the query returned no series (no such metric yet? `or vector(0)` gives 0): {_show(check.query)}",
            "prometheus.empty",
        )
    real = [n for n in numbers if not math.isnan(n)]
    if not real:
        return failed(
            check, f"the query's {check.label} is NaN (0/0: no requests?): {_show(check.query)}", "prometheus.empty"
        )
    value = max(real)
    if math.isinf(value):  # a quantile beyond the histogram's largest finite bucket
        return failed(check, f"{check.label} is {value} (beyond the histogram's largest bucket)", "prometheus.value")
    values = {"value": value, "series": float(len(numbers))}
    if check.max_value is not None and value > check.max_value:
        error = f"{check.label} {value:.4g} is over the max_value {check.max_value:.4g}"
        return measured(check, values, ["prometheus.value"], [error])
    return measured(check, values, [], [])


def _error(check: PrometheusCheck, error: str, secrets: tuple[str, ...]) -> CheckResult:
    return failed(check, _show(redact(error, *secrets), _SHOW_MAX * 2), "prometheus.error")


def _show(text: str, limit: int = _SHOW_MAX) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
