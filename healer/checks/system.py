"""The system check: memory %, disk % of a path and load per CPU of this machine (I/O, psutil).

psutil and statvfs block, so the readings are taken in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from healer.checks.base import measured
from healer.model import CheckResult
from healer.schema import CheckBase, Percent, RelPath, RoleName

if TYPE_CHECKING:
    from healer.checks.base import ProbeContext


class SystemCheck(CheckBase):
    """The machine: memory %, disk % of a path, load per CPU."""

    type: Literal["system"]
    memory_max_percent: Percent = 90.0
    disk_path: RelPath = Path("/")
    disk_max_percent: Percent = 85.0
    load_max: Annotated[float, Field(gt=0)] | None = None  # 1-minute load average per CPU

    # the host: never a rollback, but no excuse for a crash either (healer/ladder.py)
    default_role: ClassVar[RoleName] = "dependency"


@dataclass(frozen=True, slots=True)
class _Reading:
    memory_percent: float
    disk_percent: float
    load_per_cpu: float


async def probe(check: SystemCheck, ctx: ProbeContext) -> CheckResult:
    """Read the machine and compare each reading with its ceiling."""
    r = await asyncio.to_thread(_read, check.disk_path)
    values = {
        "memory_percent": round(r.memory_percent, 2),
        "disk_percent": round(r.disk_percent, 2),
        "load_per_cpu": round(r.load_per_cpu, 3),
    }
    symptoms: list[str] = []
    errors: list[str] = []
    if r.memory_percent > check.memory_max_percent:
        symptoms.append("system.memory")
        errors.append(f"memory {r.memory_percent:.1f}% is over {check.memory_max_percent:g}%")
    if r.disk_percent > check.disk_max_percent:
        symptoms.append("system.disk")
        errors.append(f"disk {check.disk_path} {r.disk_percent:.1f}% full, over {check.disk_max_percent:g}%")
    if check.load_max is not None and r.load_per_cpu > check.load_max:
        symptoms.append("system.load")
        errors.append(f"load {r.load_per_cpu:.2f} per CPU is over {check.load_max:g}")
    return measured(check, values, symptoms, errors)


def _read(disk_path: Path) -> _Reading:
    import psutil  # type: ignore[import-untyped]  # untyped; imported here, not with the config (registry.py)

    memory = psutil.virtual_memory().percent
    disk = psutil.disk_usage(str(disk_path)).percent
    load1 = os.getloadavg()[0]
    cpus = psutil.cpu_count() or 1
    return _Reading(float(memory), float(disk), load1 / cpus)
