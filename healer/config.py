"""healer.toml -> frozen, validated config objects (pure, apart from reading the file).

Every problem is reported, one line each, naming the file, the key path and what was
expected: `healer.toml: checks[2].timeout: expected a duration like "5s", got "5 sec"`.
Unknown keys are errors, so a typo never silently disables a check.

The building blocks (durations, sizes, paths, the frozen base model) are in healer/schema.py;
each check type's model is in its own module, listed by healer/checks/registry.py.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from healer.checks.registry import CHECKS
from healer.errors import ConfigError
from healer.model import Severity
from healer.schema import (
    Argv,
    CheckBase,
    Duration,
    EnvName,
    Model,
    Name,
    Percent,
    PositiveDuration,
    RelPath,
    hints_of,
    show,
    tagged_union,
)

# re-exported: the rest of healer reads them from here
from healer.schema import Secret as Secret
from healer.schema import format_duration as format_duration
from healer.schema import format_elapsed as format_elapsed
from healer.schema import format_size as format_size
from healer.schema import parse_duration as parse_duration
from healer.schema import read_secret as read_secret

DEFAULT_CONFIG_NAME = "healer.toml"
CONFIG_ENV = "HEALER_CONFIG"


# ---- checks ----------------------------------------------------------------------------------

# Each check type's model lives in its own module, listed by healer/checks/registry.py; this
# union of them is what a `[[checks]]` table is validated against, dispatched on `type`.
CHECK_TYPES = tuple(CHECKS)
if TYPE_CHECKING:
    CheckConfig = CheckBase
else:
    CheckConfig = tagged_union((k.model for k in CHECKS.values()), "type")
_CHECK_HINTS = hints_of(k.model for k in CHECKS.values())


# ---- sections --------------------------------------------------------------------------------


class AppConfig(Model):
    name: Name = "app"
    repo: RelPath | None = None
    stable_tags: str = "stable-*"
    tag_stable_after: PositiveDuration = timedelta(hours=6)


class Phase(Model):
    until: PositiveDuration
    every: PositiveDuration


DEFAULT_PHASES = (
    Phase(until=timedelta(hours=6), every=timedelta(minutes=15)),
    Phase(until=timedelta(hours=24), every=timedelta(minutes=30)),
    Phase(until=timedelta(hours=72), every=timedelta(hours=4)),
)


class ScheduleConfig(Model):
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


class EmergencyConfig(Model):
    """Triggers that roll back before `rollback_after`, each confirmed by `confirm_cycles`."""

    all_endpoints_down: bool = True
    max_avg_latency: PositiveDuration | None = timedelta(seconds=10)
    memory_critical_percent: Percent | None = 95.0
    # an http check this many times slower than the release before (its rank test failed, and
    # every request of the cycle was slower than the reference's slowest): strong evidence of a
    # bad release, rolled back after confirm_cycles instead of rollback_after (0: off)
    regression_factor: Annotated[float, Field(ge=0)] = 3.0
    confirm_cycles: Annotated[int, Field(ge=2)] = 2


class DriftConfig(Model):
    """A slow drift of latency over the launch window (healer/drift.py): alerted once, never acted on."""

    # the EWMA of a check's passing latencies over this x the deploy's baseline ... (0: off)
    factor: Annotated[float, Field(ge=0)] = 1.5
    min_increase: Duration = timedelta(milliseconds=50)  # ... and this much more ...
    min_cycles: Annotated[int, Field(ge=1, le=1000)] = 10  # ... once this many cycles are in


class EscalationConfig(Model):
    rollback_after: Annotated[int, Field(ge=1, le=100)] = 5
    recover_after: Annotated[int, Field(ge=1, le=100)] = 2
    repair_grace: Duration = timedelta(seconds=30)
    # after HEAD moves, while the app does not answer at all: the deploy may still be stopping,
    # migrating and starting it; healer records but repairs and rolls back nothing
    deploy_grace: Duration = timedelta(seconds=60)
    mode: Literal["act", "observe"] = "act"
    emergency: EmergencyConfig = EmergencyConfig()
    drift: DriftConfig = DriftConfig()


class ProcessConfig(Model):
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


class RedisConfig(Model):
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


class PostgresConfig(Model):
    dsn_env: EnvName = "DATABASE_URL"
    application_name: str | None = None
    database: str | None = None
    user: str | None = None
    idle_in_transaction: Duration = timedelta(minutes=1)
    terminate: Literal["stuck", "all"] = "stuck"
    timeout: PositiveDuration = timedelta(seconds=5)


class RollbackConfig(Model):
    after: tuple[Argv, ...] = ()
    command_timeout: PositiveDuration = timedelta(minutes=5)
    verify_grace: Duration = timedelta(seconds=5)


class HeartbeatConfig(Model):
    url_env: EnvName | None = None
    timeout: PositiveDuration = timedelta(seconds=5)


class DispatchRule(Model):
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


class PlaybooksConfig(Model):
    dir: RelPath | None = None
    rules: tuple[DispatchRule, ...] = DEFAULT_RULES
    max_per_cycle: Annotated[int, Field(ge=1)] = 2


class ServerConfig(Model):
    listen: Annotated[str, Field(pattern=r"^[\w.\-\[\]:]+:\d{1,5}$")] | None = None


MIN_LEASE = timedelta(seconds=2)


class FleetConfig(Model):
    """`[fleet]`: several healers, one per host, share the state in PostgreSQL and one of them
    leads each app (healer/lease.py). Absent: one host, as without PostgreSQL."""

    host: Name | None = None  # this healer's host in the fleet; None: the machine's hostname
    app: Name | None = None  # whose leadership; None: [app] name
    # a leader that stops renewing (dead, stopped, cut off) is replaced after this long
    lease: PositiveDuration = timedelta(seconds=15)

    @model_validator(mode="after")
    def _long_enough(self) -> FleetConfig:
        if self.lease < MIN_LEASE:
            raise PydanticCustomError(
                "fleet",
                "lease: expected at least {min} (renewed every third of it), got {got}",
                {"min": format_duration(MIN_LEASE), "got": format_duration(self.lease)},
            )
        return self


SeverityName = Literal["info", "warning", "critical"]


# ---- alert channels --------------------------------------------------------------------------

# The alert channels, one line each: kind -> its module in healer/alerts/. The module holds the
# model of its `[alerts.<kind>]` table (`Section`), its rendering, its sender and `channels()`,
# which builds them (alerts/shell.py: configured_channels). Looked up by name, as the checks'
# probes are: config.py imports no channel, and no channel's import reaches back here. The log
# channel is always there, with or without its table. A module is imported when healer.toml is
# validated; its chat SDK only when it sends.
CHANNELS: Mapping[str, str] = {"log": "console", "slack": "slack", "telegram": "telegram"}


class ChannelSection(Model):
    """What every `[alerts.<kind>]` table holds; a channel's own `Section` adds the rest."""

    min_severity: SeverityName = "info"

    @property
    def severity(self) -> Severity:
        return Severity[self.min_severity.upper()]


