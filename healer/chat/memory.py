"""What chat-ops remembers between updates (I/O, blocking: call it from a worker thread): the
next Telegram update to ask for, and the buttons whose work is done.

One healer keeps them in its own store. A fleet keeps them in the tables every host shares
(fleet_store: fleet_chat), so that whichever healer leads next goes on where the last leader
stopped: it never asks Telegram again for an update the last leader acted on (Telegram forgets
an update only at the next getUpdates, which a leader that stopped never sends), and a second
press of a button says "already done" whoever answered the first.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime

from healer.config import Config

OFFSET_KEY = "telegram_offset"  # the next update id to ask for
_PRESS = "press:"  # + a button's data: what its press did


def _fleet_app(config: Config) -> str | None:
    """The app's name in the fleet's tables; None without [fleet] (this healer's own store)."""
    return None if config.fleet is None else config.fleet_app


def _recall(config: Config, app: str, key: str) -> str | None:
    from healer import fleet_store
    from healer.db import Database

    with closing(Database(config.shared_db)) as db:
        return fleet_store.chat_value(db, app, key)


def _keep(config: Config, app: str, key: str, value: str) -> None:
    from healer import fleet_store
    from healer.db import Database

    with closing(Database(config.shared_db)) as db:
        fleet_store.keep_chat_value(db, app, key, value)


def offset(config: Config) -> int | None:
    """The next Telegram update to ask for; None: whatever Telegram holds."""
    from healer.store import Store

    app = _fleet_app(config)
    if app is not None:
        value = _recall(config, app, OFFSET_KEY)
    else:
        with Store(config.state_db) as store:
            value = store.meta().get(OFFSET_KEY)
    return int(value) if value else None


def keep_offset(config: Config, value: int) -> None:
    """Kept before an update is acted on: a restart (even kill -9) or a new leader never runs it twice."""
    from healer.store import Store

    app = _fleet_app(config)
    if app is not None:
        _keep(config, app, OFFSET_KEY, str(value))
        return
    with Store(config.state_db) as store:
        store.set_meta(**{OFFSET_KEY: str(value)})


def earlier_press(config: Config, data: str) -> str | None:
    """What an earlier press of this very button did; None: it was not done."""
    from healer.store import Store

    app = _fleet_app(config)
    if app is not None:
        return _recall(config, app, _PRESS + data)
    with Store(config.state_db) as store:
        return store.press(data)


def record_press(config: Config, data: str, user: str, what: str, now: datetime) -> None:
    from healer.store import Store

    app = _fleet_app(config)
    if app is not None:
        _keep(config, app, _PRESS + data, what)
        return
    with Store(config.state_db) as store:
        store.record_press(data, user, what, now)
