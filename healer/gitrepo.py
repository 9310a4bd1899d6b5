"""The app's git work tree; the only module that imports git (I/O, blocking: call it from a thread).

gitpython shells out to git with argv lists, never a shell string; its errors become GitError
with git's own one-line reason: `/srv/shop: unknown ref "stabel-2"`.
"""

from __future__ import annotations

import fnmatch
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import git

from healer.errors import GitError
from healer.model import TagInfo, short

NO_REPO = "unversioned"  # the deploy key when [app] repo is not set

# The identity healer signs its own tags and stashes with when the repository has none
# (a deploy user on a server often has no user.name / user.email).
_FALLBACK_NAME = "healer"
_FIELD_SEP = "\x1f"
_NATURAL_RE = re.compile(r"(\d+)")
_READ_ONLY = {"GIT_OPTIONAL_LOCKS": "0"}  # no opportunistic index refresh: a dry run writes nothing
# git's advice after its reason ("Aborting", what to do next): it says nothing about this tree
_ADVICE = ("Aborting", "Please commit your changes", "Please move or remove them", "hint:")
_SHOWN = 5  # files named in one message; the rest are counted


@contextmanager
def _opened(path: Path) -> Iterator[git.Repo]:
    try:
        repo = git.Repo(path)
    except git.NoSuchPathError:
        raise GitError(f"{path}: no such directory ([app] repo)") from None
    except git.InvalidGitRepositoryError:
        raise GitError(f"{path}: not a git work tree ([app] repo)") from None
    try:
        yield repo
    finally:
        repo.close()


def _reason(e: git.GitCommandError) -> str:
    """git's own complaint, one line: the meaningful lines of its stderr, without "error: ",
    its advice ("Aborting") and with the files listed under a line folded into it:
    `Your local changes to the following files would be overwritten by checkout: app.txt`."""
    text = e.stderr if isinstance(e.stderr, str) else str(e.stderr or "")
    text = text.strip()
    if text.startswith("stderr: "):
        text = text[len("stderr: ") :].strip()
        if len(text) >= 2 and text[0] == text[-1] == "'":
            text = text[1:-1]
    parts: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_ADVICE):
            continue
        if raw[:1] in " \t" and parts:  # git indents the files a line introduces
            parts[-1][1].append(line)
            continue
        parts.append((line.removeprefix("error: ").removeprefix("fatal: "), []))
    if not parts:
        return f"git exited with status {e.status}"
    return "; ".join(f"{head.rstrip(':')}: {_listed(files)}" if files else head for head, files in parts)


