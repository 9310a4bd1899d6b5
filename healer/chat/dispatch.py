"""Chat-ops' dispatcher: what healer does with a chat command or a pressed button, whatever the
chat (I/O).

The platform listeners (chat/telegram.py, chat/slack.py) turn their updates into two calls:

    reply = await dispatcher.command(user, text)     # "/pause 10m db migration"
    step = await dispatcher.press(user, data, key)   # a button's callback data, the bot's key

and render what comes back: a reply (text, maybe with buttons), or a press's `Step` (a short
answer at once, the buttons to show now, and an action whose result edits the message).
Everything runs through healer/operations.py, as the CLI does. Refusals change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from healer import operations
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
    is_allowed,
    parse_command,
    read_press,
)
from healer.clock import Clock, SystemClock
from healer.config import Config, format_duration, parse_duration
from healer.errors import HealerError
from healer.logging import log_event
from healer.model import Outcome
from healer.operations import Actor

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
    run: Callable[[], Awaitable[str]] | None = None


@dataclass
class Dispatcher:
    """Commands and presses from every chat, checked against [chatops] and run as operations.

    A press is checked with the platform's button key (chatops.button_key of its bot token).
    """

    config: Config
    clock: Clock = field(default_factory=SystemClock)
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
        now = self.clock.now()
        self._pending[(user, cmd.verb)] = (cmd.args, now)
        what = f"run {cmd.args[0]}" if cmd.verb is Verb.REPAIR else "roll back"
        return Reply(f"{what}? Press to confirm (within 2 minutes).", confirm_buttons(cmd.verb), now)

    async def _run(self, user: str, cmd: Command) -> str:
        actor = Actor.chat(user)
        args = cmd.args
        if cmd.verb is Verb.STATUS:
            return await asyncio.to_thread(status_text, self.config)
        if cmd.verb is Verb.HISTORY:
            return await asyncio.to_thread(history_text, self.config)
        if cmd.verb is Verb.ACK:
            return (await asyncio.to_thread(operations.ack, self.config, actor, " ".join(args))).reply
        if cmd.verb is Verb.PAUSE:
            span = _duration(args[0]) if args else None
            if span is None or len(args) < 2:
                return f"usage: /{USAGE[Verb.PAUSE]} (like /pause 30m db migration)"
            until = await asyncio.to_thread(operations.pause, self.config, actor, span, " ".join(args[1:]))
            return f"paused until {operations.when(until)}: checks go on, repairs and rollbacks wait"
        if cmd.verb is Verb.RESUME:
            ended = await asyncio.to_thread(operations.resume, self.config, actor, "resumed from chat")
            return "resumed: repairs and rollbacks are armed again" if ended else "not paused"
        if cmd.verb is Verb.REPAIR:
            result = await operations.repair(self.config, actor, args[0], "run from chat")
            return f"{args[0]}: {'fixed' if result.ok else 'NOT fixed'}: {result.detail}"
        reason, to = await asyncio.to_thread(_rollback_args, self.config, args)
        return await self._rollback(actor, reason, to)

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
        done = await asyncio.to_thread(_earlier_press, self.config, data)
        if done is not None:
            return Step(f"already done: {done}", buttons=())
        if data in self._running:
            return Step("already under way")
        if press.stage is Stage.CANCEL:
            self._pending.pop((user, press.verb), None)
            return Step("cancelled", alert_buttons("incident.opened", press.incident_id), now, press.incident_id)
        if press.stage is Stage.ASK and press.verb in DESTRUCTIVE:
            return Step(
                "press again to confirm (within 2 minutes)", confirm_buttons(press.verb), now, press.incident_id
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
            await asyncio.to_thread(_record_press, self.config, data, user, what, self.clock.now())
            return what

        return Step(f"{press.verb}: on it", buttons=(), run=run)

    def _pressed_action(self, user: str, press: Press, now: datetime) -> Callable[[], Awaitable[str]] | str:
        """What a press runs, as a coroutine factory; a string says why nothing runs."""
        actor = Actor.chat(user)
        on = f"incident #{press.incident_id}" if press.incident_id else "chat"
        if press.verb is Verb.ACK:
            return lambda: asyncio.to_thread(_ack_line, self.config, actor, press.incident_id)
        if press.verb is Verb.PAUSE:

            async def pause() -> str:
                reason = f"Pause {format_duration(PAUSE_BUTTON)} pressed on {on}"
                until = await asyncio.to_thread(operations.pause, self.config, actor, PAUSE_BUTTON, reason)
                return f"Paused until {operations.when(until)} by {user}"

            return pause
        if press.verb is Verb.RESUME:

            async def resume() -> str:
                ended = await asyncio.to_thread(operations.resume, self.config, actor, "Resume pressed")
                return f"Resumed by {user}" if ended else "not paused"

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


def _ack_line(config: Config, actor: Actor, incident: int | None) -> str:
    result = operations.ack(config, actor, "", incident)
    return f"Acknowledged by {actor.name}" if result.done else result.reply


def _earlier_press(config: Config, data: str) -> str | None:
    from healer.store import Store

    with Store(config.state_db) as store:
        return store.press(data)


def _record_press(config: Config, data: str, user: str, what: str, now: datetime) -> None:
    from healer.store import Store

    with Store(config.state_db) as store:
        store.record_press(data, user, what, now)


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
