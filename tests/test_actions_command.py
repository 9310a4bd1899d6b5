"""Child processes: argv only, found on PATH, bounded by a timeout that kills the whole group."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest

from healer.actions.command import CommandStep, StepTimedOut, run, run_argv
from healer.config import parse_config
from healer.errors import ActionError


async def test_a_command_step_runs_in_its_cwd_and_knows_its_playbook(tmp_path: Path) -> None:
    """The child runs in `cwd`, sees HEALER_PLAYBOOK and HEALER_STATE_DIR, and its last line is reported."""
    config = parse_config(
        {"state_dir": "st", "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}]},
        tmp_path / "healer.toml",
    )
    code = "import os; print('cwd', os.getcwd()); print(os.environ['HEALER_PLAYBOOK'], os.environ['HEALER_STATE_DIR'])"
    step = CommandStep(action="command", argv=[sys.executable, "-c", code], cwd=tmp_path)
    detail = await run(step, config, playbook="warm-cache")
    assert detail.endswith(f"(exit 0: warm-cache {tmp_path / 'st'})")


async def test_a_non_zero_exit_is_an_action_error_with_the_last_line() -> None:
    """exit 3 names the argv, the status and what the program said last."""
    argv = [sys.executable, "-c", "import sys; print('first'); print('cache is locked', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(ActionError) as err:
        await run_argv(argv, timeout=timedelta(seconds=10))
    assert str(err.value).endswith("exited 3: cache is locked")


async def test_a_shell_is_never_involved(tmp_path: Path) -> None:
    """Metacharacters are plain arguments."""
    done = await run_argv(["echo", "a; rm -rf /tmp/nothing && $HOME"], timeout=timedelta(seconds=5))
    assert done.output == "a; rm -rf /tmp/nothing && $HOME\n"


async def test_a_timeout_kills_the_whole_process_group() -> None:
    """The child and the grandchild it started are both gone after the timeout."""
    mark = f"healer-test-{uuid.uuid4().hex[:12]}"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]]); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    with pytest.raises(StepTimedOut, match=r"timed out after 500ms and was killed"):
        await run_argv([sys.executable, "-c", code, mark], timeout=timedelta(milliseconds=500))
    time.sleep(0.2)
    orphans = [
        p for p in psutil.process_iter(["cmdline", "status"])
        if mark in " ".join(p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    assert orphans == []


async def test_a_program_not_on_path_is_an_action_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not found is said plainly, before anything runs."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ActionError, match=r"^no-such-tool: not found on PATH$"):
        await run_argv(["no-such-tool", "--fix"], timeout=timedelta(seconds=5))


async def test_a_step_that_backgrounds_a_sleep_and_times_out_leaves_nothing_alive(tmp_path: Path) -> None:
    """`sleep 1000 &` then a sleep past the step's timeout: StepTimedOut, and no process of it survives."""
    marker = f"1000.{uuid.uuid4().int % 10**8:08d}"  # a sleep duration no other process has
    config = parse_config(
        {"state_dir": "st", "checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}]},
        tmp_path / "healer.toml",
    )
    step = CommandStep(action="command", argv=["sh", "-c", f"sleep {marker} & sleep 30"],
                       timeout=timedelta(seconds=1))  # fmt: skip
    with pytest.raises(StepTimedOut, match=r"timed out after 1s and was killed"):
        await run(step, config, playbook="warm-cache")
    time.sleep(0.2)
    alive = [
        p for p in psutil.process_iter(["cmdline", "status"])
        if marker in " ".join(p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    assert alive == []
