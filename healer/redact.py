"""The one redactor: every secret healer read, and anything shaped like one, masked in text
(pure: no I/O; one process-wide instance, taught the secrets a command reads).

Text that comes from outside (a command's output, a chat service's error body, an exception
from a driver) is passed through `redact()` where it enters, before it is stored, printed,
served or sent; the log filter (healer/logging.py) and the store use the same redactor as a
last safety net.

It knows two kinds of secret:

1. Values: every `*_env` variable healer.toml names (webhook URLs, tokens, DSNs, passwords,
   the heartbeat URL), taught once per command by `configure(config)`, plus their parts that
   show up on their own in error texts: a URL's password, the token-like segments of its path
   (a Slack webhook's `/services/T.../B.../XXXX`, a heartbeat's uuid), its query. A URL written
   in healer.toml itself gives its password and its token-like query values; a header such as
   `Authorization` gives its value.
2. Shapes that leak even when healer never read the value (module-level, so they work before
   `configure`): `scheme://user:password@host`, `password=...`, `REDIS_PASSWORD=...`,
   `*_TOKEN=`, `*_SECRET=`, `*_KEY=`, `Authorization: Bearer ...`, Slack `xox?-`/`xapp-` tokens,
   Telegram bot tokens `123456:AA...`.

    redact.configure(config)           # once, where a command loads healer.toml
    redact.redact(text)                # where outside text comes in
    redact.redact(text, dsn)           # ... also masking a value only the caller knows
    redact.add_secrets(value, ...)     # a channel that reads a secret of its own
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

if TYPE_CHECKING:
    from healer.config import Config, Secret

MASK = "********"
# Shorter values would blank out ordinary words; they are not secrets worth the name.
MIN_SECRET_LENGTH = 4
# `*_env` keys whose values are not secret: masking a chat id would hide which chat was meant.
NOT_SECRET_ENV = frozenset({"chat_id_env"})

# Words that name a secret in `NAME=value` or `"name": "value"` (REDIS_PASSWORD, api_key, ...).
_SECRET_WORDS = r"password|passwd|pwd|passphrase|secret|token|api[_-]?key|access[_-]?key|_key|credentials?"
# A header or query parameter whose value is a credential: `Authorization`, `X-Api-Key`, `sig`.
_SECRET_NAME = re.compile(
    r"(?i)(authorization|cookie|password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|signature"
    r"|^sig$|^auth$|^key$|-key$)"
)


def _keep_quotes(m: re.Match[str]) -> str:
    value = m.group(3)
    quote_char = value[0] if value[:1] in "\"'" and len(value) > 1 else ""
    return f"{m.group(1)}{m.group(2)}{quote_char}{MASK}{quote_char}"


# Shapes of secrets masked even when nobody told us their value.
_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # a Telegram bot token inside a Bot API URL: .../bot123456:AAE.../sendMessage
    (re.compile(r"\bbot\d+:[A-Za-z0-9_-]+"), "bot" + MASK),
    # a bare Telegram bot token: 123456789:AAE... (35 characters after the colon)
    (re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}"), MASK),
    # a Slack incoming webhook path
    (re.compile(r"hooks\.slack\.com/(services|workflows|triggers)/[^\s\"'<>]+"), r"hooks.slack.com/\1/" + MASK),
    # Slack tokens: xoxb- (bot), xoxp- (user), xoxa-, xoxe- ..., xapp- (app-level)
    (re.compile(r"\bxox[abeoprs]-[A-Za-z0-9-]+"), MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), MASK),
    # the password part of a URL: scheme://user:password@host
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + MASK + "@"),
    # Authorization: Bearer abc / Basic abc / token abc (a header echoed in an error)
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization)([\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token|bot)\s+)?[^\s\"',;]+"
        ),
        r"\1\2" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + MASK),
    # password=..., REDIS_PASSWORD=..., API_TOKEN: ..., "secret": "..." (libpq DSNs, env dumps, JSON)
    (
        re.compile(
            rf"(?i)\b([A-Za-z0-9_.-]*(?:{_SECRET_WORDS})[A-Za-z0-9_]*)([\"']?\s*[=:]\s*)"
            # not a shell reference ($REDIS_PASSWORD): showing it leaks nothing and explains the argv
            r"(?!\$\{?[A-Za-z_])(\"[^\"]*\"|'[^']*'|[^\s&,;\"'<>{}\[\]()]+)"
        ),
        _keep_quotes,
    ),
)


class Redactor:
    """Replaces known secret values, and anything shaped like a secret, with MASK."""

    def __init__(self, secrets: Iterable[Secret | str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: Secret | str | None) -> None:
        """Learn secret values, with the parts of them that show up on their own in error texts."""
        parts: set[str] = set()
        for s in secrets:
            if s is not None:
                parts |= secret_parts(s if isinstance(s, str) else s.reveal())
        self.add_literal(*parts)

    def add_literal(self, *values: str) -> None:
        """Learn values exactly as given (and their URL- and JSON-escaped spellings)."""
        found = set(self._values)
        before = len(found)
        for value in values:
            found |= {v for v in _spellings(value) if len(v) >= MIN_SECRET_LENGTH}
        if len(found) == before:
            return  # nothing new: channels call this before every send
        with self._lock:
            # longest first, so a secret that contains another is replaced whole
            self._values = tuple(sorted(found, key=len, reverse=True))

    def reset(self) -> None:
        """Forget every value taught (the shapes stay): for tests."""
        with self._lock:
            self._values = ()

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def value(self, v: Any) -> Any:
        """Redact strings inside a JSON-like value."""
        if isinstance(v, str):
            return self(v)
        if isinstance(v, Mapping):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [self.value(x) for x in v]
        return v


def _spellings(value: str) -> set[str]:
    value = value.strip()
    if not value:
        return set()
    # as sent in a URL, as echoed inside a JSON string ("\/services\/T0..."), as escaped in HTML
    return {
        value,
        quote(value, safe=""),
        quote(value, safe="/:"),
        json.dumps(value)[1:-1].replace("/", "\\/"),
        html.escape(value, quote=False),
    }


def _is_tokenish(part: str) -> bool:
    """A path segment or query value that looks generated: long, or long enough with a digit.
    Words such as `services` or `ping` must not be masked in every text healer writes."""
    return len(part) >= 16 or (len(part) >= 8 and any(c.isdigit() for c in part))


def secret_parts(value: str) -> set[str]:
    """A secret value and its parts that may appear without the rest of it.

    1. The value itself.
    2. As a URL: the password, the path when it holds a token-like segment, each such segment,
       the query and each of its values.
    3. As a libpq key=value DSN: the password.
    """
    value = value.strip()
    out = {value} if value else set()
    url = _split(value)
    if url is not None:
        if url.password:
            out.add(url.password)
        segments = [s for s in url.path.split("/") if _is_tokenish(s)]
        if segments:
            out.add(url.path)
            out.update(segments)
        if url.query:
            out.add(url.query)
            out.update(v for _, v in parse_qsl(url.query, keep_blank_values=True))
    for m in re.finditer(r"(?i)\bpassword\s*=\s*('[^']*'|\S+)", value):
        out.add(m.group(1).strip("'"))
    return out


def url_secret_parts(url: str) -> set[str]:
    """The secret parts of a URL written in healer.toml (the rest of it is not secret): its
    password, and the query values that are named like a credential or look generated."""
    parts = _split(url)
    if parts is None:
        return set()
    out = {parts.password} if parts.password else set()
    for name, v in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_NAME.search(name) or _is_tokenish(v):
            out.add(v)
    return out


def _split(value: str) -> Any:
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a garbled netloc
    except ValueError:
        return None
    return parts if parts.scheme and parts.netloc else None


def _fields(obj: Any, parent: str = "", name: str = "") -> Iterator[tuple[str, str, Any]]:
    """(parent key, key, value) for every leaf of a pydantic model, through sections, tuples
    and tables: `("", "token_env", "TG_TOKEN")`, `("headers", "Authorization", "Bearer x")`."""
    fields = getattr(type(obj), "model_fields", None)
    if isinstance(fields, Mapping):
        for key in fields:
            yield from _fields(getattr(obj, key), name, key)
    elif isinstance(obj, list | tuple):
        for x in obj:
            yield from _fields(x, parent, name)
    elif isinstance(obj, Mapping):
        for key, x in obj.items():
            yield from _fields(x, name, str(key))
    else:
        yield parent, name, obj


def secrets_of(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Every secret `config` points at: the value of each `*_env` variable it names (a chat id
    excepted), the secret parts of the URLs it holds, and its credential-named header values."""
    out = env_values(config, environ)
    for parent, key, value in _fields(config):
        if not isinstance(value, str) or not value or key.endswith("_env"):
            continue
        if "://" in value:
            out.extend(url_secret_parts(value))
        elif parent == "headers" and _SECRET_NAME.search(key):
            out += [value, value.split()[-1]]  # "Bearer abc...", and the token on its own
    return out


def env_values(config: Config, environ: Mapping[str, str]) -> list[str]:
    """The values of the `*_env` variables `config` names that are secret and set."""
    names = [v for _, k, v in _fields(config) if k.endswith("_env") and k not in NOT_SECRET_ENV and isinstance(v, str)]
    return [environ[n].strip() for n in dict.fromkeys(names) if environ.get(n, "").strip()]


REDACTOR = Redactor()


def redact(text: str, *secrets: str) -> str:
    """`text` with every secret known to this process (and every secret-shaped string) masked,
    and `secrets` too: values the caller holds that healer.toml did not name (a DSN given to
    one check), masked for this text only."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return REDACTOR(text)


def add_secrets(*secrets: Secret | str | None) -> None:
    """Tell the process-wide redactor about more secret values."""
    REDACTOR.add(*secrets)


def configure(config: Config, environ: Mapping[str, str] | None = None) -> None:
    """Teach the process-wide redactor every secret `config` points at, read from `environ`
    (default: this process's environment). Call it wherever a command loads healer.toml."""
    REDACTOR.add(*secrets_of(config, os.environ if environ is None else environ))
