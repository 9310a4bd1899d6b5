"""The command check with real child processes: exit codes, output, timeouts that kill."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
from helpers import HEALER, write_config

from healer.model import CheckResult
from healer.redact import MASK

RunProbe = Callable[..., Awaitable[CheckResult]]


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def is_gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def test_expected_exit_passes(run_probe: RunProbe) -> None:
    """Exit 0 (the default expect_exit) passes with exit_code and latency."""
    r = await run_probe({"type": "command", "argv": py("print('fine')")})
    assert r.ok, r.error
    assert r.values["exit_code"] == 0 and r.values["latency_ms"] > 0
    assert r.latency is not None


async def test_other_exit_fails_with_the_last_line_of_output(run_probe: RunProbe) -> None:
    """A wrong exit status is `command.failed`, quoting the last line the command wrote."""
    code = "import sys; print('first'); print('  disk is full  ', file=sys.stderr); sys.exit(3)"
    r = await run_probe({"type": "command", "argv": py(code)})
    assert not r.ok
    assert r.symptoms == ("command.failed",)
    assert r.values["exit_code"] == 3
    assert r.error and r.error.endswith("exited 3 (expected 0): disk is full")


async def test_expect_exit_can_be_non_zero(run_probe: RunProbe) -> None:
    """expect_exit = 3 makes exit 3 the passing status."""
    r = await run_probe({"type": "command", "argv": py("raise SystemExit(3)"), "expect_exit": 3})
    assert r.ok, r.error


async def test_long_output_line_is_truncated(run_probe: RunProbe) -> None:
    """The quoted line is cut to 200 characters."""
    r = await run_probe({"type": "command", "argv": py("print('x' * 5000); raise SystemExit(1)")})
    assert r.error is not None
    quoted = r.error.split(": ", 1)[1]
    assert len(quoted) == 200 and quoted.endswith("…")


async def test_cwd_is_used(run_probe: RunProbe, tmp_path: Path) -> None:
    """The command runs in cwd."""
    code = f"import os, sys; sys.exit(0 if os.getcwd() == {str(tmp_path)!r} else 1)"
    r = await run_probe({"type": "command", "argv": py(code), "cwd": str(tmp_path)})
    assert r.ok, r.error


async def test_timeout_kills_the_command_and_its_children(run_probe: RunProbe, tmp_path: Path) -> None:
    """A command past its timeout is `command.timeout`; it and what it started are killed."""
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $$ $! > {pids}; wait"
    r = await run_probe({"type": "command", "argv": ["sh", "-c", script], "timeout": "1s"})
    assert not r.ok
    assert r.symptoms == ("command.timeout",)
    assert r.error and "killed" in r.error
    shell, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while not (is_gone(shell) and is_gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_gone(shell) and is_gone(child)


async def test_missing_program_is_a_failed_check(run_probe: RunProbe) -> None:
    """An argv[0] that does not exist is a failed `command.error` result naming it."""
    r = await run_probe({"type": "command", "argv": ["healer-no-such-program", "--x"]})
    assert not r.ok
    assert r.symptoms == ("command.error",)
    assert r.error and "healer-no-such-program" in r.error and "not found" in r.error


async def test_background_child_holding_output_does_not_stretch_the_check(run_probe: RunProbe, tmp_path: Path) -> None:
    """A command that exits while a child it left keeps its output open is judged at its exit."""
    pids = tmp_path / "pids"
    r = await run_probe({"type": "command", "argv": ["sh", "-c", f"sleep 30 & echo $! > {pids}"],
                         "timeout": "5s"})  # fmt: skip
    try:
        assert r.ok, r.error  # not `command.timeout`: judged at the shell's exit, not the child's
    finally:
        psutil.Process(int(pids.read_text())).kill()


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_yes_for_three_seconds_keeps_disk_and_memory_bounded(tmp_path: Path) -> None:
    """`healer check` on `yes` with a 3 s timeout: no temp file grows, the state dir stays small, memory flat."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    config = write_config(
        tmp_path,
        """
        state_dir = "state"
        [[checks]]
        name = "spew"
        type = "command"
        argv = ["yes"]
        timeout = "3s"
        """,
    )
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [*HEALER, "--config", str(config), "check", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    peak_rss, peak_disk = 0, 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak_rss = max(peak_rss, watched.memory_info().rss)
        peak_disk = max(peak_disk, tree_bytes(tmp_path))
        time.sleep(0.05)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 1, err
    [result] = json.loads(out)["results"]
    assert result["symptoms"] == ["command.timeout"] and "was killed" in result["error"]
    assert peak_disk < 1024 * 1024, peak_disk  # the old temp file reached gigabytes
    assert peak_rss < 200 * 1024 * 1024, peak_rss
    assert list(tmp.iterdir()) == []


async def test_the_tail_of_a_failing_command_is_redacted(run_probe: RunProbe) -> None:
    """A command that prints a DSN and a password: the quoted last line holds neither."""
    script = "echo postgresql://shop:S3cr3tPw-cmd@127.0.0.1/shop; echo REDIS_PASSWORD=R3disPw-cmd; exit 1"
    r = await run_probe({"type": "command", "argv": ["sh", "-c", script]})
    assert r.error is not None and r.error.endswith(f"REDIS_PASSWORD={MASK}")
    assert "R3disPw-cmd" not in r.error
