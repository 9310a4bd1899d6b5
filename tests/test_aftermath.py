"""What follows a repair or a rollback: the alerts people see and the hold, for the loop and a person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healer.aftermath import (
    ActionOutcome,
    Crashed,
    Ending,
    NotRun,
    Observed,
    RepairResult,
    ResumedRepair,
    ResumedRollback,
    RollbackResult,
    follow_up,
    rollback_started,
)
from healer.config import Config, parse_config
from healer.model import Alert, Deploy, Repair, Rollback, Severity, Who
from healer.rollback_plan import plan_from

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BAD, GOOD = "f" * 40, "b" * 40
W, C, INFO = Severity.WARNING, Severity.CRITICAL, Severity.INFO
WAITING = "waiting for a person"
ONE_RESTART = "one restart of it, then healer holds if it still fails"


def config(*, process: bool = False, after: bool = True) -> Config:
    data: dict[str, Any] = {
        "app": {"name": "shop", "repo": "/srv/shop"},
        "checks": [{"name": "ok", "type": "command", "argv": ["true"]}],
        "rollback": {"after": [["systemctl", "restart", "shop"]] if after else []},
    }
    if process:
        data["process"] = {"manager": "systemd", "name": "shop"}
    return parse_config(data, Path("/etc/healer/healer.toml"))


def deploy(held: str | None = None) -> Deploy:
    return Deploy(id=7, commit=BAD, first_seen=T0, held=held)


def rolled(ending: Ending, *, ok: bool = False, who: Who = Who.LOOP, **kw: Any) -> RollbackResult:
    """A rollback from BAD to stable-2 (GOOD) that ended so; the new window is deploy 8."""
    cfg = kw.pop("cfg", config())
    plan = plan_from(
        cfg, who=who, reason="5 failing cycles", repo=Path("/srv/shop"), from_commit=BAD, from_branch="main",
        to_ref="stable-2", to_commit=GOOD, mark_bad=True,
    )  # fmt: skip
    fields: dict[str, Any] = dict(
        ok=ok, from_commit=BAD, to_ref="stable-2", to_commit=GOOD, detail="stable-2 (bbbbbbb) from fffffff: x",
        changed=ending is Ending.CHECKED_OUT, who=who, ending=ending, action_id=3, deploy_id=8, plan=plan,
    )  # fmt: skip
    return RollbackResult(**(fields | kw))


def said(alerts: tuple[Alert, ...]) -> list[tuple[str, Severity, str, str, int | None, bool]]:
    return [(a.event, a.severity, a.title, a.detail, a.incident_id, a.bypass_dedup) for a in alerts]


# ---- repairs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "by", "held", "expected", "release"),
    [
        pytest.param(RepairResult("redis-flush", True, "cache flushed; checks pass"), None, None,
                     [("repair.succeeded", W, "redis-flush", "cache flushed; checks pass", 4, False)], False,
                     id="loop-fixed"),
        pytest.param(RepairResult("process-restart", False, "still down"), None, None,
                     [("repair.failed", W, "process-restart", "still down", 4, False)], False, id="loop-not-fixed"),
        pytest.param(RepairResult("redis-flush", True, "flushed"), "alice", "rolled back: waiting", [
            ("repair.succeeded", W, "Repaired: redis-flush (by alice)", "flushed", None, True)], True,
                     id="person-fixed-a-held-deploy-arms-healer"),
        pytest.param(RepairResult("redis-flush", True, "flushed"), "alice", None, [
            ("repair.succeeded", W, "Repaired: redis-flush (by alice)", "flushed", None, True)], False,
                     id="person-fixed-nothing-to-release"),
        pytest.param(RepairResult("redis-flush", False, "still failing"), "alice", "held", [
            ("repair.failed", W, "Repair failed: redis-flush (by alice)", "still failing", None, True)], False,
                     id="person-not-fixed-stays-held"),
    ],
)  # fmt: skip
def test_a_repair_is_announced_and_a_persons_fix_arms_healer_again(
    result: RepairResult, by: str | None, held: str | None, expected: list[Any], release: bool
) -> None:
    """The loop's repair speaks within its incident; a person's names them, and their fix lifts the hold."""
    then = follow_up(result, config=config(), deploy=deploy(held), incident=None if by else 4, by=by)
    assert said(then.alerts) == expected
    assert then.hold is None
    assert (then.release, then.deploy_id) == ((True, 7) if release else (False, None))


# ---- rollbacks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "cfg", "expected", "hold"),
    [
        pytest.param(rolled(Ending.CHECKED_OUT, ok=True), config(), [
            ("rollback.succeeded", W, "to stable-2", "stable-2 (bbbbbbb) from fffffff: x", 4, False),
            ("incident.resolved", INFO, "closed by the rollback", "stable-2 (bbbbbbb) from fffffff: x", 4, False),
        ], None, id="healthy"),
        pytest.param(
            rolled(Ending.REFUSED, refused="no stable tag to roll back to", deploy_id=7), config(),
            [("rollback.failed", C, "refused", f"no stable tag to roll back to; {WAITING}", 4, False)],
            (7, f"automatic rollback refused: no stable tag to roll back to; {WAITING}"),
            id="refused-holds-the-deploy"),
        pytest.param(
            rolled(Ending.NOT_CHECKED_OUT, detail="stable-2: cannot check out", deploy_id=7), config(),
            [("rollback.failed", C, "stable-2 is not healthy either", f"stable-2: cannot check out; {WAITING}", 4,
              False)],
            (7, f"automatic rollback failed: stable-2: cannot check out; {WAITING}"), id="checkout-failed"),
        pytest.param(
            rolled(Ending.CHECKED_OUT, why="after command 1 exited 3", commands_failed=True), config(),
            [("rollback.failed", C, "Rollback to stable-2: after command failed",
              f"stable-2 (bbbbbbb) from fffffff: x; {WAITING}", 4, False)],
            (8, f"rolled back to stable-2 (bbbbbbb) but after command 1 exited 3; not rolling back again: {WAITING} "
                "(healer rollback --to REF, healer repair, or a new deploy)"), id="after-command-failed-holds-new"),
        pytest.param(
            rolled(Ending.CHECKED_OUT, why="still unhealthy", cfg=config(process=True)), config(process=True),
            [("rollback.failed", C, "stable-2 is not healthy either",
              f"stable-2 (bbbbbbb) from fffffff: x; {ONE_RESTART}", 4, False)],
            None, id="unhealthy-with-process-one-restart-first"),
        pytest.param(
            rolled(Ending.CHECKED_OUT, why="restart failed", commands_failed=True,
                   cfg=config(process=True, after=False)), config(process=True, after=False),
            [("rollback.failed", C, "Rollback to stable-2: the restart through [process] failed",
              f"stable-2 (bbbbbbb) from fffffff: x; {ONE_RESTART}", 4, False)],
            None, id="restart-failed"),
    ],
)  # fmt: skip
def test_the_loops_rollback_is_announced_and_held_when_it_did_not_cure(
    result: RollbackResult, cfg: Config, expected: list[Any], hold: tuple[int, str] | None
) -> None:
    """A cure resolves the incident; otherwise the deploy is held for a person unless [process] can restart it."""
    then = follow_up(result, config=cfg, deploy=deploy(), incident=4)
    assert said(then.alerts) == expected
    assert (None if then.hold is None else (then.deploy_id, then.hold.reason)) == hold


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param(rolled(Ending.CHECKED_OUT, ok=True, who=Who.PERSON),
                     ("rollback.succeeded", W, "Rolled back to stable-2 (by bob)"), id="ok"),
        pytest.param(rolled(Ending.CHECKED_OUT, who=Who.PERSON),
                     ("rollback.failed", C, "Rollback to stable-2 failed (by bob)"), id="unhealthy"),
        pytest.param(rolled(Ending.REFUSED, who=Who.PERSON, refused="dirty"),
                     ("rollback.failed", C, "Rollback to stable-2 failed (by bob)"), id="refused"),
    ],
)  # fmt: skip
def test_a_persons_rollback_is_announced_by_name_and_holds_nothing(
    result: RollbackResult, expected: tuple[str, Severity, str]
) -> None:
    """The person is there: their rollback is news every time, and never held for them."""
    then = follow_up(result, config=config(), by="bob")
    assert said(then.alerts) == [(*expected, result.detail, None, True)]
    assert then.hold is None and not then.release


@pytest.mark.parametrize(
    ("result", "expected", "next_step", "hold"),
    [
        pytest.param(rolled(Ending.CHECKED_OUT, ok=True),
                     ("rollback.succeeded", W, "Interrupted rollback finished"), "watching", None, id="finished"),
        pytest.param(rolled(Ending.RECORDED, plan=None, deploy_id=None),
                     ("rollback.failed", C, "Interrupted rollback"), WAITING, None, id="only-recorded"),
        pytest.param(rolled(Ending.CHECKED_OUT, why="still unhealthy"),
                     ("rollback.failed", C, "Interrupted rollback"), WAITING, 8, id="resumed-still-failing"),
        pytest.param(rolled(Ending.CHECKED_OUT, who=Who.PERSON, why="still unhealthy"),
                     ("rollback.failed", C, "Interrupted rollback"), WAITING, None, id="a-persons-resumed"),
    ],
)  # fmt: skip
def test_an_interrupted_rollback_is_told_and_held_by_the_same_rule(
    result: RollbackResult, expected: tuple[str, Severity, str], next_step: str, hold: int | None
) -> None:
    """What the next start finished or recorded is announced; the loop's that still fails is held."""
    then = follow_up(ResumedRollback(result), config=config())
    assert said(then.alerts) == [(*expected, result.detail, None, False)]
    assert then.next_step == next_step
    assert (None if then.hold is None else then.deploy_id) == hold


