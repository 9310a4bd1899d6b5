"""healer.toml: validation, durations, relative paths, secrets; every bad file exits 2."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from helpers import healer, write_config

from healer.config import (
    Secret,
    format_duration,
    format_elapsed,
    format_size,
    load_config,
    parse_duration,
    read_secret,
)
from healer.errors import ConfigError

GOOD = """
    state_dir = "state"
    [app]
    name = "shop"
    [[checks]]
    name = "api"
    type = "http"
    url = "http://127.0.0.1:9/health"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("500ms", timedelta(milliseconds=500), id="ms"),
        pytest.param("30s", timedelta(seconds=30), id="s"),
        pytest.param("15m", timedelta(minutes=15), id="m"),
        pytest.param("6h", timedelta(hours=6), id="h"),
        pytest.param("3d", timedelta(days=3), id="d"),
        pytest.param("1.5s", timedelta(milliseconds=1500), id="fraction"),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    """The duration spellings of the contract parse to timedeltas."""
    assert parse_duration(text) == expected


def test_format_duration_round_trips() -> None:
    """Durations print in their shortest exact spelling."""
    for text in ("500ms", "30s", "15m", "6h", "3d", "90s"):
        assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(20.307, "20.3s", id="seconds-to-a-tenth"),
        pytest.param(5, "5s", id="whole-seconds"),
        pytest.param(125, "2m 5s", id="minutes"),
        pytest.param(4 * 3600 + 127, "4h 2m", id="two-units-at-most"),
        pytest.param(3601, "1h", id="no-zero-units"),
        pytest.param(3 * 86400 + 4 * 3600, "3d 4h", id="days"),
    ],
)
def test_format_elapsed_is_for_people(seconds: float, expected: str) -> None:
    """A measured duration reads "20.3s" or "4h 2m", never "20307ms"."""
    assert format_elapsed(timedelta(seconds=seconds)) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(800, "800 B", id="bytes"),
        pytest.param(1536, "1.5 KB", id="kilobytes"),
        pytest.param(12.3 * 2**20, "12.3 MB", id="megabytes"),
        pytest.param(2 * 2**30, "2.0 GB", id="gigabytes"),
        pytest.param(5 * 2**40, "5120.0 GB", id="gigabytes-at-most"),
    ],
)
def test_format_size_is_for_people(size: float, expected: str) -> None:
    """Bytes read in powers of 1024, up to GB."""
    assert format_size(size) == expected


def test_good_config_loads_with_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    """A minimal file gets the contract's defaults; state_dir is relative to the file."""
    sub = tmp_path / "etc"
    sub.mkdir()
    cfg = load_config(write_config(sub, GOOD))
    assert cfg.state_dir == sub / "state"
    assert [p.every for p in cfg.schedule.phases] == [
        timedelta(minutes=15),
        timedelta(minutes=30),
        timedelta(hours=4),
    ]
    assert cfg.schedule.incident_every == timedelta(minutes=1)
    assert cfg.escalation.rollback_after == 5 and cfg.escalation.recover_after == 2
    assert cfg.checks[0].samples == 3  # type: ignore[union-attr]


