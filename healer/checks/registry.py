"""Every check type healer knows, one line each (pure at import: no driver is loaded).

A check type is one module in healer/checks/: its model (a `schema.CheckBase` with
`type: Literal["<type>"]` and its own keys), its `probe(check, ctx)`, and, when the check can
lean on another section of healer.toml, a `needs(check, config)`. config.py builds the
`[[checks]]` union from this table and checks/__init__.py runs the probes it names, so neither
names a check type. The check modules import their drivers (httpx, redis, psycopg, psutil)
inside the functions that use them: loading the config, or a core module that reads it,
loads none of them. CONTRIBUTING.md has the steps to add one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# one import per module (not `from healer.checks import ...`): the package imports this table
import healer.checks.command as command
import healer.checks.http as http
import healer.checks.postgres as postgres
import healer.checks.process as process
import healer.checks.prometheus as prometheus
import healer.checks.redis as redis
import healer.checks.system as system
import healer.checks.tcp as tcp
from healer.schema import CheckBase

if TYPE_CHECKING:
    from healer.checks.base import Probe
    from healer.config import Config

# What a check lacks that another section could give: (its key, or "" for the whole check,
# what was expected); None when it has all it needs.
Needs = Callable[[Any, "Config"], tuple[str, str] | None]


@dataclass(frozen=True, slots=True)
class CheckKind:
    """One check type: the model its `[[checks]]` table is read into, and what runs it."""

    model: type[CheckBase]
    probe: Probe
    needs: Needs | None = None


# The order is the order healer.toml's errors list the types in.
CHECKS: Mapping[str, CheckKind] = {
    "http": CheckKind(http.HttpCheck, http.probe),
    "process": CheckKind(process.ProcessCheck, process.probe, process.needs),
    "system": CheckKind(system.SystemCheck, system.probe),
    "redis": CheckKind(redis.RedisCheck, redis.probe, redis.needs),
    "postgres": CheckKind(postgres.PostgresCheck, postgres.probe, postgres.needs),
    "command": CheckKind(command.CommandCheck, command.probe),
    "tcp": CheckKind(tcp.TcpCheck, tcp.probe),
    "prometheus": CheckKind(prometheus.PrometheusCheck, prometheus.probe),
}
