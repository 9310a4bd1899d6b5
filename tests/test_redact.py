"""The one redactor: secret values healer read, their parts, and secret shapes, masked in text."""

from __future__ import annotations

from pathlib import Path

import pytest

from healer import redact as redact_module
from healer.config import parse_config
from healer.redact import MASK, Redactor, redact, secret_parts, secrets_of

DSN = "postgresql://shop:S3cr3tPw-unit@127.0.0.1:5432/shop"
WEBHOOK = "http://127.0.0.1:8123/services/T0A1B2C3D/B0E4F5G6H/k9SecretWebhookPart77"
HEARTBEAT = "http://127.0.0.1:8124/ping/6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab?rid=run42token"
TG_TOKEN = "987654321:AAFsecretTelegramTokenValue_0123456789"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "connect postgresql://shop:hunter22@db:5432/shop failed",
            f"connect postgresql://shop:{MASK}@db:5432/shop failed",
            id="url-userinfo",
        ),
        pytest.param("redis://:pw2-secret@127.0.0.1:6379/0", f"redis://:{MASK}@127.0.0.1:6379/0", id="url-no-user"),
        pytest.param("host=db password=hunter22 user=shop", f"host=db password={MASK} user=shop", id="libpq-dsn"),
        pytest.param("REDIS_PASSWORD=R3dis-x1", f"REDIS_PASSWORD={MASK}", id="env-password"),
        pytest.param("echo REDIS_PASSWORD=$REDIS_PASSWORD", "echo REDIS_PASSWORD=$REDIS_PASSWORD", id="shell-ref"),
        pytest.param("export API_TOKEN=abc123xyz", f"export API_TOKEN={MASK}", id="env-token"),
        pytest.param("APP_SECRET=s3cr3t; next", f"APP_SECRET={MASK}; next", id="env-secret"),
        pytest.param("STRIPE_KEY=sk_live_1234", f"STRIPE_KEY={MASK}", id="env-key"),
        pytest.param('{"token": "abc.def.ghi"}', f'{{"token": "{MASK}"}}', id="json-quoted"),
        pytest.param("Authorization: Bearer eyJhbGciOi.x.y", f"Authorization: {MASK}", id="authorization-header"),
        pytest.param("sent with bearer eyJhbGciOiJIUzI1", f"sent with bearer {MASK}", id="bearer"),
        pytest.param("token xoxb-1234-5678-abcdefgh rejected", f"token {MASK} rejected", id="slack-bot-token"),
        pytest.param("app token xapp-1-A0-123-abc", f"app token {MASK}", id="slack-app-token"),
        pytest.param(f"The token `{TG_TOKEN}` was rejected", f"The token `{MASK}` was rejected", id="telegram-token"),
        pytest.param(
            f"POST http://127.0.0.1:1/bot{TG_TOKEN}/sendMessage",
            f"POST http://127.0.0.1:1/bot{MASK}/sendMessage",
            id="telegram-url",
        ),
        pytest.param(
            "https://hooks.slack.com/services/T0/B0/XYZ", f"https://hooks.slack.com/services/{MASK}", id="slack-webhook"
        ),
        pytest.param("GET /health 200 in 12 ms: ok", "GET /health 200 in 12 ms: ok", id="ordinary-text"),
        pytest.param("exited 3 (expected 0): disk is full", "exited 3 (expected 0): disk is full", id="ordinary-error"),
    ],
)
def test_secret_shapes_are_masked_without_being_told(text: str, expected: str) -> None:
    """URL passwords, key=value secrets, bearer and chat tokens are masked by shape alone."""
    assert Redactor()(text) == expected


def test_a_url_secret_is_masked_whole_and_by_its_parts() -> None:
    """A webhook URL's path, its token-like segments and a heartbeat URL's uuid and query are masked alone."""
    r = Redactor([WEBHOOK, HEARTBEAT])
    body = 'no_service for "/services/T0A1B2C3D/B0E4F5G6H/k9SecretWebhookPart77" (or k9SecretWebhookPart77)'
    assert "k9SecretWebhookPart77" not in r(body) and "T0A1B2C3D" not in r(body)
    assert r(f"POST {WEBHOOK} -> 500") == f"POST {MASK} -> 500"
    echoed = r("unknown check 6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab (rid=run42token)")
    assert "6f1c2d3e" not in echoed and "run42token" not in echoed
    json_escaped = r('{"error": "\\/services\\/T0A1B2C3D\\/B0E4F5G6H\\/k9SecretWebhookPart77"}')
    assert "k9SecretWebhookPart77" not in json_escaped
    # the words of the path are not secrets: they stay readable everywhere else
    assert r("services ping") == "services ping"


