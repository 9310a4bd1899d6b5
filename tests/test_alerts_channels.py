"""The channel registry: each kind in config.CHANNELS is one module with its table's model and
the channels it builds; healer.toml's validation uses them without importing a chat SDK."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from healer.config import CHANNELS, ChannelSection, channel_module, channel_section, parse_config
from healer.errors import ConfigError
from healer.model import Severity

# a valid `[alerts.<kind>]` table for every registered kind (a new channel adds its line)
TABLES: dict[str, dict[str, str]] = {
    "log": {"min_severity": "warning"},
    "slack": {"webhook_url_env": "TEST_SLACK_URL", "min_severity": "warning"},
    "telegram": {"token_env": "TEST_TG_TOKEN", "chat_id_env": "TEST_TG_CHAT", "min_severity": "warning"},
}
CHECKS = [{"name": "api", "type": "system"}]


def test_every_registered_channel_has_an_example_table() -> None:
    """A channel added to the registry is added here too."""
    assert set(TABLES) == set(CHANNELS)


@pytest.mark.parametrize("kind", list(CHANNELS))
def test_a_channel_module_builds_its_channels_from_its_table(kind: str) -> None:
    """The module's `Section` validates `[alerts.<kind>]`; `channels()` builds channels of that
    kind at its minimum severity, even with its secrets unset (they fail each delivery)."""
    config = parse_config({"checks": CHECKS, "alerts": {kind: TABLES[kind]}}, Path("healer.toml"))
    section = config.alerts.channels[kind]
    assert isinstance(section, channel_section(kind)) and isinstance(section, ChannelSection)
    built = channel_module(kind).channels(section, timeout=timedelta(seconds=3))
    assert [(c.kind, c.min_severity) for c in built] == [(kind, Severity.WARNING)]


def test_the_log_channel_is_there_without_its_table_and_first() -> None:
    """No [alerts] at all: the log channel alone; with chat channels, the log channel first."""
    bare = parse_config({"checks": CHECKS}, Path("healer.toml"))
    assert list(bare.alerts.channels) == ["log"]
    both = parse_config({"checks": CHECKS, "alerts": {"telegram": TABLES["telegram"]}}, Path("healer.toml"))
    assert list(both.alerts.channels) == ["log", "telegram"]


@pytest.mark.parametrize(
    ("alerts", "line"),
    [
        pytest.param(
            {"slak": {}}, "alerts.slak: unknown key (check the spelling; channels: log, slack, telegram)", id="typo"
        ),
        pytest.param({"telegram": "x"}, 'alerts.telegram: expected a table, got "x"', id="not-a-table"),
        pytest.param(
            {"slack": {"token_env": "T"}},
            "alerts.slack.channel: expected the channel to post to with token_env",
            id="channel-rule",
        ),
        pytest.param({"log": {"min_severity": "loud"}}, "alerts.log.min_severity: expected 'info', ", id="severity"),
    ],
)
def test_a_bad_channel_table_is_one_line_naming_the_key(alerts: dict[str, object], line: str) -> None:
    """The channel's own model reports its keys with the path the user wrote."""
    with pytest.raises(ConfigError) as e:
        parse_config({"checks": CHECKS, "alerts": alerts}, Path("healer.toml"))
    assert f"healer.toml: {line}" in str(e.value)


def test_validating_the_config_imports_no_chat_sdk(tmp_path: Path) -> None:
    """`healer status` with Slack and Telegram configured does not pay for their SDKs."""
    toml = tmp_path / "healer.toml"
    toml.write_text(
        '[[checks]]\nname = "api"\ntype = "system"\n'
        '[alerts.slack]\nwebhook_url_env = "X_URL"\n[alerts.telegram]\ntoken_env = "X_TOKEN"\n'
    )
    code = (
        "import sys; from healer.config import load_config; "
        f"c = load_config({str(toml)!r}); assert list(c.alerts.channels) == ['log', 'slack', 'telegram']; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('slack_sdk', 'telegram', 'tenacity')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_dumped_config_writes_each_channel_as_its_table_and_validates_again() -> None:
    """model_dump gives `[alerts.<kind>]` tables back, as healer.toml has them (tests edit configs so)."""
    config = parse_config({"checks": CHECKS, "alerts": {"slack": TABLES["slack"]}}, Path("healer.toml"))
    dumped = config.model_dump(exclude={"path"})
    assert set(dumped["alerts"]) == {"repeat_every", "timeout", "log", "slack"}
    assert parse_config(dumped, Path("healer.toml")).alerts == config.alerts
