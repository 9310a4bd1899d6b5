"""The shipped healer.toml: valid as it is, and it mentions every key healer.toml can hold, each
in its own section (set or commented), so a person copying it sees every knob there is."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from healer.config import CHANNELS, CHECK_TYPES, Config, channel_section, load_config

EXAMPLE = Path(__file__).parent.parent / "healer.toml"
# `[[checks]]` blocks: every field of every check type is documented in one of them
CHECKS = "checks"
_HEADER = re.compile(r"^#?\s*\[\[?([a-z_.]+)\]\]?", re.M)
_KEY = re.compile(r"^[#\s]*([A-Za-z_][A-Za-z0-9_]*)\s*=", re.M)


def _blocks() -> dict[str, str]:
    """The example's text by section (`app`, `alerts.slack`, `checks` ...), commented ones too."""
    text = EXAMPLE.read_text()
    out: dict[str, str] = {"": ""}
    current = ""
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m:
            current = m.group(1)
            out.setdefault(current, "")
            continue
        out[current] += line + "\n"
    return out


def _submodel(annotation: object) -> type[BaseModel] | None:
    """The section model of a field (`ServerConfig | None` too); a list of tables is a key."""
    if typing.get_origin(annotation) in (tuple, list):
        return None
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _fields() -> list[tuple[str, str]]:
    """(section, key) for every key of healer.toml; "checks" for the keys of any check type."""
    out: list[tuple[str, str]] = []

    def walk(model: type[BaseModel], section: str) -> None:
        for name, field in model.model_fields.items():
            if name == "channels" and section == "alerts":  # [alerts.<kind>]: each channel's own model
                for kind in CHANNELS:
                    walk(channel_section(kind), f"alerts.{kind}")
                continue
            if name == "path" or field.exclude:
                continue
            sub = _submodel(field.annotation)
            if sub is not None and name != CHECKS:
                walk(sub, f"{section}.{name}" if section else name)
            elif name != CHECKS:
                out.append((section, name))

    walk(Config, "")
    check_models = typing.get_args(typing.get_args(Config.model_fields[CHECKS].annotation)[0])
    for model in typing.get_args(check_models[0]) or check_models:
        for name in model.model_fields:
            out.append((CHECKS, name))
    return sorted(set(out))


def test_the_example_is_a_valid_config() -> None:
    """Copied as it is, the example loads."""
    assert load_config(EXAMPLE).app.name == "shop-api"


@pytest.mark.parametrize(("section", "key"), _fields(), ids=lambda x: str(x))
def test_the_example_mentions_every_key_in_its_section(section: str, key: str) -> None:
    """A key the example does not mention is a knob nobody finds."""
    blocks = _blocks()
    where = f"[{section}]" if section else "the top"
    assert section in blocks, f"healer.toml has no {where} section"
    assert key in _KEY.findall(blocks[section]), f"healer.toml: {where} does not mention {key}"


def test_every_check_type_is_shown() -> None:
    """Each check type has an example block (set or commented)."""
    text = EXAMPLE.read_text()
    for kind in CHECK_TYPES:
        assert re.search(rf'^#?\s*type = "{kind}"', text, re.M), kind


def _flags() -> list[tuple[str, str]]:
    """(command, flag) for every visible command and long option of the CLI."""
    import click

    from healer.cli import cli

    out: list[tuple[str, str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if path:
            out.append((" ".join(path), ""))
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                out.extend((" ".join(path), o) for o in p.opts if o.startswith("--") and o != "--help")
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    walk(sub, [*path, name])

    walk(cli, [])
    return out


@pytest.mark.parametrize(("command", "flag"), _flags(), ids=lambda x: str(x))
def test_the_readme_mentions_every_command_and_flag(command: str, flag: str) -> None:
    """A flag `--help` shows and the README does not is a flag nobody finds on a phone at 3 AM."""
    readme = (EXAMPLE.parent / "README.md").read_text()
    assert f"healer {command}".strip() in readme, f"README.md does not mention `healer {command}`"
    if flag:
        assert flag in readme, f"README.md does not mention healer {command} {flag}"