def channel_module(kind: str) -> ModuleType:
    """The module of a channel kind: its `Section` model and its `channels(section, timeout=..., buttons=...)`."""
    return importlib.import_module(f"healer.alerts.{CHANNELS[kind]}")


def channel_section(kind: str) -> type[ChannelSection]:
    """The model of `[alerts.<kind>]`, from the channel's module."""
    section: type[ChannelSection] = channel_module(kind).Section
    return section


def _channel(value: tuple[str, object], info: ValidationInfo) -> ChannelSection:
    """One `[alerts.<kind>]` table, validated by its channel's model (AlertsConfig._tables
    paired it with its kind)."""
    kind, table = value
    if kind not in CHANNELS:
        raise PydanticCustomError(
            "channel", "unknown key (check the spelling; channels: {known})", {"known": ", ".join(CHANNELS)}
        )
    if not isinstance(table, Mapping):
        raise PydanticCustomError("channel", "expected a table, got {got}", {"got": show(table)})
    return channel_section(kind).model_validate(table, context=info.context)


class AlertsConfig(Model):
    """`[alerts]`: how often an incident is said again, how long a send may take, and one
    `[alerts.<kind>]` table per channel (CHANNELS)."""

    repeat_every: PositiveDuration = timedelta(minutes=30)
    timeout: PositiveDuration = timedelta(seconds=10)
    # kind -> its table, validated: log first, then the channels healer.toml names, in its order;
    # dumped as healer.toml writes them (_as_written)
    channels: Mapping[str, Annotated[ChannelSection, PlainValidator(_channel)]] = Field(
        default_factory=dict, exclude=True
    )

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, data: object) -> object:
        """healer.toml writes a channel as `[alerts.<kind>]`, beside the keys of [alerts]:
        gather those tables under `channels`, each paired with its kind."""
        if not isinstance(data, Mapping):
            return data
        own = {k: v for k, v in data.items() if k in ("repeat_every", "timeout")}
        tables = {"log": {}, **{k: v for k, v in data.items() if k not in own}}
        return {**own, "channels": {k: (k, v) for k, v in tables.items()}}

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        """Dumped as healer.toml writes it, so that a dump validates again: one table per channel."""
        tables = {k: s.model_dump(mode=info.mode) for k, s in self.channels.items()}
        own: dict[str, Any] = handler(self)
        return {**own, **tables}


