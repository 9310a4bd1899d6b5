"""Alert delivery with the real slack-sdk and python-telegram-bot against loopback fakes (I/O)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chatfakes import SLACK, SLACK_API, TELEGRAM, ChatFake, healer_config

import healer.logging as hlog
from healer.alerts.message import AlertMessage
from healer.alerts.outbox import DeliveryState, Outbox, Sender
from healer.alerts.shell import Alerts, CycleContext, configured_channels, send_test
from healer.alerts.slack import SlackChannel
from healer.alerts.telegram import TelegramChannel
from healer.clock import FakeClock
from healer.config import Config, Secret
from healer.errors import DeliveryError, UsageError
from healer.logging import RedactingFilter
from healer.model import Alert, Event, Severity
from healer.redact import MASK, add_secrets

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SLACK_ENV = {"webhook_url_env": "SLACK_WEBHOOK_URL"}
TELEGRAM_ENV = {"token_env": "TELEGRAM_BOT_TOKEN", "chat_id_env": "TELEGRAM_CHAT_ID"}

pytestmark = pytest.mark.filterwarnings(
    # python-telegram-bot 22 warns from inside RetryAfter() that retry_after will become a
    # timedelta; healer accepts both (telegram._seconds). Not ours to fix.
    "ignore::telegram.warnings.PTBDeprecationWarning",
)


@pytest.fixture
def fakes() -> Iterator[Callable[[], ChatFake]]:
    started: list[ChatFake] = []

    def start() -> ChatFake:
        f = ChatFake().start()
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


@pytest.fixture
def fake(fakes: Callable[[], ChatFake]) -> ChatFake:
    return fakes()


def use_env(fake: ChatFake, *, slack: ChatFake | None = None, chats: str = "4242") -> None:
    os.environ["SLACK_WEBHOOK_URL"] = (slack or fake).webhook_url
    os.environ["TELEGRAM_BOT_TOKEN"] = fake.token
    os.environ["TELEGRAM_CHAT_ID"] = chats


def config(tmp_path: Path, fake: ChatFake, **kw: object) -> Config:
    tg = {**TELEGRAM_ENV, "api_url": fake.url, **dict(kw.pop("telegram", {}))}  # type: ignore[call-overload]
    return healer_config(tmp_path, slack=dict(SLACK_ENV), telegram=tg, **kw)  # type: ignore[arg-type]


def make_alerts(cfg: Config, clock: FakeClock, *, tries: int = 1) -> Alerts:
    a = Alerts(cfg, clock=clock)
    a.sender.tries = tries  # the quick in-batch retries are tested on their own
    return a


def undelayed(head: str) -> str:
    return re.sub(r"^\[delayed [^\]]+\] ", "", head)


def failing(inc: int = 1) -> CycleContext:
    return CycleContext(
        app="shop-api", commit="4f2a9c1d0e", phase="0-6h", incident_id=inc, incident_since=T0,
        summary="api: http.status", next_step="rollback in 4 more failing cycles",
    )  # fmt: skip


def opened(inc: int = 1, title: str = "api is failing: HTTP 503") -> Alert:
    return Alert(Event.INCIDENT_OPENED, Severity.WARNING, title, "GET /health -> 503", incident_id=inc)


def heads(messages: list[dict[str, object]]) -> list[str]:
    """The first line of each message's text, without Telegram's tags."""
    return [re.sub(r"</?b>", "", str(m["text"]).splitlines()[0]) for m in messages]


# ---- payloads ----------------------------------------------------------------------------------


async def test_slack_webhook_and_telegram_receive_the_payload(tmp_path: Path, fake: ChatFake) -> None:
    """Slack gets blocks + text; Telegram gets escaped HTML with parse_mode=HTML to the chat id."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    await alerts.submit([opened(title="api <b>& down")], failing(), T0)
    await alerts.sender.deliver_due()

    [s] = fake.slack_messages()
    assert [b["type"] for b in s["blocks"]] == ["header", "section", "context"]
    assert "*api &lt;b&gt;&amp; down*" in s["blocks"][1]["text"]["text"]
    assert "api <b>& down" in s["text"]
    [t] = fake.telegram_messages()
    assert t["chat_id"] == "4242"
    assert t["parse_mode"] == "HTML"
    assert "<b>api &lt;b&gt;&amp; down</b>" in t["text"]
    assert "rollback in 4 more failing cycles" in t["text"]
    assert alerts.pending_count() == 0
    alerts.close()