@dataclass(frozen=True)
class Row:
    """An interrupted repair's journal row, as follow_up reads it."""

    id: int
    name: str
    who: str
    incident_id: int | None


LOOPS, PERSONS = Row(9, "redis-flush", "loop", 4), Row(9, "redis-flush", "person", 4)
TAKEN_UP = "redis-flush, interrupted when healer stopped"


@pytest.mark.parametrize(
    ("resumed", "expected"),
    [
        pytest.param(ResumedRepair(LOOPS, RepairResult("redis-flush", True, "flushed"), "run again: fixed"),
                     [("repair.succeeded", W, f"{TAKEN_UP}, run again", "run again: fixed", 4, False)],
                     id="run-again-fixed"),
        pytest.param(ResumedRepair(LOOPS, RepairResult("redis-flush", False, "no"), "run again: not fixed"),
                     [("repair.failed", W, f"{TAKEN_UP}, run again", "run again: not fixed", 4, False)],
                     id="run-again-not-fixed"),
        pytest.param(ResumedRepair(LOOPS, None, "not run again: cache passes now", healthy=True),
                     [("repair.succeeded", INFO, TAKEN_UP, "not run again: cache passes now", 4, False)],
                     id="healthy-now"),
        pytest.param(ResumedRepair(LOOPS, None, "not run again: paused (deploy)"),
                     [("repair.failed", W, TAKEN_UP, "not run again: paused (deploy)", 4, False)], id="not-run-again"),
        pytest.param(ResumedRepair(PERSONS, None, "a person's repair: not run again by healer"), [],
                     id="a-persons-says-nothing"),
    ],
)  # fmt: skip
def test_an_interrupted_repair_is_told_with_what_the_start_did(resumed: ResumedRepair, expected: list[Any]) -> None:
    """The loop's: run again or why not, within its incident; a person's saw it end in their command."""
    then = follow_up(resumed, config=config())
    assert said(then.alerts) == expected
    assert then.hold is None


