"""The repair actions a playbook step can name, dispatched by the step's type (I/O).

Each action has three faces: `problems` (why it cannot run with this config, checked before
anything is touched), `plan` (one line saying exactly what it would do, for dry runs and the
confirmation prompt) and `run` (does it and returns one line saying what was done). Library
errors are turned into ActionError in the action's own module.

To add an action: write a step model in healer/playbook.py, one module here, and one line in
each of the three tables below. The Redis and PostgreSQL actions are imported where they are
dispatched: their drivers cost ~17 MB of memory and ~0.1 s of start-up that a `healer run`
which never clears Redis or resets PostgreSQL connections should not pay.
"""

from __future__ import annotations

from healer.actions import command, process
from healer.config import Config
from healer.playbook import (
    CommandStep,
    PostgresTerminateStep,
    ProcessReloadStep,
    ProcessRestartStep,
    RedisDeletePatternStep,
    RedisFlushStep,
)

StepModel = (
    ProcessRestartStep
    | ProcessReloadStep
    | RedisFlushStep
    | RedisDeletePatternStep
    | PostgresTerminateStep
    | CommandStep
)


def problems(step: StepModel, config: Config) -> list[str]:
    """Why `step` cannot run with `config`: one line each; empty when it can."""
    match step:
        case ProcessRestartStep():
            return process.problems_restart(step, config)
        case ProcessReloadStep():
            return process.problems_reload(step, config)
        case RedisFlushStep():
            from healer.actions import redis

            return redis.problems_flush(step, config)
        case RedisDeletePatternStep():
            from healer.actions import redis

            return redis.problems_delete(step, config)
        case PostgresTerminateStep():
            from healer.actions import postgres

            return postgres.problems(step, config)
        case CommandStep():
            return []


def plan(step: StepModel, config: Config) -> str:
    """One line: exactly what `step` would do (argv, databases, patterns, the SQL filter)."""
    match step:
        case ProcessRestartStep():
            return process.plan_restart(step, config)
        case ProcessReloadStep():
            return process.plan_reload(step, config)
        case RedisFlushStep():
            from healer.actions import redis

            return redis.plan_flush(step, config)
        case RedisDeletePatternStep():
            from healer.actions import redis

            return redis.plan_delete(step, config)
        case PostgresTerminateStep():
            from healer.actions import postgres

            return postgres.plan(step, config)
        case CommandStep():
            return command.plan(step, config)


async def run(step: StepModel, config: Config, *, playbook: str) -> str:
    """Carry out `step`; returns one line saying what was done, raises ActionError."""
    match step:
        case ProcessRestartStep():
            return await process.restart(step, config)
        case ProcessReloadStep():
            return await process.reload(step, config)
        case RedisFlushStep():
            from healer.actions import redis

            return await redis.flush_cache(step, config)
        case RedisDeletePatternStep():
            from healer.actions import redis

            return await redis.delete_pattern(step, config)
        case PostgresTerminateStep():
            from healer.actions import postgres

            return await postgres.terminate_backends(step, config)
        case CommandStep():
            return await command.run(step, config, playbook=playbook)


__all__ = ["StepModel", "plan", "problems", "run"]