async def test_slack_bot_token_posts_to_the_channel(tmp_path: Path, fake: ChatFake) -> None:
    """With token_env + channel, chat.postMessage carries the channel, blocks and text."""
    os.environ["SLACK_BOT_TOKEN"] = fake.slack_token
    cfg = healer_config(
        tmp_path,
        slack={"token_env": "SLACK_BOT_TOKEN", "channel": "#launch", "api_url": fake.url + "/api/"},
    )
    alerts = make_alerts(cfg, FakeClock(T0))
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()
    [m] = fake.slack_api_messages()
    assert m["channel"] == "#launch"
    assert m["blocks"][0]["type"] == "header"
    assert fake.accepted(SLACK_API)[0].headers["Authorization"] == f"Bearer {fake.slack_token}"
    alerts.close()


async def test_huge_failure_text_reaches_telegram_under_the_limit(tmp_path: Path, fake: ChatFake) -> None:
    """A 10,000-character failure reaches Telegram cut below 4096 characters, Slack below 3000."""
    use_env(fake)
    alerts = make_alerts(config(tmp_path, fake), FakeClock(T0))
    big = Alert(Event.INCIDENT_OPENED, Severity.WARNING, "api <down>", "<trace>&" * 1250, incident_id=1)
    await alerts.submit([big], failing(), T0)
    await alerts.sender.deliver_due()
    [t] = fake.telegram_messages()
    assert len(t["text"]) <= 4096
    assert "[truncated]" in t["text"]
    [s] = fake.slack_messages()
    assert len(s["blocks"][1]["text"]["text"]) <= 3000
    alerts.close()


async def test_several_chat_ids_each_get_the_message_once(tmp_path: Path, fake: ChatFake) -> None:
    """TELEGRAM_CHAT_ID="11,-1002" makes two channels, each delivered once."""
    use_env(fake, chats="11, -1002")
    cfg = config(tmp_path, fake)
    assert [c.name for c in configured_channels(cfg)] == [
        "log",
        "slack",
        "telegram:11",
        "telegram:-1002",
    ]
    alerts = make_alerts(cfg, FakeClock(T0))
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()
    await alerts.sender.deliver_due()
    assert sorted(m["chat_id"] for m in fake.telegram_messages()) == ["-1002", "11"]
    alerts.close()


async def test_routing_keeps_warnings_out_of_a_critical_channel(tmp_path: Path, fake: ChatFake) -> None:
    """Telegram at min_severity critical hears the rollback, not the warning before it."""
    use_env(fake)
    alerts = make_alerts(config(tmp_path, fake, telegram={"min_severity": "critical"}), FakeClock(T0))
    await alerts.submit([opened()], failing(), T0)
    await alerts.submit(
        [Alert(Event.ROLLBACK_STARTED, Severity.CRITICAL, "rolling back to stable-3", incident_id=1)],
        failing(),
        T0,
    )
    await alerts.sender.deliver_due()
    assert heads(fake.slack_messages()) == [
        "🟠 shop-api: Incident opened",
        "🔴 shop-api: Rolling back",
    ]
    assert ["Rolling back" in str(m["text"]) for m in fake.telegram_messages()] == [True]
    alerts.close()


# ---- outages -----------------------------------------------------------------------------------


