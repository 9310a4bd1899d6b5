"""A state dir on a real full filesystem (a 2 MB tmpfs): the loop judges and acts from memory,
alerts go straight to the chats, and everything is written once there is room again."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from chatfakes import ChatFake, healer_config
from helpers import commit, config_from, make_repo
from smalldisk import SmallDisk

from healer.alerts.message import NOT_RECORDED
from healer.alerts.shell import Alerts, CycleContext
from healer.backlog import BufferedStore
from healer.checks import probe_context
from healer.clock import FakeClock
from healer.config import Config
from healer.errors import StoreError
from healer.loop import Watchdog
from healer.model import Alert, Outcome, Severity, Who
from healer.store import Store

pytestmark = pytest.mark.filterwarnings(
    # python-telegram-bot 22 warns from inside RetryAfter(); not ours (see test_alerts_delivery)
    "ignore::telegram.warnings.PTBDeprecationWarning",
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], SmallDisk]]:
    mounted: list[SmallDisk] = []

    def mount(name: str) -> SmallDisk:
        disk = SmallDisk(tmp_path / name)
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        disk.close()


def loop_config(tmp_path: Path, url: str) -> Config:
    repo = make_repo(tmp_path / "app")
    return config_from(
        tmp_path,
        f"""
        state_dir = "state"
        [app]
        name = "shop"
        repo = "{repo}"
        [escalation]
        rollback_after = 50
        [[checks]]
        name = "api"
        type = "http"
        url = "{url}/health"
        timeout = "2s"
        samples = 1
    """,
    )


async def test_a_full_disk_keeps_the_count_and_the_incident_in_memory_and_writes_them_later(
    tmp_path: Path, http_app: Callable[..., object], small_disk: Callable[[str], SmallDisk]
) -> None:
    """Failing cycles on a full disk count, open an incident and set the cadence from memory;
    freed, every cycle, the incident and an action are written in order with real ids."""
    disk = small_disk("state")
    app = http_app("healthy")
    config = loop_config(tmp_path, str(app))
    clock = FakeClock()
    store = BufferedStore(config.db_path)
    reader = Store(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock)
            await dog.step()  # the healthy baseline, written
            disk.fill()
            app.behaviour = "error500"  # type: ignore[attr-defined]
            for _ in range(3):
                clock.advance(timedelta(minutes=1))
                await dog.step()
            assert store.write_error is not None and "disk is full" in store.write_error
            d = store.current_deploy()
            assert d is not None and d.consecutive_failures == 3 and d.last_ok is False
            assert d.open_incident is not None and d.open_incident < 0  # provisional: not written yet
            assert await dog.due_at(d) == clock.now() + config.schedule.incident_every
            action = store.start_action(
                kind="repair", name="process-restart", who=Who.LOOP, reason="api down", now=clock.now(),
                deploy_id=d.id, incident_id=d.open_incident, outcome=Outcome.FAILED,
            )  # fmt: skip
            assert [r.name for r in store.past_repairs(d.id)] == ["process-restart"]  # backoffs see it
            assert [c.ok for c in reader.cycles()] == [True]  # the database has only the healthy cycle
            assert reader.incidents() == []

            disk.free()
            store.retry()
    finally:
        store.close()
    assert store.write_error is None and store.backlog == 0
    try:
        assert [c.ok for c in reader.cycles()] == [True, False, False, False]
        [incident] = reader.incidents()
        stored = reader.current_deploy()
        assert stored is not None and stored.consecutive_failures == 3 and stored.open_incident == incident.id
        [row] = reader.actions(kind="repair")
        assert (row.incident_id, row.deploy_id, row.outcome) == (incident.id, stored.id, "failed")
        assert store._id(action) == row.id  # an id still in hand maps to the row written
    finally:
        reader.close()


async def test_a_long_outage_forgets_the_oldest_routine_cycles_but_not_the_incident(
    tmp_path: Path, http_app: Callable[..., object], small_disk: Callable[[str], SmallDisk]
) -> None:
    """The backlog is bounded: beyond `limit` the oldest counter-only cycles go, the incident stays."""
    disk = small_disk("state")
    app = http_app("healthy")
    config = loop_config(tmp_path, str(app))
    clock = FakeClock()
    store = BufferedStore(config.db_path, limit=4)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock)
            await dog.step()
            disk.fill()
            app.behaviour = "error500"  # type: ignore[attr-defined]
            for _ in range(8):
                clock.advance(timedelta(minutes=1))
                await dog.step()
            assert store.backlog == 4
            disk.free()
            store.retry()
            assert store.take_counts() == (4, 4)  # 4 written, 4 forgotten
            cycles = store.cycles()
            d = store.current_deploy()
            incidents = store.incidents()
    finally:
        store.close()
    assert [c.ok for c in cycles] == [True, False, False, False, False]
    assert cycles[1].at == cycles[0].at + timedelta(minutes=1)  # the one that opened the incident
    assert cycles[-1].at == cycles[0].at + timedelta(minutes=8)
    assert d is not None and d.consecutive_failures == 8
    assert len(incidents) == 1 and d.open_incident == incidents[0].id


async def test_a_deploy_during_the_outage_gets_its_window_in_memory_and_in_the_database_later(
    tmp_path: Path, http_app: Callable[..., object], small_disk: Callable[[str], SmallDisk]
) -> None:
    """A new HEAD on a full disk starts a new window from memory (closing the old incident);
    freed, both deploys and each one's cycles are written."""
    disk = small_disk("state")
    app = http_app("error500")
    config = loop_config(tmp_path, str(app))
    assert config.app.repo is not None
    clock = FakeClock()
    store = BufferedStore(config.db_path)
    try:
        async with probe_context(config) as ctx:
            dog = Watchdog(config, store, ctx, clock=clock)
            await dog.step()  # failing: an incident opens, written
            disk.fill()
            sha = commit(config.app.repo, "v2")
            app.behaviour = "healthy"  # type: ignore[attr-defined]
            clock.advance(timedelta(minutes=1))
            report = await dog.step()
            assert report.deploy.commit == sha and report.deploy.id < 0 and report.verdict.ok
            d = store.current_deploy()
            assert d is not None and d.id == report.deploy.id and d.baseline is not None
            assert (d.consecutive_passes, d.open_incident) == (1, None)
            disk.free()
            store.retry()
            deploys = store.deploys()
            cycles = store.cycles()
            incidents = store.incidents()
    finally:
        store.close()
    assert [d.commit for d in deploys][-1] == sha and len(deploys) == 2
    assert [(c.deploy_id, c.ok) for c in cycles] == [(deploys[0].id, False), (deploys[1].id, True)]
    assert deploys[1].baseline is not None and deploys[1].first_seen == clock.now()
    [incident] = incidents
    assert incident.resolved_at == clock.now() and "a new commit was deployed" in incident.cause


