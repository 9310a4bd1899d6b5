"""Chat-ops' dispatcher: what healer does with a chat command or a pressed button, whatever the
chat (I/O).

The platform listeners (chat/telegram.py, chat/slack.py) turn their updates into two calls:

    reply = await dispatcher.command(user, text)     # "/pause 10m db migration"
    step = await dispatcher.press(user, data, key)   # a button's callback data, the bot's key

and render what comes back: a reply (text, maybe with buttons), or a press's `Step` (a short
answer at once, the buttons to show now, and an action whose result edits the message).
Everything runs through healer/operations.py, as the CLI does. Refusals change nothing.

In a fleet only the leader listens (fleet.while_leading), and `leading()` gates every update:
a listener checks it right before acting on one, and leaves the update to the next leader when
it says no. The leader speaks for the fleet: /status shows every host, /pause, /resume and the
Pause and Resume buttons act on every host, /ack acks every host's open incident and an alert's
Ack button the incident of the host that sent the alert; /repair runs on the leader's host only
(processes are local), and says where to run it otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from healer import operations
from healer.chat import memory
from healer.chatops import (
    CONFIRM_LIFETIME,
    DESTRUCTIVE,
    PAUSE_BUTTON,
    USAGE,
    Button,
    Command,
    Press,
    Refused,
    Stage,
    Unknown,
    Verb,
    alert_buttons,
    confirm_buttons,
    host_tag,
    is_allowed,
    parse_command,
    read_press,
)
from healer.clock import Clock, SystemClock
from healer.config import Config, format_duration, parse_duration
from healer.errors import HealerError
from healer.logging import log_event
from healer.model import Outcome
from healer.operations import Actor, on_hosts

log = logging.getLogger("healer.chat")

NOT_ALLOWED = "not allowed"
HISTORY_ROWS = 10


@dataclass(frozen=True, slots=True)
class Reply:
    """What healer answers a command: text, and buttons (a confirmation) issued at `issued`."""

    text: str
    buttons: tuple[Button, ...] = ()
    issued: datetime | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What a press does: `answer` at once (a toast); `buttons` to show now (None: leave them);
    then `run`, whose result is added to the message, which loses its buttons."""

    answer: str
    buttons: tuple[Button, ...] | None = None
    issued: datetime | None = None
    incident: int | None = None  # the incident the new buttons name
    host: str = ""  # the host (chatops.host_tag) the new buttons name
    run: Callable[[], Awaitable[str]] | None = None


def always() -> bool:
    """The gate of a healer that is not in a fleet: it always leads."""
    return True


