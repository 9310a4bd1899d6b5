"""The system check on this machine: readings always, symptoms when over the ceilings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from healer.model import CheckResult

RunProbe = Callable[..., Awaitable[CheckResult]]


async def test_readings_are_reported(run_probe: RunProbe) -> None:
    """Memory %, disk % and load per CPU are always in the values."""
    r = await run_probe({"type": "system", "memory_max_percent": 100, "disk_max_percent": 100})
    assert r.ok, r.error
    assert 0 < r.values["memory_percent"] <= 100
    assert 0 <= r.values["disk_percent"] <= 100
    assert r.values["load_per_cpu"] >= 0


async def test_low_ceilings_give_symptoms(run_probe: RunProbe, tmp_path: Path) -> None:
    """Readings over forced-low ceilings fail with `system.memory` and `system.disk`."""
    r = await run_probe(
        {
            "type": "system",
            "memory_max_percent": 0.001,
            "disk_max_percent": 0.001,
            "disk_path": str(tmp_path),
        }
    )
    assert not r.ok
    assert r.symptoms[:2] == ("system.memory", "system.disk")
    assert r.error and "memory" in r.error and str(tmp_path) in r.error


async def test_load_over_its_ceiling_is_a_symptom(run_probe: RunProbe) -> None:
    """A load per CPU over load_max fails with `system.load` (when the machine has any load)."""
    r = await run_probe({"type": "system", "memory_max_percent": 100, "disk_max_percent": 100,
                         "load_max": 1e-9})  # fmt: skip
    assert ("system.load" in r.symptoms) is (r.values["load_per_cpu"] > 1e-9)


async def test_missing_disk_path_is_a_failed_check(run_probe: RunProbe, tmp_path: Path) -> None:
    """A disk_path that does not exist is a failed `system.error` result, not a crash."""
    r = await run_probe({"type": "system", "disk_path": str(tmp_path / "nope")})
    assert not r.ok and r.symptoms == ("system.error",)
