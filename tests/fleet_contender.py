"""A contender for an app's leadership, as a real process for tests/test_fleet_lease.py (I/O).

    python tests/fleet_contender.py APP HOST LEASE_SECONDS      (DSN in $HEALER_STATE_DSN)

It runs healer.fleet.Leadership and, every 100 ms, once it has led at some epoch, tries one
fenced write into `fleet_test_writes` with that epoch, whether it believes it leads or not: the
fence, not the belief, must keep a stale leader from writing. One JSON line per change of
standing and per write outcome on stdout; SIGTERM stops it (handing the lease back).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from datetime import timedelta

from healer import pg
from healer.errors import FencedError
from healer.fleet import Leadership


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(app: str, host: str, lease: float) -> None:
    leadership = Leadership(pg.server("HEALER_STATE_DSN"), app=app, host=host, lease=timedelta(seconds=lease))
    await leadership.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.create_task(leadership.run(stop))
    say(started=leadership.me)
    leading: int | None = None
    while not stop.is_set():
        now = leadership.epoch if leadership.is_leader else None
        if now != leading:
            leading = now
            if leading is None:
                say(follower=True)
            else:
                say(leader=leading)
        epoch = leadership.epoch
        if epoch is not None:

            async def write(conn: pg.AsyncConnection, epoch: int = epoch) -> None:
                await conn.execute(
                    "INSERT INTO fleet_test_writes (app, holder, epoch) VALUES (%s, %s, %s)",
                    (app, leadership.me, epoch),
                )

            try:
                await leadership.fenced(write)
                say(wrote=epoch)
            except FencedError:
                say(fenced=epoch)
            except pg.Error as e:
                say(lost=epoch, error=type(e).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    await runner
    say(stopped=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