BAD = [
    pytest.param(
        '[[checks]]\nname="a"\ntype="http"\nurl="http://x/"\ntimeout="5 sec"\n',
        "checks[0].timeout",
        id="bad-duration",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="http"\nurl="http://x/"\ntimeot="5s"\n',
        "checks[0].timeot",
        id="typo-key",
    ),
    pytest.param('[[checks]]\nname="a"\ntype="htp"\n', "checks[0].type", id="bad-type"),
    pytest.param('[[checks]]\nname="a"\n', "checks[0].type", id="missing-type"),
    pytest.param('[[checks]]\nname="a"\ntype="http"\n', "checks[0].url", id="missing-url"),
    pytest.param('[[checks]]\nname="a"\ntype="http"\nurl="ftp://x"\n', "checks[0].url", id="bad-url"),
    pytest.param(
        '[[checks]]\nname="a"\ntype="http"\nurl="http://x/"\nsamples=0\n',
        "checks[0].samples",
        id="zero-samples",
    ),
    pytest.param('[[checks]]\nname="a"\ntype="command"\nargv="ls -l"\n', "checks[0].argv", id="shell-string"),
    pytest.param('[[checks]]\nname="a"\ntype="command"\nargv=[]\n', "checks[0].argv", id="empty-argv"),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[[checks]]\nname="a"\ntype="system"\n',
        "checks[1].name",
        id="duplicate-name",
    ),
    pytest.param('state_dir="s"\n', "checks", id="no-checks"),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[escalation]\nrollback_after=0\n',
        "escalation.rollback_after",
        id="zero-rollback",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[escalation]\nmode="yolo"\n',
        "escalation.mode",
        id="bad-mode",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[schedule]\nphases=[{until="6h",every="15m"},{until="1h",every="5m"}]\n',
        "schedule.phases[1].until",
        id="phases-out-of-order",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[schedule]\nincident_every="0s"\n',
        "schedule.incident_every",
        id="zero-duration",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[process]\nmanager="command"\n',
        "process.start",
        id="command-manager-without-start",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[process]\nmanager="runit"\nname="x"\n',
        "process.manager",
        id="unknown-manager",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[alerts.slack]\nwebhook_url_env="https://hooks.slack.com/x"\n',
        "alerts.slack.webhook_url_env",
        id="secret-inline",
    ),
    pytest.param(
        '[[checks]]\nname="a"\ntype="system"\n[rollback]\nafter="systemctl restart shop"\n',
        "rollback.after",
        id="after-shell-string",
    ),
    pytest.param('[[checks]]\nname="a"\ntype="redis"\n', "checks[0].url", id="redis-without-url"),
    pytest.param('[[checks]]\nname="a"\ntype="process"\n', "checks[0]", id="process-without-match"),
    pytest.param('[[checks]]\nname="a"\ntype="system"\n[sever]\nlisten="1"\n', "sever", id="unknown-section"),
    pytest.param('[[checks]\nname="a"\n', "not valid TOML", id="toml-syntax"),
    pytest.param('checks = "api"\n', "checks", id="checks-not-a-table"),
    pytest.param('retention = "999999999d"\n[[checks]]\nname="a"\ntype="system"\n', "retention", id="huge-duration"),
]


@pytest.mark.parametrize(("body", "key"), BAD)
def test_bad_config_exits_2_naming_the_key_and_creates_nothing(tmp_path: Path, body: str, key: str) -> None:
    """Every bad file: exit 2, a line naming the file and the key, and no state dir."""
    path = tmp_path / "healer.toml"
    path.write_text('state_dir = "state"\n' + body if "state_dir" not in body else body)
    for cmd in (["check"], ["run"]):
        proc = healer("--config", str(path), *cmd, cwd=tmp_path)
        assert proc.returncode == 2, (cmd, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert f"{path}: " in proc.stderr and key in proc.stderr, proc.stderr
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / ".healer").exists()


def test_config_problems_are_all_reported_one_line_each(tmp_path: Path) -> None:
    """Three mistakes give three lines, so a user fixes them in one go."""
    path = write_config(
        tmp_path,
        """
        [[checks]]
        name = "a"
        type = "http"
        url = "http://x/"
        timeout = "soon"
        samples = -1
        colour = "red"
    """,
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert len(e.value.lines()) == 3


def test_missing_config_file_is_one_clear_line(tmp_path: Path) -> None:
    """No healer.toml: exit 2 and a line saying how to point at one."""
    proc = healer("status", cwd=tmp_path)
    assert proc.returncode == 2
    assert "file not found" in proc.stderr and "--config" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_config_path_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HEALER_CONFIG names the file when --config is absent."""
    path = write_config(tmp_path, GOOD)
    import os
    import subprocess
    import sys

    env = {**os.environ, "HEALER_CONFIG": str(path)}
    proc = subprocess.run(
        [sys.executable, "-m", "healer", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert '"app": "shop"' in proc.stdout


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Secret read from the environment hides its value in repr and str."""
    monkeypatch.setenv("HOOK", "https://hooks.slack.com/services/T000/B000/XXXX")
    s = read_secret("HOOK")
    assert isinstance(s, Secret)
    assert "XXXX" not in repr(s) and "XXXX" not in str(s) and "XXXX" not in f"{s}"
    assert s.reveal().endswith("XXXX")
    assert read_secret("NOT_SET_ANYWHERE") is None


def test_the_example_config_is_valid() -> None:
    """The commented healer.toml in the repository loads: users copy it."""
    cfg = load_config(Path(__file__).parent.parent / "healer.toml")
    assert cfg.app.name == "shop-api"
    assert {c.type for c in cfg.checks} == {"http", "process", "system"}


def test_the_default_state_dir_is_beside_the_config_file(tmp_path: Path) -> None:
    """Without state_dir, the state lives in .healer next to healer.toml, wherever healer runs."""
    cfg = load_config(write_config(tmp_path, GOOD.replace('state_dir = "state"', "")))
    assert cfg.state_dir == tmp_path / ".healer"
