"""Which processes are the app (healer/processes.py), against real child processes: the
process check and the restart pick the same ones, and never healer itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from healer import processes
from healer.actions import process as proc_actions
from healer.actions.process import ProcessRestartStep
from healer.checks import probe_context, run_check
from healer.checks.process import matched, target
from healer.config import Config, parse_config

# The app: a master that writes its pidfile (argv[2], when given) and starts one worker; both
# carry the marker (argv[1]) in their command lines. SIGTERM ends the master; the worker with it.
_APP = """\
import os, signal, subprocess, sys, time
marker, pidfile = sys.argv[1], sys.argv[2]
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker + "-worker"])
def stop(*_):
    worker.terminate()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
if pidfile:
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pidfile + ".tmp", pidfile)
print("up", flush=True)
time.sleep(300)
"""
# Holds healer's run lock in the state dir, with the marker in its command line: healer, to any
# finder, whatever its command line says.
_LOCK_HOLDER = """\
import sys, time
from pathlib import Path
from healer.locks import FileLock
with FileLock(Path(sys.argv[1]) / "healer.lock", "healer run"):
    print("up", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def marker() -> Iterator[str]:
    """A fresh marker; every process carrying it is killed after the test."""
    mark = f"finder-{uuid.uuid4().hex[:12]}"
    yield mark
    for f in processes.find(mark, None)[0]:
        p = processes.handle(f)
        if p is not None:
            p.kill()


def _started(argv: list[str]) -> subprocess.Popen[str]:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline() == "up\n"
    p.stdout.close()
    return p


def _config(tmp_path: Path, mark: str, pidfile: Path | None) -> Config:
    start = [sys.executable, "-c", _APP, mark, str(pidfile or "")]
    section = {"manager": "command", "start": start, "match": mark, "stop_timeout": "5s", "start_timeout": "10s"}
    if pidfile is not None:
        section["pidfile"] = str(pidfile)
        del section["match"]
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "checks": [{"name": "app", "type": "process", "timeout": "5s"}],  # [process]'s target
            "process": section,
        },
        tmp_path / "healer.toml",
    )


@pytest.mark.parametrize("by", ["match", "pidfile"])
async def test_the_check_and_the_restart_pick_the_same_processes(tmp_path: Path, marker: str, by: str) -> None:
    """The process check counts exactly the processes a restart then stops: the master and its
    worker, never a lock holder of healer's whose command line carries the same marker."""
    pidfile = tmp_path / "app.pid" if by == "pidfile" else None
    config = _config(tmp_path, marker, pidfile)
    (tmp_path / "state").mkdir(mode=0o700)
    holder = _started([sys.executable, "-c", _LOCK_HOLDER, str(tmp_path / "state"), marker])
    app = _started(config.process.start)  # type: ignore[union-attr, arg-type]
    try:
        deadline = time.monotonic() + 10
        while not (workers := processes.find(marker + "-worker", None)[0]):
            assert time.monotonic() < deadline, "the worker did not start"
            await asyncio.sleep(0.05)
        (worker,) = (f.pid for f in workers)

        check = config.checks[0]
        seen = {m.pid for m in matched(*target(check, config), config.state_dir)}  # type: ignore[arg-type]
        async with probe_context(config) as ctx:
            result = await run_check(ctx, check)
        assert seen == {app.pid, worker}
        assert result.values["count"] == 2, result.error

        detail = await proc_actions.restart(ProcessRestartStep(action="process.restart"), config)
        stopped = re.match(r"stopped pid ([\d, ]+) \(", detail)
        assert stopped is not None, detail
        assert {int(p) for p in stopped.group(1).split(", ")} == seen
        assert holder.poll() is None  # healer's lock holder was left alone
        assert app.wait(10) == 0
    finally:
        holder.kill()
        holder.wait(5)
        app.kill()
        app.wait(5)


def test_healer_and_its_parents_never_match(tmp_path: Path) -> None:
    """A match string in healer's own command line and its parent's finds neither, only the app."""
    marker = f"healer-self-{uuid.uuid4().hex[:12]}"
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    child_code = (
        "import json, sys; from healer.processes import find; "
        f"print(json.dumps([f.pid for f in find({marker!r}, None)[0]]))"
    )
    parent_code = (
        "import subprocess, sys; "
        f"out = subprocess.run([sys.executable, '-c', {child_code!r}, {marker!r}], capture_output=True, text=True); "
        "print(out.stdout)"
    )
    try:
        out = subprocess.run([sys.executable, "-c", parent_code, marker], capture_output=True, text=True, timeout=30)
        assert json.loads(out.stdout.strip()) == [sibling.pid], out.stderr
    finally:
        sibling.kill()
        sibling.wait()


def test_a_pidfile_naming_a_reused_pid_finds_nothing(tmp_path: Path) -> None:
    """A process started after the pidfile was written is not the one that wrote it."""
    pidfile = tmp_path / "app.pid"
    pidfile.write_text("0\n")
    old = time.time() - 3600
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pidfile.write_text(f"{late.pid}\n")
        assert processes.find(None, pidfile)[0] != []
        os.utime(pidfile, (old, old))  # written an hour before the process started
        assert processes.find(None, pidfile)[0] == []
    finally:
        late.kill()
        late.wait()


# ---- never healer itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        pytest.param(["/usr/local/bin/healer", "--config", "/srv/shop/healer.toml", "run"], True, id="script"),
        pytest.param(["/venv/bin/python3", "/venv/bin/healer", "run"], True, id="script-via-shebang"),
        pytest.param(["python3.11", "-m", "healer", "--config", "shop.toml", "run"], True, id="python-m"),
        pytest.param(["python3", "-I", "-X", "dev", "-mhealer", "run"], True, id="python-m-joined-options"),
        pytest.param(["python3", "/opt/healer/__main__.py", "run"], True, id="main-py"),
        pytest.param(["python3", "-m", "healer.demo.sampleapp", "serve", "--repo", "/srv/shop"], False, id="sampleapp"),
        pytest.param(["python3", "-c", "import healer", "healer"], False, id="inline-code"),
        pytest.param(["python3", "/srv/shop/app.py", "--name", "healer"], False, id="app-named-healer-arg"),
        pytest.param(["/srv/shop/bin/shop", "--healer"], False, id="other-program"),
        pytest.param([], False, id="no-cmdline"),
    ],
)
def test_is_healer_knows_healers_command_lines(cmdline: list[str], expected: bool) -> None:
    """The healer script, python -m healer and healer's __main__.py are healer; its sample app is not."""
    assert processes.is_healer(cmdline) is expected


def test_a_lock_holder_in_the_state_dir_never_matches(tmp_path: Path) -> None:
    """A process holding a lock file in the state dir is healer, whatever its command line."""
    marker = f"healer-lock-{uuid.uuid4().hex[:12]}"
    state = tmp_path / "state"
    state.mkdir()
    code = (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.write(str(os.getpid())); f.flush(); print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(state / "healer.lock"), marker], stdout=subprocess.PIPE, text=True
    )
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert sorted(f.pid for f in processes.find(marker, None)[0]) == sorted([holder.pid, other.pid])
        assert [f.pid for f in processes.find(marker, None, None, state)[0]] == [other.pid]
    finally:
        for p in (holder, other):
            p.kill()
            p.communicate()
