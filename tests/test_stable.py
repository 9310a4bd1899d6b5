"""The stable-tag rules: healthy by the judge's standard for `tag_stable_after`, and the tag healer makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import Config, parse_config
from healer.model import Deploy
from healer.stable import Cycle, StableTag, has_earned, is_stable, may_qualify, new_tag, stable_tag_name

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
AFTER = 6 * H


def window(*marks: str) -> list[Cycle]:
    """One cycle an hour from T0: "+" passed, "-" failed."""
    return [Cycle(at=T0 + i * H, ok=m == "+") for i, m in enumerate(marks)]


@pytest.mark.parametrize(
    ("cycles", "incident", "now", "expected"),
    [
        pytest.param(window(*"+++++++"), False, T0 + 6 * H, True, id="every-cycle-passed"),
        pytest.param(window(*"+--++++"), False, T0 + 6 * H, True, id="a-resolved-blip-while-restarting"),
        pytest.param(window(*"+++++-+"), False, T0 + 6 * H, False, id="one-pass-since-the-last-failure"),
        pytest.param(window(*"++++++-"), False, T0 + 6 * H, False, id="failing-now"),
        pytest.param(window(*"+++++++"), True, T0 + 6 * H, False, id="an-incident-open"),
        pytest.param(window(*"++++++"), False, T0 + 6 * H, False, id="last-cycle-before-the-window-ends"),
        pytest.param(window(*"+++++++"), False, T0 + 5 * H, False, id="not-watched-long-enough"),
        pytest.param(window(), False, T0 + 7 * H, False, id="never-watched"),
        pytest.param([Cycle(at=T0 + 6 * H, ok=True)], False, T0 + 6 * H, False, id="a-single-lucky-cycle"),
    ],
)  # fmt: skip
def test_is_stable_needs_the_window_healthy_not_every_cycle(
    cycles: list[Cycle], incident: bool, now: datetime, expected: bool
) -> None:
    """Watched for tag_stable_after, no open incident, the last recover_after cycles passing."""
    seen = is_stable(cycles, first_seen=T0, has_open_incident=incident, now=now, after=AFTER, recover_after=2)
    assert seen is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("stable-*", "stable-healer-20260101-180000-abcdef1", id="prefix"),
        pytest.param("release/*-ok", "release/healer-20260101-180000-abcdef1-ok", id="suffix"),
        pytest.param("stable", None, id="no-star"),
        pytest.param("v[0-9]*", None, id="cannot-match"),
    ],
)
def test_stable_tag_name_follows_the_glob(pattern: str, expected: str | None) -> None:
    """The glob's part before `*`, then healer-<UTC time>-<short sha>."""
    assert stable_tag_name(pattern, "abcdef1234" + "0" * 30, T0 + AFTER) == expected


COMMIT = "abcdef1234" + "0" * 30


def config(*, repo: str | None = "/srv/shop", pattern: str = "stable-*") -> Config:
    app: dict[str, Any] = {"name": "shop", "stable_tags": pattern, "tag_stable_after": "6h"}
    if repo is not None:
        app["repo"] = repo
    checks = [{"name": "ok", "type": "command", "argv": ["true"]}]
    return parse_config({"app": app, "checks": checks}, Path("/etc/healer/healer.toml"))


@pytest.mark.parametrize(
    ("cfg", "deploy", "now", "expected"),
    [
        pytest.param(config(), Deploy(1, COMMIT, T0), T0 + AFTER, True, id="watched-long-enough"),
        pytest.param(config(), Deploy(1, COMMIT, T0), T0 + AFTER - H, False, id="too-early"),
        pytest.param(config(repo=None), Deploy(1, COMMIT, T0), T0 + AFTER, False, id="no-repo"),
        pytest.param(config(pattern="stable"), Deploy(1, COMMIT, T0), T0 + AFTER, False, id="glob-without-star"),
        pytest.param(config(), Deploy(1, COMMIT, T0, stable_tag="stable-1"), T0 + AFTER, False,
                     id="already-tagged"),
        pytest.param(config(), Deploy(1, COMMIT, T0, held="waiting"), T0 + AFTER, False, id="held"),
        pytest.param(config(), Deploy(1, COMMIT, T0, open_incident=3), T0 + AFTER, False, id="incident-open"),
        pytest.param(config(), Deploy(1, COMMIT, T0, bad="rolled back"), T0 + AFTER, False, id="known-bad"),
    ],
)  # fmt: skip
def test_may_qualify_before_the_cycles_are_read(cfg: Config, deploy: Deploy, now: datetime, expected: bool) -> None:
    """A repo and a glob with `*`; untagged, not held, no incident, watched tag_stable_after, not known bad."""
    assert may_qualify(deploy, now=now, config=cfg) is expected


def test_new_tag_names_the_release_and_says_why_it_is_trusted() -> None:
    """Earned after the window with a resolved blip: the name per the glob, the message with the numbers."""
    d = Deploy(1, COMMIT, T0)
    cycles = window(*"+--++++")
    assert has_earned(d, cycles, now=T0 + AFTER, config=config())
    assert not has_earned(d, cycles[:-1], now=T0 + AFTER, config=config())
    assert new_tag(d, cycles, now=T0 + AFTER, config=config()) == StableTag(
        name="stable-healer-20260101-180000-abcdef1",
        message=(
            "healer: shop at abcdef1 has been healthy for 6h since it was deployed at 2026-01-01 12:00 UTC "
            "(7 cycles, 2 failing, no incident open, the last 2 passing; tag_stable_after = 6h). "
            "A rollback target for healer."
        ),
        reason="healthy for 6h",
    )
    assert new_tag(d, cycles, now=T0 + AFTER, config=config(pattern="v[0-9]*")) is None
