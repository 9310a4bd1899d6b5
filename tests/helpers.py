"""Small helpers for the core tests: config files, git repos, `healer` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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
