"""Playbooks: what a repair does, how often it may run and what must pass after it (pure).

A playbook is a TOML file:

    name = "redis-flush"
    description = "Clear the app's cache without blocking Redis"
    cooldown = "30m"            # at least this long between two runs
    max_per_window = 3          # at most this many runs per launch window
    verify = ["redis", "http"]  # check types or check names that must pass afterwards (default: all)
    verify_within = "30s"       # keep re-checking this long before calling it not fixed

    [[steps]]
    action = "redis.flush_cache"
    timeout = "60s"

`parse_playbook` turns the parsed TOML into frozen objects and reports every problem, one
line each, naming the file, the key path and what was expected, like healer.toml's errors.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError

from healer.actions.registry import ACTIONS
from healer.config import CHECK_TYPES, CheckConfig, Config, describe_error, format_duration
from healer.errors import ConfigError
from healer.schema import Duration, Model, Name, PositiveDuration, StepBase, hints_of, tagged_union

DEFAULT_COOLDOWN = timedelta(minutes=10)
DEFAULT_MAX_PER_WINDOW = 3
DEFAULT_VERIFY_WITHIN = timedelta(seconds=30)

# Each action's step model lives in its own module, listed by healer/actions/registry.py; a
# `[[steps]]` table is validated against their union, dispatched on `action`.
if TYPE_CHECKING:
    Step = StepBase
else:
    Step = tagged_union((k.model for k in ACTIONS.values()), "action")
_STEP_HINTS = hints_of(k.model for k in ACTIONS.values())


class Playbook(Model):
    """One playbook: its steps, its rate limits and the checks that say it worked."""

    name: Name
    description: Annotated[str, Field(min_length=1)]
    steps: Annotated[tuple[Step, ...], Field(min_length=1)]
    cooldown: PositiveDuration = DEFAULT_COOLDOWN
    # a growing delay instead of the flat cooldown: the nth run waits backoff[n] after the one
    # before (the last step repeats), like systemd's and supervisor's restart delays
    backoff: tuple[Duration, ...] = ()
    max_per_window: Annotated[int, Field(ge=1, le=1000)] = DEFAULT_MAX_PER_WINDOW
    verify: tuple[Annotated[str, Field(min_length=1)], ...] = ()  # check types or names; empty: all checks
    verify_within: PositiveDuration = DEFAULT_VERIFY_WITHIN

    # where it was read from (set by the loader, not by the user)
    source: str = Field(default="", exclude=True)
    shipped: bool = Field(default=False, exclude=True)


# ---- parsing ---------------------------------------------------------------------------------


def parse_playbook_text(text: str, source: Path | str, *, shipped: bool = False) -> Playbook:
    """Parse a playbook file's text; the name defaults to the file's stem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    return parse_playbook(data, source, shipped=shipped)


def parse_playbook(data: Mapping[str, Any], source: Path | str, *, shipped: bool = False) -> Playbook:
    """Validate parsed TOML from `source`; raises ConfigError with one line per problem."""
    bad = [k for k in ("source", "shipped") if k in data]
    if bad:
        raise ConfigError(source, [f"{k}: unknown key (check the spelling)" for k in bad])
    path = Path(source)
    values = {"name": path.stem, **data, "source": str(source), "shipped": shipped}
    try:
        return Playbook.model_validate(values, context={"base": path.resolve().parent})
    except ValidationError as err:
        errors = err.errors(include_url=False)
        failed_under = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
        errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in failed_under)]
        raise ConfigError(source, [_describe(e) for e in errors]) from None


def merge(shipped: Sequence[Playbook], user: Sequence[Playbook]) -> dict[str, Playbook]:
    """Shipped playbooks, extended or overridden by name by the user's; two user files
    claiming one name is an error naming both."""
    out = {p.name: p for p in shipped}
    seen: dict[str, str] = {}
    for p in user:
        if p.name in seen:
            msg = f"name: expected a unique playbook name, got {p.name!r} here and in {seen[p.name]}"
            raise ConfigError(p.source, [msg])
        seen[p.name] = p.source
        out[p.name] = p
    return dict(sorted(out.items()))


def check_references(playbooks: Mapping[str, Playbook], config: Config) -> None:
    """Every `verify` entry names a check type or a configured check, and every dispatch
    rule in healer.toml names a known playbook."""
    names = {c.name for c in config.checks}
    for p in playbooks.values():
        problems = [
            f"verify[{i}]: expected a check name ({', '.join(sorted(names))}) "
            f"or type ({', '.join(CHECK_TYPES)}), got {v!r}"
            for i, v in enumerate(p.verify)
            if v not in names and v not in CHECK_TYPES
        ]
        if problems:
            raise ConfigError(p.source, problems)
    problems = [
        f"playbooks.rules[{i}].run: expected a known playbook ({', '.join(playbooks)}), got {r.run!r}"
        for i, r in enumerate(config.playbooks.rules)
        if r.run not in playbooks
    ]
    if problems:
        raise ConfigError(config.path, problems)


def targets(playbook: Playbook, checks: Sequence[CheckConfig]) -> tuple[CheckConfig, ...]:
    """The checks that verify `playbook`: those named in `verify` by type or name, in config
    order; all checks when `verify` is empty or names none that is configured."""
    wanted = set(playbook.verify)
    chosen = tuple(c for c in checks if c.name in wanted or c.type in wanted)
    return chosen or tuple(checks)


# ---- error messages --------------------------------------------------------------------------


def _describe(e: Any) -> str:
    return describe_error(e, tagged="steps", tags=tuple(ACTIONS), tag_key="action", hints=_STEP_HINTS)


def summary(playbook: Playbook) -> str:
    """One line: the playbook's limits, for people."""
    spacing = (
        f"backoff {', '.join(format_duration(b) for b in playbook.backoff)}"
        if playbook.backoff
        else f"cooldown {format_duration(playbook.cooldown)}"
    )
    return (
        f"{spacing}, at most {playbook.max_per_window} per window, "
        f"verified within {format_duration(playbook.verify_within)}"
    )
