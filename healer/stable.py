"""When a deploy has earned a stable tag, and the tag healer puts on it (pure): healthy by the
judge's standard for long enough.

A stable tag is what a later rollback goes back to, so it must mark a release that was healthy
as healer judges health: incidents open and resolve, and a blip that resolved (the deploy
restarting the app, one slow request) does not make a release unfit. What counts is the whole
window watched, no incident open now, and the last cycles passing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from healer.config import Config, format_duration, format_elapsed
from healer.model import Deploy, DeployState, short


@dataclass(frozen=True, slots=True)
class Cycle:
    """One recorded cycle of the deploy, as the stable-tag rule reads it."""

    at: datetime
    ok: bool


@dataclass(frozen=True, slots=True)
class StableTag:
    """The annotated tag healer puts on a deploy that earned it, and the record of it."""

    name: str
    message: str  # the tag's message: why healer trusts this release
    reason: str  # the action row's reason


def may_qualify(deploy: Deploy, *, now: datetime, config: Config) -> bool:
    """Whether `deploy` may earn a stable tag at `now`, before its cycles are read (is_stable).

    1. healer.toml names an [app] repo, and a `stable_tags` glob with a `*` for healer's name.
    2. The deploy is NEW or HEALTHY: not tagged yet, not held for a person, not a known-bad
       commit (DeployState); and it has no incident open.
    3. It has been watched for `tag_stable_after`.
    """
    if config.app.repo is None or "*" not in config.app.stable_tags:
        return False
    if deploy.state not in (DeployState.NEW, DeployState.HEALTHY) or deploy.open_incident is not None:
        return False
    return now - deploy.first_seen >= config.app.tag_stable_after


def has_earned(deploy: Deploy, cycles: Sequence[Cycle], *, now: datetime, config: Config) -> bool:
    """Whether a deploy that may qualify (may_qualify) has earned its tag: is_stable over its
    recorded `cycles`, with healer.toml's `tag_stable_after` and `recover_after`."""
    return is_stable(
        cycles, first_seen=deploy.first_seen, has_open_incident=deploy.open_incident is not None, now=now,
        after=config.app.tag_stable_after, recover_after=config.escalation.recover_after,
    )  # fmt: skip


def new_tag(deploy: Deploy, cycles: Sequence[Cycle], *, now: datetime, config: Config) -> StableTag | None:
    """healer's tag for a deploy that earned it (has_earned): named by stable_tag_name (None
    when the glob yields no name), its message saying why — how long the release was watched,
    its cycles, and the bar they passed."""
    name = stable_tag_name(config.app.stable_tags, deploy.commit, now)
    if name is None:
        return None
    after, recover_after = config.app.tag_stable_after, config.escalation.recover_after
    failing = sum(not c.ok for c in cycles)
    counted = f"{len(cycles)} cycle" + ("" if len(cycles) == 1 else "s")
    message = (
        f"healer: {config.app.name} at {short(deploy.commit)} has been healthy for "
        f"{format_elapsed(now - deploy.first_seen)} since it was deployed at "
        f"{deploy.first_seen:%Y-%m-%d %H:%M} UTC ({counted}, {failing or 'none'} failing, "
        f"no incident open, the last {recover_after} passing; tag_stable_after = "
        f"{format_duration(after)}). A rollback target for healer."
    )
    return StableTag(name=name, message=message, reason=f"healthy for {format_duration(after)}")


def stable_tag_name(pattern: str, commit: str, when: datetime) -> str | None:
    """The name of healer's tag for `commit`: the glob's part before its first `*`, then
    `healer-<UTC yyyymmdd-HHMMSS>-<short sha>`, then the rest ("stable-*" ->
    "stable-healer-20260101-060000-abc1234"). None when the glob has no `*` or the name would
    not match it."""
    head, star, rest = pattern.partition("*")
    if not star:
        return None
    core = f"healer-{when.astimezone(UTC):%Y%m%d-%H%M%S}-{short(commit)}"
    name = head + core + rest.replace("*", "")
    return name if fnmatch.fnmatchcase(name, pattern) else None


def is_stable(
    cycles: Sequence[Cycle],
    *,
    first_seen: datetime,
    has_open_incident: bool,
    now: datetime,
    after: timedelta,
    recover_after: int,
) -> bool:
    """Whether a deploy first seen at `first_seen` may be tagged stable at `now`.

    1. It has been watched for `after` (`tag_stable_after`): `now` and its last recorded
       cycle are both at least `after` past `first_seen`.
    2. No incident is open now; incidents that opened and resolved in the window do not count.
    3. Its last `recover_after` cycles passed, the judge's own bar for a resolved incident, so
       a release is never tagged on a failing cycle or a single lucky one.
    """
    if has_open_incident or now - first_seen < after:
        return False
    if len(cycles) < recover_after or cycles[-1].at - first_seen < after:
        return False
    return all(c.ok for c in cycles[-recover_after:])