_CHAT_USER = re.compile(r"^(telegram:-?\d+|slack:[A-Z0-9]+)$")
_CHAT_PLACE = re.compile(r"^(telegram:-?\d+|slack:[A-Za-z0-9_\-]+)$")


def _chat_user(v: str) -> str:
    if not _CHAT_USER.match(v):
        msg = 'expected a user as "telegram:<numeric id>" or "slack:<member id like U024BE7LH>", got {got}'
        raise PydanticCustomError("chat_user", msg, {"got": show(v)})
    return v


def _chat_place(v: str) -> str:
    if not _CHAT_PLACE.match(v):
        msg = 'expected a chat as "telegram:<chat id>" or "slack:<channel id like C0123>", got {got}'
        raise PydanticCustomError("chat_place", msg, {"got": show(v)})
    return v


ChatUser = Annotated[str, AfterValidator(_chat_user)]
ChatPlace = Annotated[str, AfterValidator(_chat_place)]


class ChatopsConfig(Model):
    """Who may do what from chat, deny by default: user ids as "telegram:123456" or "slack:U024BE7LH"."""

    read: tuple[ChatUser, ...] = ()  # /status, /history
    operate: tuple[ChatUser, ...] = ()  # /ack, /pause, /resume (and read)
    act: tuple[ChatUser, ...] = ()  # /repair, /rollback, confirmed (and operate, read)
    chats: tuple[ChatPlace, ...] | None = None  # listened to; None: where the alerts go
    ack_expires: PositiveDuration = timedelta(hours=4)


class ReportConfig(Model):
    sla_target: Percent = 99.9  # percent of the observed time with no open incident


class StateConfig(Model):
    """Where healer keeps its state: the SQLite file under state_dir unless dsn_env names the
    environment variable holding a PostgreSQL DSN (several hosts sharing one state)."""

    dsn_env: EnvName | None = None


@dataclass(frozen=True, slots=True)
class StateDb:
    """Where healer's state lives, as healer/db.py opens it: the SQLite file `path`, or, when
    `dsn_env` is set, the PostgreSQL database whose DSN that variable holds (the DSN itself is
    read when the database is opened, and never shown)."""

    path: Path
    dsn_env: str | None = None
    config: Path = Path(DEFAULT_CONFIG_NAME)  # the healer.toml that said so, for messages
    # PostgreSQL: the schema this host's own tables live in, first on the search path (then
    # public, where the fleet's shared tables are); None: public
    schema: str | None = None

    def exists(self) -> bool:
        """Is there state to read? A SQLite file may not be there yet (and a read must not create
        it); a PostgreSQL database is, and the store creates its tables on the first open."""
        return self.dsn_env is not None or self.path.exists()

    def __str__(self) -> str:
        return str(self.path) if self.dsn_env is None else f"the PostgreSQL database of ${self.dsn_env}"


