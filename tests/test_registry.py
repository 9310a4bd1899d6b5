"""The check and action registries: adding one is one module, one registry line, one test file."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from healer.actions.registry import ACTIONS
from healer.checks.registry import CHECKS
from healer.schema import CheckBase, StepBase

ROOT = Path(__file__).parent.parent
HEALER = ROOT / "healer"
TESTS = Path(__file__).parent
MODELS = {k.model.__name__ for k in CHECKS.values()} | {k.model.__name__ for k in ACTIONS.values()}
# the modules that read, judge or run every check or action: none of them may name one
GENERIC = ["config.py", "judge.py", "playbook.py", "checks/__init__.py", "actions/__init__.py"]
DRIVERS = ("httpx", "redis", "psycopg", "psutil", "git", "telegram", "slack_sdk")
# the chat SDKs' one adapter each, used by the alerts' senders and by chat-ops' listeners alike
CHAT_SDKS = {"telegram": "healer.telegram_api", "slack_sdk": "healer.slack_api"}


def _tag(model: type[CheckBase] | type[StepBase], key: str) -> tuple[object, ...]:
    return typing.get_args(model.model_fields[key].annotation)


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_check_type_is_one_module(name: str) -> None:
    """Its model says its own type, and the model, the probe and any `needs` live in one module."""
    kind = CHECKS[name]
    assert issubclass(kind.model, CheckBase)
    assert _tag(kind.model, "type") == (name,), f"{kind.model.__name__}.type is not Literal[{name!r}]"
    assert inspect.iscoroutinefunction(kind.probe)
    functions = [kind.probe] if kind.needs is None else [kind.probe, kind.needs]
    assert {f.__module__ for f in functions} == {kind.model.__module__}


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_check_type_has_a_test_file(name: str) -> None:
    """tests/test_checks_<module>.py tests it against real things."""
    module = CHECKS[name].model.__module__.rsplit(".", 1)[-1]
    assert (TESTS / f"test_checks_{module}.py").exists()


@pytest.mark.parametrize("name", list(ACTIONS))
def test_an_action_is_one_module(name: str) -> None:
    """Its step model says its own action, and the model, plan, run and problems live in one module."""
    kind = ACTIONS[name]
    assert issubclass(kind.model, StepBase)
    assert _tag(kind.model, "action") == (name,), f"{kind.model.__name__}.action is not Literal[{name!r}]"
    assert "timeout" in kind.model.model_fields, "a step needs a default timeout"
    assert inspect.iscoroutinefunction(kind.run)
    functions = [kind.plan, kind.run] + ([kind.problems] if kind.problems else [])
    assert {f.__module__ for f in functions} == {kind.model.__module__}


@pytest.mark.parametrize("name", list(ACTIONS))
def test_an_action_has_a_test_file_and_is_documented(name: str) -> None:
    """tests/test_actions_<module>.py tests it, and the README lists it among the step actions."""
    module = ACTIONS[name].model.__module__.rsplit(".", 1)[-1]
    assert (TESTS / f"test_actions_{module}.py").exists()
    assert f'"{name}"' in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_check_type_is_documented(name: str) -> None:
    """The README lists it among the checks (healer.toml's example block: test_example_config)."""
    assert f"`{name}`" in (ROOT / "README.md").read_text()


def _mentions(path: Path) -> list[str]:
    """Where the module names a check or step model, or compares a `.type` with a string."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name | ast.alias) and (node.id if isinstance(node, ast.Name) else node.name) in MODELS:
            found.append(f"line {node.lineno if isinstance(node, ast.Name) else '?'}: a model's name")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            typed = any(isinstance(s, ast.Attribute) and s.attr in ("type", "action") for s in sides)
            literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
            if typed and literal:
                found.append(f"line {node.lineno}: compares a type with a string")
    return found


@pytest.mark.parametrize("module", GENERIC)
def test_the_generic_modules_name_no_check_or_action(module: str) -> None:
    """config, judge, playbook and the two dispatchers go through the registries, so a new
    check or action never needs them changed."""
    assert _mentions(HEALER / module) == []


def test_judge_names_no_check_type() -> None:
    """judge.py judges what a model declares (latency, memory), never a type by its name."""
    tree = ast.parse((HEALER / "judge.py").read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef) and n.body and isinstance(n.body[0], ast.Expr)
    }
    strings = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
    assert [s for s in strings for t in CHECKS if s == t or s.startswith(f"{t}.")] == []


@pytest.mark.parametrize(
    "module", ["healer.config", "healer.playbook", "healer.judge", "healer.decide", "healer.ladder", "healer.checks"]
)
def test_reading_the_config_or_the_playbooks_loads_no_driver(module: str) -> None:
    """The registries import every check and action module; those import their drivers inside
    the functions that use them, so the core (and `healer --help`) loads none."""
    code = f"import sys, {module}; print(' '.join(m for m in {DRIVERS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def _importers(library: str) -> list[str]:
    """The healer modules with an import of `library` anywhere (in a function, under TYPE_CHECKING)."""
    found = []
    for path in sorted(HEALER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n.split(".")[0] == library for n in names):
                parts = path.relative_to(ROOT).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
                break
    return found


@pytest.mark.parametrize("library", list(CHAT_SDKS))
def test_a_chat_sdk_is_imported_by_one_adapter_module(library: str) -> None:
    """Sending alerts and listening to chat go through the same adapter, the one module that
    imports the SDK and turns its errors into ours."""
    assert _importers(library) == [CHAT_SDKS[library]]
