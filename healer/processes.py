"""Which processes are the app: the one rule the process check and the process actions share
(I/O, psutil; blocking: callers run it in a worker thread).

The check measures what `find()` returns and a restart stops what `find()` returns, so the two
never disagree about which process is the app:

1. Never this process, its ancestors, the holders of healer's lock files in the state dir
   (`healer.lock`, `rollback.lock`, `repair-*.lock` hold their PIDs), any healer process
   (`is_healer`), nor a zombie. A `[process] match` can appear in healer's own command line
   (`healer --config /srv/shop/healer.toml run` with match = "shop"): a restart must never
   stop the loop, nor a check count healer as the app.
2. With a pidfile: the process it names and that process's descendants (the app's workers).
   A process started after the file was written holds a reused PID and is not the app. With
   `match` too, the named process's command line must contain it (another user's process,
   whose command line cannot be read, is vouched for by the pidfile).
3. Otherwise every process whose command line contains `match`; with no match, every process
   named `name` (its process name, or argv[0]'s file name).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

# A process started this long after its pidfile was written still counts as the one that
# wrote it (clock and mtime granularity); started later than that, its PID was reused.
_PIDFILE_TOLERANCE = 1.0
# Two readings of one process's start time agree to within this (psutil rounds them).
_SAME_START = 0.01

_HEALER_MODULES = frozenset({"healer", "healer.__main__"})
# python's options that take the next argument as their value (`python -X dev -m healer`)
_PYTHON_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "-Q", "--check-hash-based-pycs"})


@dataclass(frozen=True, slots=True)
class Found:
    """One process of the app, identified by PID and start time (a PID can be reused)."""

    pid: int
    create_time: float


def find(
    match: str | None, pidfile: Path | None, name: str | None = None, state_dir: Path | None = None
) -> tuple[list[Found], str | None]:
    """The app's processes by the module's rule, and why there are none when that is known
    (a pidfile that is missing, stale or names a process that is not the app)."""
    excluded = protected(state_dir)
    if pidfile is not None:
        return _from_pidfile(pidfile, match, excluded)
    return _by_cmdline(match, name, excluded), None


def protected(state_dir: Path | None) -> set[int]:
    """The PIDs never taken for the app, whatever their command line says: this process, its
    ancestors, and the holders of the lock files in `state_dir`."""
    me = psutil.Process()
    out = {me.pid, *(p.pid for p in me.parents())}
    if state_dir is not None:
        holders = (named_by(lock) for lock in state_dir.glob("*.lock"))
        out |= {f.pid for f in holders if f is not None}
    return out


def is_healer(cmdline: Sequence[str]) -> bool:
    """Whether a command line runs healer: the `healer` script (exec'd, or run by a Python
    interpreter from its shebang), `python -m healer` or healer's __main__.py. Not
    `python -m healer.demo.sampleapp` (the demo's app) nor any other module of the package."""
    if not cmdline:
        return False
    if Path(cmdline[0]).name == "healer":
        return True
    if not Path(cmdline[0]).name.startswith("python"):
        return False
    args = iter(cmdline[1:])
    for arg in args:
        if arg == "-m":
            return next(args, "") in _HEALER_MODULES
        if arg.startswith("-m"):
            return arg[2:] in _HEALER_MODULES
        if arg == "-c":
            return False  # code given inline: whatever follows is its arguments
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            next(args, None)
            continue
        if arg.startswith("-"):
            continue
        script = Path(arg)
        return script.name == "healer" or (script.name == "__main__.py" and script.parent.name == "healer")
    return False


def named_by(path: Path) -> Found | None:
    """The live process whose PID `path` holds (a pidfile, a lock file); None when there is
    none, or when it started after the file was written (the PID was reused)."""
    try:
        text = path.read_text().strip()
        written = path.stat().st_mtime
        pid = int(text.split()[0])
        p = psutil.Process(pid)
        created = p.create_time()
        if p.status() == psutil.STATUS_ZOMBIE or created > written + _PIDFILE_TOLERANCE:
            return None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return Found(pid, created)


def handle(f: Found) -> psutil.Process | None:
    """The psutil handle of `f` while it is still that process (same PID, same start time) and
    not a zombie; None once it is gone."""
    try:
        p = psutil.Process(f.pid)
        if abs(p.create_time() - f.create_time) >= _SAME_START or p.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return p


def alive(f: Found) -> bool:
    """Still the same process and not a zombie."""
    return handle(f) is not None


def _by_cmdline(match: str | None, name: str | None, excluded: set[int]) -> list[Found]:
    found: list[Found] = []
    for p in psutil.process_iter(["pid", "name", "cmdline", "create_time", "status"]):
        info = p.info
        if info["pid"] in excluded or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = info["cmdline"] or []
        if is_healer(cmdline):
            continue
        if (match and match in " ".join(cmdline)) or (
            not match and name and (info["name"] == name or (cmdline and os.path.basename(cmdline[0]) == name))
        ):
            found.append(Found(info["pid"], float(info["create_time"])))
    return found


def _from_pidfile(pidfile: Path, match: str | None, excluded: set[int]) -> tuple[list[Found], str | None]:
    """The process named by the pidfile (guarding against PID reuse) and its descendants."""
    try:
        text = pidfile.read_text().strip()
        written = pidfile.stat().st_mtime
    except FileNotFoundError:
        return [], f"pidfile {pidfile} does not exist"
    except OSError as e:
        return [], f"cannot read pidfile {pidfile}: {e.strerror}"
    if not text.isdigit():
        return [], f"pidfile {pidfile} does not hold a PID"
    pid = int(text)
    gone = f"PID {pid} from pidfile {pidfile} is not running"
    try:
        p = psutil.Process(pid)
        started = p.create_time()
        running = p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return [], gone
    if not running or pid in excluded:
        return [], gone
    if started > written + _PIDFILE_TOLERANCE:
        return [], f"PID {pid} from pidfile {pidfile} is a newer process (stale pidfile, PID reused)"
    try:
        cmdline: list[str] | None = p.cmdline()
    except psutil.AccessDenied:  # another user's process: the pidfile alone vouches for it
        cmdline = None
    except psutil.Error:
        return [], gone
    if cmdline is not None and is_healer(cmdline):
        return [], f"PID {pid} from pidfile {pidfile} is healer itself"
    if match and cmdline is not None and match not in " ".join(cmdline):
        return [], f"PID {pid} from pidfile {pidfile} does not match {match!r}"
    return [Found(pid, started), *_descendants(p, excluded)], None


def _descendants(p: psutil.Process, excluded: set[int]) -> list[Found]:
    out: list[Found] = []
    try:
        children = p.children(recursive=True)
    except psutil.Error:
        return out
    for c in children:
        try:
            if c.pid not in excluded and c.status() != psutil.STATUS_ZOMBIE:
                out.append(Found(c.pid, c.create_time()))
        except psutil.Error:
            continue  # ended in between
    return out
