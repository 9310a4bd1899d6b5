"""healer.rollback_plan: a rollback's target, steps and refusals worked out from plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import Config, parse_config
from healer.model import TagInfo, Who
from healer.rollback_plan import Refusal, RepoState, describe, eligible, hidden, plan

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_config(*, after: list[list[str]]) -> Config:
    data = {
        "app": {"name": "shop", "stable_tags": "stable-*"},
        "checks": [{"name": "ok", "type": "command", "argv": ["true"]}],
        "rollback": {"after": after, "command_timeout": "10s", "verify_grace": "0s"},
    }
    return parse_config(data, Path("/etc/healer/healer.toml"))


A, B, C, H = "a" * 40, "b" * 40, "c" * 40, "f" * 40
TAGS = (
    TagInfo("stable-3", H, T0 + timedelta(hours=3)),
    TagInfo("stable-2", B, T0 + timedelta(hours=2)),
    TagInfo("stable-1", A, T0 + timedelta(hours=1)),
)


def state(**kw: Any) -> RepoState:
    base: dict[str, Any] = {"repo": Path("/srv/shop"), "head": H, "tags": TAGS, "deployed": H}
    return RepoState(**{**base, **kw})


@pytest.mark.parametrize(
    ("st", "who", "force", "asked", "refusal", "to_ref", "mark_bad"),
    [
        pytest.param(state(), Who.LOOP, False, True, None, "stable-2", True, id="newest-tag-not-head"),
        pytest.param(state(), Who.LOOP, False, False, None, "stable-2", False, id="loop-not-suspect"),
        pytest.param(state(bad={B: "x"}), Who.LOOP, False, True, None, "stable-1", True, id="skips-bad"),
        pytest.param(state(deployed=B), Who.LOOP, False, True, None, "stable-1", True,
                     id="skips-deployed"),
        pytest.param(state(tags=()), Who.LOOP, False, True, Refusal.NO_TARGET, "", True, id="no-tags"),
        pytest.param(state(bad={A: "x", B: "y"}), Who.LOOP, False, True, Refusal.NO_TARGET, "", True,
                     id="only-bad-tags"),
        pytest.param(state(to="stable-3", to_commit=H), Who.PERSON, True, False, Refusal.SAME_COMMIT,
                     "stable-3", False, id="to-is-head"),
        pytest.param(state(to=C, to_commit=C, bad={C: "x"}), Who.PERSON, False, False, Refusal.KNOWN_BAD,
                     C, False, id="to-known-bad"),
        pytest.param(state(to=C, to_commit=C, bad={C: "x"}), Who.PERSON, True, False, None, C, False,
                     id="undo-forced-forward-marks-nothing"),
        pytest.param(state(), Who.PERSON, False, False, None, "stable-2", False,
                     id="person-back-marks-nothing-by-default"),
        pytest.param(state(), Who.PERSON, False, True, None, "stable-2", True, id="person-mark-bad"),
        pytest.param(state(changed=("app.py",)), Who.LOOP, False, True, Refusal.DIRTY, "stable-2", True,
                     id="dirty"),
        pytest.param(state(changed=("app.py",)), Who.PERSON, True, False, None, "stable-2", False,
                     id="dirty-forced"),
        pytest.param(state(repo=None), Who.PERSON, False, False, Refusal.NO_REPO, "", False, id="no-repo"),
    ],
)  # fmt: skip
def test_plan_picks_a_target_or_says_why_not(
    st: RepoState, who: Who, force: bool, asked: bool, refusal: Refusal | None, to_ref: str,
    mark_bad: bool,
) -> None:  # fmt: skip
    """The newest eligible tag, or the ref asked for; refusals name the reason; the from-commit
    is marked bad only when asked (the loop's suspect deploy, a person's --mark-bad)."""
    config = make_config(after=[["systemctl", "restart", "shop"]])
    p = plan(st, config, who=who, reason="r", force=force, mark_bad=asked)
    assert p.refusal is refusal
    assert p.ok is (refusal is None)
    assert bool(p.refused) is (refusal is not None)
    assert p.to_ref == to_ref
    assert p.mark_bad is mark_bad
    assert p.commands == (("systemctl", "restart", "shop"),)
    assert p.stash == (st.changed if force else ())


def test_describe_shows_from_to_every_command_and_the_undo() -> None:
    """What a person confirms: the commits, the steps in order, the commands, how to undo."""
    config = make_config(after=[["npm", "ci"], ["systemctl", "restart", "my shop"]])
    st = state(subjects={H: "bad release", B: "release 2"}, branch="main")
    text = describe(plan(st, config, who=Who.PERSON, reason="login broken", mark_bad=True))
    assert "a person: login broken" in text
    assert 'from  fffffff  "bad release"  (HEAD, branch main)' in text
    assert 'to    stable-2  bbbbbbb  "release 2"' in text
    assert "$ npm ci" in text and "$ systemctl restart 'my shop'" in text
    assert text.index("check out") < text.index("mark fffffff bad") < text.index("$ npm ci")
    assert "undo: healer rollback --to fffffff" in text
    assert "undo: healer rollback --to fffffff --reason ... --force" in text
    unmarked = describe(plan(st, config, who=Who.PERSON, reason="login broken"))
    assert "leave fffffff unmarked (--mark-bad: never a rollback target again)" in unmarked
    assert "mark fffffff bad" not in unmarked and "--force" not in unmarked
    refused = describe(plan(state(tags=()), config, who=Who.LOOP, reason="x"))
    assert "Refused: no stable tag to roll back to: no tag matches 'stable-*'" in refused


@pytest.mark.parametrize(
    ("head", "deployed", "bad", "expected"),
    [
        pytest.param(H, H, {}, ["stable-3 is the commit checked out: not a target"], id="head"),
        pytest.param(H, B, {}, ["stable-3 is the commit checked out: not a target",
                                "stable-2 is the deployed commit: not a target"], id="head-and-deployed"),
        pytest.param(C, None, {A: "rolled back from"}, [
            "stable-1 (aaaaaaa) is known bad: rolled back from; not a target "
            "(`healer rollback --to stable-1 --force` goes there anyway)"], id="known-bad"),
        pytest.param(C, None, {}, [], id="nothing-hidden"),
    ],
)  # fmt: skip
def test_hidden_says_why_each_tag_is_not_a_target(
    head: str, deployed: str | None, bad: dict[str, str], expected: list[str]
) -> None:
    """The tag of the commit checked out, of the deployed one and known-bad ones, each with why."""
    assert hidden(TAGS, head=head, deployed=deployed, bad=bad) == expected
    shown = eligible(TAGS, head=head, deployed=deployed, bad=bad)
    assert len(shown) + len(expected) == len(TAGS)