async def test_slack_down_telegram_up_each_gets_it_once_slack_later_marked_delayed(
    tmp_path: Path, fake: ChatFake
) -> None:
    """Telegram now, Slack after it returns, each exactly once; Slack's copy says it is late."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    fake.set_mode(SLACK, "500")
    await alerts.submit([opened()], failing(), clock.now())
    await alerts.sender.deliver_due()
    assert len(fake.telegram_messages()) == 1
    assert fake.slack_messages() == []
    assert alerts.outbox.pending_count("slack") == 1

    clock.advance(timedelta(minutes=12))
    fake.set_mode(SLACK, "ok")
    await alerts.sender.deliver_due()
    await alerts.sender.deliver_due()
    [s] = fake.slack_messages()
    assert s["text"].startswith("[delayed 12m] ")
    assert len(fake.telegram_messages()) == 1
    [rec] = alerts.history()
    assert {d.channel: d.state for d in rec.deliveries} == {
        "log": DeliveryState.DELIVERED,
        "slack": DeliveryState.DELIVERED,
        "telegram": DeliveryState.DELIVERED,
    }  # fmt: skip
    alerts.close()


async def test_connection_refused_then_back(tmp_path: Path, fakes: Callable[[], ChatFake]) -> None:
    """Slack's port refusing connections keeps the alert; it goes out when the port answers."""
    tg, sl = fakes(), fakes()
    use_env(tg, slack=sl)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, tg), clock)
    sl.stop()
    await alerts.submit([opened()], failing(), clock.now())
    await alerts.sender.deliver_due()
    [rec] = alerts.history()
    err = {d.channel: d.last_error for d in rec.deliveries}["slack"]
    assert err is not None and err.startswith("slack: cannot connect")
    sl.start()
    clock.advance(timedelta(minutes=1))
    await alerts.sender.deliver_due()
    assert len(sl.slack_messages()) == 1
    alerts.close()


async def test_channel_down_for_many_cycles_then_back_delivers_everything_once_in_order(
    tmp_path: Path, fake: ChatFake
) -> None:
    """Ten cycles of alerts while Slack answers 500; then all ten arrive once, in order."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    fake.set_mode(SLACK, "500")
    for n in range(10):
        await alerts.submit(
            [Alert(Event.PHASE_CHANGED, Severity.INFO, f"step {n}")],
            CycleContext("shop-api"),
            clock.now(),
        )
        await alerts.sender.deliver_due()
        clock.advance(timedelta(minutes=1))
    assert fake.slack_messages() == []
    steps = [m["text"].splitlines()[1] for m in fake.telegram_messages() if "Phase changed" in m["text"]]
    assert steps == [f"<b>step {n}</b>" for n in range(10)]

    fake.set_mode(SLACK, "ok")
    clock.advance(timedelta(minutes=15))
    await alerts.sender.deliver_due()
    got = [m["text"].splitlines()[1] for m in fake.slack_messages()]
    assert got == [f"step {n}" for n in range(10)]
    await alerts.sender.deliver_due()
    assert len(fake.slack_messages()) == 10
    alerts.close()


async def test_a_channel_that_keeps_failing_is_announced_once_through_the_others(
    tmp_path: Path, fake: ChatFake
) -> None:
    """After three failed batches Telegram hears "slack alerts are not getting through", once."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    fake.set_mode(SLACK, "500")
    await alerts.submit([opened()], failing(), clock.now())
    for _ in range(6):
        await alerts.sender.deliver_due()
        clock.advance(timedelta(minutes=20))
    meta = [m for m in fake.telegram_messages() if "not getting through" in m["text"]]
    assert len(meta) == 1
    assert "server error 500" in meta[0]["text"]
    assert "slack" in next(r for r in alerts.history() if r.event == "meta.channel_failing").message.detail
    # the meta alert is not queued for the failing channel itself
    [rec] = [r for r in alerts.history() if r.event == "meta.channel_failing"]
    assert {d.channel for d in rec.deliveries} == {"log", "telegram"}
    alerts.close()


