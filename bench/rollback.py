"""3. Rollback overhead: `healer rollback --yes --to TAG` against plain `git checkout TAG`, same 20,000-file repo.

The repository has two commits: `stable-1` (20,000 files) and the deploy at HEAD, which changes 200 of them
(rollback_ratio), or all of them (whole_tree_release). Runs alternate (healer, git, healer, git ...), HEAD is
put back on the deploy between runs (untimed, and settled), and the figure is the ratio of the medians.
healer's figure is the whole command a person runs: interpreter start-up and imports, config, the plan (git
reads), the journal, the checkout, the new deploy window, and the verification (one trivially fast command
check, verify_grace = "0s"); no `after` commands.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, child_env, log, median, run_healer, write

FILES = 20_000
PER_DIR = 100
RUNS = {200: 5, 20_000: 3}  # alternating runs of each, per variant (whole-tree checkouts are slow)
GOAL = 1.3


def _git(repo: Path, *args: str) -> str:
    env = {**child_env(), "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}  # fmt: skip
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def make_repo(repo: Path, changed: int) -> None:
    """20,000 files of a few hundred bytes in 200 directories, tagged stable-1; then a deploy changing `changed`."""
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "commit.gpgsign", "false")
    _git(repo, "config", "tag.gpgsign", "false")
    for i in range(FILES):
        d = repo / "src" / f"pkg{i // PER_DIR:03d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        (d / f"mod{i:05d}.py").write_text(f'"""module {i}"""\n\nVALUE = {i}\n' + "# filler line\n" * 20)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "release 1")
    _git(repo, "tag", "stable-1")
    step = max(1, FILES // changed)
    for i in range(0, FILES, step)[:changed]:
        path = repo / "src" / f"pkg{i // PER_DIR:03d}" / f"mod{i:05d}.py"
        path.write_text(path.read_text() + "VALUE += 1  # release 2\n")
    _git(repo, "commit", "-q", "-am", "release 2 (the bad deploy)")


def _measure(work: Path, changed: int, runs: int) -> dict[str, Any]:
    repo = work / f"repo-{changed}"
    make_repo(repo, changed)
    deploy = _git(repo, "rev-parse", "HEAD")
    config = write(
        work / f"healer-{changed}" / "healer.toml",
        f"""
        state_dir = "state"
        [app]
        name = "bench"
        repo = "{repo}"
        [[checks]]
        name = "alive"
        type = "command"
        argv = ["true"]
        [rollback]
        verify_grace = "0s"
        """,
    )

    def healer() -> float:
        wall, out = run_healer(config, "rollback", "--yes", "--to", "stable-1", "--reason", "bench")
        if "healthy" not in out.stdout:
            raise RuntimeError(f"healer rollback did not end healthy: {out.stdout[-500:]}")
        return wall

    def checkout() -> float:
        t = time.perf_counter()
        _git(repo, "checkout", "-q", "stable-1")
        return time.perf_counter() - t

    def back() -> None:
        """HEAD back on the deploy, settled: files written in the same second as the index are
        "racily clean" and the next git command re-reads them all, which a rollback long after the
        deploy never meets; a second later, a refresh records their stat data for good."""
        _git(repo, "checkout", "-q", "main")
        if _git(repo, "rev-parse", "HEAD") != deploy:
            raise RuntimeError("HEAD did not go back to the deploy")
        time.sleep(1.1)
        _git(repo, "update-index", "-q", "--refresh")

    def dry_run() -> float:
        return run_healer(config, "rollback", "--dry-run", "--to", "stable-1", "--reason", "bench")[0]

    healer()  # warm-up: page cache, .pyc files, the state db
    back()
    checkout()
    back()
    h: list[float] = []
    g: list[float] = []
    for _ in range(runs):
        h.append(healer())
        back()
        g.append(checkout())
        back()
    return {"healer_s": h, "git_checkout_s": g, "dry_run_s": [dry_run() for _ in range(3)]}


def _startup() -> dict[str, float]:
    """The interpreter's share: bare start-up, and start-up plus healer's CLI imports (medians of 5)."""

    def py(*args: str) -> float:
        t = time.perf_counter()
        subprocess.run([PYTHON, *args], check=True, env=child_env(), capture_output=True)
        return time.perf_counter() - t

    py("-c", "import healer.cli")
    return {
        "python_bare_s": median([py("-c", "pass") for _ in range(5)]),
        "python_import_healer_cli_s": median([py("-c", "import healer.cli") for _ in range(5)]),
        "healer_version_s": median([py("-m", "healer", "--version") for _ in range(5)]),
    }


def run(work: Path) -> dict[str, Any]:
    log("rollback: 20,000-file repository")
    variants = {}
    for changed, runs in RUNS.items():
        m = _measure(work, changed, runs)
        hs, gs = median(m["healer_s"]), median(m["git_checkout_s"])
        variants[changed] = {
            "changed_files": changed,
            "ratio": round(hs / gs, 3),
            "healer_median_s": round(hs, 3),
            "git_checkout_median_s": round(gs, 3),
            "overhead_s": round(hs - gs, 3),
            "healer_dry_run_median_s": round(median(m["dry_run_s"]), 3),
            "healer_s": [round(x, 3) for x in m["healer_s"]],
            "git_checkout_s": [round(x, 3) for x in m["git_checkout_s"]],
        }
        log(f"rollback ({changed} files changed): healer {hs:.3f}s, git checkout {gs:.3f}s")
    split = _startup()
    small, full = variants[200], variants[FILES]
    return {
        "rollback_ratio": small["ratio"],
        "rollback": {
            "goal": f"<= {GOAL}",
            "met": small["ratio"] <= GOAL,
            "small_release": small,
            "whole_tree_release": full,
            "startup": {k: round(v, 3) for k, v in split.items()},
            "note": (
                f"rollback_ratio is the small release: HEAD changes {small['changed_files']} of the {FILES:,} files "
                f"relative to stable-1, so `git checkout` takes {small['git_checkout_median_s'] * 1000:.0f} ms. "
                "healer's figure is the whole command (`python -m healer rollback --yes --to stable-1 --reason bench`):"
                " interpreter start-up, imports, config, the plan read from git twice (once to show and confirm it, "
                "once under the rollback lock: a few git subprocesses and a `git diff` over the 20,000 files each, "
                "~60 ms), the journal row, the checkout, the bad-commit mark and the new deploy window, the "
                "verification (one `true` command check, verify_grace 0s), two outbox announcements, and interpreter "
                f"teardown. Its overhead over git is a fixed {small['overhead_s']:.2f} s (small) / "
                f"{full['overhead_s']:.2f} s (whole tree) that does not grow with the repository: `healer --version` "
                f"alone (start-up and the CLI's imports) takes {split['healer_version_s']:.2f} s and "
                f"`healer rollback --dry-run` {small['healer_dry_run_median_s']:.2f} s (adds the plan and the HTTP "
                "client: httpcore imports trio when it is installed, as here, ~50 ms); teardown of ~700 modules is "
                "~0.1 s. A fixed overhead o meets 1.3x only when the checkout takes o / 0.3, about "
                f"{small['overhead_s'] / 0.3:.1f} s: the whole-tree release (every file changed, "
                f"{full['git_checkout_median_s']:.1f} s checkout here) is at {full['ratio']:.2f}x. Before this issue's "
                "lazy imports (probe drivers, chat SDKs, Redis/PostgreSQL actions) the same command took ~1.2 s. "
                "Not measured: `after` commands (none configured), which dominate a real rollback."
            ),
        },
    }