class Config(Model):
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
    state: StateConfig = StateConfig()
    # a factory: a default built now would import the channel modules while this one loads
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    chatops: ChatopsConfig = ChatopsConfig()
    fleet: FleetConfig | None = None

    # where the file was read from (set by load_config, not by the user)
    path: Path = Field(default=Path(DEFAULT_CONFIG_NAME), exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.fleet is not None and self.state.dsn_env is None:
            raise PydanticCustomError(
                "fleet", "fleet: expected [state] dsn_env too (the fleet shares its state in PostgreSQL)", {}
            )
        seen: set[str] = set()
        for i, c in enumerate(self.checks):
            if c.name in seen:
                raise PydanticCustomError(
                    "checks", "checks[{i}].name: expected a unique name, got {n} twice", {"i": i, "n": show(c.name)}
                )
            seen.add(c.name)
            needs = CHECKS[c.type].needs
            lack = needs(c, self) if needs is not None else None
            if lack is not None:
                key, expected = lack
                raise PydanticCustomError(
                    "checks",
                    "checks[{i}]{key}: {expected}",
                    {"i": i, "key": f".{key}" if key else "", "expected": expected},
                )
        return self

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "healer.lock"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "healer.db"

    @property
    def fleet_host(self) -> str:
        """This host's name in the fleet: [fleet] host, else the hostname."""
        return (self.fleet.host if self.fleet is not None else None) or socket.gethostname()

    @property
    def fleet_app(self) -> str:
        """The app's name in the fleet's tables: [fleet] app, else [app] name."""
        return (self.fleet.app if self.fleet is not None else None) or self.app.name

    @property
    def alert_source(self) -> str:
        """Whose alerts this healer's are, in the outbox (alerts.pipeline.CycleContext.source):
        in a fleet, this host's; otherwise the one healer's ("")."""
        return self.fleet_host if self.fleet is not None else ""

    @property
    def alert_app(self) -> str:
        """What this healer's alerts call the app: in a fleet, the app on this host."""
        return f"{self.app.name} on {self.fleet_host}" if self.fleet is not None else self.app.name

    @property
    def state_db(self) -> StateDb:
        """Where the store keeps its tables ([state] dsn_env, else db_path). In a fleet each host
        has its own (PostgreSQL schema healer_<host>): its deploys, cycles, incidents and actions
        are its own app's, whatever release the other hosts run."""
        schema = f"healer_{self.fleet_host}" if self.fleet is not None and self.state.dsn_env else None
        return StateDb(self.db_path, self.state.dsn_env, self.path, schema)

    @property
    def shared_db(self) -> StateDb:
        """Where the tables every host of a fleet shares live: the alert outbox (each alert is
        claimed once, whichever healer sends it) and the fleet's. Without [fleet], state_db."""
        return StateDb(self.db_path, self.state.dsn_env, self.path)


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
    config = parse_config(data, path)
    env = config.state.dsn_env
    if env is not None and read_secret(env) is None:  # before anything opens, locks or creates state
        raise ConfigError(path, [f"state.dsn_env: environment variable {env} is not set (it holds the PostgreSQL DSN)"])
    return config


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
        elif part == "channels" and out == "alerts":
            continue  # where AlertsConfig gathers the [alerts.<kind>] tables: not a key either
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
_OWN_KINDS = ("duration", "size", "argv", "pattern", "process", "phases", "checks", "channel", "fleet")


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
        return f"{loc}.{tag_key}: expected one of {', '.join(tags)}, got {show(e['ctx']['tag'])}"
    if kind == "union_tag_not_found":
        return f"{loc}.{tag_key}: missing required key (one of {', '.join(tags)})"
    if kind == "literal_error":
        return f"{loc}: expected {e['ctx']['expected']}, got {show(got)}"
    if kind == "string_pattern_mismatch":
        return f"{loc}: {_pattern_hint(loc, hints or {})}, got {show(got)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(e["ctx"].values()))
        word = {
            "greater_than": "above",
            "greater_than_equal": "at least",
            "less_than": "below",
            "less_than_equal": "at most",
        }[kind]
        return f"{loc}: expected a number {word} {bound}, got {show(got)}"
    if kind in ("too_short", "string_too_short"):
        return f"{loc}: expected at least one entry" if kind == "too_short" else f"{loc}: expected a non-empty string"
    if kind == "missing" and loc == tagged:
        return f"{tagged}: expected at least one entry"
    if kind in _EXPECTED:
        text = _EXPECTED[kind]
        if kind in ("missing", "extra_forbidden"):
            return f"{loc}: {text}"
        return f"{loc}: {text}, got {show(got)}"
    return f"{loc}: {e['msg']}"


def _pattern_hint(loc: str, hints: Mapping[str, str]) -> str:
    last = loc.rsplit(".", 1)[-1]
    known = {
        "url": 'expected a URL like "http://127.0.0.1:8000/health" (or redis://...)',
        "name": "expected a name of letters, digits, '.', '_' or '-'",
        "listen": 'expected HOST:PORT like "127.0.0.1:8001"',
        **_CHECK_HINTS,
        **hints,
    }
    if last in known:
        return known[last]
    return (
        "expected an environment variable name like SLACK_WEBHOOK_URL" if last.endswith("_env") else "unexpected format"
    )
