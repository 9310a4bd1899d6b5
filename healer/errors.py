"""The error tree of healer (pure).

    HealerError                 anything healer reports as one line and exit 2
    ├── ConfigError             healer.toml is unreadable or invalid (lists every problem)
    ├── UsageError              a bad flag or argument the CLI could not catch itself
    ├── LockedError             another process holds the lock (run, rollback, repair)
    ├── StoreError              the state database cannot be opened or written
    │   ├── StoreUnreachable    PostgreSQL cannot be reached for now (down, restarting, starting up)
    │   └── FencedError         a fenced write was refused: its fence (a leader's lease epoch) moved on
    ├── GitError                the app repository cannot be read or changed
    ├── ActionError             a repair action could not run (bad setup, refused)
    ├── DeliveryError           a chat refused or failed a request: a message, an edit, a poll (permanent=...)
    └── FleetError              fleet leadership cannot work here (a transaction pooler)

A message is one line: it names the thing, shows the bad value and says what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class HealerError(Exception):
    """Base of every error that the CLI prints as one line and exits 2 for."""

    exit_code = 2

    def lines(self) -> list[str]:
        return [str(self)]


class ConfigError(HealerError):
    """healer.toml is unreadable or invalid; carries one line per problem."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}: {p}" for p in self.problems]


class UsageError(HealerError):
    """A bad argument on the command line."""


class LockedError(HealerError):
    """Another process holds the lock; names it."""

    def __init__(self, what: str, pid: int | None) -> None:
        self.pid = pid
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"{what} is already running ({who})")


class StoreError(HealerError):
    """The state database cannot be opened or written."""


class StoreUnreachable(StoreError):
    """The state database (PostgreSQL) cannot be reached for now, for a reason that passes by
    itself: down, restarting, not reachable or not in the DNS yet, starting up, full (pg.is_passing).
    `healer run` waits for it at start; anything else about the database is a person's to fix."""


class FencedError(StoreError):
    """A fenced write was refused (healer/db.py: Fence): the fence, a leader's lease epoch say, no
    longer holds, and nothing of the transaction was written. Never retried: the writer lost the
    right (a leader that was paused or cut off steps down)."""

    @classmethod
    def lease(cls, app: str, epoch: int) -> FencedError:
        """The refusal of a write made for the leader of `app` at `epoch`."""
        return cls(f"fleet {app}: not written, the lease of epoch {epoch} is no longer held")


class GitError(HealerError):
    """The app repository cannot be read or changed."""


class ActionError(HealerError):
    """A repair action could not run."""


class DeliveryError(HealerError):
    """A chat failed a request (delivering an alert, a reply, an edit; polling); `permanent` says
    whether retrying can help."""

    def __init__(self, msg: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(msg)


class FleetError(HealerError):
    """Fleet leadership cannot be held on this database connection."""
