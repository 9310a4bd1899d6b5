"""The process check against real child processes: found, gone, stale pidfiles, ceilings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest
from helpers import healer, write_config

from healer.checks.process import Match, split_groups
from healer.model import CheckResult

RunProbe = Callable[..., Awaitable[CheckResult]]
Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start child processes that are killed after the test."""
    children: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv)
        children.append(p)
        return p

    yield start
    for p in children:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


def marker() -> str:
    return f"healer-test-{uuid.uuid4().hex}"


def sleeper(spawn: Spawn, mark: str, code: str = "import time; time.sleep(60)") -> subprocess.Popen[bytes]:
    return spawn(sys.executable, "-c", code, mark)  # Popen returns once exec has succeeded


async def test_running_process_is_found_with_its_values(run_probe: RunProbe, spawn: Spawn) -> None:
    """A live process matching the command line passes with count, RSS and CPU."""
    mark = marker()
    sleeper(spawn, mark)
    r = await run_probe({"type": "process", "match": mark})
    assert r.ok, r.error
    assert r.values["count"] == 1
    assert r.values["rss_mb"] > 1
    assert r.values["cpu_percent"] >= 0


async def test_killed_process_is_down(run_probe: RunProbe, spawn: Spawn) -> None:
    """Once the process is killed the check fails with `process.down`."""
    mark = marker()
    p = sleeper(spawn, mark)
    assert (await run_probe({"type": "process", "match": mark})).ok
    p.kill()
    p.wait()
    r = await run_probe({"type": "process", "match": mark})
    assert not r.ok
    assert r.symptoms == ("process.down",)
    assert r.values["count"] == 0
    assert r.error and mark in r.error


async def test_min_count_counts_every_match(run_probe: RunProbe, spawn: Spawn) -> None:
    """Two workers pass min_count = 2; one of them is not enough for min_count = 3."""
    mark = marker()
    sleeper(spawn, mark)
    sleeper(spawn, mark)
    assert (await run_probe({"type": "process", "match": mark, "min_count": 2})).ok
    r = await run_probe({"type": "process", "match": mark, "min_count": 3})
    assert r.symptoms == ("process.down",) and r.values["count"] == 2


async def test_match_defaults_to_the_process_section(run_probe: RunProbe, spawn: Spawn) -> None:
    """A check without match, pidfile or process_name uses `[process] match`."""
    mark = marker()
    sleeper(spawn, mark)
    section = {"manager": "command", "start": ["true"], "match": mark}
    r = await run_probe({"type": "process"}, process=section)
    assert r.ok, r.error
    assert r.values["count"] == 1


def test_healer_and_its_ancestors_never_match(tmp_path: Path) -> None:
    """A match string in healer's own command line (and its parent's) finds nothing."""
    mark = marker()
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from healer.checks import probe_context, run_check
        from healer.config import parse_config

        async def main():
            check = {{"name": "p", "type": "process", "match": {mark!r}}}
            cfg = parse_config({{"checks": [check]}}, Path("healer.toml"))
            async with probe_context(cfg) as ctx:
                r = await run_check(ctx, cfg.checks[0])
            print(int(r.values["count"]))

        asyncio.run(main())
        """
    )
    # the probe runs in a child whose argv holds the marker, under a shell whose argv does too
    out = subprocess.run(
        ["sh", "-c", f'"$0" -c "$1" {mark}; : {mark}', sys.executable, code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.stdout.strip() == "0", out.stderr


async def test_pidfile_of_a_live_process_passes(run_probe: RunProbe, spawn: Spawn, tmp_path: Path) -> None:
    """A pidfile naming a live process that started before the file was written passes."""
    p = sleeper(spawn, marker())
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{p.pid}\n")
    r = await run_probe({"type": "process", "pidfile": str(pidfile)})
    assert r.ok, r.error
    assert r.values["count"] == 1


async def test_pidfile_includes_the_processes_children(run_probe: RunProbe, spawn: Spawn, tmp_path: Path) -> None:
    """The process from a pidfile is counted with its children (a master and its workers)."""
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    p = sleeper(spawn, marker(), code)
    time.sleep(0.2)
    children = psutil.Process(p.pid).children()
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(str(p.pid))
    try:
        r = await run_probe({"type": "process", "pidfile": str(pidfile)})
        assert r.ok, r.error
        assert r.values["count"] == 2
    finally:
        for child in children:
            child.kill()


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("reused", id="pid-reused-by-a-newer-process"),
        pytest.param("dead", id="process-gone"),
        pytest.param("missing", id="no-pidfile"),
        pytest.param("garbage", id="not-a-pid"),
    ],
)
async def test_stale_pidfile_is_down(run_probe: RunProbe, spawn: Spawn, tmp_path: Path, case: str) -> None:
    """A pidfile whose PID is gone, reused by a newer process, or unreadable means down."""
    pidfile = tmp_path / "app.pid"
    if case == "reused":
        p = sleeper(spawn, marker())
        pidfile.write_text(str(p.pid))
        an_hour_ago = time.time() - 3600
        os.utime(pidfile, (an_hour_ago, an_hour_ago))  # written long before this process started
    elif case == "dead":
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        pidfile.write_text(str(p.pid))
    elif case == "garbage":
        pidfile.write_text("not a pid")
    r = await run_probe({"type": "process", "pidfile": str(pidfile)})
    assert not r.ok
    assert r.symptoms == ("process.down",)
    assert r.error and "pidfile" in r.error


async def test_process_name_matches_the_executable(run_probe: RunProbe, spawn: Spawn, tmp_path: Path) -> None:
    """process_name finds a process by its executable's name."""
    name = f"hs{uuid.uuid4().hex[:8]}"
    exe = tmp_path / name
    exe.symlink_to("/bin/sleep")
    spawn(str(exe), "60")
    r = await run_probe({"type": "process", "process_name": name})
    assert r.ok, r.error
    assert r.values["count"] == 1


