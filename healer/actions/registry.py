"""Every action a playbook step can name, one line each (pure at import: no driver is loaded).

An action is a step model (a `schema.StepBase` with `action: Literal["<name>"]`, a default
`timeout` and its own keys) and three functions, in one module of healer/actions/ (a module
may hold several, like process.restart and process.reload):

- `problems(step, config)`: why it cannot run with this config, one line each, checked before
  anything is touched (None here: it always can);
- `plan(step, config)`: one line saying exactly what it would do (dry runs, the prompt);
- `run(step, config, *, playbook)`: does it, returns one line saying what was done, raises
  ActionError.

playbook.py builds the `[[steps]]` union from this table and actions/__init__.py dispatches
through it, so neither names an action. The action modules import their drivers (redis,
psycopg, psutil) inside the functions that use them: reading the playbooks loads none of them.
CONTRIBUTING.md has the steps to add one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

# one import per module (not `from healer.actions import ...`): the package imports this table
import healer.actions.command as command
import healer.actions.postgres as postgres
import healer.actions.process as process
import healer.actions.redis as redis
from healer.schema import StepBase

if TYPE_CHECKING:
    from healer.config import Config

S = TypeVar("S", bound=StepBase)
S_contra = TypeVar("S_contra", bound=StepBase, contravariant=True)


class Run(Protocol[S_contra]):
    """Carry out a step of the playbook named `playbook`; one line saying what was done."""

    def __call__(self, step: S_contra, config: Config, *, playbook: str) -> Awaitable[str]: ...


@dataclass(frozen=True, slots=True)
class ActionKind(Generic[S]):
    """One action: the model its `[[steps]]` table is read into, and what checks, shows and runs it."""

    model: type[S]
    plan: Callable[[S, Config], str]
    run: Run[S]
    problems: Callable[[S, Config], list[str]] | None = None


# The order is the order the playbook files' errors list the actions in.
ACTIONS: Mapping[str, ActionKind[Any]] = {
    "process.restart": ActionKind(
        process.ProcessRestartStep, process.plan_restart, process.restart, process.problems_restart
    ),
    "process.reload": ActionKind(
        process.ProcessReloadStep, process.plan_reload, process.reload, process.problems_reload
    ),
    "redis.flush_cache": ActionKind(redis.RedisFlushStep, redis.plan_flush, redis.flush_cache, redis.problems_flush),
    "redis.delete_pattern": ActionKind(
        redis.RedisDeletePatternStep, redis.plan_delete, redis.delete_pattern, redis.problems_delete
    ),
    "postgres.terminate_backends": ActionKind(
        postgres.PostgresTerminateStep, postgres.plan, postgres.terminate_backends, postgres.problems
    ),
    "command": ActionKind(command.CommandStep, command.plan, command.run),
}
