"""Chat-ops rules: who may run which verb, what a chat command says, what an alert's buttons carry,
and whether an ack is still in force (pure: no I/O, no clock; `now` is an argument).

A button's callback data is `verb:incident:issued:host:mac`, at most 64 bytes (Telegram's limit):
`issued` is when the message was sent (seconds since the epoch, base 36), `host` names the fleet
host whose alert it is (host_tag: a short digest of its name, "" without [fleet]) and `mac` an
HMAC of the rest keyed with the bot's own secret, so a forged or edited button is refused and an
old one expires by itself, with nothing stored per message. A button from before hosts were
named (`verb:incident:issued:mac`) still reads, as naming no host.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from healer.config import ChatopsConfig

# An alert's buttons work this long; a confirmation (the second press) only this long.
BUTTON_LIFETIME = timedelta(hours=24)
CONFIRM_LIFETIME = timedelta(minutes=2)
PAUSE_BUTTON = timedelta(hours=1)
_MAC_CHARS = 16
_HOST_CHARS = 8


class Level(enum.IntEnum):
    """What a verb needs; each level includes the ones below it."""

    READ = 1  # status, history
    OPERATE = 2  # ack, pause, resume
    ACT = 3  # repair, rollback: destructive, confirmed


class Verb(enum.StrEnum):
    """The chat verbs (and buttons)."""

    STATUS = "status"
    HISTORY = "history"
    ACK = "ack"
    PAUSE = "pause"
    RESUME = "resume"
    REPAIR = "repair"
    ROLLBACK = "rollback"


LEVELS: dict[Verb, Level] = {
    Verb.STATUS: Level.READ,
    Verb.HISTORY: Level.READ,
    Verb.ACK: Level.OPERATE,
    Verb.PAUSE: Level.OPERATE,
    Verb.RESUME: Level.OPERATE,
    Verb.REPAIR: Level.ACT,
    Verb.ROLLBACK: Level.ACT,
}
DESTRUCTIVE = frozenset({Verb.REPAIR, Verb.ROLLBACK})
USAGE: dict[Verb, str] = {
    Verb.STATUS: "status",
    Verb.HISTORY: "history",
    Verb.ACK: "ack [note]",
    Verb.PAUSE: "pause DURATION REASON",
    Verb.RESUME: "resume",
    Verb.REPAIR: "repair KIND [HOST]",
    Verb.ROLLBACK: "rollback REASON [REF]",
}


def level_of(config: ChatopsConfig, user: str) -> Level | None:
    """The highest level `user` ("telegram:123456") is listed at; None: not allowed anything."""
    for level, users in ((Level.ACT, config.act), (Level.OPERATE, config.operate), (Level.READ, config.read)):
        if user in users:
            return level
    return None


def is_allowed(config: ChatopsConfig, user: str, verb: Verb) -> bool:
    """Deny by default: allowed when listed at the verb's level or above."""
    level = level_of(config, user)
    return level is not None and level >= LEVELS[verb]


def is_enabled(config: ChatopsConfig) -> bool:
    """Chat-ops listens only when someone is allowed something."""
    return bool(config.read or config.operate or config.act)


# ---- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed chat command: the verb and its words."""

    verb: Verb
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unknown:
    """Text that is not a command healer knows; `reply` says what is."""

    reply: str


def parse_command(text: str) -> Command | Unknown:
    """`/pause 10m db migration` (Telegram), or `pause 10m db migration` (Slack's /healer text).

    A Telegram command may name its bot (`/pause@healer_bot`).
    """
    words = text.strip().split()
    if not words:
        return Unknown(_help())
    head = words[0].removeprefix("/").split("@", 1)[0].lower()
    try:
        return Command(Verb(head), tuple(words[1:]))
    except ValueError:
        return Unknown(f"unknown command {words[0]!r}; {_help()}")


def _help() -> str:
    return "commands: " + ", ".join(USAGE.values())


# ---- buttons -------------------------------------------------------------------------------------


class Stage(enum.StrEnum):
    """Which press a button is: destructive verbs take two."""

    ASK = ""  # the alert's own button
    CONFIRM = "!"  # "Yes, roll back now": does it
    CANCEL = "~"  # "Cancel": puts the alert's buttons back


@dataclass(frozen=True, slots=True)
class Button:
    """A button on an alert: its label and what pressing it asks for."""

    label: str
    verb: Verb
    stage: Stage = Stage.ASK