async def test_permanent_refusal_is_not_retried_and_is_announced(tmp_path: Path, fake: ChatFake) -> None:
    """A 404 from the webhook marks the message failed for Slack at once and tells Telegram."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    fake.set_mode(SLACK, "4xx", status=404)
    await alerts.submit([opened()], failing(), clock.now())
    await alerts.sender.deliver_due()
    await alerts.sender.deliver_due()
    clock.advance(timedelta(hours=1))
    await alerts.sender.deliver_due()
    assert len([r for r in fake.requests if r.service == SLACK]) == 1
    rec = alerts.history()[0]
    d = {x.channel: x for x in rec.deliveries}["slack"]
    assert d.state is DeliveryState.FAILED and d.last_error == "slack: refused with 404 no_service"
    assert any("not getting through" in m["text"] for m in fake.telegram_messages())
    alerts.close()


async def test_timeout_counts_as_a_failure_and_is_retried(tmp_path: Path, fake: ChatFake) -> None:
    """A webhook slower than alerts.timeout fails that batch; the next batch delivers it once."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake, timeout="1s"), clock)
    fake.set_mode(SLACK, "slow", delay=2.5, times=1)
    await alerts.submit([opened()], failing(), clock.now())
    await alerts.sender.deliver_due()
    [rec] = alerts.history()
    err = {d.channel: d.last_error for d in rec.deliveries}["slack"]
    assert err is not None and "no answer within" in err
    clock.advance(timedelta(minutes=1))
    await alerts.sender.deliver_due()
    assert len(fake.slack_messages()) == 1
    alerts.close()


# ---- 429 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", [SLACK, TELEGRAM])
async def test_429_waits_retry_after_before_the_next_try(tmp_path: Path, fake: ChatFake, service: str) -> None:
    """Slack's Retry-After header and Telegram's retry_after are honoured within the batch."""
    use_env(fake)
    alerts = make_alerts(config(tmp_path, fake), FakeClock(T0), tries=3)
    fake.set_mode(service, "429", retry_after=1, times=1)
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()
    tries = [r for r in fake.requests if r.service == service]
    assert [r.status for r in tries] == [429, 200]
    assert tries[1].at - tries[0].at >= 1.0
    assert alerts.pending_count() == 0
    alerts.close()


@pytest.mark.parametrize("service", [SLACK, TELEGRAM])
async def test_a_long_retry_after_reschedules_the_message(tmp_path: Path, fake: ChatFake, service: str) -> None:
    """Retry-After: 120 is not slept through: the row waits until then, and goes then."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock, tries=3)
    fake.set_mode(service, "429", retry_after=120, times=1)
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()
    channel = "slack" if service == SLACK else "telegram"
    assert alerts.outbox.next_try_at(channel) == T0 + timedelta(seconds=120)
    clock.advance(timedelta(seconds=119))
    await alerts.sender.deliver_due()
    assert len([r for r in fake.requests if r.service == service]) == 1
    clock.advance(timedelta(seconds=1))
    await alerts.sender.deliver_due()
    assert [r.status for r in fake.requests if r.service == service] == [429, 200]
    alerts.close()


async def test_retry_after_as_int_or_timedelta(monkeypatch: pytest.MonkeyPatch, fake: ChatFake) -> None:
    """PTB gives retry_after as an int, or as a timedelta with PTB_TIMEDELTA=1: both are read."""
    ch = TelegramChannel(token=Secret(fake.token), chat_id="1", api_url=fake.url)
    msg = AlertMessage(items=(Alert(Event.TEST, Severity.INFO, "t"),), app="a", created_at=T0)
    for env in ("0", "1"):
        monkeypatch.setenv("PTB_TIMEDELTA", env)
        fake.set_mode(TELEGRAM, "429", retry_after=7, times=1)
        with pytest.raises(DeliveryError) as e:
            await ch.send(msg)
        assert e.value.retry_after == 7.0 and not e.value.permanent


# ---- the sender task ---------------------------------------------------------------------------


async def test_sender_task_delivers_in_the_background_and_stops_cleanly(tmp_path: Path, fake: ChatFake) -> None:
    """run(stop) delivers what submit queues without the caller waiting, and ends on stop."""
    use_env(fake)
    alerts = Alerts(config(tmp_path, fake))
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run(stop))
    await alerts.submit([opened()], failing(), datetime.now(UTC))
    for _ in range(100):
        if fake.slack_messages() and fake.telegram_messages():
            break
        await asyncio.sleep(0.05)
    assert len(fake.slack_messages()) == 1 and len(fake.telegram_messages()) == 1
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    alerts.close()


async def test_a_hanging_channel_does_not_hold_up_the_others(tmp_path: Path, fake: ChatFake) -> None:
    """While Slack takes its time, Telegram is delivered by its own task."""
    use_env(fake)
    alerts = Alerts(config(tmp_path, fake, timeout="3s"))
    fake.set_mode(SLACK, "slow", delay=2.0, times=1)
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run(stop))
    await alerts.submit([opened()], failing(), datetime.now(UTC))
    while not fake.telegram_messages():
        await asyncio.sleep(0.02)
    # Telegram was delivered while Slack's request was still waiting for its answer
    (slack,) = [r for r in fake.requests if r.service == SLACK]
    assert slack.status == 0
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    alerts.close()


async def test_flush_delivers_what_is_pending_at_shutdown(tmp_path: Path, fake: ChatFake) -> None:
    """flush() tries everything now, retry times or not, and reports what is left."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    fake.set_mode(SLACK, "500", times=1)
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()  # slack fails and is scheduled 30s later
    await alerts.submit(
        [Alert(Event.HEALER_STOPPED, Severity.INFO, "stopped by SIGTERM")], CycleContext("shop-api"), T0
    )
    assert await alerts.flush(timedelta(seconds=5)) == 0
    assert len(fake.slack_messages()) == 2
    fake.set_mode(SLACK, "500")
    await alerts.submit([Alert(Event.HEALER_STOPPED, Severity.INFO, "again")], CycleContext("shop-api"), T0)
    assert await alerts.flush(timedelta(seconds=5)) == 1  # kept for the next start
    alerts.close()


