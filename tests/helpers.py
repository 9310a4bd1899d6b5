"""Small helpers for the core tests: config files, git repos, `healer` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from healer.config import Config, load_config

HEALER = [sys.executable, "-m", "healer"]


def write_config(directory: Path, body: str, name: str = "healer.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def config_from(directory: Path, body: str) -> Config:
    return load_config(write_config(directory, body))


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_repo(path: Path) -> Path:
    """A real git repo with one commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    commit(path, "v1")
    return path


def commit(repo: Path, content: str) -> str:
    (repo / "app.txt").write_text(content)
    git(repo, "add", "app.txt")
    git(repo, "commit", "-q", "-m", content)
    return git(repo, "rev-parse", "HEAD")


@dataclass(frozen=True)
class SubmoduleRepo:
    """An app repo whose submodule `lib` was at `lib_old` at tag stable-1 (commit `stable`) and
    moved to `lib_new` in the bad release at HEAD (commit `bad`)."""

    path: Path
    stable: str
    bad: str
    lib_old: str
    lib_new: str

    @property
    def lib(self) -> Path:
        return self.path / "lib"


def make_repo_with_submodule(directory: Path) -> SubmoduleRepo:
    """A real superproject and a real submodule repository, both in `directory`."""
    origin = make_repo(directory / "lib-origin")
    lib_old = git(origin, "rev-parse", "HEAD")
    lib_new = commit(origin, "lib v2")
    app = make_repo(directory / "app")
    # git refuses local-path submodule transports unless told (CVE-2022-39253)
    git(app, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(origin), "lib")
    git(app / "lib", "checkout", "-q", lib_old)
    git(app, "add", "lib")
    stable = commit(app, "release 1 with lib v1")
    git(app, "tag", "stable-1")
    git(app / "lib", "checkout", "-q", lib_new)
    git(app, "add", "lib")
    bad = commit(app, "bad release with lib v2")
    return SubmoduleRepo(app, stable, bad, lib_old, lib_new)


def healer(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `healer` CLI in a child process, no terminal."""
    return subprocess.run(
        [*HEALER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def clone(origin: Path, into: Path) -> Path:
    """A host's own clone of the app's repository, with an identity to commit as."""
    git(into.parent, "clone", "-q", str(origin), str(into))
    git(into, "config", "user.email", "t@example.com")
    git(into, "config", "user.name", "t")
    return into


def stop_healer(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """Stop a `healer run` as its service manager would: SIGTERM, then SIGKILL past `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
