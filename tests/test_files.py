"""Private files: the state dir is 0700 and every file in it 0600 under any umask, from the
helpers up to a real `healer run`, `healer repair` and `healer rollback`."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
import pytest
from helpers import HEALER, commit, git, make_repo, write_config
from services import free_port, wait_for_port

from healer.files import private_dir

UMASKS = [pytest.param(0o022, id="umask-022"), pytest.param(0o000, id="umask-000")]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(state: Path) -> dict[str, int]:
    """Every entry under `state` (recursively) with its permission bits, the dir itself as "."."""
    found = {".": mode(state)}
    for p in state.rglob("*"):
        found[str(p.relative_to(state))] = mode(p)
    return found


def assert_private(state: Path) -> None:
    found = modes(state)
    wrong = {
        name: oct(m) for name, m in found.items() if m != (0o700 if name == "." or (state / name).is_dir() else 0o600)
    }
    assert not wrong, f"not private: {wrong} (all: { {n: oct(m) for n, m in found.items()} })"


def child(umask: int, *argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a child process under `umask`, no terminal."""
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, umask=umask,
    )  # fmt: skip


# ---- the helpers -------------------------------------------------------------------------------

HELPERS = """\
import sys
from pathlib import Path
from healer.files import make_private, open_private, private_dir
from healer.store import Store

state = private_dir(Path(sys.argv[1]))
with open_private(state / "a.lock", "a+") as f:
    f.write("1")
with open_private(state / "b.log", "ab") as f:
    f.write(b"x")
make_private(state / "c.log")
store = Store(state / "healer.db")
# -wal and -shm exist only while a connection is open: list them now
print(" ".join(sorted(p.name for p in state.iterdir())), flush=True)
print(" ".join(oct(p.stat().st_mode & 0o777) for p in sorted(state.iterdir())), flush=True)
store.close()
"""


@pytest.mark.parametrize("umask", UMASKS)
def test_the_helpers_and_the_store_make_a_private_dir_of_private_files(tmp_path: Path, umask: int) -> None:
    """Whatever the umask, the dir is 0700 and the files, -wal and -shm included, 0600."""
    state = tmp_path / "deep" / "state"
    out = child(umask, sys.executable, "-c", HELPERS, str(state), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names, perms = out.stdout.split("\n")[:2]
    assert names.split() == ["a.lock", "b.log", "c.log", "healer.db", "healer.db-shm", "healer.db-wal"]
    assert set(perms.split()) == {"0o600"}
    assert_private(state)


def test_an_existing_state_dir_and_its_files_are_tightened(tmp_path: Path) -> None:
    """A state dir left 0755 with a 0644 database by an older healer becomes 0700 and 0600."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    for name in ("healer.db", "healer.db-wal", "healer.db-shm"):
        (state / name).touch()
        (state / name).chmod(0o644)
    script = "import sys, pathlib; from healer.db import Database; Database(pathlib.Path(sys.argv[1])).close()"
    out = child(0o022, sys.executable, "-c", script, str(state / "healer.db"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert_private(state)


def test_a_shared_world_writable_dir_is_refused_not_locked_away(tmp_path: Path) -> None:
    """A sticky, world-writable dir (like /tmp) as state_dir is an error, and keeps its mode."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(PermissionError, match="shared, world-writable directory"):
        private_dir(shared)
    assert mode(shared) == 0o1777


# ---- a real healer -----------------------------------------------------------------------------


@pytest.fixture
def app_marker(tmp_path: Path) -> Iterator[str]:
    """A unique word in the test app's command line; every process carrying it is killed after."""
    marker = f"healer-files-app-{os.getpid()}-{time.monotonic_ns()}"
    yield marker
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or ()):
            p.kill()


def setup(tmp_path: Path, marker: str, port: int) -> tuple[Path, Path]:
    """An app repo (stable-1, then a bad commit at HEAD), a static HTTP app that
    `[process]` starts, and a healer.toml with a fast schedule and an `after` command."""
    repo = make_repo(tmp_path / "app")
    git(repo, "tag", "stable-1")
    commit(repo, "bad")
    site = tmp_path / marker
    site.mkdir()
    start = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)]
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        stable_tags = "stable-*"
        [schedule]
        phases = [{{ until = "1h", every = "200ms" }}]
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:{port}/"
        timeout = "1s"
        samples = 1
        [process]
        manager = "command"
        start = {_toml_list(start)}
        match = "{marker}"
        stop_timeout = "3s"
        [rollback]
        after = [["sh", "-c", "echo restarted"]]
        command_timeout = "10s"
        verify_grace = "0s"
        """,
    )
    return config, tmp_path / "state"


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def wait_for(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.e2e
@pytest.mark.parametrize("umask", UMASKS)
@pytest.mark.parametrize("existing", [pytest.param(False, id="new-dir"), pytest.param(True, id="open-dir")])
def test_repair_run_and_rollback_leave_only_private_files(
    tmp_path: Path, app_marker: str, umask: int, existing: bool
) -> None:
    """`healer repair`, `healer run` (stopped by SIGTERM) and `healer rollback` under `umask`
    leave the state dir 0700 and every file in it 0600: db, -wal, -shm, locks, logs, app.log."""
    port = free_port()
    config, state = setup(tmp_path, app_marker, port)
    if existing:  # as an older healer, or a person's mkdir, left it
        state.mkdir()
        state.chmod(0o777)
    base = [*HEALER, "--config", str(config)]

    repaired = child(umask, *base, "repair", "process-restart", "--yes", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert wait_for_port(port)
    assert (state / "app.log").exists() and (state / "repair-process-restart.lock").exists()
    assert_private(state)

    run = subprocess.Popen(
        [*base, "run"], cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, umask=umask,
    )  # fmt: skip
    try:
        # -wal and -shm exist while healer holds the database open: look at them then
        wait_for(lambda: (state / "healer.db-wal").exists() and (state / "healer.db-shm").exists())
        time.sleep(0.5)  # a few cycles written
        assert_private(state)
        assert {"healer.lock", "healer.db", "healer.db-wal", "healer.db-shm"} <= set(modes(state))
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=20)
    assert run.returncode == 0, err
    assert_private(state)

    rolled = child(umask, *base, "rollback", "--to", "stable-1", "--reason", "bad release", "--yes", cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    logs = sorted(p.name for p in state.glob("rollback-*.log"))
    assert logs and "rollback.lock" in modes(state)
    assert "restarted" in (state / logs[-1]).read_text()
    assert_private(state)


def test_a_read_only_command_creates_no_file_and_leaves_the_cwd_alone(tmp_path: Path) -> None:
    """`healer rollback --dry-run` before any state exists keeps its store in memory: the cwd
    keeps its mode, and no state dir or stray file appears."""
    repo = make_repo(tmp_path / "app")
    git(repo, "tag", "stable-1")
    commit(repo, "bad")
    config = write_config(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        repo = "{repo}"
        [[checks]]
        name = "ok"
        type = "command"
        argv = ["true"]
        """,
    )
    tmp_path.chmod(0o755)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = child(0o022, *HEALER, "--config", str(config), "rollback", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert mode(tmp_path) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == before
