"""Alerts: what healer tells people, and how it reaches them.

    message.py    the message and its plain-text rendering, the pieces channels render from (pure)
    pipeline.py   which alerts go out, grouped how, to which channels (pure)
    outbox.py     the outbox in the state store, and the sender that empties it
    shell.py      the pipeline's shell the loop and the commands use, and `healer alert test`
    console.py    the log channel        `[alerts.log]`
    slack.py      the Slack channel      `[alerts.slack]`
    telegram.py   the Telegram channel   `[alerts.telegram]`

A channel is one module: the model of its `[alerts.<kind>]` table (`Section`), its rendering,
its sender and `channels(section, timeout=..., buttons=...)`, which builds it; config.CHANNELS lists them.
Importing this package imports nothing: healer.toml's validation imports a channel's module
for its table without the shell, the outbox or the chat SDKs.
"""
