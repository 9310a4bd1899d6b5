"""Running a playbook: journal, steps, verification (I/O). Placeholder interface; see issue 4."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from healer.decide import PlaybookPolicy
from healer.errors import UsageError
from healer.model import CheckResult, Who

if TYPE_CHECKING:
    from healer.checks import ProbeContext
    from healer.clock import Clock
    from healer.config import Config
    from healer.store import Store


@dataclass(frozen=True, slots=True)
class RepairResult:
    """How a repair ended; `ok` means its target checks pass afterwards."""

    name: str
    ok: bool
    detail: str
    action_id: int | None = None
    results: tuple[CheckResult, ...] = field(default=())


def policies(config: Config) -> dict[str, PlaybookPolicy]:
    """The cooldown and cap of every known playbook."""
    return {}


async def run_repair(
    name: str,
    *,
    config: Config,
    ctx: ProbeContext,
    store: Store,
    clock: Clock,
    who: Who,
    reason: str,
    deploy_id: int | None,
    incident_id: int | None = None,
    dry_run: bool = False,
) -> RepairResult:
    """Run playbook `name`, journaled before it starts, verified by its target checks."""
    raise UsageError(f"unknown repair kind {name!r}")


_ = timedelta
