"""The app's git work tree; the only module that imports git (I/O).

gitpython shells out to git with argv lists, never a shell string; its errors become GitError.
"""

from __future__ import annotations

from pathlib import Path

import git

from healer.errors import GitError

NO_REPO = "unversioned"  # the deploy key when [app] repo is not set


def _open(path: Path) -> git.Repo:
    try:
        return git.Repo(path)
    except git.NoSuchPathError:
        raise GitError(f"{path}: no such directory ([app] repo)") from None
    except git.InvalidGitRepositoryError:
        raise GitError(f"{path}: not a git work tree ([app] repo)") from None


def head_commit(path: Path | None) -> str:
    """The full SHA of HEAD, or NO_REPO when no repository is configured."""
    if path is None:
        return NO_REPO
    repo = _open(path)
    try:
        return repo.head.commit.hexsha
    except (ValueError, git.GitCommandError) as e:
        raise GitError(f"{path}: cannot read HEAD ({e})") from None
    finally:
        repo.close()