KILLED_CHILD = """
import os, signal, sys
from datetime import UTC, datetime
from healer.alerts.message import AlertMessage
from healer.alerts.outbox import Outbox
from healer.model import Alert, Event, Severity
ob = Outbox(sys.argv[1])
for n in range(3):
    item = Alert(Event.PHASE_CHANGED, Severity.INFO, f"queued {n}")
    message = AlertMessage(items=(item,), app="shop-api", created_at=datetime.now(UTC))
    ob.enqueue(message, ["slack", "telegram"])
os.kill(os.getpid(), signal.SIGKILL)
"""


async def test_killed_with_alerts_queued_then_restarted_delivers_all(tmp_path: Path, fake: ChatFake) -> None:
    """kill -9 right after queuing: the next start delivers every queued alert once."""
    use_env(fake)
    cfg = config(tmp_path, fake)
    cfg.db_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", KILLED_CHILD, str(cfg.db_path)], check=False, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    alerts = make_alerts(cfg, FakeClock(datetime.now(UTC)))
    assert alerts.pending_count() == 6
    await alerts.sender.deliver_due()
    assert [m["text"].splitlines()[1] for m in fake.slack_messages()] == [
        "queued 0",
        "queued 1",
        "queued 2",
    ]
    assert len(fake.telegram_messages()) == 3
    assert alerts.pending_count() == 0
    alerts.close()


# ---- secrets -----------------------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Root handlers: one raw (no filter) then one with healer's filter; libraries at DEBUG."""
    raw, clean = io.StringIO(), io.StringIO()
    h_raw, h_clean = logging.StreamHandler(raw), logging.StreamHandler(clean)
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    h_raw.setFormatter(fmt)
    h_clean.setFormatter(fmt)
    h_clean.addFilter(RedactingFilter())
    root = logging.getLogger()
    saved = root.level, {n: logging.getLogger(n).level for n in hlog.QUIET_LOGGERS}
    root.addHandler(h_raw)
    root.addHandler(h_clean)
    root.setLevel(logging.DEBUG)
    for n in hlog.QUIET_LOGGERS:
        logging.getLogger(n).setLevel(logging.DEBUG)
    yield raw, clean
    root.removeHandler(h_raw)
    root.removeHandler(h_clean)
    root.setLevel(saved[0])
    for n, lv in saved[1].items():
        logging.getLogger(n).setLevel(lv)