def _listed(items: list[str]) -> str:
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _git(repo: git.Repo, path: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `git ARGS` in the work tree and return its stdout; failures become GitError."""
    try:
        out = repo.git.execute(["git", *args], env=dict(env) if env else None)
    except git.GitCommandError as e:
        raise GitError(f"{path}: git {args[0]} failed: {_reason(e)}") from None
    except OSError as e:
        raise GitError(f"{path}: cannot run git: {e.strerror}") from None
    return str(out)


def _check_ref(ref: str) -> None:
    # a ref that starts with "-" would be read by git as an option
    if not ref or ref.startswith("-") or any(c in ref for c in "\0\n\r"):
        raise GitError(f"unknown ref {ref!r}")


def _resolve(repo: git.Repo, path: Path, ref: str) -> str:
    _check_ref(ref)
    try:
        out = repo.git.execute(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"])
    except git.GitCommandError:
        raise GitError(f"{path}: unknown ref {ref!r} (expected a tag, branch or commit)") from None
    return str(out).strip()


def head_commit(path: Path | None) -> str:
    """The full SHA of HEAD, or NO_REPO when no repository is configured."""
    if path is None:
        return NO_REPO
    with _opened(path) as repo:
        try:
            return repo.head.commit.hexsha
        except (ValueError, git.GitCommandError) as e:
            raise GitError(f"{path}: cannot read HEAD ({e})") from None


def current_branch(path: Path) -> str | None:
    """The branch HEAD is on, or None when HEAD is detached."""
    with _opened(path) as repo:
        try:
            return _git(repo, path, "symbolic-ref", "--quiet", "--short", "HEAD") or None
        except GitError:
            return None


def resolve(path: Path, ref: str) -> str:
    """The full SHA of the commit `ref` (tag, branch, SHA, HEAD~1 ...) names; GitError if none."""
    with _opened(path) as repo:
        return _resolve(repo, path, ref)


def subject(path: Path, ref: str) -> str:
    """The first line of the commit message of `ref`."""
    with _opened(path) as repo:
        sha = _resolve(repo, path, ref)
        return _git(repo, path, "log", "-1", "--format=%s", sha)


def is_dirty(path: Path) -> bool:
    """Whether tracked files differ from HEAD (staged or not).

    Untracked files do not count: a checkout leaves them alone (git refuses on its own when one
    would be overwritten), and a server's work tree often holds logs, .env files or healer's
    own state directory that nobody commits.
    """
    return bool(changed_files(path))


def changed_files(path: Path) -> list[str]:
    """The tracked files that differ from HEAD, staged or not (read-only: unlike `git status`,
    `git diff` never rewrites the index)."""
    with _opened(path) as repo:
        out = _git(repo, path, "diff", "--name-only", "--no-renames", "-z", "HEAD", env=_READ_ONLY)
    return [f for f in out.split("\0") if f]


def stable_tags(path: Path, pattern: str) -> list[TagInfo]:
    """Tags whose name matches the glob `pattern` and that mark a commit, newest first.

    Newest means the tagger date of an annotated tag, else the date of the tagged commit; tags
    of the same second are ordered by name, numbers compared as numbers (stable-10 > stable-9).
    """
    fmt = _FIELD_SEP.join(
        ["%(refname:strip=2)", "%(objecttype)", "%(objectname)", "%(creatordate:unix)",
         "%(*objecttype)", "%(*objectname)"]
    )  # fmt: skip
    with _opened(path) as repo:
        out = _git(repo, path, "for-each-ref", f"--format={fmt}", "refs/tags")
        tags: list[TagInfo] = []
        for line in out.splitlines():
            fields = line.split(_FIELD_SEP)
            if len(fields) != 6:
                continue
            name, kind, sha, when, peeled_kind, peeled = fields
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            if kind == "commit":
                commit = sha
            elif kind == "tag" and peeled_kind == "commit":
                commit = peeled
            elif kind == "tag":  # a tag of a tag: peel it all the way, or skip a tag of a tree
                try:
                    commit = _resolve(repo, path, f"refs/tags/{name}")
                except GitError:
                    continue
            else:
                continue
            try:
                date = datetime.fromtimestamp(int(when), UTC)
            except ValueError:
                date = datetime.fromtimestamp(0, UTC)
            tags.append(TagInfo(name=name, commit=commit, date=date))
    tags.sort(key=lambda t: (t.date, _natural(t.name)), reverse=True)
    return tags


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _NATURAL_RE.split(name) if p)


def tags_at(path: Path, commit: str, pattern: str) -> list[str]:
    """Names of the tags matching `pattern` that mark `commit`."""
    return [t.name for t in stable_tags(path, pattern) if t.commit == commit]


def _ident_env(repo: git.Repo, path: Path, date: datetime | None) -> dict[str, str]:
    """Environment for git commands that create objects: healer's identity when the repository
    has none, and the object date when given."""
    env: dict[str, str] = {}
    try:
        repo.git.execute(["git", "var", "GIT_COMMITTER_IDENT"])
    except git.GitCommandError:
        env["GIT_COMMITTER_NAME"] = env["GIT_AUTHOR_NAME"] = _FALLBACK_NAME
        email = f"healer@{socket.gethostname() or 'localhost'}"
        env["GIT_COMMITTER_EMAIL"] = env["GIT_AUTHOR_EMAIL"] = email
    if date is not None:
        stamp = f"@{int(date.timestamp())} +0000"
        env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"] = stamp
    return env  # gitpython adds these to its own copy of os.environ


def create_tag(path: Path, name: str, commit: str, message: str, *, date: datetime | None = None) -> TagInfo:
    """Create the annotated tag `name` on `commit` with `message` saying why; GitError when the
    tag exists already or the name is not a valid tag name."""
    _check_ref(name)
    with _opened(path) as repo:
        try:
            repo.git.execute(["git", "check-ref-format", f"refs/tags/{name}"])
        except git.GitCommandError:
            raise GitError(f"{path}: {name!r} is not a valid tag name") from None
        sha = _resolve(repo, path, commit)
        try:
            repo.git.execute(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{name}"])
        except git.GitCommandError:
            pass
        else:
            raise GitError(f"{path}: tag {name!r} already exists")
        try:
            repo.git.execute(
                ["git", "tag", "--annotate", f"--message={message}", "--", name, sha],
                env=_ident_env(repo, path, date),
            )
        except git.GitCommandError as e:
            raise GitError(f"{path}: cannot create tag {name!r}: {_reason(e)}") from None
    when = date if date is not None else datetime.now(UTC)
    return TagInfo(name=name, commit=sha, date=when.astimezone(UTC).replace(microsecond=0))


def stash(path: Path, message: str) -> str | None:
    """Put the changes to tracked files aside (`git stash push`); returns the stash commit,
    or None when there was nothing to stash. `git stash pop` brings them back."""
    with _opened(path) as repo:
        before = _stash_top(repo)
        try:
            repo.git.execute(["git", "stash", "push", f"--message={message}"], env=_ident_env(repo, path, None))
        except git.GitCommandError as e:
            raise GitError(f"{path}: cannot stash the local changes: {_reason(e)}") from None
        after = _stash_top(repo)
        return after if after != before else None


def _stash_top(repo: git.Repo) -> str | None:
    try:
        out = repo.git.execute(["git", "rev-parse", "--verify", "--quiet", "refs/stash"])
        return str(out).strip() or None
    except git.GitCommandError:
        return None


def checkout(path: Path, ref: str) -> str:
    """Check out the commit `ref` names, detached, submodules included; returns its SHA.

    1. Resolve the ref to a commit, so an unknown ref changes nothing.
    2. `git checkout --detach`: git refuses on its own when local changes or untracked files
       would be overwritten; that becomes a GitError with git's reason, and HEAD has not moved.
    3. When the commit has submodules (a .gitmodules file), `git submodule update --init
       --recursive` puts each at the commit recorded there; a submodule healer has to fetch
       from a local path needs `protocol.file.allow = always` in the repository's git config
       (git refuses local submodule transports by default since 2.38.1, and healer does not
       weaken that default for the repository).
    4. Verify the work tree is clean: every tracked file as committed and every submodule at
       its recorded commit (untracked files do not count, as in `is_dirty`). Otherwise a
       GitError names what is not.
    A GitError from steps 3 and 4 comes after HEAD moved.
    """
    with _opened(path) as repo:
        sha = _resolve(repo, path, ref)
        where = short(sha) if ref == sha else f"{ref} ({short(sha)})"
        try:
            repo.git.execute(["git", "checkout", "--quiet", "--detach", sha])
        except git.GitCommandError as e:
            raise GitError(f"{path}: cannot check out {where}: {_reason(e)}") from None
        if _has_submodules(repo, sha):
            try:
                repo.git.execute(["git", "submodule", "--quiet", "update", "--init", "--recursive"])
            except git.GitCommandError as e:
                raise GitError(f"{path}: checked out {where} but cannot update its submodules: {_reason(e)}") from None
        unclean = _unclean(repo, path)
        if unclean:
            raise GitError(f"{path}: checked out {where} but the work tree is not clean: {_listed(unclean)}")
        return sha


def _has_submodules(repo: git.Repo, sha: str) -> bool:
    try:
        repo.git.execute(["git", "cat-file", "-e", f"{sha}:.gitmodules"])
    except git.GitCommandError:
        return False
    return True


def _unclean(repo: git.Repo, path: Path) -> list[str]:
    """Tracked files that differ from HEAD and submodules away from their recorded commit or
    with changed files inside, as `git status --porcelain=v2` reports them."""
    out = _git(repo, path, "status", "--porcelain=v2", "-z", "--untracked-files=no", "--ignore-submodules=untracked")
    found: list[str] = []
    entries = iter(out.split("\0"))
    for entry in entries:
        # "1 XY SUB mH mI mW hH hI PATH", "2 ... X-score PATH" + NUL + the old path, "u ... PATH"
        fields = {"1": 9, "2": 10, "u": 11}.get(entry[:1])
        if fields is None:
            continue
        parts = entry.split(" ", fields - 1)
        if entry[0] == "2":
            next(entries, None)
        sub, name = parts[2], parts[-1]
        if not sub.startswith("S"):
            found.append(name)
        elif sub[1] == "C":
            found.append(f"{name} (submodule not at its recorded commit)")
        else:
            found.append(f"{name} (submodule with changed files)")
    return found


def is_ancestor(path: Path, ancestor: str, descendant: str) -> bool:
    """Whether commit `ancestor` is reachable from `descendant` (`git merge-base --is-ancestor`)."""
    with _opened(path) as repo:
        a, d = _resolve(repo, path, ancestor), _resolve(repo, path, descendant)
        try:
            repo.git.execute(["git", "merge-base", "--is-ancestor", a, d])
        except git.GitCommandError as e:
            if e.status == 1:
                return False
            raise GitError(f"{path}: git merge-base failed: {_reason(e)}") from None
        return True
