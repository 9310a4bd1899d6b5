"""The tcp check against real sockets on loopback: listening, refused, a bad address."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from services import free_port

from healer.config import parse_config
from healer.errors import ConfigError
from healer.ladder import Role, role_of
from healer.model import CheckResult

RunProbe = Callable[..., Awaitable[CheckResult]]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on (and accepts nothing from: the kernel completes the handshake)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


async def test_a_listening_port_passes_with_its_connect_time(run_probe: RunProbe, listening: int) -> None:
    """A connection that opens is a pass, timed in connect_ms."""
    r = await run_probe({"type": "tcp", "address": f"127.0.0.1:{listening}", "timeout": "2s"})
    assert r.ok, r.error
    assert r.values["connect_ms"] >= 0 and r.latency is not None


async def test_nothing_listening_is_tcp_down(run_probe: RunProbe) -> None:
    """A refused connection fails with `tcp.down`, saying nothing listens."""
    port = free_port()
    r = await run_probe({"type": "tcp", "address": f"127.0.0.1:{port}", "timeout": "2s"})
    assert not r.ok and r.symptoms == ("tcp.down",)
    assert r.error is not None and "nothing listens" in r.error


async def test_an_ipv6_address_in_brackets_is_understood(run_probe: RunProbe) -> None:
    """[::1]:PORT is host ::1; refused there too is `tcp.down`."""
    r = await run_probe({"type": "tcp", "address": f"[::1]:{free_port()}", "timeout": "2s"})
    assert r.symptoms == ("tcp.down",)


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost:port", "http://127.0.0.1:80"])
def test_an_address_that_is_not_host_port_is_a_config_error(address: str) -> None:
    """One line naming the key and the expected form."""
    with pytest.raises(ConfigError) as e:
        parse_config({"checks": [{"name": "c", "type": "tcp", "address": address}]}, Path("healer.toml"))
    assert 'checks[0].address: expected HOST:PORT like "127.0.0.1:6379"' in str(e.value)


def test_a_tcp_check_is_a_dependency_unless_it_says_app() -> None:
    """A port check watches something the app needs, unless `role = "app"`."""
    cfg = parse_config(
        {"checks": [{"name": "cache", "type": "tcp", "address": "127.0.0.1:6379"},
                    {"name": "own", "type": "tcp", "address": "127.0.0.1:8000", "role": "app"}]},
        Path("healer.toml"),
    )  # fmt: skip
    assert [role_of(c) for c in cfg.checks] == [Role.DEPENDENCY, Role.APP]


def test_the_tcp_check_is_one_module_one_registry_entry_and_this_file() -> None:
    """Adding the check touched no other code, only tests and docs: no generic module names it."""
    root = Path(__file__).parent.parent
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    mention = re.compile(r"\btcp\b|Tcp")  # the check, not the protocol ("a TCP port")
    named = {f for f in files if (root / f).is_file() and mention.search((root / f).read_text(errors="replace"))}
    docs = {"README.md", "CONTRIBUTING.md", "healer.toml"}
    # bench/frozen/: copies of older decision modules, the reference the live code is measured against;
    # tests/: this file, and tests of features across check types that take tcp as an example
    elsewhere = {f for f in named if f.startswith(("bench/frozen/", "tests/"))}
    assert "tests/test_checks_tcp.py" in named
    assert named - docs - elsewhere == {"healer/checks/tcp.py", "healer/checks/registry.py"}
    registry_lines = [ln for ln in (root / "healer/checks/registry.py").read_text().splitlines() if mention.search(ln)]
    assert registry_lines == ["import healer.checks.tcp as tcp", '    "tcp": CheckKind(tcp.TcpCheck, tcp.probe),']