@dataclass
class Dispatcher:
    """Commands and presses from every chat, checked against [chatops] and run as operations.

    A press is checked with the platform's button key (chatops.button_key of its bot token).
    `leading` says whether this healer leads its fleet now (fleet.Leadership.is_leader): the
    listeners act on an update only while it says so.
    """

    config: Config
    clock: Clock = field(default_factory=SystemClock)
    leading: Callable[[], bool] = always
    # confirmations asked by a command, by (user, verb): its words and when it was asked
    _pending: dict[tuple[str, Verb], tuple[tuple[str, ...], datetime]] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)  # presses whose action is under way

    # ---- commands ----------------------------------------------------------------------------

    async def command(self, user: str, text: str) -> Reply:
        """Run a command from `user`, or say why not."""
        parsed = parse_command(text)
        if isinstance(parsed, Unknown):
            return Reply(parsed.reply)
        if not is_allowed(self.config.chatops, user, parsed.verb):
            await self._deny(user, parsed.verb, text)
            return Reply(NOT_ALLOWED)
        try:
            if parsed.verb in DESTRUCTIVE:
                return self._ask(user, parsed)
            return Reply(await self._run(user, parsed))
        except HealerError as e:
            return Reply(f"{parsed.verb}: {e}")

    def _ask(self, user: str, cmd: Command) -> Reply:
        """A destructive command waits for a confirming press (chatops.CONFIRM_LIFETIME)."""
        if not cmd.args:
            return Reply(f"usage: /{USAGE[cmd.verb]}")
        if cmd.verb is Verb.REPAIR:
            from healer.repair import known_playbooks

            kinds = known_playbooks(self.config)
            if cmd.args[0] not in kinds:
                return Reply(f"unknown repair kind {cmd.args[0]!r}; expected one of: {', '.join(kinds)}")
            elsewhere = _repair_elsewhere(self.config, cmd.args)
            if elsewhere is not None:
                return Reply(elsewhere)
        now = self.clock.now()
        self._pending[(user, cmd.verb)] = (cmd.args, now)
        what = f"run {cmd.args[0]}{on_hosts(self._here())}" if cmd.verb is Verb.REPAIR else "roll back"
        return Reply(f"{what}? Press to confirm (within 2 minutes).", confirm_buttons(cmd.verb), now)

    async def _run(self, user: str, cmd: Command) -> str:
        actor = Actor.chat(user)
        args = cmd.args
        if cmd.verb is Verb.STATUS:
            if self.config.fleet is not None:
                return await fleet_text(self.config)
            return await asyncio.to_thread(status_text, self.config)
        if cmd.verb is Verb.HISTORY:
            return await asyncio.to_thread(history_text, self.config)
        if cmd.verb is Verb.ACK:
            return await self._ack_all(actor, " ".join(args))
        if cmd.verb is Verb.PAUSE:
            span = _duration(args[0]) if args else None
            if span is None or len(args) < 2:
                return f"usage: /{USAGE[Verb.PAUSE]} (like /pause 30m db migration)"
            hosts = await self._hosts()
            until = await asyncio.to_thread(operations.pause, self.config, actor, span, " ".join(args[1:]), hosts)
            return f"paused{on_hosts(hosts)} until {operations.when(until)}: checks go on, repairs and rollbacks wait"
        if cmd.verb is Verb.RESUME:
            hosts = await self._hosts()
            ended = await asyncio.to_thread(operations.resume, self.config, actor, "resumed from chat", hosts)
            if not ended:
                return "not paused"
            return f"resumed{on_hosts(ended if hosts else ())}: repairs and rollbacks are armed again"
        if cmd.verb is Verb.REPAIR:
            result = await operations.repair(self.config, actor, args[0], "run from chat")
            return f"{args[0]}{on_hosts(self._here())}: {'fixed' if result.ok else 'NOT fixed'}: {result.detail}"
        reason, to = await asyncio.to_thread(_rollback_args, self.config, args)
        return await self._rollback(actor, reason, to)

    # ---- the fleet ---------------------------------------------------------------------------

    async def _hosts(self) -> tuple[str, ...]:
        """Every host of this healer's fleet (the registry, and this host); () without [fleet]."""
        if self.config.fleet is None:
            return ()
        from healer.fleet import fleet_status

        data = await fleet_status(self.config)
        return tuple(sorted({str(h["host"]) for h in data["hosts"]} | {self.config.fleet_host}))

    def _here(self) -> tuple[str, ...]:
        """This healer's host, as a reply names it: only in a fleet."""
        return () if self.config.fleet is None else (self.config.fleet_host,)

    async def _ack_all(self, actor: Actor, note: str) -> str:
        """/ack: the open incident of this host, or in a fleet of every host (the alerts a person
        answers may come from any of them)."""
        hosts = await self._hosts()
        if not hosts:
            return (await asyncio.to_thread(operations.ack, self.config, actor, note)).reply
        results = [await asyncio.to_thread(operations.ack, self.config, actor, note, None, h) for h in hosts]
        lines = [r.reply for r in results if r.open]
        return "\n".join(lines) or f"no incident is open{on_hosts(hosts)}"

    async def _press_host(self, press: Press) -> str | None:
        """The fleet host whose alert carried `press` (None without [fleet]); HealerError when
        the button does not say, or names a host the fleet does not know."""
        if self.config.fleet is None:
            return None
        if press.host is None:
            raise HealerError(
                "this button does not say which host's alert it is (an older or a fleet-wide alert): use /ack"
            )
        hosts = await self._hosts()
        host = next((h for h in hosts if host_tag(h) == press.host), None)
        if host is None:
            raise HealerError(f"this button's host is not in the fleet any more (hosts: {', '.join(hosts)})")
        return host

    async def _rollback(self, actor: Actor, reason: str, to: str | None) -> str:
        from healer.checks import probe_context
        from healer.store import Store

        store = await asyncio.to_thread(Store, self.config.state_db)
        try:
            async with probe_context(self.config) as pctx:
                result = await operations.rollback(self.config, store, pctx, actor, reason, to)
        finally:
            store.close()
        return f"{'rolled back' if result.ok else 'rollback FAILED'}: {result.detail}"

    # ---- buttons -----------------------------------------------------------------------------

    async def press(self, user: str, data: str, key: bytes) -> Step:
        """A pressed button: checked (ours, not expired, allowed, not done already), then the
        destructive verbs ask for a confirming press, and the rest run."""
        now = self.clock.now()
        press = read_press(data, key, now)
        if isinstance(press, Refused):
            return Step(press.reply)
        if not is_allowed(self.config.chatops, user, press.verb):
            await self._deny(user, press.verb, f"button {press.verb}")
            return Step(NOT_ALLOWED)
        done = await asyncio.to_thread(memory.earlier_press, self.config, data)
        if done is not None:
            return Step(f"already done: {done}", buttons=())
        if data in self._running:
            return Step("already under way")
        tag = press.host or ""
        if press.stage is Stage.CANCEL:
            self._pending.pop((user, press.verb), None)
            return Step("cancelled", alert_buttons("incident.opened", press.incident_id), now, press.incident_id, tag)
        if press.stage is Stage.ASK and press.verb in DESTRUCTIVE:
            return Step(
                "press again to confirm (within 2 minutes)", confirm_buttons(press.verb), now, press.incident_id, tag
            )
        action = self._pressed_action(user, press, now)
        if isinstance(action, str):
            return Step(action)

        async def run() -> str:
            self._running.add(data)
            try:
                what = await action()
            except HealerError as e:
                return f"{press.verb}: {e} (by {user})"
            finally:
                self._running.discard(data)
            await asyncio.to_thread(memory.record_press, self.config, data, user, what, self.clock.now())
            return what

        return Step(f"{press.verb}: on it", buttons=(), run=run)

    def _pressed_action(self, user: str, press: Press, now: datetime) -> Callable[[], Awaitable[str]] | str:
        """What a press runs, as a coroutine factory; a string says why nothing runs. In a fleet
        Ack acts on the host that sent the alert, Pause and Resume on every host."""
        actor = Actor.chat(user)
        on = f"incident #{press.incident_id}" if press.incident_id else "chat"
        if press.verb is Verb.ACK:

            async def ack() -> str:
                host = await self._press_host(press)
                return await asyncio.to_thread(_ack_line, self.config, actor, press.incident_id, host)

            return ack
        if press.verb is Verb.PAUSE:

            async def pause() -> str:
                reason = f"Pause {format_duration(PAUSE_BUTTON)} pressed on {on}"
                hosts = await self._hosts()
                until = await asyncio.to_thread(operations.pause, self.config, actor, PAUSE_BUTTON, reason, hosts)
                return f"Paused{on_hosts(hosts)} until {operations.when(until)} by {user}"

            return pause
        if press.verb is Verb.RESUME:

            async def resume() -> str:
                hosts = await self._hosts()
                ended = await asyncio.to_thread(operations.resume, self.config, actor, "Resume pressed", hosts)
                return f"Resumed{on_hosts(ended if hosts else ())} by {user}" if ended else "not paused"

            return resume
        pending = self._pending.pop((user, press.verb), None)
        args = pending[0] if pending is not None and now - pending[1] <= CONFIRM_LIFETIME else None
        if args is None and (press.verb is Verb.REPAIR or press.incident_id is None):
            # a command's confirmation: its words were lost (a restart) or asked for by another user
            return f"nothing to confirm: send /{USAGE[press.verb]} again"
        cmd = Command(press.verb, args or (f"Roll back now pressed on {on}",))
        if press.verb is Verb.REPAIR:
            return lambda: self._run(user, cmd)

        async def rollback() -> str:
            return f"{await self._run(user, cmd)} (by {user})"

        return rollback

    async def _deny(self, user: str, verb: Verb, text: str) -> None:
        """Refused: logged and recorded (an action row, outcome skipped); nothing else changes."""
        log_event(log, "chatops.denied", level=logging.WARNING, user=user, verb=str(verb))
        await asyncio.to_thread(_record_denied, self.config, user, verb, text, self.clock.now())