async def test_memory_over_max_rss_is_a_symptom(run_probe: RunProbe, spawn: Spawn) -> None:
    """RSS over max_rss fails the check with `process.memory`."""
    mark = marker()
    sleeper(spawn, mark)
    r = await run_probe({"type": "process", "match": mark, "max_rss": "1MB"})
    assert not r.ok
    assert r.symptoms == ("process.memory",)


async def test_cpu_over_max_cpu_percent_is_a_symptom(run_probe: RunProbe, spawn: Spawn) -> None:
    """A busy process over max_cpu_percent fails the check with `process.cpu`."""
    mark = marker()
    sleeper(spawn, mark, "import time\nend = time.time() + 30\nwhile time.time() < end: pass")
    r = await run_probe({"type": "process", "match": mark, "max_cpu_percent": 5})
    assert not r.ok
    assert r.symptoms == ("process.cpu",)
    assert r.values["cpu_percent"] > 5


# ---- what a match finds --------------------------------------------------------------------------


def found(pid: int, pgid: int | None) -> Match:
    return Match(pid=pid, cmdline=f"gunicorn shop {pid}", pgid=pgid, sid=pgid)


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        pytest.param([], None, id="nothing"),
        pytest.param([found(101, 101)], None, id="one-process"),
        pytest.param([found(101, 101), found(102, 101), found(103, 101)], None, id="master-and-workers"),
        pytest.param([found(101, 101), found(102, 101), found(201, 201)],
                     "match 'shop' finds 2 separate process groups (pids 101, 102; 201): make it more specific",
                     id="two-copies"),
    ],
)  # fmt: skip
def test_split_groups_warns_when_a_match_finds_two_copies(matches: list[Match], expected: str | None) -> None:
    """More than one process group behind one match string is a warning naming the PIDs."""
    assert split_groups("match 'shop'", matches) == expected


def test_healer_check_shows_what_a_process_check_matched_and_warns_of_two_groups(tmp_path: Path) -> None:
    """`healer check` lists each matched PID and command line, and two copies of the app (two
    process groups) under one match string are a warning, in the table's output and in --json."""
    mark = marker()
    copies = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", mark], start_new_session=True)
        for _ in range(2)
    ]
    try:
        config = write_config(
            tmp_path,
            f"""
            state_dir = "state"
            [app]
            name = "shop"
            [[checks]]
            name = "app"
            type = "process"
            match = "{mark}"
            min_count = 1
            """,
        )
        text = healer("--config", str(config), "check")
        assert text.returncode == 0, text.stdout + text.stderr
        for p in copies:
            assert f"app matched: pid {p.pid} (group {p.pid}): {sys.executable} -c" in text.stdout
        pids = "; ".join(str(p.pid) for p in sorted(copies, key=lambda p: p.pid))
        warning = f"checks[0] (app) match '{mark}' finds 2 separate process groups (pids {pids}): make it more specific"
        assert f"warning: {warning}" in " ".join(text.stdout.split())

        data = json.loads(healer("--config", str(config), "check", "--json").stdout)
        (result,) = data["results"]
        assert sorted(m["pid"] for m in result["matched"]) == sorted(p.pid for p in copies)
        assert all(mark in m["cmdline"] for m in result["matched"])
        assert data["warnings"] == [warning]
    finally:
        for p in copies:
            p.kill()
            p.wait(timeout=5)