def chat_config(tmp_path: Path, fake: ChatFake) -> Config:
    os.environ["TELEGRAM_BOT_TOKEN"] = fake.token
    os.environ["TELEGRAM_CHAT_ID"] = "4242"
    return healer_config(
        tmp_path, telegram={"token_env": "TELEGRAM_BOT_TOKEN", "chat_id_env": "TELEGRAM_CHAT_ID", "api_url": fake.url}
    )


async def test_alerts_go_straight_to_the_chat_marked_not_recorded_and_are_written_later(
    tmp_path: Path, small_disk: Callable[[str], SmallDisk]
) -> None:
    """An outbox that cannot be written: the chat gets the alert at once, marked, once; freed,
    the history has it as delivered."""
    disk = small_disk(".healer")
    fake = ChatFake().start()
    clock = FakeClock()
    alerts = Alerts(chat_config(tmp_path, fake), clock=clock)
    context = CycleContext(app="shop-api", incident_id=-1, incident_since=clock.now(), summary="api: http.status")
    opened = Alert("incident.opened", Severity.WARNING, "api is failing", "GET /health -> 500", incident_id=-1)
    try:
        started = Alert("healer.started", Severity.INFO, "act mode", "started")
        await alerts.submit([started], CycleContext("shop-api"), clock.now())
        await alerts.sender.deliver_due()
        disk.fill()
        await alerts.submit([opened], context, clock.now())
        [_, sent] = fake.telegram_messages()
        assert NOT_RECORDED in sent["text"] and "api is failing" in sent["text"]
        clock.advance(timedelta(minutes=1))
        await alerts.submit([opened], context, clock.now())  # the same again: deduplicated from memory
        assert len(fake.telegram_messages()) == 2
        assert [r.event for r in alerts.history()] == ["healer.started"]

        disk.free()
        clock.advance(timedelta(minutes=1))
        await alerts.submit([], context, clock.now())
        history = alerts.history()
    finally:
        alerts.close()
        fake.stop()
    assert [r.event for r in history] == ["healer.started", "incident.opened"]
    assert {d.channel: d.state.value for d in history[1].deliveries} == {"log": "delivered", "telegram": "delivered"}


async def test_a_delivery_the_outbox_cannot_record_is_not_sent_again(
    tmp_path: Path, small_disk: Callable[[str], SmallDisk]
) -> None:
    """Sent, then the disk is full when marking it delivered: the sender does not resend it and
    marks it once there is room."""
    disk = small_disk(".healer")
    fake = ChatFake().start()
    clock = FakeClock()
    alerts = Alerts(chat_config(tmp_path, fake), clock=clock)
    try:
        await alerts.submit([Alert("healer.started", Severity.INFO, "act mode", "started")], CycleContext("shop-api"),
                            clock.now())  # fmt: skip
        disk.fill()
        for _ in range(3):
            with pytest.raises(StoreError, match="disk is full"):  # the sender's worker logs it, once
                await alerts.sender.deliver_due()
            clock.advance(timedelta(minutes=5))
        assert len(fake.telegram_messages()) == 1
        assert alerts.pending_count() == 2  # log and telegram: neither could be marked
        disk.free()
        await alerts.sender.deliver_due()
        assert alerts.pending_count() == 0
        assert len(fake.telegram_messages()) == 1
    finally:
        alerts.close()
        fake.stop()