def _duration(text: str) -> timedelta | None:
    try:
        span = parse_duration(text)
    except Exception:  # pydantic's custom error: the usage line says it better
        return None
    return span if span > timedelta(0) else None


def _rollback_args(config: Config, args: tuple[str, ...]) -> tuple[str, str | None]:
    """`/rollback bad deploy stable-3`: the reason, and the last word as the target when the
    app's repo knows it as a ref (blocking: asks git)."""
    from healer import gitrepo
    from healer.errors import GitError

    if len(args) > 1 and config.app.repo is not None:
        try:
            gitrepo.resolve(config.app.repo, args[-1])
        except GitError:
            pass
        else:
            return " ".join(args[:-1]), args[-1]
    return " ".join(args), None


def _ack_line(config: Config, actor: Actor, incident: int | None, host: str | None) -> str:
    result = operations.ack(config, actor, "", incident, host)
    return f"Acknowledged{on_hosts(() if host is None else (host,))} by {actor.name}" if result.done else result.reply


def _repair_elsewhere(config: Config, args: Sequence[str]) -> str | None:
    """/repair KIND HOST for a host other than this one: where to run it instead (a playbook
    restarts this host's processes; chat reaches the fleet's leader only). None: run it here."""
    if len(args) < 2 or args[1] == config.fleet_host:
        return None
    return (
        f"repair runs on the host whose processes it restarts, and chat reaches {config.fleet_host} "
        f"only: on {args[1]}, run `healer repair {args[0]}`"
    )


