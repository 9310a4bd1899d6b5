"""healer.gitrepo against real git repositories built in tmp_path."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import make_repo_with_submodule

from healer import gitrepo
from healer.errors import GitError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def git(repo: Path, *args: str, at: datetime | None = None) -> str:
    """Run git in `repo` as a fixed person, at a fixed time when given."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    if at is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(at.timestamp())} +0000"
    out = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return out.stdout.decode().strip()


def commit(repo: Path, content: str, at: datetime) -> str:
    (repo / "app.txt").write_text(content + "\n")
    git(repo, "add", "app.txt")
    git(repo, "commit", "-q", "-m", content, at=at)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """release 1 (annotated stable-1, tagged later than release 2's commit), release 2
    (lightweight stable-2), bad release at HEAD on main, plus tags that are not stable."""
    path = tmp_path / "app"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    c1 = commit(path, "release 1", T0)
    c2 = commit(path, "release 2", T0 + timedelta(hours=1))
    git(path, "tag", "stable-2", c2)
    git(path, "tag", "-a", "-m", "one", "stable-1", c1, at=T0 + timedelta(hours=2))
    commit(path, "bad release", T0 + timedelta(hours=3))
    git(path, "tag", "v3")
    tree = git(path, "rev-parse", "HEAD^{tree}")
    git(path, "tag", "stable-tree", tree)  # a tag of a tree marks no commit
    return path


def test_stable_tags_match_the_glob_newest_first_by_tagger_or_commit_date(repo: Path) -> None:
    """An annotated tag is dated by its tagger, a lightweight one by its commit; others are out."""
    tags = gitrepo.stable_tags(repo, "stable-*")
    assert [t.name for t in tags] == ["stable-1", "stable-2"]
    assert tags[0].date == T0 + timedelta(hours=2)
    assert tags[1].date == T0 + timedelta(hours=1)
    assert tags[0].commit == git(repo, "rev-parse", "stable-1^{commit}")
    assert tags[1].commit == git(repo, "rev-parse", "stable-2")
    assert gitrepo.stable_tags(repo, "nothing-*") == []


def test_stable_tags_of_the_same_second_order_numbers_as_numbers(repo: Path) -> None:
    """stable-10 is newer than stable-9 when both carry the same date."""
    for n in (9, 10):
        git(repo, "tag", "-a", "-m", "x", f"rel-{n}", "HEAD", at=T0)
    assert [t.name for t in gitrepo.stable_tags(repo, "rel-*")] == ["rel-10", "rel-9"]


def test_a_tag_of_a_tag_is_peeled_to_its_commit(repo: Path) -> None:
    """A tag that points at another annotated tag still marks the commit underneath."""
    git(repo, "tag", "-a", "-m", "again", "stable-again", "stable-1", at=T0 + timedelta(hours=5))
    tags = {t.name: t for t in gitrepo.stable_tags(repo, "stable-*")}
    assert tags["stable-again"].commit == tags["stable-1"].commit


def test_resolve_names_a_commit_or_says_unknown_ref(repo: Path) -> None:
    """Tags, branches and short SHAs resolve to full SHAs; anything else is `unknown ref`."""
    full = git(repo, "rev-parse", "stable-2")
    assert gitrepo.resolve(repo, "stable-2") == full
    assert gitrepo.resolve(repo, full[:8]) == full
    assert gitrepo.resolve(repo, "stable-1") == git(repo, "rev-parse", "stable-1^{commit}")
    for bad in ("stabel-2", "--help", "-n1", ""):
        with pytest.raises(GitError, match="unknown ref"):
            gitrepo.resolve(repo, bad)


def test_untracked_files_do_not_make_the_tree_dirty(repo: Path) -> None:
    """Logs and .env files nobody commits do not block a rollback; edited tracked files do."""
    (repo / "server.log").write_text("x")
    assert not gitrepo.is_dirty(repo)
    assert gitrepo.changed_files(repo) == []
    (repo / "app.txt").write_text("hotfix\n")
    assert gitrepo.is_dirty(repo)
    assert gitrepo.changed_files(repo) == ["app.txt"]
    git(repo, "add", "app.txt")
    assert gitrepo.changed_files(repo) == ["app.txt"]


def test_checkout_detaches_at_the_commit_and_an_unknown_ref_changes_nothing(repo: Path) -> None:
    """HEAD ends detached at the tag's commit; a typo leaves HEAD and the branch alone."""
    before = gitrepo.head_commit(repo)
    with pytest.raises(GitError, match="unknown ref 'stable-9'"):
        gitrepo.checkout(repo, "stable-9")
    assert gitrepo.head_commit(repo) == before
    assert gitrepo.current_branch(repo) == "main"
    sha = gitrepo.checkout(repo, "stable-2")
    assert sha == gitrepo.head_commit(repo) == git(repo, "rev-parse", "stable-2")
    assert gitrepo.current_branch(repo) is None
    assert (repo / "app.txt").read_text() == "release 2\n"


def test_checkout_that_would_overwrite_local_changes_is_a_one_line_git_error(repo: Path) -> None:
    """git's own refusal comes back as one line naming the ref and git's reason, not "Aborting"."""
    (repo / "app.txt").write_text("hotfix\n")
    with pytest.raises(GitError) as err:
        gitrepo.checkout(repo, "stable-2")
    short = git(repo, "rev-parse", "--short=7", "stable-2")
    assert str(err.value) == (
        f"{repo}: cannot check out stable-2 ({short}): "
        "Your local changes to the following files would be overwritten by checkout: app.txt"
    )
    assert (repo / "app.txt").read_text() == "hotfix\n"


