"""healer.toml -> frozen, validated config objects (pure, apart from reading the file).

Every problem is reported, one line each, naming the file, the key path and what was
expected: `healer.toml: checks[2].timeout: expected a duration like "5s", got "5 sec"`.
Unknown keys are errors, so a typo never silently disables a check.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from healer.errors import ConfigError
from healer.model import Severity

DEFAULT_CONFIG_NAME = "healer.toml"
CONFIG_ENV = "HEALER_CONFIG"

MAX_DURATION = timedelta(days=3650)  # longer is a typo, and would overflow date arithmetic
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$")
_SIZE_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}  # fmt: skip


def parse_duration(value: object) -> timedelta:
    """`500ms`, `30s`, `15m`, `6h`, `3d` -> timedelta; anything else is an error."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            if seconds > MAX_DURATION.total_seconds():
                raise PydanticCustomError(
                    "duration", "expected a duration of at most 10 years, got {got}", {"got": _show(value)}
                )
            return timedelta(seconds=seconds)
    raise PydanticCustomError(
        "duration", 'expected a duration like "5s", "15m" or "6h", got {got}', {"got": _show(value)}
    )


def format_duration(d: timedelta) -> str:
    """The shortest exact spelling of a duration: 90s -> "90s", 1h -> "1h"."""
    ms = round(d.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_elapsed(d: timedelta) -> str:
    """A duration for people, rounded: 20.307s -> "20.3s", 4h 2m 7s -> "4h 2m". The one
    spelling of a measured or elapsed time (took, waited, delayed, open for); a configured
    duration is spelled exactly by format_duration."""
    secs = max(0.0, d.total_seconds())
    if secs < 60:
        return f"{secs:.1f}".removesuffix(".0") + "s"
    parts: list[str] = []
    rest = round(secs)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n or parts:
            parts.append(f"{n}{unit}")
    return " ".join(p for p in parts[:2] if not p.startswith("0"))


def parse_size(value: object) -> int:
    """`512MB`, `1GiB` -> bytes; a bare whole number is bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise PydanticCustomError("size", 'expected a size like "512MB" or "2GiB", got {got}', {"got": _show(value)})


def format_size(n: float) -> str:
    """Bytes for people: "800 B", "1.5 KB", "12.3 MB", "2.0 GB" (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _show(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _positive(d: timedelta) -> timedelta:
    if d <= timedelta(0):
        raise PydanticCustomError("duration", "expected a duration above zero, got {got}", {"got": format_duration(d)})
    return d


def _resolve_path(p: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the directory of the config file."""
    base = (info.context or {}).get("base")
    p = p.expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return p


def _argv(v: list[str]) -> list[str]:
    if not v or not v[0]:
        raise PydanticCustomError(
            "argv", 'expected an argv list like ["systemctl", "restart", "shop"], got an empty list', {}
        )
    return v


def _not_shell_string(v: object) -> object:
    if isinstance(v, str):
        raise PydanticCustomError(
            "argv",
            'expected an argv list like ["systemctl", "restart", "shop"] (never a shell string), got {got}',
            {"got": _show(v)},
        )
    return v


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
Size = Annotated[int, BeforeValidator(parse_size)]
RelPath = Annotated[Path, AfterValidator(_resolve_path)]
Argv = Annotated[list[str], BeforeValidator(_not_shell_string), AfterValidator(_argv)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
Percent = Annotated[float, Field(gt=0, le=100)]
Factor = Annotated[float, Field(ge=1.0)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- checks ----------------------------------------------------------------------------------


class _Check(_Model):
    name: Name
    timeout: PositiveDuration = timedelta(seconds=5)
    # "dependency": its failure explains the app's (no rollback, no restart loop); default by
    # type: redis and postgres checks are dependencies, a system check is the host's (never a
    # rollback, but no excuse for a crash), the others watch the app (healer/ladder.py)
    role: Literal["app", "dependency"] | None = None


class HttpCheck(_Check):
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
    max_latency: PositiveDuration = timedelta(seconds=10)  # absolute ceiling (seed 002: 10 s)

    def expected_statuses(self) -> tuple[int, ...]:
        return tuple(self.expect_status) if isinstance(self.expect_status, list) else (self.expect_status,)


class ProcessCheck(_Check):
    """The app's processes are alive; their memory stays near the baseline."""

    type: Literal["process"]
    match: str | None = None  # substring of the command line; default: [process] match
    pidfile: RelPath | None = None
    process_name: str | None = None
    min_count: Annotated[int, Field(ge=1)] = 1
    max_rss: Size | None = None  # absolute ceiling, all matched processes together
    max_memory_factor: Factor = 2.0  # vs the baseline RSS
    min_memory_increase: Size = 50 * 2**20  # ... and at least this much more (noise)
    max_cpu_percent: Annotated[float, Field(gt=0)] | None = None


class SystemCheck(_Check):
    """The machine: memory %, disk % of a path, load per CPU."""

    type: Literal["system"]
    memory_max_percent: Percent = 90.0
    disk_path: RelPath = Path("/")
    disk_max_percent: Percent = 85.0
    load_max: Annotated[float, Field(gt=0)] | None = None  # 1-minute load average per CPU


class RedisCheck(_Check):
    """PING latency, used memory, connected clients."""

    type: Literal["redis"]
    url: str | None = None  # default: [redis] url
    max_latency: PositiveDuration = timedelta(seconds=1)
    max_latency_factor: Factor = 5.0
    min_latency_increase: Duration = timedelta(milliseconds=50)
    max_memory: Size | None = None
    max_memory_percent: Percent = 90.0  # of maxmemory, when Redis has one
    max_clients: Annotated[int, Field(ge=1)] | None = None


class PostgresCheck(_Check):
    """Connect + query latency, connections in use vs max_connections."""

    type: Literal["postgres"]
    dsn_env: EnvName | None = None  # default: [postgres] dsn_env
    max_connections_percent: Percent = 80.0  # seeds alert at 80 %
    max_latency: PositiveDuration = timedelta(seconds=5)
    max_latency_factor: Factor = 5.0
    min_latency_increase: Duration = timedelta(milliseconds=100)


class CommandCheck(_Check):
    """Runs an argv (never a shell string); exit status `expect_exit` is ok."""

    type: Literal["command"]
    argv: Argv
    expect_exit: int = 0
    cwd: RelPath | None = None


class TcpCheck(_Check):
    """A TCP connection to `address` opens within the timeout (a port the app or a dependency
    listens on). A dependency by default (healer/ladder.py): give it `role = "app"` for the
    app's own port."""

    type: Literal["tcp"]
    address: Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[\w.\-]+):\d{1,5}$")]


CheckConfig = Annotated[
    HttpCheck | ProcessCheck | SystemCheck | RedisCheck | PostgresCheck | CommandCheck | TcpCheck,
    Field(discriminator="type"),
]
CHECK_TYPES = ("http", "process", "system", "redis", "postgres", "command", "tcp")


# ---- sections --------------------------------------------------------------------------------


class AppConfig(_Model):
    name: Name = "app"
    repo: RelPath | None = None
    stable_tags: str = "stable-*"
    tag_stable_after: PositiveDuration = timedelta(hours=6)


class Phase(_Model):
    until: PositiveDuration
    every: PositiveDuration


DEFAULT_PHASES = (
    Phase(until=timedelta(hours=6), every=timedelta(minutes=15)),
    Phase(until=timedelta(hours=24), every=timedelta(minutes=30)),
    Phase(until=timedelta(hours=72), every=timedelta(hours=4)),
)


class ScheduleConfig(_Model):
    phases: Annotated[tuple[Phase, ...], Field(min_length=1)] = DEFAULT_PHASES
    incident_every: PositiveDuration = timedelta(minutes=1)

    @model_validator(mode="after")
    def _increasing(self) -> ScheduleConfig:
        for i in range(1, len(self.phases)):
            if self.phases[i].until <= self.phases[i - 1].until:
                raise PydanticCustomError(
                    "phases",
                    "phases[{i}].until: expected each phase to end after the one before ({a} <= {b})",
                    {
                        "i": i,
                        "a": format_duration(self.phases[i].until),
                        "b": format_duration(self.phases[i - 1].until),
                    },
                )
        return self

    @property
    def window(self) -> timedelta:
        return self.phases[-1].until


class EmergencyConfig(_Model):
    """Triggers that roll back before `rollback_after`, each confirmed by `confirm_cycles`."""

    all_endpoints_down: bool = True
    max_avg_latency: PositiveDuration | None = timedelta(seconds=10)
    memory_critical_percent: Percent | None = 95.0
    confirm_cycles: Annotated[int, Field(ge=2)] = 2


class EscalationConfig(_Model):
    rollback_after: Annotated[int, Field(ge=1, le=100)] = 5
    recover_after: Annotated[int, Field(ge=1, le=100)] = 2
    repair_grace: Duration = timedelta(seconds=30)
    # after HEAD moves, while the app does not answer at all: the deploy may still be stopping,
    # migrating and starting it; healer records but repairs and rolls back nothing
    deploy_grace: Duration = timedelta(seconds=60)
    mode: Literal["act", "observe"] = "act"
    emergency: EmergencyConfig = EmergencyConfig()


class ProcessConfig(_Model):
    manager: Literal["systemd", "pm2", "supervisor", "command"] = "systemd"
    name: str | None = None
    control: Argv | None = None
    start: Argv | None = None
    cwd: RelPath | None = None
    match: str | None = None
    pidfile: RelPath | None = None
    stop_timeout: PositiveDuration = timedelta(seconds=10)
    start_timeout: PositiveDuration = timedelta(seconds=30)
    reload_signal: str | None = None  # e.g. "SIGHUP": how connection-reset asks the app to reopen its pool

    @model_validator(mode="after")
    def _complete(self) -> ProcessConfig:
        if self.manager == "command":
            if not self.start:
                raise PydanticCustomError(
                    "process", 'start: expected the argv that starts the app when manager = "command"', {}
                )
            if not (self.match or self.pidfile):
                raise PydanticCustomError(
                    "process", 'match: expected match = "..." or pidfile = "..." when manager = "command"', {}
                )
        elif not self.name:
            raise PydanticCustomError("process", "name: expected the {m} name of the app", {"m": self.manager})
        return self


class RedisConfig(_Model):
    url: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://\S+$")] = "redis://127.0.0.1:6379/0"
    password_env: EnvName | None = None
    cache_db: Annotated[int, Field(ge=0, le=15)] | None = None
    cache_patterns: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    rate_limit_patterns: tuple[Annotated[str, Field(min_length=1)], ...] = ("ratelimit:*",)
    timeout: PositiveDuration = timedelta(seconds=5)
    # Opt-ins for settings that would destroy the app's data, refused by default: patterns
    # that match most of the sampled keyspace, and FLUSHDB on the url's own database.
    allow_broad_patterns: bool = False
    allow_flush_app_db: bool = False


class PostgresConfig(_Model):
    dsn_env: EnvName = "DATABASE_URL"
    application_name: str | None = None
    database: str | None = None
    user: str | None = None
    idle_in_transaction: Duration = timedelta(minutes=1)
    terminate: Literal["stuck", "all"] = "stuck"
    timeout: PositiveDuration = timedelta(seconds=5)


class RollbackConfig(_Model):
    after: tuple[Argv, ...] = ()
    command_timeout: PositiveDuration = timedelta(minutes=5)
    verify_grace: Duration = timedelta(seconds=5)


class HeartbeatConfig(_Model):
    url_env: EnvName | None = None
    timeout: PositiveDuration = timedelta(seconds=5)


class DispatchRule(_Model):
    """When the verdict shows any of `when`, run `run`."""

    when: Annotated[tuple[str, ...], Field(min_length=1)]
    run: Name


DEFAULT_RULES = (
    # the app not answering, answering 5xx, its process gone, bloated or spinning: a restart
    # (cheap) comes before any rollback (see healer/ladder.py for when a rollback may follow)
    DispatchRule(
        when=(
            "http.down",
            "http.timeout",
            "http.5xx",
            "process.down",
            "process.memory",
            "process.cpu",
            "system.memory",
        ),
        run="process-restart",
    ),
    DispatchRule(when=("redis.latency", "redis.memory"), run="redis-flush"),
    DispatchRule(when=("postgres.latency", "postgres.connections"), run="connection-reset"),
    DispatchRule(when=("http.rate_limited",), run="rate-limit-clear"),
)


class PlaybooksConfig(_Model):
    dir: RelPath | None = None
    rules: tuple[DispatchRule, ...] = DEFAULT_RULES
    max_per_cycle: Annotated[int, Field(ge=1)] = 2


class ServerConfig(_Model):
    listen: Annotated[str, Field(pattern=r"^[\w.\-\[\]:]+:\d{1,5}$")] | None = None


SeverityName = Literal["info", "warning", "critical"]


class SlackConfig(_Model):
    webhook_url_env: EnvName | None = None
    token_env: EnvName | None = None  # a bot token, posting to `channel`
    channel: str | None = None
    api_url: str | None = None  # Web API base URL; default the public one
    min_severity: SeverityName = "info"

    @model_validator(mode="after")
    def _one_way(self) -> SlackConfig:
        if not (self.webhook_url_env or self.token_env):
            raise PydanticCustomError("slack", "webhook_url_env: expected webhook_url_env or token_env (+ channel)", {})
        if self.token_env and not self.channel and not self.webhook_url_env:
            raise PydanticCustomError("slack", "channel: expected the channel to post to with token_env", {})
        return self


class TelegramConfig(_Model):
    token_env: EnvName = "TELEGRAM_BOT_TOKEN"
    chat_id_env: EnvName = "TELEGRAM_CHAT_ID"  # one id, or several separated by commas
    api_url: str | None = None
    min_severity: SeverityName = "info"


class LogChannelConfig(_Model):
    min_severity: SeverityName = "info"


class AlertsConfig(_Model):
    slack: SlackConfig | None = None
    telegram: TelegramConfig | None = None
    log: LogChannelConfig = LogChannelConfig()
    repeat_every: PositiveDuration = timedelta(minutes=30)
    timeout: PositiveDuration = timedelta(seconds=10)


class ReportConfig(_Model):
    sla_target: Percent = 99.9  # percent of the observed time with no open incident


class Config(_Model):
    """The whole of healer.toml."""

    # validate_default: the default, too, is relative to the config file, not to the cwd
    state_dir: RelPath = Field(default=Path(".healer"), validate_default=True)
    retention: PositiveDuration = timedelta(days=90)
    app: AppConfig = AppConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    escalation: EscalationConfig = EscalationConfig()
    checks: Annotated[tuple[CheckConfig, ...], Field(min_length=1)]
    process: ProcessConfig | None = None
    redis: RedisConfig | None = None
    postgres: PostgresConfig | None = None
    rollback: RollbackConfig = RollbackConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    playbooks: PlaybooksConfig = PlaybooksConfig()
    server: ServerConfig = ServerConfig()
    report: ReportConfig = ReportConfig()
    alerts: AlertsConfig = AlertsConfig()

    # where the file was read from (set by load_config, not by the user)
    path: Path = Field(default=Path(DEFAULT_CONFIG_NAME), exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        seen: set[str] = set()
        for i, c in enumerate(self.checks):
            if c.name in seen:
                raise PydanticCustomError(
                    "checks", "checks[{i}].name: expected a unique name, got {n} twice", {"i": i, "n": _show(c.name)}
                )
            seen.add(c.name)
            has_default = self.process is not None and bool(self.process.match or self.process.pidfile)
            if isinstance(c, ProcessCheck) and not (c.match or c.pidfile or c.process_name or has_default):
                raise PydanticCustomError(
                    "checks",
                    "checks[{i}]: expected match, pidfile or process_name (or [process] match) for a process check",
                    {"i": i},
                )
            if isinstance(c, RedisCheck) and not (c.url or self.redis):
                raise PydanticCustomError("checks", "checks[{i}].url: expected url, or a [redis] section", {"i": i})
            if isinstance(c, PostgresCheck) and not (c.dsn_env or self.postgres):
                raise PydanticCustomError(
                    "checks", "checks[{i}].dsn_env: expected dsn_env, or a [postgres] section", {"i": i}
                )
        return self

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "healer.lock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "healer.db"

    def severity(self, name: str) -> Severity:
        return Severity[name.upper()]


# ---- secrets ---------------------------------------------------------------------------------


class Secret:
    """A value read from the environment whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(env_name: str | None) -> Secret | None:
    """The secret held by the environment variable `env_name`, or None when unset or empty."""
    if not env_name:
        return None
    value = os.environ.get(env_name, "").strip()
    return Secret(value) if value else None


# ---- loading ---------------------------------------------------------------------------------


def config_path(explicit: str | Path | None) -> Path:
    """--config, else $HEALER_CONFIG, else ./healer.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)


def load_config(path: str | Path) -> Config:
    """Read and validate healer.toml; raises ConfigError listing every problem. Creates nothing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            path, [f"file not found ({path.resolve()}); pass --config PATH or set {CONFIG_ENV}"]
        ) from None
    except OSError as e:
        raise ConfigError(path, [f"cannot read: {e.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, ["expected a UTF-8 text file"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [f"not valid TOML: {e}"]) from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path) -> Config:
    """Validate already-parsed TOML data that came from `path`."""
    if "path" in data:
        raise ConfigError(path, ["path: unknown key (check the spelling)"])
    base = path.resolve().parent
    try:
        return Config.model_validate({**data, "path": path}, context={"base": base})
    except ValidationError as err:
        errors = err.errors(include_url=False)

        # a list whose items failed also reports "too short": the item errors say it better
        def has_item_errors(loc: tuple[Any, ...]) -> bool:
            return any(len(o["loc"]) > len(loc) and tuple(o["loc"][: len(loc)]) == loc for o in errors)

        errors = [e for e in errors if not (e["type"] == "too_short" and has_item_errors(tuple(e["loc"])))]
        raise ConfigError(path, [describe_error(e) for e in errors]) from None


def _loc(loc: Sequence[int | str], tagged: str, tags: Sequence[str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in tags and out.startswith(f"{tagged}["):
            continue  # the discriminator tag pydantic inserts: not a key the user wrote
        elif part.startswith(("function-", "tagged-union", "list[", "tuple[", "union[", "nullable[")) or part in (
            "int",
            "str",
            "float",
            "bool",
            "none",
        ):
            continue
        else:
            out += ("." if out else "") + part
    return out


_EXPECTED = {
    "missing": "missing required key",
    "extra_forbidden": "unknown key (check the spelling)",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "int_from_float": "expected a whole number",
}
_OWN_KINDS = ("duration", "size", "argv", "pattern", "process", "slack", "phases", "checks")


def describe_error(
    e: Any,
    *,
    tagged: str = "checks",
    tags: Sequence[str] = CHECK_TYPES,
    tag_key: str = "type",
    hints: Mapping[str, str] | None = None,
) -> str:
    """One line for one pydantic error: the key path as the user wrote it and what was expected.

    `tagged` names the list whose items carry a discriminator `tag_key` (one of `tags`); `hints`
    say what a key with a pattern expects. Shared by healer.toml and the playbook files.
    """
    kind = e["type"]
    loc = _loc(tuple(e["loc"]), tagged, tags)
    got = e.get("input")
    if kind in _OWN_KINDS:
        msg = e["msg"]
        head, sep, _ = msg.partition(": ")
        names_a_key = sep and re.fullmatch(r"[\w\[\].]+", head) and head != "expected"
        if names_a_key:  # "name: expected ..." from a section's own validator extends the path
            return f"{loc}.{msg}" if loc else msg
        return f"{loc}: {msg}" if loc else msg
    if kind == "union_tag_invalid":
        return f"{loc}.{tag_key}: expected one of {', '.join(tags)}, got {_show(e['ctx']['tag'])}"
    if kind == "union_tag_not_found":
        return f"{loc}.{tag_key}: missing required key (one of {', '.join(tags)})"
    if kind == "literal_error":
        return f"{loc}: expected {e['ctx']['expected']}, got {_show(got)}"
    if kind == "string_pattern_mismatch":
        return f"{loc}: {_pattern_hint(loc, hints or {})}, got {_show(got)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(e["ctx"].values()))
        word = {
            "greater_than": "above",
            "greater_than_equal": "at least",
            "less_than": "below",
            "less_than_equal": "at most",
        }[kind]
        return f"{loc}: expected a number {word} {bound}, got {_show(got)}"
    if kind in ("too_short", "string_too_short"):
        return f"{loc}: expected at least one entry" if kind == "too_short" else f"{loc}: expected a non-empty string"
    if kind == "missing" and loc == tagged:
        return f"{tagged}: expected at least one entry"
    if kind in _EXPECTED:
        text = _EXPECTED[kind]
        if kind in ("missing", "extra_forbidden"):
            return f"{loc}: {text}"
        return f"{loc}: {text}, got {_show(got)}"
    return f"{loc}: {e['msg']}"


def _pattern_hint(loc: str, hints: Mapping[str, str]) -> str:
    last = loc.rsplit(".", 1)[-1]
    known = {
        "url": 'expected a URL like "http://127.0.0.1:8000/health" (or redis://...)',
        "name": "expected a name of letters, digits, '.', '_' or '-'",
        "listen": 'expected HOST:PORT like "127.0.0.1:8001"',
        "address": 'expected HOST:PORT like "127.0.0.1:6379"',
        **hints,
    }
    if last in known:
        return known[last]
    return (
        "expected an environment variable name like SLACK_WEBHOOK_URL" if last.endswith("_env") else "unexpected format"
    )
