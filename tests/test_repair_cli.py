"""`healer repair` as a person runs it: exit codes and one-line errors for bad kinds and bad playbook files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from helpers import healer, write_config


def setup(tmp_path: Path, playbook: str | None = None) -> Path:
    write_config(
        tmp_path,
        """
        state_dir = "state"
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1:9/"
        [playbooks]
        dir = "pb"
        """,
    )
    (tmp_path / "pb").mkdir()
    if playbook is not None:
        (tmp_path / "pb" / "fix.toml").write_text(textwrap.dedent(playbook).lstrip())
    return tmp_path / "healer.toml"


def test_an_unknown_kind_exits_2_listing_the_known_ones(tmp_path: Path) -> None:
    """One line on stderr naming the known kinds, exit 2."""
    out = healer("--config", str(setup(tmp_path)), "repair", "restart-everything", "--yes")
    assert out.returncode == 2
    assert out.stderr.strip().endswith(
        "unknown repair kind 'restart-everything'; expected one of: "
        "connection-reset, process-restart, rate-limit-clear, redis-flush"
    )


def test_a_playbook_with_an_unknown_action_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    """A typo in an action name stops every command, naming the file and the key."""
    config = setup(tmp_path, 'description = "x"\n[[steps]]\naction = "redis.flushall"\n')
    out = healer("--config", str(config), "repair", "redis-flush", "--dry-run")
    assert out.returncode == 2
    assert f"{tmp_path / 'pb' / 'fix.toml'}: steps[0].action: expected one of process.restart" in out.stderr
    assert 'got "redis.flushall"' in out.stderr


def test_a_playbook_missing_a_parameter_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    """A command step without argv is reported as steps[0].argv."""
    config = setup(tmp_path, 'description = "x"\n[[steps]]\naction = "command"\n')
    out = healer("--config", str(config), "repair", "fix", "--yes")
    assert out.returncode == 2
    assert f"{tmp_path / 'pb' / 'fix.toml'}: steps[0].argv: missing required key" in out.stderr


def test_a_dry_run_prints_the_argv_and_runs_nothing(tmp_path: Path) -> None:
    """--dry-run shows the resolved step and changes nothing."""
    marker = tmp_path / "ran"
    config = setup(tmp_path, f'description = "touch it"\n[[steps]]\naction = "command"\nargv = ["touch", "{marker}"]\n')
    out = healer("--config", str(config), "repair", "fix", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"1. command: run `touch {marker}`" in out.stdout
    assert not marker.exists()


def test_a_repair_that_does_not_fix_exits_1(tmp_path: Path) -> None:
    """The step runs but the app stays down: exit 1, and the action is in the history."""
    marker = tmp_path / "ran"
    config = setup(
        tmp_path,
        f'description = "x"\nverify_within = "1s"\n[[steps]]\naction = "command"\nargv = ["touch", "{marker}"]\n',
    )
    out = healer("--config", str(config), "repair", "fix", "--yes")
    assert out.returncode == 1, out.stderr
    assert marker.exists()
    assert "fix: NOT fixed: ran `touch" in out.stdout
