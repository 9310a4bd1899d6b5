"""The tcp check: a connection to HOST:PORT opens within the timeout (I/O, asyncio streams).

The cheapest "is it listening" there is: no protocol spoken, nothing sent. Refused, unreachable
and silent (no SYN-ACK before the timeout) are told apart, because an on-call person reads them
differently: refused is "nothing listens", silent is "a firewall or a frozen host".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from healer.checks.base import budget, describe_error, failed, local_failure, measured, unprobed
from healer.model import CheckResult
from healer.schema import CheckBase, RoleName

if TYPE_CHECKING:
    from healer.checks.base import ProbeContext


class TcpCheck(CheckBase):
    """A TCP connection to `address` opens within the timeout (a port the app or a dependency
    listens on). A dependency by default (healer/ladder.py): give it `role = "app"` for the
    app's own port."""

    type: Literal["tcp"]
    address: Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[\w.\-]+):\d{1,5}$")]

    default_role: ClassVar[RoleName] = "dependency"
    hints: ClassVar[Mapping[str, str]] = {"address": 'expected HOST:PORT like "127.0.0.1:6379"'}


def split_address(address: str) -> tuple[str, int]:
    """ "127.0.0.1:6379" -> ("127.0.0.1", 6379); "[::1]:5432" -> ("::1", 5432)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def probe(check: TcpCheck, ctx: ProbeContext) -> CheckResult:
    """Open a connection, time it, close it."""
    host, port = split_address(check.address)
    started = time.monotonic()
    try:
        async with asyncio.timeout(budget(check.timeout)):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return failed(
            check, f"no connection to {check.address} within {round(budget(check.timeout) * 1000)} ms", "tcp.timeout"
        )
    except ConnectionRefusedError:
        return failed(check, f"{check.address} refused the connection (nothing listens)", "tcp.down")
    except OSError as e:
        if local_failure(e) is not None:
            return unprobed(check, describe_error(e))
        return failed(check, f"cannot connect to {check.address}: {e.strerror or e}", "tcp.down")
    took = time.monotonic() - started
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return measured(check, {"connect_ms": round(took * 1000, 3)}, [], [], timedelta(seconds=took))