async def test_token_and_webhook_never_appear_in_logs_errors_or_alert_text(
    tmp_path: Path, fake: ChatFake, capture: tuple[io.StringIO, io.StringIO]
) -> None:
    """With httpx, slack_sdk and telegram logging at DEBUG, the filtered log has neither secret."""
    raw, clean = capture
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    token, webhook = fake.token, fake.webhook_url
    token_tail = token.split(":", 1)[1]
    # a check's error text that happens to hold the secrets
    leaky = Alert(
        Event.INCIDENT_OPENED,
        Severity.WARNING,
        "api failing",
        f"curl {webhook} bot{token}",
        incident_id=1,
    )
    await alerts.submit([leaky], failing(), T0)
    await alerts.sender.deliver_due()
    fake.set_mode(SLACK, "500")
    fake.set_mode(TELEGRAM, "reset")
    await alerts.submit([Alert(Event.PHASE_CHANGED, Severity.INFO, "6-24h")], CycleContext("shop-api"), T0)
    await alerts.sender.deliver_due()

    errors: list[str] = []
    bad_tg = TelegramChannel(token=Secret("999999:" + "Q" * 35), chat_id="1", api_url=fake.url)
    bad_slack = SlackChannel(webhook_url=Secret(fake.url + "/services/T1/B1/wrongsecretpath"))
    msg = AlertMessage(items=(Alert(Event.TEST, Severity.INFO, "t"),), app="a", created_at=T0)
    fake.set_mode(TELEGRAM, "ok")
    for ch in (bad_tg, bad_slack):
        with pytest.raises(DeliveryError) as e:
            await ch.send(msg)
        errors.append(str(e.value))
    assert errors[0] == "telegram: the bot token was rejected: Unauthorized"
    assert errors[1] == "slack: refused with 404 no_service"

    assert token_tail in raw.getvalue()  # the libraries do log it ...
    logged = clean.getvalue()
    assert "HTTP Request: POST" in logged  # ... and those lines are kept, redacted
    for secret in (token_tail, webhook, fake.webhook_path, "Q" * 35, "wrongsecretpath"):
        assert secret not in logged
        assert secret not in fake.all_text()  # what the chats received
        assert all(secret not in e for e in errors)
        for rec in alerts.history():
            assert secret not in str(rec.to_json()) and secret not in rec.message.detail
    alerts.close()


async def test_a_message_sent_directly_reaches_the_chats_redacted(tmp_path: Path, fake: ChatFake) -> None:
    """Without the outbox (healer sends directly when its store is down), a known secret and a
    URL password in the text still reach Slack and Telegram masked."""
    add_secrets("R3disPw-direct<&>")
    item = Alert(
        Event.ROLLBACK_FAILED, Severity.CRITICAL, "stable-1 is not healthy either",
        "after command 1 exited 1: REDIS=R3disPw-direct<&> postgresql://shop:DbPw-direct@db/shop",
    )  # fmt: skip
    msg = AlertMessage(items=(item,), app="shop", created_at=T0)
    slack = SlackChannel(webhook_url=Secret(fake.webhook_url))
    telegram = TelegramChannel(token=Secret(fake.token), chat_id="4242", api_url=fake.url)
    for channel in (slack, telegram):
        await channel.send(msg)
    received = fake.all_text()
    assert len(fake.slack_messages()) == 1 and len(fake.telegram_messages()) == 1
    for leak in ("R3disPw-direct", "R3disPw-direct&lt;&amp;&gt;", "DbPw-direct"):
        assert leak not in received
    assert f"postgresql://shop:{MASK}@db/shop" in fake.telegram_messages()[0]["text"]


# ---- alert test --------------------------------------------------------------------------------


async def test_send_test_reports_per_channel(tmp_path: Path, fake: ChatFake) -> None:
    """`healer alert test`: every channel says delivered, or why not."""
    use_env(fake)
    cfg = config(tmp_path, fake)
    assert await send_test(cfg) == {
        "log": (True, "delivered"),
        "slack": (True, "delivered"),
        "telegram": (True, "delivered"),
    }
    assert "healer can reach this channel" in fake.telegram_messages()[0]["text"]
    fake.set_mode(TELEGRAM, "4xx")
    assert await send_test(cfg, "telegram") == {"telegram": (False, "telegram: bad request: Chat not found")}