def alert_buttons(event: str, incident_id: int | None) -> tuple[Button, ...]:
    """The buttons an alert carries: an incident's alerts get Ack, Pause 1h and Roll back now;
    a pause gets Resume; anything else none."""
    if event == "pause.started":
        return (Button("Resume", Verb.RESUME),)
    if incident_id is None or event in ("incident.resolved", "rollback.succeeded"):
        return ()
    return (Button("Ack", Verb.ACK), Button("Pause 1h", Verb.PAUSE), Button("Roll back now", Verb.ROLLBACK))


def confirm_buttons(verb: Verb) -> tuple[Button, ...]:
    """What the first press of a destructive button turns the buttons into."""
    what = "roll back" if verb is Verb.ROLLBACK else str(verb)
    return (Button(f"Yes, {what} now", verb, Stage.CONFIRM), Button("Cancel", verb, Stage.CANCEL))


@dataclass(frozen=True, slots=True)
class Press:
    """A pressed button, read back and checked."""

    verb: Verb
    incident_id: int | None
    issued: datetime
    stage: Stage
    data: str  # as pressed: names this very button (double presses)
    host: str | None = None  # the host_tag of the fleet host whose alert it is; None: not said


@dataclass(frozen=True, slots=True)
class Refused:
    """A press that does nothing: `reply` says why (expired, not ours)."""

    reply: str


def button_key(secret: str) -> bytes:
    """The key a platform signs its buttons with, derived from its own secret (the bot token):
    nothing to store, and a rotated token retires the old buttons."""
    return hashlib.sha256(b"healer chat-ops buttons\0" + secret.encode()).digest()


def host_tag(host: str | None) -> str:
    """What a button says of its fleet host: a digest short enough for Telegram's 64 bytes
    (a host name may be 64 characters); "" for none. The leader finds the host it names among
    the fleet's registered hosts."""
    return "" if host is None else hashlib.sha256(host.encode()).hexdigest()[:_HOST_CHARS]


def button_data(button: Button, incident_id: int | None, issued: datetime, key: bytes, host: str = "") -> str:
    """The callback data of `button` on a message sent (or turned to a confirmation) at `issued`
    by the fleet host whose host_tag is `host`."""
    body = f"{button.verb}{button.stage}:{incident_id or 0}:{_b36(int(issued.timestamp()))}:{host}"
    return f"{body}:{_mac(body, key)}"


Keyboard = tuple[tuple[str, str], ...]  # a row of buttons as a chat shows them: (label, callback data)


def keyboard(
    buttons: Sequence[Button], incident_id: int | None, issued: datetime, key: bytes, host: str = ""
) -> Keyboard:
    """Buttons with their signed callback data (button_data), in order."""
    return tuple((b.label, button_data(b, incident_id, issued, key, host)) for b in buttons)


def read_press(data: str, key: bytes, now: datetime) -> Press | Refused:
    """Check a pressed button's data: ours (the MAC), not expired, a verb healer knows."""
    body, _, mac = data.rpartition(":")
    if not body or not hmac.compare_digest(mac, _mac(body, key)):
        return Refused("this button is not one of healer's (or the bot token changed): use a command")
    verb_s, inc_s, issued_s, host = [*body.split(":"), "", "", "", ""][:4]
    stage = Stage(verb_s[-1]) if verb_s[-1:] in ("!", "~") else Stage.ASK
    try:
        verb = Verb(verb_s.rstrip("!~"))
        issued = datetime.fromtimestamp(int(issued_s, 36), UTC)
        incident = int(inc_s) or None
    except ValueError:
        return Refused("this button is not one of healer's: use a command")
    lifetime = BUTTON_LIFETIME if stage is Stage.ASK else CONFIRM_LIFETIME
    if now - issued > lifetime:
        return Refused(f"this button expired (older than {_span(lifetime)}): use a command")
    return Press(verb, incident, issued, stage, data, host or None)


def _mac(body: str, key: bytes) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:_MAC_CHARS]


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _span(d: timedelta) -> str:
    secs = int(d.total_seconds())
    return f"{secs // 3600}h" if secs % 3600 == 0 else f"{secs // 60}m"


# ---- acks ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """A person acknowledged an incident: its reminders stop."""

    incident_id: int
    at: datetime
    who: str
    note: str = ""


def ack_in_force(
    ack: Ack | None, *, resolved: bool, worsened_at: Sequence[datetime], now: datetime, expires: timedelta
) -> bool:
    """An ack holds until (1) the incident resolves, (2) it worsens after the ack (a rollback
    starts, healer holds: `worsened_at`), or (3) `expires` has passed since it was given."""
    if ack is None or resolved:
        return False
    if any(t > ack.at for t in worsened_at):
        return False
    return now - ack.at < expires
