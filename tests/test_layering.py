"""The functional core imports only the stdlib, the value types, the errors and the config."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CORE = [
    "schedule", "judge", "decide", "ladder", "stable", "model", "errors", "clock", "playbook", "alerts/message",
    "stats", "page", "rollback_plan", "aftermath", "alerts/pipeline", "schema", "chatops", "lease", "sampling", "drift",
    "fleet_judge",
]  # fmt: skip
ALLOWED = {
    "healer.model", "healer.errors", "healer.config", "healer.schema", "healer.clock",
    "healer.decide", "healer.ladder", "healer.schedule", "healer.stats",
    "healer.stable", "healer.rollback_plan", "healer.aftermath", "healer.judge",
}  # fmt: skip
# playbook.py holds the frozen types of playbook files, validated like healer.toml; schema.py the
# pydantic types every model shares (durations, sizes, argv, secrets)
CONFIG_TYPES = {"playbook": {"pydantic", "pydantic_core"}, "schema": {"pydantic", "pydantic_core"}}
# playbook.py reads the step models from the action registry, as config.py reads the check
# models from the check registry: importing either loads no driver (tests/test_registry.py)
REGISTRIES = {"playbook": {"healer.actions.registry"}}
ROOT = Path(__file__).parent.parent / "healer"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_outside_the_core(module: str) -> None:
    """A core module that imported an adapter would drag I/O into the decisions."""
    path = ROOT / f"{module}.py"
    if not path.exists():
        pytest.fail(f"{path} is missing")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top == "healer":
                ok = name in ALLOWED or name in REGISTRIES.get(module, set())
                assert ok or name.startswith("healer.alerts.message"), f"{module} imports {name}"
            else:
                ok = top in sys.stdlib_module_names or top == "__future__" or top in CONFIG_TYPES.get(module, set())
                assert ok, f"{module} imports {name}"