def _record_denied(config: Config, user: str, verb: Verb, text: str, now: datetime) -> None:
    from healer.store import Store

    with Store(config.state_db) as store:
        store.start_action(
            kind="chat.denied", name=str(verb), who=user, reason=text[:200], now=now, deploy_id=None,
            outcome=Outcome.SKIPPED, detail="not in [chatops] for this verb",
        )  # fmt: skip


# ---- what /status and /history say ---------------------------------------------------------------


def status_text(config: Config) -> str:
    """`healer status` in a few lines of plain text, for a phone."""
    from healer.views import status_data

    data = status_data(config)
    loop = data["loop"]
    lines = [
        f"{data['app']}: loop "
        + ("alive" if loop.get("alive") else "running, late" if loop["running"] else "not running")
    ]
    d = data.get("deploy")
    if d is None:
        return "\n".join([*lines, "no deploy seen yet"])
    lines.append(f"deploy {d['commit'][:12]}, {d['phase']}")
    lc = data.get("last_cycle")
    if lc:
        lines.append("last cycle: " + ("healthy" if lc["ok"] else f"FAILING: {lc['summary']}"))
        if lc.get("next_step"):
            lines.append(f"then: {lc['next_step']}")
    lines.append(f"failures {data['consecutive_failures']} in a row (rollback after {data['rollback_after']})")
    if data.get("open_incident"):
        i = data["open_incident"]
        lines.append(f"incident #{i['id']} open since {i['opened_at'][:19]}Z: {i['cause']}")
    if data.get("ack"):
        lines.append(f"acked by {data['ack']['who']}")
    if data.get("pause"):
        lines.append(f"paused until {data['pause']['until'][:19]}Z: {data['pause']['reason']}")
    if d.get("held"):
        lines.append(f"held: {d['held']}")
    return "\n".join(lines)


async def fleet_text(config: Config) -> str:
    """/status in a fleet (`healer status --fleet` for a phone): who leads, and every host's
    release, health and last cycle, with its pause and open incident."""
    from healer.fleet import fleet_status

    data = await fleet_status(config)
    leader = data["leader"]
    led = f"led by {leader['host']} since {leader['since'][:19]}Z" if leader and leader["live"] else "no leader"
    lines = [f"{data['app']}: fleet of {len(data['hosts'])}, {led}"]
    notes = await asyncio.to_thread(_host_notes, config, [str(h["host"]) for h in data["hosts"]])
    for h, note in zip(data["hosts"], notes, strict=True):
        health = "no cycle yet" if h["healthy"] is None else "healthy" if h["healthy"] else "FAILING"
        last = "" if h["last_cycle_at"] is None else f", last cycle {h['last_cycle_at'][:19]}Z"
        release = (h["release"] or "no release")[:12]
        lines.append(f"{h['host']}{' (leads)' if h['leads'] else ''}: {release}, {health}{last}{note}")
    return "\n".join(lines)


def _host_notes(config: Config, hosts: Sequence[str]) -> list[str]:
    """Each host's open incident and pause, from its own store, as "; incident #3 open"."""
    from healer.store import Store

    now = SystemClock().now()
    out = []
    for host in hosts:
        with Store(config.host_db(host)) as store:
            d = store.current_deploy()
            pause = store.active_pause(now)
        note = "" if d is None or d.open_incident is None else f"; incident #{d.open_incident} open"
        out.append(note + ("" if pause is None else f"; paused until {operations.when(pause.until)}"))
    return out


def history_text(config: Config) -> str:
    """The last HISTORY_ROWS things healer recorded in 24 hours, one a line."""
    from healer.views import history_rows

    rows = history_rows(config, timedelta(hours=24))[-HISTORY_ROWS:]
    if not rows:
        return "nothing recorded in the last 24h"
    out = []
    for r in rows:
        outcome = r.get("outcome") or ("ok" if r.get("ok") else ("FAIL" if r.get("ok") is False else ""))
        what = " ".join(x for x in (r.get("what", ""), r.get("why", "")) if x)
        out.append(f"{r['at'][11:19]} {r['type']} {r.get('who', '')} {outcome} {what}".replace("  ", " ")[:200])
    return "\n".join(out)


def listened_chats(config: Config, platform: str, alert_chats: list[str]) -> set[str]:
    """The chats of `platform` healer answers in: [chatops] chats, else where alerts go."""
    if config.chatops.chats is not None:
        prefix = f"{platform}:"
        return {c.removeprefix(prefix) for c in config.chatops.chats if c.startswith(prefix)}
    return set(alert_chats)