# ---- actions not carried out --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected", "hold"),
    [
        pytest.param(NotRun(Repair("redis-flush", "r"), "no [redis] url"),
                     ("repair.failed", W, "redis-flush could not run", "no [redis] url"), None, id="repair-not-run"),
        pytest.param(NotRun(Rollback("r"), "no git"),
                     ("rollback.failed", C, "could not run", f"rollback could not run: no git; {WAITING}"),
                     f"rollback could not run: no git; {WAITING}", id="rollback-not-run-holds"),
        pytest.param(Observed(Repair("redis-flush", "cache: memory")),
                     ("repair.started", W, "redis-flush (would run)", "observe mode, nothing done (cache: memory)"),
                     None, id="repair-observed"),
        pytest.param(Observed(Rollback("5 failing cycles")),
                     ("rollback.started", C, "would roll back to the last stable tag",
                      "observe mode, nothing done (5 failing cycles)"), None, id="rollback-observed"),
        pytest.param(Crashed(Repair("redis-flush", "r"), "KeyError: 'x'"),
                     ("repair.failed", C, "redis-flush crashed", "KeyError: 'x'"), None, id="repair-crashed"),
        pytest.param(Crashed(Rollback("r"), "KeyError: 'x'"),
                     ("rollback.failed", C, "rollback crashed", "KeyError: 'x'"), None, id="rollback-crashed"),
    ],
)  # fmt: skip
def test_an_action_not_carried_out_says_why(
    outcome: ActionOutcome, expected: tuple[str, Severity, str, str], hold: str | None
) -> None:
    """Observed, not run or crashed: told within the incident; a rollback that could not run holds the deploy."""
    then = follow_up(outcome, config=config(), deploy=deploy(), incident=4)
    assert said(then.alerts) == [(*expected, 4, False)]
    assert (None if then.hold is None else (then.deploy_id, then.hold.reason)) == (None if hold is None else (7, hold))


def test_a_rollback_going_ahead_is_announced_to_the_incident_or_by_name() -> None:
    """The loop's within its incident; a person's with their name, past the dedup."""
    plan = rolled(Ending.PLANNED).plan
    assert plan is not None
    loop, person = rollback_started(plan, incident=4), rollback_started(plan, by="bob")
    assert said((loop, person)) == [
        ("rollback.started", C, f"to stable-2 ({GOOD[:12]})", "5 failing cycles", 4, False),
        ("rollback.started", C, f"Rolling back to stable-2 ({GOOD[:12]}) (by bob)", "5 failing cycles", None, True),
    ]