def test_the_parts_of_a_dsn_include_its_password() -> None:
    """A DSN gives its password, which drivers quote on its own; its user and database are not secret."""
    assert secret_parts(DSN) == {DSN, "S3cr3tPw-unit"}
    assert secret_parts("host=db user=shop password='pw with spaces'") >= {"pw with spaces"}


def test_the_longest_secret_is_masked_first() -> None:
    """A secret that contains another is masked whole, not left half visible."""
    assert Redactor(["abcd", "abcdefgh"])("x abcdefgh y") == f"x {MASK} y"


def test_short_values_are_not_secrets() -> None:
    """A three-character value would blank out ordinary words, so it is not learned."""
    assert Redactor(["abc"])("abc abcd") == "abc abcd"


def test_secrets_of_a_config_are_every_env_value_and_the_secret_parts_of_its_urls(tmp_path: Path) -> None:
    """Each `*_env` value healer.toml names (not a chat id), URL passwords and credential headers are secrets."""
    config = parse_config(
        {
            "checks": [
                {
                    "name": "api",
                    "type": "http",
                    "url": "http://127.0.0.1:9/health?api_key=QueryKey1&verbose=true",
                    "headers": {"Authorization": "Bearer HeaderTok3n", "Accept": "application/json"},
                },
                {"name": "db", "type": "postgres", "dsn_env": "OTHER_DSN"},
            ],
            "redis": {"url": "redis://:InlineRedisPw@127.0.0.1:6379/0", "password_env": "REDIS_PASSWORD"},
            "postgres": {"dsn_env": "DATABASE_URL"},
            "heartbeat": {"url_env": "HEARTBEAT_URL"},
            "alerts": {
                "slack": {"webhook_url_env": "SLACK_WEBHOOK_URL"},
                "telegram": {"token_env": "TG_TOKEN", "chat_id_env": "TG_CHAT"},
            },
        },
        tmp_path / "healer.toml",
    )
    environ = {
        "DATABASE_URL": DSN,
        "OTHER_DSN": "postgresql://u:OtherPw99@db/x",
        "REDIS_PASSWORD": "R3disPw-unit",
        "HEARTBEAT_URL": HEARTBEAT,
        "SLACK_WEBHOOK_URL": WEBHOOK,
        "TG_TOKEN": TG_TOKEN,
        "TG_CHAT": "-100123456789",
    }
    found = set(secrets_of(config, environ))
    assert found >= {DSN, "postgresql://u:OtherPw99@db/x", "R3disPw-unit", HEARTBEAT, WEBHOOK, TG_TOKEN}
    assert found >= {"QueryKey1", "InlineRedisPw", "Bearer HeaderTok3n", "HeaderTok3n"}
    assert "-100123456789" not in found and "true" not in found and "application/json" not in found


def test_configure_teaches_the_process_wide_redactor(tmp_path: Path) -> None:
    """After configure(config), redact() masks what the environment variables named in the config hold."""
    config = parse_config(
        {"checks": [{"name": "api", "type": "http", "url": "http://127.0.0.1:9/"}], "postgres": {}},
        tmp_path / "healer.toml",
    )
    line = "FATAL: password authentication failed (S3cr3tPw-unit)"
    assert "S3cr3tPw-unit" in redact(line)
    redact_module.configure(config, {"DATABASE_URL": DSN})
    assert redact(line) == f"FATAL: password authentication failed ({MASK})"


def test_value_redacts_strings_inside_json() -> None:
    """Nested dicts and lists: every string is redacted, other values kept."""
    r = Redactor(["R3disPw-unit"])
    assert r.value({"a": ["x R3disPw-unit", 3], "b": None}) == {"a": [f"x {MASK}", 3], "b": None}
