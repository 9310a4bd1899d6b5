"""Rolling back to the last stable tag: a pure plan() and an execute() via gitrepo. Placeholder; see issue 5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from healer.errors import GitError
from healer.model import Who

if TYPE_CHECKING:
    from healer.checks import ProbeContext
    from healer.clock import Clock
    from healer.config import Config
    from healer.store import Store


@dataclass(frozen=True, slots=True)
class RollbackResult:
    """How a rollback ended; `ok` means the target is checked out and healthy."""

    ok: bool
    from_commit: str
    to_ref: str
    to_commit: str
    detail: str
    changed: bool  # HEAD moved


def has_target(config: Config, store: Store) -> bool:
    """Whether a stable tag (not the deployed commit, not a known-bad one) exists."""
    return False


async def run_rollback(
    *,
    config: Config,
    ctx: ProbeContext,
    store: Store,
    clock: Clock,
    who: Who,
    reason: str,
    to: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> RollbackResult:
    """Roll back to `to` or the newest stable tag; journaled, locked, verified."""
    raise GitError("rollback is not available yet")


async def resume_unfinished(*, config: Config, ctx: ProbeContext, store: Store, clock: Clock) -> None:
    """Finish or report a rollback that a kill interrupted."""


async def maybe_tag_stable(*, config: Config, store: Store, clock: Clock) -> str | None:
    """Tag HEAD stable once the deploy has been healthy for `tag_stable_after`."""
    return None