async def test_send_test_names_a_missing_secret(tmp_path: Path, fake: ChatFake) -> None:
    """A configured channel whose env var is unset fails with a clear reason; healer keeps going."""
    use_env(fake)
    del os.environ["SLACK_WEBHOOK_URL"]
    cfg = config(tmp_path, fake)
    result = await send_test(cfg)
    assert result["slack"] == (False, "slack: SLACK_WEBHOOK_URL is not set")
    assert result["telegram"] == (True, "delivered")
    del os.environ["TELEGRAM_CHAT_ID"]
    assert await send_test(cfg, "telegram") == {"telegram": (False, "telegram: TELEGRAM_CHAT_ID is not set")}


async def test_send_test_unknown_channel_is_a_usage_error(tmp_path: Path, fake: ChatFake) -> None:
    """--channel sms names the configured channels."""
    use_env(fake)
    with pytest.raises(UsageError, match="unknown channel 'sms'; configured: log, slack, telegram"):
        await send_test(config(tmp_path, fake), "sms")
    with pytest.raises(UsageError, match=r"configured: log$"):
        await send_test(healer_config(tmp_path), "slack")


async def test_missing_secret_keeps_alerts_queued(tmp_path: Path, fake: ChatFake) -> None:
    """Without SLACK_WEBHOOK_URL, Slack's rows wait (retried in 15 minutes); the rest goes out."""
    use_env(fake)
    del os.environ["SLACK_WEBHOOK_URL"]
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock, tries=3)
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()
    assert len(fake.telegram_messages()) == 1
    assert alerts.outbox.next_try_at("slack") == T0 + timedelta(minutes=15)
    [rec] = alerts.history()
    assert {d.channel: d.last_error for d in rec.deliveries}["slack"] == "slack: SLACK_WEBHOOK_URL is not set"
    alerts.close()


# ---- the whole story ---------------------------------------------------------------------------