def test_checkout_that_would_overwrite_untracked_files_names_them(repo: Path) -> None:
    """A file the target tracks but the tree holds untracked: git's reason lists it, HEAD stays."""
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "rm", "-q", "--cached", "app.txt")
    git(repo, "commit", "-q", "-m", "untrack app.txt", at=T0 + timedelta(hours=4))
    (repo / "app.txt").write_text("a file of the server's own\n")
    with pytest.raises(GitError, match=r"The following untracked working tree files would be overwritten by checkout: "
                       r"app.txt$"):  # fmt: skip
        gitrepo.checkout(repo, head)
    assert (repo / "app.txt").read_text() == "a file of the server's own\n"


def test_checkout_brings_submodules_to_the_commits_the_target_recorded(tmp_path: Path) -> None:
    """Back at stable-1, the submodule is at stable-1's commit of it and git status is empty."""
    app = make_repo_with_submodule(tmp_path)
    assert git(app.lib, "rev-parse", "HEAD") == app.lib_new
    assert gitrepo.checkout(app.path, "stable-1") == app.stable
    assert git(app.lib, "rev-parse", "HEAD") == app.lib_old
    assert git(app.path, "status", "--porcelain") == ""
    assert gitrepo.changed_files(app.path) == []
    assert gitrepo.checkout(app.path, app.bad) == app.bad  # and forward again
    assert git(app.lib, "rev-parse", "HEAD") == app.lib_new
    assert git(app.path, "status", "--porcelain") == ""


def test_a_checkout_that_leaves_the_tree_unclean_is_a_git_error_saying_what(tmp_path: Path) -> None:
    """A submodule that stays behind (update = none) fails the checkout, naming it; HEAD has moved."""
    app = make_repo_with_submodule(tmp_path)
    git(app.path, "config", "submodule.lib.update", "none")
    with pytest.raises(GitError) as err:
        gitrepo.checkout(app.path, "stable-1")
    assert str(err.value) == (
        f"{app.path}: checked out stable-1 ({app.stable[:7]}) but the work tree is not clean: "
        "lib (submodule not at its recorded commit)"
    )
    assert gitrepo.head_commit(app.path) == app.stable


def test_a_submodule_with_changed_files_is_not_clean(tmp_path: Path) -> None:
    """Edits inside a submodule that the checkout carries along are named too."""
    app = make_repo_with_submodule(tmp_path)
    (app.lib / "extra.txt").write_text("tracked in lib\n")
    git(app.lib, "add", "extra.txt")  # staged in the submodule: changed content, kept by its checkout
    with pytest.raises(GitError, match=r"the work tree is not clean: lib \(submodule with changed files\)$"):
        gitrepo.checkout(app.path, "stable-1")


def test_create_tag_is_annotated_with_the_reason_and_never_twice(repo: Path) -> None:
    """The tag carries its message and date; creating it again is an error."""
    head = gitrepo.head_commit(repo)
    when = T0 + timedelta(days=1)
    tag = gitrepo.create_tag(repo, "stable-healer-x", head, "healthy for 6h", date=when)
    assert tag == gitrepo.TagInfo("stable-healer-x", head, when)
    assert git(repo, "cat-file", "-t", "stable-healer-x") == "tag"
    subject = git(repo, "tag", "-l", "--format=%(contents:subject)", "stable-healer-x")
    assert subject == "healthy for 6h"
    assert gitrepo.stable_tags(repo, "stable-*")[0] == tag
    with pytest.raises(GitError, match="already exists"):
        gitrepo.create_tag(repo, "stable-healer-x", head, "again")
    with pytest.raises(GitError, match="not a valid tag name"):
        gitrepo.create_tag(repo, "bad..name", head, "x")


def test_create_tag_works_where_git_has_no_identity(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy user without user.name/user.email still gets healer's tag, signed as healer."""
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("EMAIL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # git guesses an identity from the host name where it can; healer steps in where it cannot
    guessed = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=repo, capture_output=True)
    head = gitrepo.head_commit(repo)
    gitrepo.create_tag(repo, "stable-x", head, "why")
    tagger = subprocess.run(
        ["git", "tag", "-l", "--format=%(taggername)", "stable-x"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if guessed.returncode != 0:
        assert tagger == "healer"


def test_stash_puts_local_changes_aside(repo: Path) -> None:
    """The tree is clean after a stash, and `git stash pop` would bring the change back."""
    assert gitrepo.stash(repo, "nothing") is None
    (repo / "app.txt").write_text("hotfix\n")
    sha = gitrepo.stash(repo, "healer: before rollback")
    assert sha is not None and sha == git(repo, "rev-parse", "refs/stash")
    assert not gitrepo.is_dirty(repo)
    assert "healer: before rollback" in git(repo, "stash", "list")


def test_is_ancestor(repo: Path) -> None:
    """stable-2 comes before HEAD; HEAD does not come before stable-2."""
    assert gitrepo.is_ancestor(repo, "stable-2", "HEAD")
    assert not gitrepo.is_ancestor(repo, "HEAD", "stable-2")


def test_a_directory_that_is_not_a_repo_is_a_git_error(tmp_path: Path) -> None:
    """The message names the path and the config key."""
    with pytest.raises(GitError, match=r"not a git work tree \(\[app\] repo\)"):
        gitrepo.stable_tags(tmp_path, "stable-*")
    with pytest.raises(GitError, match="no such directory"):
        gitrepo.head_commit(tmp_path / "missing")
    assert gitrepo.head_commit(None) == gitrepo.NO_REPO
