"""Running argvs as child processes, bounded by a timeout; the `command` step (I/O).

Every program healer runs (a user's command step, `systemctl`, `pm2`, `supervisorctl`) goes
through `run_argv`: an argv list, never a shell string, found on PATH, in its own session so
a timeout kills the whole process group, never blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from healer.config import Config, format_duration
from healer.errors import ActionError
from healer.logging import redact
from healer.playbook import CommandStep

# Output kept from a child, from the end: enough for the last lines of an error.
_OUTPUT_MAX = 8192
# How long a killed child may take to be reaped.
_REAP_TIMEOUT = 5.0


class StepTimedOut(ActionError):
    """A child ran past its timeout and was killed (a repair that times out has failed)."""


@dataclass(frozen=True, slots=True)
class Completed:
    """A child process that ran to its end."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        """The last non-empty line of stderr, else of stdout (redacted), for a one-line message."""
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return redact(lines[-1])[:300]
        return ""


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
) -> Completed:
    """Run `argv` to its end within `timeout`; kill its process group if it takes longer.

    1. Find argv[0] on PATH (a clear "not found" beats an exec error).
    2. Start it in a new session, stdin from /dev/null, stdout and stderr captured.
    3. Wait up to `timeout`; on timeout or cancellation, SIGKILL the group and reap it.
    4. With `check`, a non-zero exit is an ActionError quoting the last line of output.
    """
    shown = show_argv(argv)
    exe = resolve(argv[0], cwd, env)
    try:
        proc = await asyncio.create_subprocess_exec(
            exe, *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
        )  # fmt: skip
    except OSError as e:
        msg = f"`{shown}`: cannot run: {e.strerror or e}"
        raise ActionError(msg) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout.total_seconds())
    except TimeoutError:
        await _kill(proc)
        msg = f"`{shown}` timed out after {format_duration(timeout)} and was killed"
        raise StepTimedOut(msg) from None
    except asyncio.CancelledError:
        await _kill(proc)
        raise
    done = Completed(
        tuple(argv), proc.returncode if proc.returncode is not None else -1,
        out[-_OUTPUT_MAX:].decode("utf-8", "replace"), err[-_OUTPUT_MAX:].decode("utf-8", "replace"),
    )  # fmt: skip
    if check and done.returncode != 0:
        tail = done.last_line()
        msg = f"`{shown}` exited {done.returncode}" + (f": {tail}" if tail else "")
        raise ActionError(msg)
    return done


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole session (it may have children of its own), then reap it."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.kill()
    # reap it even when our caller is being cancelled: a child left unreaped is a zombie
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), _REAP_TIMEOUT)


# ---- the `command` step ----------------------------------------------------------------------


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