async def test_broken_deploy_story_with_slack_down_for_half(tmp_path: Path, fake: ChatFake) -> None:
    """Repair, then rollback: both chats get a short ordered story, no duplicates, nothing lost."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake), clock)
    quiet = CycleContext("shop-api", commit="4f2a9c1", phase="0-6h")
    cycles: list[tuple[list[Alert], CycleContext]] = [
        ([Alert(Event.HEALER_STARTED, Severity.INFO, "watching 4f2a9c1 for 72h")], quiet),
        (
            [
                opened(),
                Alert(Event.REPAIR_STARTED, Severity.WARNING, "process-restart for api", incident_id=1),
            ],
            failing(),
        ),
        (
            [
                Alert(
                    Event.REPAIR_FAILED,
                    Severity.WARNING,
                    "process-restart did not fix api",
                    incident_id=1,
                )
            ],
            failing(),
        ),
        ([opened()], failing()),  # decide repeats itself; the pipeline does not
        ([], failing()),
        (
            [Alert(Event.ROLLBACK_STARTED, Severity.CRITICAL, "rolling back to stable-3", incident_id=1)],
            failing(),
        ),
        (
            [Alert(Event.ROLLBACK_SUCCEEDED, Severity.CRITICAL, "stable-3 is healthy", incident_id=1)],
            failing(),
        ),
        ([], failing()),
        ([Alert(Event.INCIDENT_RESOLVED, Severity.INFO, "api is healthy again", incident_id=1)], quiet),
    ]
    for n, (intents, ctx) in enumerate(cycles):
        if n == 2:
            fake.set_mode(SLACK, "500")
        if n == 7:
            fake.set_mode(SLACK, "ok")
        await alerts.submit(intents, ctx, clock.now())
        await alerts.sender.deliver_due()
        clock.advance(timedelta(minutes=2))
    await alerts.sender.deliver_due()

    story = [
        "🔵 shop-api: Watching",
        "🟠 shop-api: Incident opened",
        "🟠 shop-api: Repair failed",
        "🔴 shop-api: Rolling back",
        "✅ shop-api: Rolled back",
        "✅ shop-api: Resolved",
    ]
    telegram = [undelayed(h) for h in heads(fake.telegram_messages())]
    assert telegram.count("🟠 shop-api: Alert channel failing") == 1  # Slack's outage, said once
    assert [h for h in telegram if "Alert channel failing" not in h] == story
    slack = heads(fake.slack_messages())
    assert [undelayed(h) for h in slack] == story
    assert [h.split("]")[0] + "]" for h in slack if h.startswith("[delayed")] == [
        "[delayed 10m]", "[delayed 4m]", "[delayed 2m]"
    ]  # fmt: skip
    assert alerts.pending_count() == 0
    alerts.close()


def test_configured_channels_without_chat_sections_is_just_the_log(tmp_path: Path) -> None:
    """No [alerts.slack] or [alerts.telegram]: the log channel alone, never an error."""
    assert [c.name for c in configured_channels(healer_config(tmp_path))] == ["log"]


async def test_unexpected_channel_error_is_pushed_back_not_fatal(tmp_path: Path) -> None:
    """A channel that raises something unexpected fails that delivery; the sender carries on."""

    class Broken:
        name = kind = "broken"
        min_severity = Severity.INFO

        async def send(self, message: AlertMessage, *, delayed: timedelta | None = None) -> None:
            raise RuntimeError("boom")

    ob = Outbox(tmp_path / "h.db")
    sender = Sender(ob, [Broken()], clock=FakeClock(T0), tries=1)
    msg = AlertMessage(items=(Alert(Event.TEST, Severity.INFO, "t"),), app="a", created_at=T0)
    ob.enqueue(msg, ["broken"])
    await sender.deliver_due()
    [rec] = ob.history()
    assert rec.deliveries[0].last_error == "broken: unexpected error: RuntimeError: boom"
    assert rec.deliveries[0].state is DeliveryState.PENDING
    ob.close()


async def test_flush_while_the_sender_runs_sends_nothing_twice(tmp_path: Path, fake: ChatFake) -> None:
    """flush() at shutdown waits for the channel's pass in flight instead of racing it."""
    use_env(fake)
    alerts = Alerts(config(tmp_path, fake, timeout="3s"))
    fake.set_mode(SLACK, "slow", delay=0.5, times=1)
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run(stop))
    await alerts.submit([opened()], failing(), datetime.now(UTC))
    await asyncio.sleep(0.1)  # the slack worker is inside its send now
    await alerts.flush(timedelta(seconds=5))
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    # the slow answer counts as delivered (slack-sdk got its 200); it is not sent again
    assert len([r for r in fake.requests if r.service == SLACK]) == 1
    assert len(fake.telegram_messages()) == 1
    alerts.close()


async def test_channel_failing_reaches_a_critical_only_chat(tmp_path: Path, fake: ChatFake) -> None:
    """The alert about alerting goes to every other channel, whatever its minimum severity."""
    use_env(fake)
    clock = FakeClock(T0)
    alerts = make_alerts(config(tmp_path, fake, telegram={"min_severity": "critical"}), clock)
    fake.set_mode(SLACK, "4xx", status=410)
    await alerts.submit([opened()], failing(), T0)
    await alerts.sender.deliver_due()
    await alerts.sender.deliver_due()
    [m] = fake.telegram_messages()
    assert "slack alerts are not getting through" in m["text"]
    assert "refused with 410" in m["text"]
    alerts.close()


async def test_sender_survives_a_store_it_cannot_read(tmp_path: Path, fake: ChatFake) -> None:
    """A worker whose pass raises logs it and keeps running until stop."""
    use_env(fake)
    alerts = Alerts(config(tmp_path, fake))
    alerts.sender.poll = timedelta(milliseconds=50)
    calls = 0
    real_due = alerts.outbox.due

    def flaky_due(*args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("disk on fire")
        return real_due(*args, **kw)  # type: ignore[arg-type]

    alerts.outbox.due = flaky_due  # type: ignore[method-assign,assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run(stop))
    await alerts.submit([opened()], failing(), datetime.now(UTC))
    for _ in range(100):
        if fake.slack_messages() and fake.telegram_messages():
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(fake.slack_messages()) == 1 and len(fake.telegram_messages()) == 1
    alerts.close()
