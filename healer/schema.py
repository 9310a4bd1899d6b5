"""The building blocks of every model read from healer.toml or a playbook file (pure).

Durations, sizes, paths, argv lists, names, the frozen base model, the base of every check,
and secrets. config.py, playbook.py and each check and action module build on these; they
sit below all of them so that a check or an action can define its own model in its own module
(healer/checks/registry.py, healer/actions/registry.py) without importing config.py, which
imports the registries: no import circle.

The formatters sit beside their parsers, one per meaning: format_duration (a configured
duration, exact), format_elapsed (a measured or elapsed time, rounded), format_size (bytes).
"""

from __future__ import annotations

import operator
import os
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo
from pydantic_core import PydanticCustomError

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
                    "duration", "expected a duration of at most 10 years, got {got}", {"got": show(value)}
                )
            return timedelta(seconds=seconds)
    raise PydanticCustomError(
        "duration", 'expected a duration like "5s", "15m" or "6h", got {got}', {"got": show(value)}
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
    raise PydanticCustomError("size", 'expected a size like "512MB" or "2GiB", got {got}', {"got": show(value)})


def format_size(n: float) -> str:
    """Bytes for people: "800 B", "1.5 KB", "12.3 MB", "2.0 GB" (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def show(value: object) -> str:
    """A value as an error message quotes it: strings in double quotes, the rest as repr."""
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
            {"got": show(v)},
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
RoleName = Literal["app", "dependency"]


class Model(BaseModel):
    """Frozen, and every unknown key is an error: a typo never silently disables anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckBase(Model):
    """What every check has. A check type's module subclasses it with `type: Literal["<type>"]`
    and its own keys (healer/checks/registry.py lists them)."""

    name: Name
    timeout: PositiveDuration = timedelta(seconds=5)
    # "dependency": its failure explains the app's (no rollback, no restart loop); unset, the
    # type's `default_role` applies (healer/ladder.py)
    role: RoleName | None = None

    # Whom a failure of this type implicates when `role` is unset: the app itself, or something
    # it depends on (a server it talks to, the host), which neither a restart nor a rollback cures.
    default_role: ClassVar[RoleName] = "app"
    # What a key with a pattern expects, for the one-line error: {"address": 'expected HOST:PORT ...'}
    hints: ClassVar[Mapping[str, str]] = {}
    # Its probe sends HTTP through `ctx.client_for(name)`: probe_context pools a client for it.
    uses_http: ClassVar[bool] = False
    # Its probe asks the app itself (a request, its process): passing says the release running
    # now answers, which ends the deploy grace (healer/ladder.py: answered). False for a check
    # that reads what another system recorded (a Prometheus query's window still holds the
    # release before's requests for a while after a deploy).
    probes_app: ClassVar[bool] = True

    if TYPE_CHECKING:  # each subclass declares it as a Literal, the tag pydantic dispatches on
        type: str


class StepBase(Model):
    """What every playbook step has. An action's module subclasses it with
    `action: Literal["<name>"]`, `timeout: PositiveDuration = <its default>` and its own keys
    (healer/actions/registry.py)."""

    # What a key with a pattern expects, for the one-line error: {"signal": 'expected a signal ...'}
    hints: ClassVar[Mapping[str, str]] = {}

    if TYPE_CHECKING:  # each subclass declares them: the tag pydantic dispatches on, and its bound
        action: str
        timeout: timedelta


def tagged_union(models: Iterable[type[Model]], tag: str) -> object:
    """The type of a table that is one of `models` (a registry's), chosen by its key `tag`:
    pydantic reports an unknown or missing tag as such, not as a failure of every model."""
    return Annotated[reduce(operator.or_, models), Field(discriminator=tag)]


def hints_of(models: Iterable[type[CheckBase] | type[StepBase]]) -> dict[str, str]:
    """What each key with a pattern expects, as the models of a registry say it."""
    return {key: hint for model in models for key, hint in model.hints.items()}


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
