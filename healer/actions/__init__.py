"""The repair actions a playbook step can name, dispatched by the step's `action` (I/O).

Each action has three faces: `problems` (why it cannot run with this config, checked before
anything is touched), `plan` (one line saying exactly what it would do, for dry runs and the
confirmation prompt) and `run` (does it and returns one line saying what was done). Library
errors are turned into ActionError in the action's own module. The actions are listed in
healer/actions/registry.py, one line each; CONTRIBUTING.md says how to add one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healer.actions.registry import ACTIONS

if TYPE_CHECKING:
    from healer.config import Config
    from healer.schema import StepBase


def problems(step: StepBase, config: Config) -> list[str]:
    """Why `step` cannot run with `config`: one line each; empty when it can."""
    check = ACTIONS[step.action].problems
    return check(step, config) if check is not None else []


def plan(step: StepBase, config: Config) -> str:
    """One line: exactly what `step` would do (argv, databases, patterns, the SQL filter)."""
    return ACTIONS[step.action].plan(step, config)


async def run(step: StepBase, config: Config, *, playbook: str) -> str:
    """Carry out `step`; returns one line saying what was done, raises ActionError."""
    return await ACTIONS[step.action].run(step, config, playbook=playbook)


__all__ = ["plan", "problems", "run"]
