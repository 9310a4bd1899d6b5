"""Running argvs as child processes, bounded by a timeout; the `command` step (I/O).

Every program a repair runs (a user's command step, `systemctl`, `pm2`, `supervisorctl`) goes
through `run_argv`, on top of healer's one runner (healer/runner.py, which the command check
and the rollback hooks use too): an argv list, never a shell string, found on PATH, in its own
process group so a timeout kills the whole group, its output bounded and redacted, never
blocking the event loop.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from healer import runner
from healer.errors import ActionError
from healer.runner import Finished
from healer.schema import Argv, PositiveDuration, RelPath, StepBase, format_duration

if TYPE_CHECKING:
    from healer.config import Config

__all__ = ["CommandStep", "Finished", "StepTimedOut", "plan", "resolve", "run", "run_argv", "show_argv"]


class StepTimedOut(ActionError):
    """A child ran past its timeout and was killed (a repair that times out has failed)."""


def show_argv(argv: Sequence[str]) -> str:
    """An argv as a person would type it (quoted where needed), for messages and dry runs."""
    return shlex.join(argv)


def resolve(argv0: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """The program to execute: argv[0] from PATH, or a path (relative to `cwd`) as given."""
    if "/" in argv0:
        path = Path(argv0) if Path(argv0).is_absolute() or cwd is None else cwd / argv0
        if not os.access(path, os.X_OK):
            msg = f"{argv0}: not found or not executable"
            raise ActionError(msg)
        return str(path)
    found = shutil.which(argv0, path=(env if env is not None else os.environ).get("PATH", os.defpath))
    if found is None:
        msg = f"{argv0}: not found on PATH"
        raise ActionError(msg)
    return found


async def run_argv(
    argv: Sequence[str],
    *,
    timeout: timedelta,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> Finished:
    """Run `argv` to its end within `timeout`; kill its process group if it takes longer.

    1. Find argv[0] on PATH (a clear "not found" beats an exec error).
    2. Run it through the runner: a new session, stdin from /dev/null, the output's tail kept.
    3. A timeout is StepTimedOut: the whole group was killed.
    4. With `check`, a non-zero exit is an ActionError quoting the last line of output.
    """
    shown = show_argv(argv)
    exe = resolve(argv[0], cwd, env)
    try:
        done = await runner.run([exe, *argv[1:]], timeout=timeout, cwd=cwd, env=env)
    except OSError as e:
        msg = f"`{shown}`: cannot run: {e.strerror or e}"
        raise ActionError(msg) from None
    if done.timed_out:
        msg = f"`{shown}` timed out after {format_duration(timeout)} and was killed"
        raise StepTimedOut(msg)
    if check and done.returncode != 0:
        tail = done.last_line()
        msg = f"`{shown}` {done.how()}" + (f": {tail}" if tail else "")
        raise ActionError(msg)
    return done


# ---- the `command` step ----------------------------------------------------------------------


class CommandStep(StepBase):
    """Run an argv (never a shell string); a non-zero exit is an error."""

    action: Literal["command"]
    timeout: PositiveDuration = timedelta(seconds=60)
    argv: Argv
    cwd: RelPath | None = None  # relative to the playbook file; default the directory of healer.toml


def _cwd(step: CommandStep, config: Config) -> Path:
    return step.cwd if step.cwd is not None else config.path.resolve().parent


def plan(step: CommandStep, config: Config) -> str:
    """What the step would run."""
    return f"run `{show_argv(step.argv)}` in {_cwd(step, config)} (no shell)"


async def run(step: CommandStep, config: Config, *, playbook: str) -> str:
    """Run the step's argv; exit 0 is success. The child learns which playbook runs it and
    where healer keeps its state (HEALER_PLAYBOOK, HEALER_STATE_DIR, HEALER_CONFIG)."""
    env = {
        **os.environ,
        "HEALER_PLAYBOOK": playbook,
        "HEALER_STATE_DIR": str(config.state_dir),
        "HEALER_CONFIG": str(config.path),
    }
    done = await run_argv(step.argv, timeout=step.timeout, cwd=_cwd(step, config), env=env)
    tail = done.last_line()
    return f"ran `{show_argv(step.argv)}` (exit 0" + (f": {tail})" if tail else ")")
