"""Playbook files: the shipped ones, user ones that extend or override them, and the one-line errors of a bad file."""

from __future__ import annotations

import textwrap
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.actions.command import CommandStep
from healer.actions.redis import RedisDeletePatternStep
from healer.config import CHECK_TYPES, Config, parse_config
from healer.errors import ConfigError
from healer.playbook import parse_playbook, parse_playbook_text, targets
from healer.repair import describe, known_playbooks, policies, shipped_playbooks

SHIPPED = {"process-restart", "redis-flush", "connection-reset", "rate-limit-clear"}


def make_config(tmp_path: Path, **sections: Any) -> Config:
    checks = sections.pop("checks", [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/health"}])
    return parse_config({"checks": checks, **sections}, tmp_path / "healer.toml")


def write(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def problems_of(text: str, name: str = "bad.toml") -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_playbook_text(textwrap.dedent(text).lstrip(), Path("/etc/healer/playbooks") / name)
    return err.value.lines()


def test_four_playbooks_ship_with_healer() -> None:
    """The shipped playbooks load from the installed package and each has limits and targets."""
    shipped = {p.name: p for p in shipped_playbooks()}
    assert set(shipped) == SHIPPED
    for p in shipped.values():
        assert p.shipped and p.description and p.steps and p.verify
        assert p.max_per_window <= 6 and p.cooldown >= timedelta(minutes=10)
    assert [s.action for s in shipped["connection-reset"].steps] == ["postgres.terminate_backends", "process.reload"]
    assert shipped["process-restart"].verify == ("http", "process")


def test_policies_cover_every_known_playbook(tmp_path: Path) -> None:
    """decide() gets the cooldown and cap of every playbook, shipped and the user's."""
    write(
        tmp_path / "pb",
        "warm-cache.toml",
        """
        description = "Warm the cache"
        cooldown = "5m"
        max_per_window = 2
        [[steps]]
        action = "command"
        argv = ["true"]
    """,
    )
    got = policies(make_config(tmp_path, playbooks={"dir": "pb"}))
    assert set(got) == SHIPPED | {"warm-cache"}
    assert (got["warm-cache"].cooldown, got["warm-cache"].max_per_window) == (timedelta(minutes=5), 2)
    assert got["process-restart"].max_per_window == 5
    assert got["process-restart"].backoff[:2] == (timedelta(0), timedelta(seconds=10))
    assert got["process-restart"].restarts_app and not got["redis-flush"].restarts_app


def test_a_user_playbook_overrides_a_shipped_one_by_name(tmp_path: Path) -> None:
    """A file in [playbooks] dir named like a shipped playbook replaces it; the rest stay."""
    write(
        tmp_path / "pb",
        "mine.toml",
        """
        name = "rate-limit-clear"
        description = "Clear our limiter, which keeps its counters under rl:"
        max_per_window = 1
        [[steps]]
        action = "redis.delete_pattern"
        patterns = ["rl:*"]
        db = 2
    """,
    )
    known = known_playbooks(make_config(tmp_path, playbooks={"dir": "pb"}))
    rl = known["rate-limit-clear"]
    assert not rl.shipped and rl.source.endswith("mine.toml") and rl.max_per_window == 1
    assert rl.steps == (RedisDeletePatternStep(action="redis.delete_pattern", patterns=("rl:*",), db=2),)
    assert known["redis-flush"].shipped


def test_a_command_step_cwd_is_relative_to_the_playbook_file(tmp_path: Path) -> None:
    """Relative paths in a playbook resolve against its own directory."""
    write(
        tmp_path / "pb",
        "fix.toml",
        """
        description = "Run our fix script"
        [[steps]]
        action = "command"
        argv = ["./fix.sh", "--now"]
        cwd = "scripts"
        timeout = "2m"
    """,
    )
    fix = known_playbooks(make_config(tmp_path, playbooks={"dir": "pb"}))["fix"]
    assert fix.steps == (
        CommandStep(
            action="command", argv=["./fix.sh", "--now"], cwd=tmp_path / "pb" / "scripts", timeout=timedelta(minutes=2)
        ),
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            'description = "x"\n[[steps]]\naction = "proces.restart"\n',
            "steps[0].action: expected one of process.restart, process.reload, redis.flush_cache, "
            'redis.delete_pattern, postgres.terminate_backends, command, got "proces.restart"',
            id="unknown-action",
        ),
        pytest.param(
            'description = "x"\n[[steps]]\naction = "command"\ntimeout = "5s"\n',
            "steps[0].argv: missing required key",
            id="missing-parameter",
        ),
        pytest.param(
            'description = "x"\n[[steps]]\naction = "command"\nargv = "systemctl restart shop"\n',
            'steps[0].argv: expected an argv list like ["systemctl", "restart", "shop"] (never a shell string), '
            'got "systemctl restart shop"',
            id="shell-string",
        ),
        pytest.param(
            'description = "x"\n[[steps]]\naction = "command"\nargv = ["true"]\ntimeout = "5 sec"\n',
            'steps[0].timeout: expected a duration like "5s", "15m" or "6h", got "5 sec"',
            id="bad-duration",
        ),
        pytest.param(
            'description = "x"\ncooldown = "10m"\nverify_whithin = "30s"\n[[steps]]\naction = "redis.flush_cache"\n',
            "verify_whithin: unknown key (check the spelling)",
            id="typo",
        ),
        pytest.param(
            'description = "x"\n[[steps]]\naction = "redis.flush_cache"\npatterns = ["a:*"]\n',
            "steps[0].patterns: unknown key (check the spelling)",
            id="parameter-of-another-action",
        ),
        pytest.param(
            'description = "x"\n[[steps]]\naction = "redis.delete_pattern"\npatterns = ["*"]\n',
            'steps[0].patterns[0]: expected a key pattern with a fixed part like "ratelimit:*", got "*" '
            "(it matches every key)",
            id="pattern-matching-everything",
        ),
        pytest.param('description = "x"\nsteps = []\n', "steps: expected at least one entry", id="no-steps"),
        pytest.param(
            '[[steps]]\naction = "process.restart"\n', "description: missing required key", id="no-description"
        ),
        pytest.param(
            'description = "x"\nmax_per_window = 0\n[[steps]]\naction = "process.restart"\n',
            "max_per_window: expected a number at least 1, got 0",
            id="cap-zero",
        ),
        pytest.param(
            'description = "x"\n[[steps]]\naction = "postgres.terminate_backends"\nterminate = "everything"\n',
            "steps[0].terminate: expected 'stuck' or 'all', got \"everything\"",
            id="bad-choice",
        ),
        pytest.param('description = "x"\n[[steps]\n', "not valid TOML", id="not-toml"),
    ],
)
def test_a_bad_playbook_names_the_file_the_key_and_what_was_expected(body: str, expected: str) -> None:
    """Each problem is one line: file, key path, what was expected and what was found."""
    lines = problems_of(body)
    assert any(line.startswith("/etc/healer/playbooks/bad.toml: ") for line in lines), lines
    assert any(expected in line for line in lines), lines


def test_every_problem_of_a_file_is_reported() -> None:
    """Two mistakes in one file: two lines, not one at a time."""
    lines = problems_of('description = "x"\ncooldown = "soon"\n[[steps]]\naction = "command"\n')
    assert lines == [
        '/etc/healer/playbooks/bad.toml: steps[0].argv: missing required key',
        '/etc/healer/playbooks/bad.toml: cooldown: expected a duration like "5s", "15m" or "6h", got "soon"',
    ] or sorted(lines) == sorted([
        '/etc/healer/playbooks/bad.toml: steps[0].argv: missing required key',
        '/etc/healer/playbooks/bad.toml: cooldown: expected a duration like "5s", "15m" or "6h", got "soon"',
    ])  # fmt: skip


def test_a_bad_user_file_stops_known_playbooks_naming_it(tmp_path: Path) -> None:
    """known_playbooks raises ConfigError naming the user's file and key."""
    path = write(tmp_path / "pb", "broken.toml", 'description = "x"\n[[steps]]\naction = "command"\n')
    with pytest.raises(ConfigError) as err:
        known_playbooks(make_config(tmp_path, playbooks={"dir": "pb"}))
    assert err.value.lines() == [f"{path}: steps[0].argv: missing required key"]


def test_verify_must_name_a_check_or_a_check_type(tmp_path: Path) -> None:
    """A typo in `verify` is an error, not a playbook that silently verifies everything."""
    path = write(
        tmp_path / "pb", "x.toml", 'description = "x"\nverify = ["apii"]\n[[steps]]\naction = "process.restart"\n'
    )
    with pytest.raises(ConfigError) as err:
        known_playbooks(make_config(tmp_path, playbooks={"dir": "pb"}))
    assert err.value.lines() == [
        f"{path}: verify[0]: expected a check name (api) or type ({', '.join(CHECK_TYPES)}), got 'apii'"
    ]


def test_a_rule_must_name_a_known_playbook(tmp_path: Path) -> None:
    """A dispatch rule in healer.toml naming no playbook is a config error naming the rule."""
    cfg = make_config(tmp_path, playbooks={"rules": [{"when": ["process.down"], "run": "proces-restart"}]})
    with pytest.raises(ConfigError) as err:
        known_playbooks(cfg)
    assert err.value.lines()[0].startswith(
        f"{tmp_path / 'healer.toml'}: playbooks.rules[0].run: expected a known playbook"
    )


def test_a_missing_playbook_dir_is_a_config_error(tmp_path: Path) -> None:
    """[playbooks] dir pointing nowhere is reported against healer.toml."""
    with pytest.raises(ConfigError) as err:
        known_playbooks(make_config(tmp_path, playbooks={"dir": "nope"}))
    assert "playbooks.dir: expected a directory of playbook files" in str(err.value)


def test_two_user_files_claiming_one_name_is_an_error(tmp_path: Path) -> None:
    """Which of two files wins would be a guess: refuse."""
    write(
        tmp_path / "pb", "a.toml", 'name = "fix"\ndescription = "a"\n[[steps]]\naction = "command"\nargv = ["true"]\n'
    )
    write(
        tmp_path / "pb", "b.toml", 'name = "fix"\ndescription = "b"\n[[steps]]\naction = "command"\nargv = ["true"]\n'
    )
    with pytest.raises(ConfigError, match="expected a unique playbook name"):
        known_playbooks(make_config(tmp_path, playbooks={"dir": "pb"}))


@pytest.mark.parametrize(
    ("verify", "expected"),
    [
        pytest.param([], ["api", "web", "cache"], id="default-all"),
        pytest.param(["http"], ["api", "web"], id="by-type"),
        pytest.param(["cache", "api"], ["api", "cache"], id="by-name-in-config-order"),
        pytest.param(["postgres"], ["api", "web", "cache"], id="none-configured-means-all"),
    ],
)
def test_targets_are_the_checks_named_by_type_or_name(tmp_path: Path, verify: list[str], expected: list[str]) -> None:
    """`verify` picks checks by type or name; nothing picked means every check."""
    cfg = make_config(
        tmp_path,
        checks=[
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/"},
            {"name": "web", "type": "http", "url": "http://127.0.0.1:9/web"},
            {"name": "cache", "type": "redis", "url": "redis://127.0.0.1:9/0"},
        ],
    )
    pb = parse_playbook({"description": "x", "verify": verify, "steps": [{"action": "process.restart"}]}, "x.toml")
    assert [c.name for c in targets(pb, cfg.checks)] == expected


def test_describe_shows_resolved_parameters(tmp_path: Path) -> None:
    """The confirmation text names the argv, the databases and patterns, and the SQL filter."""
    cfg = make_config(
        tmp_path,
        process={"manager": "systemd", "name": "shop"},
        redis={"url": "redis://:hunter22@127.0.0.1:6379/0", "cache_db": 1},
        postgres={"application_name": "shop", "terminate": "all", "user": "shop"},
    )
    known = known_playbooks(cfg)
    assert "run `systemctl restart shop`" in describe(known["process-restart"], cfg)
    flush = describe(known["redis-flush"], cfg)
    assert "FLUSHDB ASYNC on db 1" in flush and "hunter22" not in flush
    assert "SCAN + UNLINK keys matching 'ratelimit:*' in db 0" in describe(known["rate-limit-clear"], cfg)
    reset = describe(known["connection-reset"], cfg)
    assert "a.application_name = 'shop'" in reset and "a.usename = 'shop'" in reset
    assert "NOT r.rolsuper" in reset and "a.pid <> pg_backend_pid()" in reset
    assert "CANNOT RUN: postgres.terminate_backends: environment variable DATABASE_URL" in reset
    assert "2. process.reload: run `systemctl reload shop`" in reset


def test_describe_says_when_a_step_cannot_run(tmp_path: Path) -> None:
    """Without [redis] cache_db or cache_patterns, redis-flush says what it is missing."""
    cfg = make_config(tmp_path, redis={"url": "redis://127.0.0.1:6379/0"})
    text = describe(known_playbooks(cfg)["redis-flush"], cfg)
    assert "CANNOT RUN: redis.flush_cache: expected [redis] cache_db" in text


def test_the_package_metadata_ships_the_playbooks() -> None:
    """pyproject maps playbooks/ to the package healer.playbooks with its *.toml files, so a
    wheel carries them (checked by hand: `pip wheel .` lists healer/playbooks/*.toml)."""
    root = Path(__file__).resolve().parent.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "healer.playbooks" in setup["packages"]
    assert setup["package-dir"]["healer.playbooks"] == "playbooks"
    assert "*.toml" in setup["package-data"]["healer.playbooks"]
    assert (root / "playbooks" / "__init__.py").exists()
    assert {p.stem for p in (root / "playbooks").glob("*.toml")} == SHIPPED
